//! How a model name a client writes finds the model the node serves: as
//! Ollama resolves names, so a model pulled as `tiny:latest` answers to `tiny`.
//!
//! [`canonical`] maps every spelling of one name to one key: lowercase;
//! `registry.ollama.ai/` and then `library/` dropped from the front; `:latest`
//! added when the last `/`-part has no tag. Two names are the same model when
//! their keys are equal. `hf/owner/repo/file.gguf` names (which have no tag)
//! are only lowercased. Pure: no lookups, no validation (a name that is not a
//! valid store name still has a key, and simply matches nothing).

/// The default registry's host, dropped from the front of names.
const DEFAULT_REGISTRY: &str = "registry.ollama.ai/";
/// The default namespace, dropped from the front of names.
const DEFAULT_NAMESPACE: &str = "library/";
/// The tag of names without one.
const DEFAULT_TAG: &str = ":latest";

/// The lookup key of `name` (see the module docs).
pub fn canonical(name: &str) -> String {
    let lower = name.trim().to_lowercase();
    if lower.starts_with("hf/") {
        return lower;
    }
    let mut rest = lower.as_str();
    rest = rest.strip_prefix(DEFAULT_REGISTRY).unwrap_or(rest);
    rest = rest.strip_prefix(DEFAULT_NAMESPACE).unwrap_or(rest);
    let last = rest.rsplit('/').next().unwrap_or(rest);
    if last.is_empty() || last.contains(':') {
        rest.to_string()
    } else {
        format!("{rest}{DEFAULT_TAG}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_name_has_one_key() {
        let cases = [
            ("tiny", "tiny:latest"),
            ("tiny:latest", "tiny:latest"),
            ("TINY", "tiny:latest"),
            ("Tiny:Q4", "tiny:q4"),
            ("library/tiny", "tiny:latest"),
            ("library/tiny:7b", "tiny:7b"),
            ("registry.ollama.ai/library/tiny:latest", "tiny:latest"),
            ("registry.ollama.ai/library/tiny", "tiny:latest"),
            ("Registry.Ollama.AI/Library/Tiny", "tiny:latest"),
            ("registry.ollama.ai/me/tiny", "me/tiny:latest"),
            ("me/tiny", "me/tiny:latest"),
            ("localhost:5000/ns/tiny", "localhost:5000/ns/tiny:latest"),
            ("localhost:5000/ns/tiny:v1", "localhost:5000/ns/tiny:v1"),
            ("hf.co/owner/repo", "hf.co/owner/repo:latest"),
            ("hf.co/owner/repo:Q4_K_M", "hf.co/owner/repo:q4_k_m"),
            ("hf/Owner/Repo/model.gguf", "hf/owner/repo/model.gguf"),
            ("gpt-oss:20b", "gpt-oss:20b"),
            (" tiny ", "tiny:latest"),
            ("", ""),
        ];
        for (name, key) in cases {
            assert_eq!(canonical(name), key, "{name:?}");
        }
    }

    #[test]
    fn different_models_keep_different_keys() {
        let pairs = [
            ("tiny", "tiny:7b"),
            ("me/tiny", "tiny"),
            ("other.host/library/tiny", "tiny"),
            ("tiny:latest", "tinier"),
        ];
        for (a, b) in pairs {
            assert_ne!(canonical(a), canonical(b), "{a} vs {b}");
        }
    }
}
