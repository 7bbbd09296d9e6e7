//! The output parser per family, on real-shaped model output (most strings
//! are llama.cpp's `tests/test-chat.cpp` fixtures). Every case is also
//! streamed split at every char boundary, char by char, and at random
//! multi-splits, and must merge to exactly the whole-text parse.

use std::collections::BTreeMap;

use llm_node_chat::format::{ChatFormat, ReasoningSyntax as R, ToolSyntax as T};
use llm_node_chat::parse::{
    parse_complete, Delta, Forced, OutputParser, ParseOptions, ParsedOutput, ParsedToolCall,
};
use serde_json::json;

fn fmt(tools: T, reasoning: R) -> ChatFormat {
    ChatFormat { tools, reasoning }
}

fn schemas() -> BTreeMap<String, serde_json::Value> {
    let int = json!({"type": "object", "properties": {"arg1": {"type": "integer"}, "arg2": {"type": "integer"}}});
    let mut s = BTreeMap::new();
    s.insert("special_function".to_owned(), int.clone());
    s.insert("special_function_with_opt".to_owned(), int);
    s.insert(
        "write".to_owned(),
        json!({"type": "object", "properties": {"path": {"type": "string"}, "content": {"type": "string"}}}),
    );
    s
}

fn tools() -> ParseOptions {
    ParseOptions {
        tools: true,
        tool_schemas: schemas(),
        ..Default::default()
    }
}

fn tools_open() -> ParseOptions {
    ParseOptions {
        reasoning_open: true,
        ..tools()
    }
}

fn open() -> ParseOptions {
    ParseOptions {
        reasoning_open: true,
        ..Default::default()
    }
}

fn out(content: &str, reasoning: &str, calls: &[(&str, &str)]) -> ParsedOutput {
    ParsedOutput {
        content: content.to_owned(),
        reasoning: reasoning.to_owned(),
        tool_calls: calls
            .iter()
            .map(|(n, a)| ParsedToolCall {
                name: (*n).to_owned(),
                arguments: (*a).to_owned(),
            })
            .collect(),
    }
}

fn content(c: &str) -> ParsedOutput {
    out(c, "", &[])
}

const HELLO: &str = "Hello, world!\nWhat's up?";

fn stream(format: ChatFormat, options: &ParseOptions, pieces: &[&str]) -> ParsedOutput {
    let mut parser = OutputParser::new(format, options.clone());
    let mut deltas = Vec::new();
    for p in pieces {
        parser.push(p, &mut deltas);
    }
    parser.finish(&mut deltas);
    let mut seen = std::collections::HashSet::new();
    let mut merged = ParsedOutput::default();
    for d in deltas {
        match &d {
            Delta::Content(t) | Delta::Reasoning(t) => assert!(!t.is_empty(), "empty delta"),
            Delta::ToolCall { index, name, .. } => {
                assert_eq!(
                    name.is_some(),
                    seen.insert(*index),
                    "name only in the first delta of {index}"
                );
            }
        }
        merged.apply(d);
    }
    merged
}

/// Checks the whole-text parse, then every way of streaming it.
fn check(format: ChatFormat, options: ParseOptions, text: &str, expected: ParsedOutput) {
    let whole = parse_complete(format, options.clone(), text);
    assert_eq!(whole, expected, "whole parse of {text:?}");
    let bounds: Vec<usize> = (0..=text.len())
        .filter(|&i| text.is_char_boundary(i))
        .collect();
    for &i in &bounds {
        let got = stream(format, &options, &[&text[..i], &text[i..]]);
        assert_eq!(got, whole, "split at byte {i} of {text:?}");
    }
    let chars: Vec<&str> = bounds.windows(2).map(|w| &text[w[0]..w[1]]).collect();
    assert_eq!(
        stream(format, &options, &chars),
        whole,
        "char by char: {text:?}"
    );
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15 ^ text.len() as u64;
    for _ in 0..40 {
        let mut cuts: Vec<usize> = (0..4)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                bounds[(seed >> 33) as usize % bounds.len()]
            })
            .collect();
        cuts.sort_unstable();
        let mut pieces = Vec::new();
        let mut last = 0;
        for c in cuts.into_iter().chain([text.len()]) {
            pieces.push(&text[last..c]);
            last = c;
        }
        assert_eq!(
            stream(format, &options, &pieces),
            whole,
            "pieces {pieces:?}"
        );
    }
}

const ARG1: &str = r#"{"arg1": 1}"#;
const ARG1_BUILT: &str = r#"{"arg1":1}"#;

#[test]
fn harmony_channels_and_calls() {
    let f = ChatFormat::HARMONY;
    let thoughts = "<|channel|>analysis<|message|>I'm\nthinking<|end|><|start|>assistant<|channel|>final<|message|>Hello, world!\nWhat's up?";
    check(
        f,
        tools(),
        "<|channel|>final<|message|>Hello, world!\nWhat's up?",
        content(HELLO),
    );
    check(
        f,
        tools(),
        "<|channel|>commentary<|message|>Hello, world!\nWhat's up?",
        content(HELLO),
    );
    check(f, tools(), thoughts, out(HELLO, "I'm\nthinking", &[]));
    check(
        f,
        tools(),
        &format!("{thoughts}<|return|>"),
        out(HELLO, "I'm\nthinking", &[]),
    );
    check(
        f,
        tools(),
        "<|channel|>analysis<|message|>I'm\nthinking",
        out("", "I'm\nthinking", &[]),
    );
    for text in [
        " to=functions.special_function<|channel|>analysis<|message|>{\"arg1\": 1}",
        "<|channel|>analysis to=functions.special_function<|message|>{\"arg1\": 1}",
        " to=functions.special_function<|channel|>analysis <|constrain|>json<|message|>{\"arg1\": 1}",
        "<|channel|>commentary to=functions.special_function<|message|>{\"arg1\": 1}",
        "<|channel|>commentary to=functions.special_function <|constrain|>json<|message|>{\"arg1\": 1}<|call|>",
    ] {
        check(f, tools(), text, out("", "", &[("special_function", ARG1)]));
    }
    check(
        f,
        tools(),
        "<|channel|>analysis<|message|>I'm\nthinking<|end|><|start|>assistant to=functions.special_function<|channel|>analysis<|message|>{\"arg1\": 1}",
        out("", "I'm\nthinking", &[("special_function", ARG1)]),
    );
    let edit = r#"{"oldString": "if (part < railCount - 1) {", "newString": "if (part < 4) {", "replaceAll": false}"#;
    check(
        f,
        tools(),
        &format!("<|channel|>analysis<|message|>Thinking about edit...<|end|><|start|>assistant<|channel|>commentary to=functions.edit <|constrain|>json<|message|>{edit}"),
        out("", "Thinking about edit...", &[("edit", edit)]),
    );
    check(
        f,
        Default::default(),
        "<|channel|>analysis<|message|>I need to output the invoice details in JSON<|end|><|start|>assistant<|channel|>final <|constrain|>json<|message|>{\"amount\": 123.45, \"date\": \"2025-12-03\"}",
        out("{\"amount\": 123.45, \"date\": \"2025-12-03\"}", "I need to output the invoice details in JSON", &[]),
    );
    // Unsolicited built-in tools: dropped.
    check(
        f,
        Default::default(),
        "<|channel|>analysis<|message|>I will execute python to say hello<|end|><|start|>assistant to=container.exec<|channel|>commentary<|message|>python3 -c 'print(\"hello\")'",
        out("", "I will execute python to say hello", &[]),
    );
    check(
        f,
        Default::default(),
        "<|channel|>analysis<|message|>I will execute python to say hello<|end|><|start|>assistant<|channel|>commentary to=python <|constrain|>code<|message|>print(\"hello\")",
        out("", "I will execute python to say hello", &[]),
    );
    check(
        f,
        Default::default(),
        "<|channel|>commentary to=assistant<|channel|>analysis<|message|>I'm\nthinking<|end|><|start|>assistant<|channel|>final<|message|>Hello, world!\nWhat's up?",
        out(HELLO, "I'm\nthinking", &[]),
    );
    check(
        f,
        Default::default(),
        "<|channel|>analysis<|message|>I'm\nthinking<|end|><|start|>assistant<|channel|>commentary to=assistant<|channel|>final<|message|>Hello, world!\nWhat's up?",
        out(HELLO, "I'm\nthinking", &[]),
    );
    // Two calls in one turn, each ended by <|call|>.
    check(
        f,
        tools(),
        "<|channel|>commentary to=functions.a <|constrain|>json<|message|>{}<|call|><|start|>assistant<|channel|>commentary to=functions.b<|message|>{\"x\": [1, 2]}<|call|>",
        out("", "", &[("a", "{}"), ("b", "{\"x\": [1, 2]}")]),
    );
    // Without tools the call syntax is content; a broken call is content.
    check(
        f,
        Default::default(),
        "<|channel|>commentary to=functions.f<|message|>{\"a\": 1}",
        content("{\"a\": 1}"),
    );
    check(
        f,
        tools(),
        "<|channel|>commentary to=functions.f<|message|>{\"a\": ",
        content("{\"a\": "),
    );
    check(
        f,
        Default::default(),
        "Plain text, no header.",
        content("Plain text, no header."),
    );
}

#[test]
fn think_reasoning() {
    let f = fmt(T::None, R::Think);
    check(
        f,
        Default::default(),
        "<think>I'm\nthinking</think>Hello, world!\nWhat's up?",
        out(HELLO, "I'm\nthinking", &[]),
    );
    check(
        f,
        open(),
        "I'm\nthinking</think>Hello, world!\nWhat's up?",
        out(HELLO, "I'm\nthinking", &[]),
    );
    check(
        f,
        open(),
        "</think>Hello, world!\nWhat's up?",
        content(HELLO),
    );
    check(
        f,
        open(),
        "\n</think>\n\nHello, world!\nWhat's up?",
        content(HELLO),
    );
    check(
        f,
        open(),
        "I'm\nthinking\n</think>\n\nHello, world!\nWhat's up?<|im_end|>",
        out(HELLO, "I'm\nthinking", &[]),
    );
    check(
        f,
        Default::default(),
        "<think>\nstill thinking",
        out("", "still thinking", &[]),
    );
    check(
        f,
        Default::default(),
        "<think>\n\n</think>\n\nHi 😀 there",
        content("Hi 😀 there"),
    );
    // Only an opening at the start is a marker; later it is text.
    check(
        f,
        Default::default(),
        "Use a <think> tag.",
        content("Use a <think> tag."),
    );
    check(
        f,
        Default::default(),
        "Hello, world!\nWhat's up?",
        content(HELLO),
    );
    // Granite 3.3 wraps the answer in <response>.
    check(
        f,
        Default::default(),
        "<think>I'm thinking</think><response>Hello</response>",
        out("Hello", "I'm thinking", &[]),
    );
}

#[test]
fn other_reasoning_markers() {
    check(
        fmt(T::SeedOss, R::SeedThink),
        Default::default(),
        "<seed:think>I'm thinking</seed:think>Hello",
        out("Hello", "I'm thinking", &[]),
    );
    check(
        fmt(T::MistralArgs, R::MistralThink),
        Default::default(),
        "[THINK]I'm thinking[/THINK]Hello",
        out("Hello", "I'm thinking", &[]),
    );
    check(
        fmt(T::CommandR7b, R::CommandR),
        Default::default(),
        "<|START_RESPONSE|>Hello, world!\nWhat's up?<|END_RESPONSE|>",
        content(HELLO),
    );
    check(
        fmt(T::Apriel, R::Apriel),
        open(),
        "I'm\nthinking\n[BEGIN FINAL RESPONSE]\nHello, world!\nWhat's up?",
        out(HELLO, "I'm\nthinking", &[]),
    );
    check(
        fmt(T::Apriel, R::Apriel),
        Default::default(),
        "Here are my reasoning steps:\nI'm thinking\n[BEGIN FINAL RESPONSE]\nHello[END FINAL RESPONSE]",
        out("Hello", "I'm thinking", &[]),
    );
}

#[test]
fn hermes_tool_calls() {
    let f = fmt(T::Hermes, R::Think);
    let call =
        "<tool_call>\n{\"name\": \"special_function\", \"arguments\": {\"arg1\": 1}}\n</tool_call>";
    check(f, tools(), call, out("", "", &[("special_function", ARG1)]));
    check(
        f,
        tools(),
        &format!("{call}<|im_end|>"),
        out("", "", &[("special_function", ARG1)]),
    );
    check(
        f,
        tools_open(),
        &format!("I'm\nthinking\n</think>\n\nLet me check.\n{call}\n{call}"),
        out(
            "Let me check.\n",
            "I'm\nthinking",
            &[("special_function", ARG1), ("special_function", ARG1)],
        ),
    );
    // Unterminated at the end (stopped at EOG): still a call.
    check(
        f,
        tools(),
        "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}",
        out("", "", &[("f", "{}")]),
    );
    // Arguments given as a string holding JSON.
    check(
        f,
        tools(),
        "<tool_call>{\"name\": \"f\", \"arguments\": \"{\\\"a\\\": 1}\"}</tool_call>",
        out("", "", &[("f", "{\"a\": 1}")]),
    );
    // Without tools, or malformed: content, never lost.
    check(f, Default::default(), call, content(call));
    let bad = "<tool_call>\n{\"name\": special_function}\n</tool_call>";
    check(f, tools(), bad, content(bad));
    check(
        f,
        tools(),
        "Hi <tool_call>{\"name\":",
        content("Hi <tool_call>{\"name\":"),
    );
    // Granite 4 uses the same syntax.
    check(
        fmt(T::Hermes, R::None),
        tools(),
        "<tool_call>\n{\"name\": \"special_function\", \"arguments\": {\"arg1\": 1}}\n</tool_call>",
        out("", "", &[("special_function", ARG1)]),
    );
}

#[test]
fn qwen3_coder_xml_calls() {
    let f = fmt(T::Qwen3Coder, R::None);
    let one = "<tool_call>\n<function=special_function>\n<parameter=arg1>\n1\n</parameter>\n</function>\n</tool_call>";
    check(
        f,
        tools(),
        one,
        out("", "", &[("special_function", ARG1_BUILT)]),
    );
    check(
        f,
        tools(),
        "<function=special_function>\n<parameter=arg1>\n1\n</parameter>\n</function>\n</tool_call>",
        out("", "", &[("special_function", ARG1_BUILT)]),
    );
    check(
        f,
        tools(),
        "Let me call it.\n<function=special_function>\n<parameter=arg1>\n1\n</parameter>\n</function>\n</tool_call>",
        out("Let me call it.\n", "", &[("special_function", ARG1_BUILT)]),
    );
    let two = "<function=special_function>\n<parameter=arg1>\n1\n</parameter>\n</function>\n</tool_call>\n<tool_call>\n<function=special_function_with_opt>\n<parameter=arg1>\n1\n</parameter>\n<parameter=arg2>\n2\n</parameter>\n</function>\n</tool_call>";
    check(
        f,
        tools(),
        two,
        out(
            "",
            "",
            &[
                ("special_function", ARG1_BUILT),
                ("special_function_with_opt", r#"{"arg1":1,"arg2":2}"#),
            ],
        ),
    );
    // String parameters keep their text (multi-line code included).
    check(
        f,
        tools(),
        "<tool_call>\n<function=write>\n<parameter=path>\na.rs\n</parameter>\n<parameter=content>\nfn main() {\n    println!(\"1\");\n}\n</parameter>\n</function>\n</tool_call><|im_end|>",
        out("", "", &[("write", r#"{"path":"a.rs","content":"fn main() {\n    println!(\"1\");\n}"}"#)]),
    );
    // Unknown schema: values are strings.
    check(
        f,
        ParseOptions {
            tools: true,
            ..Default::default()
        },
        one,
        out("", "", &[("special_function", r#"{"arg1":"1"}"#)]),
    );
    check(f, Default::default(), one, content(one));
}

#[test]
fn llama3_json_calls() {
    let f = fmt(T::Llama3, R::None);
    check(f, tools(), HELLO, content(HELLO));
    check(
        f,
        tools(),
        "{\"name\": \"special_function\", \"parameters\": {\"arg1\": 1}}",
        out("", "", &[("special_function", ARG1)]),
    );
    check(
        f,
        tools(),
        "{\"type\": \"function\", \"name\": \"special_function\", \"parameters\": {\"arg1\": 1}}<|eom_id|>",
        out("", "", &[("special_function", ARG1)]),
    );
    check(
        f,
        tools(),
        "<|python_tag|>{\"name\": \"special_function\", \"parameters\": {\"arg1\": 1}}",
        out("", "", &[("special_function", ARG1)]),
    );
    // A JSON answer that is not a call stays content.
    check(f, tools(), "{\"answer\": 42}", content("{\"answer\": 42}"));
    check(
        f,
        Default::default(),
        "{\"name\": \"f\", \"parameters\": {}}",
        content("{\"name\": \"f\", \"parameters\": {}}"),
    );
}

#[test]
fn mistral_calls() {
    check(
        fmt(T::MistralJson, R::None),
        tools(),
        "[TOOL_CALLS][{\"name\": \"special_function\", \"arguments\": {\"arg1\": 1}, \"id\": \"123456789\"}]",
        out("", "", &[("special_function", ARG1)]),
    );
    let f = fmt(T::MistralArgs, R::None);
    check(
        f,
        tools(),
        "[TOOL_CALLS]special_function[CALL_ID]123456789[ARGS]{\"arg1\": 1}",
        out("", "", &[("special_function", ARG1)]),
    );
    check(
        f,
        tools(),
        "[TOOL_CALLS]special_function[CALL_ID]000000001[ARGS]{\"arg1\": 1}[TOOL_CALLS]special_function_with_opt[CALL_ID]000000002[ARGS]{\"arg1\": 1, \"arg2\": 2}",
        out("", "", &[("special_function", ARG1), ("special_function_with_opt", "{\"arg1\": 1, \"arg2\": 2}")]),
    );
    check(
        f,
        tools(),
        "Hello, world!\nWhat's up?[TOOL_CALLS]special_function[ARGS]{\"arg1\": 1}</s>",
        out(HELLO, "", &[("special_function", ARG1)]),
    );
    check(
        f,
        tools(),
        "[TOOL_CALLS]broken[ARGS]{\"arg1\"",
        content("[TOOL_CALLS]broken[ARGS]{\"arg1\""),
    );
}

#[test]
fn deepseek_calls() {
    check(
        fmt(T::DeepSeekR1, R::Think),
        tools_open(),
        "</think><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>special_function\n```json\n{\"arg1\": 1}```<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
        out("", "", &[("special_function", ARG1)]),
    );
    let f = fmt(T::DeepSeekV31, R::Think);
    check(
        f,
        tools(),
        "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_time<｜tool▁sep｜>{\"city\": \"XYZCITY\"}<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
        out("", "", &[("get_time", "{\"city\": \"XYZCITY\"}")]),
    );
    check(
        f,
        tools_open(),
        "REASONING</think><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_time<｜tool▁sep｜>{\"city\": \"Tokyo\"}<｜tool▁call▁end｜><｜tool▁call▁begin｜>get_time<｜tool▁sep｜>{\"city\": \"Paris\"}<｜tool▁call▁end｜><｜tool▁calls▁end｜><｜end▁of▁sentence｜>",
        out("", "REASONING", &[("get_time", "{\"city\": \"Tokyo\"}"), ("get_time", "{\"city\": \"Paris\"}")]),
    );
}

#[test]
fn granite_and_command_r_calls() {
    check(
        fmt(T::Granite, R::Think),
        tools(),
        "<|tool_call|>[{\"name\": \"special_function\", \"arguments\": {\"arg1\": 1}}]",
        out("", "", &[("special_function", ARG1)]),
    );
    check(
        fmt(T::CommandR7b, R::CommandR),
        tools(),
        "<|START_THINKING|>I'm\nthinking<|END_THINKING|><|START_ACTION|>[\n    {\"tool_call_id\": \"0\", \"tool_name\": \"special_function\", \"parameters\": {\"arg1\": 1}}\n]<|END_ACTION|>",
        out("", "I'm\nthinking", &[("special_function", ARG1)]),
    );
    check(
        fmt(T::CommandRPlus, R::None),
        tools(),
        "Action:\n```json\n[{\"tool_name\": \"special_function\", \"parameters\": {\"arg1\": 1}}]\n```",
        out("", "", &[("special_function", ARG1)]),
    );
    check(
        fmt(T::CommandRPlus, R::None),
        tools(),
        "<|CHATBOT_TOKEN|>Hello, world!\nWhat's up?<|END_OF_TURN_TOKEN|>",
        content(HELLO),
    );
}

#[test]
fn functionary_and_firefunction_calls() {
    let v31 = fmt(T::FunctionaryV31, R::None);
    check(v31, tools(), HELLO, content(HELLO));
    check(
        v31,
        tools(),
        "<function=special_function>{\"arg1\": 1}</function>",
        out("", "", &[("special_function", ARG1)]),
    );
    check(
        v31,
        tools(),
        "<|python_tag|>print('hi')",
        out("", "", &[("python", r#"{"code":"print('hi')"}"#)]),
    );
    let v32 = fmt(T::FunctionaryV32, R::None);
    check(
        v32,
        tools(),
        "all\nHello, world!\nWhat's up?",
        content(HELLO),
    );
    check(
        v32,
        tools(),
        "special_function\n{\"arg1\": 1}",
        out("", "", &[("special_function", ARG1)]),
    );
    check(
        v32,
        tools(),
        "all\nLet me check.>>>special_function\n{\"arg1\": 1}>>>special_function\n{\"arg1\": 1}",
        out(
            "Let me check.",
            "",
            &[("special_function", ARG1), ("special_function", ARG1)],
        ),
    );
    check(
        v32,
        Default::default(),
        "all\nHello, world!\nWhat's up?",
        content(HELLO),
    );
    let ff = fmt(T::FireFunctionV2, R::None);
    check(ff, tools(), HELLO, content(HELLO));
    check(
        ff,
        tools(),
        " functools[{\"name\": \"special_function\", \"arguments\": {\"arg1\": 1}}]",
        out("", "", &[("special_function", ARG1)]),
    );
}

#[test]
fn kimi_glm_minimax_apriel_seed_calls() {
    check(
        fmt(T::KimiK2, R::Think),
        tools(),
        "<|tool_calls_section_begin|><|tool_call_begin|>functions.special_function:0<|tool_call_argument_begin|>{\"arg1\": 1}<|tool_call_end|><|tool_calls_section_end|>",
        out("", "", &[("special_function", ARG1)]),
    );
    let glm = fmt(T::Glm45, R::Think);
    check(
        glm,
        tools(),
        "<tool_call>special_function\n<arg_key>arg1</arg_key>\n<arg_value>1</arg_value>\n</tool_call>",
        out("", "", &[("special_function", ARG1_BUILT)]),
    );
    check(
        glm,
        tools_open(),
        "I'm\nthinking</think><tool_call>special_function<arg_key>arg1</arg_key><arg_value>1</arg_value></tool_call>",
        out("", "I'm\nthinking", &[("special_function", ARG1_BUILT)]),
    );
    let mm = fmt(T::MiniMaxM2, R::Think);
    check(
        mm,
        tools_open(),
        "Let's call a tool:\n</think>\n\n<minimax:tool_call>\n<invoke name=\"empty_args\">\n</invoke>\n</minimax:tool_call>",
        out("", "Let's call a tool:", &[("empty_args", "{}")]),
    );
    check(
        mm,
        tools_open(),
        "\n</think>\n\n<minimax:tool_call>\n<invoke name=\"special_function\">\n<parameter name=\"arg1\">1</parameter>\n</invoke>\n</minimax:tool_call>",
        out("", "", &[("special_function", ARG1_BUILT)]),
    );
    let apriel = fmt(T::Apriel, R::Apriel);
    check(
        apriel,
        tools(),
        "<tool_calls>[{\"name\": \"special_function\", \"arguments\": {\"arg1\": 1}}]</tool_calls>",
        out("", "", &[("special_function", ARG1)]),
    );
    check(
        apriel,
        tools_open(),
        "I'm\nthinking\n[BEGIN FINAL RESPONSE]\n<tool_calls>[{\"name\": \"special_function\", \"arguments\": {\"arg1\": 1}}]</tool_calls>",
        out("", "I'm\nthinking", &[("special_function", ARG1)]),
    );
    check(
        fmt(T::Apriel, R::None),
        tools(),
        "<tool_calls>\n{\"name\": \"a\", \"arguments\": {}}\n{\"name\": \"b\", \"arguments\": {\"x\": 1}}\n</tool_calls>",
        out("", "", &[("a", "{}"), ("b", "{\"x\": 1}")]),
    );
    check(
        fmt(T::SeedOss, R::SeedThink),
        tools(),
        "<seed:think>I'm thinking</seed:think><seed:tool_call>\n<function=special_function>\n<parameter=arg1>\n1\n</parameter>\n</function>\n</seed:tool_call>",
        out("", "I'm thinking", &[("special_function", ARG1_BUILT)]),
    );
}

#[test]
fn forced_tool_calls() {
    let required = ParseOptions {
        forced: Some(Forced::Calls),
        ..Default::default()
    };
    check(
        fmt(T::Hermes, R::None),
        required.clone(),
        "[{\"name\": \"special_function\", \"arguments\": {\"arg1\": 1}}, {\"name\": \"g\", \"arguments\": {}}]",
        out("", "", &[("special_function", ARG1), ("g", "{}")]),
    );
    check(
        ChatFormat::HARMONY,
        required.clone(),
        "[{\"name\": \"f\", \"arguments\": {}}]",
        out("", "", &[("f", "{}")]),
    );
    // Cut off by max_tokens inside the array: the complete calls stand.
    check(
        fmt(T::Hermes, R::None),
        required.clone(),
        "[\n{\"name\": \"f\", \"arguments\": {}},\n{\"name\": \"g\", \"argu",
        out("", "", &[("f", "{}")]),
    );
    check(
        fmt(T::Hermes, R::None),
        required,
        "[{\"name\": \"f\", \"argu",
        content("[{\"name\": \"f\", \"argu"),
    );
    let named = ParseOptions {
        forced: Some(Forced::Function("special_function".into())),
        ..Default::default()
    };
    check(
        fmt(T::Llama3, R::None),
        named.clone(),
        "{\"arg1\": 1}",
        out("", "", &[("special_function", ARG1)]),
    );
    check(ChatFormat::GENERIC, named, "not json", content("not json"));
}

#[test]
fn generic_output_is_content_with_end_tokens_dropped() {
    check(
        ChatFormat::GENERIC,
        tools(),
        "Hello, world!\nWhat's up?<|im_end|>",
        content(HELLO),
    );
    check(
        ChatFormat::GENERIC,
        tools(),
        "a <|eot_id|>b",
        content("a b"),
    );
    check(
        ChatFormat::GENERIC,
        tools(),
        "<tool_call>{}</tool_call>",
        content("<tool_call>{}</tool_call>"),
    );
}

#[test]
fn plain_content_streams_without_holding_back() {
    let mut p = OutputParser::new(fmt(T::Hermes, R::Think), tools());
    let mut d = Vec::new();
    p.push("<think>a</think>Hello wor", &mut d);
    p.push("ld <tool", &mut d);
    assert_eq!(
        d,
        vec![
            Delta::Reasoning("a".into()),
            Delta::Content("Hello wor".into()),
            Delta::Content("ld ".into())
        ]
    );
}
