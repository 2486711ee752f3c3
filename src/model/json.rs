//! Go-compatible JSON encoding: the byte format clients of the CEEMS API already parse.
//!
//! Go's `encoding/json` escapes `<`, `>`, `&`, U+2028 and U+2029, and prints metric values
//! with a rule of its own (integral values without a point, others with exactly 8
//! decimals). [`GoFormatter`] teaches serde_json both, so every response and every stored
//! JSON column is written by one encoder.

use std::io;

use serde::Serialize;
use serde_json::ser::{CharEscape, Formatter};

/// A serde_json formatter that writes JSON byte-for-byte as Go's `encoding/json` does for
/// the types this server emits.
#[derive(Debug, Clone, Copy, Default)]
pub struct GoFormatter;

impl Formatter for GoFormatter {
    fn write_f64<W>(&mut self, writer: &mut W, value: f64) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        writer.write_all(format_metric_value(value).as_bytes())
    }

    fn write_f32<W>(&mut self, writer: &mut W, value: f32) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        self.write_f64(writer, f64::from(value))
    }

    fn write_string_fragment<W>(&mut self, writer: &mut W, fragment: &str) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        // Fast path: most fragments need nothing beyond serde_json's own escaping.
        let needs_escape =
            |c: char| matches!(c, '<' | '>' | '&' | '\u{2028}' | '\u{2029}' | '\u{fffd}');
        if !fragment.contains(needs_escape) {
            return writer.write_all(fragment.as_bytes());
        }
        let mut start = 0;
        for (index, c) in fragment.char_indices() {
            let escape = match c {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                // Go writes each invalid UTF-8 byte as this escape; text columns are decoded
                // with one U+FFFD per invalid byte, so writing the escape matches it.
                '\u{fffd}' => "\\ufffd",
                _ => continue,
            };
            writer.write_all(&fragment.as_bytes()[start..index])?;
            writer.write_all(escape.as_bytes())?;
            start = index + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }

    fn write_char_escape<W>(&mut self, writer: &mut W, char_escape: CharEscape) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        serde_json::ser::CompactFormatter.write_char_escape(writer, char_escape)
    }
}

/// Prints a metric value as Go's MetricMap marshaller does.
///
/// NaN and ±Inf print `0`; integral values in the int64 range print their shortest
/// round-trip digits without point or exponent (Rust's `{}` for f64 does exactly that);
/// every other value prints in fixed notation with exactly 8 decimals.
pub fn format_metric_value(value: f64) -> String {
    if !value.is_finite() {
        return "0".to_owned();
    }
    // -2^63 <= v < 2^63, as Go's int64 conversion check on amd64.
    const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
    if value.fract() == 0.0 && (-TWO_POW_63..TWO_POW_63).contains(&value) {
        format!("{value}")
    } else {
        format!("{value:.8}")
    }
}

/// Serializes `value` with [`GoFormatter`] into a byte vector, without a trailing newline.
pub fn to_go_json<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_go_json(&mut out, value);
    out
}

/// Appends `value`, encoded with [`GoFormatter`], to `out`.
pub fn write_go_json<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let mut serializer = serde_json::Serializer::with_formatter(out, GoFormatter);
    // Writing into a Vec cannot fail, and every type serialized here has only string keys.
    value
        .serialize(&mut serializer)
        .expect("serializing to memory cannot fail");
}

/// Decodes bytes read from a TEXT column as Go does: each invalid UTF-8 byte becomes U+FFFD.
pub fn decode_text_lossy(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => {
            let mut out = String::with_capacity(bytes.len() + 8);
            let mut rest = bytes;
            loop {
                match std::str::from_utf8(rest) {
                    Ok(valid) => {
                        out.push_str(valid);
                        break;
                    }
                    Err(error) => {
                        let (valid, after) = rest.split_at(error.valid_up_to());
                        out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                        // One replacement per invalid byte, as Go's decoder steps one byte.
                        let invalid = error.error_len().unwrap_or(after.len()).max(1);
                        for _ in 0..invalid {
                            out.push('\u{fffd}');
                        }
                        rest = &after[invalid..];
                    }
                }
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_values_print_as_go_does() {
        let cases: &[(f64, &str)] = &[
            (970588160.0, "970588160"),
            (0.0, "0"),
            (-0.0, "-0"),
            (4_611_686_018_427_387_904.0, "4611686018427388000"),
            (133.0442607, "133.04426070"),
            (21.221493941, "21.22149394"),
            (53.4770154, "53.47701540"),
            (f64::NAN, "0"),
            (f64::INFINITY, "0"),
            (f64::NEG_INFINITY, "0"),
            (1e20, "100000000000000000000.00000000"),
            (-9_223_372_036_854_775_808.0, "-9223372036854776000"),
            (0.5, "0.50000000"),
        ];
        for (value, expected) in cases {
            assert_eq!(format_metric_value(*value), *expected, "value {value:e}");
        }
    }

    #[test]
    fn strings_are_escaped_as_go_does() {
        let text = "a<b>&c\u{2028}\u{2029}\t\u{1}\"\\/é";
        let json = String::from_utf8(to_go_json(text)).unwrap();
        assert_eq!(json, r#""a\u003cb\u003e\u0026c\u2028\u2029\t\u0001\"\\/é""#);
    }

    #[test]
    fn invalid_utf8_becomes_one_replacement_per_byte() {
        let decoded = decode_text_lossy(b"ok\xff\xfez");
        assert_eq!(decoded, "ok\u{fffd}\u{fffd}z");
        assert_eq!(
            String::from_utf8(to_go_json(&decoded)).unwrap(),
            r#""ok\ufffd\ufffdz""#
        );
        assert_eq!(decode_text_lossy("plain é".as_bytes()), "plain é");
    }
}
