//! The family of a model's output syntax, detected from its chat template.

/// How a model writes tool calls in its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ToolSyntax {
    /// The template knows no tools: output is content.
    None,
}

/// How a model marks its reasoning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReasoningSyntax {
    /// No reasoning markers.
    None,
}

/// A model's output syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChatFormat {
    pub tools: ToolSyntax,
    pub reasoning: ReasoningSyntax,
}

impl ChatFormat {
    /// Plain text: everything is content.
    pub const GENERIC: ChatFormat = ChatFormat {
        tools: ToolSyntax::None,
        reasoning: ReasoningSyntax::None,
    };

    /// The format of the model whose chat template is `template`.
    pub fn detect(template: &str) -> ChatFormat {
        let _ = template;
        ChatFormat::GENERIC
    }
}
