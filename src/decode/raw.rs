//! The wire form of a diagnostic record: its fields by meaning ([`RawRecord`], [`field_of`]),
//! and a walk over simd-json's tape for the units the direct scanner (`scan.rs`) leaves to it.
//!
//! Such a unit is parsed once by simd-json into a flat tape of nodes (SIMD structural indexing,
//! measured 1.6x faster than serde_json on these records: see BENCHMARKS.md). [`read_object`]
//! walks one object of the tape and fills a [`RawRecord`] by field name: the legacy record
//! (`time`, `resourceId`, `category`, `properties{...}`), the flat PascalCase
//! `CDBDataPlaneRequests` row, the `AzureDiagnostics` export (`_s`/`_g`/`_d` suffixes) and the
//! API categories (`address`, `authorizationTokenType`) all land in the same fields. A record's
//! `properties` object is read into a second `RawRecord`; a field is looked up there first.
//!
//! Every leaf is lenient: a number where a string was expected, or the reverse, never fails the
//! record; only the normalizer decides what is malformed, with a reason code. Both readers
//! turn a leaf into a field through [`Value`] and [`RawRecord::from_fields`], so they agree.
//! Strings borrow from the decoder's copy of the input (simd-json unescapes in place); the
//! scanner's borrow from the input itself.

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

/// A JSON leaf as the fields read it, from simd-json's tape or from the direct scanner
/// (`scan.rs`): the one place both forms are turned into [`Text`] and [`Num`].
#[derive(Clone, Copy, Debug)]
pub(super) enum Value<'a> {
    Str(&'a str),
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
    Null,
    /// An object or an array.
    Container,
}

impl<'a> Value<'a> {
    fn of(n: &Node<'a>) -> Value<'a> {
        match n {
            Node::String(s) => Value::Str(s),
            Node::Static(StaticNode::I64(i)) => Value::I64(*i),
            Node::Static(StaticNode::U64(u)) => Value::U64(*u),
            Node::Static(StaticNode::F64(f)) => Value::F64(*f),
            Node::Static(StaticNode::Bool(b)) => Value::Bool(*b),
            Node::Static(StaticNode::Null) => Value::Null,
            Node::Object { .. } | Node::Array { .. } => Value::Container,
        }
    }

    /// Small enough to inline (a number's text, rare, is written apart).
    #[inline]
    fn text(self) -> Text<'a> {
        Text(match self {
            Value::Str(s) => Some(Cow::Borrowed(s)),
            Value::Bool(b) => Some(Cow::Borrowed(if b { "true" } else { "false" })),
            Value::Null | Value::Container => None,
            number => Some(Cow::Owned(number.number_text())),
        })
    }

    #[cold]
    #[inline(never)]
    fn number_text(self) -> String {
        match self {
            Value::I64(i) => i.to_string(),
            Value::U64(u) => u.to_string(),
            Value::F64(f) => f.to_string(),
            _ => String::new(),
        }
    }

    #[inline]
    fn num(self) -> Num {
        match self {
            Value::Str(s) => Num::from_text(s),
            Value::I64(i) => Num::Int(i),
            Value::U64(u) => i64::try_from(u).map_or(Num::Float(u as f64), Num::Int),
            Value::F64(f) if f.is_finite() => Num::Float(f),
            Value::Null => Num::Absent,
            _ => Num::Invalid,
        }
    }
}

/// What a key of an object names ([`field_of`]). The fields that hold a value come first
/// ([`VALUE_FIELDS`] of them), then those that do not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Field {
    Time,
    ResourceId,
    AccountName,
    Category,
    Table,
    OperationName,
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
    Properties,
    Records,
    /// A key this program does not read.
    Other,
}

/// How many fields hold a value: those numbered below [`Field::Properties`] (their number
/// indexes the direct scanner's slots and [`read_object`]'s).
pub(super) const VALUE_FIELDS: usize = Field::Properties as usize;

/// The field `key` names. Told apart by length first: most keys of a record are ones this
/// program does not read, and one comparison of the length rejects them against most names
/// (a flat `match` of the 78 names compared them one after the other).
pub(super) fn field_of(key: &[u8]) -> Field {
    use Field::*;
    match key.len() {
        4 => match key {
            b"time" => Time,
            b"Type" => Table,
            _ => Other,
        },
        7 => match key {
            b"records" => Records,
            b"address" | b"Address" => ClientIp,
            b"keyType" | b"KeyType" => KeyType,
            _ => Other,
        },
        8 => match key {
            b"category" | b"Category" => Category,
            _ => Other,
        },
        9 => match key {
            b"timestamp" => Time,
            b"address_s" => ClientIp,
            b"keyType_s" => KeyType,
            b"userAgent" | b"UserAgent" => UserAgent,
            b"errorCode" | b"ErrorCode" => ErrorCode,
            _ => Other,
        },
        10 => match key {
            b"resourceId" | b"ResourceId" | b"resourceID" => ResourceId,
            b"properties" => Properties,
            b"activityId" | b"ActivityId" => ActivityId,
            b"statusCode" | b"StatusCode" => StatusCode,
            _ => Other,
        },
        11 => match key {
            b"_ResourceId" => ResourceId,
            b"accountName" | b"AccountName" => AccountName,
            b"userAgent_s" => UserAgent,
            b"errorCode_s" => ErrorCode,
            _ => Other,
        },
        12 => match key {
            b"databaseName" | b"DatabaseName" | b"databasename" => Database,
            b"activityId_g" | b"activityId_s" => ActivityId,
            b"statusCode_s" | b"statusCode_d" => StatusCode,
            _ => Other,
        },
        13 => match key {
            b"TimeGenerated" | b"timeGenerated" => Time,
            b"operationName" | b"OperationName" => OperationName,
            b"authTokenType" | b"AuthTokenType" => AuthTokenType,
            b"requestCharge" | b"RequestCharge" => RequestCharge,
            b"requestLength" | b"RequestLength" => RequestLength,
            _ => Other,
        },
        14 => match key {
            b"aadPrincipalId" | b"AadPrincipalId" => AadPrincipalId,
            b"databaseName_s" => Database,
            b"collectionName" | b"CollectionName" | b"collectionname" => Collection,
            b"responseLength" | b"ResponseLength" => ResponseLength,
            _ => Other,
        },
        15 => match key {
            b"clientIpAddress" | b"ClientIpAddress" | b"callerIpAddress" => ClientIp,
            b"authTokenType_s" => AuthTokenType,
            b"requestCharge_s" | b"requestCharge_d" => RequestCharge,
            b"requestLength_s" | b"requestLength_d" => RequestLength,
            _ => Other,
        },
        16 => match key {
            b"aadPrincipalId_g" | b"aadPrincipalId_s" => AadPrincipalId,
            b"collectionName_s" => Collection,
            b"responseLength_s" | b"responseLength_d" => ResponseLength,
            _ => Other,
        },
        17 => match key {
            b"clientIpAddress_s" => ClientIp,
            _ => Other,
        },
        19 => match key {
            b"databaseAccountName" => AccountName,
            _ => Other,
        },
        20 => match key {
            b"resourceTokenUserRid" | b"ResourceTokenUserRid" => ResourceTokenUserRid,
            _ => Other,
        },
        22 => match key {
            b"authorizationTokenType" | b"AuthorizationTokenType" => AuthTokenType,
            b"resourceTokenUserRid_s" => ResourceTokenUserRid,
            _ => Other,
        },
        24 => match key {
            b"authorizationTokenType_s" => AuthTokenType,
            _ => Other,
        },
        25 => match key {
            b"resourceTokenPermissionId" | b"ResourceTokenPermissionId" => ResourceTokenPermissionId,
            _ => Other,
        },
        27 => match key {
            b"resourceTokenPermissionId_s" => ResourceTokenPermissionId,
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
    Some(match field_of(key.as_bytes()) {
        Field::Time => ColumnKind::Time,
        Field::StatusCode | Field::ErrorCode | Field::RequestCharge | Field::RequestLength | Field::ResponseLength => {
            ColumnKind::Number
        }
        Field::Properties | Field::Records | Field::Other => return None,
        _ => ColumnKind::Text,
    })
}

impl<'a> RawRecord<'a> {
    /// The record whose fields hold `value(field)` (`None`: the key is absent).
    #[inline]
    pub(super) fn from_fields(value: impl Fn(Field) -> Option<Value<'a>>) -> RawRecord<'a> {
        let text = |f| value(f).map_or_else(Text::default, Value::text);
        let num = |f| value(f).map_or(Num::Absent, Value::num);
        RawRecord {
            time: text(Field::Time),
            resource_id: text(Field::ResourceId),
            account_name: text(Field::AccountName),
            category: text(Field::Category),
            table: text(Field::Table),
            operation_name: text(Field::OperationName),
            client_ip: text(Field::ClientIp),
            key_type: text(Field::KeyType),
            auth_token_type: text(Field::AuthTokenType),
            aad_principal_id: text(Field::AadPrincipalId),
            resource_token_permission_id: text(Field::ResourceTokenPermissionId),
            resource_token_user_rid: text(Field::ResourceTokenUserRid),
            database: text(Field::Database),
            collection: text(Field::Collection),
            user_agent: text(Field::UserAgent),
            activity_id: text(Field::ActivityId),
            status_code: num(Field::StatusCode),
            error_code: num(Field::ErrorCode),
            request_charge: num(Field::RequestCharge),
            request_length: num(Field::RequestLength),
            response_length: num(Field::ResponseLength),
        }
    }
}

/// Reads the object whose header is `tape[at]`. Unknown keys are skipped; when a key appears
/// twice the last one wins.
pub fn read_object<'a>(tape: &[Node<'a>], at: usize) -> (RawRecord<'a>, Nested) {
    let mut nested = Nested::default();
    let mut values: [Option<Value<'a>>; VALUE_FIELDS] = [None; VALUE_FIELDS];
    if let Some(Node::Object { len, .. }) = tape.get(at) {
        let mut i = at + 1;
        for _ in 0..*len {
            let (Some(Node::String(key)), Some(value)) = (tape.get(i), tape.get(i + 1)) else { break };
            let v = i + 1;
            i = v + span(value);
            match field_of(key.as_bytes()) {
                Field::Properties => nested.properties = matches!(value, Node::Object { .. }).then_some(v),
                Field::Records => nested.records = Some(matches!(value, Node::Array { .. }).then_some(v)),
                f => {
                    if let Some(slot) = values.get_mut(f as usize) {
                        *slot = Some(Value::of(value));
                    }
                }
            }
        }
    }
    (RawRecord::from_fields(|f| values.get(f as usize).copied().flatten()), nested)
}
