//! Model names the store accepts, parsed once into a [`ModelRef`].
//!
//! | written | means | stored under `manifests/` |
//! |---|---|---|
//! | `name[:tag]` | `registry.ollama.ai/library/name:tag` | `registry.ollama.ai/library/name/tag` |
//! | `ns/name[:tag]` | `registry.ollama.ai/ns/name:tag` | `registry.ollama.ai/ns/name/tag` |
//! | `host[:port]/ns/name[:tag]` | another Ollama-style registry | `host[:port]/ns/name/tag` |
//! | `hf.co/owner/repo[:quant]` | a GGUF of a Hugging Face repo chosen by quant | `hf.co/owner/repo/quant` |
//! | `hf/owner/repo/file.gguf` | one named GGUF file of a Hugging Face repo | `hf/owner/repo/file.gguf` |
//!
//! The tag defaults to `latest`. Every part becomes a path component, so each
//! is checked here, before anything touches the disk: no `..`, no empty parts,
//! no absolute paths, no control characters or whitespace, a bounded length,
//! and only `[A-Za-z0-9._-]` (plus `:port` in a host).

use std::fmt;
use std::path::PathBuf;

/// The default Ollama registry's host as it appears in names and manifests.
pub const DEFAULT_REGISTRY: &str = "registry.ollama.ai";
/// The namespace of unqualified Ollama names.
pub const DEFAULT_NAMESPACE: &str = "library";
/// The tag of names without one.
pub const DEFAULT_TAG: &str = "latest";
/// Registry host of `hf.co/...` names (as Ollama stores them).
pub const HF_HOST: &str = "hf.co";
/// Registry "host" of `hf/<owner>/<repo>/<file>.gguf` names.
pub const HF_FILE_HOST: &str = "hf";

/// Longest model name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 300;
/// Longest single part (name, tag, namespace, file), in bytes.
const MAX_PART_LEN: usize = 128;

/// A model name the store can look up or pull.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ModelRef {
    /// An Ollama-style registry model.
    Registry {
        host: String,
        namespace: String,
        name: String,
        tag: String,
    },
    /// `hf.co/owner/repo[:quant]`; `quant` is `None` when no tag was given.
    HfQuant {
        owner: String,
        repo: String,
        quant: Option<String>,
    },
    /// `hf/owner/repo/file.gguf`.
    HfFile {
        owner: String,
        repo: String,
        file: String,
    },
}

/// Why a name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("model name is empty")]
    Empty,
    #[error("model name is longer than {MAX_NAME_LEN} bytes")]
    TooLong,
    #[error("model name {0:?} contains whitespace or control characters")]
    BadChars(String),
    #[error("model name {0:?} has an empty, `.` or `..` part")]
    BadPart(String),
    #[error("model name {0:?} is malformed: {1}")]
    Malformed(String, &'static str),
}

fn valid_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_PART_LEN
        && s != "."
        && s != ".."
        && !s.starts_with('.')
        && !s.starts_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn valid_host(s: &str) -> bool {
    let (host, port) = match s.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    valid_part(host)
        && port
            .is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

impl ModelRef {
    /// Parses and validates `input` (see the module docs).
    ///
    /// # Errors
    /// [`NameError`] saying what is wrong.
    pub fn parse(input: &str) -> Result<ModelRef, NameError> {
        let parts = split_checked(input)?;
        if parts[0].eq_ignore_ascii_case(HF_FILE_HOST) {
            return parse_hf_file(input, &parts);
        }
        // The tag follows the last `:` of the last part (a host may have `:port`).
        let last = parts[parts.len() - 1];
        let (last, tag) = match last.rsplit_once(':') {
            Some((n, t)) => (n, Some(t)),
            None => (last, None),
        };
        if tag.is_some_and(|t| !valid_part(t)) {
            return Err(NameError::Malformed(
                input.to_string(),
                "the tag must be [A-Za-z0-9._-], at most 128 characters",
            ));
        }
        let mut path: Vec<&str> = parts[..parts.len() - 1].to_vec();
        path.push(last);
        let is_hf =
            path[0].eq_ignore_ascii_case(HF_HOST) || path[0].eq_ignore_ascii_case("huggingface.co");
        match is_hf {
            true => parse_hf_quant(input, &path, tag),
            false => parse_registry(input, &path, tag),
        }
    }

    /// The four path parts under `manifests/`: host, namespace, name, tag.
    pub fn manifest_parts(&self) -> [&str; 4] {
        match self {
            ModelRef::Registry {
                host,
                namespace,
                name,
                tag,
            } => [host, namespace, name, tag],
            ModelRef::HfQuant { owner, repo, quant } => [
                HF_HOST,
                owner,
                repo,
                quant.as_deref().unwrap_or(DEFAULT_TAG),
            ],
            ModelRef::HfFile { owner, repo, file } => [HF_FILE_HOST, owner, repo, file],
        }
    }

    /// `manifests/<host>/<namespace>/<name>/<tag>`, relative to a store root.
    pub fn manifest_rel_path(&self) -> PathBuf {
        let mut p = PathBuf::from("manifests");
        for part in self.manifest_parts() {
            p.push(part);
        }
        p
    }

    /// The inverse of [`ModelRef::manifest_parts`], for names found on disk.
    pub fn from_manifest_parts(parts: [&str; 4]) -> Option<ModelRef> {
        let [host, ns, name, tag] = parts;
        let written = if host.eq_ignore_ascii_case(HF_FILE_HOST) {
            format!("{HF_FILE_HOST}/{ns}/{name}/{tag}")
        } else {
            format!("{host}/{ns}/{name}:{tag}")
        };
        ModelRef::parse(&written).ok()
    }
}

/// The short form Ollama shows, and the id the model is served under:
/// `name:tag` in the default registry's library, `ns/name:tag` in another of its
/// namespaces, `host/ns/name:tag` elsewhere; `hf.co/owner/repo:quant`
/// (`:latest` without a quant); `hf/owner/repo/file.gguf`.
impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelRef::Registry {
                host,
                namespace,
                name,
                tag,
            } => {
                if host != DEFAULT_REGISTRY {
                    write!(f, "{host}/{namespace}/")?;
                } else if namespace != DEFAULT_NAMESPACE {
                    write!(f, "{namespace}/")?;
                }
                write!(f, "{name}:{tag}")
            }
            ModelRef::HfQuant { owner, repo, quant } => write!(
                f,
                "{HF_HOST}/{owner}/{repo}:{}",
                quant.as_deref().unwrap_or(DEFAULT_TAG)
            ),
            ModelRef::HfFile { owner, repo, file } => {
                write!(f, "{HF_FILE_HOST}/{owner}/{repo}/{file}")
            }
        }
    }
}

/// The `/`-separated parts of `input` once its length and characters are checked.
fn split_checked(input: &str) -> Result<Vec<&str>, NameError> {
    if input.is_empty() {
        return Err(NameError::Empty);
    }
    if input.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong);
    }
    if input
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '\\')
    {
        return Err(NameError::BadChars(input.to_string()));
    }
    if input.starts_with('/') || input.ends_with('/') || input.contains("//") {
        return Err(NameError::BadPart(input.to_string()));
    }
    let parts: Vec<&str> = input.split('/').collect();
    if parts.iter().any(|p| *p == "." || *p == "..") {
        return Err(NameError::BadPart(input.to_string()));
    }
    Ok(parts)
}

/// `hf/<owner>/<repo>/<file>.gguf`.
fn parse_hf_file(input: &str, parts: &[&str]) -> Result<ModelRef, NameError> {
    let malformed = |why| NameError::Malformed(input.to_string(), why);
    let [_, owner, repo, file] = parts[..] else {
        return Err(malformed("expected hf/<owner>/<repo>/<file>.gguf"));
    };
    if !file.to_ascii_lowercase().ends_with(".gguf") {
        return Err(malformed("the file of an hf/ name must end in .gguf"));
    }
    if ![owner, repo, file].iter().all(|p| valid_part(p)) {
        return Err(NameError::BadPart(input.to_string()));
    }
    Ok(ModelRef::HfFile {
        owner: owner.into(),
        repo: repo.into(),
        file: file.into(),
    })
}

/// `hf.co/<owner>/<repo>[:quant]` (`path` without the tag).
fn parse_hf_quant(input: &str, path: &[&str], tag: Option<&str>) -> Result<ModelRef, NameError> {
    let [_, owner, repo] = path[..] else {
        return Err(NameError::Malformed(
            input.to_string(),
            "expected hf.co/<owner>/<repo>[:quant]",
        ));
    };
    if !valid_part(owner) || !valid_part(repo) {
        return Err(NameError::BadPart(input.to_string()));
    }
    Ok(ModelRef::HfQuant {
        owner: owner.into(),
        repo: repo.into(),
        quant: tag.map(str::to_string),
    })
}

/// `[host/][namespace/]name[:tag]` (`path` without the tag).
fn parse_registry(input: &str, path: &[&str], tag: Option<&str>) -> Result<ModelRef, NameError> {
    let (host, namespace, name) = match path[..] {
        [name] => (DEFAULT_REGISTRY, DEFAULT_NAMESPACE, name),
        [namespace, name] => (DEFAULT_REGISTRY, namespace, name),
        [host, namespace, name] => (host, namespace, name),
        _ => {
            return Err(NameError::Malformed(
                input.to_string(),
                "too many `/`-separated parts",
            ))
        }
    };
    if !valid_host(host) || !valid_part(namespace) || !valid_part(name) {
        return Err(NameError::BadPart(input.to_string()));
    }
    Ok(ModelRef::Registry {
        host: host.to_ascii_lowercase(),
        namespace: namespace.into(),
        name: name.into(),
        tag: tag.unwrap_or(DEFAULT_TAG).into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_to_their_manifest_paths_and_back() {
        let table = [
            (
                "smollm2",
                "registry.ollama.ai/library/smollm2/latest",
                "smollm2:latest",
            ),
            (
                "smollm2:135m",
                "registry.ollama.ai/library/smollm2/135m",
                "smollm2:135m",
            ),
            ("me/tiny:q4", "registry.ollama.ai/me/tiny/q4", "me/tiny:q4"),
            (
                "localhost:5000/me/tiny:v1.2",
                "localhost:5000/me/tiny/v1.2",
                "localhost:5000/me/tiny:v1.2",
            ),
            (
                "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",
                "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF/Q4_K_M",
                "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",
            ),
            ("hf.co/a/b", "hf.co/a/b/latest", "hf.co/a/b:latest"),
            (
                "hf/TheBloke/X-GGUF/x.Q4_K_M.gguf",
                "hf/TheBloke/X-GGUF/x.Q4_K_M.gguf",
                "hf/TheBloke/X-GGUF/x.Q4_K_M.gguf",
            ),
        ];
        for (input, manifest, shown) in table {
            let r = ModelRef::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.manifest_parts().join("/"), manifest, "{input}");
            assert_eq!(r.to_string(), shown, "{input}");
            let back: Vec<&str> = manifest.split('/').collect();
            let back = ModelRef::from_manifest_parts([back[0], back[1], back[2], back[3]]).unwrap();
            assert_eq!(back.to_string(), shown, "{input} back");
        }
    }

    #[test]
    fn traversal_and_malformed_names_are_refused() {
        let long = "a".repeat(MAX_NAME_LEN + 1);
        let long_part = format!("{}:x", "a".repeat(200));
        for bad in [
            "",
            "..",
            "../x",
            "a/../b",
            "x/../../etc/passwd",
            "/etc/passwd",
            "a//b",
            "a/",
            "a b",
            "a\nb",
            "a\u{0}b",
            "a\\b",
            "a:",
            "a:../x",
            ".hidden",
            "-flag",
            "a:b:c",
            "h/n/s/m/x:y",
            "hf/o/r",
            "hf/o/r/../x.gguf",
            "hf/o/r/x.bin",
            "hf.co/o",
            "hf.co/o/r/x",
            "hf.co/../r",
            "ho$t/n/m",
            "host:port/n/m",
            &long,
            &long_part,
        ] {
            assert!(ModelRef::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert_eq!(ModelRef::parse(""), Err(NameError::Empty));
        assert!(ModelRef::parse("../x")
            .unwrap_err()
            .to_string()
            .contains("`..`"));
        assert!(ModelRef::parse("a b")
            .unwrap_err()
            .to_string()
            .contains("whitespace"));
    }
}
