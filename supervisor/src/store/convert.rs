//! Converting a Hugging Face safetensors/PyTorch checkpoint to GGUF with
//! llama.cpp's own `convert_hf_to_gguf.py`.
//!
//! The script, with its `conversion/` package and `gguf-py`, is installed by
//! `scripts/setup-convert.sh` into `$LLM_NODE_CACHE/convert/llama.cpp/` (from
//! the llama.cpp source in PyPI's llama-cpp-python sdist), together with a
//! virtual environment holding the Python packages it imports
//! (`$LLM_NODE_CACHE/convert/venv`). [`find_script`] takes `--convert-script`,
//! else that copy, else the one in the `llama-cpp-sys-2` crate sources that
//! build the worker (which lacks `conversion/`, so it is only a last resort);
//! [`default_python`] takes `--python`, else that venv, else `python3`.
//! [`missing_modules`] checks the packages first so the error lists exactly
//! what to install. `gguf` is imported from the script's own `gguf-py` when
//! it has one (as the script itself does).
//!
//! The script runs under [`PATCH`] (`convert_patch.py`), which fixes how it
//! converts BERT-family cross-encoders (`*ForSequenceClassification`): they
//! declare rank pooling, so they are served as rerankers, and a BERT's pooler
//! is kept (the converter drops it, and the scores then disagree with
//! transformers). Other checkpoints convert exactly as without it.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};

/// Python modules the converter imports.
pub const REQUIRED_MODULES: [&str; 6] = [
    "torch",
    "numpy",
    "safetensors",
    "transformers",
    "sentencepiece",
    "gguf",
];
const SCRIPT: &str = "convert_hf_to_gguf.py";
/// Runs the converter (its path is the first argument) with the cross-encoder
/// fixes described in the module docs.
pub const PATCH: &str = include_str!("convert_patch.py");
/// Lines of converter output kept for an error message.
const TAIL_LINES: usize = 15;

/// Why a conversion could not run or failed.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error(
        "this repository has no GGUF file and needs converting, but llama.cpp's {SCRIPT} was \
         not found (looked in {searched}); pass --convert-script PATH (LLM_NODE_CONVERT_SCRIPT)"
    )]
    NoScript { searched: String },
    #[error(
        "{script} cannot run: its `conversion/` package is missing next to it (the \
         llama-cpp-sys-2 crate does not ship it); run scripts/setup-convert.sh, or pass \
         --convert-script pointing into a llama.cpp checkout"
    )]
    IncompleteScript { script: PathBuf },
    #[error(
        "this repository has no GGUF file and needs converting, which needs Python packages \
         that {python} lacks: {missing}. Install them with `{python} -m pip install {missing_pip}` \
         or run scripts/setup-convert.sh (or point --python / LLM_NODE_PYTHON at an environment \
         that has them), or pull a GGUF build of the model instead"
    )]
    MissingModules {
        python: String,
        missing: String,
        missing_pip: String,
    },
    #[error("conversion failed ({status}): {tail}")]
    Failed { status: String, tail: String },
    #[error("cannot run {python}: {message}")]
    Spawn { python: String, message: String },
}

/// Where `scripts/setup-convert.sh` installs the converter and its venv:
/// `$LLM_NODE_CACHE/convert` (default `~/.cache/llm-node/convert`).
pub fn setup_dir() -> PathBuf {
    let models = crate::paths::cache_dir();
    models
        .parent()
        .map_or_else(|| PathBuf::from("convert"), |p| p.join("convert"))
}

/// `--python`, else the venv of `scripts/setup-convert.sh` when it exists,
/// else `python3`.
pub fn default_python(over: Option<&str>) -> String {
    if let Some(p) = over {
        return p.to_string();
    }
    let venv = setup_dir().join("venv/bin/python");
    match venv.is_file() {
        true => venv.display().to_string(),
        false => "python3".into(),
    }
}

/// `--convert-script`, else the copy `scripts/setup-convert.sh` installed
/// (`$LLM_NODE_CACHE/convert/llama.cpp/`), else the newest
/// `llama-cpp-sys-2-*/llama.cpp/convert_hf_to_gguf.py` in cargo's registry
/// sources (`$CARGO_HOME`, default `~/.cargo`).
///
/// # Errors
/// [`ConvertError::NoScript`].
pub fn find_script(over: Option<&Path>) -> Result<PathBuf, ConvertError> {
    if let Some(p) = over {
        return match p.is_file() {
            true => Ok(p.to_path_buf()),
            false => Err(ConvertError::NoScript {
                searched: p.display().to_string(),
            }),
        };
    }
    let installed = setup_dir().join("llama.cpp").join(SCRIPT);
    if installed.is_file() {
        return Ok(installed);
    }
    let cargo = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cargo")
        });
    let src = cargo.join("registry/src");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&src)
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|index| {
            std::fs::read_dir(index.path())
                .into_iter()
                .flatten()
                .flatten()
        })
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with("llama-cpp-sys-2-"))
        })
        .map(|e| e.path().join("llama.cpp").join(SCRIPT))
        .filter(|p| p.is_file())
        .collect();
    found.sort_by_key(|p| version_key(p));
    found.pop().ok_or_else(|| ConvertError::NoScript {
        searched: src
            .join("*/llama-cpp-sys-2-*/llama.cpp")
            .display()
            .to_string(),
    })
}

/// `.../llama-cpp-sys-2-0.1.161/...` → [0, 1, 161] for picking the newest.
fn version_key(p: &Path) -> Vec<u64> {
    p.components()
        .filter_map(|c| c.as_os_str().to_str()?.strip_prefix("llama-cpp-sys-2-"))
        .flat_map(|v| {
            v.split('.')
                .map(|n| n.parse().unwrap_or(0))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The script's own `gguf-py` (which it puts first on `sys.path`), if any.
fn gguf_py(script: &Path) -> Option<PathBuf> {
    let dir = script.parent()?.join("gguf-py");
    dir.is_dir().then_some(dir)
}

/// The modules of [`REQUIRED_MODULES`] that `python` cannot import (all of them
/// when `python` does not run); `gguf` is also looked for in `gguf_py`.
pub async fn missing_modules(python: &str, gguf_py: Option<&Path>) -> Vec<&'static str> {
    let mut missing = Vec::new();
    for module in REQUIRED_MODULES {
        let mut cmd = tokio::process::Command::new(python);
        if let Some(dir) = gguf_py {
            cmd.env("PYTHONPATH", dir);
        }
        let ok = cmd
            .args(["-c", &format!("import {module}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success());
        if !ok {
            missing.push(module);
        }
    }
    missing
}

/// Checks that conversion can run: the script, its package, the Python modules.
///
/// # Errors
/// [`ConvertError`] saying what is missing.
pub async fn preflight(python: &str, over: Option<&Path>) -> Result<PathBuf, ConvertError> {
    let script = find_script(over)?;
    let missing = missing_modules(python, gguf_py(&script).as_deref()).await;
    if !missing.is_empty() {
        let pip: Vec<&str> = missing.to_vec();
        return Err(ConvertError::MissingModules {
            python: python.to_string(),
            missing: missing.join(", "),
            missing_pip: pip.join(" "),
        });
    }
    let has_package = script
        .parent()
        .is_some_and(|d| d.join("conversion").is_dir());
    if !has_package {
        return Err(ConvertError::IncompleteScript { script });
    }
    Ok(script)
}

/// Runs the converter on the checkpoint in `src` and writes `out` (f16), calling
/// `progress` with each line it prints.
///
/// # Errors
/// [`ConvertError::Spawn`], [`ConvertError::Failed`] with the output's tail.
pub async fn run(
    python: &str,
    script: &Path,
    src: &Path,
    out: &Path,
    progress: &dyn Fn(&str),
) -> Result<(), ConvertError> {
    let mut child = tokio::process::Command::new(python)
        .arg("-c")
        .arg(PATCH)
        .arg(script)
        .arg(src)
        .arg("--outfile")
        .arg(out)
        .args(["--outtype", "f16"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| ConvertError::Spawn {
            python: python.into(),
            message: e.to_string(),
        })?;
    let stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
    let stderr = BufReader::new(child.stderr.take().expect("piped")).lines();
    let mut lines = std::pin::pin!(futures_util::stream::select(
        tokio_stream_lines(stdout),
        tokio_stream_lines(stderr),
    ));
    let mut tail = VecDeque::new();
    while let Some(line) = futures_util::StreamExt::next(&mut lines).await {
        progress(&line);
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    let status = child.wait().await.map_err(|e| ConvertError::Spawn {
        python: python.into(),
        message: e.to_string(),
    })?;
    if status.success() && out.is_file() {
        return Ok(());
    }
    Err(ConvertError::Failed {
        status: status.to_string(),
        tail: Vec::from(tail).join(" | "),
    })
}

fn tokio_stream_lines<R: tokio::io::AsyncBufRead + Unpin>(
    lines: tokio::io::Lines<R>,
) -> impl futures_util::Stream<Item = String> {
    futures_util::stream::unfold(lines, |mut lines| async move {
        match lines.next_line().await {
            Ok(Some(line)) => Some((line, lines)),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn missing_python_modules_are_listed_with_the_install_command() {
        let err = preflight("/no/such/python3", None).await;
        match err {
            Err(ConvertError::MissingModules { .. }) | Err(ConvertError::NoScript { .. }) => {}
            other => panic!("{other:?}"),
        }
        let script = tempfile::NamedTempFile::new().unwrap();
        let err = preflight("/no/such/python3", Some(script.path()))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("torch") && err.contains("pip install"),
            "{err}"
        );
    }

    #[test]
    fn an_explicit_missing_script_is_reported() {
        let err = find_script(Some(Path::new("/no/such/convert.py"))).unwrap_err();
        assert!(err.to_string().contains("--convert-script"), "{err}");
    }

    #[test]
    fn newest_crate_version_wins() {
        let a = Path::new("/r/src/x/llama-cpp-sys-2-0.1.99/llama.cpp/c.py");
        let b = Path::new("/r/src/x/llama-cpp-sys-2-0.1.161/llama.cpp/c.py");
        assert!(version_key(a) < version_key(b));
    }
}
