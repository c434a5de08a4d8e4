//! Architecture check: the core stays sans-IO — no async runtime, network, storage or actor crate.

#[test]
fn core_depends_on_no_io_crate() {
    let manifest_path = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let manifest: toml::Table = std::fs::read_to_string(manifest_path).unwrap().parse().unwrap();
    let forbidden = [
        "tokio",
        "tonic",
        "sled",
        "ractor",
        "hyper",
        "rustls",
        "mio",
        "async-std",
        "futures",
    ];
    for section in ["dependencies", "build-dependencies"] {
        let Some(deps) = manifest.get(section).and_then(|d| d.as_table()) else {
            continue;
        };
        for name in deps.keys() {
            assert!(
                !forbidden
                    .iter()
                    .any(|f| name == f || name.starts_with(&format!("{f}-"))),
                "the sans-IO core must not depend on {name} ({section})"
            );
        }
    }
    // The test must be looking at the real manifest.
    assert!(
        manifest
            .get("dependencies")
            .and_then(|d| d.as_table())
            .is_some_and(|d| d.contains_key("serde"))
    );
}
