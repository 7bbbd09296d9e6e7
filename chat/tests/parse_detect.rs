//! `ChatFormat::detect` over llama.cpp's template corpus: every template is
//! listed with the family it must be detected as, so a new detection rule
//! cannot silently move another template into a wrong family.

use std::path::PathBuf;

use llm_node_chat::format::{ChatFormat, ReasoningSyntax as R, ToolSyntax as T};

fn corpus_dir() -> PathBuf {
    let root = std::env::var_os("LLM_NODE_LLAMA_CPP_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect("HOME is set");
            PathBuf::from(home).join(".cache/llm-node/llama-cpp-src")
        });
    let dir = root.join("models/templates");
    assert!(
        dir.is_dir(),
        "llama.cpp template corpus missing at {}: run scripts/setup.sh \
         (or set LLM_NODE_LLAMA_CPP_SRC)",
        dir.display()
    );
    dir
}

fn detect(name: &str) -> ChatFormat {
    let path = corpus_dir().join(name);
    let src = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ChatFormat::detect(&src)
}

/// Every corpus template and its family. Templates of families llama.cpp
/// parses with syntaxes not implemented here (Gemma 4, DeepSeek V3.2 DSML,
/// MiniMax M3, Kimi K3, LFM2, GigaChat, Nemotron Nano v2, …) must detect as
/// no tool syntax (their reasoning markers may still be known).
const CORPUS: &[(&str, T, R)] = &[
    ("Apertus-8B-Instruct.jinja", T::None, R::None),
    ("Apriel-1.6-15b-Thinker-fixed.jinja", T::Apriel, R::Apriel),
    ("Bielik-11B-v3.0-Instruct.jinja", T::Hermes, R::Think),
    ("ByteDance-Seed-OSS.jinja", T::SeedOss, R::SeedThink),
    ("Cohere2MoE.jinja", T::CommandR7b, R::CommandR),
    (
        "CohereForAI-c4ai-command-r-plus-tool_use.jinja",
        T::CommandRPlus,
        R::None,
    ),
    (
        "CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja",
        T::CommandR7b,
        R::CommandR,
    ),
    ("GLM-4.6.jinja", T::Glm45, R::Think),
    ("GLM-4.7-Flash.jinja", T::Glm45, R::Think),
    ("GigaChat3-10B-A1.8B.jinja", T::None, R::None),
    ("GigaChat3.1-10B-A1.8B.jinja", T::None, R::None),
    ("HuggingFaceTB-SmolLM3-3B.jinja", T::None, R::Think),
    ("Kimi-K2-Instruct.jinja", T::KimiK2, R::None),
    ("Kimi-K2-Thinking.jinja", T::KimiK2, R::Think),
    ("Kimi-K3.jinja", T::None, R::None),
    ("LFM2-8B-A1B.jinja", T::None, R::None),
    ("LFM2.5-8B-A1B.jinja", T::None, R::Think),
    ("LFM2.5-Instruct.jinja", T::None, R::Think),
    ("MiMo-VL.jinja", T::Hermes, R::None),
    ("MiniMax-M1.jinja", T::Apriel, R::None),
    ("MiniMax-M2.jinja", T::MiniMaxM2, R::Think),
    ("MiniMax-M3.jinja", T::None, R::None),
    (
        "Mistral-Small-3.2-24B-Instruct-2506.jinja",
        T::MistralArgs,
        R::None,
    ),
    (
        "NVIDIA-Nemotron-3-Nano-30B-A3B-BF16.jinja",
        T::Qwen3Coder,
        R::Think,
    ),
    ("NVIDIA-Nemotron-Nano-v2.jinja", T::None, R::Think),
    (
        "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja",
        T::Hermes,
        R::None,
    ),
    (
        "NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja",
        T::Hermes,
        R::None,
    ),
    ("Qwen-QwQ-32B.jinja", T::Hermes, R::Think),
    ("Qwen-Qwen2.5-7B-Instruct.jinja", T::Hermes, R::None),
    ("Qwen-Qwen3-0.6B.jinja", T::Hermes, R::Think),
    ("Qwen3-Coder.jinja", T::Qwen3Coder, R::None),
    ("Qwen3.5-4B.jinja", T::Qwen3Coder, R::Think),
    ("Reka-Edge.jinja", T::Hermes, R::Think),
    ("Spark2.5.jinja", T::Glm45, R::Think),
    ("StepFun3.5-Flash.jinja", T::Qwen3Coder, R::Think),
    (
        "deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja",
        T::DeepSeekR1,
        R::Think,
    ),
    (
        "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja",
        T::DeepSeekR1,
        R::Think,
    ),
    ("deepseek-ai-DeepSeek-V3.1.jinja", T::DeepSeekV31, R::Think),
    ("deepseek-ai-DeepSeek-V3.2.jinja", T::None, R::Think),
    (
        "deepseek-ai-DeepSeek-V4-Flash-0731.jinja",
        T::None,
        R::Think,
    ),
    ("deepseek-ai-DeepSeek-V4.jinja", T::None, R::Think),
    (
        "fireworks-ai-llama-3-firefunction-v2.jinja",
        T::FireFunctionV2,
        R::None,
    ),
    ("google-gemma-2-2b-it.jinja", T::None, R::None),
    ("google-gemma-4-31B-it-interleaved.jinja", T::None, R::None),
    ("google-gemma-4-31B-it.jinja", T::None, R::None),
    (
        "ibm-granite-granite-3.3-2B-Instruct.jinja",
        T::Granite,
        R::Think,
    ),
    ("ibm-granite-granite-4.0.jinja", T::Hermes, R::None),
    ("ibm-granite-granite-4.1.jinja", T::Hermes, R::None),
    ("inclusionai-ling-3.0-flash.jinja", T::Glm45, R::Think),
    ("llama-cpp-deepseek-r1.jinja", T::DeepSeekR1, R::Think),
    ("llama-cpp-rwkv-world.jinja", T::None, R::Think),
    (
        "meetkai-functionary-medium-v3.1.jinja",
        T::FunctionaryV31,
        R::None,
    ),
    (
        "meetkai-functionary-medium-v3.2.jinja",
        T::FunctionaryV32,
        R::None,
    ),
    ("meta-llama-Llama-3.1-8B-Instruct.jinja", T::Llama3, R::None),
    ("meta-llama-Llama-3.2-3B-Instruct.jinja", T::Llama3, R::None),
    (
        "meta-llama-Llama-3.3-70B-Instruct.jinja",
        T::Llama3,
        R::None,
    ),
    ("microsoft-Phi-3.5-mini-instruct.jinja", T::None, R::None),
    (
        "mistralai-Ministral-3-14B-Reasoning-2512.jinja",
        T::MistralArgs,
        R::MistralThink,
    ),
    (
        "mistralai-Mistral-Nemo-Instruct-2407.jinja",
        T::MistralJson,
        R::None,
    ),
    ("moonshotai-Kimi-K2.jinja", T::KimiK2, R::None),
    ("muse-glimmer.jinja", T::None, R::None),
    ("openai-gpt-oss-120b.jinja", T::Harmony, R::Harmony),
    ("openbmb-MiniCPM5-1B.jinja", T::None, R::Think),
    ("poolside-Laguna-S-2.1.jinja", T::Glm45, R::Think),
    ("poolside-Laguna-XS-2.1.jinja", T::Glm45, R::Think),
    ("poolside-Laguna-XS.2.jinja", T::Glm45, R::Think),
    ("tencent-Hy3.jinja", T::None, R::None),
    ("unsloth-Apriel-1.5.jinja", T::Apriel, R::Apriel),
    (
        "unsloth-mistral-Devstral-Small-2507.jinja",
        T::MistralArgs,
        R::None,
    ),
    ("upstage-Solar-Open-100B.jinja", T::None, R::None),
];

#[test]
fn every_corpus_template_detects_as_its_listed_family() {
    let mut wrong = Vec::new();
    for &(name, tools, reasoning) in CORPUS {
        let got = detect(name);
        let want = ChatFormat { tools, reasoning };
        if got != want {
            wrong.push(format!("{name}: got {got:?}, want {want:?}"));
        }
    }
    assert!(wrong.is_empty(), "misdetected:\n{}", wrong.join("\n"));
}

#[test]
fn every_corpus_template_is_listed() {
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(corpus_dir()).expect("corpus readable") {
        let name = entry
            .expect("dir entry")
            .file_name()
            .into_string()
            .expect("utf-8 name");
        if name.ends_with(".jinja") && !CORPUS.iter().any(|(n, _, _)| *n == name) {
            missing.push(name);
        }
    }
    assert!(
        missing.is_empty(),
        "templates without an expected family: {missing:?}"
    );
}

#[test]
fn served_models_detect_as_their_families() {
    assert_eq!(detect("openai-gpt-oss-120b.jinja"), ChatFormat::HARMONY);
    assert_eq!(detect("Qwen3-Coder.jinja").tools, T::Qwen3Coder);
    assert_eq!(detect("Qwen-Qwen2.5-7B-Instruct.jinja").tools, T::Hermes);
    assert_eq!(
        detect("meta-llama-Llama-3.1-8B-Instruct.jinja").tools,
        T::Llama3
    );
}

#[test]
fn unknown_template_is_generic() {
    let t = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}";
    assert_eq!(ChatFormat::detect(t), ChatFormat::GENERIC);
}

#[test]
fn generation_prompt_that_opens_think_opens_reasoning() {
    let f = detect("GLM-4.7-Flash.jinja");
    assert!(f.prompt_opens_reasoning("<|assistant|><think>"));
    assert!(f.prompt_opens_reasoning("<|im_start|>assistant\n<think>\n"));
    assert!(!f.prompt_opens_reasoning("<|assistant|><think></think>"));
    assert!(!ChatFormat::GENERIC.prompt_opens_reasoning("<think>"));
}
