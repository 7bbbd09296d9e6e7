use super::*;

/// A directory with `a.gguf`, `b.gguf` and `t.jinja`.
fn fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["a.gguf", "b.gguf"] {
        std::fs::write(dir.path().join(f), b"GGUF").unwrap();
    }
    std::fs::write(dir.path().join("t.jinja"), "{{ messages }}").unwrap();
    dir
}

fn parse_in(dir: &Path, text: &str) -> Result<ModelsFile, FileError> {
    parse(text, Path::new("models.toml"), dir)
}

const EVERY_FIELD: &str = r#"
[defaults]
ctx_size = 2048
parallel = 2
n_gpu_layers = 10
main_gpu = 1
threads = 3
embeddings = false
preload = false
ttl = 600
max_tokens = 256
max_tokens_limit = 1024

[defaults.sampling]
temperature = 0.5
top_p = 0.9
top_k = 30
min_p = 0.1
repeat_penalty = 1.1
repeat_last_n = 32
presence_penalty = 0.5
frequency_penalty = -0.5
seed = 7
stop = ["</s>"]

[models.alpha]
path = "a.gguf"
aliases = ["first", "gpt-4o"]
ctx_size = 512
parallel = 8
n_gpu_layers = 0
main_gpu = 0
threads = 1
embeddings = true
preload = true
ttl = 0
pin = [0, 1]
chat_template = "t.jinja"
draft_model = "b.gguf"
max_tokens = 16
max_tokens_limit = 32
sampling = { temperature = 0.0, seed = 1 }

[models."beta:q4"]
store = "beta:q4"
"#;

#[test]
fn every_field_is_read_and_defaults_are_inherited() {
    let dir = fixture();
    let file = parse_in(dir.path(), EVERY_FIELD).unwrap();
    let names: Vec<_> = file.models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["alpha", "beta:q4"]);
    let a = &file.models[0];
    assert_eq!(a.source, Source::Path(dir.path().join("a.gguf")));
    assert_eq!(a.line, 26);
    let p = &a.profile;
    assert_eq!(p.aliases, ["first", "gpt-4o"]);
    assert_eq!(
        (
            p.ctx_size,
            p.parallel,
            p.n_gpu_layers,
            p.main_gpu,
            p.threads
        ),
        (Some(512), Some(8), Some(0), Some(0), Some(1))
    );
    assert_eq!((p.embeddings, p.preload), (Some(true), Some(true)));
    assert_eq!(p.ttl, Some(Duration::ZERO));
    assert_eq!(p.pin.as_deref(), Some(&[0, 1][..]));
    assert_eq!(p.chat_template.as_deref(), Some("{{ messages }}"));
    assert_eq!(p.draft_model, Some(dir.path().join("b.gguf")));
    assert_eq!(
        p.max_tokens,
        MaxTokens {
            default: Some(16),
            max: Some(32)
        }
    );
    assert_eq!(p.sampling.temperature, Some(0.0));
    assert_eq!(p.sampling.seed, Some(1));
    assert_eq!(p.sampling.top_k, Some(30), "inherited from [defaults]");

    let b = &file.models[1];
    assert_eq!(b.source, Source::Store("beta:q4".into()));
    let p = &b.profile;
    assert!(p.aliases.is_empty());
    assert_eq!(
        (
            p.ctx_size,
            p.parallel,
            p.n_gpu_layers,
            p.main_gpu,
            p.threads
        ),
        (Some(2048), Some(2), Some(10), Some(1), Some(3))
    );
    assert_eq!((p.embeddings, p.preload), (Some(false), Some(false)));
    assert_eq!(p.ttl, Some(Duration::from_secs(600)));
    assert_eq!(p.pin, None);
    assert_eq!(p.draft_model, None, "a draft model is never inherited");
    assert_eq!(
        p.max_tokens,
        MaxTokens {
            default: Some(256),
            max: Some(1024)
        }
    );
    let s = &p.sampling;
    assert_eq!(
        (s.temperature, s.top_p, s.top_k, s.min_p, s.repeat_penalty),
        (Some(0.5), Some(0.9), Some(30), Some(0.1), Some(1.1))
    );
    assert_eq!(
        (
            s.repeat_last_n,
            s.presence_penalty,
            s.frequency_penalty,
            s.seed
        ),
        (Some(32), Some(0.5), Some(-0.5), Some(7))
    );
    assert_eq!(s.stop.as_deref(), Some(&["</s>".to_string()][..]));
}

const DEVICE_FIELDS: &str = r#"
[defaults]
cache_type_k = "q8_0"
cache_type_v = "q8_0"
split_mode = "row"
allow_split = false
cache_ram = 1024
spec_ngram = 3
spec_draft = 16

[models.alpha]
path = "a.gguf"
cache_type_k = "f16"
cache_type_v = "IQ4_NL"
split_mode = "none"
allow_split = true
gpus = [1, 2]
cache_ram = 0
spec_ngram = 0

[models.beta]
path = "b.gguf"
"#;

#[test]
fn device_settings_are_read_and_inherited() {
    let dir = fixture();
    let file = parse_in(dir.path(), DEVICE_FIELDS).unwrap();
    let (a, b) = (&file.models[0].profile, &file.models[1].profile);
    assert_eq!(
        (a.cache_type_k, a.cache_type_v),
        (Some(KvCacheType::F16), Some(KvCacheType::Iq4Nl))
    );
    assert_eq!(
        (b.cache_type_k, b.cache_type_v),
        (Some(KvCacheType::Q8_0), Some(KvCacheType::Q8_0)),
        "inherited from [defaults]"
    );
    assert_eq!(
        (a.split_mode, a.allow_split, a.pin.as_deref()),
        (Some(SplitMode::None), Some(true), Some(&[1, 2][..]))
    );
    assert_eq!(
        (b.split_mode, b.allow_split, b.pin.as_deref()),
        (Some(SplitMode::Row), Some(false), None)
    );
    assert_eq!(
        (a.cache_ram, a.spec_ngram, a.spec_draft),
        (Some(0), Some(0), Some(16))
    );
    assert_eq!(
        (b.cache_ram, b.spec_ngram, b.spec_draft),
        (Some(1024), Some(3), Some(16))
    );
}

#[test]
fn an_empty_file_is_a_node_without_models() {
    let dir = fixture();
    assert!(parse_in(dir.path(), "").unwrap().models.is_empty());
    assert!(parse_in(dir.path(), "[defaults]\nctx_size = 1024\n")
        .unwrap()
        .models
        .is_empty());
}

#[test]
fn bad_files_name_the_line_and_the_field() {
    let dir = fixture();
    // (file, line, field, part of the message)
    let cases = [
        (
            "[models.a]\npath = \"a.gguf\"\nctx_sise = 1\n",
            3,
            "models.a.ctx_sise",
            "unknown field",
        ),
        (
            "[models.a]\npath = \"a.gguf\"\nctx_size = 8\n",
            3,
            "models.a.ctx_size",
            "out of range [64",
        ),
        (
            "[models.a]\npath = \"a.gguf\"\nparallel = 0\n",
            3,
            "models.a.parallel",
            "out of range [1, 512]",
        ),
        (
            "[models.a]\npath = \"a.gguf\"\nctx_size = \"big\"\n",
            3,
            "models.a.ctx_size",
            "invalid type",
        ),
        ("[defaults]\nwat = 1\n", 2, "defaults.wat", "unknown field"),
        (
            "[models.a]\npath = \"a.gguf\"\n[models.a.sampling]\ntemperature = 3.0\n",
            4,
            "models.a.sampling.temperature",
            "out of range [0, 2]",
        ),
        (
            "[models.a]\npath = \"a.gguf\"\n[models.a.sampling]\ntop_p = 0.0\n",
            4,
            "models.a.sampling.top_p",
            "(0, 1]",
        ),
        (
            "[models.a]\npath = \"a.gguf\"\nmax_tokens = 0\n",
            3,
            "models.a.max_tokens",
            "out of range",
        ),
        (
            "[models.a]\npath = \"a.gguf\"\nmax_tokens = 10\nmax_tokens_limit = 5\n",
            1,
            "models.a.max_tokens",
            "above max_tokens_limit",
        ),
        (
            "[models.a]\n\npath = \"missing.gguf\"\n",
            3,
            "models.a.path",
            "does not exist",
        ),
        (
            "[models.a]\npath = \"a.gguf\"\nstore = \"a\"\n",
            2,
            "models.a.path",
            "not both",
        ),
        (
            "\n[models.a]\nctx_size = 128\n",
            2,
            "models.a",
            "needs `path`",
        ),
        (
            "[models.a]\npath = \"a.gguf\"\ndraft_model = \"small.gguf\"\n",
            3,
            "models.a.draft_model",
            "does not exist",
        ),
        (
            "[defaults]\ndraft_model = \"b.gguf\"\n",
            2,
            "defaults.draft_model",
            "unknown field",
        ),
        (
            "[models.a]\npath = \"a.gguf\"\nchat_template = \"nope.jinja\"\n",
            3,
            "models.a.chat_template",
            "cannot read",
        ),
        (
            "[models.a]\npath = \"a.gguf\"\n[models.b]\npath = \"b.gguf\"\naliases = [\"A\"]\n",
            5,
            "models.b.aliases",
            "already names model \"a\"",
        ),
        (
            "[models.\"a:latest\"]\npath = \"a.gguf\"\n[models.a]\npath = \"b.gguf\"\n",
            1,
            "models.a:latest",
            "already names model \"a\"",
        ),
        (
            "[models.a]\npath = \"a.gguf\"\nctx_size = \n",
            3,
            "(syntax)",
            "",
        ),
        (
            "[models.a]\npath = \"a.gguf\"\npin = [\"x\"]\n",
            3,
            "models.a.pin[0]",
            "invalid type",
        ),
        (
            "[models.\"a b\"]\npath = \"a.gguf\"\n",
            1,
            "models.\"a b\"",
            "no whitespace",
        ),
        (
            "[models.a]\npath = \"a.gguf\"\ncache_type_k = \"q3_k\"\n",
            3,
            "models.a.cache_type_k",
            "is not one of f32, f16, bf16, q8_0",
        ),
        (
            "[models.a]\npath = \"a.gguf\"\nsplit_mode = \"tensor\"\n",
            3,
            "models.a.split_mode",
            "is not one of none, layer, row",
        ),
        (
            "[models.a]\npath = \"a.gguf\"\nallow_split = \"no\"\n",
            3,
            "models.a.allow_split",
            "invalid type",
        ),
        (
            "[models.a]\npath = \"a.gguf\"\n\ntensor_split = [3, 1]\n",
            4,
            "models.a.tensor_split",
            "cannot be honoured",
        ),
        (
            "[defaults]\ntensor_split = [1, 1]\n",
            2,
            "defaults.tensor_split",
            "choose the GPUs with `pin`",
        ),
        (
            // serde reports a duplicate at the table, under the key's own name.
            "[models.a]\npath = \"a.gguf\"\npin = [0]\ngpus = [1]\n",
            1,
            "models.a",
            "duplicate field `pin`",
        ),
        (
            "[models.a]\npath = \"a.gguf\"\nspec_ngram = 65\n",
            3,
            "models.a.spec_ngram",
            "out of range [0, 64]",
        ),
        (
            "[defaults]\nspec_draft = 0\n",
            2,
            "defaults.spec_draft",
            "out of range [1, 256]",
        ),
        (
            "[defaults]\ncache_ram = -1\n",
            2,
            "defaults.cache_ram",
            "invalid value",
        ),
        (
            "[defaults]\ncache_type_v = 8\n",
            2,
            "defaults.cache_type_v",
            "invalid type",
        ),
    ];
    for (text, line, field, message) in cases {
        let err = parse_in(dir.path(), text).expect_err(text);
        assert_eq!(
            (err.line, err.field.as_str()),
            (line, field),
            "{text:?}: {err}"
        );
        assert!(err.message.contains(message), "{text:?}: {err}");
        let shown = err.to_string();
        assert!(
            shown.starts_with(&format!("models.toml:{line}: {field}: ")),
            "{shown}"
        );
    }
}

#[test]
fn an_unreadable_file_is_an_error_naming_it() {
    let err = read(Path::new("/no/such/models.toml")).unwrap_err();
    assert_eq!(err.line, 0);
    assert!(err
        .to_string()
        .starts_with("/no/such/models.toml:0: (file): cannot read"));
}

/// `deploy/models.toml.example` is the documented full example: it must parse.
#[test]
fn the_committed_example_file_parses() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/models.toml.example");
    let text = std::fs::read_to_string(&example).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The example's files, relative to the file's directory.
    std::fs::create_dir_all(dir.path().join("models")).unwrap();
    std::fs::create_dir_all(dir.path().join("templates")).unwrap();
    for gguf in [
        "models/SmolLM2-135M-Instruct.Q4_1.gguf",
        "models/nomic-embed-text.gguf",
    ] {
        std::fs::write(dir.path().join(gguf), b"GGUF").unwrap();
    }
    std::fs::write(dir.path().join("templates/chatml.jinja"), "{{ x }}").unwrap();
    let file = parse(&text, &example, dir.path()).unwrap_or_else(|e| panic!("{e}"));
    assert!(file.models.len() >= 3, "{file:?}");
    assert!(file
        .models
        .iter()
        .any(|m| matches!(m.source, Source::Store(_))));
}
