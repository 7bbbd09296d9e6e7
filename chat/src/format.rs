//! The family of a model's output syntax, detected from its chat template.
//!
//! A model writes reasoning and tool calls in the syntax it was trained on,
//! and its chat template (which renders past tool calls the same way) names
//! that syntax's marker strings. [`ChatFormat::detect`] looks for those
//! markers the way llama.cpp's `common/chat.cpp` does, most specific family
//! first, so one template maps to exactly one [`ToolSyntax`] and one
//! [`ReasoningSyntax`]. Unknown templates fall back to
//! [`ChatFormat::GENERIC`] (everything is content), never to a wrong family.
//!
//! The marker strings themselves live here too ([`ToolSyntax::triggers`] …),
//! so detection and parsing cannot disagree about a family's spelling.

/// How a model writes tool calls in its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ToolSyntax {
    /// The template knows no tools: output is content.
    None,
    /// gpt-oss harmony: `<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>{args}<|call|>`.
    Harmony,
    /// Hermes / Qwen2.5 / Qwen3 / Granite 4: `<tool_call>{"name": .., "arguments": {..}}</tool_call>`.
    Hermes,
    /// Qwen3-Coder / Qwen3.5 / Nemotron 3 / Step 3.5:
    /// `<tool_call>\n<function=NAME>\n<parameter=KEY>\nVALUE\n</parameter>\n</function>\n</tool_call>`.
    Qwen3Coder,
    /// Seed-OSS: Qwen3-Coder's XML inside `<seed:tool_call>…</seed:tool_call>`.
    SeedOss,
    /// Llama 3.x: a bare `{"name": .., "parameters": {..}}` answer, or `<|python_tag|>` + JSON.
    Llama3,
    /// Mistral Nemo and older: `[TOOL_CALLS][{"name": .., "arguments": {..}}, ..]`.
    MistralJson,
    /// Mistral Small 3.2 / Devstral / Ministral 3: `[TOOL_CALLS]NAME[CALL_ID]id[ARGS]{..}` (call id optional).
    MistralArgs,
    /// DeepSeek R1: `<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n```json\n{..}\n```<｜tool▁call▁end｜>…`.
    DeepSeekR1,
    /// DeepSeek V3.1: `<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{..}<｜tool▁call▁end｜>…`.
    DeepSeekV31,
    /// Granite 3.x: `<|tool_call|>[{"name": .., "arguments": {..}}]`.
    Granite,
    /// Command R7B / Command A: `<|START_ACTION|>[{"tool_call_id": .., "tool_name": .., "parameters": {..}}]<|END_ACTION|>`.
    CommandR7b,
    /// Command R+: `Action:\n```json\n[{"tool_name": .., "parameters": {..}}]\n```.
    CommandRPlus,
    /// Functionary v3.1 (Llama 3.1): `<function=NAME>{..}</function>`, `<|python_tag|>code`.
    FunctionaryV31,
    /// Functionary v3.2: `>>>NAME\n{..}` messages, `>>>all\ntext` for content.
    FunctionaryV32,
    /// FireFunction v2: ` functools[{"name": .., "arguments": {..}}]`.
    FireFunctionV2,
    /// Kimi K2: `<|tool_calls_section_begin|><|tool_call_begin|>functions.NAME:0<|tool_call_argument_begin|>{..}<|tool_call_end|>…`.
    KimiK2,
    /// GLM 4.5 / 4.6 / 4.7, Ling 3, Laguna, Spark:
    /// `<tool_call>NAME\n<arg_key>K</arg_key>\n<arg_value>V</arg_value>\n</tool_call>`.
    Glm45,
    /// MiniMax M2: `<minimax:tool_call><invoke name="NAME"><parameter name="K">V</parameter></invoke></minimax:tool_call>`.
    MiniMaxM2,
    /// Apriel / MiniMax M1: `<tool_calls>[{"name": .., "arguments": {..}}]</tool_calls>` (array or one object a line).
    Apriel,
}

/// How a model marks its reasoning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReasoningSyntax {
    /// No reasoning markers.
    None,
    /// gpt-oss harmony: the `analysis` channel.
    Harmony,
    /// `<think>…</think>`: DeepSeek R1, Qwen3, QwQ, GLM, Kimi thinking, MiniMax M2, SmolLM3, Granite 3.3, ….
    Think,
    /// Seed-OSS: `<seed:think>…</seed:think>`.
    SeedThink,
    /// Magistral / Ministral reasoning: `[THINK]…[/THINK]`.
    MistralThink,
    /// Command R7B / Command A: `<|START_THINKING|>…<|END_THINKING|>`.
    CommandR,
    /// Apriel: `Here are my reasoning steps:\n…[BEGIN FINAL RESPONSE]…[END FINAL RESPONSE]`.
    Apriel,
}

/// A model's output syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChatFormat {
    pub tools: ToolSyntax,
    pub reasoning: ReasoningSyntax,
}

impl ChatFormat {
    /// Plain text: everything is content.
    pub const GENERIC: ChatFormat = ChatFormat {
        tools: ToolSyntax::None,
        reasoning: ReasoningSyntax::None,
    };

    /// gpt-oss (harmony channels for both reasoning and tools).
    pub const HARMONY: ChatFormat = ChatFormat {
        tools: ToolSyntax::Harmony,
        reasoning: ReasoningSyntax::Harmony,
    };

    /// The format of the model whose chat template is `template`.
    pub fn detect(template: &str) -> ChatFormat {
        if template.contains("<|channel|>") && template.contains("<|message|>") {
            return ChatFormat::HARMONY;
        }
        ChatFormat {
            tools: detect_tools(template),
            reasoning: detect_reasoning(template),
        }
    }

    /// Whether a rendered prompt ends inside an opened reasoning block (the
    /// template wrote the opening marker in the generation prompt, as
    /// DeepSeek R1 distills, QwQ and GLM 4.7 do): the value of
    /// [`ParseOptions::reasoning_open`](crate::parse::ParseOptions::reasoning_open).
    pub fn prompt_opens_reasoning(&self, prompt: &str) -> bool {
        match self.reasoning.markers() {
            Some((open, _)) if !open.is_empty() => prompt.trim_end().ends_with(open.trim_end()),
            _ => false,
        }
    }
}

/// Tool syntax by marker strings, most specific first (llama.cpp's order).
fn detect_tools(t: &str) -> ToolSyntax {
    let has = |s: &str| t.contains(s);
    // Families llama.cpp parses with syntaxes we do not implement: never
    // mistake them for a family whose markers they share.
    let unsupported = (has("]<]minimax[>[") && has("<invoke name="))
        || (has("dsml_token") && has("DSML"))
        || has("'<|tool_call>call:'")
        || (has("<|open|>") && has("<|close|>"))
        || has("<atem:function_calls>");
    if unsupported {
        return ToolSyntax::None;
    }
    if has(">>>all") {
        ToolSyntax::FunctionaryV32
    } else if has("<|tool_calls_section_begin|>") {
        ToolSyntax::KimiK2
    } else if has("<minimax:tool_call>") {
        ToolSyntax::MiniMaxM2
    } else if has("<seed:tool_call>") {
        ToolSyntax::SeedOss
    } else if has("<tool_call>") && has("<function=") && has("<parameter=") {
        ToolSyntax::Qwen3Coder
    } else if has("<arg_key>") && has("<tool_call>") {
        ToolSyntax::Glm45
    } else if has("tool▁calls▁begin") {
        // R1 writes the call's type before the separator and a fenced
        // JSON after the name; V3.1 the name, then the bare arguments.
        if has("```json") || has("function<｜tool▁sep｜>") {
            ToolSyntax::DeepSeekR1
        } else {
            ToolSyntax::DeepSeekV31
        }
    } else if has("[TOOL_CALLS]") {
        if has("[ARGS]") {
            ToolSyntax::MistralArgs
        } else {
            ToolSyntax::MistralJson
        }
    } else if has("<|tool_call|>") {
        ToolSyntax::Granite
    } else if has("<|START_ACTION|>") {
        ToolSyntax::CommandR7b
    } else if has("Action:") && has("```json") {
        ToolSyntax::CommandRPlus
    } else if has("<function=") && has("</function>") {
        ToolSyntax::FunctionaryV31
    } else if has(" functools[") {
        ToolSyntax::FireFunctionV2
    } else if has("<tool_calls>") {
        ToolSyntax::Apriel
    } else if has("<tool_call>") {
        ToolSyntax::Hermes
    } else if has("<|start_header_id|>") && (has("<|python_tag|>") || has("\"parameters\"")) {
        ToolSyntax::Llama3
    } else {
        ToolSyntax::None
    }
}

fn detect_reasoning(t: &str) -> ReasoningSyntax {
    let has = |s: &str| t.contains(s);
    if has("<seed:think>") {
        ReasoningSyntax::SeedThink
    } else if has("<|START_THINKING|>") {
        ReasoningSyntax::CommandR
    } else if has("[THINK]") && has("[/THINK]") {
        ReasoningSyntax::MistralThink
    } else if has("[BEGIN FINAL RESPONSE]") {
        ReasoningSyntax::Apriel
    } else if has("</think>") {
        ReasoningSyntax::Think
    } else {
        ReasoningSyntax::None
    }
}

/// How a tool-call block ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlockEnd {
    /// At this marker (or, leniently, at the end of the output).
    Marker(&'static str),
    /// At the end of the output: the block is the rest of the text.
    Eof,
}

/// A marker that opens a tool-call block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Trigger {
    pub marker: &'static str,
    pub end: BlockEnd,
    /// Only at the start of the output (or right after reasoning).
    pub anchored: bool,
}

/// An unanchored trigger (a macro so that the tables are promoted constants).
macro_rules! tr {
    ($marker:expr, $end:expr $(,)?) => {
        Trigger {
            marker: $marker,
            end: $end,
            anchored: false,
        }
    };
}

impl ToolSyntax {
    /// The markers that open a tool-call block (harmony and Functionary v3.2
    /// have parsers of their own and no triggers).
    pub(crate) fn triggers(self) -> &'static [Trigger] {
        use BlockEnd::{Eof, Marker};
        match self {
            ToolSyntax::None | ToolSyntax::Harmony | ToolSyntax::FunctionaryV32 => &[],
            ToolSyntax::Hermes => &[tr!("<tool_call>", Marker("</tool_call>"))],
            ToolSyntax::Qwen3Coder => &[
                tr!("<tool_call>", Marker("</tool_call>")),
                // Some models skip the first opening <tool_call>.
                tr!("<function=", Marker("</function>")),
            ],
            ToolSyntax::SeedOss => &[tr!("<seed:tool_call>", Marker("</seed:tool_call>"))],
            ToolSyntax::Llama3 => &[
                Trigger {
                    marker: "{",
                    end: Eof,
                    anchored: true,
                },
                tr!("<|python_tag|>", Eof),
            ],
            ToolSyntax::MistralJson | ToolSyntax::MistralArgs => &[tr!("[TOOL_CALLS]", Eof)],
            ToolSyntax::DeepSeekR1 | ToolSyntax::DeepSeekV31 => &[tr!(
                "<｜tool▁calls▁begin｜>",
                Marker("<｜tool▁calls▁end｜>")
            )],
            ToolSyntax::Granite => &[tr!("<|tool_call|>", Eof)],
            ToolSyntax::CommandR7b => &[tr!("<|START_ACTION|>", Marker("<|END_ACTION|>"))],
            ToolSyntax::CommandRPlus => &[tr!("Action:", Eof)],
            ToolSyntax::FunctionaryV31 => &[
                tr!("<function=", Marker("</function>")),
                tr!("<|python_tag|>", Eof),
            ],
            ToolSyntax::FireFunctionV2 => &[tr!("functools[", Eof)],
            ToolSyntax::KimiK2 => &[tr!(
                "<|tool_calls_section_begin|>",
                Marker("<|tool_calls_section_end|>"),
            )],
            ToolSyntax::Glm45 => &[tr!("<tool_call>", Marker("</tool_call>"))],
            ToolSyntax::MiniMaxM2 => &[tr!("<minimax:tool_call>", Marker("</minimax:tool_call>"))],
            ToolSyntax::Apriel => &[tr!("<tool_calls>", Marker("</tool_calls>"))],
        }
    }

    /// Closers of this syntax dropped when met outside a block while tools
    /// are parsed (Qwen3-Coder's `</tool_call>` after a bare `<function=`).
    pub(crate) fn stray_closers(self) -> &'static [&'static str] {
        match self {
            ToolSyntax::Qwen3Coder => &["</tool_call>"],
            ToolSyntax::DeepSeekR1 | ToolSyntax::DeepSeekV31 => &["<｜tool▁calls▁end｜>"],
            _ => &[],
        }
    }

    /// Markers of this syntax that are always dropped (turn wrappers).
    pub(crate) fn stray(self) -> &'static [&'static str] {
        match self {
            ToolSyntax::CommandR7b | ToolSyntax::CommandRPlus => &[
                "<|START_RESPONSE|>",
                "<|END_RESPONSE|>",
                "<|CHATBOT_TOKEN|>",
                "<|START_TEXT|>",
                "<|END_TEXT|>",
            ],
            _ => &[],
        }
    }
}

impl ReasoningSyntax {
    /// The (open, close) markers of a reasoning block; `None` for no
    /// reasoning or harmony (which has channels instead).
    pub fn markers(self) -> Option<(&'static str, &'static str)> {
        match self {
            ReasoningSyntax::None | ReasoningSyntax::Harmony => None,
            ReasoningSyntax::Think => Some(("<think>", "</think>")),
            ReasoningSyntax::SeedThink => Some(("<seed:think>", "</seed:think>")),
            ReasoningSyntax::MistralThink => Some(("[THINK]", "[/THINK]")),
            ReasoningSyntax::CommandR => Some(("<|START_THINKING|>", "<|END_THINKING|>")),
            ReasoningSyntax::Apriel => {
                Some(("Here are my reasoning steps:", "[BEGIN FINAL RESPONSE]"))
            }
        }
    }

    /// Markers of this syntax dropped wherever they appear outside reasoning.
    pub(crate) fn stray(self) -> &'static [&'static str] {
        match self {
            ReasoningSyntax::Think => &["<response>", "</response>"],
            ReasoningSyntax::Apriel => &["[END FINAL RESPONSE]"],
            ReasoningSyntax::SeedThink => &["<seed:eos>"],
            _ => &[],
        }
    }
}

/// End-of-generation and end-of-turn tokens of the known families. They end
/// generation and are usually not in the text, but when they are they are
/// never content.
pub(crate) const END_TOKENS: &[&str] = &[
    "<|im_end|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end_of_text|>",
    "<|endoftext|>",
    "<|end▁of▁sentence|>",
    "<｜end▁of▁sentence｜>",
    "<|END_OF_TURN_TOKEN|>",
    "<end_of_turn>",
    "<|return|>",
    "<|call|>",
    "<|end|>",
    "<|user|>",
    "<|observation|>",
    "<|im_middle|>",
    "[/TOOL_CALLS]",
    "<|end_of_role|>",
];

/// Also ends a generation when it closes a tool-call block that runs to the
/// end (Mistral's `</s>`); only stripped there, as HTML may use it in text.
pub(crate) const TRAILING_EOS: &[&str] = &["</s>"];
