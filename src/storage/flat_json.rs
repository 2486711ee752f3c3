//! A reader of the JSON objects this server writes itself: `{"key":number,...}` with no
//! whitespace, no escapes and keys in ascending order (the stored metric maps), and one
//! level of such objects under ascending keys (the usage buckets' sums). It borrows keys
//! from the text and allocates nothing; on anything else it gives up (`None`) and the
//! caller reads the text with serde_json. Both read the same keys and integers; reals are
//! parsed correctly rounded here, where serde_json may be one unit in the last place off.

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
