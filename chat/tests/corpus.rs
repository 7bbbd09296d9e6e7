//! Renders every chat template of llama.cpp's template corpus
//! (`models/templates/*.jinja`, unpacked by `scripts/setup.sh` into
//! `$LLM_NODE_LLAMA_CPP_SRC`, default `~/.cache/llm-node/llama-cpp-src`) in
//! three scenarios: a multi-turn chat with a system message, a tool call with
//! its result, and reasoning switched on and off. Every template must render
//! every scenario and show the texts that scenario puts in.

use std::path::PathBuf;

use llm_node_chat::template::ChatTemplate;
use llm_node_protocol::{ChatMessage, ChatPrompt, ToolCall};

/// Templates in the pinned llama.cpp corpus (`SDIST_VERSION` in setup.sh).
const CORPUS_SIZE: usize = 70;

fn corpus() -> Vec<(String, String)> {
    let root = std::env::var_os("LLM_NODE_LLAMA_CPP_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect("HOME is not set");
            PathBuf::from(home).join(".cache/llm-node/llama-cpp-src")
        });
    let dir = root.join("models/templates");
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "template corpus {} is missing ({e}): run scripts/setup.sh (or set LLM_NODE_LLAMA_CPP_SRC)",
            dir.display()
        )
    });
    let mut templates: Vec<(String, String)> = entries
        .map(|e| e.expect("read corpus directory").path())
        .filter(|p| p.extension().is_some_and(|x| x == "jinja"))
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            let source =
                std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (name, source)
        })
        .collect();
    templates.sort();
    assert!(
        templates.len() >= CORPUS_SIZE,
        "found {} templates in {}, expected {CORPUS_SIZE}: run scripts/setup.sh",
        templates.len(),
        dir.display()
    );
    templates
}

/// A BOS/EOS pair for a template (some templates print them).
fn special_tokens(source: &str) -> (&'static str, &'static str) {
    if source.contains("<|im_start|>") {
        ("", "<|im_end|>")
    } else if source.contains("<|begin_of_text|>") || source.contains("<|eot_id|>") {
        ("<|begin_of_text|>", "<|eot_id|>")
    } else {
        ("<s>", "</s>")
    }
}

fn msg(role: &str, content: &str) -> ChatMessage {
    ChatMessage::text(role, content)
}

/// Renders `prompts` with every template; `check` gets the template's name,
/// source and outputs (one per prompt) and returns what is missing. Panics
/// listing every template that failed.
fn run_scenario(
    scenario: &str,
    prompts: &[ChatPrompt],
    check: impl Fn(&str, &str, &[String]) -> Vec<String>,
) {
    let templates = corpus();
    let mut failures = Vec::new();
    for (name, source) in &templates {
        if let Err(e) = render_all(source, prompts).and_then(|outs| {
            let missing = check(name, source, &outs);
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("missing {missing:?}"))
            }
        }) {
            failures.push(format!("{name}: {e}"));
        }
    }
    let passed = templates.len() - failures.len();
    eprintln!("{scenario}: {passed}/{} templates pass", templates.len());
    assert!(
        failures.is_empty(),
        "{scenario}: {passed}/{} templates pass; failures:\n{}",
        templates.len(),
        failures.join("\n")
    );
}

/// Every prompt rendered with one template, or the first error.
fn render_all(source: &str, prompts: &[ChatPrompt]) -> Result<Vec<String>, String> {
    let (bos, eos) = special_tokens(source);
    let tmpl = ChatTemplate::new(source, bos, eos).map_err(|e| e.to_string())?;
    prompts
        .iter()
        .enumerate()
        .map(|(i, prompt)| match tmpl.render(prompt) {
            Ok(out) if out.trim().is_empty() => Err(format!("prompt #{i}: empty output")),
            Ok(out) => Ok(out),
            Err(e) => Err(format!("prompt #{i}: {e}")),
        })
        .collect()
}

/// The needles some output lacks, each with the index of that output.
fn missing_of(outs: &[String], needles: &[&str]) -> Vec<String> {
    let mut missing = Vec::new();
    for (i, out) in outs.iter().enumerate() {
        missing.extend(
            needles
                .iter()
                .filter(|n| !out.contains(**n))
                .map(|n| format!("#{i}: {n}")),
        );
    }
    missing
}

#[test]
fn every_corpus_template_renders_a_multi_turn_chat_with_a_system_message() {
    let prompt = ChatPrompt {
        messages: vec![
            msg("system", "You are terse. SYSTEM-NEEDLE"),
            msg("user", "First question USER-ONE"),
            msg("assistant", "First answer ASSISTANT-ONE"),
            msg("user", "Second question USER-TWO"),
        ],
        add_generation_prompt: true,
        ..ChatPrompt::default()
    };
    run_scenario("system + multi-turn", &[prompt], |_, _, outs| {
        missing_of(
            outs,
            &["SYSTEM-NEEDLE", "USER-ONE", "ASSISTANT-ONE", "USER-TWO"],
        )
    });
}

const TOOLS: &str = r#"[{"type": "function", "function": {"name": "get_weather", "description": "Current weather of a city", "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}, "unit": {"type": "string", "description": "Temperature unit", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}}]"#;

#[test]
fn every_corpus_template_renders_tools_a_tool_call_and_its_result() {
    let prompt = ChatPrompt {
        messages: vec![
            msg("user", "Weather in Paris? USER-TOOL"),
            ChatMessage {
                role: "assistant".into(),
                tool_calls: vec![ToolCall {
                    // Mistral templates demand 9 alphanumeric characters.
                    id: "a1b2c3d4e".into(),
                    name: "get_weather".into(),
                    arguments: r#"{"city": "Paris"}"#.into(),
                }],
                ..ChatMessage::default()
            },
            ChatMessage {
                tool_call_id: Some("a1b2c3d4e".into()),
                name: Some("get_weather".into()),
                ..msg("tool", "TOOL-RESULT sunny, 22 C")
            },
        ],
        tools_json: Some(TOOLS.into()),
        add_generation_prompt: true,
        ..ChatPrompt::default()
    };
    run_scenario("tools", &[prompt], |_, _, outs| {
        missing_of(
            outs,
            &[
                "USER-TOOL",
                "get_weather",
                "Paris",
                "TOOL-RESULT",
                "City name",
            ],
        )
    });
}

#[test]
fn every_corpus_template_renders_reasoning_on_and_off() {
    let prompt = |kwargs: &str| ChatPrompt {
        messages: vec![
            msg("user", "Think first USER-R1"),
            ChatMessage {
                reasoning_content: Some("Some thoughts REASONING-NEEDLE".into()),
                ..msg("assistant", "Answer ASSISTANT-R1")
            },
            msg("user", "And now? USER-R2"),
        ],
        template_kwargs_json: Some(kwargs.into()),
        reasoning_effort: Some("high".into()),
        add_generation_prompt: true,
        ..ChatPrompt::default()
    };
    let prompts = [
        prompt(r#"{"enable_thinking": true}"#),
        prompt(r#"{"enable_thinking": false}"#),
    ];
    run_scenario("reasoning on/off", &prompts, |_, source, outs| {
        let mut missing = missing_of(outs, &["USER-R1", "ASSISTANT-R1", "USER-R2"]);
        if source.contains("<|channel|>") {
            missing.extend(missing_of(outs, &["Reasoning: high"]));
        }
        // A template that reads `enable_thinking` (not its own namespace
        // field of that name, as Nemotron Nano v2) must render on and off differently.
        let reads_flag = source
            .replace("ns.enable_thinking", "")
            .replace("namespace(enable_thinking", "")
            .contains("enable_thinking");
        if reads_flag && outs[0] == outs[1] {
            missing.push("a difference between enable_thinking true and false".into());
        }
        missing
    });
}

#[test]
fn every_corpus_template_renders_a_long_chat_with_many_tools_within_its_bounds() {
    let tools: Vec<String> = (0..32)
        .map(|i| {
            TOOLS
                .trim_start_matches('[')
                .trim_end_matches(']')
                .replace("get_weather", &format!("tool_{i}"))
        })
        .collect();
    let mut messages = vec![msg("system", "You are terse.")];
    for i in 0..100 {
        messages.push(msg("user", &format!("Question {i}")));
        messages.push(ChatMessage {
            role: "assistant".into(),
            tool_calls: vec![ToolCall {
                id: format!("{i:09}"),
                name: format!("tool_{}", i % 32),
                arguments: r#"{"city": "Paris", "unit": "celsius"}"#.into(),
            }],
            ..ChatMessage::default()
        });
        messages.push(ChatMessage {
            tool_call_id: Some(format!("{i:09}")),
            name: Some(format!("tool_{}", i % 32)),
            ..msg("tool", &format!("Result {i}"))
        });
        messages.push(msg("assistant", &format!("Answer {i}")));
    }
    messages.push(msg("user", "LAST-QUESTION"));
    let prompt = ChatPrompt {
        messages,
        tools_json: Some(format!("[{}]", tools.join(", "))),
        add_generation_prompt: true,
        ..ChatPrompt::default()
    };
    run_scenario("long chat, 32 tools", &[prompt], |_, _, outs| {
        missing_of(outs, &["LAST-QUESTION", "tool_31"])
    });
}
