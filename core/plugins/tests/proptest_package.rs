//! Property tests: random and mutated tar bytes unpack to a package or a clear error; never a
//! panic, each case in bounded time. Signature checks never panic on any input either.

use std::time::{Duration, Instant};

use ferrydesk_plugins::package;
use proptest::prelude::*;

fn valid_tar() -> Vec<u8> {
    let manifest = br#"{"id":"p","name":"P","version":"1.0.0","api_version":"0.1","kind":"action","component":{"path":"plugin.wasm","sha256":"00"},"actions":[{"id":"a","title":"A"}]}"#;
    let mut out = Vec::new();
    {
        let mut b = tar::Builder::new(&mut out);
        for (name, data) in [
            ("plugin.json", &manifest[..]),
            ("plugin.wasm", &b"\0asm\x0d\0\x01\0"[..]),
            ("plugin.sig", &b"AAAA"[..]),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, data).unwrap_or_default();
        }
        b.finish().unwrap_or_default();
    }
    out
}

fn check(bytes: &[u8]) {
    let t0 = Instant::now();
    if let Ok(pkg) = package::read_tar(bytes) {
        let _ = package::verify(
            &pkg,
            Some("ed25519:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
        );
        let _ = package::verify(&pkg, Some("ed25519:not-base64"));
        let _ = ferrydesk_plugin_host::manifest::parse(&pkg.manifest_text);
    }
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..4096)) {
        check(&b);
    }

    #[test]
    fn mutated_archives_never_panic(muts in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16), cut in any::<prop::sample::Index>()) {
        let mut b = valid_tar();
        for (i, v) in muts {
            let i = i.index(b.len());
            b[i] = v;
        }
        let keep = cut.index(b.len() + 1).max(1);
        b.truncate(keep);
        check(&b);
    }

    #[test]
    fn mutated_headers_never_panic(i in 0usize..512, v in any::<u8>(), j in 0usize..512, w in any::<u8>()) {
        // The first header (size, type, checksum fields) is where tar parsing branches.
        let mut b = valid_tar();
        b[i] = v;
        b[j] = w;
        check(&b);
    }
}

#[test]
fn the_valid_archive_unpacks() {
    let pkg = package::read_tar(&valid_tar()).expect("valid");
    assert_eq!(pkg.signature.as_deref(), Some("AAAA"));
}
