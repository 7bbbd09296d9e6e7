//! What a model is before it runs: its public id and its GGUF file.

use std::path::PathBuf;

/// One model to serve: its public id and its GGUF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    /// Public id clients put in `model`; matched case-insensitively.
    pub name: String,
    pub path: PathBuf,
}

impl ModelSpec {
    /// The key the registry looks this model up by.
    pub fn key(&self) -> String {
        self.name.to_lowercase()
    }
}
