//! Per-call cost of plugins, in one run:
//! * a Ferrydesk **action** on a fresh instance (input checked against its schema, instantiate,
//!   call, output parsed and checked) — the `echo` action of the test plugin;
//! * a Ferrydesk **macro helper** on a fresh instance — `format_date` of the greeting plugin;
//! * the **native** Rust equivalent of the echo (parse + serialise the JSON);
//! * an **Extism** host (the peer) running an equivalent echo plugin, reused and fresh
//!   (`tests/extism-peer`, built by this program if needed).
//!
//! `cargo bench -p ferrydesk-tests --bench plugin_call` (plugins built with plugins/build.sh).

use std::path::{Path, PathBuf};
use std::time::Instant;

use ferrydesk_plugin_host::testing::TestHost;
use serde_json::{Value, json};

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    (
        v[n / 2],
        v[(n * 99 / 100).min(n - 1)],
        v.iter().sum::<f64>() / n as f64,
    )
}

fn row(name: &str, (p50, p99, mean): (f64, f64, f64)) {
    println!("{name:<52} {p50:>9.2} {p99:>9.2} {mean:>9.2}");
}

fn extism(n: usize) -> Option<Value> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("extism-peer");
    let target = std::env::var("EXTISM_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            std::env::var("CARGO_TARGET_DIR")
                .map(|t| PathBuf::from(t).join("../extism-target"))
                .unwrap_or_else(|_| root.join("target"))
        });
    let run = |args: &[&str]| {
        std::process::Command::new("cargo")
            .args(args)
            .current_dir(&root)
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    eprintln!("building the Extism peer (first time: several minutes)…");
    if !run(&[
        "build",
        "--release",
        "-p",
        "guest",
        "--target",
        "wasm32-unknown-unknown",
    ]) || !run(&["build", "--release", "-p", "extism-peer"])
    {
        eprintln!("the Extism peer did not build; its rows are missing");
        return None;
    }
    let out = std::process::Command::new(target.join("release/extism-peer"))
        .arg(target.join("wasm32-unknown-unknown/release/guest.wasm"))
        .arg(n.to_string())
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::var("N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    let t = TestHost::new()?;
    let evil = t.load_dir(plugins.join("testing/evil")).await?;
    let greeting = t.load_dir(plugins.join("greeting")).await?;
    let call = t.call_with(&evil, json!({}), false);
    let gcall = t.call_with(&greeting, json!({"utc_offset": 0}), false);
    let input = json!({"ok": 1});

    // Warm-up (page faults of the pool slots, caches).
    for _ in 0..500 {
        evil.run_action(&call, "echo", &input).await?;
        greeting
            .render(
                &gcall,
                "format_date",
                &[json!(1_795_564_800_000i64)],
                &json!({}),
                &json!({}),
            )
            .await?;
    }

    let mut action = Vec::with_capacity(n);
    for _ in 0..n {
        let s = Instant::now();
        let out = evil.run_action(&call, "echo", &input).await?;
        action.push(s.elapsed().as_secs_f64() * 1e6);
        assert_eq!(out.output, input);
    }
    let mut helper = Vec::with_capacity(n);
    for _ in 0..n {
        let s = Instant::now();
        let out = greeting
            .render(
                &gcall,
                "format_date",
                &[json!(1_795_564_800_000i64)],
                &json!({}),
                &json!({}),
            )
            .await?;
        helper.push(s.elapsed().as_secs_f64() * 1e6);
        assert_eq!(out, "2026-11-25");
    }
    let mut inst = Vec::with_capacity(n);
    for _ in 0..n {
        let s = Instant::now();
        evil.bench_instantiate(&call)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        inst.push(s.elapsed().as_secs_f64() * 1e6);
    }
    let mut stores = Vec::with_capacity(n);
    for _ in 0..n {
        let s = Instant::now();
        evil.bench_store(&call);
        stores.push(s.elapsed().as_secs_f64() * 1e6);
    }
    let text = input.to_string();
    let mut native = Vec::with_capacity(n);
    for _ in 0..n {
        let s = Instant::now();
        let v: Value = serde_json::from_str(std::hint::black_box(&text))?;
        let out = std::hint::black_box(serde_json::to_string(&v)?);
        native.push(s.elapsed().as_secs_f64() * 1e6);
        assert_eq!(out, text);
    }

    let ext = extism(n);
    println!("\nplugin call cost, µs (N = {n}; fresh Extism instances N/10)");
    println!("{:<52} {:>9} {:>9} {:>9}", "", "p50", "p99", "mean");
    let a = stats(action);
    let h = stats(helper);
    let nat = stats(native);
    row("ferrydesk action, fresh instance (echo)", a);
    row("ferrydesk macro helper, fresh instance (format_date)", h);
    row("  of which: store + instance, no call", stats(inst));
    row(
        "  of which: store (WASI context, limits) only",
        stats(stores),
    );
    row("native Rust echo (parse + serialise)", nat);
    let get = |v: &Value, k: &str| {
        (
            v[k]["p50"].as_f64().unwrap_or(f64::NAN),
            v[k]["p99"].as_f64().unwrap_or(f64::NAN),
            v[k]["mean"].as_f64().unwrap_or(f64::NAN),
        )
    };
    if let Some(e) = &ext {
        let reused = get(e, "reused_us");
        let fresh = get(e, "fresh_us");
        row("extism 1.30, reused plugin (echo)", reused);
        row(
            "extism 1.30, fresh plugin from CompiledPlugin (echo)",
            fresh,
        );
        println!("\nratios (p50)");
        println!(
            "  extism reused / ferrydesk fresh action:  {:.2}×",
            reused.0 / a.0
        );
        println!(
            "  extism fresh  / ferrydesk fresh action:  {:.1}×",
            fresh.0 / a.0
        );
    }
    println!(
        "  ferrydesk fresh action / native:        {:.0}×",
        a.0 / nat.0
    );
    println!(
        "  goal: fresh-instance action ≤ 10 µs → {}",
        if a.0 <= 10.0 { "met" } else { "missed" }
    );
    Ok(())
}
