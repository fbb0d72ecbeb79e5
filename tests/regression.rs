//! One test per bug found by the fuzz targets (`fuzz/`) and the malformed-input suite
//! (`tests/malformed.rs`), named after it, with the input that showed it inline. A crash the
//! fuzzer finds goes through the same entry point as its target (`exfilwatch::fuzzing`).

use exfilwatch::decode::{parse_ip, Decoded, Decoder, Malformed, MAX_RECORD_BYTES};

/// The reasons of the set-aside items and the number of events of one unit.
fn decode(unit: &[u8]) -> (Vec<Malformed>, usize) {
    let mut d = Decoder::new();
    let (mut reasons, mut events) = (Vec::new(), 0);
    d.decode(unit, |item| match item {
        Decoded::Event(_) => events += 1,
        Decoded::Malformed { reason, .. } => reasons.push(reason),
        Decoded::Skipped(_) => {}
    });
    (reasons, events)
}

const RECORD: &str = r#"{"time":"2021-08-17T02:13:05Z","resourceId":"/X/CONTOSO","category":"DataPlaneRequests","properties":{"clientIpAddress":"10.0.0.1","responseLength":"5"}}"#;

#[test]
fn a_byte_order_mark_made_the_first_record_of_a_file_invalid_json() {
    let unit = [b"\xEF\xBB\xBF".as_slice(), RECORD.as_bytes()].concat();
    assert_eq!(decode(&unit), (vec![], 1));
}

#[test]
fn an_address_with_an_unclosed_bracket_was_accepted() {
    assert_eq!(parse_ip("[10.20.30.4"), None);
    assert_eq!(parse_ip("[2001:db8::1]garbage"), None);
    assert_eq!(parse_ip("[2001:db8::1]:443"), Some("2001:db8::1".parse().unwrap()));
}

#[test]
fn a_record_larger_than_a_megabyte_was_parsed_whole_and_used() {
    let big = RECORD.replace("10.0.0.1\"", &format!("10.0.0.1\",\"userAgent\":\"{}\"", "x".repeat(MAX_RECORD_BYTES)));
    assert_eq!(decode(big.as_bytes()), (vec![Malformed::TooLarge], 0));
    // In an envelope: only that record is set aside.
    let env = format!("{{\"records\": [{RECORD}, {big}, {RECORD}]}}");
    assert_eq!(decode(env.as_bytes()), (vec![Malformed::TooLarge], 2));
}

/// Found by the `state` fuzz target: a model table whose embedded Arrow schema (the IPC
/// message in the Parquet metadata) names an unknown type made arrow-ipc panic
/// (`not implemented: Type <UNKNOWN 53> not supported`) instead of refusing the model. The
/// input: the target's (first byte: the table replaced, here `verdicts.parquet`).
#[test]
fn a_model_table_whose_arrow_schema_names_an_unknown_type_crashed_the_loader() {
    let input = include_bytes!("regression/model-table-arrow-schema-unknown-type.bin");
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/models/sample-baseline");
    let read = |name: &str| std::fs::read(format!("{model}/{name}")).unwrap();
    let mut tables: Vec<Vec<u8>> = exfilwatch::model::FILES.iter().map(|f| read(f)).collect();
    tables[input[0] as usize] = input[1..].to_vec();
    let manifest = read(exfilwatch::model::MANIFEST);
    // The embedded schema is no longer read and the table's data is intact: it loads.
    assert!(exfilwatch::model::load_unchecked(&manifest, tables).is_ok());
    // The whole fuzz target's path, too.
    exfilwatch::fuzzing::model(&manifest, {
        let mut t: Vec<Vec<u8>> = exfilwatch::model::FILES.iter().map(|f| read(f)).collect();
        t[input[0] as usize] = input[1..].to_vec();
        t
    });
}

/// Found by the `state` fuzz target after the fix above: a corrupted dictionary-encoded column
/// makes parquet 54's RLE decoder index out of bounds (a panic inside the parquet crate). The
/// loader catches it and refuses the model.
#[test]
fn a_model_table_with_a_corrupted_dictionary_column_crashed_the_loader() {
    let input = include_bytes!("regression/model-table-rle-index-out-of-bounds.bin");
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/models/sample-baseline");
    let read = |name: &str| std::fs::read(format!("{model}/{name}")).unwrap();
    let mut tables: Vec<Vec<u8>> = exfilwatch::model::FILES.iter().map(|f| read(f)).collect();
    tables[input[0] as usize] = input[1..].to_vec();
    let manifest = read(exfilwatch::model::MANIFEST);
    let err = exfilwatch::model::load_unchecked(&manifest, tables).unwrap_err();
    assert!(err.to_string().contains("not a readable Parquet file"), "{err}");
}
