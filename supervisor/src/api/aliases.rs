//! Aliases in the model lists: every alias a model has (models configuration
//! file, `aliases = [..]`) is listed as a model of its own, so a client that
//! picks a model from a list can pick the alias.
//!
//! - `/v1/models`: an entry per alias shaped like its model's (same `owned_by`,
//!   `created` and `meta`), with vLLM's model-card fields saying what it
//!   stands for: `parent` and `root` name the model (vLLM lists a LoRA adapter
//!   the same way, with `parent` = its base model). The model's own entry is
//!   unchanged.
//! - `/api/tags`: an entry per alias with its model's size, details and
//!   digest, as `ollama cp MODEL ALIAS` would list it.
//!
//! An alias whose name is already listed (a stored model of that name) is not
//! listed twice. Pure functions over JSON values.

use serde_json::Value;

use crate::models::names::canonical;

/// The `/v1/models` entry of `alias` of the model whose entry is `model`.
pub fn openai_entry(model: &Value, alias: &str) -> Value {
    let mut entry = model.clone();
    entry["parent"] = model["id"].clone();
    entry["root"] = model["id"].clone();
    entry["id"] = Value::from(alias);
    entry
}

/// `list` (`/v1/models`' `data`), with an entry per alias after its model's;
/// `aliases` maps a model id to its aliases.
pub fn openai_list(list: Vec<Value>, aliases: &[(String, Vec<String>)]) -> Vec<Value> {
    extend(list, aliases, "id", |model, alias| {
        openai_entry(model, alias)
    })
}

/// `list` (`/api/tags`' `models`), with an entry per alias copying its
/// model's (`name` and `model` are the alias; digest, size, details stay).
pub fn ollama_list(list: Vec<Value>, aliases: &[(String, Vec<String>)]) -> Vec<Value> {
    extend(list, aliases, "name", |model, alias| {
        let mut entry = model.clone();
        entry["name"] = Value::from(alias);
        entry["model"] = Value::from(alias);
        entry
    })
}

fn extend(
    list: Vec<Value>,
    aliases: &[(String, Vec<String>)],
    key: &str,
    make: impl Fn(&Value, &str) -> Value,
) -> Vec<Value> {
    let name_of = |v: &Value| canonical(v[key].as_str().unwrap_or_default());
    let mut listed: Vec<String> = list.iter().map(name_of).collect();
    let mut out = Vec::with_capacity(list.len());
    for entry in list {
        let name = name_of(&entry);
        let own = aliases
            .iter()
            .find(|(model, _)| canonical(model) == name)
            .map(|(_, a)| a.as_slice())
            .unwrap_or_default();
        let extra: Vec<Value> = own
            .iter()
            .filter(|alias| {
                let key = canonical(alias);
                let new = !listed.contains(&key);
                listed.push(key);
                new
            })
            .map(|alias| make(&entry, alias))
            .collect();
        out.push(entry);
        out.extend(extra);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn aliases() -> Vec<(String, Vec<String>)> {
        vec![(
            "smollm2".into(),
            vec!["smollm".into(), "gpt-4o-mini".into(), "stored:7b".into()],
        )]
    }

    #[test]
    fn openai_list_adds_an_entry_per_alias_naming_its_model() {
        let list = vec![
            json!({"id": "smollm2", "object": "model", "created": 5, "owned_by": "llm-node", "meta": {"state": "ready"}}),
            json!({"id": "other", "object": "model", "created": 5, "owned_by": "llm-node"}),
            json!({"id": "stored:7b", "object": "model", "created": 5, "owned_by": "llm-node"}),
        ];
        let out = openai_list(list, &aliases());
        let ids: Vec<_> = out.iter().map(|m| m["id"].as_str().unwrap()).collect();
        assert_eq!(
            ids,
            ["smollm2", "smollm", "gpt-4o-mini", "other", "stored:7b"]
        );
        assert_eq!(
            out[1],
            json!({"id": "smollm", "object": "model", "created": 5, "owned_by": "llm-node",
                   "meta": {"state": "ready"}, "parent": "smollm2", "root": "smollm2"})
        );
        assert!(
            out[0].get("parent").is_none(),
            "the model's own entry is unchanged"
        );
    }

    #[test]
    fn ollama_list_copies_the_models_digest_under_each_alias() {
        let list = vec![
            json!({"name": "smollm2", "model": "smollm2", "size": 9, "digest": "abc", "details": {"family": "llama"}}),
        ];
        let out = ollama_list(list, &aliases());
        assert_eq!(out.len(), 4);
        assert_eq!(
            out[2],
            json!({"name": "gpt-4o-mini", "model": "gpt-4o-mini", "size": 9, "digest": "abc", "details": {"family": "llama"}})
        );
        // A model without aliases, and aliases matched as Ollama names (`x` is `x:latest`).
        let list = vec![json!({"name": "a:latest", "model": "a:latest"})];
        let out = ollama_list(list, &[("A".into(), vec!["b".into(), "B:latest".into()])]);
        let names: Vec<_> = out.iter().map(|m| m["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["a:latest", "b"]);
    }
}
