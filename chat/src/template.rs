//! Chat templates: the Jinja template stored in the GGUF (or given by the
//! config) rendered with minijinja, the way Hugging Face's tokenizer does it
//! (`trim_blocks`, `lstrip_blocks`, Python string methods, `raise_exception`).
//! llama.cpp's own matcher only recognises known templates; this runs any.

use llm_node_protocol::ChatPrompt;
use minijinja::{context, Environment, Error, ErrorKind};

/// Used when neither the GGUF nor the config has a template (llama-server does the same).
pub const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// A compiled chat template with the model's special tokens.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

/// Rendering failed (a template error or a `raise_exception` call).
#[derive(Debug, thiserror::Error)]
#[error("chat template error: {0}")]
pub struct TemplateError(String);

impl ChatTemplate {
    /// Compiles `source`.
    ///
    /// # Errors
    /// [`TemplateError`] when the template does not parse.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        minijinja_contrib::add_to_environment(&mut env);
        env.add_function("raise_exception", |msg: String| -> Result<String, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_template_owned("chat", source.to_owned())
            .map_err(|e| TemplateError(e.to_string()))?;
        Ok(Self {
            env,
            bos_token: bos_token.to_owned(),
            eos_token: eos_token.to_owned(),
        })
    }

    /// Renders `messages` followed by the assistant's generation prompt.
    ///
    /// # Errors
    /// [`TemplateError`] when the template fails for these messages (for
    /// example a template that rejects a system message).
    pub fn render(&self, prompt: &ChatPrompt) -> Result<String, TemplateError> {
        let messages: Vec<_> = prompt
            .messages
            .iter()
            .map(|m| context! { role => m.role, content => m.content })
            .collect();
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| TemplateError(e.to_string()))?;
        tmpl.render(context! {
            messages => messages,
            add_generation_prompt => prompt.add_generation_prompt,
            bos_token => self.bos_token,
            eos_token => self.eos_token,
        })
        .map_err(|e| TemplateError(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: &str, content: &str) -> ChatMessage {
        ChatMessage::text(role, content)
    }

    fn chat(messages: &[ChatMessage]) -> ChatPrompt {
        ChatPrompt {
            messages: messages.to_vec(),
            add_generation_prompt: true,
            ..ChatPrompt::default()
        }
    }

    #[test]
    fn chatml_renders_roles_and_generation_prompt() {
        let t = ChatTemplate::new(CHATML, "", "<|im_end|>").unwrap();
        let out = t
            .render(&chat(&[msg("system", "be brief"), msg("user", "hi")]))
            .unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn python_string_methods_and_block_trimming_work() {
        let src = "{{ bos_token }}{% for m in messages %}\n    {% if m.role %}{{ m.role.upper() }}:{{ m.content.strip() }};{% endif %}\n{% endfor %}";
        let t = ChatTemplate::new(src, "<s>", "</s>").unwrap();
        assert_eq!(
            t.render(&chat(&[msg("user", "  x ")])).unwrap(),
            "<s>USER:x;"
        );
    }

    #[test]
    fn raise_exception_becomes_an_error() {
        let src = "{% if messages[0].role == 'system' %}{{ raise_exception('no system role') }}{% endif %}";
        let t = ChatTemplate::new(src, "", "").unwrap();
        let err = t.render(&chat(&[msg("system", "x")])).unwrap_err();
        assert!(err.to_string().contains("no system role"), "{err}");
    }

    #[test]
    fn a_broken_template_is_rejected_at_load() {
        assert!(ChatTemplate::new("{% for %}", "", "").is_err());
    }
}
