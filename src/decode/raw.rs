//! The wire form of a diagnostic record: a walk over simd-json's tape.
//!
//! A unit is parsed once by simd-json into a flat tape of nodes (SIMD structural indexing,
//! measured 1.6x faster than serde_json on these records: see BENCHMARKS.md). [`read_object`]
//! walks one object of the tape and fills a [`RawRecord`] by field name: the legacy record
//! (`time`, `resourceId`, `category`, `properties{...}`), the flat PascalCase
//! `CDBDataPlaneRequests` row, the `AzureDiagnostics` export (`_s`/`_g`/`_d` suffixes) and the
//! API categories (`address`, `authorizationTokenType`) all land in the same fields. A record's
//! `properties` object is read into a second `RawRecord`; a field is looked up there first.
//!
//! Every leaf is lenient: a number where a string was expected, or the reverse, never fails the
//! record; only the normalizer decides what is malformed, with a reason code. Strings borrow
//! from the decoder's copy of the input (simd-json unescapes in place).

use simd_json::{Node, StaticNode};
use std::borrow::Cow;

/// `s.trim()`, without the scan for Unicode white space when `s` starts and ends with a
/// printable ASCII character (nearly every value): the same result, measured 5% of the
/// decoder's instructions before.
#[inline]
pub fn trim(s: &str) -> &str {
    match s.as_bytes() {
        [first, .., last] if first.is_ascii_graphic() && last.is_ascii_graphic() => s,
        [only] if only.is_ascii_graphic() => s,
        _ => s.trim(),
    }
}

/// A JSON leaf read leniently as text: strings are borrowed, numbers and booleans keep their
/// literal form, `null`, objects and arrays read as absent.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Text<'a>(pub Option<Cow<'a, str>>);

impl Text<'_> {
    /// Present and not blank.
    pub fn non_empty(&self) -> Option<&str> {
        self.0.as_deref().map(trim).filter(|s| !s.is_empty())
    }
}

/// A number that Cosmos DB may write as a JSON string (`"372"`, `"1.000000"`) or as a JSON
/// number (the `CDBDataPlaneRequests` table).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub enum Num {
    /// Absent, `null` or `""`.
    #[default]
    Absent,
    Int(i64),
    Float(f64),
    /// Present but not a number (`"abc"`, `true`, an object).
    Invalid,
}

impl Num {
    fn from_text(s: &str) -> Num {
        let s = trim(s);
        if s.is_empty() {
            return Num::Absent;
        }
        if let Ok(i) = s.parse::<i64>() {
            return Num::Int(i);
        }
        match s.parse::<f64>() {
            Ok(f) if f.is_finite() => Num::Float(f),
            _ => Num::Invalid,
        }
    }

    /// A non-negative whole count (bytes, status); `Err(())` when present but not one.
    #[allow(clippy::result_unit_err)]
    pub fn count(self) -> Result<Option<u64>, ()> {
        match self {
            Num::Absent => Ok(None),
            Num::Int(i) if i >= 0 => Ok(Some(i as u64)),
            Num::Float(f) if (0.0..1.8e19).contains(&f) => Ok(Some(f as u64)),
            _ => Err(()),
        }
    }

    pub fn as_f64(self) -> Option<f64> {
        match self {
            Num::Int(i) => Some(i as f64),
            Num::Float(f) => Some(f),
            _ => None,
        }
    }
}

/// The fields of one object (a record, or its `properties`), by meaning.
#[derive(Debug, Default)]
pub struct RawRecord<'a> {
    pub time: Text<'a>,
    pub resource_id: Text<'a>,
    pub account_name: Text<'a>,
    pub category: Text<'a>,
    /// The Log Analytics table name (`CDBDataPlaneRequests`, `AzureDiagnostics`, ...).
    pub table: Text<'a>,
    pub operation_name: Text<'a>,
    pub client_ip: Text<'a>,
    pub key_type: Text<'a>,
    pub auth_token_type: Text<'a>,
    pub aad_principal_id: Text<'a>,
    pub resource_token_permission_id: Text<'a>,
    pub resource_token_user_rid: Text<'a>,
    pub database: Text<'a>,
    pub collection: Text<'a>,
    pub user_agent: Text<'a>,
    pub activity_id: Text<'a>,
    pub status_code: Num,
    pub error_code: Num,
    pub request_charge: Num,
    pub request_length: Num,
    pub response_length: Num,
}

/// Where the nested parts of an object are, as tape positions.
#[derive(Debug, Default, Clone, Copy)]
pub struct Nested {
    /// The `properties` object, if it is one.
    pub properties: Option<usize>,
    /// The `records` array; `Some(None)` when `records` is present but not an array.
    pub records: Option<Option<usize>>,
}

/// Number of tape nodes a value occupies (a container counts its header).
pub fn span(n: &Node<'_>) -> usize {
    match n {
        Node::Object { count, .. } | Node::Array { count, .. } => *count + 1,
        _ => 1,
    }
}

fn text<'a>(n: &Node<'a>) -> Text<'a> {
    Text(match n {
        Node::String(s) => Some(Cow::Borrowed(*s)),
        Node::Static(StaticNode::I64(i)) => Some(Cow::Owned(i.to_string())),
        Node::Static(StaticNode::U64(u)) => Some(Cow::Owned(u.to_string())),
        Node::Static(StaticNode::F64(f)) => Some(Cow::Owned(f.to_string())),
        Node::Static(StaticNode::Bool(b)) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        _ => None,
    })
}

fn num(n: &Node<'_>) -> Num {
    match n {
        Node::String(s) => Num::from_text(s),
        Node::Static(StaticNode::I64(i)) => Num::Int(*i),
        Node::Static(StaticNode::U64(u)) => i64::try_from(*u).map_or(Num::Float(*u as f64), Num::Int),
        Node::Static(StaticNode::F64(f)) if f.is_finite() => Num::Float(*f),
        Node::Static(StaticNode::Null) => Num::Absent,
        _ => Num::Invalid,
    }
}

/// What a key of an object names ([`field_of`]).
#[derive(Clone, Copy)]
enum Field {
    Time,
    ResourceId,
    AccountName,
    Category,
    Table,
    OperationName,
    Properties,
    Records,
    ClientIp,
    KeyType,
    AuthTokenType,
    AadPrincipalId,
    ResourceTokenPermissionId,
    ResourceTokenUserRid,
    Database,
    Collection,
    UserAgent,
    ActivityId,
    StatusCode,
    ErrorCode,
    RequestCharge,
    RequestLength,
    ResponseLength,
    /// A key this program does not read.
    Other,
}

/// The field `key` names. Told apart by length first: most keys of a record are ones this
/// program does not read, and one comparison of the length rejects them against most names
/// (a flat `match` of the 78 names compared them one after the other).
fn field_of(key: &str) -> Field {
    use Field::*;
    match key.len() {
        4 => match key {
            "time" => Time,
            "Type" => Table,
            _ => Other,
        },
        7 => match key {
            "records" => Records,
            "address" | "Address" => ClientIp,
            "keyType" | "KeyType" => KeyType,
            _ => Other,
        },
        8 => match key {
            "category" | "Category" => Category,
            _ => Other,
        },
        9 => match key {
            "timestamp" => Time,
            "address_s" => ClientIp,
            "keyType_s" => KeyType,
            "userAgent" | "UserAgent" => UserAgent,
            "errorCode" | "ErrorCode" => ErrorCode,
            _ => Other,
        },
        10 => match key {
            "resourceId" | "ResourceId" | "resourceID" => ResourceId,
            "properties" => Properties,
            "activityId" | "ActivityId" => ActivityId,
            "statusCode" | "StatusCode" => StatusCode,
            _ => Other,
        },
        11 => match key {
            "_ResourceId" => ResourceId,
            "accountName" | "AccountName" => AccountName,
            "userAgent_s" => UserAgent,
            "errorCode_s" => ErrorCode,
            _ => Other,
        },
        12 => match key {
            "databaseName" | "DatabaseName" | "databasename" => Database,
            "activityId_g" | "activityId_s" => ActivityId,
            "statusCode_s" | "statusCode_d" => StatusCode,
            _ => Other,
        },
        13 => match key {
            "TimeGenerated" | "timeGenerated" => Time,
            "operationName" | "OperationName" => OperationName,
            "authTokenType" | "AuthTokenType" => AuthTokenType,
            "requestCharge" | "RequestCharge" => RequestCharge,
            "requestLength" | "RequestLength" => RequestLength,
            _ => Other,
        },
        14 => match key {
            "aadPrincipalId" | "AadPrincipalId" => AadPrincipalId,
            "databaseName_s" => Database,
            "collectionName" | "CollectionName" | "collectionname" => Collection,
            "responseLength" | "ResponseLength" => ResponseLength,
            _ => Other,
        },
        15 => match key {
            "clientIpAddress" | "ClientIpAddress" | "callerIpAddress" => ClientIp,
            "authTokenType_s" => AuthTokenType,
            "requestCharge_s" | "requestCharge_d" => RequestCharge,
            "requestLength_s" | "requestLength_d" => RequestLength,
            _ => Other,
        },
        16 => match key {
            "aadPrincipalId_g" | "aadPrincipalId_s" => AadPrincipalId,
            "collectionName_s" => Collection,
            "responseLength_s" | "responseLength_d" => ResponseLength,
            _ => Other,
        },
        17 => match key {
            "clientIpAddress_s" => ClientIp,
            _ => Other,
        },
        19 => match key {
            "databaseAccountName" => AccountName,
            _ => Other,
        },
        20 => match key {
            "resourceTokenUserRid" | "ResourceTokenUserRid" => ResourceTokenUserRid,
            _ => Other,
        },
        22 => match key {
            "authorizationTokenType" | "AuthorizationTokenType" => AuthTokenType,
            "resourceTokenUserRid_s" => ResourceTokenUserRid,
            _ => Other,
        },
        24 => match key {
            "authorizationTokenType_s" => AuthTokenType,
            _ => Other,
        },
        25 => match key {
            "resourceTokenPermissionId" | "ResourceTokenPermissionId" => ResourceTokenPermissionId,
            _ => Other,
        },
        27 => match key {
            "resourceTokenPermissionId_s" => ResourceTokenPermissionId,
            _ => Other,
        },
        _ => Other,
    }
}

/// What a column of a table export that the decoder reads holds (`src/sources/table.rs`
/// checks its values' type against it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnKind {
    Time,
    Number,
    Text,
}

/// The kind of the field a key names, by the decoder's own names ([`field_of`]); `None` for a
/// key it does not read as a value (and for `properties` and `records`, which are not values).
pub fn column_kind(key: &str) -> Option<ColumnKind> {
    Some(match field_of(key) {
        Field::Time => ColumnKind::Time,
        Field::StatusCode | Field::ErrorCode | Field::RequestCharge | Field::RequestLength | Field::ResponseLength => {
            ColumnKind::Number
        }
        Field::Properties | Field::Records | Field::Other => return None,
        _ => ColumnKind::Text,
    })
}

/// Reads the object whose header is `tape[at]` into `rec`. Unknown keys are skipped; when a
/// key appears twice the last one wins.
pub fn read_object<'a>(tape: &[Node<'a>], at: usize, rec: &mut RawRecord<'a>) -> Nested {
    let mut nested = Nested::default();
    let Some(Node::Object { len, .. }) = tape.get(at) else { return nested };
    let mut i = at + 1;
    for _ in 0..*len {
        let (Some(Node::String(key)), Some(value)) = (tape.get(i), tape.get(i + 1)) else { break };
        let v = i + 1;
        i = v + span(value);
        match field_of(key) {
            Field::Time => rec.time = text(value),
            Field::ResourceId => rec.resource_id = text(value),
            Field::AccountName => rec.account_name = text(value),
            Field::Category => rec.category = text(value),
            Field::Table => rec.table = text(value),
            Field::OperationName => rec.operation_name = text(value),
            Field::Properties => nested.properties = matches!(value, Node::Object { .. }).then_some(v),
            Field::Records => nested.records = Some(matches!(value, Node::Array { .. }).then_some(v)),
            Field::ClientIp => rec.client_ip = text(value),
            Field::KeyType => rec.key_type = text(value),
            Field::AuthTokenType => rec.auth_token_type = text(value),
            Field::AadPrincipalId => rec.aad_principal_id = text(value),
            Field::ResourceTokenPermissionId => rec.resource_token_permission_id = text(value),
            Field::ResourceTokenUserRid => rec.resource_token_user_rid = text(value),
            Field::Database => rec.database = text(value),
            Field::Collection => rec.collection = text(value),
            Field::UserAgent => rec.user_agent = text(value),
            Field::ActivityId => rec.activity_id = text(value),
            Field::StatusCode => rec.status_code = num(value),
            Field::ErrorCode => rec.error_code = num(value),
            Field::RequestCharge => rec.request_charge = num(value),
            Field::RequestLength => rec.request_length = num(value),
            Field::ResponseLength => rec.response_length = num(value),
            Field::Other => {}
        }
    }
    nested
}
