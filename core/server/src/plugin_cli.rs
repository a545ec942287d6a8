//! `ferrydesk plugin …`: scaffold, check and pack plugins; install and manage them in a
//! deployment (the same rules as the admin API, run as the server's operator).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;

use crate::config::Config;

#[derive(Subcommand)]
pub enum PluginCmd {
    /// Creates a plugin crate: manifest, build config (wasm32-wasip2, small stack), code, test.
    New {
        name: String,
        #[arg(long, value_parser = ["action", "macro", "connector"])]
        kind: String,
        /// Where to create it [default: ./NAME].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The SDK crate [default: the sdk/ of this source tree].
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Validates a plugin directory: the manifest, and that the component loads in the real
    /// host with the imports and exports its kind needs.
    Check { dir: PathBuf },
    /// Packs a plugin directory into a tar package with the component's SHA-256 in the manifest.
    Pack {
        dir: PathBuf,
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Checks a package's (or directory's) signature and prints who published it.
    Verify { path: PathBuf },
    /// Installs a plugin directory or package (`--upgrade` replaces an older version).
    Install {
        path: PathBuf,
        #[arg(long)]
        upgrade: bool,
        /// Enable it right away, granting every host the manifest names.
        #[arg(long)]
        enable: bool,
    },
    /// Lists installed plugins.
    List,
    /// Enables a plugin, granting every host the manifest names.
    Enable {
        id: String,
        /// Also grant private and loopback addresses (if the manifest asks).
        #[arg(long)]
        allow_private: bool,
    },
    /// Disables a plugin.
    Disable { id: String },
    /// Replaces a plugin's settings with a JSON object.
    Config { id: String, json: String },
    /// Removes a plugin and its data.
    Uninstall { id: String },
}

pub async fn run(cmd: PluginCmd, cfg: &Config) -> anyhow::Result<()> {
    match cmd {
        PluginCmd::New {
            name,
            kind,
            dir,
            sdk,
        } => scaffold(&name, &kind, dir, sdk),
        PluginCmd::Check { dir } => check(&dir).await,
        PluginCmd::Pack { dir, output } => {
            let bytes =
                ferrydesk_plugins::package::pack(&dir).map_err(|e| anyhow::anyhow!("{e}"))?;
            let out = output.unwrap_or_else(|| {
                let name = dir
                    .canonicalize()
                    .ok()
                    .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .unwrap_or_else(|| "plugin".into());
                PathBuf::from(format!("{name}.fdplugin.tar"))
            });
            std::fs::write(&out, bytes).with_context(|| format!("writing {}", out.display()))?;
            println!("packed {}", out.display());
            Ok(())
        }
        PluginCmd::Verify { path } => {
            use ferrydesk_plugins::{describe_publisher, first_party, package};
            let pkg = if path.is_dir() {
                package::read_dir(&path)
            } else {
                let bytes =
                    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                package::read_tar(&bytes)
            }
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            let m = ferrydesk_plugin_host::manifest::parse(&pkg.manifest_text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            let publisher = package::verify(&pkg, m.publisher.as_ref().map(|p| p.key.as_str()))
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            let identity = publisher.unwrap_or_else(|| "unsigned".to_owned());
            let first = first_party::owner(&m.id, &identity, &first_party::keys()) == "first-party";
            println!(
                "{} {}: {}{}",
                m.id,
                m.version,
                if identity == "unsigned" {
                    "unsigned".to_owned()
                } else {
                    format!("signed by {}", describe_publisher(&identity))
                },
                if first_party::reserved(&m.id) && !first {
                    " — refused on upload: this id belongs to a first-party plugin"
                } else {
                    ""
                }
            );
            Ok(())
        }
        other => manage(other, cfg).await,
    }
}

async fn manage(cmd: PluginCmd, cfg: &Config) -> anyhow::Result<()> {
    let desk = crate::start_desk_pub(cfg).await?;
    let plugins = crate::start_plugins(cfg, &desk).await?;
    let e = |e: ferrydesk_desk::Error| anyhow::anyhow!("{e}");
    match cmd {
        PluginCmd::Install {
            path,
            upgrade,
            enable,
        } => {
            let pkg = if path.is_dir() {
                ferrydesk_plugins::package::read_dir(&path)
            } else {
                ferrydesk_plugins::package::read_tar(&std::fs::read(&path)?)
            }
            .map_err(e)?;
            let info = plugins.install(None, pkg, upgrade).await.map_err(e)?;
            println!("installed {} {} ({})", info.id, info.version, info.kind);
            if enable {
                plugins.enable(None, &info.id, None).await.map_err(e)?;
                println!("enabled {}", info.id);
            }
        }
        PluginCmd::List => {
            for p in plugins.list_all() {
                println!(
                    "{:<16} {:<10} {:<10} {}{}",
                    p.id,
                    p.version,
                    p.kind,
                    if p.enabled { "enabled" } else { "disabled" },
                    p.error.map(|e| format!("  ERROR: {e}")).unwrap_or_default()
                );
            }
        }
        PluginCmd::Enable { id, allow_private } => {
            let info = plugins
                .get_unchecked(&id)
                .ok_or_else(|| anyhow::anyhow!("plugin `{id}` is not installed"))?;
            let grant = ferrydesk_plugins::Grant {
                hosts: info
                    .capabilities
                    .pointer("/http/allowed_hosts")
                    .and_then(|v| serde_json::from_value(v.clone()).ok())
                    .unwrap_or_default(),
                private: allow_private,
                ..Default::default()
            };
            plugins.enable(None, &id, Some(grant)).await.map_err(e)?;
            println!("enabled {id}");
        }
        PluginCmd::Disable { id } => {
            plugins.disable(None, &id).await.map_err(e)?;
            println!("disabled {id}");
        }
        PluginCmd::Config { id, json } => {
            let v: serde_json::Value =
                serde_json::from_str(&json).context("the settings must be a JSON object")?;
            plugins.configure(None, &id, v).await.map_err(e)?;
            println!("configured {id}");
        }
        PluginCmd::Uninstall { id } => {
            plugins.uninstall(None, &id).await.map_err(e)?;
            println!("uninstalled {id}");
        }
        PluginCmd::New { .. }
        | PluginCmd::Check { .. }
        | PluginCmd::Pack { .. }
        | PluginCmd::Verify { .. } => {
            unreachable!("handled above")
        }
    }
    desk.shutdown();
    Ok(())
}

async fn check(dir: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(dir.join("plugin.json"))
        .with_context(|| format!("reading {}/plugin.json", dir.display()))?;
    let manifest = match ferrydesk_plugin_host::manifest::parse(&text) {
        Ok(m) => m,
        Err(e) => {
            for p in &e.problems {
                eprintln!("plugin.json {p}");
            }
            anyhow::bail!("the manifest is invalid ({} problem(s))", e.problems.len());
        }
    };
    println!(
        "manifest ok: {} {} ({:?}, API {})",
        manifest.id, manifest.version, manifest.kind, manifest.api_version
    );
    let wasm = dir.join(&manifest.component.path);
    let size = match std::fs::metadata(&wasm) {
        Ok(m) => m.len(),
        Err(e) => anyhow::bail!(
            "{}: {e}. Build it with `cargo build --release --target wasm32-wasip2`; with CARGO_TARGET_DIR set, the component is under that directory, so point `component.path` at it",
            wasm.display()
        ),
    };
    let host = ferrydesk_plugin_host::testing::TestHost::new()?;
    let plugin = host
        .load_dir(dir)
        .await
        .context("the component does not load")?;
    println!("component ok: {size} bytes, sha256 {}", plugin.sha256());
    for a in &manifest.actions {
        println!("  action {}", a.id);
    }
    for h in &manifest.helpers {
        println!("  helper {{{{{}}}}}", h.name);
    }
    if let Some(c) = &manifest.connector {
        println!(
            "  connector for `{}` channels ({})",
            c.channel_type, c.delivery
        );
    }
    Ok(())
}

fn scaffold(
    name: &str,
    kind: &str,
    dir: Option<PathBuf>,
    sdk: Option<PathBuf>,
) -> anyhow::Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
        && !name.contains("--");
    if !valid {
        anyhow::bail!(
            "`{name}`: a plugin id is kebab-case: lowercase letters, digits and single dashes"
        );
    }
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
        anyhow::bail!("{} exists and is not empty", dir.display());
    }
    let sdk = match sdk {
        Some(s) => s,
        None => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../sdk")),
    };
    let sdk = sdk
        .canonicalize()
        .with_context(|| format!("the SDK is not at {} (pass --sdk)", sdk.display()))?;
    let krate = name.replace('-', "_");
    std::fs::create_dir_all(dir.join("src"))?;
    std::fs::create_dir_all(dir.join(".cargo"))?;
    let files = crate::plugin_templates::files(name, &krate, kind, &sdk.display().to_string());
    for (path, text) in files {
        std::fs::write(dir.join(path), text)?;
    }
    println!("created {kind} plugin `{name}` in {}", dir.display());
    println!("next:");
    println!("  cd {}", dir.display());
    println!("  cargo test                                   # unit tests, natively");
    println!("  cargo build --release --target wasm32-wasip2 # the component");
    println!("  ferrydesk plugin check .");
    Ok(())
}
