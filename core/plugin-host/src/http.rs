//! Outbound HTTP for plugins: only to origins the manifest declares **and** the admin granted,
//! checked after DNS resolution and again on every redirect hop; private, loopback and
//! link-local addresses are denied unless both the manifest and the admin allow them; the
//! response size and the number of requests per call are capped. The connection goes to the
//! address that was checked (`resolve` pins it), so DNS rebinding between check and connect
//! cannot redirect it.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use url::Url;

/// An origin pattern: `https://api.telegram.org`, `https://*.example.com`, `http://127.0.0.1:*`,
/// `https://*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    scheme: String,
    host: HostPattern,
    /// `None` is any port.
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    Exact(String),
    Suffix(String),
}

impl Origin {
    /// Parses a manifest pattern (templates already resolved).
    pub fn parse(pattern: &str) -> Result<Origin, String> {
        let (scheme, rest) = pattern
            .split_once("://")
            .ok_or_else(|| format!("`{pattern}` has no scheme"))?;
        if scheme != "http" && scheme != "https" {
            return Err(format!("`{pattern}`: only http and https"));
        }
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') {
            return Err(format!("`{pattern}`: an origin has no path"));
        }
        let default_port = if scheme == "https" { 443 } else { 80 };
        let (host, port) = if let Some(h) = rest.strip_suffix(":*") {
            (h, None)
        } else if let Some(i) = rest
            .rfind(':')
            .filter(|&i| !rest[..i].contains(':') || rest[..i].ends_with(']'))
        {
            let port = rest[i + 1..]
                .parse::<u16>()
                .map_err(|_| format!("`{pattern}`: bad port"))?;
            (&rest[..i], Some(port))
        } else {
            (rest, Some(default_port))
        };
        let host = host.to_ascii_lowercase();
        let host = match host.as_str() {
            "*" => HostPattern::Any,
            h if h.starts_with("*.") => HostPattern::Suffix(h[1..].to_owned()),
            h => HostPattern::Exact(h.trim_start_matches('[').trim_end_matches(']').to_owned()),
        };
        Ok(Origin {
            scheme: scheme.to_owned(),
            host,
            port,
        })
    }

    /// The origin of a configured URL (for `{{key}}` patterns).
    pub fn of_url(url: &str) -> Result<Origin, String> {
        let u = Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
        let host = u.host_str().ok_or_else(|| format!("`{url}` has no host"))?;
        let port = u.port_or_known_default();
        Ok(Origin {
            scheme: u.scheme().to_owned(),
            host: HostPattern::Exact(
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_ascii_lowercase(),
            ),
            port,
        })
    }

    fn matches(&self, u: &Url) -> bool {
        let Some(host) = u.host_str() else {
            return false;
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let host_ok = match &self.host {
            HostPattern::Any => true,
            HostPattern::Exact(h) => *h == host,
            HostPattern::Suffix(s) => host.ends_with(s.as_str()) && host.len() > s.len(),
        };
        host_ok
            && self.scheme == u.scheme()
            && self
                .port
                .is_none_or(|p| Some(p) == u.port_or_known_default())
    }
}

/// What one call may do over HTTP.
#[derive(Debug, Clone)]
pub struct Grant {
    pub origins: Vec<Origin>,
    pub allow_private: bool,
    pub max_requests: u32,
    pub max_response_bytes: usize,
    pub timeout: Duration,
}

impl Grant {
    /// Nothing allowed.
    pub fn none() -> Grant {
        Grant {
            origins: Vec::new(),
            allow_private: false,
            max_requests: 0,
            max_response_bytes: 0,
            timeout: Duration::from_secs(1),
        }
    }
}

/// Why a request was not made or did not complete.
#[derive(Debug, Clone, PartialEq)]
pub enum FetchError {
    Denied(String),
    Timeout,
    TooLarge,
    Transport(String),
}

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Addresses a plugin may not reach unless private access is granted.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64.0.0/10, carrier-grade NAT
                || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18.0.0/15, benchmarking
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] == 0x64 && s[1] == 0xff9b) // NAT64 can reach IPv4 private space
        }
    }
}

const MAX_REDIRECTS: usize = 5;

/// Sends `req` under `grant`; `used` counts requests (each redirect hop is one).
pub async fn fetch(grant: &Grant, used: &mut u32, req: Request) -> Result<Response, FetchError> {
    let deadline = tokio::time::Instant::now() + grant.timeout;
    let mut method = req.method.to_ascii_uppercase();
    let mut body = req.body;
    let mut url = Url::parse(&req.url)
        .map_err(|e| FetchError::Denied(format!("`{}` is not a URL: {e}", redact(&req.url))))?;
    for _hop in 0..=MAX_REDIRECTS {
        if *used >= grant.max_requests {
            return Err(FetchError::Denied(format!(
                "the plugin may make {} request(s) per call",
                grant.max_requests
            )));
        }
        *used += 1;
        let addr = check(grant, &url).await?;
        let host = url.host_str().unwrap_or_default().to_owned();
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(deadline.saturating_duration_since(tokio::time::Instant::now()));
        if url
            .host()
            .is_some_and(|h| matches!(h, url::Host::Domain(_)))
        {
            builder = builder.resolve(&host, addr);
        }
        let client = builder
            .build()
            .map_err(|e| FetchError::Transport(e.to_string()))?;
        let m = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| FetchError::Denied(format!("bad method `{method}`")))?;
        let mut rb = client.request(m, url.clone());
        for (k, v) in &req.headers {
            let lk = k.to_ascii_lowercase();
            if matches!(
                lk.as_str(),
                "host" | "content-length" | "transfer-encoding" | "connection" | "upgrade"
            ) {
                continue;
            }
            rb = rb.header(k, v);
        }
        if let Some(b) = &body {
            rb = rb.body(b.clone());
        }
        let mut resp = rb.send().await.map_err(|e| {
            if e.is_timeout() {
                FetchError::Timeout
            } else {
                FetchError::Transport(redact(&e.without_url().to_string()))
            }
        })?;
        let status = resp.status().as_u16();
        if matches!(status, 301 | 302 | 303 | 307 | 308)
            && let Some(loc) = resp.headers().get("location").and_then(|v| v.to_str().ok())
        {
            url = url
                .join(loc)
                .map_err(|e| FetchError::Denied(format!("bad redirect: {e}")))?;
            if status == 303 || ((status == 301 || status == 302) && method == "POST") {
                method = "GET".into();
                body = None;
            }
            continue;
        }
        let headers = resp
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        if resp
            .content_length()
            .is_some_and(|n| n as usize > grant.max_response_bytes)
        {
            return Err(FetchError::TooLarge);
        }
        let mut out = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    if out.len() + c.len() > grant.max_response_bytes {
                        return Err(FetchError::TooLarge);
                    }
                    out.extend_from_slice(&c);
                }
                Ok(None) => break,
                Err(e) if e.is_timeout() => return Err(FetchError::Timeout),
                Err(e) => return Err(FetchError::Transport(redact(&e.without_url().to_string()))),
            }
        }
        return Ok(Response {
            status,
            headers,
            body: out,
        });
    }
    Err(FetchError::Denied(format!(
        "more than {MAX_REDIRECTS} redirects"
    )))
}

/// The policy checks that do not need the network, for mocked requests in tests: the origin is
/// granted and the request budget is not spent.
pub fn check_mocked(grant: &Grant, used: &mut u32, req: &Request) -> Result<(), FetchError> {
    let url = Url::parse(&req.url)
        .map_err(|e| FetchError::Denied(format!("`{}` is not a URL: {e}", redact(&req.url))))?;
    if *used >= grant.max_requests {
        return Err(FetchError::Denied(format!(
            "the plugin may make {} request(s) per call",
            grant.max_requests
        )));
    }
    *used += 1;
    if !grant.origins.iter().any(|o| o.matches(&url)) {
        return Err(FetchError::Denied(format!(
            "{}://{} is not among the hosts granted to this plugin",
            url.scheme(),
            url.host_str().unwrap_or("?")
        )));
    }
    Ok(())
}

/// Checks one hop: the origin is granted and the host resolves only to allowed addresses.
/// Returns the address to connect to.
async fn check(grant: &Grant, url: &Url) -> Result<SocketAddr, FetchError> {
    let shown = format!(
        "{}://{}{}",
        url.scheme(),
        url.host_str().unwrap_or("?"),
        url.port().map(|p| format!(":{p}")).unwrap_or_default()
    );
    if !grant.origins.iter().any(|o| o.matches(url)) {
        return Err(FetchError::Denied(format!(
            "{shown} is not among the hosts granted to this plugin"
        )));
    }
    let port = url
        .port_or_known_default()
        .ok_or_else(|| FetchError::Denied(format!("{shown}: no port")))?;
    let addrs: Vec<SocketAddr> = match url.host() {
        Some(url::Host::Ipv4(ip)) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
        Some(url::Host::Ipv6(ip)) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
        Some(url::Host::Domain(d)) => tokio::net::lookup_host((d, port))
            .await
            .map_err(|e| FetchError::Transport(format!("{shown}: cannot resolve: {e}")))?
            .collect(),
        None => return Err(FetchError::Denied(format!("{shown}: no host"))),
    };
    if addrs.is_empty() {
        return Err(FetchError::Transport(format!("{shown}: no address")));
    }
    if !grant.allow_private
        && let Some(a) = addrs.iter().find(|a| is_private(a.ip()))
    {
        return Err(FetchError::Denied(format!(
            "{shown} resolves to a private address ({}); private addresses are not granted",
            a.ip()
        )));
    }
    Ok(addrs[0])
}

/// Hides bot tokens and similar credentials in a URL path (`/bot123:ABC/…`) before it reaches a
/// log or an error message.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, part) in text.split("/bot").enumerate() {
        if i > 0 {
            out.push_str("/bot");
            match part.find('/') {
                Some(end) => {
                    out.push_str("***");
                    out.push_str(&part[end..]);
                }
                None => out.push_str("***"),
            }
        } else {
            out.push_str(part);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).expect("url")
    }

    #[test]
    fn origins_match_scheme_host_and_port() {
        let o = Origin::parse("https://api.telegram.org").expect("parse");
        assert!(o.matches(&url("https://api.telegram.org/bot1/getMe")));
        assert!(!o.matches(&url("http://api.telegram.org/")));
        assert!(!o.matches(&url("https://api.telegram.org:8443/")));
        assert!(!o.matches(&url("https://api.telegram.org.evil.com/")));
        let w = Origin::parse("https://*.example.com").expect("parse");
        assert!(w.matches(&url("https://a.example.com/")));
        assert!(!w.matches(&url("https://example.com/")));
        assert!(!w.matches(&url("https://badexample.com/")));
        let p = Origin::parse("http://127.0.0.1:*").expect("parse");
        assert!(p.matches(&url("http://127.0.0.1:9999/x")));
        assert!(Origin::parse("ftp://x").is_err());
        assert!(Origin::parse("https://x/path").is_err());
    }

    #[test]
    fn private_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_private(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["1.1.1.1", "149.154.167.220", "2001:4860:4860::8888"] {
            assert!(!is_private(ip.parse().expect("ip")), "{ip}");
        }
    }

    #[test]
    fn tokens_are_redacted() {
        assert_eq!(
            redact("http://x/bot123:ABC/getMe failed"),
            "http://x/bot***/getMe failed"
        );
        assert_eq!(
            redact("https://x/file/bot123:ABC/photos/a.jpg"),
            "https://x/file/bot***/photos/a.jpg"
        );
    }
}
