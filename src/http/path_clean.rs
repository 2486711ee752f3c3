//! The router's path cleaning: Go's `path.Clean` as gorilla/mux applies it, and the 301
//! redirect target it produces (api.md §2).
//!
//! The reference cleans the *decoded* path (`URL.Path`), so `%2F%2F` and `%2E%2E` count
//! as `//` and `..`; the `Location` is the cleaned path re-encoded the way Go's
//! `URL.EscapedPath` does, followed by the original raw query.

/// What the router would answer before any route is tried: `Some(location)` when the
/// cleaned path differs from the request's, meaning "301 with this `Location`".
///
/// Returns `None` when nothing changes, and also for paths that cannot be cleaned
/// meaningfully: `*` (the `OPTIONS *` form) and paths with invalid percent-escapes
/// (Go rejects those with a 400 before routing; we let the routes answer instead).
pub fn redirect_location(uri: &http::Uri) -> Option<String> {
    let raw_path = uri.path();
    if raw_path == "*" {
        return None;
    }
    let decoded_path = percent_decode_path(raw_path)?;
    let cleaned_path = clean_request_path(&decoded_path);
    if cleaned_path == decoded_path {
        return None;
    }
    let mut location = escape_path(&cleaned_path);
    // Go writes `?` when the raw query is non-empty or the request ended with a bare `?`
    // (`ForceQuery`); `http::Uri::query` is `Some("")` in the latter case.
    if let Some(query) = uri.query() {
        location.push('?');
        location.push_str(query);
    }
    Some(location)
}

/// gorilla/mux's `cleanPath`: make the path rooted, apply Go's `path.Clean`, and put a
/// trailing slash back when the input had one (except for the root itself).
pub fn clean_request_path(path: &[u8]) -> Vec<u8> {
    if path.is_empty() {
        return b"/".to_vec();
    }
    let mut rooted = Vec::with_capacity(path.len() + 1);
    if path[0] != b'/' {
        rooted.push(b'/');
    }
    rooted.extend_from_slice(path);
    let mut cleaned = go_path_clean(&rooted);
    if rooted.last() == Some(&b'/') && cleaned != b"/" {
        cleaned.push(b'/');
    }
    cleaned
}

/// Go's `path.Clean`: the shortest lexically equivalent path. Repeated slashes become one,
/// `.` segments vanish, `..` removes the segment before it (and at the root of a rooted
/// path is dropped), a trailing slash is removed; an empty result is `.` (or `/` when the
/// input was rooted).
pub fn go_path_clean(path: &[u8]) -> Vec<u8> {
    if path.is_empty() {
        return b".".to_vec();
    }
    let rooted = path[0] == b'/';
    let mut output: Vec<u8> = Vec::with_capacity(path.len());
    if rooted {
        output.push(b'/');
    }
    // Index in `output` below which `..` may not backtrack: past the root slash, or past
    // the leading `..` segments of a relative path.
    let mut backtrack_floor = output.len();
    for segment in path.split(|byte| *byte == b'/') {
        match segment {
            b"" | b"." => {}
            b".." => {
                if output.len() > backtrack_floor {
                    let cut = output[backtrack_floor..]
                        .iter()
                        .rposition(|byte| *byte == b'/')
                        .map_or(backtrack_floor, |position| backtrack_floor + position);
                    output.truncate(cut);
                } else if !rooted {
                    if !output.is_empty() {
                        output.push(b'/');
                    }
                    output.extend_from_slice(b"..");
                    backtrack_floor = output.len();
                }
            }
            _ => {
                if output.len() > usize::from(rooted) || (!rooted && !output.is_empty()) {
                    output.push(b'/');
                }
                output.extend_from_slice(segment);
            }
        }
    }
    if output.is_empty() {
        return b".".to_vec();
    }
    output
}

/// Percent-decodes a request path the way Go's URL parser fills `URL.Path` (`+` stays a
/// plus sign). `None` when an escape is malformed.
fn percent_decode_path(raw_path: &str) -> Option<Vec<u8>> {
    let bytes = raw_path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let high = hex_value(*bytes.get(index + 1)?)?;
            let low = hex_value(*bytes.get(index + 2)?)?;
            decoded.push(high << 4 | low);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    Some(decoded)
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// Go's `url.PathEscape` in path mode (`shouldEscape(c, encodePath)`): unreserved
/// characters and `$&+,/:;=@` stay, everything else becomes `%XX` with upper-case hex.
fn escape_path(path: &[u8]) -> String {
    const HEX_DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut escaped = String::with_capacity(path.len());
    for &byte in path {
        let keep = byte.is_ascii_alphanumeric()
            || matches!(
                byte,
                b'-' | b'_'
                    | b'.'
                    | b'~'
                    | b'$'
                    | b'&'
                    | b'+'
                    | b','
                    | b'/'
                    | b':'
                    | b';'
                    | b'='
                    | b'@'
            );
        if keep {
            escaped.push(char::from(byte));
        } else {
            escaped.push('%');
            escaped.push(char::from(HEX_DIGITS[usize::from(byte >> 4)]));
            escaped.push(char::from(HEX_DIGITS[usize::from(byte & 0x0f)]));
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(path: &str) -> String {
        String::from_utf8(go_path_clean(path.as_bytes())).expect("ASCII in, ASCII out")
    }

    fn location(uri: &str) -> Option<String> {
        let uri: http::Uri = uri.parse().expect("test URI parses");
        redirect_location(&uri)
    }

    /// The table of Go's own `path.Clean` tests.
    #[test]
    fn go_path_clean_matches_the_go_table() {
        let cases = [
            // Already clean
            ("", "."),
            ("abc", "abc"),
            ("abc/def", "abc/def"),
            ("a/b/c", "a/b/c"),
            (".", "."),
            ("..", ".."),
            ("../..", "../.."),
            ("../../abc", "../../abc"),
            ("/abc", "/abc"),
            ("/", "/"),
            // Remove trailing slash
            ("abc/", "abc"),
            ("abc/def/", "abc/def"),
            ("a/b/c/", "a/b/c"),
            ("./", "."),
            ("../", ".."),
            ("../../", "../.."),
            ("/abc/", "/abc"),
            // Remove doubled slash
            ("abc//def//ghi", "abc/def/ghi"),
            ("//abc", "/abc"),
            ("///abc", "/abc"),
            ("//abc//", "/abc"),
            ("abc//", "abc"),
            // Remove . elements
            ("abc/./def", "abc/def"),
            ("/./abc/def", "/abc/def"),
            ("abc/.", "abc"),
            // Remove .. elements
            ("abc/def/ghi/../jkl", "abc/def/jkl"),
            ("abc/def/../ghi/../jkl", "abc/jkl"),
            ("abc/def/..", "abc"),
            ("abc/def/../..", "."),
            ("/abc/def/../..", "/"),
            ("abc/def/../../..", ".."),
            ("/abc/def/../../..", "/"),
            ("abc/def/../../../ghi/jkl/../../../mno", "../../mno"),
            // Combinations
            ("abc/./../def", "def"),
            ("abc//./../def", "def"),
            ("abc/../../././../def", "../../def"),
        ];
        for (input, expected) in cases {
            assert_eq!(clean(input), expected, "path.Clean({input:?})");
        }
    }

    #[test]
    fn request_path_cleaning_keeps_a_trailing_slash_and_roots_the_path() {
        let cases = [
            ("", "/"),
            ("/", "/"),
            ("//", "/"),
            ("/a/", "/a/"),
            ("/a//", "/a/"),
            ("/a/./", "/a/"),
            ("/a/.", "/a"),
            ("/a/..", "/"),
            ("/a/../", "/"),
            ("/..", "/"),
            ("/../a", "/a"),
            ("a/b", "/a/b"),
            ("/api//v1/units", "/api/v1/units"),
        ];
        for (input, expected) in cases {
            let cleaned = clean_request_path(input.as_bytes());
            assert_eq!(cleaned, expected.as_bytes(), "cleanPath({input:?})");
        }
    }

    #[test]
    fn clean_paths_are_not_redirected() {
        for uri in [
            "/",
            "/health",
            "/api/v1/units",
            "/api/v1/units/",
            "/api/v1/units?from=1&to=2",
            "/swagger/index.html",
            "/a/b.c/d..e/.f",
            "*",
        ] {
            assert_eq!(location(uri), None, "{uri}");
        }
    }

    #[test]
    fn unclean_paths_redirect_to_the_cleaned_path_with_the_query() {
        let cases = [
            ("//", "/"),
            ("/api//v1/units", "/api/v1/units"),
            ("/api/v1/./units", "/api/v1/units"),
            ("/api/v1/x/../units", "/api/v1/units"),
            ("/api/v1/units/.", "/api/v1/units"),
            ("/api/v1/units/./", "/api/v1/units/"),
            (
                "/ceems//api/v1/units?a=1&b=2",
                "/ceems/api/v1/units?a=1&b=2",
            ),
            ("/a//b?", "/a/b?"),
            ("/../health", "/health"),
            ("/health/..", "/"),
        ];
        for (uri, expected) in cases {
            assert_eq!(location(uri).as_deref(), Some(expected), "{uri}");
        }
    }

    #[test]
    fn cleaning_works_on_the_decoded_path_and_re_escapes_it() {
        // `%2F` decodes to a slash, so this is `/a//b`, as Go sees it.
        assert_eq!(location("/a%2F%2Fb").as_deref(), Some("/a/b"));
        assert_eq!(location("/a/%2E%2E/b").as_deref(), Some("/b"));
        // Characters Go escapes in a path are escaped in the Location.
        assert_eq!(location("/a%20b//c").as_deref(), Some("/a%20b/c"));
        assert_eq!(
            location("/a%3Fb//c?x=%3F").as_deref(),
            Some("/a%3Fb/c?x=%3F")
        );
        assert_eq!(location("/caf%C3%A9//x").as_deref(), Some("/caf%C3%A9/x"));
        // Characters Go keeps in a path stay as they are.
        assert_eq!(
            location("/a:b@c;d=e,f+g$h&i//").as_deref(),
            Some("/a:b@c;d=e,f+g$h&i/")
        );
        // An escape that is not needed is normalised by the redirect, as in Go.
        assert_eq!(location("/%61//b").as_deref(), Some("/a/b"));
        // A decoded path that is already clean does not redirect, even if spelled with escapes.
        assert_eq!(location("/%61/b"), None);
    }

    #[test]
    fn malformed_escapes_are_left_to_the_routes() {
        assert_eq!(location("/a//%zz"), None);
        assert_eq!(location("/a//%4"), None);
    }

    #[test]
    fn cleaning_is_idempotent_on_random_inputs() {
        use proptest::prelude::*;
        proptest!(|(segments in proptest::collection::vec("(|\\.|\\.\\.|[a-z]{1,3})", 0..8), trailing in any::<bool>())| {
            let mut path = String::from("/");
            path.push_str(&segments.join("/"));
            if trailing {
                path.push('/');
            }
            let once = clean_request_path(path.as_bytes());
            let twice = clean_request_path(&once);
            prop_assert_eq!(&once, &twice);
            prop_assert!(once.starts_with(b"/"));
            prop_assert!(!once.windows(2).any(|pair| pair == b"//"));
        });
    }
}
