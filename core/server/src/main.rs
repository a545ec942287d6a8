//! `ferrydesk`: the server binary and its command line.

mod backup;
mod config;
mod demo;
mod plugin_cli;
mod plugin_templates;
mod process_cli;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ferrydesk_desk::blobs::{DatabaseBlobStore, LocalBlobStore};
use ferrydesk_desk::{Desk, DeskOptions};
use ferrydesk_store::{Store, StoreOptions};

use config::{Config, ConfigArgs};

#[derive(Parser)]
#[command(
    name = "ferrydesk",
    version,
    about = "Ferrydesk: self-hosted omnichannel chat desk"
)]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs the server.
    Serve,
    /// Runs the server with demo data (queue, operators, admin, templates, widget page).
    Demo,
    /// Applies database migrations and exits.
    Migrate,
    /// Writes a backup of a SQLite deployment (database and files) to FILE, while it runs.
    Backup { file: PathBuf },
    /// Restores a backup into the configured data directory, which must hold no database.
    Restore { file: PathBuf },
    /// Manages users.
    User {
        #[command(subcommand)]
        cmd: UserCmd,
    },
    /// Writes, checks, packs and manages plugins.
    Plugin {
        #[command(subcommand)]
        cmd: plugin_cli::PluginCmd,
    },
    /// Deploys and inspects business processes (BPMN).
    Process {
        #[command(subcommand)]
        cmd: process_cli::ProcessCmd,
    },
}

#[derive(Subcommand)]
enum UserCmd {
    /// Adds a user. The password is read from FERRYDESK_PASSWORD or prompted on stdin.
    Add {
        username: String,
        #[arg(long, default_value = "operator")]
        role: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long, env = "FERRYDESK_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
}

/// Errors print as one line, the cause chain joined by `: ` — no backtrace, whatever
/// `RUST_BACKTRACE` says (a panic still prints one when it is set).
fn main() -> std::process::ExitCode {
    match try_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error's chain on one line: each cause once (sqlx repeats its source in its own
/// message), inner line breaks (TOML's caret diagrams) folded into spaces.
fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string();
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if text.is_empty() || parts.last().is_some_and(|p| p.ends_with(&text)) {
            continue;
        }
        parts.push(text);
    }
    parts.join(": ")
}

fn try_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let cfg = Config::load(&cli.config)?;
    init_tracing(&cfg);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(cli.cmd, cfg))
}

fn init_tracing(cfg: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("FERRYDESK_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cfg.log_json {
        b.json().init();
    } else {
        b.init();
    }
}

async fn open_store(cfg: &Config) -> anyhow::Result<Store> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data directory {}", cfg.data_dir.display()))?;
    let store = Store::connect(&StoreOptions {
        url: cfg.database_url(),
        max_connections: cfg.max_connections,
        fast_lane: true,
        min_free_disk_mb: cfg.min_free_disk_mb,
    })
    .await
    .context("connecting to the database")?;
    store.migrate().await.context("applying migrations")?;
    // A node that cannot write (a read-only data directory, a full disk, a standby) must not
    // start and claim to be ready.
    store
        .probe_write()
        .await
        .with_context(|| format!("the database at {} cannot be written", cfg.database_label()))?;
    Ok(store)
}

async fn start_desk(cfg: &Config) -> anyhow::Result<Desk> {
    let store = open_store(cfg).await?;
    let blobs: Arc<dyn ferrydesk_desk::blobs::BlobStore> = match cfg.blob_store.as_str() {
        "database" => Arc::new(DatabaseBlobStore::new(store.clone())),
        _ => Arc::new(LocalBlobStore::new(cfg.data_dir.join("blobs"))?),
    };
    let opts = DeskOptions {
        timer_tick: std::time::Duration::from_millis(cfg.timer_tick_ms),
        session_ttl: std::time::Duration::from_secs(cfg.session_ttl_secs),
        max_file_bytes: cfg.max_file_bytes,
        duplicate_scan_every: (cfg.duplicate_scan_secs > 0)
            .then(|| std::time::Duration::from_secs(cfg.duplicate_scan_secs)),
        visitor_sessions_per_minute: cfg.widget_sessions_per_minute,
        visitor_session_ttl: std::time::Duration::from_secs(cfg.visitor_session_ttl_secs),
        ..DeskOptions::default()
    };
    Ok(Desk::start(store, blobs, opts).await?)
}

pub(crate) async fn start_plugins(
    cfg: &Config,
    desk: &Desk,
) -> anyhow::Result<ferrydesk_plugins::Plugins> {
    let secrets = ferrydesk_plugins::secrets::Secrets::load(&cfg.data_dir)
        .map_err(|e| anyhow::anyhow!("the settings key: {e}"))?;
    ferrydesk_plugins::Plugins::start_with(
        desk.clone(),
        ferrydesk_plugins::PluginsOptions {
            cache_dir: cfg.data_dir.join("plugin-cache"),
            plugins_dir: Some(cfg.plugins_dir.clone()),
            secrets,
        },
    )
    .await
}

pub(crate) fn engine_options(cfg: &Config) -> ferrydesk_engine::EngineOptions {
    ferrydesk_engine::EngineOptions {
        lease: std::time::Duration::from_secs(cfg.job_lease_secs),
        backoff: std::time::Duration::from_millis(cfg.job_backoff_ms),
        chat_message_ttl: std::time::Duration::from_secs(cfg.chat_message_ttl_secs),
        node_identity: node_identity(&cfg.data_dir),
        ..Default::default()
    }
}

/// This node's identity across restarts: `data_dir/node-id` (created once), held by this
/// process through an exclusive lock on `data_dir/node.lock` for as long as it runs. A second
/// process on the same data directory (the lock is taken) gets none, so it never releases
/// jobs that a live node holds.
fn node_identity(data_dir: &std::path::Path) -> Option<String> {
    static IDENTITY: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    IDENTITY
        .get_or_init(|| {
            let taken = (|| -> std::io::Result<Option<String>> {
                let lock = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(data_dir.join("node.lock"))?;
                if rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive)
                    .is_err()
                {
                    return Ok(None);
                }
                // Held until the process exits.
                std::mem::forget(lock);
                let path = data_dir.join("node-id");
                let id = match std::fs::read_to_string(&path) {
                    Ok(s) if is_identity(s.trim()) => s.trim().to_owned(),
                    _ => {
                        let id = uuid::Uuid::new_v4().simple().to_string();
                        std::fs::write(&path, format!("{id}\n"))?;
                        id
                    }
                };
                Ok(Some(id))
            })();
            match taken {
                Ok(Some(id)) => Some(id),
                Ok(None) => {
                    tracing::warn!(dir = %data_dir.display(), "another process runs on this data directory: jobs this node leases are not reclaimed early after a restart");
                    None
                }
                Err(e) => {
                    tracing::warn!(error = %e, "no node identity: jobs this node leases are not reclaimed early after a restart");
                    None
                }
            }
        })
        .clone()
}

fn is_identity(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

pub(crate) async fn start_desk_pub(cfg: &Config) -> anyhow::Result<Desk> {
    start_desk(cfg).await
}

async fn run(cmd: Cmd, cfg: Config) -> anyhow::Result<()> {
    match cmd {
        Cmd::Backup { file } => backup::backup(&cfg, &file).await,
        Cmd::Restore { file } => backup::restore(&cfg, &file).await,
        Cmd::Migrate => {
            open_store(&cfg).await?;
            println!("migrations applied to {}", cfg.database_label());
            Ok(())
        }
        Cmd::User {
            cmd:
                UserCmd::Add {
                    username,
                    role,
                    name,
                    password,
                },
        } => {
            let desk = start_desk(&cfg).await?;
            let password = match password {
                Some(p) => p,
                None => {
                    eprint!("password for {username}: ");
                    let mut s = String::new();
                    std::io::stdin().read_line(&mut s)?;
                    s.trim_end().to_owned()
                }
            };
            let u = desk
                .create_user(
                    None,
                    ferrydesk_desk::admin::NewUserInput {
                        display_name: name.unwrap_or_else(|| username.clone()),
                        username,
                        password,
                        role: role.parse().map_err(|e| anyhow::anyhow!("{e}"))?,
                        email: None,
                        locale: None,
                        chat_limit: None,
                    },
                )
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("created {} ({}) id {}", u.username, u.role, u.id);
            desk.shutdown();
            Ok(())
        }
        Cmd::Plugin { cmd } => plugin_cli::run(cmd, &cfg).await,
        Cmd::Process { cmd } => process_cli::run(cmd, &cfg).await,
        Cmd::Serve => serve(cfg, false).await,
        Cmd::Demo => serve(cfg, true).await,
    }
}

async fn serve(cfg: Config, demo: bool) -> anyhow::Result<()> {
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .ok();
    let desk = start_desk(&cfg).await?;
    let plugins = start_plugins(&cfg, &desk).await?;
    let engine =
        ferrydesk_engine::Engine::start(desk.clone(), Some(plugins.clone()), engine_options(&cfg))
            .await
            .map_err(|e| anyhow::anyhow!("starting the process engine: {e}"))?;
    let deployed = engine
        .deploy_dir(&cfg.processes_dir)
        .await
        .map_err(|e| anyhow::anyhow!("deploying {}: {e}", cfg.processes_dir.display()))?;
    for d in deployed.iter().filter(|d| d.created) {
        tracing::info!(process = %d.key, version = d.version, "process deployed");
    }
    engine
        .seed_default_menu()
        .await
        .map_err(|e| anyhow::anyhow!("chat actions: {e}"))?;
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let url = format!("http://{addr}");
    if demo {
        let logins = demo::seed(&desk)
            .await
            .map_err(|e| anyhow::anyhow!("seeding demo data: {e}"))?;
        let installed = plugins
            .install_dir_all(
                &cfg.plugins_dir,
                &["greeting", "create-case", "webhook", "telegram"],
            )
            .await
            .map_err(|e| anyhow::anyhow!("installing demo plugins: {e}"))?;
        println!("\nFerrydesk demo is running at {url}/");
        println!("  widget demo page:  {url}/widget/demo");
        println!("  API (OpenAPI):     {url}/api/openapi.json");
        if installed.is_empty() {
            println!(
                "  plugins:           none found in {} (run plugins/build.sh)",
                cfg.plugins_dir.display()
            );
        } else {
            println!("  plugins:           {}", installed.join(", "));
        }
        for (who, user, pass) in &logins {
            println!("  {who:<10} {user} / {pass}");
        }
        println!();
    }
    tracing::info!(%url, database = %cfg.database_label(), "ferrydesk listening");
    let app = ferrydesk_api::router(ferrydesk_api::AppState {
        desk: desk.clone(),
        plugins,
        engine: engine.clone(),
        metrics,
        secure_cookies: cfg.secure_cookies,
        metrics_token: cfg.metrics_token.clone(),
        trusted_proxies: ferrydesk_api::parse_trusted_proxies(&cfg.trusted_proxies)
            .map_err(|e| anyhow::anyhow!(e))?,
    });
    // The peer address is what login and widget-session throttles count.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await?;
    engine.shutdown();
    desk.shutdown();
    desk.store().close().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
