//! A reader of the JSON objects this server writes itself: `{"key":number,...}` with no
//! whitespace, no escapes and keys in ascending order (the stored metric maps), and one
//! level of such objects under ascending keys (the usage buckets' sums). It borrows keys
//! from the text and allocates nothing; on anything else it gives up (`None`) and the
//! caller reads the text with serde_json. Both read the same keys and integers; reals are
//! parsed correctly rounded here, where serde_json may be one unit in the last place off.
//! It also tells whether a stored text is already exactly what this server's encoders
//! give, so that the unit list can answer it as it is.

use crate::model::values::is_plain_key_byte;

/// A JSON number as `json_extract` returns it: an integer when written without a fraction
/// or exponent and within int64, a real otherwise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    Int(i64),
    Real(f64),
}

struct Cursor<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    /// A string without escapes or control characters.
    fn key(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.at;
        let length = self.text.as_bytes()[start..]
            .iter()
            .position(|&byte| byte == b'"' || byte == b'\\' || byte < 0x20)?;
        self.at = start + length;
        self.eat(b'"')?;
        Some(&self.text[start..start + length])
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while self.peek().is_some_and(|byte| byte.is_ascii_digit()) {
            self.at += 1;
        }
        self.at - start
    }

    /// A number in JSON's grammar.
    fn number(&mut self) -> Option<Number> {
        let start = self.at;
        let _ = self.eat(b'-');
        let first = self.peek()?;
        let integral = self.digits();
        if integral == 0 || (first == b'0' && integral > 1) {
            return None;
        }
        let mut real = false;
        if self.eat(b'.').is_some() {
            real = true;
            if self.digits() == 0 {
                return None;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            real = true;
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        let text = &self.text[start..self.at];
        if !real {
            if let Ok(value) = text.parse::<i64>() {
                return Some(Number::Int(value));
            }
        }
        text.parse::<f64>().ok().map(Number::Real)
    }

    /// `{"key":value,...}` with strictly ascending keys, each value read by `value`.
    fn object<T>(
        &mut self,
        mut value: impl FnMut(&mut Self) -> Option<T>,
    ) -> Option<Vec<(&'a str, T)>> {
        self.eat(b'{')?;
        let mut entries: Vec<(&'a str, T)> = Vec::new();
        if self.eat(b'}').is_some() {
            return Some(entries);
        }
        loop {
            let key = self.key()?;
            if entries.last().is_some_and(|(last, _)| *last >= key) {
                return None;
            }
            self.eat(b':')?;
            entries.push((key, value(self)?));
            if self.eat(b'}').is_some() {
                return Some(entries);
            }
            self.eat(b',')?;
        }
    }

    /// `{"key":value,...}` as this server encodes objects: keys of plain bytes (nothing
    /// Go's encoder escapes) in strictly ascending order, each value checked by `value`.
    fn encoded_object(&mut self, mut value: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        if self.eat(b'}').is_some() {
            return Some(());
        }
        let mut last: Option<&str> = None;
        loop {
            let key = self.key()?;
            if !key.bytes().all(is_plain_key_byte) || last.is_some_and(|last| last >= key) {
                return None;
            }
            last = Some(key);
            self.eat(b':')?;
            value(self)?;
            if self.eat(b'}').is_some() {
                return Some(());
            }
            self.eat(b',')?;
        }
    }

    /// The integral part of a number without a leading zero: whether it is negative,
    /// whether it is `0`, and its number of digits.
    fn integral_part(&mut self) -> Option<(bool, bool, usize)> {
        let negative = self.eat(b'-').is_some();
        let first = self.peek()?;
        let digits = self.digits();
        (digits > 0 && (first != b'0' || digits == 1)).then_some((negative, first == b'0', digits))
    }

    /// An integer as Rust prints an `i64` (no `-0`), of at most 18 digits.
    fn printed_integer(&mut self) -> Option<()> {
        let (negative, zero, digits) = self.integral_part()?;
        (digits <= 18 && !(negative && zero)).then_some(())
    }

    /// A metric value as [`MetricMap::encode`](crate::model::MetricMap::encode) prints
    /// it: an integer below 10^15 (exact in a float; not `-0`), or a non-integral value
    /// with exactly 8 decimals below 10^6. Below 10^6 a unit in the last place of a
    /// float is under 2^-33, far inside the 5 × 10^-9 between the text and the nearest
    /// rounding boundary, so the value any parse reads back prints the same text.
    fn encoded_metric_value(&mut self) -> Option<()> {
        let (negative, zero, digits) = self.integral_part()?;
        if self.eat(b'.').is_none() {
            return (digits <= 15 && !(negative && zero)).then_some(());
        }
        let start = self.at;
        let decimals = self.digits();
        let fraction = &self.text.as_bytes()[start..self.at];
        (digits <= 6 && decimals == 8 && fraction.iter().any(|&digit| digit != b'0')).then_some(())
    }
}

/// Whether `text` is exactly what [`MetricMap::encode`](crate::model::MetricMap::encode)
/// gives for the map [`MetricMap::decode`](crate::model::MetricMap::decode) reads from
/// it, so that it can be answered as it is. Conservative: `false` says nothing.
pub fn is_encoded_metric_map(text: &str) -> bool {
    let mut cursor = Cursor { text, at: 0 };
    cursor
        .encoded_object(Cursor::encoded_metric_value)
        .is_some()
        && cursor.at == text.len()
}

/// Whether `text` is an object of integers exactly as
/// [`Generic::decode`](crate::model::Generic::decode) keeps it (sorted plain keys,
/// integers re-printed as int64), so that it can be kept as it is. Conservative.
pub fn is_encoded_integer_object(text: &str) -> bool {
    let mut cursor = Cursor { text, at: 0 };
    cursor.encoded_object(Cursor::printed_integer).is_some() && cursor.at == text.len()
}

/// The entries of one `{"key":number,...}` object, keys borrowed from the text.
pub type Numbers<'a> = Vec<(&'a str, Number)>;

/// The entries of `{"key":number,...}`, or `None` when `text` is not in that form.
pub fn numbers(text: &str) -> Option<Numbers<'_>> {
    let mut cursor = Cursor { text, at: 0 };
    let entries = cursor.object(Cursor::number)?;
    (cursor.at == text.len()).then_some(entries)
}

/// The entries of `{"name":{"key":number,...},...}`, or `None` when `text` is not in that
/// form.
pub fn nested_numbers(text: &str) -> Option<Vec<(&str, Numbers<'_>)>> {
    let mut cursor = Cursor { text, at: 0 };
    let entries = cursor.object(|inner| inner.object(Cursor::number))?;
    (cursor.at == text.len()).then_some(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_written_form() {
        assert_eq!(
            numbers(r#"{"a":1,"b":-2.5,"c":1e3,"d":9223372036854775808,"e":-0}"#),
            Some(vec![
                ("a", Number::Int(1)),
                ("b", Number::Real(-2.5)),
                ("c", Number::Real(1000.0)),
                ("d", Number::Real(9_223_372_036_854_775_808.0)),
                ("e", Number::Int(0)),
            ])
        );
        assert_eq!(numbers("{}"), Some(vec![]));
        assert_eq!(
            nested_numbers(r#"{"m":{"x":0.12345678},"n":{}}"#),
            Some(vec![
                ("m", vec![("x", Number::Real(0.12345678))]),
                ("n", vec![])
            ])
        );
    }

    #[test]
    fn gives_up_on_anything_else() {
        for text in [
            r#"{"a":1 }"#,
            r#"{ "a":1}"#,
            r#"{"b":1,"a":2}"#,
            r#"{"a":1,"a":2}"#,
            r#"{"a\"":1}"#,
            r#"{"a":"1"}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":.5}"#,
            r#"{"a":1e}"#,
            r#"{"a":null}"#,
            r#"{"a":true}"#,
            r#"{"a":{"b":1}}"#,
            r#"{"a":1}x"#,
            r#"{"a":1,}"#,
            "{\"a\u{1}\":1}",
            "[1]",
            "",
        ] {
            assert_eq!(numbers(text), None, "{text}");
        }
        assert_eq!(nested_numbers(r#"{"m":{"x":1},"m":{"y":2}}"#), None);
        assert_eq!(nested_numbers(r#"{"m":1}"#), None);
    }

    use crate::model::{Generic, MetricMap};

    #[test]
    fn encoded_forms_are_told_apart_from_the_rest() {
        for text in [
            "{}",
            r#"{"a":0}"#,
            r#"{"a":-5,"b":999999999999999}"#,
            r#"{"a":0.00000001,"b":-0.50000000,"c":999999.99999999}"#,
            r#"{" ~":1,"A":2,"a":3}"#,
        ] {
            assert!(is_encoded_metric_map(text), "{text}");
            assert_eq!(MetricMap::decode(text).unwrap().encode(), text);
        }
        for text in [
            r#"{"a":-0}"#,
            r#"{"a":01}"#,
            r#"{"a":1000000000000000}"#,
            r#"{"a":1.5}"#,
            r#"{"a":1.00000000}"#,
            r#"{"a":-0.00000000}"#,
            r#"{"a":1234567.12345678}"#,
            r#"{"a":0.123456789}"#,
            r#"{"a":1e3}"#,
            r#"{"a":null}"#,
            r#"{"a":"NaN"}"#,
            r#"{"b":1,"a":2}"#,
            r#"{"a":1,"a":2}"#,
            r#"{"a<":1}"#,
            r#"{"\u0061":1}"#,
            "{\"\u{e9}\":1}",
            r#"{ "a":1}"#,
            r#"{"a":1}x"#,
            "null",
            "",
        ] {
            assert!(!is_encoded_metric_map(text), "{text}");
        }
        assert!(is_encoded_integer_object(
            r#"{"cpus":2,"mem":-9223372036854775}"#
        ));
        for text in [r#"{"a":1.5}"#, r#"{"a":-0}"#, r#"{"a":"x"}"#, r#"{"a":{}}"#] {
            assert!(!is_encoded_integer_object(text), "{text}");
        }
    }

    /// Metric values as the updaters produce them: integral counters and fractions.
    fn metric_value() -> impl proptest::strategy::Strategy<Value = f64> {
        use proptest::prelude::*;
        prop_oneof![
            (-1e15_f64..1e15).prop_map(f64::trunc),
            -1e6_f64..1e6,
            proptest::num::f64::ANY,
        ]
    }

    /// Texts near the encoded form: numbers of every length with and without fractions,
    /// keys that need escapes, in any order.
    fn near_encoded_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let number = "-?(0|[1-9][0-9]{0,16}|0[0-9])(\\.[0-9]{0,10})?";
        proptest::collection::vec(("[ab<é]{0,2}", number), 0..4).prop_map(|entries| {
            let body: Vec<String> = entries
                .iter()
                .map(|(key, number)| format!("\"{key}\":{number}"))
                .collect();
            format!("{{{}}}", body.join(","))
        })
    }

    proptest::proptest! {
        /// What the encoder writes for usual values is recognised, and what is recognised
        /// is what decoding and encoding it again gives (decoding with serde_json, as the
        /// listing's fallback does).
        #[test]
        fn encoded_metric_maps_are_recognised_exactly(
            entries in proptest::collection::btree_map("[a-z_<]{0,6}", metric_value(), 0..6),
            near in near_encoded_text(),
        ) {
            let text = MetricMap(entries.clone()).encode();
            // Integers below 10^15 (not -0) and fractions printed with a non-zero digit.
            let usual = entries.iter().all(|(key, value)| {
                let integer = value.fract() == 0.0
                    && value.abs() < 1e15
                    && !(*value == 0.0 && value.is_sign_negative());
                !key.contains('<') && (integer || (1e-8..999_999.0).contains(&value.abs()))
            });
            if usual {
                proptest::prop_assert!(is_encoded_metric_map(&text), "{}", text);
            }
            for text in [text, near] {
                if is_encoded_metric_map(&text) {
                    proptest::prop_assert_eq!(&MetricMap::decode(&text).unwrap().encode(), &text);
                }
            }
        }

        /// Objects of integers (allocations) as `Generic::decode` keeps them are
        /// recognised, and what is recognised is kept as it is by decoding too.
        #[test]
        fn encoded_integer_objects_are_recognised_exactly(
            entries in proptest::collection::btree_map("[a-z_]{1,6}", proptest::num::i64::ANY, 0..6),
            near in near_encoded_text(),
        ) {
            let text = serde_json::to_string(&entries).unwrap();
            let short = entries.values().all(|value| value.unsigned_abs() < 10_u64.pow(18));
            if short {
                proptest::prop_assert!(is_encoded_integer_object(&text), "{}", text);
            }
            for text in [text, near] {
                if is_encoded_integer_object(&text) {
                    let kept = Generic::decode(&text).unwrap();
                    proptest::prop_assert_eq!(kept.as_json(), text.as_str());
                }
            }
        }
    }

    proptest::proptest! {
        /// It reads back exactly what serde_json wrote (floats are parsed correctly
        /// rounded, as Rust's `str::parse`), and the same entries serde_json reads.
        #[test]
        fn reads_back_what_was_written(
            reals in proptest::collection::btree_map("[a-z_]{1,12}", proptest::num::f64::NORMAL, 0..8),
            integers in proptest::collection::btree_map("[a-z_]{1,12}", proptest::num::i64::ANY, 0..8),
        ) {
            let text = serde_json::to_string(&reals).unwrap();
            let read = numbers(&text).unwrap();
            let expected: Vec<(&str, Number)> =
                reals.iter().map(|(key, value)| (key.as_str(), Number::Real(*value))).collect();
            proptest::prop_assert_eq!(read, expected);
            let text = serde_json::to_string(&integers).unwrap();
            let read = numbers(&text).unwrap();
            let expected: Vec<(&str, Number)> =
                integers.iter().map(|(key, value)| (key.as_str(), Number::Int(*value))).collect();
            proptest::prop_assert_eq!(read, expected);
        }
    }
}
