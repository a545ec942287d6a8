//! Outbound HTTP for plugins: only to origins the manifest declares **and** the admin granted,
//! checked after DNS resolution and again on every redirect hop; private and loopback
//! addresses are denied unless both the manifest and the admin allow them (per granted host);
//! link-local and cloud metadata addresses are denied always; IPv6 addresses that embed an
//! IPv4 address (mapped, compatible, 6to4, Teredo, NAT64) are judged by what they embed; the
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
    /// Granted origins whose hosts may resolve to private addresses (a subset of `origins`).
    pub private: Vec<Origin>,
    pub max_requests: u32,
    pub max_response_bytes: usize,
    pub timeout: Duration,
}

impl Grant {
    /// Nothing allowed.
    pub fn none() -> Grant {
        Grant {
            origins: Vec::new(),
            private: Vec::new(),
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

/// How the filter treats a destination address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AddressClass {
    /// Reachable under a plain host grant.
    Public,
    /// Reachable only where the admin granted private addresses for that host.
    Private,
    /// Never reachable: link-local addresses and cloud metadata endpoints.
    Forbidden,
}

/// Cloud instance metadata endpoints that are not link-local (those are forbidden anyway).
const METADATA_V4: [[u8; 4]; 2] = [
    [100, 100, 100, 200], // Alibaba Cloud
    [168, 63, 129, 16],   // Azure WireServer (and its DNS, health probes and metadata proxy)
];
const METADATA_V6: [u16; 8] = [0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254]; // AWS IMDS over IPv6

/// Classifies `ip`: IPv6 forms that embed an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`,
/// IPv4-compatible `::a.b.c.d`, 6to4 `2002:aabb:ccdd::/16`, NAT64 `64:ff9b::/96`, Teredo
/// `2001:0::/32`, whose server and client addresses both count) are judged by the embedded
/// address. NAT64 local-use `64:ff9b:1::/48` (RFC 8215) is a translator inside the operator's
/// network with a prefix length (48, 56, 64 or 96, RFC 6052) the host cannot know: it is never
/// public, and forbidden if the IPv4 address at any of those positions is.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => {
            if v4.is_link_local() || METADATA_V4.contains(&v4.octets()) {
                AddressClass::Forbidden
            } else if is_private(IpAddr::V4(v4)) {
                AddressClass::Private
            } else {
                AddressClass::Public
            }
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let v4 = |hi: u16, lo: u16| {
                std::net::Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)
            };
            if (s[0] & 0xffc0) == 0xfe80 || s == METADATA_V6 {
                return AddressClass::Forbidden;
            }
            if let Some(m) = v6.to_ipv4_mapped() {
                return classify(IpAddr::V4(m));
            }
            // IPv4-compatible (deprecated): ::a.b.c.d, except :: and ::1.
            if s[..6] == [0; 6] && !(s[6] == 0 && s[7] <= 1) {
                return classify(IpAddr::V4(v4(s[6], s[7])));
            }
            if s[0] == 0x2002 {
                return classify(IpAddr::V4(v4(s[1], s[2])));
            }
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4] {
                return classify(IpAddr::V4(v4(s[6], s[7])));
            }
            if s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1 {
                let o = v6.octets();
                // RFC 6052 §2.2: the IPv4 address per prefix length; byte 8 (bits 64..72) is
                // always zero and skipped.
                let at = |b: [usize; 4]| {
                    classify(IpAddr::V4(std::net::Ipv4Addr::new(
                        o[b[0]], o[b[1]], o[b[2]], o[b[3]],
                    )))
                };
                return [
                    [6, 7, 9, 10],
                    [7, 9, 10, 11],
                    [9, 10, 11, 12],
                    [12, 13, 14, 15],
                ]
                .into_iter()
                .map(at)
                .fold(AddressClass::Private, AddressClass::max);
            }
            if s[0] == 0x2001 && s[1] == 0 {
                let server = classify(IpAddr::V4(v4(s[2], s[3])));
                let client = classify(IpAddr::V4(v4(!s[6], !s[7])));
                return server.max(client).max(AddressClass::Private);
            }
            if is_private(IpAddr::V6(v6)) {
                AddressClass::Private
            } else {
                AddressClass::Public
            }
        }
    }
}

/// Addresses a plugin may not reach unless private access is granted (not looking into
/// embedded IPv4 addresses: [`classify`] does).
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
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated, still routed inside sites)
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
    if let Some(a) = addrs
        .iter()
        .find(|a| classify(a.ip()) == AddressClass::Forbidden)
    {
        return Err(FetchError::Denied(format!(
            "{shown} resolves to a link-local or cloud metadata address ({}); these are never allowed",
            a.ip()
        )));
    }
    let private_ok = grant.private.iter().any(|o| o.matches(url));
    if !private_ok
        && let Some(a) = addrs
            .iter()
            .find(|a| classify(a.ip()) == AddressClass::Private)
    {
        return Err(FetchError::Denied(format!(
            "{shown} resolves to a private address ({}); private addresses are not granted for this host",
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

    fn class(ip: &str) -> AddressClass {
        classify(ip.parse().expect("ip"))
    }

    #[test]
    fn embedded_ipv4_is_judged_by_what_it_embeds() {
        use AddressClass::*;
        // IPv4-mapped and IPv4-compatible.
        assert_eq!(class("::ffff:127.0.0.1"), Private);
        assert_eq!(class("::ffff:10.0.0.1"), Private);
        assert_eq!(class("::ffff:1.1.1.1"), Public);
        assert_eq!(class("::127.0.0.1"), Private);
        assert_eq!(class("::10.1.2.3"), Private);
        assert_eq!(class("::8.8.8.8"), Public);
        assert_eq!(class("::1"), Private);
        assert_eq!(class("::"), Private);
        // 6to4 embedding a private or a public address.
        assert_eq!(class("2002:7f00:1::1"), Private);
        assert_eq!(class("2002:c0a8:101::1"), Private);
        assert_eq!(class("2002:0808:0808::1"), Public);
        assert_eq!(class("2002:a9fe:a9fe::1"), Forbidden);
        // NAT64.
        assert_eq!(class("64:ff9b::7f00:1"), Private);
        assert_eq!(class("64:ff9b::a9fe:a9fe"), Forbidden);
        assert_eq!(class("64:ff9b::808:808"), Public);
        assert_eq!(class("64:ff9b::a83f:8110"), Forbidden); // Azure WireServer
        // NAT64 local-use (RFC 8215): never public; metadata forbidden at every prefix length.
        assert_eq!(class("64:ff9b:1::a9fe:a9fe"), Forbidden); // /96
        assert_eq!(class("64:ff9b:1::6464:64c8"), Forbidden); // /96, Alibaba metadata
        assert_eq!(class("64:ff9b:1:0:a9:fea9:fe00:0"), Forbidden); // /64
        assert_eq!(class("64:ff9b:1:a9:fe:a9fe::"), Forbidden); // /56
        assert_eq!(class("64:ff9b:1:a9fe:a9:fe00::"), Forbidden); // /48
        assert_eq!(class("64:ff9b:1::a83f:8110"), Forbidden); // /96, Azure WireServer
        assert_eq!(class("64:ff9b:1::7f00:1"), Private);
        assert_eq!(class("64:ff9b:1::808:808"), Private);
        assert_eq!(class("64:ff9b:1:808:8:800::"), Private);
        // Teredo: the server (bits 32..64) and the client (last 32 bits, inverted).
        assert_eq!(class("2001:0:0a00:0001::1"), Private);
        assert_eq!(class("2001:0:4136:e378:8000:63bf:80ff:fffe"), Private); // client 127.0.0.1
        assert_eq!(class("2001:0:4136:e378:8000:63bf:5656:5656"), Private); // a tunnel: never public
        assert_eq!(class("2001:0:a9fe:a9fe::1"), Forbidden);
        // Site-local.
        assert_eq!(class("fec0::1"), Private);
        assert_eq!(class("feff::1"), Private);
    }

    #[test]
    fn link_local_and_metadata_are_forbidden() {
        use AddressClass::*;
        for ip in [
            "169.254.169.254",
            "169.254.0.1",
            "100.100.100.200",
            "fe80::1",
            "febf::1",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
            "::169.254.169.254",
            "::ffff:100.100.100.200",
            "168.63.129.16",
            "::ffff:168.63.129.16",
            "2002:a83f:8110::1",
        ] {
            assert_eq!(class(ip), Forbidden, "{ip}");
        }
        assert_eq!(class("100.100.100.201"), Private);
        assert_eq!(class("168.63.129.17"), Public);
        assert_eq!(class("fd00:ec2::253"), Private);
    }

    fn grant(origins: &[&str], private: &[&str]) -> Grant {
        Grant {
            origins: origins
                .iter()
                .map(|o| Origin::parse(o).expect("origin"))
                .collect(),
            private: private
                .iter()
                .map(|o| Origin::parse(o).expect("origin"))
                .collect(),
            max_requests: 5,
            max_response_bytes: 1 << 20,
            timeout: Duration::from_secs(2),
        }
    }

    #[tokio::test]
    async fn the_private_grant_is_per_host_and_never_covers_metadata() {
        let g = grant(
            &[
                "http://127.0.0.1:*",
                "http://10.0.0.1:*",
                "http://169.254.169.254",
                "http://[fe80::1]",
            ],
            &[
                "http://127.0.0.1:*",
                "http://169.254.169.254",
                "http://[fe80::1]",
            ],
        );
        // Granted private for this host.
        assert!(check(&g, &url("http://127.0.0.1:8080/")).await.is_ok());
        // Another private host, granted as a host but not for private addresses.
        let e = check(&g, &url("http://10.0.0.1:8080/"))
            .await
            .expect_err("refused");
        assert!(
            matches!(&e, FetchError::Denied(m) if m.contains("private address")),
            "{e:?}"
        );
        // Metadata and link-local stay forbidden even with the private grant.
        for u in [
            "http://169.254.169.254/latest/meta-data/",
            "http://[fe80::1]/",
        ] {
            let e = check(&g, &url(u)).await.expect_err("refused");
            assert!(
                matches!(&e, FetchError::Denied(m) if m.contains("never allowed")),
                "{u}: {e:?}"
            );
        }
        // Embedded private IPv4 in IPv6 literals is private too.
        let g = grant(&["http://*:*"], &[]);
        for u in [
            "http://[::ffff:127.0.0.1]:80/",
            "http://[2002:7f00:1::1]/",
            "http://[::127.0.0.1]/",
            "http://[fec0::1]/",
        ] {
            let e = check(&g, &url(u)).await.expect_err("refused");
            assert!(
                matches!(&e, FetchError::Denied(m) if m.contains("private address")),
                "{u}: {e:?}"
            );
        }
        let e = check(&g, &url("http://[::ffff:169.254.169.254]/"))
            .await
            .expect_err("refused");
        assert!(
            matches!(&e, FetchError::Denied(m) if m.contains("never allowed")),
            "{e:?}"
        );
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
