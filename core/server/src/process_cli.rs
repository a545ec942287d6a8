//! `ferrydesk process …`: deploy BPMN files and look at processes, run against the configured
//! database (the same rules as the admin API, as the server's operator).

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use crate::config::Config;

#[derive(Subcommand)]
pub enum ProcessCmd {
    /// Deploys BPMN files (as Camunda Modeler saves them); each process becomes a new version.
    Deploy {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Lists deployed processes and their versions.
    List,
}

pub async fn run(cmd: ProcessCmd, cfg: &Config) -> anyhow::Result<()> {
    let desk = crate::start_desk_pub(cfg).await?;
    let engine = ferrydesk_engine::Engine::embedded(desk.clone(), crate::engine_options(cfg));
    let r = match cmd {
        ProcessCmd::Deploy { files } => {
            let mut failed = false;
            for f in files {
                let xml = std::fs::read_to_string(&f)
                    .with_context(|| format!("reading {}", f.display()))?;
                match engine.deploy(None, &xml).await {
                    Ok(defs) => {
                        for d in defs {
                            let what = if d.created { "deployed" } else { "unchanged" };
                            println!("{}: {} version {} {what}", f.display(), d.key, d.version);
                        }
                    }
                    Err(e) => {
                        eprintln!("{}: {e}", f.display());
                        failed = true;
                    }
                }
            }
            if failed {
                Err(anyhow::anyhow!("some files were not deployed"))
            } else {
                Ok(())
            }
        }
        ProcessCmd::List => {
            let mut conn = desk.store().read().await?;
            for d in ferrydesk_store::processes::list_definitions(&mut conn).await? {
                println!(
                    "{:<24} v{:<4} {}",
                    d.process_key,
                    d.version,
                    d.name.unwrap_or_default()
                );
            }
            Ok(())
        }
    };
    desk.shutdown();
    r
}
