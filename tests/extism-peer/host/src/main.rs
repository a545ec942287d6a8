//! Measures Extism call costs for the same trivial plugin as Ferrydesk's benchmark and prints
//! them as one JSON line: `{"reused_us": {...}, "fresh_us": {...}}` (p50/p99/mean in µs).
//! Usage: extism-peer GUEST.wasm N
use std::time::Instant;

use extism::{CompiledPlugin, Manifest, Plugin, PluginBuilder, Wasm};

fn stats(mut v: Vec<f64>) -> serde_json::Value {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let mean = v.iter().sum::<f64>() / n as f64;
    serde_json::json!({"p50": v[n / 2], "p99": v[(n * 99 / 100).min(n - 1)], "mean": mean})
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let wasm = std::fs::read(&args[1]).expect("guest wasm");
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let input = r#"{"ok":1}"#;
    let manifest = Manifest::new([Wasm::data(wasm)]);

    let mut plugin = Plugin::new(&manifest, [], true).expect("plugin");
    let mut reused = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let out = plugin.call::<&str, &str>("echo", input).expect("call");
        reused.push(t.elapsed().as_secs_f64() * 1e6);
        assert_eq!(out, input);
    }

    let compiled = CompiledPlugin::new(PluginBuilder::new(manifest).with_wasi(true)).expect("compile");
    let fresh_n = (n / 10).max(100);
    let mut fresh = Vec::with_capacity(fresh_n);
    for _ in 0..fresh_n {
        let t = Instant::now();
        let mut p = Plugin::new_from_compiled(&compiled).expect("instance");
        let out = p.call::<&str, &str>("echo", input).expect("call");
        fresh.push(t.elapsed().as_secs_f64() * 1e6);
        assert_eq!(out, input);
    }
    println!("{}", serde_json::json!({"reused_us": stats(reused), "fresh_us": stats(fresh), "n": n, "fresh_n": fresh_n}));
}
