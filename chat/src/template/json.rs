//! `tojson` the way Hugging Face defines it: Python's `json.dumps(x,
//! ensure_ascii=False, indent=None, separators=None, sort_keys=False)`, with
//! each argument overridable from the template. Templates print tool schemas
//! with it, so the bytes must match what the model saw in training: `", "` and
//! `": "` separators, keys in insertion order, no HTML escaping, Python's float
//! spelling (`1.0`, `1e-05`, `1e+16`).

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Error, ErrorKind, Value};
use std::fmt::Write as _;

/// How to spell one `json.dumps` call.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Style {
    /// `None`: one line. `Some(unit)`: one item per line, `unit` per level.
    pub indent: Option<String>,
    pub item_sep: String,
    pub key_sep: String,
    /// Escape everything outside printable ASCII as `\uXXXX`.
    pub ensure_ascii: bool,
    pub sort_keys: bool,
}

impl Default for Style {
    fn default() -> Self {
        Self {
            indent: None,
            item_sep: ", ".into(),
            key_sep: ": ".into(),
            ensure_ascii: false,
            sort_keys: false,
        }
    }
}

impl Style {
    /// `json.dumps(indent=2)`.
    pub(crate) fn indented() -> Self {
        Self {
            indent: Some("  ".into()),
            item_sep: ",".into(),
            ..Self::default()
        }
    }

    /// Reads Hugging Face's `tojson` arguments: positional in the order
    /// `ensure_ascii, indent, separators, sort_keys`, or by keyword.
    fn from_args(args: &[Value], kwargs: &Kwargs) -> Result<Self, Error> {
        let names = ["ensure_ascii", "indent", "separators", "sort_keys"];
        if args.len() > names.len() {
            return Err(Error::new(
                ErrorKind::TooManyArguments,
                "tojson takes at most 4 arguments",
            ));
        }
        let arg = |i: usize| -> Result<Option<Value>, Error> {
            match (args.get(i).cloned(), kwargs.get::<Option<Value>>(names[i])?) {
                (Some(_), Some(_)) => Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("tojson got {} twice", names[i]),
                )),
                (Some(v), None) | (None, Some(v)) => Ok(Some(v).filter(|v| !v.is_none())),
                (None, None) => Ok(None),
            }
        };
        let mut style = Self {
            ensure_ascii: arg(0)?.is_some_and(|v| v.is_true()),
            sort_keys: arg(3)?.is_some_and(|v| v.is_true()),
            ..Self::default()
        };
        if let Some(indent) = arg(1)? {
            style.indent = Some(match indent.as_str() {
                Some(unit) => unit.to_owned(),
                None => {
                    let n = i64::try_from(indent.clone()).map_err(|_| {
                        Error::new(
                            ErrorKind::InvalidOperation,
                            "tojson indent must be an integer or a string",
                        )
                    })?;
                    " ".repeat(usize::try_from(n).unwrap_or(0).min(64))
                }
            });
            // Python drops the space after the comma when indenting.
            style.item_sep = ",".into();
        }
        if let Some(seps) = arg(2)? {
            let pair: Vec<Value> = seps.try_iter()?.collect();
            match pair.as_slice() {
                [item, key] if item.as_str().is_some() && key.as_str().is_some() => {
                    style.item_sep = item.to_string();
                    style.key_sep = key.to_string();
                }
                _ => {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson separators must be a pair of strings",
                    ))
                }
            }
        }
        kwargs.assert_all_used()?;
        Ok(style)
    }
}

/// The `tojson` filter. Its output is marked safe, as in Jinja2.
pub(crate) fn tojson_filter(
    value: &Value,
    args: minijinja::value::Rest<Value>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let style = Style::from_args(&args, &kwargs)?;
    Ok(Value::from_safe_string(dumps(value, &style)?))
}

/// Serializes `value` like Python's `json.dumps` with `style`.
///
/// # Errors
/// A value JSON cannot hold (a macro, a function) or a map key that is not
/// a string, number, boolean or none.
pub(crate) fn dumps(value: &Value, style: &Style) -> Result<String, Error> {
    let mut out = String::new();
    write_value(&mut out, value, style, 0)?;
    Ok(out)
}

/// Deepest nesting written; deeper input is rejected (Python raises
/// `RecursionError` on cycles, which minijinja values cannot have, but a
/// hostile document can still nest deeply).
const MAX_DEPTH: usize = 512;

fn write_value(out: &mut String, value: &Value, style: &Style, depth: usize) -> Result<(), Error> {
    if depth > MAX_DEPTH {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "tojson: value nested too deeply",
        ));
    }
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => write_number(out, value),
        ValueKind::String => write_str(out, value.as_str().unwrap_or_default(), style.ensure_ascii),
        ValueKind::Bytes => {
            let bytes = value.as_bytes().unwrap_or_default();
            write_str(out, &String::from_utf8_lossy(bytes), style.ensure_ascii);
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            write_container(out, ('[', ']'), items.len(), style, depth, |out, i| {
                write_value(out, &items[i], style, depth + 1)
            })?;
        }
        ValueKind::Map => {
            let mut entries = Vec::new();
            for key in value.try_iter()? {
                let item = value.get_item(&key)?;
                entries.push((key_string(&key)?, item));
            }
            if style.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(&b.0));
            }
            write_container(out, ('{', '}'), entries.len(), style, depth, |out, i| {
                let (key, item) = &entries[i];
                write_str(out, key, style.ensure_ascii);
                out.push_str(&style.key_sep);
                write_value(out, item, style, depth + 1)
            })?;
        }
        _ => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("Object of type {} is not JSON serializable", value.kind()),
            ))
        }
    }
    Ok(())
}

/// Writes `open`, `len` items (one per line when indenting), `close`.
fn write_container(
    out: &mut String,
    (open, close): (char, char),
    len: usize,
    style: &Style,
    depth: usize,
    mut item: impl FnMut(&mut String, usize) -> Result<(), Error>,
) -> Result<(), Error> {
    out.push(open);
    if len == 0 {
        out.push(close);
        return Ok(());
    }
    let newline = |out: &mut String, level: usize| {
        if let Some(unit) = &style.indent {
            out.push('\n');
            for _ in 0..level {
                out.push_str(unit);
            }
        }
    };
    for i in 0..len {
        if i > 0 {
            out.push_str(&style.item_sep);
        }
        newline(out, depth + 1);
        item(out, i)?;
    }
    newline(out, depth);
    out.push(close);
    Ok(())
}

/// Python converts non-string keys: `True` → `"true"`, `None` → `"null"`, `1` → `"1"`.
fn key_string(key: &Value) -> Result<String, Error> {
    Ok(match key.kind() {
        ValueKind::String => key.as_str().unwrap_or_default().to_owned(),
        ValueKind::None | ValueKind::Undefined => "null".into(),
        ValueKind::Bool => (if key.is_true() { "true" } else { "false" }).into(),
        ValueKind::Number => {
            let mut s = String::new();
            write_number(&mut s, key);
            s
        }
        kind => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("keys must be str, int, float, bool or None, not {kind}"),
            ))
        }
    })
}

fn write_number(out: &mut String, value: &Value) {
    if value.is_integer() {
        let _ = write!(out, "{value}");
    } else {
        out.push_str(&python_float(
            f64::try_from(value.clone()).unwrap_or(f64::NAN),
        ));
    }
}

/// Python's `repr(float)`: the shortest digits that round-trip, in
/// scientific notation when the exponent is below -4 or at least 16.
pub(crate) fn python_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    // `{:e}` gives the shortest round-trip digits, e.g. "1.5e-5", "1e16".
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if f != 0.0 && !(-4..16).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.unsigned_abs());
    }
    let plain = format!("{f}");
    if plain.contains('.') {
        plain
    } else {
        plain + ".0"
    }
}

/// A JSON string literal, escaped like Python's `json` module.
fn write_str(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && !(' '..='~').contains(&c)) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(json: &str) -> Value {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn default_style_matches_python_dumps() {
        let v = parsed(r#"{"b": [1, 2.5, true, null], "a": {"x": "y"}, "e": [], "f": {}}"#);
        assert_eq!(
            dumps(&v, &Style::default()).unwrap(),
            r#"{"b": [1, 2.5, true, null], "a": {"x": "y"}, "e": [], "f": {}}"#
        );
    }

    #[test]
    fn floats_are_spelled_like_python() {
        for (f, want) in [
            (1.0, "1.0"),
            (-0.0, "-0.0"),
            (0.1, "0.1"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (1e16, "1e+16"),
            (123456789012345.0, "123456789012345.0"),
            (1.5e300, "1.5e+300"),
            (f64::INFINITY, "Infinity"),
        ] {
            assert_eq!(python_float(f), want, "{f}");
        }
    }

    #[test]
    fn strings_escape_like_python() {
        let v = Value::from("a\"b\\c\nd\u{1}é😀<>&");
        assert_eq!(
            dumps(&v, &Style::default()).unwrap(),
            r#""a\"b\\c\nd\u0001é😀<>&""#
        );
        let ascii = Style {
            ensure_ascii: true,
            ..Style::default()
        };
        assert_eq!(
            dumps(&v, &ascii).unwrap(),
            r#""a\"b\\c\nd\u0001\u00e9\ud83d\ude00<>&""#
        );
    }

    #[test]
    fn indent_puts_one_item_per_line() {
        let v = parsed(r#"{"a": [1, {"b": 2}], "c": {}}"#);
        let style = Style {
            indent: Some("  ".into()),
            item_sep: ",".into(),
            ..Style::default()
        };
        assert_eq!(
            dumps(&v, &style).unwrap(),
            "{\n  \"a\": [\n    1,\n    {\n      \"b\": 2\n    }\n  ],\n  \"c\": {}\n}"
        );
    }

    #[test]
    fn sort_keys_and_key_conversion() {
        let v = Value::from_iter([
            (Value::from(2), Value::from("x")),
            (Value::from(true), Value::from(1)),
        ]);
        let style = Style {
            sort_keys: true,
            ..Style::default()
        };
        assert_eq!(dumps(&v, &style).unwrap(), r#"{"2": "x", "true": 1}"#);
    }
}
