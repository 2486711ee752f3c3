//! A reader over a parsed YAML tree that knows the key path of every value, so each error
//! names the key it is about (`clusters[1].id`, `ceems_api_server.data.path`).
//!
//! Scalars are read as Go's yaml.v3 reads them into typed fields, so configs written for the
//! reference load unchanged: a string field takes any scalar's text (`teams_ids: [1, 2]`),
//! a boolean field also takes `yes`/`no`/`on`/`off`, and `null` is the same as an absent key.

use std::collections::BTreeMap;
use std::time::Duration;

use yaml_serde::{Mapping, Value};

use super::duration::parse_prometheus_duration;
use super::ConfigError;

/// One value of the tree and where it sits.
#[derive(Clone, Copy)]
pub(crate) struct Node<'a> {
    value: &'a Value,
    path: &'a KeyPath,
}

/// A dotted key path, `clusters[1].web.basic_auth`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyPath(String);

impl KeyPath {
    pub(crate) fn root() -> Self {
        Self(String::new())
    }

    pub(crate) fn key(&self, key: &str) -> Self {
        if self.0.is_empty() {
            Self(key.to_owned())
        } else {
            Self(format!("{}.{key}", self.0))
        }
    }

    pub(crate) fn index(&self, index: usize) -> Self {
        Self(format!("{}[{index}]", self.0))
    }

    /// An error about the value at this path.
    pub(crate) fn error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key: self.0.clone(),
            message: message.into(),
        }
    }
}

/// A YAML type name for error messages.
fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// The text of a scalar key or value, as yaml.v3 gives it to a string field.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

impl<'a> Node<'a> {
    pub(crate) fn new(value: &'a Value, path: &'a KeyPath) -> Self {
        Self { value, path }
    }

    pub(crate) fn path(&self) -> &'a KeyPath {
        self.path
    }

    fn expected(&self, what: &str) -> ConfigError {
        self.path
            .error(format!("expected {what}, found {}", kind_of(self.value)))
    }

    /// The mapping at this node; `null` reads as an empty mapping.
    pub(crate) fn mapping(&self) -> Result<Option<&'a Mapping>, ConfigError> {
        match self.value {
            Value::Null => Ok(None),
            Value::Mapping(mapping) => Ok(Some(mapping)),
            _ => Err(self.expected("a mapping")),
        }
    }

    /// The value of `key` in this mapping, `None` when absent or `null`.
    pub(crate) fn get(&self, key: &str) -> Result<Option<&'a Value>, ConfigError> {
        Ok(self
            .mapping()?
            .and_then(|mapping| mapping.get(key))
            .filter(|value| !value.is_null()))
    }

    /// All entries of a mapping, keys read as text, in file order.
    pub(crate) fn entries(&self) -> Result<Vec<(String, &'a Value)>, ConfigError> {
        let mut entries = Vec::new();
        if let Some(mapping) = self.mapping()? {
            for (key, value) in mapping {
                let Some(text) = scalar_text(key) else {
                    return Err(self.path.error(format!(
                        "mapping keys must be scalars, found {}",
                        kind_of(key)
                    )));
                };
                entries.push((text, value));
            }
        }
        Ok(entries)
    }

    /// The items of a list; `null` reads as an empty list.
    pub(crate) fn sequence(&self) -> Result<&'a [Value], ConfigError> {
        match self.value {
            Value::Null => Ok(&[]),
            Value::Sequence(items) => Ok(items),
            _ => Err(self.expected("a list")),
        }
    }

    pub(crate) fn string(&self) -> Result<String, ConfigError> {
        scalar_text(self.value).ok_or_else(|| self.expected("a string"))
    }

    pub(crate) fn boolean(&self) -> Result<bool, ConfigError> {
        match self.value {
            Value::Bool(flag) => Ok(*flag),
            Value::String(text) => match text.to_ascii_lowercase().as_str() {
                "true" | "yes" | "y" | "on" => Ok(true),
                "false" | "no" | "n" | "off" => Ok(false),
                _ => Err(self
                    .path
                    .error(format!("expected a boolean, found {text:?}"))),
            },
            _ => Err(self.expected("a boolean")),
        }
    }

    pub(crate) fn integer(&self) -> Result<i64, ConfigError> {
        if let Value::Number(number) = self.value {
            if let Some(integer) = number.as_i64() {
                return Ok(integer);
            }
            if let Some(float) = number.as_f64() {
                // yaml.v3 takes `50.0` for an int field; we do too, nothing else.
                if float.fract() == 0.0 && float.abs() < 9.0e18 {
                    return Ok(float as i64);
                }
            }
        }
        Err(self.expected("an integer"))
    }

    pub(crate) fn float(&self) -> Result<f64, ConfigError> {
        match self.value {
            Value::Number(number) => number.as_f64().ok_or_else(|| self.expected("a number")),
            _ => Err(self.expected("a number")),
        }
    }

    /// A Prometheus duration (`15m`, `1d`, `0`); a bare integer reads as its text (`0`).
    pub(crate) fn duration(&self) -> Result<Duration, ConfigError> {
        let text = scalar_text(self.value).ok_or_else(|| self.expected("a duration"))?;
        parse_prometheus_duration(&text).map_err(|error| self.path.error(error.to_string()))
    }

    /// A list of strings; `null` is empty, and a single scalar is an error (as in Go).
    pub(crate) fn string_list(&self) -> Result<Vec<String>, ConfigError> {
        let items = self.sequence()?;
        let mut strings = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            let path = self.path.index(index);
            strings.push(Node::new(item, &path).string()?);
        }
        Ok(strings)
    }

    /// A mapping of strings to strings.
    pub(crate) fn string_map(&self) -> Result<BTreeMap<String, String>, ConfigError> {
        let entries = self.entries()?;
        let mut map = BTreeMap::new();
        for (key, value) in entries {
            let path = self.path.key(&key);
            map.insert(key, Node::new(value, &path).string()?);
        }
        Ok(map)
    }
}

/// Reads an optional field with `read`, which gets the field's node.
pub(crate) fn optional_field<'a, T>(
    parent: &Node<'a>,
    key: &str,
    read: impl FnOnce(Node<'_>) -> Result<T, ConfigError>,
) -> Result<Option<T>, ConfigError> {
    match parent.get(key)? {
        None => Ok(None),
        Some(value) => {
            let path = parent.path().key(key);
            read(Node::new(value, &path)).map(Some)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Value {
        yaml_serde::from_str(text).unwrap()
    }

    #[test]
    fn scalars_read_like_go_yaml_v3() {
        let value = parse("a: 1\nb: yes\nc: true\nd: 50.0\ne: text\nf: 0\ng: null\n");
        let root = KeyPath::root();
        let node = Node::new(&value, &root);
        let field = |key: &str| optional_field(&node, key, |child| child.string());
        assert_eq!(field("a").unwrap().as_deref(), Some("1"));
        assert_eq!(field("c").unwrap().as_deref(), Some("true"));
        assert_eq!(field("g").unwrap(), None);
        assert_eq!(field("missing").unwrap(), None);
        assert_eq!(
            optional_field(&node, "b", |child| child.boolean()).unwrap(),
            Some(true)
        );
        assert_eq!(
            optional_field(&node, "d", |child| child.integer()).unwrap(),
            Some(50)
        );
        assert_eq!(
            optional_field(&node, "f", |child| child.duration()).unwrap(),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn errors_name_the_key_path() {
        let value = parse("outer:\n  list: [a, [b]]\n  flag: maybe\n");
        let root = KeyPath::root();
        let node = Node::new(&value, &root);
        let outer_path = root.key("outer");
        let outer = Node::new(node.get("outer").unwrap().unwrap(), &outer_path);
        let error = optional_field(&outer, "list", |child| child.string_list()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "config: outer.list[1]: expected a string, found a list"
        );
        let error = optional_field(&outer, "flag", |child| child.boolean()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "config: outer.flag: expected a boolean, found \"maybe\""
        );
        let error = optional_field(&node, "outer", |child| child.string()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "config: outer: expected a string, found a mapping"
        );
    }
}
