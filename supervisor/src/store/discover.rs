//! `--models-dir` discovery: the GGUF files and router-layout model
//! directories already in a folder, as models to serve.

use std::path::Path;

use crate::models::ModelSpec;

/// Finds the models in `dir`: `NAME.gguf` (any case) becomes `name`, and
/// `NAME_TAG/model.gguf` becomes `NAME:TAG` (`NAME` without an underscore). Other entries are ignored. Sorted by name.
///
/// # Errors
/// When `dir` cannot be listed.
pub fn models_in(dir: &Path) -> std::io::Result<Vec<ModelSpec>> {
    let entries = std::fs::read_dir(dir)?;
    let mut specs = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let is_gguf = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
        if path.is_file() && is_gguf {
            if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                specs.push(ModelSpec {
                    name: stem.to_lowercase(),
                    path,
                });
            }
        } else if path.is_dir() && path.join("model.gguf").is_file() {
            if let Some(name) = path.file_name().and_then(|s| s.to_str()) {
                specs.push(ModelSpec {
                    // The router's layout: `gpt-oss_20b/model.gguf` is `gpt-oss:20b`.
                    name: super::named_dirs::dir_to_model_name(name),
                    path: path.join("model.gguf"),
                });
            }
        }
    }
    specs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(specs)
}
