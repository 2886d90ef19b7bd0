//! numpy dtype descriptions ("descr"): parsing, itemsize, canonical text, and numpy-identical repr.
//!
//! A descr is either a simple type string (`'<f4'`, `'|S5'`, `'<M8[ns]'`) or a record: a list of
//! `(name, descr[, shape])` tuples, where name may be `(title, name)`. A top-level
//! `(descr, shape)` tuple is a sub-array dtype, which numpy folds into the array's shape.

use crate::dtype::{Dtype, NATIVE_ORDER};
use crate::error::{Error, Result};
use crate::pylit::{self, Value};

/// A parsed numpy descr.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Descr {
    /// A simple type such as `<f4`, `|S5`, `>U3`, `<M8[ns]`.
    Simple(SimpleDescr),
    /// A structured (record) type; padding fields have an empty name.
    Record(Vec<Field>),
}

/// A simple (non-record) type in canonical numpy `dtype.str` spelling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimpleDescr {
    text: String,
    itemsize: usize,
    numeric: Option<Dtype>,
}

/// One field of a record descr.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    /// Optional title (numpy's `(title, name)` form).
    pub title: Option<String>,
    /// Field name; empty for padding.
    pub name: String,
    /// The field's element type.
    pub dtype: Descr,
    /// Sub-array shape of the field; empty for scalars.
    pub shape: Vec<u64>,
}

/// A descr with any top-level sub-array dimensions split off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArrayType {
    /// The element type.
    pub descr: Descr,
    /// Dimensions to append to the array's shape (numpy folds sub-array dtypes this way).
    pub sub_shape: Vec<u64>,
}

impl Descr {
    /// Bytes per element. Checked: records whose size overflows are rejected while parsing.
    pub fn itemsize(&self) -> usize {
        match self {
            Descr::Simple(s) => s.itemsize,
            // Sizes were checked in `record_from_value`; this sum cannot overflow.
            Descr::Record(fields) => fields
                .iter()
                .fold(0usize, |acc, f| acc.saturating_add(f.itemsize_unchecked())),
        }
    }

    /// The numeric dtype code, when this is a native-order numeric type.
    pub fn numeric(&self) -> Option<Dtype> {
        match self {
            Descr::Simple(s) => s.numeric,
            Descr::Record(_) => None,
        }
    }

    /// The descr as a string: the type string itself for simple types (`<f4`), the Python
    /// list literal for records (`[('a', '<i4')]`), as numpy's `repr(dtype.descr)` prints it.
    pub fn to_descr_string(&self) -> String {
        match self {
            Descr::Simple(s) => s.text.clone(),
            Descr::Record(_) => self.repr(),
        }
    }

    /// Python's `repr()` of numpy's `dtype_to_descr(dtype)`: the text that goes into a header.
    pub fn repr(&self) -> String {
        match self {
            Descr::Simple(s) => pylit::repr_str(&s.text),
            Descr::Record(fields) => {
                let parts: Vec<String> = fields.iter().map(Field::repr).collect();
                format!("[{}]", parts.join(", "))
            }
        }
    }

    /// True if any part of the type is stored in non-native byte order.
    pub fn has_foreign_order(&self) -> bool {
        match self {
            Descr::Simple(s) => s.text.starts_with(foreign_order()),
            Descr::Record(fields) => fields.iter().any(|f| f.dtype.has_foreign_order()),
        }
    }
}

impl Descr {
    /// Appends the byte-swap units of one element: `(offset, width)` for every scalar stored in
    /// non-native order (complex numbers swap each half; `U` each 4-byte character).
    pub fn swap_units(&self, base: usize, out: &mut Vec<(usize, usize)>) {
        match self {
            Descr::Simple(s) => {
                if !s.text.starts_with(foreign_order()) {
                    return;
                }
                let kind = s.text.chars().nth(1).unwrap_or('V');
                let width = match kind {
                    'c' => s.itemsize / 2,
                    'U' => 4,
                    _ => s.itemsize,
                };
                if width > 1 {
                    let mut off = 0;
                    while off + width <= s.itemsize {
                        out.push((base + off, width));
                        off += width;
                    }
                }
            }
            Descr::Record(fields) => {
                let mut off = base;
                for f in fields {
                    let count = f
                        .shape
                        .iter()
                        .fold(1usize, |a, &d| a.saturating_mul(d as usize));
                    let size = f.dtype.itemsize();
                    for k in 0..count {
                        f.dtype.swap_units(off + k * size, out);
                    }
                    off += f.itemsize_unchecked();
                }
            }
        }
    }

    /// The same type in native byte order (what `native_endian` restores produce).
    pub fn to_native(&self) -> Descr {
        match self {
            Descr::Simple(s) if s.text.starts_with(foreign_order()) => {
                let native = format!("{NATIVE_ORDER}{}", &s.text[1..]);
                parse_simple(&native)
                    .map(Descr::Simple)
                    .unwrap_or_else(|_| self.clone())
            }
            Descr::Simple(_) => self.clone(),
            Descr::Record(fields) => Descr::Record(
                fields
                    .iter()
                    .map(|f| Field {
                        dtype: f.dtype.to_native(),
                        ..f.clone()
                    })
                    .collect(),
            ),
        }
    }
}

fn foreign_order() -> char {
    if NATIVE_ORDER == '<' {
        '>'
    } else {
        '<'
    }
}

impl SimpleDescr {
    /// The canonical type string, e.g. `<f4`.
    pub fn text(&self) -> &str {
        &self.text
    }
}

impl Field {
    fn itemsize_unchecked(&self) -> usize {
        self.shape.iter().fold(self.dtype.itemsize(), |acc, &d| {
            acc.saturating_mul(usize::try_from(d).unwrap_or(usize::MAX))
        })
    }

    fn repr(&self) -> String {
        let name = match &self.title {
            Some(t) => format!("({}, {})", pylit::repr_str(t), pylit::repr_str(&self.name)),
            None => pylit::repr_str(&self.name),
        };
        if self.shape.is_empty() {
            format!("({name}, {})", self.dtype.repr())
        } else {
            format!(
                "({name}, {}, {})",
                self.dtype.repr(),
                pylit::repr_shape(&self.shape)
            )
        }
    }
}

/// Parses a descr given as text by a caller: a bare type string (`<f8`), a quoted one, a record
/// list literal, or a `(descr, shape)` sub-array tuple.
pub fn parse_descr_text(text: &str) -> Result<ArrayType> {
    let t = text.trim();
    if t.starts_with(['[', '(', '\'', '"']) {
        array_type_from_value(&pylit::parse(t)?)
    } else {
        Ok(ArrayType {
            descr: Descr::Simple(parse_simple(t)?),
            sub_shape: Vec::new(),
        })
    }
}

/// Interprets the `descr` value of a parsed `.npy` header.
pub fn array_type_from_value(v: &Value) -> Result<ArrayType> {
    array_type_at(v, 0)
}

/// [`array_type_from_value`] for a descr nested in `depth` records.
fn array_type_at(v: &Value, depth: usize) -> Result<ArrayType> {
    match v {
        Value::Str(s) => Ok(ArrayType {
            descr: Descr::Simple(parse_simple(s)?),
            sub_shape: Vec::new(),
        }),
        Value::List(items) => Ok(ArrayType {
            descr: record_from_items(items, depth)?,
            sub_shape: Vec::new(),
        }),
        Value::Tuple(items) if items.len() == 2 => {
            let inner = array_type_at(&items[0], depth)?;
            let mut sub_shape = shape_from_value(&items[1])?;
            sub_shape.extend_from_slice(&inner.sub_shape);
            Ok(ArrayType {
                descr: inner.descr,
                sub_shape,
            })
        }
        other => Err(Error::format(format!(
            "descr is not a dtype description: {other:?}"
        ))),
    }
}

/// Most records nested in one another that a descr may hold: 99, the most `numpy.load` reads
/// back. numpy writes deeper ones, but their header (`{'descr': [('f', [('f', ...` opens one
/// bracket for the dict and two per record) passes Python's limit of 200 nested brackets, so
/// `ast.literal_eval` refuses it. The literal parser stops at that same limit
/// ([`pylit::MAX_NESTING`]).
pub const MAX_RECORD_NESTING: usize = (pylit::MAX_NESTING - 1) / 2;

/// A record's fields; `depth` records enclose it.
fn record_from_items(items: &[Value], depth: usize) -> Result<Descr> {
    if depth >= MAX_RECORD_NESTING {
        return Err(Error::format(format!(
            "record descr nests more than {MAX_RECORD_NESTING} records deep"
        )));
    }
    let mut fields = Vec::with_capacity(items.len());
    let mut total: usize = 0;
    for item in items {
        let Value::Tuple(parts) = item else {
            return Err(Error::format(format!(
                "record field is not a tuple: {item:?}"
            )));
        };
        if parts.len() != 2 && parts.len() != 3 {
            return Err(Error::format(
                "record field must be (name, descr) or (name, descr, shape)",
            ));
        }
        let (title, name) = match &parts[0] {
            Value::Str(n) => (None, n.clone()),
            Value::Tuple(tn) if tn.len() == 2 => match (&tn[0], &tn[1]) {
                (Value::Str(t), Value::Str(n)) => (Some(t.clone()), n.clone()),
                _ => return Err(Error::format("record field title and name must be strings")),
            },
            other => return Err(Error::format(format!("bad record field name {other:?}"))),
        };
        let (dtype, mut shape) = match &parts[1] {
            Value::List(sub) => (record_from_items(sub, depth + 1)?, Vec::new()),
            other => {
                let at = array_type_at(other, depth + 1)?;
                (at.descr, at.sub_shape)
            }
        };
        if parts.len() == 3 {
            let mut outer = shape_from_value(&parts[2])?;
            outer.extend_from_slice(&shape);
            shape = outer;
        }
        let size = shape
            .iter()
            .try_fold(dtype.itemsize(), |acc, &d| {
                acc.checked_mul(usize::try_from(d).ok()?)
            })
            .ok_or_else(|| Error::overflow(format!("record field {name:?} is too large")))?;
        total = total
            .checked_add(size)
            .filter(|&t| t <= isize::MAX as usize)
            .ok_or_else(|| Error::overflow("record itemsize overflows"))?;
        fields.push(Field {
            title,
            name,
            dtype,
            shape,
        });
    }
    Ok(Descr::Record(fields))
}

/// A shape literal: a tuple of non-negative ints, or a bare int (a 1-d sub-array shape).
pub fn shape_from_value(v: &Value) -> Result<Vec<u64>> {
    let items: &[Value] = match v {
        Value::Tuple(items) => items,
        Value::Int(_) => std::slice::from_ref(v),
        other => {
            return Err(Error::format(format!(
                "shape is not a tuple of ints: {other:?}"
            )))
        }
    };
    items
        .iter()
        .map(|d| match d {
            Value::Int(n) if *n < 0 => {
                Err(Error::overflow(format!("negative dimension {n} in shape")))
            }
            Value::Int(n) => u64::try_from(*n)
                .map_err(|_| Error::overflow(format!("dimension {n} is too large"))),
            other => Err(Error::format(format!(
                "shape holds a non-integer: {other:?}"
            ))),
        })
        .collect()
}

/// Parses a simple type string into numpy's canonical `dtype.str` spelling.
pub fn parse_simple(s: &str) -> Result<SimpleDescr> {
    let bad = || Error::format(format!("unsupported or malformed dtype descr {s:?}"));
    let mut chars = s.chars().peekable();
    let order = match chars.peek() {
        Some(&c @ ('<' | '>' | '|' | '=')) => {
            chars.next();
            Some(c)
        }
        _ => None,
    };
    let kind = chars.next().ok_or_else(bad)?;
    let rest: String = chars.collect();
    let (digits, unit) = match rest.find('[') {
        Some(i) => (&rest[..i], Some(&rest[i..])),
        None => (rest.as_str(), None),
    };
    if kind == 'O' {
        return Err(Error::unsupported(
            "object arrays ('|O') hold pickled Python objects and are never unpickled",
        ));
    }
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 18 {
        return Err(bad());
    }
    let n: usize = digits.parse().map_err(|_| bad())?;
    if unit.is_some() && !matches!(kind, 'M' | 'm') {
        return Err(bad());
    }
    // Resolves '=' / missing / '|' to the order numpy reports for a multi-byte type.
    let multi_byte_order = match order {
        Some('<') => '<',
        Some('>') => '>',
        _ => NATIVE_ORDER,
    };
    let (text, itemsize) = match kind {
        'b' | 'i' | 'u' | 'f' | 'c' => {
            let valid = match kind {
                'b' => n == 1,
                'i' | 'u' => matches!(n, 1 | 2 | 4 | 8),
                'f' => matches!(n, 2 | 4 | 8 | 10 | 12 | 16),
                _ => matches!(n, 8 | 16 | 20 | 24 | 32),
            };
            if !valid {
                return Err(bad());
            }
            let o = if n == 1 { '|' } else { multi_byte_order };
            (format!("{o}{kind}{n}"), n)
        }
        'S' | 'V' => (format!("|{kind}{n}"), n),
        'U' => {
            let size = n.checked_mul(4).ok_or_else(bad)?;
            (format!("{multi_byte_order}U{n}"), size)
        }
        'M' | 'm' => {
            if n != 8 {
                return Err(bad());
            }
            let unit = unit.unwrap_or("");
            if !unit.is_empty() && !valid_datetime_unit(unit) {
                return Err(bad());
            }
            (format!("{multi_byte_order}{kind}8{unit}"), 8)
        }
        _ => return Err(bad()),
    };
    let numeric = Dtype::from_kind_size(kind, itemsize).filter(|_| {
        kind != 'M' && kind != 'm' && (itemsize == 1 || multi_byte_order == NATIVE_ORDER)
    });
    Ok(SimpleDescr {
        text,
        itemsize,
        numeric,
    })
}

/// `[unit]` or `[Nunit]` with a numpy datetime unit.
fn valid_datetime_unit(unit: &str) -> bool {
    let Some(inner) = unit.strip_prefix('[').and_then(|u| u.strip_suffix(']')) else {
        return false;
    };
    let name = inner.trim_start_matches(|c: char| c.is_ascii_digit());
    matches!(
        name,
        "Y" | "M"
            | "W"
            | "D"
            | "h"
            | "m"
            | "s"
            | "ms"
            | "us"
            | "\u{3bc}s"
            | "ns"
            | "ps"
            | "fs"
            | "as"
            | "generic"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn simple(s: &str) -> SimpleDescr {
        parse_simple(s).unwrap()
    }

    #[test]
    fn simple_types_canonicalise_like_numpy() {
        assert_eq!(simple("<f4").text(), "<f4");
        assert_eq!(simple("f8").text(), format!("{NATIVE_ORDER}f8"));
        assert_eq!(simple("=i2").text(), format!("{NATIVE_ORDER}i2"));
        assert_eq!(simple("<i1").text(), "|i1");
        assert_eq!(simple(">b1").text(), "|b1");
        assert_eq!(simple("<S5").text(), "|S5");
        assert_eq!(simple("|U3").text(), format!("{NATIVE_ORDER}U3"));
        assert_eq!(simple(">U3").itemsize, 12);
        assert_eq!(simple("<M8[ns]").text(), "<M8[ns]");
        assert_eq!(simple("<m8").text(), "<m8");
        assert_eq!(simple("<M8[10ms]").itemsize, 8);
        assert_eq!(simple("<f16").itemsize, 16);
        assert_eq!(simple("<c32").itemsize, 32);
        assert_eq!(simple("|V0").itemsize, 0);
    }

    #[test]
    fn numeric_codes_only_for_native_order() {
        assert_eq!(
            simple("<f4").numeric,
            Some(Dtype::F32).filter(|_| NATIVE_ORDER == '<')
        );
        assert_eq!(
            simple(">f4").numeric,
            Some(Dtype::F32).filter(|_| NATIVE_ORDER == '>')
        );
        assert_eq!(simple(">u1").numeric, Some(Dtype::U8));
        assert_eq!(simple("<f16").numeric, None);
        assert_eq!(simple("<M8[ns]").numeric, None);
    }

    #[test]
    fn rejects_bad_and_object() {
        for bad in [
            "",
            "<",
            "<f3",
            "<i16",
            "<x4",
            "<M4",
            "<M8[parsec]",
            "f",
            "<f4[ns]",
            "b2",
        ] {
            assert_eq!(
                parse_simple(bad).unwrap_err().kind(),
                crate::error::ErrorKind::Format,
                "{bad}"
            );
        }
        assert_eq!(
            parse_simple("|O").unwrap_err().kind(),
            crate::error::ErrorKind::Unsupported
        );
        let rec = parse_descr_text("[('a', '<i4'), ('o', '|O')]").unwrap_err();
        assert_eq!(rec.kind(), crate::error::ErrorKind::Unsupported);
    }

    #[test]
    fn records_round_trip_through_repr() {
        for text in [
            "[('a', '<i4'), ('b', '<f8', (2,))]",
            "[('p', [('x', '<f4'), ('y', '<f4')]), ('n', '<i2')]",
            "[(('T', 'a'), '<i4')]",
            "[('a', '|u1'), ('', '|V7'), ('b', '<f8')]",
            "[]",
            "[(\"it's\", '<f8', (2, 3))]",
        ] {
            let at = parse_descr_text(text).unwrap();
            assert_eq!(at.descr.repr(), text);
            assert_eq!(at.descr.to_descr_string(), text);
        }
        let at = parse_descr_text("[('a', '|u1'), ('', '|V7'), ('b', '<f8', (2,))]").unwrap();
        assert_eq!(at.descr.itemsize(), 24);
        assert_eq!(parse_descr_text("[]").unwrap().descr.itemsize(), 0);
    }

    #[test]
    fn swap_units_and_native_conversion() {
        let foreign = if NATIVE_ORDER == '<' { '>' } else { '<' };
        let at = parse_descr_text(&format!(
            "[('a', '{foreign}c16'), ('b', '|u1'), ('c', '{foreign}U2', (2,))]"
        ))
        .unwrap();
        let mut units = Vec::new();
        at.descr.swap_units(0, &mut units);
        assert_eq!(
            units,
            vec![(0, 8), (8, 8), (17, 4), (21, 4), (25, 4), (29, 4)]
        );
        assert!(at.descr.has_foreign_order());
        let native = at.descr.to_native();
        assert!(!native.has_foreign_order());
        assert_eq!(native.itemsize(), at.descr.itemsize());
        let f = parse_descr_text(&format!("{foreign}f8"))
            .unwrap()
            .descr
            .to_native();
        assert_eq!(f.numeric(), Some(Dtype::F64));
    }

    #[test]
    fn sub_array_dtypes_fold_into_shape() {
        let at = parse_descr_text("('<f4', (2, 3))").unwrap();
        assert_eq!(at.descr.to_descr_string(), "<f4");
        assert_eq!(at.sub_shape, vec![2, 3]);
    }

    #[test]
    fn oversized_records_overflow_cleanly() {
        let e = parse_descr_text("[('a', '<f8', (4611686018427387904, 4))]").unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::Overflow);
    }
}
