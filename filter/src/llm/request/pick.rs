//! One pass over a JSON body that keeps only the members the gateway reads.
//!
//! Every other member is skipped without being built (`IgnoredAny`), so a
//! long `messages` array costs a scan, not an allocation. A member the
//! gateway reads may appear only once in its object, under any of its
//! spellings: readers disagree on which of two repeats counts (most keep
//! the last, some the first), and a cap the gateway reads differently from
//! the provider would let a request spend more than it reserved.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::{Fault, InvalidRequest};

/// A member the gateway reads: its path in the body (how refusals name
/// it), the spellings that name it in its object, and, for an object the
/// gateway looks into, the members it reads there.
#[derive(Debug)]
pub(super) struct Member {
    pub path: &'static str,
    pub names: &'static [&'static str],
    pub inner: &'static [Member],
}

/// What was read of a member: a JSON value, or the picked members of an
/// object the gateway looks into.
#[derive(Debug)]
pub(super) enum Read {
    Value(Value),
    Object(Object),
}

/// The picked members of one object, in the order of its [`Member`] table.
#[derive(Debug)]
pub(super) struct Object {
    members: &'static [Member],
    read: Vec<Option<Read>>,
}

impl Object {
    /// The value of the member at `path`; `None` when absent or `null`
    /// (every member the gateway reads is optional-or-nullable to it).
    pub fn value(&self, path: &str) -> Option<&Value> {
        match self.get(path)? {
            Read::Value(Value::Null) | Read::Object(_) => None,
            Read::Value(value) => Some(value),
        }
    }

    /// The picked members of the object at `path`; `None` when absent or
    /// `null`.
    pub fn object(&self, path: &str) -> Option<&Object> {
        match self.get(path)? {
            Read::Object(object) => Some(object),
            Read::Value(_) => None,
        }
    }

    fn get(&self, path: &str) -> Option<&Read> {
        let index = self.members.iter().position(|m| m.path == path)?;
        self.read.get(index)?.as_ref()
    }
}

/// Reads `body` as one JSON object, keeping the `members` the gateway
/// reads. A refusal names the member at fault; anything that is not a JSON
/// object is refused as the `body`.
pub(super) fn pick(body: &[u8], members: &'static [Member]) -> Result<Object, InvalidRequest> {
    let mut fault = None;
    let mut de = serde_json::Deserializer::from_slice(body);
    let picked = Pick {
        members,
        at: super::BODY,
        fault: &mut fault,
    }
    .deserialize(&mut de)
    .and_then(|read| de.end().map(|()| read));
    match (picked, fault) {
        (_, Some(fault)) => Err(fault),
        (Ok(Read::Object(object)), None) => Ok(object),
        (Ok(Read::Value(_)) | Err(_), None) => {
            Err(InvalidRequest::new(super::BODY, Fault::NotObject))
        }
    }
}

/// Reads one object (the body, or a member the gateway looks into).
/// `null` is read as a value (absent to the caller); any other non-object
/// is recorded in `fault` as a [`Fault::NotObject`] of `at`.
struct Pick<'f> {
    members: &'static [Member],
    at: &'static str,
    fault: &'f mut Option<InvalidRequest>,
}

impl Pick<'_> {
    fn refuse<E: de::Error>(self, field: &'static str, fault: Fault) -> E {
        *self.fault = Some(InvalidRequest::new(field, fault));
        E::custom("refused")
    }

    fn not_object<E: de::Error>(self) -> E {
        let at = self.at;
        self.refuse(at, Fault::NotObject)
    }
}

impl<'de> DeserializeSeed<'de> for Pick<'_> {
    type Value = Read;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Read, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Pick<'_> {
    type Value = Read;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Read, A::Error> {
        let mut read: Vec<Option<Read>> = self.members.iter().map(|_| None).collect();
        while let Some(index) = map.next_key_seed(KeyOf(self.members))? {
            let (Some(member), Some(slot)) = (
                index.and_then(|i| self.members.get(i)),
                index.and_then(|i| read.get_mut(i)),
            ) else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            if slot.is_some() {
                return Err(self.refuse(member.path, Fault::Repeated));
            }
            *slot = Some(if member.inner.is_empty() {
                Read::Value(map.next_value()?)
            } else {
                map.next_value_seed(Pick {
                    members: member.inner,
                    at: member.path,
                    fault: &mut *self.fault,
                })?
            });
        }
        Ok(Read::Object(Object {
            members: self.members,
            read,
        }))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Read, E> {
        Ok(Read::Value(Value::Null))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Read, E> {
        Err(self.not_object())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Read, E> {
        Err(self.not_object())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Read, E> {
        Err(self.not_object())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Read, E> {
        Err(self.not_object())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Read, E> {
        Err(self.not_object())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Read, A::Error> {
        Err(self.not_object())
    }
}

/// A key, as the index of the member it spells (compared after JSON
/// unescaping, without allocating when it has no escapes).
struct KeyOf(&'static [Member]);

impl<'de> DeserializeSeed<'de> for KeyOf {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<usize>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for KeyOf {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|m| m.names.contains(&key)))
    }
}
