//! Test-only fault injection. `FERRYDESK_FAILPOINTS="name=PATH,…"` makes the named point
//! create the file `PATH` and then wait forever, so a test can kill -9 the process exactly
//! there (e.g. inside a merge's transaction). Compiled into debug builds only (the tests run
//! the debug binary); release builds ignore the variable.

#[cfg(debug_assertions)]
use std::sync::OnceLock;

#[cfg(debug_assertions)]
fn points() -> &'static [(String, String)] {
    static POINTS: OnceLock<Vec<(String, String)>> = OnceLock::new();
    POINTS.get_or_init(|| {
        std::env::var("FERRYDESK_FAILPOINTS")
            .unwrap_or_default()
            .split(',')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect()
    })
}

/// Stops here for good if the point is armed (after creating its file).
#[cfg(debug_assertions)]
pub(crate) async fn hit(name: &str) {
    if let Some((_, path)) = points().iter().find(|(k, _)| k == name) {
        tracing::warn!(failpoint = name, "failpoint reached; waiting to be killed");
        let _ = std::fs::write(path, name);
        std::future::pending::<()>().await;
    }
}

#[cfg(not(debug_assertions))]
pub(crate) async fn hit(_name: &str) {}
