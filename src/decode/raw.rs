//! The wire form of a diagnostic record, as serde sees it.
//!
//! One struct, [`RawRecord`], takes every shape of the reference: the legacy record
//! (`time`, `resourceId`, `category`, `properties{...}`), the `{"records": [...]}` envelope (the
//! same struct with only `records` set), the flat PascalCase `CDBDataPlaneRequests` row and the
//! API categories (`address`, `authorizationTokenType`). `properties` is parsed with the same
//! struct, so a field is looked up in `properties` first and at the top level second.
//!
//! Everything borrows from the input buffer where JSON allows it (no escape sequences), and
//! every leaf is lenient: a number where a string was expected, or the reverse, never fails the
//! record; only the normalizer decides what is malformed, with a reason code.

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::borrow::Cow;
use std::fmt;

/// A JSON leaf read leniently as text: strings are borrowed, numbers and booleans keep their
/// literal form, `null`, objects and arrays read as absent.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Text<'a>(pub Option<Cow<'a, str>>);

impl<'a> Text<'a> {
    pub fn get(&self) -> Option<&str> {
        self.0.as_deref()
    }
    /// Present and not blank.
    pub fn non_empty(&self) -> Option<&str> {
        self.0.as_deref().map(str::trim).filter(|s| !s.is_empty())
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Owned(v))))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Borrowed(if v { "true" } else { "false" }))))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Text(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Text(None))
            }
            fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
                d.deserialize_any(self)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Self::Value, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
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
    pub fn count(self) -> Result<Option<u64>, ()> {
        match self {
            Num::Absent => Ok(None),
            Num::Int(i) if i >= 0 => Ok(Some(i as u64)),
            Num::Float(f) if f >= 0.0 && f < 1.8e19 => Ok(Some(f as u64)),
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

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Num;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number or a string holding one")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Num, E> {
                Ok(Num::from_text(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Num, E> {
                Ok(Num::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Num, E> {
                Ok(i64::try_from(v).map_or(Num::Float(v as f64), Num::Int))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Num, E> {
                Ok(Num::Float(v))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Num, E> {
                Ok(Num::Invalid)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Num, E> {
                Ok(Num::Absent)
            }
            fn visit_none<E: de::Error>(self) -> Result<Num, E> {
                Ok(Num::Absent)
            }
            fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Num, D2::Error> {
                d.deserialize_any(self)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Num, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Num::Invalid)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Num, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Num::Invalid)
            }
        }
        d.deserialize_any(V)
    }
}

/// One diagnostic record, or an envelope of them, or a record's `properties` object.
///
/// Field names follow the legacy JSON (camelCase); aliases take the resource-specific table
/// (PascalCase), the `AzureDiagnostics` export (`_s`, `_g`, `_d` suffixes) and the API
/// categories. serde rejects a record that carries both a name and its alias; that does not
/// happen in Azure's output.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawRecord<'a> {
    #[serde(borrow, alias = "TimeGenerated", alias = "timeGenerated", alias = "timestamp")]
    pub time: Text<'a>,
    #[serde(borrow, rename = "resourceId", alias = "ResourceId", alias = "_ResourceId", alias = "resourceID")]
    pub resource_id: Text<'a>,
    #[serde(borrow, rename = "accountName", alias = "AccountName", alias = "databaseAccountName")]
    pub account_name: Text<'a>,
    #[serde(borrow, alias = "Category")]
    pub category: Text<'a>,
    /// The Log Analytics table name (`CDBDataPlaneRequests`, `AzureDiagnostics`, ...).
    #[serde(borrow, rename = "Type")]
    pub table: Text<'a>,
    #[serde(borrow, rename = "operationName", alias = "OperationName")]
    pub operation_name: Text<'a>,
    #[serde(borrow)]
    pub properties: Option<Box<Lenient<'a>>>,
    #[serde(borrow)]
    pub records: Option<Records<'a>>,

    #[serde(
        borrow,
        rename = "clientIpAddress",
        alias = "ClientIpAddress",
        alias = "clientIpAddress_s",
        alias = "address",
        alias = "Address",
        alias = "address_s",
        alias = "callerIpAddress"
    )]
    pub client_ip: Text<'a>,
    #[serde(borrow, rename = "keyType", alias = "KeyType", alias = "keyType_s")]
    pub key_type: Text<'a>,
    #[serde(
        borrow,
        rename = "authTokenType",
        alias = "AuthTokenType",
        alias = "authTokenType_s",
        alias = "authorizationTokenType",
        alias = "AuthorizationTokenType",
        alias = "authorizationTokenType_s"
    )]
    pub auth_token_type: Text<'a>,
    #[serde(
        borrow,
        rename = "aadPrincipalId",
        alias = "AadPrincipalId",
        alias = "aadPrincipalId_g",
        alias = "aadPrincipalId_s"
    )]
    pub aad_principal_id: Text<'a>,
    #[serde(
        borrow,
        rename = "resourceTokenPermissionId",
        alias = "ResourceTokenPermissionId",
        alias = "resourceTokenPermissionId_s"
    )]
    pub resource_token_permission_id: Text<'a>,
    #[serde(borrow, rename = "resourceTokenUserRid", alias = "ResourceTokenUserRid", alias = "resourceTokenUserRid_s")]
    pub resource_token_user_rid: Text<'a>,
    #[serde(borrow, rename = "databaseName", alias = "DatabaseName", alias = "databaseName_s", alias = "databasename")]
    pub database: Text<'a>,
    #[serde(
        borrow,
        rename = "collectionName",
        alias = "CollectionName",
        alias = "collectionName_s",
        alias = "collectionname"
    )]
    pub collection: Text<'a>,
    #[serde(borrow, rename = "userAgent", alias = "UserAgent", alias = "userAgent_s")]
    pub user_agent: Text<'a>,
    #[serde(borrow, rename = "activityId", alias = "ActivityId", alias = "activityId_g", alias = "activityId_s")]
    pub activity_id: Text<'a>,
    #[serde(rename = "statusCode", alias = "StatusCode", alias = "statusCode_s", alias = "statusCode_d")]
    pub status_code: Num,
    #[serde(rename = "errorCode", alias = "ErrorCode", alias = "errorCode_s")]
    pub error_code: Num,
    #[serde(rename = "requestCharge", alias = "RequestCharge", alias = "requestCharge_s", alias = "requestCharge_d")]
    pub request_charge: Num,
    #[serde(rename = "requestLength", alias = "RequestLength", alias = "requestLength_s", alias = "requestLength_d")]
    pub request_length: Num,
    #[serde(
        rename = "responseLength",
        alias = "ResponseLength",
        alias = "responseLength_s",
        alias = "responseLength_d"
    )]
    pub response_length: Num,
}

/// A record position that may hold something other than an object (`42`, `"x"`): it reads as
/// `None` instead of failing the whole envelope.
#[derive(Debug, Default)]
pub struct Lenient<'a>(pub Option<RawRecord<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for Lenient<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Lenient<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a record object")
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<Self::Value, A::Error> {
                RawRecord::deserialize(de::value::MapAccessDeserializer::new(m)).map(|r| Lenient(Some(r)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Self::Value, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Lenient(None))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// The `records` array of an envelope; anything else under that name reads as empty-invalid.
#[derive(Debug, Default)]
pub struct Records<'a>(pub Option<Vec<Lenient<'a>>>);

impl<'de: 'a, 'a> Deserialize<'de> for Records<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Records<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of records")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Self::Value, A::Error> {
                let mut v = Vec::with_capacity(s.size_hint().unwrap_or(16));
                while let Some(r) = s.next_element::<Lenient<'a>>()? {
                    v.push(r);
                }
                Ok(Records(Some(v)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Records(None))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Records(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Records(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Records(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Records(None))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Records(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Records(None))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}
