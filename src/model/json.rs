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
        writer.write_all(MetricValueBuffer::default().format(value).as_bytes())
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
    let mut buffer = MetricValueBuffer::default();
    buffer.format(value).to_owned()
}

/// A stack buffer that [`format_metric_value`]'s text is written into without allocating,
/// for the common values: integers below 2^53 and non-integral values (all below 2^52).
/// Anything else takes the formatter of the standard library.
#[derive(Default)]
pub struct MetricValueBuffer {
    bytes: [u8; 32],
    other: String,
}

impl MetricValueBuffer {
    pub fn format(&mut self, value: f64) -> &str {
        if !value.is_finite() {
            return "0";
        }
        const TWO_POW_53: f64 = 9_007_199_254_740_992.0;
        // -2^63 <= v < 2^63, as Go's int64 conversion check on amd64.
        const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
        let end = self.bytes.len();
        if value.fract() == 0.0 {
            if value.abs() < TWO_POW_53 {
                // Below 2^53 every integer is a float: its digits are the shortest ones.
                let start = write_digits(&mut self.bytes, end, value.abs() as u64, 1);
                return self.finish(start, value.is_sign_negative());
            }
            self.other = if (-TWO_POW_63..TWO_POW_63).contains(&value) {
                format!("{value}")
            } else {
                format!("{value:.8}")
            };
            return &self.other;
        }
        let digits = eight_decimal_digits(value);
        // Below 2^52 × 10^8 / 10^8: both parts fit in u64.
        let (units, decimals) = (digits / 100_000_000, digits % 100_000_000);
        let start = write_digits(&mut self.bytes, end, decimals as u64, 8);
        self.bytes[start - 1] = b'.';
        let start = write_digits(&mut self.bytes, start - 1, units as u64, 1);
        self.finish(start, value.is_sign_negative())
    }

    fn finish(&mut self, mut start: usize, negative: bool) -> &str {
        if negative {
            start -= 1;
            self.bytes[start] = b'-';
        }
        std::str::from_utf8(&self.bytes[start..]).expect("ASCII digits")
    }
}

/// The digits of a finite, non-integral `value` printed with 8 decimals, as an integer:
/// `|value|` = m × 2^-shift exactly, with m < 2^53 and shift > 0 (it has a fraction), and
/// the digits are round(m × 10^8 / 2^shift), to nearest, ties to even, as `{:.8}` rounds
/// the exact binary value. Below 2^52 × 10^8.
fn eight_decimal_digits(value: f64) -> u128 {
    let bits = value.to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as i64;
    let fraction = bits & ((1 << 52) - 1);
    let (mantissa, shift) = if exponent == 0 {
        (fraction, 1074)
    } else {
        (fraction | (1 << 52), 1075 - exponent)
    };
    let scaled = u128::from(mantissa) * 100_000_000;
    if shift >= 128 {
        // scaled < 2^80, far below half of 2^shift.
        return 0;
    }
    let mut quotient = scaled >> shift;
    let remainder = scaled & ((1_u128 << shift) - 1);
    let half = 1_u128 << (shift - 1);
    if remainder > half || (remainder == half && quotient & 1 == 1) {
        quotient += 1;
    }
    quotient
}

/// The value that the text [`format_metric_value`] prints for `value` reads back as (a
/// correctly rounded parse; integers read as integers), without the text when that is
/// exact.
///
/// A non-finite value prints `0`, and `-0` reads back as the integer 0. Any other integral
/// value reads back as itself (below 2^63 its digits are the shortest that round-trip,
/// beyond it all of its digits). A non-integral value prints N/10^8 for an integer N; when
/// N < 2^53 both N and 10^8 are floats, and IEEE division rounds their exact quotient
/// correctly, as the parse of the text does. Larger N are read from the text.
pub fn stored_metric_value(value: f64) -> f64 {
    if !value.is_finite() || value == 0.0 {
        return 0.0;
    }
    if value.fract() == 0.0 {
        return value;
    }
    const TWO_POW_53: u128 = 1 << 53;
    let digits = eight_decimal_digits(value);
    if digits >= TWO_POW_53 {
        return format_metric_value(value)
            .parse()
            .expect("a metric value prints as a number");
    }
    let magnitude = digits as f64 / 100_000_000.0;
    if value.is_sign_negative() {
        -magnitude
    } else {
        magnitude
    }
}

/// Writes the decimal digits of `value`, at least `width` of them (zero-padded), so that
/// they end just before `end`; returns where they start.
fn write_digits(bytes: &mut [u8], end: usize, mut value: u64, width: usize) -> usize {
    let mut start = end;
    while value > 0 || end - start < width {
        start -= 1;
        bytes[start] = b'0' + (value % 10) as u8;
        value /= 10;
    }
    start
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

    /// The standard library's formatting, which the stack buffer must print identically.
    fn std_metric_value(value: f64) -> String {
        if !value.is_finite() {
            return "0".to_owned();
        }
        const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
        if value.fract() == 0.0 && (-TWO_POW_63..TWO_POW_63).contains(&value) {
            format!("{value}")
        } else {
            format!("{value:.8}")
        }
    }

    #[test]
    fn eight_decimal_ties_round_to_even_as_the_standard_library() {
        // j / 2^k for odd j has a 5 at the ninth decimal place and beyond when k >= 9:
        // the exact ties and their neighbours.
        for k in 9..40 {
            for j in (1_u64..2000).step_by(2) {
                let value = j as f64 / (1_u64 << k) as f64;
                for value in [value, -value, value + 1e6, value * 3.0] {
                    assert_eq!(
                        format_metric_value(value),
                        std_metric_value(value),
                        "{value:e}"
                    );
                }
            }
        }
        for value in [
            f64::MIN_POSITIVE,
            5e-324,
            -5e-324,
            4.999999995e-9,
            0.1,
            1e15 + 0.5,
        ] {
            assert_eq!(
                format_metric_value(value),
                std_metric_value(value),
                "{value:e}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn any_float_prints_as_the_standard_library(bits in proptest::num::u64::ANY) {
            let value = f64::from_bits(bits);
            proptest::prop_assert_eq!(format_metric_value(value), std_metric_value(value));
        }

        #[test]
        fn metric_sized_floats_print_as_the_standard_library(value in -1e13_f64..1e13) {
            proptest::prop_assert_eq!(format_metric_value(value), std_metric_value(value));
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
