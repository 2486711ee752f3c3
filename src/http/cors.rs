//! CORS for the API routes and `/health`: the origin regex, the fixed header set and the
//! preflight answer.

use http::header::{
    HeaderMap, HeaderValue, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, CONTENT_LENGTH, VARY,
};
use http::StatusCode;
use regex::Regex;

use super::envelope::Reply;

/// CORS settings compiled once at start.
#[derive(Debug, Clone)]
pub struct Cors {
    origin: Regex,
    allow_headers: HeaderValue,
}

/// The `--web.cors.origin` value does not compile.
#[derive(Debug, thiserror::Error)]
#[error("failed to compile option for --web.cors.origin: {0}")]
pub struct InvalidOrigin(String);

impl Cors {
    /// `pattern` is anchored as `^(?s:pattern)$`.
    pub fn new<'a>(
        pattern: &str,
        user_header_names: impl Iterator<Item = &'a str>,
    ) -> Result<Self, InvalidOrigin> {
        let origin = Regex::new(&format!("^(?s:{pattern})$"))
            .map_err(|error| InvalidOrigin(error.to_string()))?;
        let mut allowed = vec!["Accept", "Authorization", "Content-Type", "Origin"];
        let names: Vec<String> = user_header_names.map(canonical_header_name).collect();
        allowed.extend(names.iter().map(String::as_str));
        let allow_headers = HeaderValue::from_str(&allowed.join(", "))
            .map_err(|error| InvalidOrigin(error.to_string()))?;
        Ok(Self {
            origin,
            allow_headers,
        })
    }

    /// Adds the CORS headers when the request has an `Origin`; the origin is echoed only
    /// when it matches.
    pub fn apply(&self, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
        let Some(origin) = origin else {
            return;
        };
        headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, self.allow_headers.clone());
        headers.insert(
            ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET"),
        );
        headers.insert(
            ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("Date"),
        );
        headers.append(VARY, HeaderValue::from_static("Origin"));
        let matches = origin
            .to_str()
            .is_ok_and(|origin| self.origin.is_match(origin));
        if matches {
            headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        }
    }

    /// The answer to `OPTIONS`: 200, empty, `Content-Length: 0`, no content type.
    pub fn preflight(&self, origin: Option<&HeaderValue>) -> Reply {
        let mut reply = Reply::empty(StatusCode::OK);
        reply
            .headers
            .insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        self.apply(origin, &mut reply.headers);
        reply
    }
}

/// `x-grafana-user` → `X-Grafana-User`, as Go canonicalises header names.
fn canonical_header_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => {
                    first.to_ascii_uppercase().to_string() + &chars.as_str().to_ascii_lowercase()
                }
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preflight_matches_the_reference() {
        let cors = Cors::new(".*", ["x-grafana-user"].into_iter()).unwrap();
        let origin = HeaderValue::from_static("https://reqbin.com");
        let reply = cors.preflight(Some(&origin));
        assert_eq!(reply.status, StatusCode::OK);
        assert!(reply.body.is_empty());
        let headers = &reply.headers;
        assert_eq!(
            headers[ACCESS_CONTROL_ALLOW_HEADERS],
            "Accept, Authorization, Content-Type, Origin, X-Grafana-User"
        );
        assert_eq!(headers[ACCESS_CONTROL_ALLOW_METHODS], "GET");
        assert_eq!(headers[ACCESS_CONTROL_EXPOSE_HEADERS], "Date");
        assert_eq!(headers[VARY], "Origin");
        assert_eq!(headers[ACCESS_CONTROL_ALLOW_ORIGIN], "https://reqbin.com");
        assert_eq!(headers[CONTENT_LENGTH], "0");
    }

    #[test]
    fn origin_is_echoed_only_when_it_matches() {
        let cors = Cors::new(r"https://grafana\.example\.org", std::iter::empty()).unwrap();
        let mut headers = HeaderMap::new();
        cors.apply(
            Some(&HeaderValue::from_static("https://evil.example.org")),
            &mut headers,
        );
        assert!(headers.get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        assert!(headers.get(ACCESS_CONTROL_ALLOW_METHODS).is_some());
        let mut headers = HeaderMap::new();
        cors.apply(None, &mut headers);
        assert!(headers.is_empty());
        // Anchored: a suffix does not match.
        let mut headers = HeaderMap::new();
        cors.apply(
            Some(&HeaderValue::from_static(
                "https://grafana.example.org.evil",
            )),
            &mut headers,
        );
        assert!(headers.get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        assert!(Cors::new("(", std::iter::empty()).is_err());
    }
}
