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
