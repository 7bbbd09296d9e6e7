//! JSON schema → GBNF, on top of llama.cpp's converter.
//!
//! llama.cpp's `json_schema_to_grammar` enforces `minimum`/`maximum` for
//! integers but ignores them for `"type": "number"`, so a bounded number
//! (`{"type": "number", "minimum": 0, "maximum": 1}`) could come out as 80.19.
//! Before converting, each bounded number is replaced by a placeholder
//! constant; after converting, the placeholder's literal in the grammar is
//! replaced by a rule of our own that only produces numbers inside the
//! bounds: integers, and decimals whose integer part keeps every fraction in
//! range. (That is a subset of the valid numbers — fractions between a
//! non-integer bound and the next integer are left out — but everything it
//! produces validates.)

use serde_json::Value;

/// Prefix of the placeholder constants (never a real schema value).
const PLACEHOLDER: &str = "__llm_node_bounded_number_";
/// Most digits after the decimal point.
const MAX_FRACTION_DIGITS: usize = 12;

/// The GBNF of `schema`, with bounded numbers enforced.
///
/// # Errors
/// The converter's message when the schema is not valid JSON or not convertible.
pub fn to_gbnf(
    schema: &str,
    convert: impl Fn(&str) -> Result<String, String>,
) -> Result<String, String> {
    let mut value: Value =
        serde_json::from_str(schema).map_err(|e| format!("not valid JSON: {e}"))?;
    let mut rules = Vec::new();
    replace_bounded_numbers(&mut value, &mut rules);
    if rules.is_empty() {
        return convert(schema);
    }
    let mut gbnf = convert(&value.to_string())?;
    for (i, rule) in rules.iter().enumerate() {
        // The converter writes a string constant as a GBNF literal of its JSON text.
        let literal = format!("\"\\\"{PLACEHOLDER}{i}\\\"\"");
        gbnf = gbnf.replace(&literal, &format!("bounded-number-{i}"));
        gbnf.push_str(&format!("bounded-number-{i} ::= {rule}\n"));
    }
    Ok(gbnf)
}

fn replace_bounded_numbers(v: &mut Value, rules: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            if map.get("type").and_then(Value::as_str) == Some("number") {
                if let Some(rule) = bounded_rule(map) {
                    let i = rules.len();
                    rules.push(rule);
                    let mut placeholder = serde_json::Map::new();
                    placeholder.insert("const".into(), Value::String(format!("{PLACEHOLDER}{i}")));
                    *map = placeholder;
                    return;
                }
            }
            for child in map.values_mut() {
                replace_bounded_numbers(child, rules);
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|i| replace_bounded_numbers(i, rules)),
        _ => {}
    }
}

/// The GBNF alternatives of a number within the node's bounds, if it has any.
fn bounded_rule(node: &serde_json::Map<String, Value>) -> Option<String> {
    let f = |k: &str| {
        node.get(k)
            .and_then(Value::as_f64)
            .filter(|x| x.is_finite())
    };
    let (min, xmin) = (f("minimum"), f("exclusiveMinimum"));
    let (max, xmax) = (f("maximum"), f("exclusiveMaximum"));
    if min.is_none() && xmin.is_none() && max.is_none() && xmax.is_none() {
        return None;
    }
    // Integer bounds every produced number keeps to (wide defaults when one side is open).
    const WIDE: f64 = 1e15;
    let lo = match (min, xmin) {
        (_, Some(x)) => x.floor() as i64 + 1,
        (Some(m), None) => m.ceil() as i64,
        (None, None) => -WIDE as i64,
    };
    let hi = match (max, xmax) {
        (_, Some(x)) => x.ceil() as i64 - 1,
        (Some(m), None) => m.floor() as i64,
        (None, None) => WIDE as i64,
    };
    let mut alts = Vec::new();
    if lo <= hi {
        alts.extend(signed_range(lo, hi));
        // i.ddd lies in [i, i+1) for i >= 0 and in (i-1, i] for "-j.ddd" (j = -i).
        let frac = format!("\".\" [0-9]{{1,{MAX_FRACTION_DIGITS}}}");
        if lo.max(0) < hi {
            for a in uint_range(lo.max(0) as u64, (hi - 1) as u64) {
                alts.push(format!("{a} {frac}"));
            }
        }
        if lo < 0 {
            let (j_lo, j_hi) = ((-hi).max(0) as u64, (-lo - 1) as u64);
            if j_lo <= j_hi {
                for a in uint_range(j_lo, j_hi) {
                    alts.push(format!("\"-\" {a} {frac}"));
                }
            }
        }
    } else {
        // No integer inside (e.g. [0.2, 0.8]): the midpoint.
        let a = min.or(xmin).unwrap_or(0.0);
        let b = max.or(xmax).unwrap_or(a);
        alts.push(format!("\"{}\"", (a + b) / 2.0));
    }
    Some(format!("({}) space", alts.join(" | ")))
}

/// Alternatives matching the integers in `[lo, hi]`.
fn signed_range(lo: i64, hi: i64) -> Vec<String> {
    let mut alts = Vec::new();
    if hi >= 0 {
        alts.extend(uint_range(lo.max(0) as u64, hi as u64));
    }
    if lo < 0 {
        let (a, b) = ((-hi).max(1) as u64, lo.unsigned_abs());
        alts.extend(uint_range(a, b).into_iter().map(|s| format!("\"-\" {s}")));
    }
    alts
}

/// GBNF sequences matching exactly the decimal numbers in `[lo, hi]` (no leading zeros).
pub fn uint_range(lo: u64, hi: u64) -> Vec<String> {
    let mut out = Vec::new();
    let mut start = lo;
    while start <= hi {
        let digits = start.to_string().len() as u32;
        let end = if digits >= 20 {
            hi
        } else {
            hi.min(10u64.pow(digits) - 1)
        };
        same_length(
            &start.to_string(),
            &end.to_string(),
            &mut out,
            String::new(),
        );
        if end == u64::MAX || end == hi {
            break;
        }
        start = end + 1;
    }
    out
}

/// Sequences matching the numbers between `a` and `b`, both of the same length.
fn same_length(a: &str, b: &str, out: &mut Vec<String>, prefix: String) {
    let join = |p: &str, s: String| if p.is_empty() { s } else { format!("{p} {s}") };
    if a.is_empty() {
        out.push(prefix);
        return;
    }
    let (a0, b0) = (a.as_bytes()[0] - b'0', b.as_bytes()[0] - b'0');
    let rest = a.len() - 1;
    let all = |n: usize| vec!["[0-9]"; n].join(" ");
    if a0 == b0 {
        return same_length(&a[1..], &b[1..], out, join(&prefix, format!("\"{a0}\"")));
    }
    let full = |d: &str| d.bytes().all(|c| c == b'0');
    let nine = |d: &str| d.bytes().all(|c| c == b'9');
    // First digit a0 with the rest from a[1..] up to all nines.
    let (mid_lo, mid_hi) = (
        if full(&a[1..]) { a0 } else { a0 + 1 },
        if nine(&b[1..]) { b0 } else { b0 - 1 },
    );
    if !full(&a[1..]) {
        same_length(
            &a[1..],
            &"9".repeat(rest),
            out,
            join(&prefix, format!("\"{a0}\"")),
        );
    }
    if mid_lo <= mid_hi {
        let d = format!("[{mid_lo}-{mid_hi}]");
        out.push(join(
            &prefix,
            if rest == 0 {
                d
            } else {
                format!("{d} {}", all(rest))
            },
        ));
    }
    if !nine(&b[1..]) {
        same_length(
            &"0".repeat(rest),
            &b[1..],
            out,
            join(&prefix, format!("\"{b0}\"")),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `s` matches one of the sequences (a tiny matcher for the
    /// `"d"`, `[a-b]` and `[0-9]` atoms `uint_range` writes).
    fn matches(seq: &str, s: &str) -> bool {
        let atoms: Vec<&str> = seq.split(' ').collect();
        if atoms.len() != s.len() {
            return false;
        }
        atoms.iter().zip(s.bytes()).all(|(atom, c)| {
            let c = c - b'0';
            if let Some(d) = atom.strip_prefix('"') {
                d.as_bytes()[0] - b'0' == c
            } else {
                let b = atom.as_bytes();
                (b[1] - b'0'..=b[3] - b'0').contains(&c)
            }
        })
    }

    #[test]
    fn uint_ranges_match_exactly_their_numbers() {
        for (lo, hi) in [
            (0, 0),
            (0, 9),
            (1, 120),
            (7, 13),
            (90, 180),
            (0, 1000),
            (99, 101),
            (5, 5),
            (123, 4567),
        ] {
            let seqs = uint_range(lo, hi);
            for n in 0..=5000u64 {
                let hit = seqs.iter().any(|s| matches(s, &n.to_string()));
                assert_eq!(hit, (lo..=hi).contains(&n), "{n} in [{lo}, {hi}]: {seqs:?}");
            }
        }
    }

    #[test]
    fn bounded_numbers_become_placeholders_and_rules() {
        let schema = r#"{"type":"object","properties":{"p":{"type":"number","minimum":0,"maximum":1},"n":{"type":"number"}}}"#;
        let seen = std::cell::RefCell::new(String::new());
        let gbnf = to_gbnf(schema, |s| {
            *seen.borrow_mut() = s.to_owned();
            Ok(format!("p-kv ::= \"\\\"{PLACEHOLDER}0\\\"\" space\n"))
        })
        .unwrap();
        assert!(seen.borrow().contains(PLACEHOLDER), "{}", seen.borrow());
        assert!(
            seen.borrow().contains("\"n\":{\"type\":\"number\"}"),
            "unbounded kept"
        );
        assert!(gbnf.contains("p-kv ::= bounded-number-0 space"), "{gbnf}");
        assert!(
            gbnf.contains("bounded-number-0 ::= ([0-1] | \"0\" \".\" [0-9]{1,12}) space"),
            "{gbnf}"
        );
    }

    #[test]
    fn negative_and_exclusive_bounds() {
        let node = |j: &str| serde_json::from_str::<serde_json::Map<String, Value>>(j).unwrap();
        let r = bounded_rule(&node(r#"{"type":"number","minimum":-2,"maximum":1}"#)).unwrap();
        assert!(r.contains("\"-\" [1-2]"), "{r}");
        assert!(r.contains("\"-\" [0-1] \".\""), "{r}");
        let r = bounded_rule(&node(
            r#"{"type":"number","exclusiveMinimum":0,"maximum":3}"#,
        ))
        .unwrap();
        assert!(
            !r.contains("\"0\" \".\""),
            "0.x is fine but 0.0 is not: {r}"
        );
        let r = bounded_rule(&node(r#"{"type":"number","minimum":0.2,"maximum":0.8}"#)).unwrap();
        assert_eq!(r, "(\"0.5\") space");
        assert!(bounded_rule(&node(r#"{"type":"number"}"#)).is_none());
    }
}
