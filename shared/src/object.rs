//! The model is JSON objects only. Serde's derived `Deserialize` also builds a
//! struct from a sequence of its fields in order, so `["x", "round_robin", …]`
//! would pass for a cluster; here every model struct, at every depth, is read
//! from a map and nothing else — in the REST API, the bootstrap file, the state
//! file and the data plane's cache file alike, since they all go through
//! these impls.
//!
//! A struct opts in by deriving with `#[serde(remote = "Self")]`, which turns the
//! derived code into inherent `serialize`/`deserialize` functions, and naming
//! itself in [`objects_only!`](crate::objects_only) (and, if it is also
//! serialized, in [`serialize_as_derived!`](crate::serialize_as_derived)).
//! Beware that `Type::deserialize(d)` then names the inherent, derived
//! function; code that reads a model struct calls the trait's
//! (`<Type as Deserialize>::deserialize`, or `serde_json::from_*`).

use std::fmt;
use std::marker::PhantomData;

use serde::Deserializer;
use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Visitor};

/// A struct whose derived (inherent) `deserialize` is only ever given a map.
pub trait FromObject<'de>: Sized {
    /// What the error says was expected, e.g. "a cluster object".
    const EXPECTING: &'static str;

    /// The derived deserializer (`#[serde(remote = "Self")]`).
    fn from_object<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error>;
}

/// Reads a `T` from a JSON object; a sequence (or anything else) is an
/// "invalid type … expected a … object" error.
pub fn deserialize_object<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromObject<'de>,
{
    deserializer.deserialize_map(ObjectVisitor(PhantomData))
}

struct ObjectVisitor<T>(PhantomData<T>);

impl<'de, T: FromObject<'de>> Visitor<'de> for ObjectVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(T::EXPECTING)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::from_object(MapAccessDeserializer::new(map))
    }
}

/// Implements `Deserialize` (objects only) for structs derived with
/// `#[serde(remote = "Self")]`: `objects_only!(Cluster => "a cluster object")`.
#[macro_export]
macro_rules! objects_only {
    ($($ty:ident => $expecting:literal),* $(,)?) => {$(
        impl<'de> $crate::object::FromObject<'de> for $ty {
            const EXPECTING: &'static str = $expecting;

            fn from_object<D: ::serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                $ty::deserialize(deserializer)
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $ty {
            fn deserialize<D: ::serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                $crate::object::deserialize_object(deserializer)
            }
        }
    )*};
}

/// Implements `Serialize` as derived, for structs derived with
/// `#[serde(remote = "Self")]`.
#[macro_export]
macro_rules! serialize_as_derived {
    ($($ty:ident),* $(,)?) => {$(
        impl ::serde::Serialize for $ty {
            fn serialize<S: ::serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                $ty::serialize(self, serializer)
            }
        }
    )*};
}
