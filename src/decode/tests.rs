use super::*;
use crate::time::format_rfc3339;

/// Decodes `bytes` with a decoder and a copy of them that live as long as the test (events
/// borrow from either).
fn decode_unit(bytes: &[u8], emit: impl FnMut(Decoded<'static>)) {
    let decoder: &'static mut Decoder = Box::leak(Box::new(Decoder::new()));
    let bytes: &'static [u8] = Box::leak(bytes.into());
    decoder.decode(bytes, emit);
}

fn one(line: &str) -> Decoded<'static> {
    let mut items = Vec::new();
    decode_unit(line.as_bytes(), |d| items.push(d));
    assert_eq!(items.len(), 1, "{items:?}");
    items.pop().unwrap()
}

fn event(line: &str) -> Event<'static> {
    match one(line) {
        Decoded::Event(e) => e,
        other => panic!("expected an event, got {other:?}"),
    }
}

fn reason(line: &str) -> Malformed {
    match one(line) {
        Decoded::Malformed { reason, .. } => reason,
        other => panic!("expected malformed, got {other:?}"),
    }
}

/// Microsoft's documented sample, verbatim.
const MS_SAMPLE: &str = r#"{ "time": "2019-04-23T23:12:52.3814846Z", "resourceId": "/SUBSCRIPTIONS/<your_subscription_ID>/RESOURCEGROUPS/<your_resource_group>/PROVIDERS/MICROSOFT.DOCUMENTDB/DATABASEACCOUNTS/<your_database_account>", "category": "DataPlaneRequests", "operationName": "ReadFeed", "properties": {"activityId": "66a0c647-af38-4b8d-a92a-c48a805d6460","requestResourceType": "Database","requestResourceId": "","collectionRid": "","statusCode": "200","duration": "0","userAgent": "Microsoft.Azure.Documents.Common/2.2.0.0","clientIpAddress": "10.0.0.24","requestCharge": "1.000000","requestLength": "0","responseLength": "372", "resourceTokenPermissionId": "perm-prescriber-app","resourceTokenPermissionMode": "all", "resourceTokenUserRid": "","region": "East US","partitionId": "062abe3e-de63-4aa5-b9de-4a77119c59f8","keyType": "PrimaryReadOnlyMasterKey","databaseName": "","collectionName": ""}}"#;

#[test]
fn microsoft_sample_record() {
    let e = event(MS_SAMPLE);
    assert_eq!(format_rfc3339(e.time), "2019-04-23T23:12:52.3814846Z");
    assert_eq!(e.account, "<your_database_account>");
    assert_eq!(e.credential.to_string(), "token:perm-prescriber-app");
    assert_eq!(e.client_ip, Some("10.0.0.24".parse().unwrap()));
    assert_eq!((e.status, e.success, e.response_bytes, e.request_bytes), (200, true, 372, 0));
    assert_eq!(e.request_charge, 1.0);
    assert_eq!(e.operation, "ReadFeed");
    assert_eq!(e.user_agent, "Microsoft.Azure.Documents.Common/2.2.0.0");
    assert_eq!(e.activity_id, "66a0c647-af38-4b8d-a92a-c48a805d6460");
    assert_eq!(e.category, Category::DataPlaneRequests);
}

fn legacy(props: &str) -> String {
    format!(
        r#"{{"time":"2021-08-17T02:13:05.1234567Z","resourceId":"/SUBSCRIPTIONS/X/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.DOCUMENTDB/DATABASEACCOUNTS/CONTOSO","category":"DataPlaneRequests","operationName":"Query","properties":{{{props}}}}}"#
    )
}

#[test]
fn numbers_as_strings_or_numbers() {
    let a = legacy(
        r#""clientIpAddress":"203.0.113.77","statusCode":"200","responseLength":"4194304","requestLength":"12","keyType":"PrimaryMasterKey""#,
    );
    let b = legacy(
        r#""clientIpAddress":"203.0.113.77","statusCode":200,"responseLength":4194304,"requestLength":12.0,"keyType":"PrimaryMasterKey""#,
    );
    let (ea, eb) = (event(&a), event(&b));
    assert_eq!(ea, eb);
    assert_eq!(ea.account, "contoso");
    assert_eq!(ea.response_bytes, 4_194_304);
    assert_eq!(ea.credential.to_string(), "key:primarymasterkey");
    assert!(ea.credential.is_read_write_master_key());
}

#[test]
fn credential_precedence_and_case() {
    let aad = legacy(
        r#""aadPrincipalId":"3F2504E0-4F89-11D3-9A0C-0305E82C3301","keyType":"PrimaryMasterKey","resourceTokenPermissionId":"p""#,
    );
    assert_eq!(event(&aad).credential.to_string(), "aad:3f2504e0-4f89-11d3-9a0c-0305e82c3301");
    let user = legacy(r#""resourceTokenUserRid":"dbs/x/users/y","keyType":"PrimaryMasterKey""#);
    assert_eq!(event(&user).credential.to_string(), "token:dbs/x/users/y");
    let ro = legacy(r#""keyType":"PrimaryReadonlyMasterKey""#);
    assert_eq!(event(&ro).credential.to_string(), "key:primaryreadonlymasterkey");
    let gw = legacy(r#""keyType":"","authTokenType":"SecondaryMasterKey""#);
    assert_eq!(event(&gw).credential.to_string(), "key:secondarymasterkey");
    let odd = legacy(r#""keyType":"FutureKeyClass""#);
    assert_eq!(event(&odd).credential.to_string(), "key:futurekeyclass");
    let none = legacy(r#""clientIpAddress":"10.0.0.1""#);
    assert_eq!(event(&none).credential.to_string(), "unknown");
}

#[test]
fn envelope_of_records_with_one_bad() {
    let line = format!(
        r#"{{"records": [{}, 42, {}]}}"#,
        legacy(r#""responseLength":"10""#),
        legacy(r#""responseLength":"-5""#)
    );
    let mut items = Vec::new();
    decode_unit(line.as_bytes(), |d| items.push(d));
    assert_eq!(items.len(), 3);
    assert!(matches!(items[0], Decoded::Event(_)));
    assert!(matches!(items[1], Decoded::Malformed { reason: Malformed::NotAnObject, index: Some(1) }));
    assert!(matches!(items[2], Decoded::Malformed { reason: Malformed::BadLength, index: Some(2) }));
    assert_eq!(raw_record_text(line.as_bytes(), Some(1)), "42");
}

#[test]
fn resource_specific_table_row() {
    let row = r#"{"TimeGenerated":"2021-08-12T10:00:00.0000000Z","AccountName":"Fabrikam-Prod","OperationName":"Query","ClientIpAddress":"2001:db8:4:12::a","KeyType":"","AuthTokenType":"ResourceToken","ResourceTokenPermissionId":"perm-prescriber-app","DatabaseName":"rx","CollectionName":"orders","UserAgent":"app/1.0","ActivityId":"a","DurationMs":3.0,"RequestCharge":2.5,"RequestLength":0,"ResponseLength":2048.0,"StatusCode":200,"_ResourceId":"/subscriptions/x/resourcegroups/rg/providers/microsoft.documentdb/databaseaccounts/fabrikam-prod","Type":"CDBDataPlaneRequests"}"#;
    let e = event(row);
    assert_eq!(e.account, "fabrikam-prod");
    assert_eq!(e.category, Category::DataPlaneRequests);
    assert_eq!(e.credential.to_string(), "token:perm-prescriber-app");
    assert_eq!(e.client_ip, Some("2001:db8:4:12::a".parse().unwrap()));
    assert_eq!((e.response_bytes, e.request_charge), (2048, 2.5));
    assert_eq!(e.collection, "orders");
}

#[test]
fn mongo_request_with_address_and_authorization_token_type() {
    let line = r#"{"time": "2019-04-10T15:10:46Z", "resourceId": "/SUBSCRIPTIONS/X/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.DOCUMENTDB/DATABASEACCOUNTS/NORTHWIND", "category": "MongoRequests", "operationName": "find", "properties": {"activityId": "823cae64-0000-0000-0000-000000000000","opCode": "MongoOpCode_OP_QUERY","errorCode": "0","duration": "0","requestCharge": "0.000000","databaseName": "admin","collectionName": "$cmd","retryCount": "0","address":"40.112.5.9:51234","authorizationTokenType":"PrimaryMasterKey","responseLength":"900"}}"#;
    let e = event(line);
    assert_eq!(e.category, Category::MongoRequests);
    assert_eq!(e.client_ip, Some("40.112.5.9".parse().unwrap()));
    assert_eq!(e.credential.to_string(), "key:primarymasterkey");
    assert!(e.success);
    assert_eq!(e.response_bytes, 900);
    // The documented Mongo sample has no address at all: an event without a client IP.
    let bare = r#"{"time": "2019-04-10T15:10:46.7820998Z", "resourceId": "/X/DATABASEACCOUNTS/N", "category": "MongoRequests", "operationName": "ping", "properties": {"activityId": "823cae64-0000-0000-0000-000000000000","opCode": "MongoOpCode_OP_QUERY","errorCode": "0","duration": "0","requestCharge": "0.000000","databaseName": "admin","collectionName": "$cmd","retryCount": "0"}}"#;
    assert_eq!(event(bare).client_ip, None);
    let failed = bare.replace(r#""errorCode": "0""#, r#""errorCode": "13""#);
    assert!(!event(&failed).success);
}

#[test]
fn form_of_2017() {
    let line = r#"{"time": "Fri, 23 Jun 2017 19:29:50.266 GMT", "resourceId": "adatum", "category": "DataPlaneRequests", "operationName": "Read", "properties": {"activityId": "x", "resourceType": "Document", "documentResourceId": "y", "statusCode": "200", "clientIpAddress": "20.42.0.7", "keyType": "PrimaryMasterKey", "responseLength": "10"}}"#;
    let e = event(line);
    assert_eq!(e.account, "adatum");
    assert_eq!(format_rfc3339(e.time), "2017-06-23T19:29:50.266Z");
}

#[test]
fn other_categories_are_skipped_not_errors() {
    for (cat, want) in [
        ("QueryRuntimeStatistics", Category::QueryRuntimeStatistics),
        ("PartitionKeyStatistics", Category::PartitionKeyStatistics),
        ("PartitionKeyRUConsumption", Category::PartitionKeyRUConsumption),
        ("ControlPlaneRequests", Category::ControlPlaneRequests),
        ("SomethingNew", Category::Other),
    ] {
        let line = format!(
            r#"{{"time":"2021-08-17T02:13:05Z","resourceId":"a","category":"{cat}","properties":{{"querytext":"SELECT 1"}}}}"#
        );
        assert!(matches!(one(&line), Decoded::Skipped(c) if c == want), "{cat}");
    }
    let row = r#"{"TimeGenerated":"2021-08-17T02:13:05Z","Type":"CDBQueryRuntimeStatistics"}"#;
    assert!(matches!(one(row), Decoded::Skipped(Category::QueryRuntimeStatistics)));
}

#[test]
fn failed_requests_move_no_bytes() {
    let l = legacy(r#""statusCode":"429","responseLength":"350""#);
    let e = event(&l);
    assert!(!e.success);
    assert_eq!(e.response_bytes, 0);
    let l = legacy(r#""statusCode":"304","responseLength":"350""#);
    let e = event(&l);
    assert!(e.success);
}

#[test]
fn ip_forms() {
    assert_eq!(parse_ip("::ffff:198.51.100.23"), Some("198.51.100.23".parse().unwrap()));
    assert_eq!(parse_ip("[2001:db8::1]:443"), Some("2001:db8::1".parse().unwrap()));
    assert_eq!(parse_ip(" 10.0.0.1:8080 "), Some("10.0.0.1".parse().unwrap()));
    assert_eq!(parse_ip("999.1.2.3"), None);
    assert_eq!(parse_ip("10.0.0.1:99999"), None);
    assert_eq!(parse_ip("[::1]"), Some("::1".parse().unwrap()));
    // An unclosed bracket, or anything but a port after it, is not an address.
    assert_eq!(parse_ip("[10.0.0.1"), None);
    assert_eq!(parse_ip("[2001:db8::1]junk"), None);
    assert_eq!(parse_ip("[2001:db8::1]:http"), None);
    assert_eq!(parse_ip("fe80::1%eth0"), None);
}

#[test]
fn every_bad_input_has_its_reason() {
    assert_eq!(reason("<html>502 Bad Gateway</html>"), Malformed::InvalidJson);
    assert_eq!(reason(r#"{"time":"2021-08-17T02:13:05Z","resourceId":"a","catego"#), Malformed::InvalidJson);
    assert_eq!(reason("[1,2]"), Malformed::NotAnObject);
    assert_eq!(reason(r#"{"records": "nope"}"#), Malformed::NotAnObject);
    assert_eq!(reason(&legacy(r#""clientIpAddress":"999.1.2.3""#)), Malformed::BadIp);
    assert_eq!(reason(&legacy(r#""responseLength":"-5""#)), Malformed::BadLength);
    assert_eq!(reason(&legacy(r#""responseLength":"abc""#)), Malformed::BadLength);
    assert_eq!(reason(&legacy(r#""requestLength":-1"#)), Malformed::BadLength);
    assert_eq!(reason(&legacy(r#""statusCode":"OK""#)), Malformed::BadStatus);
    let no_time = r#"{"resourceId":"a","category":"DataPlaneRequests","properties":{}}"#;
    assert_eq!(reason(no_time), Malformed::MissingTime);
    let bad_time = r#"{"time":"yesterday","resourceId":"a","category":"DataPlaneRequests","properties":{}}"#;
    assert_eq!(reason(bad_time), Malformed::BadTime);
    let no_account = r#"{"time":"2021-08-17T02:13:05Z","category":"DataPlaneRequests","properties":{}}"#;
    assert_eq!(reason(no_account), Malformed::MissingAccount);
}

#[test]
fn wrong_types_in_fields_do_not_fail_the_record() {
    let l =
        legacy(r#""userAgent":{"nested":true},"databaseName":["x"],"clientIpAddress":"10.0.0.1","responseLength":"1""#);
    let e = event(&l);
    assert_eq!(e.user_agent, "");
    assert_eq!(e.response_bytes, 1);
}

#[test]
fn a_leading_byte_order_mark_is_skipped() {
    let l = format!("\u{feff}{}", legacy(r#""clientIpAddress":"10.0.0.1","responseLength":"7""#));
    assert_eq!(event(&l).response_bytes, 7);
    let env = format!("\u{feff}{{\"records\": [42, {}]}}", legacy(r#""clientIpAddress":"10.0.0.1""#));
    let mut items = Vec::new();
    decode_unit(env.as_bytes(), |d| items.push(d));
    assert!(matches!(items[0], Decoded::Malformed { reason: Malformed::NotAnObject, index: Some(0) }));
    assert!(matches!(items[1], Decoded::Event(_)));
    assert_eq!(raw_record_text(env.as_bytes(), Some(0)), "42");
    // Only at the start, and only once: a second mark is not JSON.
    assert_eq!(reason(&format!("\u{feff}\u{feff}{}", legacy(""))), Malformed::InvalidJson);
}

#[test]
fn units_larger_than_a_record_are_split_and_checked() {
    let good = legacy(r#""clientIpAddress":"10.0.0.1","responseLength":"7""#);
    let n = MAX_RECORD_BYTES / good.len() + 10;
    let mut env = String::from("{\"records\": [");
    for i in 0..n {
        if i > 0 {
            env.push(',');
        }
        env.push_str(match i {
            3 => "42",
            5 => r#"{"time": 1}"#,
            _ => &good,
        });
    }
    env.push_str("], \"other\": [1, 2]}");
    let mut items = Vec::new();
    decode_unit(env.as_bytes(), |d| items.push(d));
    assert_eq!(items.len(), n);
    assert!(matches!(items[3], Decoded::Malformed { reason: Malformed::NotAnObject, index: Some(3) }));
    // Not a request category: skipped.
    assert!(matches!(items[5], Decoded::Skipped(Category::Other)));
    assert_eq!(items.iter().filter(|d| matches!(d, Decoded::Event(e) if e.response_bytes == 7)).count(), n - 2);
    assert_eq!(raw_record_text(env.as_bytes(), Some(3)), "42");
    // Cut short: invalid, and nothing of it is used.
    assert_eq!(reason(&env[..env.len() - 2]), Malformed::InvalidJson);
    // One record larger than the limit, and one inside an envelope.
    let big = legacy(&format!(r#""clientIpAddress":"10.0.0.1","userAgent":"{}""#, "x".repeat(MAX_RECORD_BYTES)));
    assert_eq!(reason(&big), Malformed::TooLarge);
    assert_eq!(raw_record_text(big.as_bytes(), None).len(), TOO_LARGE_TEXT);
    let mut items = Vec::new();
    decode_unit(format!("{{\"records\": [{good}, {big}]}}").as_bytes(), |d| items.push(d));
    assert!(matches!(items[0], Decoded::Event(_)));
    assert!(matches!(items[1], Decoded::Malformed { reason: Malformed::TooLarge, index: Some(1) }));
    // Large and not an object; `records` not an array; `records` twice (the last one wins).
    assert_eq!(reason(&format!("[{}]", "1,".repeat(MAX_RECORD_BYTES) + "1")), Malformed::NotAnObject);
    assert_eq!(reason(&format!("{{\"records\": \"{}\"}}", "x".repeat(MAX_RECORD_BYTES))), Malformed::NotAnObject);
    let twice = format!("{{\"records\": [{big}], \"records\": [{good}]}}");
    assert!(matches!(one(&twice), Decoded::Event(_)));
}

#[test]
fn escaped_strings_are_decoded() {
    let l = legacy(r#""userAgent":"a\"b\u00e9","clientIpAddress":"10.0.0.1""#);
    let e = event(&l);
    assert_eq!(e.user_agent, "a\"bé");
}

#[test]
fn the_fast_trim_is_str_trim() {
    for s in [
        "",
        " ",
        "a",
        "ab",
        " a",
        "a ",
        "\tx\n",
        "\u{a0}x",
        "x\u{2003}",
        "\u{85}",
        "é",
        "aé",
        "éa",
        "\u{1}a",
        "a\u{7f}",
        "  key:x  ",
        "10.0.0.1",
    ] {
        assert_eq!(trim(s), s.trim(), "{s:?}");
    }
}

#[test]
fn every_spelling_of_a_field_is_read() {
    // The spellings of a field (camelCase, PascalCase, Log Analytics' `_s`/`_g`/`_d`), each
    // inside `properties`: the event carries the value (keys are told apart by length first).
    let client_ip = [
        "clientIpAddress",
        "ClientIpAddress",
        "clientIpAddress_s",
        "address",
        "Address",
        "address_s",
        "callerIpAddress",
    ];
    for name in client_ip {
        let line = format!(
            r#"{{"time":"2021-08-17T02:13:05Z","resourceId":"/X/DATABASEACCOUNTS/ACCT","category":"DataPlaneRequests","properties":{{"{name}":"192.0.2.7","statusCode":"200"}}}}"#
        );
        assert_eq!(event(&line).client_ip, Some("192.0.2.7".parse().unwrap()), "{name}");
    }
    let user_agent = ["userAgent", "UserAgent", "userAgent_s"];
    let database = ["databaseName", "DatabaseName", "databaseName_s", "databasename"];
    let collection = ["collectionName", "CollectionName", "collectionName_s", "collectionname"];
    let activity = ["activityId", "ActivityId", "activityId_g", "activityId_s"];
    let length = ["responseLength", "ResponseLength", "responseLength_s", "responseLength_d"];
    for i in 0..4 {
        let ua = user_agent[i.min(2)];
        let line = format!(
            r#"{{"time":"2021-08-17T02:13:05Z","resourceId":"/X/DATABASEACCOUNTS/ACCT","category":"DataPlaneRequests","properties":{{"{ua}":"ua/1","{}":"db","{}":"coll","{}":"0ca83fdd-9b67-4db1-897c-9ff5677bbeeb","{}":"42","statusCode":"200","clientIpAddress":"192.0.2.7"}}}}"#,
            database[i], collection[i], activity[i], length[i]
        );
        let e = event(&line);
        assert_eq!(
            (&*e.user_agent, &*e.database, &*e.collection, &*e.activity_id, e.response_bytes),
            ("ua/1", "db", "coll", "0ca83fdd-9b67-4db1-897c-9ff5677bbeeb", 42),
            "{line}"
        );
    }
}

/// Every item of `unit` decoded by `decoder`, in Debug form (owned).
fn items_of(decoder: &mut Decoder, unit: &[u8]) -> Vec<String> {
    let mut items = Vec::new();
    decoder.decode(unit, |d| items.push(format!("{:?}", d.into_owned())));
    items
}

/// Decodes `unit` with the direct scanner and with simd-json's tape alone: the same items.
/// Returns whether the scanner answered (false: it gave up and the tape decoded the unit).
fn both_ways_agree(unit: &[u8]) -> bool {
    let scanned = items_of(&mut Decoder::new(), unit);
    let taped = items_of(&mut Decoder::tape_only(), unit);
    assert_eq!(scanned, taped, "the scanner and the tape disagree on {:?}", String::from_utf8_lossy(unit));
    scan::Scan::default().scan(strip_bom(unit))
}

/// The units of every sample log: a line each, or the whole pre-2018 document.
fn sample_units() -> Vec<Vec<u8>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-logs");
    let mut files = Vec::new();
    let mut dirs = vec![root];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "json" || x == "jsonl" || x == "gz") {
                files.push(p);
            }
        }
    }
    assert!(files.len() >= 4, "{files:?}");
    let mut units = Vec::new();
    for f in files {
        let mut bytes = std::fs::read(&f).unwrap();
        if f.extension().is_some_and(|x| x == "gz") {
            let mut plain = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&bytes[..]), &mut plain).unwrap();
            bytes = plain;
        }
        units.push(bytes.clone());
        units.extend(bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec));
    }
    units
}

#[test]
fn the_scanner_reads_the_common_shapes() {
    // Every line of the sample logs (legacy records, envelopes, `CDBDataPlaneRequests` rows,
    // Mongo records) and the documented sample are read by the scanner itself.
    let mut scanned = 0;
    for unit in sample_units() {
        if both_ways_agree(&unit) {
            scanned += 1;
        }
    }
    assert!(scanned > 100, "the scanner read only {scanned} sample units");
    assert!(both_ways_agree(MS_SAMPLE.as_bytes()));
    let envelope = format!("{{\"records\": [{MS_SAMPLE},{MS_SAMPLE}]}}");
    assert!(both_ways_agree(envelope.as_bytes()));
}

#[test]
fn the_scanner_and_the_tape_agree() {
    let rec = |props: &str| legacy(props);
    let cases: Vec<(String, bool)> = vec![
        // (unit, whether the scanner reads it itself)
        (rec(r#""clientIpAddress":"10.0.0.1","responseLength":"5""#), true),
        // Numbers: integers, fractions (text and value), negative, zero, `-0`, exponents,
        // too many digits.
        (rec(r#""clientIpAddress":"10.0.0.1","responseLength":123,"statusCode":200,"requestCharge":2.5"#), true),
        (rec(r#""clientIpAddress":10,"responseLength":1.0,"statusCode":200.000"#), true),
        (rec(r#""clientIpAddress":"10.0.0.1","responseLength":-5"#), true),
        (rec(r#""clientIpAddress":"10.0.0.1","responseLength":0,"requestCharge":-0.5,"userAgent":0.1"#), true),
        (rec(r#""clientIpAddress":"10.0.0.1","userAgent":123456789012.125,"databaseName":-0.000001"#), true),
        (rec(r#""clientIpAddress":"10.0.0.1","responseLength":-0"#), false),
        (rec(r#""clientIpAddress":"10.0.0.1","responseLength":1e3"#), false),
        (rec(r#""clientIpAddress":"10.0.0.1","responseLength":1E-3"#), false),
        (rec(r#""clientIpAddress":"10.0.0.1","responseLength":1234567890123456789"#), false),
        (rec(r#""clientIpAddress":"10.0.0.1","responseLength":123456789012345678"#), true),
        (rec(r#""clientIpAddress":"10.0.0.1","requestCharge":1234567890.1234567"#), false),
        (rec(r#""clientIpAddress":"10.0.0.1","requestCharge":0.1234567890123456"#), false),
        (rec(r#""clientIpAddress":"10.0.0.1","responseLength":01"#), false),
        (rec(r#""clientIpAddress":"10.0.0.1","responseLength":1."#), false),
        (rec(r#""clientIpAddress":"10.0.0.1","responseLength":.5"#), false),
        (rec(r#""clientIpAddress":"10.0.0.1","responseLength":+5"#), false),
        // Literals and containers where a value is read.
        (rec(r#""clientIpAddress":"10.0.0.1","responseLength":true,"userAgent":false"#), true),
        (rec(r#""clientIpAddress":null,"responseLength":null,"userAgent":{"a":[1,{"b":null}]}"#), true),
        (rec(r#""clientIpAddress":"10.0.0.1","responseLength":[],"statusCode":{}"#), true),
        (rec(r#""clientIpAddress":"10.0.0.1","responseLength":tru"#), false),
        (rec(r#""clientIpAddress":"10.0.0.1","responseLength":nul"#), false),
        // A key twice: the last wins, at either level; `properties` twice, or not an object.
        (rec(r#""clientIpAddress":"10.0.0.1","clientIpAddress":"10.0.0.2","responseLength":"1","responseLength":"2""#), true),
        (r#"{"time":"2021-08-17T02:13:05Z","time":"x","resourceId":"/A/B","category":"DataPlaneRequests","properties":{"clientIpAddress":"10.0.0.1"}}"#.into(), true),
        (r#"{"time":"2021-08-17T02:13:05Z","resourceId":"/A/B","category":"DataPlaneRequests","properties":{"clientIpAddress":"10.0.0.1"},"properties":{"clientIpAddress":"10.0.0.2"}}"#.into(), true),
        (r#"{"time":"2021-08-17T02:13:05Z","resourceId":"/A/B","category":"DataPlaneRequests","properties":{"clientIpAddress":"10.0.0.1"},"properties":"none","clientIpAddress":"10.0.0.3"}"#.into(), true),
        (r#"{"time":"2021-08-17T02:13:05Z","resourceId":"/A/B","category":"DataPlaneRequests","properties":{"clientIpAddress":"10.0.0.1","properties":{"clientIpAddress":"10.0.0.9"},"records":[1]}}"#.into(), true),
        // Envelopes: elements that are not objects, `records` twice, not an array, empty.
        (format!(r#"{{"records":[{},1,"x",null,[{}],{}]}}"#, rec(r#""clientIpAddress":"10.0.0.1""#), rec(""), rec(r#""statusCode":"500""#)), true),
        (format!(r#"{{"records":[1],"time":"x","records":[{}]}}"#, rec(r#""clientIpAddress":"10.0.0.1""#)), true),
        (format!(r#"{{"records":[{}],"records":{{}}}}"#, rec(r#""clientIpAddress":"10.0.0.1""#)), true),
        (r#"{"records":[]}"#.into(), true),
        (r#"{"records":"no"}"#.into(), true),
        (format!(r#"{{"records":[{}]}}"#, r#"{"time":"2021-08-17T02:13:05Z","resourceId":"/A/B","category":"DataPlaneRequests","records":[1],"properties":{"clientIpAddress":"10.0.0.1"}}"#), true),
        // Whitespace everywhere JSON allows it; a byte order mark.
        (" \t\r\n{ \"time\" :\t\"2021-08-17T02:13:05Z\" ,\n\"resourceId\" : \"/A/B\" , \"properties\" : { \"clientIpAddress\" : \"10.0.0.1\" } , \"records\" : [ ] }\n ".into(), true),
        ("\u{feff}{\"time\":\"2021-08-17T02:13:05Z\",\"resourceId\":\"/A/B\",\"properties\":{\"clientIpAddress\":\"10.0.0.1\"}}".into(), true),
        // Strings: escapes, control characters, non-ASCII text, keys with escapes.
        (rec(r#""clientIpAddress":"10.0.0.1","userAgent":"a\"b\u00e9\\""#), false),
        (rec("\"clientIpAddress\":\"10.0.0.1\",\"userAgent\":\"a\tb\""), false),
        (rec("\"clientIpAddress\":\"10.0.0.1\",\"userAgent\":\"a\u{1}b\""), false),
        (rec(r#""clientIpAddress":"10.0.0.1","userAgent":"zürich/日本 😀","collectionName":"ñ""#), true),
        (rec(r#""client\u0049pAddress":"10.0.0.1""#), false),
        (rec(r#""clientIpAddress":"10.0.0.1","userAgent":"1234567","databaseName":"12345678","collectionName":"123456789abcdef""#), true),
        // Not JSON, or not an object, or something after the value.
        (rec(r#""clientIpAddress":"10.0.0.1""#) + " x", false),
        (rec(r#""clientIpAddress":"10.0.0.1""#) + "}", false),
        (rec(r#""clientIpAddress":"10.0.0.1","#), false),
        (rec(r#""clientIpAddress" "10.0.0.1""#), false),
        (rec(r#""clientIpAddress":"10.0.0.1",,"a":1"#), false),
        (rec(r#""clientIpAddress":"10.0.0.1","a":[1,]"#), false),
        (rec(r#""clientIpAddress":"10.0.0.1","a":[1 2]"#), false),
        (rec(r#"'a':1"#), false),
        ("[1,2]".into(), false),
        ("\"x\"".into(), false),
        ("".into(), false),
        ("{".into(), false),
        ("{}".into(), true),
        ("{\"a\":".into(), false),
        ("{\"a\":\"b".into(), false),
        ("{\"a".into(), false),
        // Nesting at and past the scanner's depth.
        (format!("{{\"a\":{}1{}}}", "[".repeat(30), "]".repeat(30)), true),
        (format!("{{\"a\":{}1{}}}", "[".repeat(40), "]".repeat(40)), false),
    ];
    for (unit, read) in cases {
        assert_eq!(both_ways_agree(unit.as_bytes()), read, "whether the scanner reads {unit:?}");
    }
    // Invalid UTF-8 inside a string and outside one; every prefix of a record.
    let mut bad = rec(r#""clientIpAddress":"10.0.0.1","userAgent":"ab""#).into_bytes();
    let at = bad.windows(2).position(|w| w == b"ab").unwrap();
    for b in [0x80u8, 0xC3, 0xFF, 0xED] {
        bad[at] = b;
        both_ways_agree(&bad);
    }
    let full = rec(r#""clientIpAddress":"10.0.0.1","responseLength":42,"requestCharge":2.5"#);
    for end in 0..full.len() {
        both_ways_agree(&full.as_bytes()[..end]);
    }
}

mod props {
    use super::*;
    use proptest::prelude::*;

    thread_local! {
        // One decoder reused across cases, as in the pipeline: stale buffers must not matter.
        static DECODER: std::cell::RefCell<Decoder> = std::cell::RefCell::new(Decoder::new());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut n = 0;
            DECODER.with(|d| d.borrow_mut().decode(&bytes, |_| n += 1));
            prop_assert!(n >= 1);
            both_ways_agree(&bytes);
        }

        #[test]
        fn the_scanner_agrees_on_edited_records(edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..6)) {
            // A record with a byte replaced, inserted or removed here and there.
            let mut unit = MS_SAMPLE.as_bytes().to_vec();
            let specials = b"\"\\{}[],:0123456789.-eE \t\n\x01\xc3\x80\xff";
            for (at, b, kind) in edits {
                let at = at % (unit.len() + 1);
                let b = if b < 128 { specials[b as usize % specials.len()] } else { b };
                match kind {
                    0 if at < unit.len() => unit[at] = b,
                    1 => unit.insert(at, b),
                    _ if at < unit.len() => { unit.remove(at); }
                    _ => {}
                }
            }
            both_ways_agree(&unit);
        }

        #[test]
        fn the_scanner_agrees_on_numbers(i in any::<i64>(), f in any::<f64>(), digits in 0usize..17) {
            let f = if f.is_finite() { f } else { 0.5 };
            for v in [i.to_string(), format!("{f}"), format!("{f:.digits$}"), format!("{:.digits$}", i as f64 / 1e6)] {
                let unit = legacy(&format!(r#""clientIpAddress":"10.0.0.1","responseLength":{v},"requestCharge":{v},"userAgent":{v}"#));
                both_ways_agree(unit.as_bytes());
            }
        }

        #[test]
        fn arbitrary_json_never_panics(v in arb_json()) {
            let text = serde_json::to_vec(&v).unwrap();
            let mut n = 0;
            DECODER.with(|d| d.borrow_mut().decode(&text, |_| n += 1));
            // One item per record; an envelope with an empty array has none.
            let empty_envelope = v.get("records").and_then(|r| r.as_array()).is_some_and(|a| a.is_empty());
            prop_assert!(n >= 1 || empty_envelope);
            let wrapped = serde_json::to_vec(&serde_json::json!({"records": [v.clone(), {"properties": v}]})).unwrap();
            DECODER.with(|d| d.borrow_mut().decode(&wrapped, |_| {}));
            both_ways_agree(&text);
            both_ways_agree(&wrapped);
        }
    }

    fn arb_json() -> impl Strategy<Value = serde_json::Value> {
        let keys = prop_oneof![
            Just("time".to_string()),
            Just("resourceId".to_string()),
            Just("category".to_string()),
            Just("properties".to_string()),
            Just("records".to_string()),
            Just("clientIpAddress".to_string()),
            Just("responseLength".to_string()),
            Just("statusCode".to_string()),
            Just("keyType".to_string()),
            Just("TimeGenerated".to_string()),
            Just("AccountName".to_string()),
            "[a-zA-Z]{1,8}",
        ];
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(|i| serde_json::json!(i)),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| serde_json::json!(f)),
            ".{0,20}".prop_map(serde_json::Value::String),
            Just(serde_json::json!("2021-08-17T02:13:05Z")),
            Just(serde_json::json!("DataPlaneRequests")),
            Just(serde_json::json!("::ffff:1.2.3.4")),
        ];
        leaf.prop_recursive(4, 64, 8, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
                proptest::collection::btree_map(keys.clone(), inner, 0..8)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
