//! The operator web app (`web/`) is embedded in the binary: refuse to build without it.

fn main() {
    let dist = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web/dist");
    println!("cargo:rerun-if-changed={}", dist.display());
    if !dist.join("index.html").exists() {
        panic!(
            "\n\nThe web app is not built: {} is missing.\n\
             Build it first:  npm --prefix web ci && npm --prefix web run build\n\
             (./run.sh and ./test.sh do this for you.)\n\n",
            dist.join("index.html").display()
        );
    }
}
