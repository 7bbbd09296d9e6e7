//! The Grafana dashboard and the Prometheus alert rules in `deploy/` against
//! a real node and real Prometheus tools:
//!
//! - every metric name in the dashboard's and the rules' PromQL exists on a
//!   live node's `/metrics` (the node serves the bundled model, answers a
//!   chat, refuses a bad request and fails a pull, so every family has series);
//! - the rules pass `promtool check rules` and their unit tests
//!   (`promtool test rules deploy/prometheus/alerts_test.yml`);
//! - a real Prometheus scrapes the node (loopback, 1 s interval, temporary
//!   storage), loads the rules, and answers a query for a per-model series.
//!
//! `prometheus` and `promtool` come from Debian's `prometheus` package, which
//! `scripts/setup.sh` unpacks into `$LLM_NODE_PROMETHEUS_DIR` (default
//! `~/.cache/llm-node/prometheus/bin`); a missing tool fails these tests.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use llm_node_tests::{chat, Node, MODEL};
use serde_json::{json, Value};

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path)
}

/// `prometheus` or `promtool` from `$LLM_NODE_PROMETHEUS_DIR`.
fn prometheus_tool(name: &str) -> PathBuf {
    let dir = std::env::var("LLM_NODE_PROMETHEUS_DIR").unwrap_or_else(|_| {
        format!(
            "{}/.cache/llm-node/prometheus/bin",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let tool = Path::new(&dir).join(name);
    assert!(
        tool.is_file(),
        "{} missing: run scripts/setup.sh (the README's test command does) \
         or set LLM_NODE_PROMETHEUS_DIR",
        tool.display()
    );
    tool
}

/// Every PromQL expression of the dashboard (panel targets and variables).
fn dashboard_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(deploy("grafana/llm-node.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().unwrap().to_string());
        }
    }
    for var in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(q) = var["query"]["query"].as_str() {
            // label_values(EXPR, label): EXPR is PromQL.
            let inner = q.trim_start_matches("label_values(");
            exprs.push(inner[..inner.rfind(',').unwrap()].to_string());
        }
    }
    exprs
}

/// Every `expr:` of the rule file (inline or a `|` block).
fn alert_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(deploy("prometheus/alerts.yml")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut exprs = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(value) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let value = value.trim();
        if value != "|" {
            exprs.push(value.to_string());
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let block: Vec<&str> = lines[i + 1..]
            .iter()
            .take_while(|l| l.len() - l.trim_start().len() > indent || l.trim().is_empty())
            .map(|l| l.trim())
            .collect();
        exprs.push(block.join(" "));
    }
    exprs
}

/// Removes every bracketed part opened by `open` (nesting-aware).
fn strip_groups(expr: &str, open: char, close: char) -> String {
    let mut out = String::new();
    let mut depth = 0;
    for c in expr.chars() {
        if c == open {
            depth += 1;
        } else if c == close && depth > 0 {
            depth -= 1;
        } else if depth == 0 {
            out.push(c);
        }
    }
    out
}

const KEYWORDS: [&str; 15] = [
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
    "Inf",
    "NaN",
];

/// The metric names a PromQL expression reads: identifiers that are not
/// functions, keywords, label names (in `{}` or `by (...)`), durations (in
/// `[]`) or Grafana variables (`$model`, `$__rate_interval`).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let no_strings = {
        let mut out = String::new();
        let mut quoted = false;
        for c in expr.chars() {
            if c == '"' {
                quoted = !quoted;
            } else if !quoted {
                out.push(c);
            }
        }
        out
    };
    let mut rest = strip_groups(&strip_groups(&no_strings, '{', '}'), '[', ']');
    // Label lists of `by (...)`, `on (...)`, ...: drop the keyword's group.
    for kw in [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ] {
        let mut out = String::new();
        let mut s = rest.as_str();
        while let Some(at) = find_word(s, kw) {
            out.push_str(&s[..at]);
            let after = s[at + kw.len()..].trim_start();
            s = match after.strip_prefix('(') {
                Some(inner) => &inner[inner.find(')').map_or(inner.len(), |i| i + 1)..],
                None => after,
            };
        }
        out.push_str(s);
        rest = out;
    }
    let mut names = BTreeSet::new();
    let bytes = rest.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i] as char;
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || b"_:".contains(&bytes[i]))
            {
                i += 1;
            }
            let word = &rest[start..i];
            let variable = start > 0 && bytes[start - 1] == b'$';
            let number = start > 0 && bytes[start - 1].is_ascii_digit(); // 5e9
            let function = rest[i..].trim_start().starts_with('(');
            if !variable && !number && !function && !KEYWORDS.contains(&word) {
                names.insert(word.to_string());
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Where `word` occurs as a whole word in `s`.
fn find_word(s: &str, word: &str) -> Option<usize> {
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut from = 0;
    while let Some(at) = s[from..].find(word).map(|i| i + from) {
        let before = at == 0 || !is_ident(s.as_bytes()[at - 1]);
        let end = at + word.len();
        let after = end == s.len() || !is_ident(s.as_bytes()[end]);
        if before && after {
            return Some(at);
        }
        from = end;
    }
    None
}

/// Families on a `/metrics` page: `name → type`.
fn families(page: &str) -> Vec<(String, String)> {
    page.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let (name, kind) = l.split_once(' ')?;
            Some((name.to_string(), kind.to_string()))
        })
        .collect()
}

/// Whether `name` is a family on the page, or a histogram's or summary's
/// `_bucket`/`_sum`/`_count` series.
fn exported(families: &[(String, String)], name: &str) -> bool {
    families.iter().any(|(family, kind)| {
        family == name
            || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
                name.strip_suffix(suffix) == Some(family.as_str())
                    && (kind == "histogram" || (kind == "summary" && *suffix != "_bucket"))
            })
    })
}

/// The value of the first sample line starting with `series`.
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// A node (with a simulated GPU, so GPU series exist here too) that has
/// served a chat, refused a bad request and failed a pull, and whose worker
/// has reported its KV occupancy at least once.
fn exercised_node() -> Node {
    let node = Node::start(&["--simulated-gpus", "H100:80:60"]);
    let (status, body) = node.post(
        "/v1/chat/completions",
        &chat("Count from one to ten.", json!({"max_tokens": 12})),
    );
    assert_eq!(status, 200, "{body}");
    let (status, _) = node.post(
        "/v1/chat/completions",
        &json!({"model": MODEL, "messages": "not a list"}),
    );
    assert_eq!(status, 400);
    // The registry is a closed loopback port: the pull runs and fails.
    let (status, body) = node.post(
        "/api/pull",
        &json!({"model": "nothere:latest", "stream": false}),
    );
    assert_ne!(status, 200, "{body}");
    // The worker reports its occupancy with each liveness pong (every 5 s).
    let deadline = Instant::now() + Duration::from_secs(20);
    let kv = format!("llm_node_kv_cells_used{{model=\"{MODEL}\"}}");
    while sample(&node.metrics(), &kv).unwrap_or(0.0) == 0.0 {
        assert!(
            Instant::now() < deadline,
            "no KV occupancy reported:\n{}",
            node.metrics()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    node
}

#[test]
fn metric_names_are_read_out_of_promql() {
    // (expression, its metric names in sorted order)
    let table: [(&str, &[&str]); 6] = [
        (
            r#"sum by (model, le) (rate(llm_node_x_bucket{job=~"$job", model="a b"}[$__rate_interval]))"#,
            &["llm_node_x_bucket"],
        ),
        (
            "llm_node_a == 1 and on (job, instance) llm_node_b == 0",
            &["llm_node_a", "llm_node_b"],
        ),
        (
            "time() - llm_node_ts > 300 or increase(llm_node_f_total[5m]) >= 3",
            &["llm_node_f_total", "llm_node_ts"],
        ),
        ("a / b < 0.10 unless c offset 5m", &["a", "b", "c"]),
        ("histogram_quantile(0.95, x) > 5e9", &["x"]),
        (
            "sum without (state) (y) * on () group_left () z",
            &["y", "z"],
        ),
    ];
    for (expr, want) in table {
        let got: Vec<String> = metric_names(expr).into_iter().collect();
        assert_eq!(got, want, "{expr}");
    }
}

#[test]
fn every_metric_of_the_dashboard_and_the_alerts_is_on_a_live_node() {
    let dashboard = dashboard_exprs();
    let alerts = alert_exprs();
    assert!(dashboard.len() >= 25, "{dashboard:?}");
    assert_eq!(alerts.len(), 8, "one expr per alert: {alerts:?}");
    let node = exercised_node();
    let page = node.metrics();
    let families = families(&page);
    let mut checked = BTreeSet::new();
    let mut missing = Vec::new();
    for expr in dashboard.iter().chain(&alerts) {
        for name in metric_names(expr) {
            if !exported(&families, &name) {
                missing.push(format!("{name} (in {expr})"));
            }
            checked.insert(name);
        }
    }
    assert!(
        missing.is_empty(),
        "not on /metrics:\n{}\n\n{page}",
        missing.join("\n")
    );
    // The parse found the families that matter, not an empty set.
    for name in [
        "llm_node_time_to_first_token_seconds_bucket",
        "llm_node_inter_token_latency_seconds_bucket",
        "llm_node_busy_slots",
        "llm_node_rejections_total",
        "llm_node_gpu_memory_used_bytes",
        "llm_node_pulls_finished_total",
        "llm_node_router_registered",
        "llm_node_store_free_bytes",
        "process_resident_memory_bytes",
    ] {
        assert!(checked.contains(name), "{name} not used: {checked:?}");
    }
    assert!(checked.len() >= 30, "{checked:?}");
    // Each figure is real, not just registered.
    for (series, at_least) in [
        (
            "llm_node_rejections_total{reason=\"invalid_request\",status=\"400\"}",
            1.0,
        ),
        // The failed pull's error on Ollama's route, counted as rendered.
        (
            "llm_node_rejections_total{reason=\"store_failed\",status=\"502\"}",
            1.0,
        ),
        ("llm_node_pulls_finished_total{outcome=\"failed\"}", 1.0),
        ("llm_node_pulls_started_total", 1.0),
        ("llm_node_slots{model=\"smollm2\"}", 4.0),
        ("llm_node_kv_cells_total{model=\"smollm2\"}", 4096.0),
        ("llm_node_prompt_cache_bytes{model=\"smollm2\"}", 0.0),
        // --cache-ram's default, 4096 MiB.
        (
            "llm_node_prompt_cache_limit_bytes{model=\"smollm2\"}",
            4096.0 * 1024.0 * 1024.0,
        ),
        (
            "llm_node_gpu_memory_used_bytes{gpu=\"0\"",
            20.0 * 1024.0 * 1024.0 * 1024.0,
        ),
        (
            "llm_node_model_load_duration_seconds_count{model=\"smollm2\"}",
            1.0,
        ),
        (
            "llm_node_inter_token_latency_seconds_count{model=\"smollm2\"}",
            1.0,
        ),
        ("llm_node_queue_wait_seconds_count{model=\"smollm2\"}", 1.0),
        ("llm_node_store_free_bytes", 1.0),
        ("process_resident_memory_bytes", 1e6),
    ] {
        let value = sample(&page, series).unwrap_or_else(|| panic!("{series} absent:\n{page}"));
        assert!(value >= at_least, "{series} = {value} < {at_least}");
    }
    assert_eq!(sample(&page, "llm_node_router_configured"), Some(0.0));
    node.terminate();
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let promtool = prometheus_tool("promtool");
    let dir = deploy("prometheus");
    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
    ] {
        let out = Command::new(&promtool)
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "promtool {args:?}:\n{text}");
        assert!(text.contains("SUCCESS"), "{text}");
    }
}

/// A Prometheus server, killed (and its storage removed) when dropped.
struct Prometheus {
    child: Child,
    dir: PathBuf,
    base: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts Prometheus scraping `target` every second, with the node's rules.
fn start_prometheus(target: &str) -> Prometheus {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let dir = std::env::temp_dir().join(format!("llm-node-prom-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rules = deploy("prometheus/alerts.yml");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {}\n\
         scrape_configs:\n  - job_name: llm-node\n    static_configs:\n      - targets: ['{target}']\n",
        rules.canonicalize().unwrap().display()
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let port = free_port();
    let child = Command::new(prometheus_tool("prometheus"))
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    Prometheus {
        child,
        dir,
        base: format!("http://127.0.0.1:{port}"),
    }
}

/// `GET /api/v1/{what}` of Prometheus until `done` accepts the JSON `data`.
fn poll(prom: &Prometheus, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let http = reqwest::blocking::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = Value::Null;
    while Instant::now() < deadline {
        if let Ok(body) = http
            .get(format!("{}/api/v1/{what}", prom.base))
            .send()
            .and_then(|r| r.json::<Value>())
        {
            if body["status"] == "success" && done(&body["data"]) {
                return body["data"].clone();
            }
            last = body;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("Prometheus never answered {what} as expected; last: {last}");
}

#[test]
fn prometheus_scrapes_a_node_and_answers_a_per_model_query() {
    let node = Node::start(&[]);
    let (status, body) = node.post(
        "/v1/chat/completions",
        &chat("Hi", json!({"max_tokens": 4})),
    );
    assert_eq!(status, 200, "{body}");
    let target = node.base.trim_start_matches("http://").to_string();
    let prom = start_prometheus(&target);
    let query = format!("query?query=llm_node_tokens_generated_total{{model=\"{MODEL}\"}}");
    let data = poll(&prom, &query, |d| {
        d["result"].as_array().is_some_and(|r| !r.is_empty())
    });
    let series = &data["result"][0];
    assert_eq!(series["metric"]["model"], MODEL, "{data}");
    assert_eq!(series["metric"]["job"], "llm-node", "{data}");
    let generated: f64 = series["value"][1].as_str().unwrap().parse().unwrap();
    assert!(generated >= 1.0, "{data}");
    // The target is healthy and the alert rules loaded and evaluate cleanly.
    poll(&prom, "targets", |d| {
        d["activeTargets"][0]["health"] == "up"
    });
    let rules = poll(&prom, "rules", |d| {
        let rules = d["groups"][0]["rules"].as_array();
        rules.is_some_and(|r| r.iter().all(|r| r["health"] == "ok"))
    });
    assert_eq!(rules["groups"][0]["rules"].as_array().unwrap().len(), 8);
    // Every expression of the dashboard is PromQL this Prometheus evaluates,
    // with Grafana's variables as Grafana would fill them in.
    let http = reqwest::blocking::Client::new();
    for expr in dashboard_exprs() {
        let promql = expr
            .replace("$__rate_interval", "1m")
            .replace("$job", ".*")
            .replace("$model", ".*");
        let body: Value = http
            .get(format!("{}/api/v1/query", prom.base))
            .query(&[("query", promql.as_str())])
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(body["status"], "success", "{promql}: {body}");
    }
    // And no alert fires (or is pending) on a healthy standalone node; the
    // disk alert depends on this machine's disk, not on the node.
    let alerts = poll(&prom, "alerts", |_| true);
    let firing: Vec<&Value> = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["labels"]["alertname"] != "LlmNodeStoreDiskNearlyFull")
        .collect();
    assert!(firing.is_empty(), "{alerts}");
    node.terminate();
}
