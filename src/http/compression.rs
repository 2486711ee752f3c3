//! Response compression (`--web.compression`): gzip preferred over deflate, for the
//! handler content types the reference compresses.

use std::io::Write;

use bytes::Bytes;
use flate2::write::{DeflateEncoder, GzEncoder};
use flate2::Compression;
use http::header::{HeaderValue, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, VARY};

use super::envelope::Reply;

/// A content coding the server can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Gzip,
    Deflate,
}

/// Picks the coding from `Accept-Encoding`: a case-insensitive substring test on each
/// comma-separated item, gzip first.
pub fn negotiate(accept_encoding: Option<&HeaderValue>) -> Option<Encoding> {
    let value = accept_encoding?.to_str().ok()?.to_ascii_lowercase();
    let items: Vec<&str> = value.split(',').collect();
    if items.iter().any(|item| item.contains("gzip")) {
        Some(Encoding::Gzip)
    } else if items.iter().any(|item| item.contains("deflate")) {
        Some(Encoding::Deflate)
    } else {
        None
    }
}

const COMPRESSIBLE_TYPES: [&str; 10] = [
    "text/html",
    "text/css",
    "text/plain",
    "text/javascript",
    "application/javascript",
    "application/x-javascript",
    "application/json",
    "application/atom+xml",
    "application/rss+xml",
    "image/svg+xml",
];

/// Compresses a handler reply in place when its content type qualifies.
pub fn compress(reply: &mut Reply, encoding: Encoding, level: u32) {
    if !reply.compressible {
        return;
    }
    let content_type = reply
        .headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(|value| {
            value
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    let eligible = content_type
        .is_some_and(|content_type| COMPRESSIBLE_TYPES.contains(&content_type.as_str()));
    if !eligible {
        return;
    }
    let level = Compression::new(level.min(9));
    let compressed = match encoding {
        Encoding::Gzip => {
            let mut encoder = GzEncoder::new(Vec::with_capacity(reply.body.len() / 4 + 64), level);
            encoder
                .write_all(&reply.body)
                .and_then(|()| encoder.finish())
        }
        Encoding::Deflate => {
            let mut encoder =
                DeflateEncoder::new(Vec::with_capacity(reply.body.len() / 4 + 64), level);
            encoder
                .write_all(&reply.body)
                .and_then(|()| encoder.finish())
        }
    };
    // Writing into memory cannot fail; if it somehow did, the reply stays uncompressed.
    let Ok(compressed) = compressed else {
        return;
    };
    reply.body = Bytes::from(compressed);
    let coding = match encoding {
        Encoding::Gzip => "gzip",
        Encoding::Deflate => "deflate",
    };
    reply
        .headers
        .insert(CONTENT_ENCODING, HeaderValue::from_static(coding));
    reply
        .headers
        .append(VARY, HeaderValue::from_static("Accept-Encoding"));
    reply.headers.remove(CONTENT_LENGTH);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::envelope::success;
    use flate2::read::{DeflateDecoder, GzDecoder};
    use http::StatusCode;
    use std::io::Read;

    #[test]
    fn negotiation_prefers_gzip_by_substring() {
        let value = |text: &'static str| HeaderValue::from_static(text);
        assert_eq!(
            negotiate(Some(&value("deflate, GZIP;q=0"))),
            Some(Encoding::Gzip)
        );
        assert_eq!(
            negotiate(Some(&value("br, deflate"))),
            Some(Encoding::Deflate)
        );
        assert_eq!(negotiate(Some(&value("br"))), None);
        assert_eq!(negotiate(None), None);
    }

    #[test]
    fn json_is_compressed_and_plain_middleware_answers_are_not() {
        let mut reply = success(&vec!["x"; 100], &[]);
        let original = reply.body.clone();
        compress(&mut reply, Encoding::Gzip, 5);
        assert_eq!(reply.headers[CONTENT_ENCODING], "gzip");
        assert_eq!(reply.headers[VARY], "Accept-Encoding");
        let mut decoded = Vec::new();
        GzDecoder::new(&reply.body[..])
            .read_to_end(&mut decoded)
            .unwrap();
        assert_eq!(decoded, original);

        let mut reply = success(&["y"], &[]);
        compress(&mut reply, Encoding::Deflate, 9);
        let mut decoded = Vec::new();
        DeflateDecoder::new(&reply.body[..])
            .read_to_end(&mut decoded)
            .unwrap();
        assert_eq!(decoded, b"{\"status\":\"success\",\"data\":[\"y\"]}\n");

        let mut plain = Reply::plain(StatusCode::NOT_FOUND, "404 page not found\n");
        compress(&mut plain, Encoding::Gzip, 5);
        assert!(plain.headers.get(CONTENT_ENCODING).is_none());
    }
}
