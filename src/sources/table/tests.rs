use super::*;
use crate::decode::{Decoded, Decoder, Event};
use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int32Array, StringArray, TimestampNanosecondArray};
use arrow::datatypes::{Field, Schema};
use parquet::arrow::ArrowWriter;
use std::path::PathBuf;
use std::sync::Arc;

fn write(dir: &tempfile::TempDir, name: &str, body: &str) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, body).expect("write test file");
    p
}

fn write_parquet(dir: &tempfile::TempDir, name: &str, columns: Vec<(&str, ArrayRef)>) -> PathBuf {
    let p = dir.path().join(name);
    let schema = Arc::new(Schema::new(
        columns.iter().map(|(n, a)| Field::new(*n, a.data_type().clone(), true)).collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(schema.clone(), columns.into_iter().map(|(_, a)| a).collect()).expect("batch");
    let mut w = ArrowWriter::try_new(File::create(&p).expect("create"), schema, None).expect("writer");
    w.write(&batch).expect("write batch");
    w.close().expect("close");
    p
}

/// Every row of a table file, decoded; or the first error.
fn events(path: &Path) -> Result<Vec<Event<'static>>, TableError> {
    let format = table_format(path).expect("a table file");
    let mut reader = TableReader::open(path, format)?;
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut decoder = Decoder::new();
    while let Some(_row) = reader.next_record(&mut buf)? {
        // Rows that are not requests (no category, no address) are skipped, as in JSON.
        decoder.decode(&buf, |d| {
            if let Decoded::Event(e) = d {
                out.push(e.into_owned());
            }
        });
    }
    Ok(out)
}

/// The same records as JSON, decoded: the reference a table row must equal.
fn json_event(line: &str) -> Event<'static> {
    let mut decoder = Decoder::new();
    let mut out = None;
    decoder.decode(line.as_bytes(), |d| match d {
        Decoded::Event(e) => out = Some(e.into_owned()),
        other => panic!("reference did not decode: {other:?}"),
    });
    out.expect("one event")
}

const CDB_HEADER: &str = "TenantId,TimeGenerated,AccountName,OperationName,ClientIpAddress,KeyType,DatabaseName,CollectionName,UserAgent,ActivityId,StatusCode,ResponseLength,RequestLength,RequestCharge,_ResourceId,Type";
const CDB_ROW_1: &str = "t1,2021-08-17T10:00:00.5Z,Contoso,Query,203.0.113.7,PrimaryMasterKey,db,orders,sdk/1,a-1,200,5000,10,2.5,/SUBSCRIPTIONS/S/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.DOCUMENTDB/DATABASEACCOUNTS/CONTOSO,CDBDataPlaneRequests";
const CDB_ROW_2: &str = "t1,2021-08-17T11:30:00Z,Contoso,ReadFeed,198.51.100.9,SecondaryReadonlyMasterKey,db,users,\"curl, 8.0\",a-2,429,777,0,1,/SUBSCRIPTIONS/S/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.DOCUMENTDB/DATABASEACCOUNTS/CONTOSO,CDBDataPlaneRequests";

const AD_HEADER: &str = "TimeGenerated,Resource,ResourceId,Category,OperationName,clientIpAddress_s,keyType_s,databaseName_s,collectionName_s,userAgent_s,activityId_g,statusCode_s,responseLength_s,requestLength_s,requestCharge_s,duration_s,SourceSystem";
const AD_ROW: &str = "2021-08-17T10:00:00Z,FABRIKAM,/SUBSCRIPTIONS/S/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.DOCUMENTDB/DATABASEACCOUNTS/FABRIKAM,DataPlaneRequests,Read,10.1.2.3,PrimaryReadOnlyMasterKey,db,items,app/2,g-1,200,372,0,1.000000,3,Azure";

#[test]
fn cdb_csv_rows_decode_as_the_same_records_in_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write(&dir, "cdb.csv", &format!("{CDB_HEADER}\n{CDB_ROW_1}\n{CDB_ROW_2}\n"));
    let got = events(&p).expect("reads");
    let want = [
        json_event(
            r#"{"TimeGenerated":"2021-08-17T10:00:00.5Z","AccountName":"Contoso","OperationName":"Query","ClientIpAddress":"203.0.113.7","KeyType":"PrimaryMasterKey","DatabaseName":"db","CollectionName":"orders","UserAgent":"sdk/1","ActivityId":"a-1","StatusCode":200,"ResponseLength":5000,"RequestLength":10,"RequestCharge":2.5,"_ResourceId":"/SUBSCRIPTIONS/S/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.DOCUMENTDB/DATABASEACCOUNTS/CONTOSO","Type":"CDBDataPlaneRequests"}"#,
        ),
        json_event(
            r#"{"TimeGenerated":"2021-08-17T11:30:00Z","AccountName":"Contoso","OperationName":"ReadFeed","ClientIpAddress":"198.51.100.9","KeyType":"SecondaryReadonlyMasterKey","DatabaseName":"db","CollectionName":"users","UserAgent":"curl, 8.0","ActivityId":"a-2","StatusCode":429,"ResponseLength":777,"RequestLength":0,"RequestCharge":1,"_ResourceId":"/SUBSCRIPTIONS/S/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.DOCUMENTDB/DATABASEACCOUNTS/CONTOSO","Type":"CDBDataPlaneRequests"}"#,
        ),
    ];
    assert_eq!(got, want);
    assert_eq!(got[0].account, "contoso");
    assert_eq!(got[0].response_bytes, 5000);
    // A throttled request moves no data.
    assert_eq!(got[1].response_bytes, 0);
    assert_eq!(got[1].user_agent, "curl, 8.0");
}

#[test]
fn azure_diagnostics_csv_uses_resource_as_the_account_and_suffixed_columns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write(&dir, "ad.csv", &format!("{AD_HEADER}\n{AD_ROW}\n"));
    let got = events(&p).expect("reads");
    assert_eq!(got.len(), 1);
    let e = &got[0];
    assert_eq!(e.account, "fabrikam");
    assert_eq!(e.credential.to_string(), "key:primaryreadonlymasterkey");
    assert_eq!(e.client_ip, Some("10.1.2.3".parse().expect("ip")));
    assert_eq!((e.status, e.response_bytes, e.request_charge), (200, 372, 1.0));
    assert_eq!((&*e.collection, &*e.activity_id, &*e.user_agent), ("items", "g-1", "app/2"));
    assert_eq!(e.time, crate::time::parse_timestamp("2021-08-17T10:00:00Z").expect("time"));
}

#[test]
fn gzip_csv_is_read_like_plain() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("cdb.csv.gz");
    let mut gz = flate2::write::GzEncoder::new(File::create(&p).expect("create"), flate2::Compression::fast());
    gz.write_all(format!("{CDB_HEADER}\n{CDB_ROW_1}\n").as_bytes()).expect("write");
    gz.finish().expect("finish");
    let plain = write(&dir, "plain.csv", &format!("{CDB_HEADER}\n{CDB_ROW_1}\n"));
    assert_eq!(events(&p).expect("gz"), events(&plain).expect("plain"));
}

#[test]
fn parquet_of_both_schemas_decodes_as_csv_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let time = crate::time::parse_timestamp("2021-08-17T10:00:00.5Z").expect("time");
    let s = |v: &str| -> ArrayRef { Arc::new(StringArray::from(vec![v])) };
    // The resource-specific table with its real types (a zone-less timestamp, as Log Analytics writes).
    let cdb = write_parquet(
        &dir,
        "cdb.parquet",
        vec![
            ("TimeGenerated", Arc::new(TimestampNanosecondArray::from(vec![time])) as ArrayRef),
            ("AccountName", s("Contoso")),
            ("OperationName", s("Query")),
            ("ClientIpAddress", s("203.0.113.7")),
            ("KeyType", s("PrimaryMasterKey")),
            ("DatabaseName", s("db")),
            ("CollectionName", s("orders")),
            ("UserAgent", s("sdk/1")),
            ("ActivityId", s("a-1")),
            ("StatusCode", Arc::new(Int32Array::from(vec![200]))),
            ("ResponseLength", Arc::new(Float64Array::from(vec![5000.0]))),
            ("RequestLength", Arc::new(Float64Array::from(vec![10.0]))),
            ("RequestCharge", Arc::new(Float64Array::from(vec![2.5]))),
            (
                "_ResourceId",
                s("/SUBSCRIPTIONS/S/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.DOCUMENTDB/DATABASEACCOUNTS/CONTOSO"),
            ),
            ("Type", s("CDBDataPlaneRequests")),
            // An extra column of a type no used column could have.
            ("IsFromProxy", Arc::new(BooleanArray::from(vec![true]))),
        ],
    );
    let csv = write(&dir, "cdb.csv", &format!("{CDB_HEADER}\n{CDB_ROW_1}\n"));
    assert_eq!(table_format(&cdb), Some(TableFormat::Parquet));
    assert_eq!(events(&cdb).expect("parquet"), events(&csv).expect("csv"));

    // AzureDiagnostics: every column text.
    let names: Vec<&str> = AD_HEADER.split(',').collect();
    let values: Vec<&str> = AD_ROW.split(',').collect();
    let ad = write_parquet(&dir, "ad.parquet", names.iter().zip(&values).map(|(n, v)| (*n, s(v))).collect());
    let ad_csv = write(&dir, "ad.csv", &format!("{AD_HEADER}\n{AD_ROW}\n"));
    assert_eq!(events(&ad).expect("parquet"), events(&ad_csv).expect("csv"));
}

#[test]
fn extra_columns_are_ignored_and_missing_optional_columns_are_absent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write(
        &dir,
        "min.csv",
        "Whatever,TimeGenerated,AccountName,ClientIpAddress,Nonsense\nzzz,2021-08-17T10:00:00Z,a,192.0.2.1,not a number\n",
    );
    let got = events(&p).expect("reads");
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].response_bytes, got[0].status, &*got[0].operation), (0, 0, ""));
}

fn error_of(path: &Path) -> TableError {
    match events(path) {
        Ok(e) => panic!("{} read without error: {} events", path.display(), e.len()),
        Err(e) => e,
    }
}

#[test]
fn a_file_without_a_time_or_an_account_column_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write(&dir, "notime.csv", "AccountName,ResponseLength\na,1\n");
    let e = error_of(&p);
    assert_eq!((e.row, e.column.as_deref()), (None, None));
    assert!(e.to_string().starts_with(&format!("{}: no time column", p.display())), "{e}");

    let p = write(&dir, "noaccount.csv", "TimeGenerated,ResponseLength\n2021-08-17T10:00:00Z,1\n");
    let e = error_of(&p);
    assert!(e.to_string().contains("no account column"), "{e}");

    let q = write_parquet(
        &dir,
        "noaccount.parquet",
        vec![("TimeGenerated", Arc::new(StringArray::from(vec!["2021-08-17T10:00:00Z"])) as ArrayRef)],
    );
    assert!(error_of(&q).to_string().contains("no account column"));
}

#[test]
fn empty_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    // No header at all: an error.
    let p = write(&dir, "empty.csv", "");
    let e = error_of(&p);
    assert_eq!(e.to_string(), format!("{}: empty file: no header row", p.display()));
    // A header and no rows: no events.
    let p = write(&dir, "header.csv", &format!("{CDB_HEADER}\n"));
    assert_eq!(events(&p).expect("reads").len(), 0);
    // A Parquet file of no rows: no events.
    let q = write_parquet(
        &dir,
        "zero.parquet",
        vec![
            ("TimeGenerated", Arc::new(StringArray::from(Vec::<&str>::new())) as ArrayRef),
            ("AccountName", Arc::new(StringArray::from(Vec::<&str>::new()))),
        ],
    );
    assert_eq!(events(&q).expect("reads").len(), 0);
    // An empty file named .parquet is not a table (no magic): replay reads it as an empty log.
    let z = write(&dir, "zero-bytes.parquet", "");
    assert_eq!(table_format(&z), None);
    // A file with Parquet's magic and nothing else: refused, naming it.
    let bad = write(&dir, "cut.parquet", "PAR1garbage");
    let e = error_of(&bad);
    assert!(e.to_string().starts_with(&format!("{}: not a readable Parquet file", bad.display())), "{e}");
}

#[test]
fn wrong_types_name_the_file_row_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write(&dir, "bad.csv", &format!("{CDB_HEADER}\n{CDB_ROW_1}\n{}\n", CDB_ROW_2.replace(",777,", ",lots,")));
    let e = error_of(&p);
    assert_eq!((e.row, e.column.as_deref()), (Some(2), Some("ResponseLength")));
    assert_eq!(
        e.to_string(),
        format!("{}: row 2, column ResponseLength: expected a number, found \"lots\"", p.display())
    );

    let p =
        write(&dir, "badtime.csv", &format!("{AD_HEADER}\n{}\n", AD_ROW.replace("2021-08-17T10:00:00Z", "yesterday")));
    let e = error_of(&p);
    assert_eq!((e.row, e.column.as_deref()), (Some(1), Some("TimeGenerated")));
    assert!(e.problem.contains("expected a time"), "{e}");

    // A row with a field missing.
    let p = write(
        &dir,
        "short.csv",
        "TimeGenerated,AccountName,ResponseLength\n2021-08-17T10:00:00Z,a,1\n2021-08-17T10:00:00Z,a\n",
    );
    let e = error_of(&p);
    assert_eq!(e.row, Some(2));
    assert!(e.problem.contains("2 fields where the header has 3"), "{e}");

    // Parquet: a column whose type cannot hold its values is refused when opened.
    let q = write_parquet(
        &dir,
        "bool.parquet",
        vec![
            ("TimeGenerated", Arc::new(StringArray::from(vec!["2021-08-17T10:00:00Z"])) as ArrayRef),
            ("AccountName", Arc::new(StringArray::from(vec!["a"]))),
            ("ResponseLength", Arc::new(BooleanArray::from(vec![true]))),
        ],
    );
    let e = error_of(&q);
    assert_eq!(e.column.as_deref(), Some("ResponseLength"));
    assert!(e.problem.contains("cannot hold a number"), "{e}");
    // Text in a number column of text type: the row is named.
    let q = write_parquet(
        &dir,
        "text.parquet",
        vec![
            ("TimeGenerated", Arc::new(StringArray::from(vec!["2021-08-17T10:00:00Z"; 3])) as ArrayRef),
            ("Resource", Arc::new(StringArray::from(vec!["A"; 3]))),
            ("responseLength_s", Arc::new(StringArray::from(vec!["1", "2", "x"]))),
        ],
    );
    let e = error_of(&q);
    assert_eq!((e.row, e.column.as_deref()), (Some(3), Some("responseLength_s")));
    // A time column of a numeric type.
    let q = write_parquet(
        &dir,
        "inttime.parquet",
        vec![
            ("TimeGenerated", Arc::new(Int32Array::from(vec![1])) as ArrayRef),
            ("AccountName", Arc::new(StringArray::from(vec!["a"]))),
        ],
    );
    let e = error_of(&q);
    assert_eq!(e.column.as_deref(), Some("TimeGenerated"));
}

#[test]
fn unit_reader_serves_table_rows_and_reports_a_bad_row_as_a_fault() {
    use crate::decode::Malformed;
    use crate::sources::{collect_streams, UnitReader};
    let dir = tempfile::tempdir().expect("tempdir");
    write(&dir, "a.csv", &format!("{CDB_HEADER}\n{CDB_ROW_1}\n{}\n{CDB_ROW_2}\n", CDB_ROW_2.replace(",429,", ",OK,")));
    write(
        &dir,
        "b.jsonl",
        "{\"TimeGenerated\":\"2021-08-17T12:00:00Z\",\"AccountName\":\"x\",\"ClientIpAddress\":\"192.0.2.9\"}\n",
    );
    let (streams, faults) = collect_streams(&[dir.path().to_path_buf()]).expect("streams");
    assert!(faults.is_empty());
    let mut units = Vec::new();
    let mut all_faults = Vec::new();
    for s in streams {
        let mut r = UnitReader::new(s, 1 << 20);
        while let Some(u) = r.next_unit() {
            units.push((u.source.rsplit('/').next().unwrap_or("").to_string(), u.line));
        }
        all_faults.extend(r.take_faults());
    }
    // The good row before the bad one, then the next file.
    assert_eq!(units, vec![("a.csv".to_string(), 1), ("b.jsonl".to_string(), 1)]);
    assert_eq!(all_faults.len(), 1);
    assert_eq!(all_faults[0].reason, Malformed::TruncatedInput);
    assert!(all_faults[0].location.ends_with("a.csv: row 2, column StatusCode"), "{:?}", all_faults[0]);
}
