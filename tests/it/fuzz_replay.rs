//! Corpus replay (RELIABILITY.md R11): every file under `fuzz/corpus/<target>/` (our seeds, and
//! every input that once crashed a target, kept beside them) goes through the same entry point
//! the libFuzzer target calls, in plain `cargo test` on stable, so CI replays them on every run
//! even where `tests/fuzz.sh` (nightly features) is not run. A target without a corpus, or a
//! corpus without a target, fails the test.

use std::path::Path;

type Entry = fn(&[u8]);

/// `fuzz/fuzz_targets/<name>.rs` ↔ entry point; keep in step with `fuzz/Cargo.toml`.
const TARGETS: &[(&str, Entry)] = &[
    ("ipmi_rmcp", groundtruth_agent::fuzz::ipmi_rmcp),
    ("ipmi_fru", groundtruth_agent::fuzz::ipmi_fru),
    ("ipmi_sdr", groundtruth_agent::fuzz::ipmi_sdr),
    ("modbus_decode", groundtruth_agent::fuzz::modbus_decode),
    ("modbus_map", groundtruth_agent::fuzz::modbus_map),
    ("redfish_json", groundtruth_agent::fuzz::redfish_json),
    ("spool_record", groundtruth_agent::fuzz::spool_record),
    ("target_url", groundtruth_agent::fuzz::target_url),
    ("snmp_message", groundtruth_agent::fuzz::snmp_message),
    ("proto_batch", groundtruth_collector::fuzz::proto_batch),
    ("location_text", groundtruth_collector::fuzz::location_text),
    (
        "location_patterns",
        groundtruth_collector::fuzz::location_patterns,
    ),
    ("site_map", groundtruth_collector::fuzz::site_map),
];

#[test]
fn every_fuzz_target_has_an_entry_point_and_a_corpus() {
    let fuzz = groundtruth_tests::repo_root().join("fuzz");
    let mut files: Vec<String> = std::fs::read_dir(fuzz.join("fuzz_targets"))
        .unwrap()
        .map(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_owned()
        })
        .collect();
    files.sort();
    let mut known: Vec<String> = TARGETS.iter().map(|(n, _)| (*n).to_owned()).collect();
    known.sort();
    assert_eq!(files, known, "fuzz/fuzz_targets and TARGETS differ");
    let manifest = std::fs::read_to_string(fuzz.join("Cargo.toml")).unwrap();
    for (name, _) in TARGETS {
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "{name} missing from fuzz/Cargo.toml"
        );
        let dir = fuzz.join("corpus").join(name);
        assert!(
            std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some()),
            "no seed corpus in {}",
            dir.display()
        );
    }
}

#[test]
fn fuzz_corpora_replay_without_panics() {
    let corpus = groundtruth_tests::repo_root().join("fuzz").join("corpus");
    let mut total = 0;
    for (name, entry) in TARGETS {
        let n = replay(&corpus.join(name), *entry);
        eprintln!("fuzz corpus {name}: {n} inputs replayed");
        total += n;
    }
    assert!(total > 0);
}

fn replay(dir: &Path, entry: Entry) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut n = 0;
    for e in rd {
        let path = e.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let r = std::panic::catch_unwind(|| entry(&data));
        assert!(r.is_ok(), "{} panicked", path.display());
        // Every prefix too: a cut-short answer is the commonest malformed input.
        for cut in [0, 1, data.len() / 2, data.len().saturating_sub(1)] {
            entry(&data[..cut.min(data.len())]);
        }
        n += 1;
    }
    n
}
