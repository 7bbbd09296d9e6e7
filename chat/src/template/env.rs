//! The minijinja environment that makes Hugging Face templates behave as they
//! do under Jinja2 in `transformers`: block trimming, `raise_exception`,
//! `strftime_now`, HF's `tojson`, Python methods on strings, lists and dicts,
//! mutable lists inside namespaces, Jinja2's type tests, the `{% generation %}`
//! tag, and the bounds that keep a hostile template from running forever.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};

use minijinja::value::{from_args, Enumerator, Object, ObjectRepr, ValueKind};
use minijinja::{Environment, Error, ErrorKind, State, UndefinedBehavior, Value};

use super::json;

/// Instructions one render may execute (minijinja fuel): about a second of
/// a release build. Some corpus templates are quadratic in the number of
/// messages (DeepSeek V3.2, Gemma 4 and Solar Open rescan the chat for every
/// message): with 32 tools they need about 1 M instructions for 400 messages
/// and 9 M for 1,600, so this leaves room for chats of over 3,000 messages.
pub(crate) const FUEL: u64 = 50_000_000;

/// Fuel of one capability probe (three messages and one tool; the corpus
/// needs under 100 k).
pub(crate) const PROBE_FUEL: u64 = 1_000_000;

/// A Jinja2-like environment with every function, filter, test and method
/// the Hugging Face template corpus uses.
pub(crate) fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(false);
    env.set_undefined_behavior(UndefinedBehavior::Lenient);
    env.set_fuel(Some(FUEL));
    minijinja_contrib::add_to_environment(&mut env);
    env.set_unknown_method_callback(methods);

    env.add_function("raise_exception", |msg: String| -> Result<Value, Error> {
        Err(Error::new(ErrorKind::InvalidOperation, msg))
    });
    env.add_function("strftime_now", strftime_now);
    env.add_function("namespace", namespace);
    env.add_filter("tojson", json::tojson_filter);
    // Jinja2's `len(Undefined)` is 0: `tools|length` works without tools.
    let length = |v: &Value| -> Result<usize, Error> {
        if v.is_undefined() {
            Ok(0)
        } else {
            minijinja::filters::length(v)
        }
    };
    env.add_filter("length", length);
    env.add_filter("count", length);
    env.add_filter("from_json", |s: &str| -> Result<Value, Error> {
        serde_json::from_str(s)
            .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("from_json: {e}")))
    });
    // Jinja2's tests: a string and a dict are sequences (they have `len` and
    // `[]`); strings, dicts and undefined values are iterable.
    env.add_test("sequence", |v: &Value| {
        matches!(
            v.kind(),
            ValueKind::Seq | ValueKind::String | ValueKind::Map
        )
    });
    env.add_test("iterable", |v: &Value| {
        v.is_undefined()
            || matches!(
                v.kind(),
                ValueKind::Seq | ValueKind::String | ValueKind::Map | ValueKind::Iterable
            )
    });
    env
}

/// `strftime_now(format)`: the local time, formatted with C `strftime` codes.
fn strftime_now(format: &str) -> Result<String, Error> {
    use chrono::format::{Item, StrftimeItems};
    let items: Vec<Item> = StrftimeItems::new(format).collect();
    if items.iter().any(|i| matches!(i, Item::Error)) {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: invalid format {format:?}"),
        ));
    }
    let mut out = String::new();
    write!(
        out,
        "{}",
        chrono::Local::now().format_with_items(items.into_iter())
    )
    .map_err(|_| {
        Error::new(
            ErrorKind::InvalidOperation,
            "strftime_now: formatting failed",
        )
    })?;
    Ok(out)
}

/// `namespace(...)`, with its list values made mutable so that
/// `ns.ids.append(x)` and `ns.ids.pop(0)` work (Kimi K2 keeps a queue of tool
/// call ids this way). minijinja's own lists are immutable.
fn namespace(defaults: Option<Value>) -> Result<Value, Error> {
    let defaults = match defaults {
        Some(map) if map.kind() == ValueKind::Map => {
            let mut pairs = Vec::new();
            for key in map.try_iter()? {
                let value = map.get_item(&key)?;
                let value = if value.kind() == ValueKind::Seq
                    && value.downcast_object_ref::<PyList>().is_none()
                {
                    Value::from_object(PyList::new(value.try_iter()?.collect()))
                } else {
                    value
                };
                pairs.push((key, value));
            }
            Some(Value::from_iter(pairs))
        }
        other => other,
    };
    minijinja::functions::namespace(defaults)
}

/// A Python list: a sequence whose `append`, `pop`, `insert`, `extend`,
/// `remove` and `clear` change it in place.
#[derive(Debug, Default)]
pub(crate) struct PyList(Mutex<Vec<Value>>);

impl PyList {
    pub(crate) fn new(items: Vec<Value>) -> Self {
        Self(Mutex::new(items))
    }

    fn items(&self) -> MutexGuard<'_, Vec<Value>> {
        // A panic while the lock was held cannot leave a Vec half-written.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `i` as an index into a list of `len` items, counting from the end when negative.
fn list_index(i: i64, len: usize) -> Option<usize> {
    let len = i64::try_from(len).ok()?;
    let i = if i < 0 { i + len } else { i };
    usize::try_from(i).ok().filter(|&i| (i as i64) < len)
}

impl Object for PyList {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let items = self.items();
        items.get(list_index(key.as_i64()?, items.len())?).cloned()
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.items().clone())
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        Some(self.items().len())
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &State,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        let mut items = self.items();
        let out_of_range = || {
            Error::new(
                ErrorKind::InvalidOperation,
                format!("list.{method}: index out of range"),
            )
        };
        match method {
            "append" => {
                let (v,): (Value,) = from_args(args)?;
                items.push(v);
            }
            "extend" => {
                let (v,): (Value,) = from_args(args)?;
                items.extend(v.try_iter()?);
            }
            "insert" => {
                let (i, v): (i64, Value) = from_args(args)?;
                let len = i64::try_from(items.len()).unwrap_or(i64::MAX);
                let at = if i < 0 { (i + len).max(0) } else { i.min(len) };
                items.insert(usize::try_from(at).unwrap_or(0), v);
            }
            "pop" => {
                let (i,): (Option<i64>,) = from_args(args)?;
                let at = list_index(i.unwrap_or(-1), items.len()).ok_or_else(out_of_range)?;
                return Ok(items.remove(at));
            }
            "remove" => {
                let (v,): (Value,) = from_args(args)?;
                let at = items
                    .iter()
                    .position(|x| *x == v)
                    .ok_or_else(out_of_range)?;
                items.remove(at);
            }
            "clear" => {
                let () = from_args(args)?;
                items.clear();
            }
            _ => return Err(Error::from(ErrorKind::UnknownMethod)),
        }
        Ok(Value::from(()))
    }
}

/// Python methods minijinja lacks: first ours, then minijinja-contrib's
/// `pycompat` set (`strip`, `split`, `startswith`, `format`, `items`, `get`, ...).
fn methods(state: &State, value: &Value, method: &str, args: &[Value]) -> Result<Value, Error> {
    if let Some(s) = value.as_str() {
        match method {
            "rsplit" => return rsplit(s, args),
            "removeprefix" => {
                let (p,): (&str,) = from_args(args)?;
                return Ok(Value::from(s.strip_prefix(p).unwrap_or(s)));
            }
            "removesuffix" => {
                let (p,): (&str,) = from_args(args)?;
                return Ok(Value::from(s.strip_suffix(p).unwrap_or(s)));
            }
            "index" => {
                let (sub,): (&str,) = from_args(args)?;
                let at = s.find(sub).ok_or_else(|| {
                    Error::new(
                        ErrorKind::InvalidOperation,
                        "str.index: substring not found",
                    )
                })?;
                return Ok(Value::from(s[..at].chars().count()));
            }
            _ => {}
        }
    }
    if value.kind() == ValueKind::Seq && method == "index" {
        let (needle,): (Value,) = from_args(args)?;
        let at = value.try_iter()?.position(|x| x == needle).ok_or_else(|| {
            Error::new(ErrorKind::InvalidOperation, "list.index: value not in list")
        })?;
        return Ok(Value::from(at));
    }
    if value.kind() == ValueKind::Map && method == "copy" {
        let () = from_args(args)?;
        let mut pairs = Vec::new();
        for key in value.try_iter()? {
            pairs.push((key.clone(), value.get_item(&key)?));
        }
        return Ok(Value::from_iter(pairs));
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

/// `str.rsplit(sep=None, maxsplit=-1)`.
fn rsplit(s: &str, args: &[Value]) -> Result<Value, Error> {
    let (sep, maxsplit): (Option<&str>, Option<i64>) = from_args(args)?;
    let max = maxsplit
        .and_then(|m| usize::try_from(m).ok())
        .unwrap_or(usize::MAX);
    let parts: Vec<Value> = match sep {
        Some(sep) if !sep.is_empty() => {
            let mut rev: Vec<&str> = s.rsplitn(max.saturating_add(1), sep).collect();
            rev.reverse();
            rev.into_iter().map(Value::from).collect()
        }
        Some(_) => return Err(Error::new(ErrorKind::InvalidOperation, "empty separator")),
        None => {
            let words: Vec<&str> = s.split_whitespace().collect();
            if words.len() > max.saturating_add(1) {
                // Whitespace split from the right: the head keeps its inner spacing.
                let tail = &words[words.len() - max..];
                let mut head = s.trim_end();
                for w in tail.iter().rev() {
                    head = head[..head.len() - w.len()].trim_end();
                }
                std::iter::once(head)
                    .chain(tail.iter().copied())
                    .map(Value::from)
                    .collect()
            } else {
                words.into_iter().map(Value::from).collect()
            }
        }
    };
    Ok(Value::from(parts))
}

/// Rewrites `{% generation %}` / `{% endgeneration %}` (the marker Hugging
/// Face's `AssistantTracker` extension adds for assistant-token masks; no
/// effect on the text) into `{% if true %}` / `{% endif %}`, keeping the
/// whitespace-control dashes. minijinja cannot register custom tags.
pub(crate) fn rewrite_generation_tags(source: &str) -> Cow<'_, str> {
    if !source.contains("generation") {
        return Cow::Borrowed(source);
    }
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        let tag = &rest[start..];
        let Some(end) = tag.find("%}") else {
            break;
        };
        let inner = &tag[2..end];
        let (open_ws, body) = split_ws_marker(inner);
        let (body, close_ws) = split_ws_marker_end(body);
        let replacement = match body.trim() {
            "generation" => Some("if true"),
            "endgeneration" => Some("endif"),
            _ => None,
        };
        match replacement {
            Some(r) => {
                let _ = write!(out, "{{%{open_ws} {r} {close_ws}%}}");
            }
            None => out.push_str(&tag[..end + 2]),
        }
        rest = &tag[end + 2..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

fn split_ws_marker(s: &str) -> (&str, &str) {
    match s.as_bytes().first() {
        Some(b'-' | b'+') => (&s[..1], &s[1..]),
        _ => ("", s),
    }
}

fn split_ws_marker_end(s: &str) -> (&str, &str) {
    match s.as_bytes().last() {
        Some(b'-' | b'+') => (&s[..s.len() - 1], &s[s.len() - 1..]),
        _ => (s, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(src: &str) -> Result<String, Error> {
        let env = environment();
        env.render_str(src, ())
    }

    #[test]
    fn loop_controls_break_and_continue() {
        let src = "{% for i in range(10) %}{% if i == 1 %}{% continue %}{% endif %}{% if i == 4 %}{% break %}{% endif %}{{ i }}{% endfor %}";
        assert_eq!(render(src).unwrap(), "023");
    }

    #[test]
    fn strftime_now_formats_the_current_date() {
        let year = chrono::Local::now().format("%Y").to_string();
        let out = render("{{ strftime_now('%d %b %Y') }}").unwrap();
        assert!(out.ends_with(&year), "{out}");
        assert_eq!(out.len(), "26 Jul 2024".len(), "{out}");
        assert!(render("{{ strftime_now('%Q') }}").is_err());
    }

    #[test]
    fn tojson_takes_python_arguments() {
        let ctx = r#"{% set d = {"b": 1, "a": ["é", 2.0]} %}"#;
        let cases = [
            ("{{ d | tojson }}", r#"{"b": 1, "a": ["é", 2.0]}"#),
            (
                "{{ d | tojson(separators=(',', ':')) }}",
                r#"{"b":1,"a":["é",2.0]}"#,
            ),
            (
                "{{ d | tojson(ensure_ascii=True) }}",
                r#"{"b": 1, "a": ["\u00e9", 2.0]}"#,
            ),
            (
                "{{ d | tojson(sort_keys=true) }}",
                r#"{"a": ["é", 2.0], "b": 1}"#,
            ),
            (
                "{{ d | tojson(indent=2) }}",
                "{\n  \"b\": 1,\n  \"a\": [\n    \"é\",\n    2.0\n  ]\n}",
            ),
            ("{{ '<a&b>' | tojson }}", r#""<a&b>""#),
        ];
        for (src, want) in cases {
            assert_eq!(render(&format!("{ctx}{src}")).unwrap(), want, "{src}");
        }
    }

    #[test]
    fn namespace_lists_are_mutable() {
        let src = "{% set ns = namespace(ids=[], n=0) %}{% set _ = ns.ids.append('a') %}{% set _ = ns.ids.append('b') %}{{ ns.ids | length }}{{ ns.ids.pop(0) }}{{ ns.ids | join(',') }}{{ ns.ids[-1] }}";
        assert_eq!(render(src).unwrap(), "2abb");
    }

    #[test]
    fn jinja2_type_tests() {
        let src = "{{ 'a' is sequence }} {{ {} is sequence }} {{ 'a' is iterable }} {{ x is iterable }} {{ none is iterable }} {{ {} is mapping }} {{ 'a' is string }}";
        assert_eq!(render(src).unwrap(), "True True True True False True True");
    }

    #[test]
    fn python_methods_beyond_pycompat() {
        let src = "{{ 'a.b.c'.rsplit('.', 1) | join('|') }} {{ 'x{}y'.format(1) }} {{ [3, 4].index(4) }} {{ '<t>'.removeprefix('<') }} {{ ' a  b c '.rsplit(none, 1) | join('|') }}";
        assert_eq!(render(src).unwrap(), "a.b|c x1y 1 t>  a  b|c");
    }

    #[test]
    fn from_json_parses_text() {
        assert_eq!(
            render(r#"{{ ('{"a": [1]}' | from_json).a[0] }}"#).unwrap(),
            "1"
        );
        assert_eq!(render("{{ nothing | length }}").unwrap(), "0");
    }

    #[test]
    fn generation_tags_are_no_ops() {
        let src = rewrite_generation_tags(
            "a{%- generation -%} b {%- endgeneration %}c{% if x %}{% endif %}",
        );
        assert_eq!(src, "a{%- if true -%} b {%- endif %}c{% if x %}{% endif %}");
        assert_eq!(render(&src).unwrap(), "abc");
    }

    #[test]
    fn an_endless_template_runs_out_of_fuel() {
        let mut env = environment();
        env.set_fuel(Some(10_000));
        let src =
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
        let err = env.render_str(src, ()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::OutOfFuel, "{err}");
    }
}
