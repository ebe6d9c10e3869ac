//! Identifiers WeCom hands us, each its own type so that a member's userid and a customer's
//! external_userid cannot be swapped unnoticed. They are opaque strings on the wire and in the
//! database: serde sees them as the plain string (`#[serde(transparent)]`, so JSON and queued job
//! payloads are unchanged), and sqlx encodes and decodes them as `String` on every backend.
//!
//! The bottom layer: this module uses only std, serde and sqlx.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(id: impl Into<String>) -> Self {
                Self(id.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }

            pub fn is_empty(&self) -> bool {
                self.0.is_empty()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> Self {
                Self(id)
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> Self {
                Self(id.to_owned())
            }
        }

        impl From<&String> for $name {
            fn from(id: &String) -> Self {
                Self(id.clone())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl PartialEq<$name> for str {
            fn eq(&self, other: &$name) -> bool {
                self == other.0
            }
        }

        impl PartialEq<$name> for &str {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl<DB: sqlx::Database> sqlx::Type<DB> for $name
        where
            String: sqlx::Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <String as sqlx::Type<DB>>::type_info()
            }

            fn compatible(ty: &DB::TypeInfo) -> bool {
                <String as sqlx::Type<DB>>::compatible(ty)
            }
        }

        impl<'q, DB: sqlx::Database> sqlx::Encode<'q, DB> for $name
        where
            String: sqlx::Encode<'q, DB>,
        {
            fn encode(
                self,
                buf: &mut <DB as sqlx::Database>::ArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <String as sqlx::Encode<'q, DB>>::encode(self.0, buf)
            }

            fn encode_by_ref(
                &self,
                buf: &mut <DB as sqlx::Database>::ArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <String as sqlx::Encode<'q, DB>>::encode_by_ref(&self.0, buf)
            }

            fn produces(&self) -> Option<DB::TypeInfo> {
                <String as sqlx::Encode<'q, DB>>::produces(&self.0)
            }

            fn size_hint(&self) -> usize {
                <String as sqlx::Encode<'q, DB>>::size_hint(&self.0)
            }
        }

        impl<'r, DB: sqlx::Database> sqlx::Decode<'r, DB> for $name
        where
            String: sqlx::Decode<'r, DB>,
        {
            fn decode(
                value: <DB as sqlx::Database>::ValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                <String as sqlx::Decode<'r, DB>>::decode(value).map(Self)
            }
        }

        impl sqlx::postgres::PgHasArrayType for $name {
            fn array_type_info() -> sqlx::postgres::PgTypeInfo {
                <String as sqlx::postgres::PgHasArrayType>::array_type_info()
            }
        }
    };
}

string_id! {
    /// A customer: WeCom's `external_userid`, the id of an external contact (a WeChat user or
    /// another corp's member) as seen by this corp.
    ExternalUserId
}

string_id! {
    /// A member of the corp: WeCom's `userid` of an employee (the staff who follow customers).
    UserId
}

string_id! {
    /// A corp tag (企业标签) in WeCom's tag library: its `tag_id`, which an admin's rename keeps
    /// and a delete and recreate changes.
    TagId
}

string_id! {
    /// A customer group chat (客户群): WeCom's `chat_id`.
    ChatId
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_the_plain_string() {
        let id = ExternalUserId::from("wmABC");
        assert_eq!(serde_json::to_string(&id).unwrap(), r#""wmABC""#);
        let back: ExternalUserId = serde_json::from_str(r#""wmABC""#).unwrap();
        assert_eq!(back, id);
        let tags: Vec<TagId> = serde_json::from_str(r#"["et1","et2"]"#).unwrap();
        assert_eq!(serde_json::to_string(&tags).unwrap(), r#"["et1","et2"]"#);
    }

    #[test]
    fn compares_with_strings_and_displays_as_one() {
        let u = UserId::from("zhangsan".to_string());
        assert_eq!(u, "zhangsan");
        assert_eq!(u.as_str(), "zhangsan");
        assert_eq!(u.to_string(), "zhangsan");
        assert_eq!(AsRef::<str>::as_ref(&u), "zhangsan");
        let (a, b) = (ChatId::from("a"), ChatId::from("b"));
        assert!(a < b);
    }
}
