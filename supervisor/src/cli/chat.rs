//! `llm-node run|show|stop`: Ollama's verbs, as clients of a running node.
//!
//! - `run MODEL [PROMPT]`: with a prompt, streams the answer to stdout and
//!   exits; without, a chat on stdin (one message a line, `>>> ` prompt on a
//!   terminal) that keeps the conversation, until `/bye` or end of input.
//!   Uses `/v1/chat/completions` with `stream: true` (SSE), so it works on any
//!   node version; an error event ends the answer with the node's message.
//! - `show MODEL`: what `/api/show` says, as `ollama show` prints it.
//! - `stop MODEL`: unloads the model (`/admin/models/{model}/unload`).

use std::io::{BufRead, BufReader, IsTerminal, Write};

use serde_json::{json, Value};

use super::store::request;
use super::Target;

fn client() -> Result<reqwest::blocking::Client, String> {
    // A load and a long answer take a while: no overall timeout.
    reqwest::blocking::Client::builder()
        .timeout(None)
        .connect_timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())
}

/// `llm-node run MODEL [PROMPT]`.
///
/// # Errors
/// The node's error message, or an I/O error of stdin/stdout.
pub fn run(target: &Target, model: &str, prompt: Option<&str>) -> Result<(), String> {
    let http = client()?;
    let mut out = std::io::stdout();
    if let Some(prompt) = prompt {
        let messages = vec![json!({"role": "user", "content": prompt})];
        answer(&http, target, model, &messages, &mut out)?;
        return Ok(());
    }
    let stdin = std::io::stdin();
    let terminal = stdin.is_terminal();
    let mut messages = Vec::new();
    let mut lines = stdin.lock().lines();
    loop {
        if terminal {
            print!(">>> ");
            out.flush().map_err(|e| e.to_string())?;
        }
        let Some(line) = lines.next() else { break };
        let line = line.map_err(|e| e.to_string())?;
        let line = line.trim();
        match line {
            "/bye" => break,
            "" => continue,
            _ => {}
        }
        messages.push(json!({"role": "user", "content": line}));
        match answer(&http, target, model, &messages, &mut out) {
            Ok(text) => messages.push(json!({"role": "assistant", "content": text})),
            Err(e) => {
                // The conversation goes on without the failed turn.
                messages.pop();
                eprintln!("llm-node: {e}");
            }
        }
        writeln!(out).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Streams one answer to `out` (ending with a newline); returns its text.
fn answer(
    http: &reqwest::blocking::Client,
    target: &Target,
    model: &str,
    messages: &[Value],
    out: &mut impl Write,
) -> Result<String, String> {
    let body = json!({"model": model, "messages": messages, "stream": true});
    let resp = request(
        http,
        target,
        reqwest::Method::POST,
        "/v1/chat/completions",
        Some(body),
    )?;
    let mut text = String::new();
    for line in BufReader::new(resp).lines() {
        let line = line.map_err(|e| format!("the answer broke off: {e}"))?;
        match sse_piece(&line)? {
            Piece::Text(piece) => {
                out.write_all(piece.as_bytes())
                    .and_then(|()| out.flush())
                    .map_err(|e| e.to_string())?;
                text.push_str(&piece);
            }
            Piece::Done => break,
            Piece::Nothing => {}
        }
    }
    writeln!(out).map_err(|e| e.to_string())?;
    Ok(text)
}

/// What one SSE line of a chat completion stream carries.
#[derive(Debug, PartialEq)]
pub enum Piece {
    Text(String),
    Done,
    Nothing,
}

/// Reads one line of an OpenAI chat stream.
///
/// # Errors
/// The message of an error event.
pub fn sse_piece(line: &str) -> Result<Piece, String> {
    let Some(data) = line.strip_prefix("data:").map(str::trim) else {
        return Ok(Piece::Nothing);
    };
    if data == "[DONE]" {
        return Ok(Piece::Done);
    }
    let event: Value = serde_json::from_str(data).map_err(|e| format!("bad event: {e}"))?;
    if let Some(error) = event.get("error") {
        let message = error["message"].as_str().or(error.as_str());
        return Err(message.unwrap_or("the answer failed").to_string());
    }
    match event["choices"][0]["delta"]["content"].as_str() {
        Some(s) if !s.is_empty() => Ok(Piece::Text(s.to_string())),
        _ => Ok(Piece::Nothing),
    }
}

/// `llm-node show MODEL`.
///
/// # Errors
/// The node's error message.
pub fn show(target: &Target, model: &str) -> Result<String, String> {
    let http = client()?;
    let body = json!({ "model": model });
    let resp = request(
        &http,
        target,
        reqwest::Method::POST,
        "/api/show",
        Some(body),
    )?;
    let body: Value = resp.json().map_err(|e| e.to_string())?;
    Ok(show_text(&body))
}

/// `/api/show`'s answer as `ollama show` prints it.
pub fn show_text(show: &Value) -> String {
    let info = &show["model_info"];
    let arch = info["general.architecture"].as_str().unwrap_or("");
    let arch_key = |k: &str| info[format!("{arch}.{k}")].clone();
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        v => v.to_string(),
    };
    let rows = [
        ("architecture", text(&json!(arch))),
        ("parameters", text(&show["details"]["parameter_size"])),
        ("context length", text(&arch_key("context_length"))),
        ("embedding length", text(&arch_key("embedding_length"))),
        ("quantization", text(&show["details"]["quantization_level"])),
    ];
    let mut out = String::from("  Model\n");
    for (name, value) in rows.iter().filter(|(_, v)| !v.is_empty()) {
        out.push_str(&format!("    {name:<20}{value}\n"));
    }
    let capabilities: Vec<&str> = show["capabilities"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !capabilities.is_empty() {
        out.push_str("\n  Capabilities\n");
        for c in capabilities {
            out.push_str(&format!("    {c}\n"));
        }
    }
    let parameters = show["parameters"].as_str().unwrap_or("");
    if !parameters.is_empty() {
        out.push_str("\n  Parameters\n");
        for line in parameters.lines() {
            let (name, value) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            out.push_str(&format!("    {name:<20}{}\n", value.trim()));
        }
    }
    out.trim_end().to_string()
}

/// `llm-node stop MODEL`.
///
/// # Errors
/// The node's error message.
pub fn stop(target: &Target, model: &str) -> Result<String, String> {
    let http = client()?;
    let path = format!("/admin/models/{model}/unload");
    let resp = request(&http, target, reqwest::Method::POST, &path, None)?;
    let state: Value = resp.json().unwrap_or(Value::Null);
    Ok(format!(
        "{model}: {}",
        state["state"].as_str().unwrap_or("stopped")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_lines_give_text_done_or_the_error() {
        let cases = [
            (
                r#"data: {"choices":[{"delta":{"content":"Hel"}}]}"#,
                Ok(Piece::Text("Hel".into())),
            ),
            (
                r#"data: {"choices":[{"delta":{"role":"assistant","content":""}}]}"#,
                Ok(Piece::Nothing),
            ),
            (
                r#"data: {"choices":[],"usage":{"total_tokens":3}}"#,
                Ok(Piece::Nothing),
            ),
            ("data: [DONE]", Ok(Piece::Done)),
            ("", Ok(Piece::Nothing)),
            (": keep-alive", Ok(Piece::Nothing)),
            (
                r#"data: {"error":{"message":"worker crashed"}}"#,
                Err("worker crashed".to_string()),
            ),
        ];
        for (line, want) in cases {
            assert_eq!(sse_piece(line), want, "{line}");
        }
        assert!(sse_piece("data: {not json").is_err());
    }

    #[test]
    fn show_prints_model_capabilities_and_parameters() {
        let body = json!({
            "details": {"parameter_size": "134.52M", "quantization_level": "Q4_1"},
            "model_info": {"general.architecture": "llama", "llama.context_length": 8192,
                           "llama.embedding_length": 576},
            "capabilities": ["completion", "tools"],
            "parameters": format!("{:<30} \"<|im_end|>\"\n{:<30} 0.2", "stop", "temperature"),
        });
        let want = [
            "  Model",
            "    architecture        llama",
            "    parameters          134.52M",
            "    context length      8192",
            "    embedding length    576",
            "    quantization        Q4_1",
            "",
            "  Capabilities",
            "    completion",
            "    tools",
            "",
            "  Parameters",
            "    stop                \"<|im_end|>\"",
            "    temperature         0.2",
        ]
        .join("\n");
        assert_eq!(show_text(&body), want);
        assert_eq!(show_text(&json!({})), "  Model");
    }
}
