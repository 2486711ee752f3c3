//! The JSON-valued columns: metric maps, generic objects (allocation, tags) and lists.
//!
//! Each type is decoded from the text stored in SQLite with the rules of the reference
//! server and is encoded back with [`super::json::GoFormatter`].

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

use super::json::{format_metric_value, to_go_json, MetricValueBuffer};

/// Why a JSON column could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("invalid JSON column: {0}")]
pub struct DecodeError(String);

/// A map of sub-metric name to value (`{"global": 12.5}`), keys sorted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricMap(pub BTreeMap<String, f64>);

impl MetricMap {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A map of the given keys and values.
    pub fn from_pairs(entries: &[(&str, f64)]) -> Self {
        MetricMap(
            entries
                .iter()
                .map(|(key, value)| ((*key).to_owned(), *value))
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<f64> {
        self.0.get(key).copied()
    }

    /// Decodes stored text: the text `null` is an empty map; `null` values and the quoted
    /// NaN/Inf spellings are 0; any other string, a bare NaN token or malformed JSON is an
    /// error.
    pub fn decode(text: &str) -> Result<Self, DecodeError> {
        let map: Option<BTreeMap<String, MetricValue>> =
            serde_json::from_str(text).map_err(|error| DecodeError(error.to_string()))?;
        Ok(Self(
            map.unwrap_or_default()
                .into_iter()
                .map(|(key, value)| (key, value.0))
                .collect(),
        ))
    }

    /// Decodes an object that SQLite's `json_object` built from aggregate results: as
    /// [`MetricMap::decode`], with every real (a literal with a fraction or an exponent)
    /// rounded to 15 significant digits, as the reference's SQLite printed them (the bundled
    /// one prints them exactly).
    pub fn decode_sql_aggregate(text: &str) -> Result<Self, DecodeError> {
        let map: Option<BTreeMap<String, &RawValue>> =
            serde_json::from_str(text).map_err(|error| DecodeError(error.to_string()))?;
        let mut out = BTreeMap::new();
        for (key, raw) in map.unwrap_or_default() {
            let literal = raw.get();
            let value = serde_json::from_str::<MetricValue>(literal)
                .map_err(|error| DecodeError(error.to_string()))?
                .0;
            let real = literal.starts_with(|c: char| c == '-' || c.is_ascii_digit())
                && literal.contains(['.', 'e', 'E']);
            out.insert(
                key,
                if real {
                    round_to_15_digits(value)
                } else {
                    value
                },
            );
        }
        Ok(Self(out))
    }

    /// Encodes the map as the reference stores it (keys sorted, Go number format): the
    /// text [`to_go_json`] gives, written directly (every stored map and every response
    /// goes through here); keys that need an escape take the serializer.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(2 + 32 * self.0.len());
        let mut buffer = MetricValueBuffer::default();
        out.push('{');
        for (index, (key, value)) in self.0.iter().enumerate() {
            if index > 0 {
                out.push(',');
            }
            if key.bytes().all(is_plain_key_byte) {
                out.push('"');
                out.push_str(key);
                out.push('"');
            } else {
                out.push_str(&String::from_utf8(to_go_json(key)).expect("JSON is UTF-8"));
            }
            out.push(':');
            // serde_json would print `null` for NaN/Inf; Go prints 0.
            out.push_str(buffer.format(if value.is_finite() { *value } else { 0.0 }));
        }
        out.push('}');
        out
    }
}

/// A byte that a JSON key holds as is in Go's encoding: printable ASCII but the quote,
/// the backslash and the HTML characters Go escapes.
pub fn is_plain_key_byte(byte: u8) -> bool {
    (0x20..0x7f).contains(&byte) && !matches!(byte, b'"' | b'\\' | b'<' | b'>' | b'&')
}

impl Serialize for MetricMap {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            // serde_json would print `null` for NaN/Inf; Go prints 0.
            let value = if value.is_finite() { *value } else { 0.0 };
            map.serialize_entry(key, &value)?;
        }
        map.end()
    }
}

impl fmt::Display for MetricMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        f.write_str("{")?;
        for (key, value) in &self.0 {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            write!(f, "{key:?}:{}", format_metric_value(*value))?;
        }
        f.write_str("}")
    }
}

/// `value` rounded to 15 significant digits, as SQLite's `%!.15g` prints a real.
pub fn round_to_15_digits(value: f64) -> f64 {
    if !value.is_finite() {
        return value;
    }
    format!("{value:.14e}").parse().unwrap_or(value)
}

/// One decoded metric value.
struct MetricValue(f64);

impl<'de> Deserialize<'de> for MetricValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ValueVisitor;
        impl Visitor<'_> for ValueVisitor {
            type Value = MetricValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number, null or a NaN/Inf string")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<MetricValue, E> {
                Ok(MetricValue(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<MetricValue, E> {
                Ok(MetricValue(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<MetricValue, E> {
                Ok(MetricValue(v as f64))
            }
            fn visit_unit<E: de::Error>(self) -> Result<MetricValue, E> {
                Ok(MetricValue(0.0))
            }
            fn visit_none<E: de::Error>(self) -> Result<MetricValue, E> {
                Ok(MetricValue(0.0))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<MetricValue, E> {
                if is_non_finite_spelling(v) {
                    Ok(MetricValue(0.0))
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(v), &self))
                }
            }
        }
        deserializer.deserialize_any(ValueVisitor)
    }
}

/// The quoted spellings of NaN and ±Inf that Go's metric decoder accepts as 0.
fn is_non_finite_spelling(text: &str) -> bool {
    if matches!(text, "NaN" | "nan") {
        return true;
    }
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    matches!(unsigned, "Inf" | "inf" | "Infinity" | "infinity")
}

/// A JSON object of arbitrary values (allocation, tags), kept as canonical JSON text:
/// keys sorted at every level, number literals as stored, top-level integers re-printed.
#[derive(Debug, Clone, Default)]
pub struct Generic(Option<Box<RawValue>>);

impl Generic {
    /// `None` when the stored object is empty or the text `null` (the key is then omitted).
    pub fn decode(text: &str) -> Result<Self, DecodeError> {
        let map: Option<BTreeMap<String, &RawValue>> =
            serde_json::from_str(text).map_err(|error| DecodeError(error.to_string()))?;
        let Some(map) = map.filter(|map| !map.is_empty()) else {
            return Ok(Self(None));
        };
        let mut out = String::with_capacity(text.len());
        out.push('{');
        for (index, (key, value)) in map.iter().enumerate() {
            if index > 0 {
                out.push(',');
            }
            out.push_str(&String::from_utf8(to_go_json(key)).expect("JSON is UTF-8"));
            out.push(':');
            canonical_value(value, true, &mut out)?;
        }
        out.push('}');
        Ok(Self(Some(
            RawValue::from_string(out).map_err(|error| DecodeError(error.to_string()))?,
        )))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// The canonical JSON text, `{}` when empty.
    pub fn as_json(&self) -> &str {
        self.0.as_deref().map_or("{}", RawValue::get)
    }
}

impl PartialEq for Generic {
    fn eq(&self, other: &Self) -> bool {
        self.as_json() == other.as_json()
    }
}

impl Serialize for Generic {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Some(raw) => raw.serialize(serializer),
            None => serializer.serialize_unit(),
        }
    }
}

/// A JSON array (member lists, tags), elements canonicalised like a [`Generic`] top level.
/// `None` is the stored text `null`.
#[derive(Debug, Clone, Default)]
pub struct List(Option<Box<RawValue>>);

impl List {
    pub fn decode(text: &str) -> Result<Self, DecodeError> {
        let items: Option<Vec<&RawValue>> =
            serde_json::from_str(text).map_err(|error| DecodeError(error.to_string()))?;
        let Some(items) = items else {
            return Ok(Self(None));
        };
        let mut out = String::with_capacity(text.len());
        out.push('[');
        for (index, item) in items.iter().enumerate() {
            if index > 0 {
                out.push(',');
            }
            canonical_value(item, true, &mut out)?;
        }
        out.push(']');
        Ok(Self(Some(
            RawValue::from_string(out).map_err(|error| DecodeError(error.to_string()))?,
        )))
    }

    /// A list of plain strings.
    pub fn from_strings<S: AsRef<str>>(items: &[S]) -> Self {
        let items: Vec<&str> = items.iter().map(AsRef::as_ref).collect();
        let text = String::from_utf8(to_go_json(&items)).expect("JSON is UTF-8");
        Self(Some(RawValue::from_string(text).expect("valid JSON")))
    }

    /// Stored `null`.
    pub fn is_null(&self) -> bool {
        self.0.is_none()
    }

    /// Null or `[]`: the key is omitted where the model says so.
    pub fn is_empty(&self) -> bool {
        self.0.as_deref().is_none_or(|raw| raw.get() == "[]")
    }

    pub fn as_json(&self) -> &str {
        self.0.as_deref().map_or("null", RawValue::get)
    }
}

impl PartialEq for List {
    fn eq(&self, other: &Self) -> bool {
        self.as_json() == other.as_json()
    }
}

impl Serialize for List {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Some(raw) => raw.serialize(serializer),
            None => serializer.serialize_unit(),
        }
    }
}

/// Appends the canonical form of one JSON value: objects with sorted keys, strings
/// re-escaped the Go way, number literals kept (or re-printed as int64 at the top level).
fn canonical_value(value: &RawValue, top_level: bool, out: &mut String) -> Result<(), DecodeError> {
    let text = value.get().trim();
    match text.as_bytes().first() {
        Some(b'{') => {
            let map: BTreeMap<String, &RawValue> =
                serde_json::from_str(text).map_err(|error| DecodeError(error.to_string()))?;
            out.push('{');
            for (index, (key, value)) in map.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str(&String::from_utf8(to_go_json(key)).expect("JSON is UTF-8"));
                out.push(':');
                canonical_value(value, false, out)?;
            }
            out.push('}');
        }
        Some(b'[') => {
            let items: Vec<&RawValue> =
                serde_json::from_str(text).map_err(|error| DecodeError(error.to_string()))?;
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                canonical_value(item, false, out)?;
            }
            out.push(']');
        }
        Some(b'"') => {
            let string: String =
                serde_json::from_str(text).map_err(|error| DecodeError(error.to_string()))?;
            out.push_str(&String::from_utf8(to_go_json(&string)).expect("JSON is UTF-8"));
        }
        Some(b'-' | b'0'..=b'9') if top_level => match text.parse::<i64>() {
            Ok(integer) => out.push_str(&integer.to_string()),
            Err(_) => out.push_str(text),
        },
        _ => out.push_str(text),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn metric_map_encodes_as_the_serializer(
            entries in proptest::collection::btree_map(
                "[a-z_<>&\"\\\\\u{1}\u{7f}\u{e9}\u{2028}]{0,6}",
                proptest::num::f64::ANY,
                0..6,
            )
        ) {
            let map = MetricMap(entries);
            let expected = String::from_utf8(to_go_json(&map)).unwrap();
            proptest::prop_assert_eq!(map.encode(), expected);
        }
    }

    #[test]
    fn metric_map_decodes_the_reference_spellings() {
        let map = MetricMap::decode(r#"{"b":"NaN","a":1,"c":"-Inf","d":null,"e":2.5}"#).unwrap();
        assert_eq!(map.encode(), r#"{"a":1,"b":0,"c":0,"d":0,"e":2.50000000}"#);
        assert!(MetricMap::decode("null").unwrap().is_empty());
        assert!(MetricMap::decode(r#"{"a":"x"}"#).is_err());
        assert!(MetricMap::decode(r#"{"a":NaN}"#).is_err());
        assert!(MetricMap::decode("").is_err());
        assert!(MetricMap::decode("[1]").is_err());
    }

    #[test]
    fn generic_sorts_keys_at_every_level_and_keeps_number_text() {
        let generic = Generic::decode(
            r#"{"z":1.0,"a":{"y":1e3,"b":[{"d":1,"c":2}],"e":{}},"m":-0,"n":"<x>","t":[]}"#,
        )
        .unwrap();
        assert_eq!(
            generic.as_json(),
            r#"{"a":{"b":[{"c":2,"d":1}],"e":{},"y":1e3},"m":0,"n":"\u003cx\u003e","t":[],"z":1.0}"#
        );
        assert!(Generic::decode("{}").unwrap().is_empty());
        assert!(Generic::decode("null").unwrap().is_empty());
        assert!(Generic::decode("{").is_err());
    }

    #[test]
    fn list_keeps_null_apart_from_empty() {
        assert!(List::decode("null").unwrap().is_null());
        let empty = List::decode("[]").unwrap();
        assert!(!empty.is_null() && empty.is_empty());
        assert_eq!(
            List::decode(r#"["b","a", 3]"#).unwrap().as_json(),
            r#"["b","a",3]"#
        );
        assert_eq!(List::from_strings(&["ceems"]).as_json(), r#"["ceems"]"#);
    }
}
