use super::*;
use crate::decode::Event;
use crate::time::{parse_timestamp, HOUR, MINUTE};

fn ev(t: Nanos, ip: &str, bytes: u64) -> Event<'static> {
    crate::detect::tests::ev(t, "contoso", "key:primarymasterkey", ip, bytes)
}

/// Four days of hourly reads and, at the end, a new origin with evidence and marks.
fn trained() -> LearnedState {
    let t0 = parse_timestamp("2021-08-01T00:00:00Z").unwrap();
    let cfg = DetectConfig { learning_period: crate::units::Span(0), ..DetectConfig::default() };
    let mut d = Detector::new(cfg);
    let mut out = Vec::new();
    for h in 0..96 {
        d.ingest(&ev(t0 + h * HOUR, "10.0.0.5", 30 << 20), &mut out);
    }
    for i in 0..300 {
        d.ingest(&ev(t0 + 96 * HOUR + i * MINUTE / 10, "2001:db8::7", 4 << 20), &mut out);
    }
    d.finish(&mut out);
    assert!(!out.is_empty());
    d.export_model().unwrap()
}

#[test]
fn tables_round_trip_through_parquet() {
    let st = trained();
    assert!(st.origins.iter().any(|o| o.evidence.is_some() && o.mark_level > 0));
    assert!(st.keys.iter().any(|k| k.peak_model.is_some() && k.today.is_some()));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m");
    let m = write(&path, &st, &TrainInfo::default()).unwrap();
    assert_eq!(m.files.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(), FILES);
    let loaded = load(&path).unwrap();
    assert_eq!(loaded.state, st);
    assert_eq!(loaded.manifest, m);
    // Written twice, byte for byte the same (the shipped model can be rebuilt and compared).
    let again = write(&path, &st, &TrainInfo::default()).unwrap();
    assert_eq!(again, m);
    let origins = &loaded.key_summaries(Some("contoso"), None)[0].origins;
    // The most bytes first: 2.8 GiB from the familiar origin, 1.2 GiB from the new one.
    assert_eq!((origins[0].origin.as_str(), origins[0].familiar), ("10.0.0.0/24", true));
    assert_eq!((origins[1].origin.as_str(), origins[1].familiar), ("2001:db8::/64", false));
}

#[test]
fn an_existing_directory_that_is_not_a_model_is_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("precious.txt"), "x").unwrap();
    let e = write(dir.path(), &trained(), &TrainInfo::default()).unwrap_err();
    assert!(matches!(e, ModelError::WouldReplace { .. }), "{e}");
    assert!(dir.path().join("precious.txt").exists());
}
