//! Fuzzing entry points, one per target in the `fuzz/` workspace (the target files are one-line
//! calls into here), so the same code runs under libFuzzer and in the corpus replay test
//! (`tests/it/fuzz_replay.rs`, plain `cargo test` on stable). Each takes arbitrary bytes and must
//! never panic, hang or allocate without bound. Not an API.

use std::sync::OnceLock;

use groundtruth_proto::v1::Batch;
use prost::Message as _;

use crate::locate::{self, TextSource};
use crate::store::Store;

/// What reaches the collector from the network: a protobuf `Batch` (gRPC message or MQTT
/// payload) through `Batch::decode`, the canonical proto3 JSON mapping and back, the MQTT topic
/// parser; then, when it decodes, the real commit path (validation, dedupe, devices, readings,
/// location evidence) on a SQLite store in a temporary directory.
pub fn proto_batch(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = groundtruth_proto::topics::parse(text);
    }
    let Ok(batch) = Batch::decode(data) else {
        return;
    };
    if let Ok(v) = groundtruth_proto::json::to_value(&batch) {
        let _ = groundtruth_proto::json::from_str::<Batch>(&v.to_string());
    }
    let h = harness();
    // A store error (not a panic) is a valid outcome for garbage.
    let _ = h.rt.block_on(h.store.commit_batch(&batch));
}

struct Harness {
    rt: tokio::runtime::Runtime,
    store: Store,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let dir = std::env::temp_dir().join(format!("groundtruth-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("fuzz store dir");
        let store = rt
            .block_on(Store::open(&dir.join("state.db")))
            .expect("fuzz store");
        Harness { rt, store }
    })
}

/// sysLocation / asset tag text (device input) through the built-in location patterns.
pub fn location_text(data: &[u8]) {
    static PATTERNS: OnceLock<Vec<locate::Pattern>> = OnceLock::new();
    let patterns = PATTERNS.get_or_init(|| locate::patterns_with(None).expect("built-in patterns"));
    let text = String::from_utf8_lossy(data);
    for source in [TextSource::SysLocation, TextSource::AssetTag, TextSource::Any] {
        let _ = locate::parse_text(patterns, source, &text);
    }
}

/// The operator's site map file through its parser and validation, then its lookups.
pub fn site_map(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(m) = crate::sitemap::SiteMap::parse(text, "fuzz-sitemap.toml") {
        let _ = m.evidence_for_serial("GT0001");
        let _ = m.port("sw1", "Gi1/0/1");
        let _ = m.rack("DC1", "R01");
        let _ = m.racks().len();
    }
}

/// Operator location patterns (`[location] patterns` file) compiled, then applied.
pub fn location_patterns(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = locate::parse_patterns(text, "fuzz-patterns.toml") {
        let _ = locate::parse_text(&p, TextSource::Any, "Room 1, Row B, Rack R07, U12");
    }
}
