//! Where an acquired model lives: the router's layout, shared with the C++
//! node (contract §4.4): `<models_dir>/<dir>/model.gguf`, `<dir>` being the
//! name with every `:` replaced by `_` (plus `_latest` when the name has no
//! tag), and an optional `<dir>/metadata.json` `{"chat_template": …}`.

use std::path::{Component, Path, PathBuf};

/// File name of a model inside its directory.
pub const MODEL_FILE: &str = "model.gguf";
/// Suffix of a download or copy in progress; only complete files are renamed to [`MODEL_FILE`].
pub const PARTIAL_SUFFIX: &str = ".partial";

/// A model name that cannot become a directory.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid model name {0:?}")]
pub struct BadName(pub String);

/// `gpt-oss:20b` → `gpt-oss_20b`; `llama` → `llama_latest`. Names with `/` (the
/// router's `hf/<repo>/<file>`) become nested directories, as on the router.
///
/// # Errors
/// [`BadName`] for empty names, whitespace or control characters, absolute
/// paths and `.`/`..` components.
pub fn model_dir(name: &str) -> Result<PathBuf, BadName> {
    let bad = || BadName(name.to_string());
    if name.is_empty()
        || name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '\\')
    {
        return Err(bad());
    }
    let mut dir = name.replace(':', "_");
    if !name.contains(':') {
        dir.push_str("_latest");
    }
    let path = PathBuf::from(dir);
    let clean = path.components().all(|c| matches!(c, Component::Normal(_)));
    if !clean || name.starts_with('/') || name.ends_with('/') {
        return Err(bad());
    }
    Ok(path)
}

/// The final file of `name` under `models_dir`.
///
/// # Errors
/// As [`model_dir`].
pub fn model_file(models_dir: &Path, name: &str) -> Result<PathBuf, BadName> {
    Ok(models_dir.join(model_dir(name)?).join(MODEL_FILE))
}

/// The file a transfer writes before the atomic rename onto `dest`.
pub fn partial_file(dest: &Path) -> PathBuf {
    let mut name = dest.as_os_str().to_owned();
    name.push(PARTIAL_SUFFIX);
    PathBuf::from(name)
}

/// The reverse mapping the C++ node uses for `<dir>` (the last `_` becomes `:`),
/// for model discovery in the router layout: `gpt-oss-safeguard_20b` →
/// `gpt-oss-safeguard:20b`; a name without `_` is returned as is.
pub fn dir_to_model_name(dir: &str) -> String {
    match dir.rsplit_once('_') {
        Some((name, tag)) if !name.is_empty() && !tag.is_empty() => format!("{name}:{tag}"),
        _ => dir.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_the_router_layout() {
        let table = [
            ("gpt-oss:20b", "gpt-oss_20b"),
            ("gpt-oss-safeguard:20b", "gpt-oss-safeguard_20b"),
            ("llama", "llama_latest"),
            (
                "hf/TheBloke/X-GGUF/x.Q4_K_M.gguf",
                "hf/TheBloke/X-GGUF/x.Q4_K_M.gguf_latest",
            ),
        ];
        for (name, dir) in table {
            assert_eq!(model_dir(name).unwrap(), PathBuf::from(dir), "{name}");
        }
        assert_eq!(
            model_file(Path::new("/m"), "a:b").unwrap(),
            PathBuf::from("/m/a_b/model.gguf")
        );
        assert_eq!(
            partial_file(Path::new("/m/a_b/model.gguf")),
            PathBuf::from("/m/a_b/model.gguf.partial")
        );
    }

    #[test]
    fn names_that_escape_the_models_dir_are_refused() {
        for bad in [
            "",
            "../x",
            "a/../../b",
            "/etc/passwd",
            "a b",
            "a\nb",
            "x/",
            "a\\b",
            "./a",
        ] {
            assert!(model_dir(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn dir_names_map_back_like_the_cpp_node() {
        assert_eq!(dir_to_model_name("gpt-oss_20b"), "gpt-oss:20b");
        assert_eq!(
            dir_to_model_name("gpt-oss-safeguard_20b"),
            "gpt-oss-safeguard:20b"
        );
        assert_eq!(dir_to_model_name("qwen"), "qwen");
        assert_eq!(dir_to_model_name("llama_latest"), "llama:latest");
    }
}
