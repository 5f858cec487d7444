//! A serde deserializer over a parsed JSON value that keeps track of where it is, so that a reply
//! which does not fit names the field (`data.lastPurchase.at is missing`), not a line and column.

use std::fmt::{self, Display};

use serde::de::value::{BorrowedStrDeserializer, StrDeserializer};
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Expected, MapAccess, SeqAccess, Unexpected, Visitor,
};
use serde_json::Value;

/// Reads `value` as `T`; `root` names `value` itself in errors ("" for the top level).
pub fn from_value<T: DeserializeOwned>(value: &Value, root: &str) -> Result<T, Error> {
    T::deserialize(At {
        value,
        path: root.to_owned(),
    })
    .map_err(|e| e.at(root))
}

/// What did not fit, and where.
#[derive(Debug)]
pub struct Error {
    path: Option<String>,
    problem: Problem,
}

#[derive(Debug)]
enum Problem {
    /// An object lacks this field.
    Missing(&'static str),
    /// The value is of the wrong type or out of range, in serde's words.
    Invalid(String),
}

impl Error {
    /// Places the error at `path`, unless a deeper value already placed it.
    fn at(mut self, path: &str) -> Self {
        self.path.get_or_insert_with(|| path.to_owned());
        self
    }
}

impl Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.problem, self.path.as_deref().unwrap_or_default()) {
            (Problem::Missing(field), "") => write!(f, "{field} is missing"),
            (Problem::Missing(field), path) => write!(f, "{path}.{field} is missing"),
            (Problem::Invalid(what), "") => f.write_str(what),
            (Problem::Invalid(what), path) => write!(f, "{path}: {what}"),
        }
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: Display>(msg: T) -> Self {
        Error {
            path: None,
            problem: Problem::Invalid(msg.to_string()),
        }
    }

    fn missing_field(field: &'static str) -> Self {
        Error {
            path: None,
            problem: Problem::Missing(field),
        }
    }

    fn invalid_type(unexpected: Unexpected<'_>, expected: &dyn Expected) -> Self {
        // serde calls JSON null a "unit value".
        match unexpected {
            Unexpected::Unit => {
                Self::custom(format_args!("invalid type: null, expected {expected}"))
            }
            other => Self::custom(format_args!("invalid type: {other}, expected {expected}")),
        }
    }
}

/// A value and the path that leads to it.
struct At<'de> {
    value: &'de Value,
    path: String,
}

impl<'de> de::Deserializer<'de> for At<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => visitor.visit_u64(u),
                (None, Some(i)) => visitor.visit_i64(i),
                (None, None) => visitor.visit_f64(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => visitor.visit_borrowed_str(s),
            Value::Array(items) => visitor.visit_seq(Items {
                items: items.iter().enumerate(),
                path: &self.path,
            }),
            Value::Object(fields) => visitor.visit_map(Fields {
                fields: fields.iter(),
                next: None,
                path: &self.path,
            }),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.value.is_null() {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        // Objects only: serde would also accept a struct written as an array.
        if self.value.is_object() {
            self.deserialize_any(visitor)
        } else {
            Err(de::Error::invalid_type(
                unexpected(self.value),
                &"an object",
            ))
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        // JH1's enums are plain strings ("cash-sale", "active").
        match self.value {
            Value::String(s) => visitor.visit_enum(StrDeserializer::<Error>::new(s)),
            other => Err(de::Error::invalid_type(unexpected(other), &"a string")),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct seq tuple tuple_struct map identifier ignored_any
    }
}

/// An object's fields, each deserialized at its own path.
struct Fields<'de, 'p> {
    fields: serde_json::map::Iter<'de>,
    /// The value whose key was read last.
    next: Option<At<'de>>,
    path: &'p str,
}

impl<'de> MapAccess<'de> for Fields<'de, '_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some((key, value)) = self.fields.next() else {
            return Ok(None);
        };
        let path = if self.path.is_empty() {
            key.clone()
        } else {
            format!("{}.{key}", self.path)
        };
        self.next = Some(At { value, path });
        seed.deserialize(BorrowedStrDeserializer::new(key))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let Some(at) = self.next.take() else {
            return Err(de::Error::custom("a value was asked for before its key"));
        };
        let path = at.path.clone();
        seed.deserialize(at).map_err(|e| e.at(&path))
    }
}

/// An array's items, each deserialized at its own path.
struct Items<'de, 'p> {
    items: std::iter::Enumerate<std::slice::Iter<'de, Value>>,
    path: &'p str,
}

impl<'de> SeqAccess<'de> for Items<'de, '_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        let Some((index, value)) = self.items.next() else {
            return Ok(None);
        };
        let path = format!("{}[{index}]", self.path);
        seed.deserialize(At {
            value,
            path: path.clone(),
        })
        .map(Some)
        .map_err(|e| e.at(&path))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

/// A JSON value as serde describes it in a type error.
fn unexpected(value: &Value) -> Unexpected<'_> {
    match value {
        Value::Null => Unexpected::Unit,
        Value::Bool(b) => Unexpected::Bool(*b),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Unexpected::Unsigned(u),
            (None, Some(i)) => Unexpected::Signed(i),
            (None, None) => Unexpected::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Unexpected::Str(s),
        Value::Array(_) => Unexpected::Seq,
        Value::Object(_) => Unexpected::Map,
    }
}
