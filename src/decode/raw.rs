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

/// A JSON leaf read leniently as text: strings are borrowed, numbers and booleans keep their
/// literal form, `null`, objects and arrays read as absent.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Text<'a>(pub Option<Cow<'a, str>>);

impl Text<'_> {
    /// Present and not blank.
    pub fn non_empty(&self) -> Option<&str> {
        self.0.as_deref().map(str::trim).filter(|s| !s.is_empty())
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
        let s = s.trim();
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
        match *key {
            "time" | "TimeGenerated" | "timeGenerated" | "timestamp" => rec.time = text(value),
            "resourceId" | "ResourceId" | "_ResourceId" | "resourceID" => rec.resource_id = text(value),
            "accountName" | "AccountName" | "databaseAccountName" => rec.account_name = text(value),
            "category" | "Category" => rec.category = text(value),
            "Type" => rec.table = text(value),
            "operationName" | "OperationName" => rec.operation_name = text(value),
            "properties" => nested.properties = matches!(value, Node::Object { .. }).then_some(v),
            "records" => nested.records = Some(matches!(value, Node::Array { .. }).then_some(v)),
            "clientIpAddress" | "ClientIpAddress" | "clientIpAddress_s" | "address" | "Address" | "address_s"
            | "callerIpAddress" => rec.client_ip = text(value),
            "keyType" | "KeyType" | "keyType_s" => rec.key_type = text(value),
            "authTokenType"
            | "AuthTokenType"
            | "authTokenType_s"
            | "authorizationTokenType"
            | "AuthorizationTokenType"
            | "authorizationTokenType_s" => rec.auth_token_type = text(value),
            "aadPrincipalId" | "AadPrincipalId" | "aadPrincipalId_g" | "aadPrincipalId_s" => {
                rec.aad_principal_id = text(value)
            }
            "resourceTokenPermissionId" | "ResourceTokenPermissionId" | "resourceTokenPermissionId_s" => {
                rec.resource_token_permission_id = text(value)
            }
            "resourceTokenUserRid" | "ResourceTokenUserRid" | "resourceTokenUserRid_s" => {
                rec.resource_token_user_rid = text(value)
            }
            "databaseName" | "DatabaseName" | "databaseName_s" | "databasename" => rec.database = text(value),
            "collectionName" | "CollectionName" | "collectionName_s" | "collectionname" => rec.collection = text(value),
            "userAgent" | "UserAgent" | "userAgent_s" => rec.user_agent = text(value),
            "activityId" | "ActivityId" | "activityId_g" | "activityId_s" => rec.activity_id = text(value),
            "statusCode" | "StatusCode" | "statusCode_s" | "statusCode_d" => rec.status_code = num(value),
            "errorCode" | "ErrorCode" | "errorCode_s" => rec.error_code = num(value),
            "requestCharge" | "RequestCharge" | "requestCharge_s" | "requestCharge_d" => {
                rec.request_charge = num(value)
            }
            "requestLength" | "RequestLength" | "requestLength_s" | "requestLength_d" => {
                rec.request_length = num(value)
            }
            "responseLength" | "ResponseLength" | "responseLength_s" | "responseLength_d" => {
                rec.response_length = num(value)
            }
            _ => {}
        }
    }
    nested
}
