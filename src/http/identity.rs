//! Who is asking: the user header (configurable names, first non-empty wins) and the
//! admin check.

use http::header::{HeaderMap, HeaderName};

/// The configured user header names, in order.
#[derive(Debug, Clone)]
pub struct UserHeaders {
    names: Vec<HeaderName>,
}

/// A configured header name that is not a valid HTTP header name.
#[derive(Debug, thiserror::Error)]
#[error("invalid user header name {0:?}")]
pub struct InvalidHeaderName(String);

impl UserHeaders {
    pub fn new(names: &[String]) -> Result<Self, InvalidHeaderName> {
        let names = names
            .iter()
            .map(|name| {
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| InvalidHeaderName(name.clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { names })
    }

    /// The user: the first configured header with a non-empty first value, verbatim.
    pub fn identify(&self, headers: &HeaderMap) -> Option<String> {
        self.names.iter().find_map(|name| {
            let value = headers.get(name)?;
            let value = String::from_utf8_lossy(value.as_bytes());
            (!value.is_empty()).then(|| value.into_owned())
        })
    }

    /// The names as they appear in `Access-Control-Allow-Headers`.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(HeaderName::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn first_non_empty_header_wins_verbatim() {
        let headers = UserHeaders::new(&["X-Grafana-User".into(), "X-Other".into()]).unwrap();
        let mut map = HeaderMap::new();
        assert_eq!(headers.identify(&map), None);
        map.insert("x-other", HeaderValue::from_static(" bob "));
        assert_eq!(headers.identify(&map).as_deref(), Some(" bob "));
        map.insert("x-grafana-user", HeaderValue::from_static(""));
        assert_eq!(headers.identify(&map).as_deref(), Some(" bob "));
        map.insert("x-grafana-user", HeaderValue::from_static("alice"));
        map.append("x-grafana-user", HeaderValue::from_static("mallory"));
        assert_eq!(headers.identify(&map).as_deref(), Some("alice"));
        assert!(UserHeaders::new(&["bad header".into()]).is_err());
    }
}
