//! `llm-node run|show|stop` (Ollama's verbs) against a real node on the
//! bundled model, run as the real binary with `LLM_NODE_URL` pointing at it.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use llm_node_tests::{Node, MODEL};

fn cli() -> PathBuf {
    std::env::var("LLM_NODE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            let exe = std::env::current_exe().unwrap();
            exe.parent()
                .and_then(|p| p.parent())
                .unwrap()
                .join("llm-node")
        })
}

fn llm_node(node: &Node, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(cli())
        .args(args)
        .env("LLM_NODE_URL", &node.base)
        .env_remove("LLM_NODE_ADMIN_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn run_with_a_prompt_prints_the_streamed_answer_and_exits() {
    let node = Node::start(&[]);
    let out = llm_node(&node, &["run", MODEL, "What is the capital of France?"], "");
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "{}: {stdout}{}",
        out.status,
        text(&out.stderr)
    );
    assert!(stdout.trim().len() > 3, "an answer: {stdout:?}");
    assert!(stdout.ends_with('\n'));
    // A name the node does not serve: the node's message, exit code 1.
    let out = llm_node(&node, &["run", "no-such-model", "hi"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("404"), "{}", text(&out.stderr));
}

/// A counter of the node's `/metrics` (the sum of its series matching `filter`).
fn counter(node: &Node, name: &str, filter: &str) -> u64 {
    let body = node.metrics();
    body.lines()
        .filter(|l| l.starts_with(name) && l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[test]
fn run_without_a_prompt_chats_line_by_line_keeping_the_conversation_until_bye() {
    // Answers capped (the CLI sends no `max_tokens`): an answer that rambled
    // until its slot was full left no room for the second turn (seen once).
    let node = Node::start(&["--max-tokens-limit", "48"]);
    let chats = || counter(&node, "llm_node_requests_total", "endpoint=\"chat\"");
    let prompt_tokens = || counter(&node, "llm_node_prompt_tokens_total", "smollm2");
    // One message alone: what its prompt costs.
    let (c0, p0) = (chats(), prompt_tokens());
    let out = llm_node(&node, &["run", MODEL, "My name is Ada."], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let one = prompt_tokens() - p0;
    assert_eq!(chats() - c0, 1);
    // The same message, then a second turn, then /bye: the second prompt
    // carries the first exchange, so the two cost more than twice the first;
    // nothing after /bye is sent.
    let (c1, p1) = (chats(), prompt_tokens());
    let out = llm_node(
        &node,
        &["run", MODEL],
        "My name is Ada.\nWhat is my name?\n/bye\nnever sent\n",
    );
    assert!(
        out.status.success(),
        "{}: {}",
        out.status,
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).trim().len() > 3,
        "{:?}",
        text(&out.stdout)
    );
    assert_eq!(chats() - c1, 2, "two turns, none after /bye");
    let two = prompt_tokens() - p1;
    assert!(
        two > 2 * one,
        "the second turn carried the first: {two} vs {one}"
    );
    // End of input ends the chat as /bye does.
    let out = llm_node(&node, &["run", MODEL], "hi\n");
    assert!(out.status.success());
}

#[test]
fn show_prints_the_models_details_and_stop_unloads_it() {
    let node = Node::start(&[]);
    let out = llm_node(&node, &["show", MODEL], "");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for line in [
        "  Model",
        "    architecture        llama",
        "    context length      8192",
        "    quantization        Q4_1",
        "  Capabilities",
        "    completion",
    ] {
        assert!(stdout.contains(line), "{line:?} missing from:\n{stdout}");
    }
    let out = llm_node(&node, &["stop", MODEL], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), format!("{MODEL}: stopped"));
    assert_eq!(node.admin_model(MODEL)["state"], "stopped");
    let out = llm_node(&node, &["stop", "no-such-model"], "");
    assert_eq!(out.status.code(), Some(1));
}
