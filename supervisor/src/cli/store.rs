//! `llm-node pull|list|rm`: clients of a running node's `/api/pull`,
//! `/api/tags` and `/api/delete`. Going through the node (rather than the disk)
//! means a pulled model is served at once and `rm` can refuse a model in use.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use super::Target;

fn client() -> Result<reqwest::blocking::Client, String> {
    // Pulls of large models take long: no overall timeout, a generous read one.
    reqwest::blocking::Client::builder()
        .timeout(None)
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())
}

/// Sends one admin-API request; non-2xx answers become the node's error message.
pub(crate) fn request(
    http: &reqwest::blocking::Client,
    target: &Target,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<reqwest::blocking::Response, String> {
    let mut req = http.request(
        method,
        format!("{}{path}", target.url.trim_end_matches('/')),
    );
    if let Some(key) = &target.key {
        req = req.bearer_auth(key);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req
        .send()
        .map_err(|e| format!("cannot reach {}: {e}", target.url))?;
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status();
    let body: Value = resp.json().unwrap_or(Value::Null);
    let msg = body["error"]["message"]
        .as_str()
        .or(body["error"].as_str())
        .unwrap_or("request failed");
    Err(format!("{status}: {msg}"))
}

/// `llm-node pull NAME`: one progress bar per blob (bytes, speed, ETA).
///
/// # Errors
/// The node's error message.
pub fn pull(target: &Target, model: &str) -> Result<String, String> {
    let http = client()?;
    let resp = request(
        &http,
        target,
        reqwest::Method::POST,
        "/api/pull",
        Some(json!({"model": model})),
    )?;
    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template(
        "{msg:<20} {bar:30} {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} eta {eta}",
    )
    .expect("valid template");
    let mut by_digest: HashMap<String, ProgressBar> = HashMap::new();
    let status_line = bars.add(ProgressBar::new_spinner());
    for line in BufReader::new(resp).lines() {
        let line = line.map_err(|e| format!("connection lost: {e}"))?;
        let Ok(event) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if let Some(error) = event["error"].as_str() {
            status_line.abandon();
            return Err(error.to_string());
        }
        let status = event["status"].as_str().unwrap_or_default();
        match (event["digest"].as_str(), event["total"].as_u64()) {
            (Some(digest), Some(total)) => {
                let bar = by_digest.entry(digest.to_string()).or_insert_with(|| {
                    let bar = bars.add(ProgressBar::new(total));
                    bar.set_style(style.clone());
                    bar.set_message(status.to_string());
                    bar
                });
                bar.set_position(event["completed"].as_u64().unwrap_or(0));
                if bar.position() >= total {
                    bar.finish();
                }
            }
            _ => status_line.set_message(status.to_string()),
        }
        if status == "success" {
            status_line.finish_and_clear();
            return Ok(format!("{model}: pulled"));
        }
    }
    Ok(format!("{model}: done"))
}

/// `llm-node list`: the stored models, and those configured by path.
///
/// # Errors
/// The node's error message.
pub fn list(target: &Target, as_json: bool) -> Result<String, String> {
    let body: Value = request(&client()?, target, reqwest::Method::GET, "/api/tags", None)?
        .json()
        .map_err(|e| e.to_string())?;
    if as_json {
        return Ok(body.to_string());
    }
    let mut out = format!("{:<56} {:>10}  {}", "NAME", "SIZE", "MODIFIED");
    for m in body["models"].as_array().into_iter().flatten() {
        let size = m["size"].as_u64().unwrap_or(0);
        out.push_str(&format!(
            "\n{:<56} {:>9}M  {}",
            m["name"].as_str().unwrap_or("?"),
            size >> 20,
            m["modified_at"].as_str().unwrap_or("-")
        ));
    }
    Ok(out)
}

/// `llm-node rm NAME`.
///
/// # Errors
/// The node's error message (in use, not found, ...).
pub fn rm(target: &Target, model: &str) -> Result<String, String> {
    request(
        &client()?,
        target,
        reqwest::Method::DELETE,
        "/api/delete",
        Some(json!({"model": model})),
    )?;
    Ok(format!("deleted {model}"))
}
