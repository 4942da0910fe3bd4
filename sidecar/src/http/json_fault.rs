//! Where a JSON body that serde_json refused goes wrong: the path of the
//! input at fault (`[3].status_code`), including the name of a missing field
//! (`[2].outcome`), found from serde's data, never from an error's text.
//!
//! Only a refused body comes here; accepted bodies are read by serde_json
//! straight into their type ([`crate::http::extract::parse_json`]). A refused body
//! is read again in two steps: serde_json parses it into a [`Node`] tree (a
//! syntax error stops there, with its path), then the type is read from the
//! tree through a deserializer whose error keeps a missing field's name as
//! data ([`ShapeError::MissingField`]), which serde_json's error only has as
//! text. serde_path_to_error tracks the path in both steps.

use std::fmt;

use serde::de::value::{MapDeserializer, SeqDeserializer};
use serde::de::{self, DeserializeOwned, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::{forward_to_deserialize_any, Deserialize, Deserializer};
use serde_path_to_error::Path;

/// The path of the input at fault when `bytes` is read as a `T`, or `None`
/// when the fault is the body as a whole (or `bytes` reads as a `T` after all).
pub fn fault_path<T: DeserializeOwned>(bytes: &[u8]) -> Option<String> {
    let mut reader = serde_json::Deserializer::from_slice(bytes);
    let node: Node = match serde_path_to_error::deserialize(&mut reader) {
        Ok(node) => node,
        Err(e) => return field_at(e.path(), None),
    };
    match serde_path_to_error::deserialize::<_, T>(node) {
        Ok(_) => None,
        Err(e) => field_at(e.path(), e.inner().missing_field()),
    }
}

/// `path`, extended by a missing field's name; `None` for the whole body.
fn field_at(path: &Path, missing: Option<&str>) -> Option<String> {
    let at_root = path.iter().next().is_none();
    match (at_root, missing) {
        (true, None) => None,
        (true, Some(field)) => Some(field.to_string()),
        (false, None) => Some(path.to_string()),
        (false, Some(field)) => Some(format!("{path}.{field}")),
    }
}

/// Why a [`Node`] does not read as the type asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShapeError {
    /// A required field is absent.
    MissingField(&'static str),
    /// Anything else (wrong type, out of range, unknown variant...).
    Other(String),
}

impl ShapeError {
    fn missing_field(&self) -> Option<&'static str> {
        match self {
            ShapeError::MissingField(field) => Some(field),
            ShapeError::Other(_) => None,
        }
    }
}

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShapeError::MissingField(field) => write!(f, "missing field `{field}`"),
            ShapeError::Other(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for ShapeError {}

impl de::Error for ShapeError {
    fn custom<T: fmt::Display>(message: T) -> Self {
        ShapeError::Other(message.to_string())
    }

    fn missing_field(field: &'static str) -> Self {
        ShapeError::MissingField(field)
    }
}

/// A parsed JSON value. Objects keep their members in order, duplicates
/// included, so a type that refuses a duplicated field still does.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Null,
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
    String(String),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Node, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        Node::deserialize(deserializer)
    }

    fn visit_bool<E>(self, value: bool) -> Result<Node, E> {
        Ok(Node::Bool(value))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Node, E> {
        Ok(Node::U64(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Node, E> {
        Ok(Node::I64(value))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Node, E> {
        Ok(Node::F64(value))
    }

    fn visit_str<E>(self, value: &str) -> Result<Node, E> {
        Ok(Node::String(value.to_string()))
    }

    fn visit_string<E>(self, value: String) -> Result<Node, E> {
        Ok(Node::String(value))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut members = Vec::new();
        while let Some(member) = map.next_entry()? {
            members.push(member);
        }
        Ok(Node::Object(members))
    }
}

impl<'de> Deserializer<'de> for Node {
    type Error = ShapeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        match self {
            Node::Null => visitor.visit_unit(),
            Node::Bool(value) => visitor.visit_bool(value),
            Node::U64(value) => visitor.visit_u64(value),
            Node::I64(value) => visitor.visit_i64(value),
            Node::F64(value) => visitor.visit_f64(value),
            Node::String(value) => visitor.visit_string(value),
            Node::Array(items) => SeqDeserializer::new(items.into_iter()).deserialize_any(visitor),
            Node::Object(members) => {
                MapDeserializer::new(members.into_iter()).deserialize_any(visitor)
            }
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        match self {
            Node::Null => visitor.visit_none(),
            other => visitor.visit_some(other),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ShapeError> {
        match self {
            // A unit variant, as the wire's enums (outcomes, verdicts) are written.
            Node::String(variant) => IntoDeserializer::<ShapeError>::into_deserializer(variant)
                .deserialize_enum(name, variants, visitor),
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ShapeError> {
        visitor.visit_newtype_struct(self)
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct
        identifier ignored_any
    }
}

impl<'de> IntoDeserializer<'de, ShapeError> for Node {
    type Deserializer = Node;

    fn into_deserializer(self) -> Node {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_wire::{UsageRecord, VerifyRequest};

    fn record() -> serde_json::Value {
        serde_json::json!({
            "request_id": "r", "api_key_id": 1, "method": "POST", "endpoint": "/",
            "status_code": 200, "outcome": "allowed", "request_bytes": 1,
            "response_bytes": 2, "duration_ms": 3, "timestamp_ms": 4
        })
    }

    fn fault(batch: &serde_json::Value) -> Option<String> {
        fault_path::<Vec<UsageRecord>>(batch.to_string().as_bytes())
    }

    #[test]
    fn missing_fields_are_named_from_data() {
        let mut batch = serde_json::json!([record(), record()]);
        batch[1].as_object_mut().unwrap().remove("outcome");
        assert_eq!(fault(&batch).as_deref(), Some("[1].outcome"));
        assert_eq!(
            fault_path::<VerifyRequest>(b"{}").as_deref(),
            Some("key_hash")
        );
    }

    #[test]
    fn wrong_values_are_named_by_their_path() {
        for (field, value) in [
            ("status_code", serde_json::json!("200")),
            ("status_code", serde_json::json!(70_000)),
            ("request_bytes", serde_json::json!(-1)),
            ("api_key_id", serde_json::json!(1.5)),
            ("outcome", serde_json::json!("made_up")),
            ("outcome", serde_json::json!(["allowed"])),
        ] {
            let mut batch = serde_json::json!([record(), record(), record()]);
            batch[2][field] = value.clone();
            assert_eq!(fault(&batch), Some(format!("[2].{field}")), "{value}");
        }
    }

    #[test]
    fn syntax_errors_stop_at_their_path_and_whole_body_faults_name_nothing() {
        assert_eq!(
            fault_path::<Vec<UsageRecord>>(br#"[{"request_id": }]"#).as_deref(),
            Some("[0].request_id")
        );
        assert_eq!(fault_path::<Vec<UsageRecord>>(b"{}"), None);
        // What reads fine has no fault, unknown fields included.
        let mut batch = serde_json::json!([record()]);
        batch[0]["units"] = serde_json::json!(3);
        assert_eq!(fault(&batch), None);
    }

    #[test]
    fn the_tree_refuses_a_duplicated_field_as_serde_json_does() {
        let body = br#"{"key_hash": "a", "key_hash": "b"}"#;
        assert!(serde_json::from_slice::<VerifyRequest>(body).is_err());
        let node: Node = serde_json::from_slice(body).unwrap();
        let err = VerifyRequest::deserialize(node).unwrap_err();
        assert_eq!(err, ShapeError::Other("duplicate field `key_hash`".into()));
    }
}
