//! The response envelope `{status, data, errorType, error, warnings}`, the closed set of
//! error types mapped to HTTP status in one table, and the plain replies the pipeline
//! produces before it builds a warp response.

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use http::{HeaderMap, StatusCode};
use serde::Serialize;

use crate::model::json::write_go_json;

/// The API's error types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    BadData,
    Unauthorized,
    Forbidden,
    Internal,
    Unavailable,
}

impl ErrorType {
    /// The one table from error type to (`errorType`, HTTP status).
    pub fn wire(self) -> (&'static str, StatusCode) {
        match self {
            ErrorType::BadData => ("bad_data", StatusCode::BAD_REQUEST),
            ErrorType::Unauthorized => ("unauthorized", StatusCode::UNAUTHORIZED),
            ErrorType::Forbidden => ("forbidden", StatusCode::FORBIDDEN),
            ErrorType::Internal => ("internal", StatusCode::INTERNAL_SERVER_ERROR),
            ErrorType::Unavailable => ("unavailable", StatusCode::SERVICE_UNAVAILABLE),
        }
    }
}

/// An error answered in the envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct ApiError {
    pub kind: ErrorType,
    pub message: String,
}

impl ApiError {
    pub fn bad_data(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorType::BadData,
            message: message.into(),
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorType::Unauthorized,
            message: message.into(),
        }
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorType::Forbidden,
            message: message.into(),
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorType::Internal,
            message: message.into(),
        }
    }
}

/// A finished answer, before CORS, compression and the conversion to a warp response.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Handler output whose content type may be compressed (never middleware answers).
    pub compressible: bool,
}

impl Reply {
    /// A reply with no body and no content type.
    pub fn empty(status: StatusCode) -> Self {
        Self {
            status,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            compressible: false,
        }
    }

    /// A `text/plain` reply (the router's and middlewares' plain answers).
    pub fn plain(status: StatusCode, body: &'static str) -> Self {
        let mut reply = Self::empty(status);
        reply.headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        reply.body = Bytes::from_static(body.as_bytes());
        reply
    }

    /// A JSON envelope reply with the handler headers.
    fn json(status: StatusCode, body: Vec<u8>) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        Self {
            status,
            headers,
            body: Bytes::from(body),
            compressible: true,
        }
    }
}

/// `{"status":"success","data":<data>[,"warnings":[...]]}\n`.
pub fn success<T: Serialize + ?Sized>(data: &T, warnings: &[String]) -> Reply {
    let mut body = Vec::with_capacity(1024);
    body.extend_from_slice(br#"{"status":"success","data":"#);
    write_go_json(&mut body, data);
    push_warnings(&mut body, warnings);
    body.extend_from_slice(b"}\n");
    Reply::json(StatusCode::OK, body)
}

/// A success envelope around an already encoded `data` value.
pub fn success_raw(data_json: &[u8], warnings: &[String]) -> Reply {
    let mut body = Vec::with_capacity(data_json.len() + 64);
    body.extend_from_slice(br#"{"status":"success","data":"#);
    body.extend_from_slice(data_json);
    push_warnings(&mut body, warnings);
    body.extend_from_slice(b"}\n");
    Reply::json(StatusCode::OK, body)
}

/// `{"status":"success","data":null[,"warnings":[...]]}\n`.
pub fn success_null(warnings: &[String]) -> Reply {
    let mut body = Vec::with_capacity(64);
    body.extend_from_slice(br#"{"status":"success","data":null"#);
    push_warnings(&mut body, warnings);
    body.extend_from_slice(b"}\n");
    Reply::json(StatusCode::OK, body)
}

/// `{"status":"error","data":null,"errorType":...,"error":...}\n` with the mapped status.
pub fn error(error: &ApiError) -> Reply {
    let (error_type, status) = error.kind.wire();
    let mut body = Vec::with_capacity(96 + error.message.len());
    body.extend_from_slice(br#"{"status":"error","data":null,"errorType":"#);
    write_go_json(&mut body, error_type);
    if !error.message.is_empty() {
        body.extend_from_slice(br#","error":"#);
        write_go_json(&mut body, &error.message);
    }
    body.extend_from_slice(b"}\n");
    Reply::json(status, body)
}

/// The error envelope as the identity middleware writes it: no Content-Type of its own
/// (sniffed as text/plain), no CORS, never compressed.
pub fn middleware_error(error: &ApiError) -> Reply {
    let mut reply = self::error(error);
    reply.headers.clear();
    reply.headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    reply.compressible = false;
    reply
}

fn push_warnings(body: &mut Vec<u8>, warnings: &[String]) {
    if !warnings.is_empty() {
        body.extend_from_slice(br#","warnings":"#);
        write_go_json(body, warnings);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(reply: &Reply) -> &str {
        std::str::from_utf8(&reply.body).unwrap()
    }

    #[test]
    fn envelopes_match_the_reference_bytes() {
        let empty: [u8; 0] = [];
        assert_eq!(
            text(&success(&empty, &[])),
            "{\"status\":\"success\",\"data\":[]}\n"
        );
        assert_eq!(
            text(&success_null(&[])),
            "{\"status\":\"success\",\"data\":null}\n"
        );
        let reply = success(&["a<b"], &["failed to scan 2 rows".to_owned()]);
        assert_eq!(
            text(&reply),
            "{\"status\":\"success\",\"data\":[\"a\\u003cb\"],\"warnings\":[\"failed to scan 2 rows\"]}\n"
        );
        assert_eq!(reply.headers[CONTENT_TYPE], "application/json");
        assert_eq!(reply.headers[X_CONTENT_TYPE_OPTIONS], "nosniff");
    }

    #[test]
    fn errors_map_to_their_status() {
        let reply = error(&ApiError::bad_data("invalid query fields"));
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            text(&reply),
            "{\"status\":\"error\",\"data\":null,\"errorType\":\"bad_data\",\"error\":\"invalid query fields\"}\n"
        );
        assert_eq!(
            error(&ApiError::forbidden("x")).status,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            error(&ApiError::unauthorized("x")).status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            error(&ApiError::internal("x")).status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let middleware = middleware_error(&ApiError::unauthorized("no user identified"));
        assert!(!middleware.compressible);
        assert_eq!(
            middleware.headers[CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
    }
}
