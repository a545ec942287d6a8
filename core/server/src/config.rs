//! Configuration, layered: defaults → TOML file (`--config`) → `FERRYDESK_*` environment → flags.

use std::path::PathBuf;

use anyhow::Context;
use serde::Deserialize;

#[derive(clap::Args, Debug, Default)]
pub struct ConfigArgs {
    /// TOML configuration file.
    #[arg(long, global = true, env = "FERRYDESK_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, global = true, env = "FERRYDESK_LISTEN")]
    pub listen: Option<String>,
    /// Data directory (SQLite file, blobs) [default: ./data].
    #[arg(long, global = true, env = "FERRYDESK_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database URL: postgres://… for PostgreSQL [default: SQLite in the data directory].
    #[arg(
        long,
        global = true,
        env = "FERRYDESK_DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// Timer resolution in milliseconds [default: 500].
    #[arg(long, global = true, env = "FERRYDESK_TIMER_TICK_MS")]
    pub timer_tick_ms: Option<u64>,
    /// Session idle lifetime in seconds [default: 43200].
    #[arg(long, global = true, env = "FERRYDESK_SESSION_TTL_SECS")]
    pub session_ttl_secs: Option<u64>,
    /// Proxies (addresses or networks, comma-separated) whose `X-Forwarded-For` names the client
    /// for login and widget-session throttling [default: none: the socket peer counts].
    #[arg(
        long,
        global = true,
        env = "FERRYDESK_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Option<Vec<String>>,
    /// New widget visitor sessions per client address per minute [default: 20].
    #[arg(long, global = true, env = "FERRYDESK_WIDGET_SESSIONS_PER_MINUTE")]
    pub widget_sessions_per_minute: Option<i64>,
    /// A widget visitor session unused this many seconds ends [default: 2592000 (30 days)].
    #[arg(long, global = true, env = "FERRYDESK_VISITOR_SESSION_TTL_SECS")]
    pub visitor_session_ttl_secs: Option<u64>,
    /// Directory of plugins the demo installs [default: ./plugins].
    #[arg(long, global = true, env = "FERRYDESK_PLUGINS_DIR")]
    pub plugins_dir: Option<PathBuf>,
    /// Directory of BPMN files deployed at start [default: ./processes].
    #[arg(long, global = true, env = "FERRYDESK_PROCESSES_DIR")]
    pub processes_dir: Option<PathBuf>,
    /// How long a process job is leased to the node running it, seconds [default: 60].
    #[arg(long, global = true, env = "FERRYDESK_JOB_LEASE_SECS")]
    pub job_lease_secs: Option<u64>,
    /// First retry delay of a failed process job, milliseconds; doubles per attempt [default: 2000].
    #[arg(long, global = true, env = "FERRYDESK_JOB_BACKOFF_MS")]
    pub job_backoff_ms: Option<u64>,
    /// Run the bulk duplicate search every this many seconds (e.g. 86400: daily); 0 = only when
    /// started from the web app or the API [default: 0].
    #[arg(long, global = true, env = "FERRYDESK_DUPLICATE_SCAN_SECS")]
    pub duplicate_scan_secs: Option<u64>,
    /// Buffer chat signals (`chat.message` …) that no process instance waits for this many
    /// seconds, for a message catch that opens later; 0 = not buffered [default: 0].
    #[arg(long, global = true, env = "FERRYDESK_CHAT_MESSAGE_TTL_SECS")]
    pub chat_message_ttl_secs: Option<u64>,
    /// Where file contents live: `local` (DATA_DIR/blobs; shared storage for several nodes) or
    /// `database` (rows of the database, seen by every node) [default: local].
    #[arg(long, global = true, env = "FERRYDESK_BLOB_STORE", value_parser = ["local", "database"])]
    pub blob_store: Option<String>,
    /// On SQLite, refuse writes (503, `/readyz` 503) while the data directory's file system has
    /// less than this many MiB free, before SQLite itself runs out; 0 = off [default: 64].
    #[arg(long, global = true, env = "FERRYDESK_MIN_FREE_DISK_MB")]
    pub min_free_disk_mb: Option<u64>,
    /// Require `Authorization: Bearer TOKEN` on `/metrics` [default: open].
    #[arg(
        long,
        global = true,
        env = "FERRYDESK_METRICS_TOKEN",
        hide_env_values = true
    )]
    pub metrics_token: Option<String>,
    /// Log as JSON lines.
    #[arg(long, global = true, env = "FERRYDESK_LOG_JSON", num_args = 0..=1, default_missing_value = "true")]
    pub log_json: Option<bool>,
    /// Mark cookies Secure (serve behind HTTPS).
    #[arg(long, global = true, env = "FERRYDESK_SECURE_COOKIES", num_args = 0..=1, default_missing_value = "true")]
    pub secure_cookies: Option<bool>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    timer_tick_ms: Option<u64>,
    session_ttl_secs: Option<u64>,
    log_json: Option<bool>,
    secure_cookies: Option<bool>,
    trusted_proxies: Option<Vec<String>>,
    widget_sessions_per_minute: Option<i64>,
    visitor_session_ttl_secs: Option<u64>,
    max_connections: Option<u32>,
    max_file_bytes: Option<u64>,
    plugins_dir: Option<PathBuf>,
    processes_dir: Option<PathBuf>,
    job_lease_secs: Option<u64>,
    job_backoff_ms: Option<u64>,
    duplicate_scan_secs: Option<u64>,
    chat_message_ttl_secs: Option<u64>,
    metrics_token: Option<String>,
    min_free_disk_mb: Option<u64>,
    blob_store: Option<String>,
}

/// Effective configuration.
pub struct Config {
    pub listen: String,
    pub data_dir: PathBuf,
    database_url: Option<String>,
    pub timer_tick_ms: u64,
    pub session_ttl_secs: u64,
    pub log_json: bool,
    pub secure_cookies: bool,
    pub trusted_proxies: Vec<String>,
    pub widget_sessions_per_minute: i64,
    pub visitor_session_ttl_secs: u64,
    pub max_connections: u32,
    pub max_file_bytes: u64,
    pub plugins_dir: PathBuf,
    pub processes_dir: PathBuf,
    pub job_lease_secs: u64,
    pub job_backoff_ms: u64,
    pub duplicate_scan_secs: u64,
    pub chat_message_ttl_secs: u64,
    /// The bearer token `/metrics` requires, if any.
    pub metrics_token: Option<String>,
    /// SQLite: the free space below which writes are refused (MiB, 0 = off).
    pub min_free_disk_mb: u64,
    /// `local` or `database`.
    pub blob_store: String,
}

impl Config {
    pub fn load(args: &ConfigArgs) -> anyhow::Result<Config> {
        let file = match &args.config {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading {}", p.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .with_context(|| format!("parsing {}", p.display()))?
            }
            None => FileConfig::default(),
        };
        Ok(Config {
            listen: args
                .listen
                .clone()
                .or(file.listen)
                .unwrap_or_else(|| "127.0.0.1:8080".into()),
            data_dir: args
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("./data")),
            database_url: args
                .database_url
                .clone()
                .or(file.database_url)
                .filter(|s| !s.is_empty()),
            timer_tick_ms: args
                .timer_tick_ms
                .or(file.timer_tick_ms)
                .unwrap_or(500)
                .max(10),
            session_ttl_secs: args
                .session_ttl_secs
                .or(file.session_ttl_secs)
                .unwrap_or(12 * 3600)
                .max(1),
            log_json: args.log_json.or(file.log_json).unwrap_or(false),
            secure_cookies: args.secure_cookies.or(file.secure_cookies).unwrap_or(false),
            trusted_proxies: args
                .trusted_proxies
                .clone()
                .or(file.trusted_proxies)
                .unwrap_or_default(),
            widget_sessions_per_minute: args
                .widget_sessions_per_minute
                .or(file.widget_sessions_per_minute)
                .unwrap_or(20)
                .max(1),
            visitor_session_ttl_secs: args
                .visitor_session_ttl_secs
                .or(file.visitor_session_ttl_secs)
                .unwrap_or(30 * 24 * 3600)
                .max(1),
            max_connections: file.max_connections.unwrap_or(16),
            blob_store: match args.blob_store.clone().or(file.blob_store) {
                None => "local".to_owned(),
                Some(b) if b == "local" || b == "database" => b,
                Some(b) => anyhow::bail!("blob_store: `{b}` is not `local` or `database`"),
            },
            min_free_disk_mb: args
                .min_free_disk_mb
                .or(file.min_free_disk_mb)
                .unwrap_or(ferrydesk_store::DEFAULT_MIN_FREE_DISK_MB),
            max_file_bytes: file.max_file_bytes.unwrap_or(20 * 1024 * 1024),
            plugins_dir: args
                .plugins_dir
                .clone()
                .or(file.plugins_dir)
                .unwrap_or_else(|| PathBuf::from("./plugins")),
            processes_dir: args
                .processes_dir
                .clone()
                .or(file.processes_dir)
                .unwrap_or_else(|| PathBuf::from("./processes")),
            job_lease_secs: args
                .job_lease_secs
                .or(file.job_lease_secs)
                .unwrap_or(60)
                .max(2),
            job_backoff_ms: args
                .job_backoff_ms
                .or(file.job_backoff_ms)
                .unwrap_or(2000)
                .max(10),
            duplicate_scan_secs: args
                .duplicate_scan_secs
                .or(file.duplicate_scan_secs)
                .unwrap_or(0),
            chat_message_ttl_secs: args
                .chat_message_ttl_secs
                .or(file.chat_message_ttl_secs)
                .unwrap_or(0)
                .min(7 * 24 * 3600),
            metrics_token: args
                .metrics_token
                .clone()
                .or(file.metrics_token)
                .filter(|s| !s.is_empty()),
        })
    }

    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(u) => u.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("ferrydesk.db").display()
            ),
        }
    }

    /// The database, without credentials, for logs.
    pub fn database_label(&self) -> String {
        let url = self.database_url();
        match url.split_once('@') {
            Some((scheme_user, rest)) => format!(
                "{}://…@{rest}",
                scheme_user.split("://").next().unwrap_or("db")
            ),
            None => url,
        }
    }
}
