//! ARCHITECTURE.md is a map: every file or folder it names in backticks (`src/...`,
//! `tests/...`, `deploy/...`, ...) must exist, and every module file under `src/` must be named
//! there or sit in a folder it names, so that moving code without updating the map fails here.

use std::path::Path;

const ROOTS: [&str; 10] =
    ["src/", "tests/", "deploy/", "bench/", "benches/", "scripts/", "examples/", "docs/", "models/", "sample-logs/"];

fn named_paths(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|t| ROOTS.iter().any(|r| t.starts_with(r)))
        .filter(|t| !t.contains(['<', '*', ' ']))
        .map(str::to_string)
        .collect()
}

#[test]
fn every_path_architecture_md_names_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let named = named_paths(&text);
    assert!(named.len() > 20, "ARCHITECTURE.md names {} paths: {named:?}", named.len());
    let missing: Vec<&String> = named.iter().filter(|p| !root.join(p.as_str()).exists()).collect();
    assert!(missing.is_empty(), "ARCHITECTURE.md names paths that do not exist: {missing:?}");
}

#[test]
fn every_source_folder_is_on_the_map() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let named = named_paths(&text);
    let mut unmapped = Vec::new();
    for entry in std::fs::read_dir(root.join("src")).unwrap() {
        let path = entry.unwrap().path();
        let rel = format!("src/{}", path.file_name().unwrap().to_string_lossy());
        let shown = if path.is_dir() { format!("{rel}/") } else { rel.clone() };
        // A folder is on the map when it or a file in it is named; a top-level file when named.
        let on_map = named.iter().any(|n| n == &shown || n.starts_with(&format!("{rel}/")));
        let is_root_module = matches!(rel.as_str(), "src/lib.rs" | "src/main.rs");
        if !on_map && !is_root_module {
            unmapped.push(shown);
        }
    }
    unmapped.sort();
    assert!(unmapped.is_empty(), "not on ARCHITECTURE.md's map: {unmapped:?}");
}

/// The "must not import" column of the code map, for the folders the data's path runs through.
#[test]
fn stages_import_only_what_the_map_allows() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let rules: [(&str, &[&str]); 6] = [
        ("src/decode", &["detect", "sinks", "sources", "service", "telemetry", "replay", "model", "state"]),
        ("src/detect", &["sources", "sinks", "service", "telemetry", "replay", "model", "state"]),
        ("src/sinks", &["detect", "service", "replay", "model", "sources"]),
        ("src/sources", &["detect", "sinks", "service", "replay", "model"]),
        ("src/state", &["detect", "service", "replay", "sinks"]),
        ("src/model", &["service", "replay"]),
    ];
    let mut broken = Vec::new();
    for (folder, forbidden) in rules {
        for path in rust_files(&root.join(folder)) {
            let text = std::fs::read_to_string(&path).unwrap();
            for f in forbidden {
                if text.contains(&format!("crate::{f}::")) || text.contains(&format!("crate::{f}}}")) {
                    broken.push(format!("{} imports crate::{f}", path.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "{broken:#?}");
}

/// Every `.rs` file under `dir`, subfolders included.
fn rust_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// "rdkafka is confined to the Kafka source and the Kafka sinks" (ARCHITECTURE.md).
#[test]
fn only_the_kafka_source_and_sinks_speak_rdkafka() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let allowed = [root.join("src/sources/kafka.rs"), root.join("src/sinks/kafka.rs")];
    let speaking: Vec<String> = rust_files(&root.join("src"))
        .into_iter()
        .filter(|p| !allowed.contains(p))
        .filter(|p| std::fs::read_to_string(p).unwrap().contains("rdkafka::"))
        .map(|p| p.display().to_string())
        .collect();
    assert!(speaking.is_empty(), "{speaking:#?}");
}
