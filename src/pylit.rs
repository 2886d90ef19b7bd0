//! A bounded parser for the small subset of Python literals that `.npy` headers use.
//!
//! numpy writes headers with `repr()` and reads them with `ast.literal_eval`. We accept what numpy
//! accepts in practice: dicts, lists, tuples, `'`/`"` strings (optionally `u`/`b` prefixed), ints
//! (with the Python 2 `L` suffix), `True`/`False`/`None`, and any whitespace. Nesting depth and
//! integer size are bounded so hostile headers produce errors, never stack overflows.

use crate::error::{Error, Result};

/// Most brackets (`{`, `[`, `(`) open at once: 200, the limit of Python's own parser, so any
/// header `numpy.load` (`ast.literal_eval`) reads is accepted and anything deeper is an error,
/// never a stack overflow.
pub const MAX_NESTING: usize = 200;

/// A parsed Python literal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// A string literal (bytes literals are decoded as latin-1).
    Str(String),
    /// An integer literal; magnitudes beyond i128 are rejected while parsing.
    Int(i128),
    /// `True` or `False`.
    Bool(bool),
    /// `None`.
    None,
    /// A tuple `( ... )`.
    Tuple(Vec<Value>),
    /// A list `[ ... ]`.
    List(Vec<Value>),
    /// A dict `{ key: value, ... }`, in source order.
    Dict(Vec<(Value, Value)>),
}

/// Parses `text` as exactly one literal (surrounding whitespace allowed).
pub fn parse(text: &str) -> Result<Value> {
    let mut p = Parser {
        chars: text.chars().collect(),
        pos: 0,
    };
    let v = p.value(0)?;
    p.skip_ws();
    if p.pos != p.chars.len() {
        return Err(p.error("unexpected text after the literal"));
    }
    Ok(v)
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

impl Parser {
    fn error(&self, what: &str) -> Error {
        Error::format(format!(
            "bad .npy header literal at character {}: {what}",
            self.pos
        ))
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(c) if c.is_whitespace()) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// One literal inside `depth` open brackets.
    fn value(&mut self, depth: usize) -> Result<Value> {
        self.skip_ws();
        if matches!(self.peek(), Some('{' | '[' | '(')) && depth >= MAX_NESTING {
            return Err(self.error(&format!(
                "more than {MAX_NESTING} nested brackets (Python's limit)"
            )));
        }
        match self.peek() {
            None => Err(self.error("unexpected end")),
            Some('{') => {
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    if self.eat('}') {
                        break;
                    }
                    let k = self.value(depth + 1)?;
                    if !self.eat(':') {
                        return Err(self.error("expected ':'"));
                    }
                    let v = self.value(depth + 1)?;
                    items.push((k, v));
                    if self.eat(',') {
                        continue;
                    }
                    if self.eat('}') {
                        break;
                    }
                    return Err(self.error("expected ',' or '}'"));
                }
                Ok(Value::Dict(items))
            }
            Some('[') => {
                self.pos += 1;
                let (items, _) = self.sequence(']', depth)?;
                Ok(Value::List(items))
            }
            Some('(') => {
                self.pos += 1;
                let (items, trailing_comma) = self.sequence(')', depth)?;
                // `(x)` is just x; `(x,)` and `()` are tuples.
                if items.len() == 1 && !trailing_comma {
                    Ok(items.into_iter().next().expect("one item"))
                } else {
                    Ok(Value::Tuple(items))
                }
            }
            Some('\'') | Some('"') => self.string(false),
            Some(c)
                if (c == 'u' || c == 'U' || c == 'b' || c == 'B')
                    && matches!(self.chars.get(self.pos + 1), Some('\'') | Some('"')) =>
            {
                self.pos += 1;
                self.string(c == 'b' || c == 'B')
            }
            Some(c) if c.is_ascii_digit() || c == '-' || c == '+' => self.int(),
            Some(c) if c.is_ascii_alphabetic() => {
                let start = self.pos;
                while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == '_') {
                    self.pos += 1;
                }
                let word: String = self.chars[start..self.pos].iter().collect();
                match word.as_str() {
                    "True" => Ok(Value::Bool(true)),
                    "False" => Ok(Value::Bool(false)),
                    "None" => Ok(Value::None),
                    _ => {
                        self.pos = start;
                        Err(self.error(&format!("unexpected name {word:?}")))
                    }
                }
            }
            Some(c) => Err(self.error(&format!("unexpected character {c:?}"))),
        }
    }

    /// Items up to `close`; returns them and whether the last item was followed by a comma.
    fn sequence(&mut self, close: char, depth: usize) -> Result<(Vec<Value>, bool)> {
        let mut items = Vec::new();
        let mut trailing_comma = false;
        loop {
            if self.eat(close) {
                return Ok((items, trailing_comma));
            }
            items.push(self.value(depth + 1)?);
            trailing_comma = false;
            if self.eat(',') {
                trailing_comma = true;
                continue;
            }
            if self.eat(close) {
                return Ok((items, trailing_comma));
            }
            return Err(self.error(&format!("expected ',' or {close:?}")));
        }
    }

    fn int(&mut self) -> Result<Value> {
        let mut negative = false;
        if matches!(self.peek(), Some('-') | Some('+')) {
            negative = self.peek() == Some('-');
            self.pos += 1;
            self.skip_ws();
        }
        let start = self.pos;
        let mut n: i128 = 0;
        while let Some(d) = self.peek().and_then(|c| c.to_digit(10)) {
            n = n
                .checked_mul(10)
                .and_then(|n| n.checked_add(i128::from(d)))
                .ok_or_else(|| Error::overflow("integer in .npy header is too large"))?;
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.error("expected digits"));
        }
        // Python 2 long suffix, e.g. `(3L,)`: numpy strips it with a warning.
        if matches!(self.peek(), Some('L') | Some('l')) {
            self.pos += 1;
        }
        Ok(Value::Int(if negative { -n } else { n }))
    }

    fn string(&mut self, bytes: bool) -> Result<Value> {
        let quote = self.peek().expect("caller saw a quote");
        self.pos += 1;
        let mut out = String::new();
        loop {
            let c = self
                .peek()
                .ok_or_else(|| self.error("unterminated string"))?;
            self.pos += 1;
            if c == quote {
                break;
            }
            if c == '\n' {
                return Err(self.error("newline in string"));
            }
            if c != '\\' {
                if bytes && (c as u32) > 0x7f {
                    return Err(self.error("non-ASCII character in bytes literal"));
                }
                out.push(c);
                continue;
            }
            let e = self
                .peek()
                .ok_or_else(|| self.error("unterminated escape"))?;
            self.pos += 1;
            match e {
                '\\' | '\'' | '"' => out.push(e),
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                '0'..='7' => {
                    let mut v = e.to_digit(8).expect("octal digit");
                    for _ in 0..2 {
                        match self.peek().and_then(|c| c.to_digit(8)) {
                            Some(d) => {
                                v = v * 8 + d;
                                self.pos += 1;
                            }
                            None => break,
                        }
                    }
                    out.push(char::from_u32(v).ok_or_else(|| self.error("bad octal escape"))?);
                }
                'x' => out.push(self.hex_escape(2)?),
                'u' if !bytes => out.push(self.hex_escape(4)?),
                'U' if !bytes => out.push(self.hex_escape(8)?),
                _ => {
                    out.push('\\');
                    out.push(e);
                }
            }
        }
        Ok(Value::Str(out))
    }

    fn hex_escape(&mut self, digits: usize) -> Result<char> {
        let mut v: u32 = 0;
        for _ in 0..digits {
            let d = self
                .peek()
                .and_then(|c| c.to_digit(16))
                .ok_or_else(|| self.error("bad hex escape"))?;
            v = v * 16 + d;
            self.pos += 1;
        }
        char::from_u32(v).ok_or_else(|| self.error("escape is not a character"))
    }
}

/// Python's `repr()` of a str, as numpy writes names and descrs into headers.
///
/// Single quotes unless the text has a `'` and no `"`; `\\`, the quote, `\t`, `\n`, `\r` escaped;
/// control characters and the non-printable Latin-1 range as `\xNN`. Characters beyond Latin-1 are
/// written as themselves (Python prints every letter it considers printable the same way).
pub fn repr_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || (0x7f..=0xa0).contains(&(c as u32)) || c == '\u{ad}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Python's `repr()` of a tuple of non-negative ints: `()`, `(3,)`, `(2, 3)`.
pub fn repr_shape(shape: &[u64]) -> String {
    match shape {
        [] => "()".to_string(),
        [one] => format!("({one},)"),
        _ => {
            let parts: Vec<String> = shape.iter().map(u64::to_string).collect();
            format!("({})", parts.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_numpy_header_dict() {
        let v = parse("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }   ").unwrap();
        let Value::Dict(items) = v else { panic!() };
        assert_eq!(items.len(), 3);
        assert_eq!(items[2].1, Value::Tuple(vec![Value::Int(2), Value::Int(3)]));
    }

    #[test]
    fn parenthesised_value_is_not_a_tuple() {
        assert_eq!(parse("(3)").unwrap(), Value::Int(3));
        assert_eq!(parse("(3,)").unwrap(), Value::Tuple(vec![Value::Int(3)]));
        assert_eq!(parse("()").unwrap(), Value::Tuple(vec![]));
    }

    #[test]
    fn python2_long_and_double_quotes() {
        assert_eq!(
            parse("(3L, 4L)").unwrap(),
            Value::Tuple(vec![Value::Int(3), Value::Int(4)])
        );
        assert_eq!(parse("\"a'b\"").unwrap(), Value::Str("a'b".into()));
        assert_eq!(parse("u'x'").unwrap(), Value::Str("x".into()));
    }

    #[test]
    fn rejects_garbage_and_deep_nesting() {
        assert!(parse("{'a': }").is_err());
        assert!(parse("[1, 2").is_err());
        assert!(parse("__import__('os')").is_err());
        assert!(parse(&"[".repeat(1000)).is_err());
        // Python's parser takes 200 nested brackets and refuses 201; so do we.
        let nested = |n: usize| format!("{}1{}", "[(".repeat(n / 2), ",)]".repeat(n / 2));
        assert!(parse(&nested(200)).is_ok());
        let err = parse(&nested(202)).unwrap_err();
        assert!(err.message().contains("200 nested"), "{}", err.message());
        assert!(parse(&format!("{}{}", "(".repeat(201), ")".repeat(201))).is_err());
        assert!(parse(&format!("{}1{}", "(".repeat(200), ")".repeat(200))).is_ok());
        assert!(parse("99999999999999999999999999999999999999999999").is_err());
        assert!(parse("{} x").is_err());
    }

    #[test]
    fn repr_matches_python() {
        assert_eq!(repr_str("a"), "'a'");
        assert_eq!(repr_str("it's"), "\"it's\"");
        assert_eq!(repr_str("a'\"b"), "'a\\'\"b'");
        assert_eq!(repr_str("\u{1}\u{e9}\\"), "'\\x01\u{e9}\\\\'");
        assert_eq!(repr_shape(&[]), "()");
        assert_eq!(repr_shape(&[5]), "(5,)");
        assert_eq!(repr_shape(&[2, 3]), "(2, 3)");
    }
}
