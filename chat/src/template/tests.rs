use super::*;

fn msg(role: &str, content: &str) -> ChatMessage {
    ChatMessage::text(role, content)
}

fn chat(messages: &[ChatMessage]) -> ChatPrompt {
    ChatPrompt {
        messages: messages.to_vec(),
        add_generation_prompt: true,
        ..ChatPrompt::default()
    }
}

fn calling(name: &str, arguments: &str) -> ChatMessage {
    ChatMessage {
        role: "assistant".into(),
        tool_calls: vec![ToolCall {
            id: "abc123def".into(),
            name: name.into(),
            arguments: arguments.into(),
        }],
        ..ChatMessage::default()
    }
}

#[test]
fn chatml_renders_roles_and_generation_prompt() {
    let t = ChatTemplate::new(CHATML, "", "<|im_end|>").unwrap();
    let out = t
        .render(&chat(&[msg("system", "be brief"), msg("user", "hi")]))
        .unwrap();
    assert_eq!(
        out,
        "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn python_string_methods_and_block_trimming_work() {
    let src = "{{ bos_token }}{% for m in messages %}\n    {% if m.role %}{{ m.role.upper() }}:{{ m.content.strip() }};{% endif %}\n{% endfor %}";
    let t = ChatTemplate::new(src, "<s>", "</s>").unwrap();
    assert_eq!(
        t.render(&chat(&[msg("user", "  x ")])).unwrap(),
        "<s>USER:x;"
    );
}

#[test]
fn raise_exception_becomes_an_error() {
    let src = "{% if messages[-1].role == 'assistant' %}{{ raise_exception('last turn is the assistant') }}{% endif %}";
    let t = ChatTemplate::new(src, "", "").unwrap();
    let err = t.render(&chat(&[msg("assistant", "x")])).unwrap_err();
    assert!(
        err.to_string().contains("last turn is the assistant"),
        "{err}"
    );
}

#[test]
fn a_broken_template_is_rejected_at_load() {
    let err = ChatTemplate::new("{% for %}", "", "")
        .err()
        .expect("must not compile");
    assert!(err.to_string().contains("does not compile"), "{err}");
}

/// Gemma 2's shape: a system message raises.
const NO_SYSTEM: &str = "{% if messages and messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for m in messages %}<{{ m.role }}>{{ m.content }}</{{ m.role }}>{% endfor %}";

#[test]
fn a_system_message_is_folded_into_the_first_user_turn_when_the_template_rejects_it() {
    let t = ChatTemplate::new(NO_SYSTEM, "", "").unwrap();
    let out = t.render(&chat(&[msg("system", "be brief"), msg("user", "hi")]));
    assert_eq!(out.unwrap(), "<user>be brief\nhi</user>");
    let alone = t.render(&chat(&[msg("system", "be brief")])).unwrap();
    assert_eq!(alone, "");
}

#[test]
fn a_template_that_drops_system_messages_also_gets_them_folded() {
    let src = "{% for m in messages if m.role != 'system' %}[{{ m.content }}]{% endfor %}";
    let t = ChatTemplate::new(src, "", "").unwrap();
    let out = t
        .render(&chat(&[msg("system", "S"), msg("user", "U")]))
        .unwrap();
    assert_eq!(out, "[S\nU]");
}

#[test]
fn a_template_with_a_system_role_keeps_it() {
    let t = ChatTemplate::new(CHATML, "", "").unwrap();
    assert!(t.caps.system_role);
    let out = t
        .render(&chat(&[msg("developer", "D"), msg("user", "U")]))
        .unwrap();
    assert!(out.starts_with("<|im_start|>system\nD"), "{out}");
}

#[test]
fn tools_tool_calls_and_tool_results_have_the_openai_shape() {
    let src = "{{ tools | tojson }}|{% for m in messages %}{{ m.role }}:{{ m.content is none }}{% for c in m.tool_calls or [] %}{{ c.id }},{{ c.type }},{{ c.function.name }},{{ c.function.arguments.city }},{{ c.function.arguments | tojson }}{% endfor %}{% if m.role == 'tool' %}{{ m.tool_call_id }},{{ m.name }},{{ m.content }}{% endif %};{% endfor %}";
    let t = ChatTemplate::new(src, "", "").unwrap();
    let prompt = ChatPrompt {
        tools_json: Some(r#"[{"type":"function","function":{"name":"weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}]"#.into()),
        ..chat(&[
            msg("user", "hi"),
            calling("weather", r#"{"city":"Paris","days":2}"#),
            ChatMessage {
                tool_call_id: Some("abc123def".into()),
                name: Some("weather".into()),
                ..msg("tool", "sunny")
            },
        ])
    };
    assert_eq!(
        t.render(&prompt).unwrap(),
        r#"[{"type": "function", "function": {"name": "weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]|user:False;assistant:Trueabc123def,function,weather,Paris,{"city": "Paris", "days": 2};tool:Falseabc123def,weather,sunny;"#
    );
}

#[test]
fn tools_are_undefined_without_tools() {
    let t = ChatTemplate::new("{{ tools is defined }}", "", "").unwrap();
    assert_eq!(t.render(&chat(&[msg("user", "hi")])).unwrap(), "False");
}

#[test]
fn a_template_that_prints_arguments_as_text_gets_the_json_text() {
    let src = "{% for m in messages %}{% for c in m.tool_calls or [] %}{{ c.function.arguments }}{% endfor %}{% endfor %}";
    let t = ChatTemplate::new(src, "", "").unwrap();
    assert!(!t.caps.object_arguments);
    let out = t
        .render(&chat(&[msg("user", "hi"), calling("f", r#"{"a":1}"#)]))
        .unwrap();
    assert_eq!(out, r#"{"a":1}"#);
}

#[test]
fn a_template_that_needs_string_content_on_tool_calls_gets_an_empty_string() {
    let src = "{% for m in messages %}{{ m.role + ':' + m.content }}{% for c in m.tool_calls or [] %}{{ c.function.arguments | tojson }}{% endfor %};{% endfor %}";
    let t = ChatTemplate::new(src, "", "").unwrap();
    assert!(t.caps.non_null_content);
    let out = t
        .render(&chat(&[msg("user", "hi"), calling("f", r#"{"a":1}"#)]))
        .unwrap();
    assert_eq!(out, r#"user:hi;assistant:{"a": 1};"#);
}

#[test]
fn invalid_tool_arguments_are_an_error() {
    let t = ChatTemplate::new(CHATML, "", "").unwrap();
    let err = t
        .render(&chat(&[msg("user", "hi"), calling("f", "{oops")]))
        .unwrap_err();
    assert!(err.to_string().contains("not valid JSON"), "{err}");
}

#[test]
fn kwargs_and_reasoning_reach_the_template() {
    let src = "{{ enable_thinking }} {{ reasoning_effort }} {{ custom }} {% for m in messages %}{{ m.reasoning_content }}={{ m.thinking }}{% endfor %}";
    let t = ChatTemplate::new(src, "", "").unwrap();
    let reasoned = ChatMessage {
        reasoning_content: Some("hmm".into()),
        ..msg("assistant", "ok")
    };
    let mut prompt = chat(&[msg("user", "hi"), reasoned]);
    assert_eq!(t.render(&prompt).unwrap(), "True   =hmm=hmm");
    prompt.template_kwargs_json = Some(r#"{"enable_thinking": false, "custom": [1]}"#.into());
    prompt.reasoning_effort = Some("high".into());
    assert_eq!(t.render(&prompt).unwrap(), "False high [1] =hmm=hmm");
    prompt.template_kwargs_json = Some("[1]".into());
    assert!(t.render(&prompt).is_err());
}

#[test]
fn date_globals_are_today() {
    let t = ChatTemplate::new("{{ date_string }}|{{ strftime_now('%Y-%m-%d') }}", "", "").unwrap();
    let now = chrono::Local::now();
    let out = t.render(&chat(&[msg("user", "hi")])).unwrap();
    assert_eq!(
        out,
        format!("{}|{}", now.format("%d %b %Y"), now.format("%Y-%m-%d"))
    );
}

#[test]
fn an_endless_template_fails_instead_of_hanging() {
    let src =
        "{% for i in range(100000) %}{% for j in range(100000) %}{{ '' }}{% endfor %}{% endfor %}";
    let mut t = ChatTemplate::new(src, "", "").unwrap();
    // The real budget takes seconds in a debug build; the mechanism is the same.
    t.env.set_fuel(Some(100_000));
    let err = t.render(&chat(&[msg("user", "hi")])).unwrap_err();
    assert!(err.to_string().contains("too many steps"), "{err}");
}

#[test]
fn a_huge_output_fails_at_the_cap() {
    let src = "{% for i in range(100) %}{{ 'x' * 1000000 }}{% endfor %}";
    let t = ChatTemplate::new(src, "", "").unwrap();
    let err = t.render(&chat(&[msg("user", "hi")])).unwrap_err();
    assert!(err.to_string().contains("longer than"), "{err}");
}

#[test]
fn chat_template_stays_send() {
    fn assert_send<T: Send>() {}
    assert_send::<ChatTemplate>();
}

#[test]
fn zz_dump_corpus() {
    let dir = "/root/.cache/llm-node/llama-cpp-src/models/templates";
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jinja"))
        .collect();
    names.sort();
    std::fs::create_dir_all("/tmp/corpus-out").unwrap();
    for p in names {
        let src = std::fs::read_to_string(&p).unwrap();
        let t = ChatTemplate::new(&src, "<s>", "</s>").unwrap();
        let name = p.file_stem().unwrap().to_string_lossy().to_string();
        println!("CAPS {name}: {:?}", t.caps);
        let tools = r#"[{"type": "function", "function": {"name": "get_weather", "description": "Current weather of a city", "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}}, "required": ["city"]}}}]"#;
        let prompt = ChatPrompt {
            tools_json: Some(tools.into()),
            ..chat(&[
                msg("system", "SYS"),
                msg("user", "Weather in Paris?"),
                calling("get_weather", r#"{"city":"Paris"}"#),
                ChatMessage {
                    tool_call_id: Some("abc123def".into()),
                    name: Some("get_weather".into()),
                    ..msg("tool", "sunny")
                },
            ])
        };
        let out = t.render(&prompt).unwrap_or_else(|e| e.to_string());
        std::fs::write(format!("/tmp/corpus-out/{name}.tools.txt"), out).unwrap();
        let prompt = ChatPrompt {
            template_kwargs_json: Some(r#"{"enable_thinking": false}"#.into()),
            ..chat(&[
                msg("system", "SYS"),
                msg("user", "U1"),
                ChatMessage {
                    reasoning_content: Some("R1".into()),
                    ..msg("assistant", "A1")
                },
                msg("user", "U2"),
            ])
        };
        std::fs::write(
            format!("/tmp/corpus-out/{name}.off.txt"),
            t.render(&prompt).unwrap_or_else(|e| e.to_string()),
        )
        .unwrap();
        let prompt = ChatPrompt {
            template_kwargs_json: Some(r#"{"enable_thinking": true}"#.into()),
            ..prompt
        };
        std::fs::write(
            format!("/tmp/corpus-out/{name}.on.txt"),
            t.render(&prompt).unwrap_or_else(|e| e.to_string()),
        )
        .unwrap();
    }
}

#[test]
fn zz_debug_null() {
    for name in [
        "Qwen-Qwen3-0.6B",
        "openai-gpt-oss-120b",
        "Bielik-11B-v3.0-Instruct",
        "mistralai-Ministral-3-14B-Reasoning-2512",
    ] {
        let src = std::fs::read_to_string(format!(
            "/root/.cache/llm-node/llama-cpp-src/models/templates/{name}.jinja"
        ))
        .unwrap();
        let t = ChatTemplate::new(&src, "<s>", "</s>").unwrap();
        let caps = Caps {
            non_null_content: false,
            ..t.caps
        };
        let mut m = vec![
            msg("user", "U"),
            calling("ipython", r#"{"a": 1}"#),
            ChatMessage {
                tool_call_id: Some("abc123def".into()),
                name: Some("ipython".into()),
                ..msg("tool", "R")
            },
        ];
        m[1].content = None;
        println!(
            "ERR {name}: {:?}",
            t.render_messages(&m, &ChatPrompt::default(), caps).err()
        );
    }
}

#[test]
fn a_template_without_tool_support_gets_tools_calls_and_results_as_text() {
    let src =
        "{% for m in messages if m.role != 'tool' %}<{{ m.role }}>{{ m.content }}{% endfor %}";
    let t = ChatTemplate::new(src, "", "").unwrap();
    let prompt = ChatPrompt {
        tools_json: Some(r#"[{"type": "function", "function": {"name": "f"}}]"#.into()),
        ..chat(&[
            msg("user", "hi"),
            calling("f", r#"{"a":1}"#),
            ChatMessage {
                tool_call_id: Some("abc123def".into()),
                name: Some("f".into()),
                ..msg("tool", "done")
            },
        ])
    };
    let want = concat!(
        "<system>You can call any of the following tools to satisfy the user's requests: [\n",
        "  {\n    \"type\": \"function\",\n    \"function\": {\n      \"name\": \"f\"\n    }\n  }\n]",
        "<user>hi",
        "<assistant>{\n  \"tool_calls\": [\n    {\n      \"name\": \"f\",\n      \"arguments\": {\n        \"a\": 1\n      },\n      \"id\": \"abc123def\"\n    }\n  ]\n}",
        "<user>{\n  \"tool_response\": {\n    \"tool\": \"f\",\n    \"content\": \"done\",\n    \"tool_call_id\": \"abc123def\"\n  }\n}",
    );
    assert_eq!(t.render(&prompt).unwrap(), want);
}

#[test]
fn firefunction_gets_its_tools_as_indented_json_in_functions() {
    let t = ChatTemplate::new("functools[{{ functions }}]", "", "").unwrap();
    let mut prompt = chat(&[msg("user", "hi")]);
    assert_eq!(t.render(&prompt).unwrap(), "functools[]");
    prompt.tools_json = Some(r#"[{"name": "f"}]"#.into());
    assert_eq!(
        t.render(&prompt).unwrap(),
        "functools[[\n  {\n    \"name\": \"f\"\n  }\n]]"
    );
}
