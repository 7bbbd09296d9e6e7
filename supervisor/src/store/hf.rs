//! Hugging Face Hub: which files of a repo to fetch for a name.
//!
//! The file list comes from `GET {endpoint}/api/models/<owner>/<repo>/tree/main?recursive=true`
//! (`[{type, path, size, lfs: {oid, size}}]`; `lfs.oid` is the SHA-256 of an
//! LFS file, which every GGUF is). Files download from
//! `{endpoint}/<owner>/<repo>/resolve/main/<path>`. `HF_TOKEN` goes along as
//! a bearer token (gated and private repos); `HF_ENDPOINT` moves the Hub.
//!
//! [`choose`] is the pure decision: which GGUF file(s) a quant names, or that
//! the repo must be converted, or refused.

use serde::Deserialize;

/// One entry of the tree listing.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RepoFile {
    #[serde(rename = "type", default)]
    pub kind: String,
    pub path: String,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub lfs: Option<Lfs>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Lfs {
    /// SHA-256 of the content, hex.
    pub oid: String,
    #[serde(default)]
    pub size: Option<u64>,
}

impl RepoFile {
    /// `sha256:<hex>` when the Hub said.
    pub fn digest(&self) -> Option<String> {
        let oid = &self.lfs.as_ref()?.oid;
        (oid.len() == 64 && oid.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| format!("sha256:{}", oid.to_ascii_lowercase()))
    }

    pub fn size(&self) -> Option<u64> {
        self.lfs.as_ref().and_then(|l| l.size).or(self.size)
    }

    fn file_name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }

    fn is_gguf(&self) -> bool {
        self.kind != "directory" && self.path.to_ascii_lowercase().ends_with(".gguf")
    }
}

/// What to do with a repo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// Download these GGUF files (one, or every part of a split model, in order).
    Gguf(Vec<RepoFile>),
    /// No GGUF but weights llama.cpp's converter reads: download these files and convert.
    Convert(Vec<RepoFile>),
}

/// Why a repo cannot give a model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HfError {
    #[error("{repo} is a LoRA adapter (it has adapter_config.json), not a model; pull its base model instead")]
    Lora { repo: String },
    #[error("{repo} is a diffusion model (it has model_index.json or a unet/ folder); llama.cpp serves language models only")]
    Diffusion { repo: String },
    #[error("{repo} has no GGUF file matching {quant:?}; it has: {available}")]
    NoQuant {
        repo: String,
        quant: String,
        available: String,
    },
    #[error("{repo} has several GGUF files; name one with :<quant> (one of: {available})")]
    Ambiguous { repo: String, available: String },
    #[error("{repo} has no file {file:?}")]
    NoFile { repo: String, file: String },
    #[error("{repo} has neither GGUF files nor safetensors/PyTorch weights")]
    Nothing { repo: String },
    #[error("Hugging Face: {0}")]
    Api(String),
}

/// Quant picked when a `hf.co/...` name has none and the repo has several GGUFs (as Ollama).
const DEFAULT_QUANT: &str = "Q4_K_M";

/// `x-00002-of-00003.gguf` → (`x`, 2, 3).
fn split_part(name: &str) -> Option<(&str, u32, u32)> {
    let stem = name.strip_suffix(".gguf")?;
    let (rest, of) = stem.rsplit_once("-of-")?;
    let (prefix, i) = rest.rsplit_once('-')?;
    let digits = |s: &str| s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(i) || !digits(of) {
        return None;
    }
    Some((prefix, i.parse().ok()?, of.parse().ok()?))
}

/// Whether `quant` appears in `file` as a whole token, case-insensitively
/// (`Q4_K` does not match `Q4_K_M`).
pub fn quant_matches(file: &str, quant: &str) -> bool {
    let (f, q) = (file.to_ascii_lowercase(), quant.to_ascii_lowercase());
    let bytes = f.as_bytes();
    f.match_indices(&q).any(|(at, _)| {
        let before = at.checked_sub(1).map(|i| bytes[i]);
        let after = bytes.get(at + q.len()).copied();
        before.is_none_or(|b| !b.is_ascii_alphanumeric())
            && after.is_none_or(|b| !b.is_ascii_alphanumeric() && b != b'_')
    })
}

/// The quant-ish label of a GGUF file, for error messages.
fn label(file: &RepoFile) -> String {
    let name = file.file_name();
    match split_part(name) {
        Some((prefix, _, _)) => prefix.to_string(),
        None => name.trim_end_matches(".gguf").to_string(),
    }
}

/// Which files of `repo` (its tree listing) the name asks for: `quant` for
/// `hf.co/...:quant`, `file` for `hf/.../file.gguf`.
///
/// # Errors
/// [`HfError`] saying why nothing fits.
pub fn choose(
    repo: &str,
    files: &[RepoFile],
    quant: Option<&str>,
    file: Option<&str>,
) -> Result<Choice, HfError> {
    let has = |p: &str| files.iter().any(|f| f.path == p);
    if has("adapter_config.json") {
        return Err(HfError::Lora { repo: repo.into() });
    }
    if has("model_index.json") || files.iter().any(|f| f.path.starts_with("unet/")) {
        return Err(HfError::Diffusion { repo: repo.into() });
    }
    let ggufs: Vec<&RepoFile> = files
        .iter()
        .filter(|f| f.is_gguf())
        // Vision projectors are not models on their own.
        .filter(|f| !f.file_name().to_ascii_lowercase().contains("mmproj"))
        .collect();
    if let Some(file) = file {
        let found = ggufs
            .iter()
            .find(|f| f.path == file || f.file_name() == file)
            .ok_or_else(|| HfError::NoFile {
                repo: repo.into(),
                file: file.into(),
            })?;
        return Ok(Choice::Gguf(with_parts(&ggufs, found)));
    }
    if ggufs.is_empty() {
        return for_conversion(repo, files);
    }
    choose_quant(repo, &ggufs, quant)
}

/// A checkpoint to convert: its weights and `config.json`, or why there is none.
fn for_conversion(repo: &str, files: &[RepoFile]) -> Result<Choice, HfError> {
    let weights: Vec<RepoFile> = files
        .iter()
        .filter(|f| f.kind != "directory" && wanted_for_conversion(&f.path))
        .cloned()
        .collect();
    let has_weights = weights.iter().any(|f| {
        f.path.ends_with(".safetensors") || f.path.ends_with(".bin") || f.path.ends_with(".pt")
    });
    if !has_weights || !weights.iter().any(|f| f.path == "config.json") {
        return Err(HfError::Nothing { repo: repo.into() });
    }
    Ok(Choice::Convert(weights))
}

/// The GGUF (one file or one split set) of `quant`, else of [`DEFAULT_QUANT`]
/// or the only one.
fn choose_quant(repo: &str, ggufs: &[&RepoFile], quant: Option<&str>) -> Result<Choice, HfError> {
    let available = || {
        let mut labels: Vec<String> = ggufs.iter().map(|f| label(f)).collect();
        labels.dedup();
        labels.join(", ")
    };
    let pick = |q: &str| -> Vec<&RepoFile> {
        ggufs
            .iter()
            .copied()
            .filter(|f| quant_matches(f.file_name(), q))
            .collect()
    };
    let matches = match quant {
        Some(q) => pick(q),
        None if ggufs.len() == 1 => ggufs.to_vec(),
        None => match pick(DEFAULT_QUANT) {
            m if !m.is_empty() => m,
            _ => ggufs.to_vec(),
        },
    };
    let Some(first) = matches.first() else {
        return Err(HfError::NoQuant {
            repo: repo.into(),
            quant: quant.unwrap_or_default().into(),
            available: available(),
        });
    };
    let set = with_parts(ggufs, first);
    // Every match must belong to the one model picked (one file, or one split set).
    if matches.iter().any(|m| !set.contains(m)) {
        return Err(HfError::Ambiguous {
            repo: repo.into(),
            available: available(),
        });
    }
    Ok(Choice::Gguf(set))
}

/// `file`, or every part of the split set it belongs to, in order.
fn with_parts(ggufs: &[&RepoFile], file: &RepoFile) -> Vec<RepoFile> {
    let Some((prefix, _, n)) = split_part(file.file_name()) else {
        return vec![file.clone()];
    };
    let dir = file.path.rsplit_once('/').map(|(d, _)| d);
    let mut parts: Vec<(u32, RepoFile)> = ggufs
        .iter()
        .filter(|f| f.path.rsplit_once('/').map(|(d, _)| d) == dir)
        .filter_map(|f| match split_part(f.file_name()) {
            Some((p, i, m)) if p == prefix && m == n => Some((i, (*f).clone())),
            _ => None,
        })
        .collect();
    parts.sort_by_key(|(i, _)| *i);
    parts.into_iter().map(|(_, f)| f).collect()
}

/// Files llama.cpp's converter needs: configuration, tokenizer, weights, and
/// the configuration of sentence-transformers modules (`1_Pooling/config.json`:
/// the converter reads the pooling type there when `modules.json` names it).
fn wanted_for_conversion(path: &str) -> bool {
    if let Some((dir, file)) = path.split_once('/') {
        // Other sub-folders hold other formats (onnx/, original/, ...).
        let module = dir.split_once('_').is_some_and(|(n, kind)| {
            !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && !kind.is_empty()
        });
        return module && file == "config.json";
    }
    let lower = path.to_ascii_lowercase();
    lower.ends_with(".json")
        || lower.ends_with(".safetensors")
        || lower.ends_with(".model") // sentencepiece
        || lower.ends_with(".tiktoken")
        || lower == "merges.txt"
        || lower == "vocab.txt"
        || (lower.starts_with("pytorch_model") && lower.ends_with(".bin"))
}

/// The tree listing of `owner/repo`.
///
/// # Errors
/// [`HfError::Api`] for an unreachable Hub, a missing repo or a bad answer.
pub async fn list_files(
    http: &reqwest::Client,
    endpoint: &str,
    token: Option<&str>,
    owner: &str,
    repo: &str,
) -> Result<Vec<RepoFile>, HfError> {
    let url = format!(
        "{}/api/models/{owner}/{repo}/tree/main?recursive=true",
        endpoint.trim_end_matches('/')
    );
    let mut req = http.get(&url).timeout(std::time::Duration::from_secs(30));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| HfError::Api(format!("{url}: {}", crate::net::describe(&e))))?;
    match resp.status().as_u16() {
        200 => {}
        401 | 403 => {
            return Err(HfError::Api(format!(
                "{owner}/{repo} needs access: set HF_TOKEN to a token that can read it"
            )))
        }
        404 => return Err(HfError::Api(format!("no repository {owner}/{repo}"))),
        s => return Err(HfError::Api(format!("{url} answered HTTP {s}"))),
    }
    resp.json()
        .await
        .map_err(|e| HfError::Api(format!("{url}: bad listing: {e}")))
}

/// `{endpoint}/<owner>/<repo>/resolve/main/<path>`.
///
/// # Errors
/// [`HfError::Api`] when the URL is not valid.
pub fn resolve_url(
    endpoint: &str,
    owner: &str,
    repo: &str,
    path: &str,
) -> Result<reqwest::Url, HfError> {
    let url = format!(
        "{}/{owner}/{repo}/resolve/main/{path}",
        endpoint.trim_end_matches('/')
    );
    reqwest::Url::parse(&url).map_err(|e| HfError::Api(format!("{url}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(path: &str) -> RepoFile {
        RepoFile {
            kind: "file".into(),
            path: path.into(),
            size: Some(10),
            lfs: None,
        }
    }

    fn paths(c: Choice) -> Vec<String> {
        match c {
            Choice::Gguf(v) | Choice::Convert(v) => v.into_iter().map(|f| f.path).collect(),
        }
    }

    #[test]
    fn quants_match_whole_tokens_case_insensitively() {
        assert!(quant_matches("Llama-3.2-1B-Instruct-Q4_K_M.gguf", "q4_k_m"));
        assert!(quant_matches("model.Q8_0.gguf", "Q8_0"));
        assert!(!quant_matches("model-Q4_K_M.gguf", "Q4_K"));
        assert!(!quant_matches("model-IQ4_XS.gguf", "Q4_XS"));
    }

    #[test]
    fn a_quant_picks_its_file_or_every_part_of_a_split_model() {
        let repo = [
            f("README.md"),
            f("m-Q4_K_M.gguf"),
            f("m-Q8_0.gguf"),
            f("mmproj-m-Q8_0.gguf"),
            f("Q6_K/m-Q6_K-00002-of-00002.gguf"),
            f("Q6_K/m-Q6_K-00001-of-00002.gguf"),
        ];
        assert_eq!(
            paths(choose("o/r", &repo, Some("q8_0"), None).unwrap()),
            ["m-Q8_0.gguf"]
        );
        assert_eq!(
            paths(choose("o/r", &repo, None, None).unwrap()),
            ["m-Q4_K_M.gguf"]
        );
        assert_eq!(
            paths(choose("o/r", &repo, Some("Q6_K"), None).unwrap()),
            [
                "Q6_K/m-Q6_K-00001-of-00002.gguf",
                "Q6_K/m-Q6_K-00002-of-00002.gguf"
            ]
        );
        assert_eq!(
            paths(choose("o/r", &repo, None, Some("m-Q8_0.gguf")).unwrap()),
            ["m-Q8_0.gguf"]
        );
        let err = choose("o/r", &repo, Some("Q2_K"), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("Q8_0") && err.contains("Q2_K"), "{err}");
        let two = [f("a-Q4_0.gguf"), f("b-Q4_0.gguf")];
        assert!(matches!(
            choose("o/r", &two, Some("Q4_0"), None),
            Err(HfError::Ambiguous { .. })
        ));
    }

    #[test]
    fn weights_without_gguf_convert_and_adapters_and_diffusion_are_refused() {
        let repo = [
            f("config.json"),
            f("tokenizer.json"),
            f("model.safetensors"),
            f("onnx/model.onnx"),
            f("README.md"),
            f("modules.json"),
            f("1_Pooling/config.json"),
            f("2_Dense/model.safetensors"),
            f("x_Pooling/config.json"),
            f("1_Pooling/sub/config.json"),
        ];
        assert_eq!(
            paths(choose("o/r", &repo, None, None).unwrap()),
            [
                "config.json",
                "tokenizer.json",
                "model.safetensors",
                "modules.json",
                "1_Pooling/config.json"
            ]
        );
        let lora = [f("adapter_config.json"), f("adapter_model.safetensors")];
        assert!(matches!(
            choose("o/r", &lora, None, None),
            Err(HfError::Lora { .. })
        ));
        let sd = [
            f("model_index.json"),
            f("unet/diffusion_pytorch_model.safetensors"),
        ];
        assert!(matches!(
            choose("o/r", &sd, None, None),
            Err(HfError::Diffusion { .. })
        ));
        assert!(matches!(
            choose("o/r", &[f("README.md")], None, None),
            Err(HfError::Nothing { .. })
        ));
    }
}
