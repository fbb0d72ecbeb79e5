//! Decode throughput per record shape, by the direct scanner and by simd-json's tape
//! (criterion). `make bench-criterion`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use exfilwatch::decode::{Decoded, Decoder};

const LEGACY: &str = r#"{ "time": "2021-08-17T02:13:05.1234567Z", "resourceId": "/SUBSCRIPTIONS/7E2F6B1C-0D5A-4C1E-9A57-3F0B8C9D2E41/RESOURCEGROUPS/RG-PROD/PROVIDERS/MICROSOFT.DOCUMENTDB/DATABASEACCOUNTS/CONTOSO", "category": "DataPlaneRequests", "operationName": "ReadFeed", "properties": {"activityId": "66a0c647-af38-4b8d-a92a-c48a805d6460","requestResourceType": "Document","requestResourceId": "/dbs/shop/colls/orders/docs","collectionRid": "Tq0tAK5fVkk=","statusCode": "200","duration": "12.453","userAgent": "Microsoft.Azure.Documents.Client/2.14.0 (Windows/10.0.17763 documentdb-netcore-sdk/2.14.0)","clientIpAddress": "10.20.30.4","requestCharge": "42.380000","requestLength": "0","responseLength": "4194304", "resourceTokenPermissionId": "","resourceTokenPermissionMode": "", "resourceTokenUserRid": "","region": "East US","partitionId": "062abe3e-de63-4aa5-b9de-4a77119c59f8","keyType": "PrimaryMasterKey","databaseName": "shop","collectionName": "orders","aadPrincipalId": "","aadAppliedRoleAssignmentId": "","connectionMode": "Direct"}}"#;

const TABLE_ROW: &str = r#"{"TimeGenerated":"2021-08-12T10:00:00.0000000Z","AccountName":"fabrikam-prod","OperationName":"Query","ClientIpAddress":"2001:db8:4:12::a","KeyType":"","AuthTokenType":"ResourceToken","AadPrincipalId":"","ResourceTokenPermissionId":"perm-prescriber-app","ResourceTokenUserRid":"","DatabaseName":"rx","CollectionName":"orders","RequestResourceType":"Document","UserAgent":"azsdk-python-cosmos/4.3.0 Python/3.9.7 (Linux-5.4.0-1056-azure-x86_64-with-glibc2.31)","ActivityId":"66a0c647-af38-4b8d-a92a-c48a805d6460","DurationMs":3.0,"RequestCharge":2.5,"RequestLength":0,"ResponseLength":2048.0,"StatusCode":200,"_ResourceId":"/subscriptions/7e2f6b1c-0d5a-4c1e-9a57-3f0b8c9d2e41/resourcegroups/rg-prod/providers/microsoft.documentdb/databaseaccounts/fabrikam-prod","Type":"CDBDataPlaneRequests","TenantId":"72f988bf-86f1-41af-91ab-2d7cd011db47","SourceSystem":"Azure"}"#;

const MONGO: &str = r#"{"time": "2021-08-12T15:10:46Z", "resourceId": "/SUBSCRIPTIONS/X/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.DOCUMENTDB/DATABASEACCOUNTS/NORTHWIND", "category": "MongoRequests", "operationName": "find", "properties": {"activityId": "823cae64-0000-0000-0000-000000000000","opCode": "MongoOpCode_OP_QUERY","errorCode": "0","duration": "3","requestCharge": "5.000000","databaseName": "inventory","collectionName": "items","retryCount": "0","address":"40.112.5.9","authorizationTokenType":"PrimaryMasterKey","responseLength":"9000"}}"#;

const OLD_2017: &str = r#"{"time": "Fri, 23 Jun 2017 19:29:50.266 GMT", "resourceId": "adatum", "category": "DataPlaneRequests", "operationName": "Read", "properties": {"activityId": "66a0c647-af38-4b8d-a92a-c48a805d6460", "resourceType": "Document", "documentResourceId": "dbs/a/colls/b/docs/c", "statusCode": "200", "duration": "4", "userAgent": "documentdb-dotnet-sdk/1.14.0", "clientIpAddress": "20.42.0.7", "requestCharge": "1.000000", "requestLength": "0", "responseLength": "10", "keyType": "PrimaryMasterKey"}}"#;

fn bench_shapes(c: &mut Criterion) {
    let envelope = format!("{{\"records\": [{}]}}", [LEGACY; 10].join(","));
    let numbers = LEGACY
        .replace("\"responseLength\": \"4194304\"", "\"responseLength\": 4194304")
        .replace("\"statusCode\": \"200\"", "\"statusCode\": 200");
    let shapes: [(&str, &str); 6] = [
        ("legacy_strings", LEGACY),
        ("legacy_numbers", &numbers),
        ("envelope_of_10", &envelope),
        ("cdb_table_row", TABLE_ROW),
        ("mongo", MONGO),
        ("form_2017", OLD_2017),
    ];
    // Each shape read by the decoder (the direct scanner, `src/decode/scan.rs`) and by
    // simd-json's tape alone (`Decoder::tape_only`, what the decoder does with a unit outside
    // the scanner's subset): the scanner's gain, measured in one run.
    let mut g = c.benchmark_group("decode");
    for (reader, mut decoder) in [("scanner", Decoder::new()), ("tape", Decoder::tape_only())] {
        for (name, text) in shapes {
            let mut n = 0;
            decoder.decode(text.as_bytes(), |d| {
                assert!(matches!(d, Decoded::Event(_)), "{name}: {d:?}");
                n += 1
            });
            g.throughput(Throughput::Elements(n));
            g.bench_with_input(BenchmarkId::new(reader, name), text, |b, t| {
                b.iter(|| {
                    let mut bytes = 0u64;
                    decoder.decode(std::hint::black_box(t.as_bytes()), |d| {
                        if let Decoded::Event(e) = d {
                            bytes += e.response_bytes;
                        }
                    });
                    bytes
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench_shapes);
criterion_main!(benches);
