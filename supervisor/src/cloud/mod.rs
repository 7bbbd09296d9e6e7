//! Cloud models by prefix (`openai:`, `anthropic:`, `google:`), served through
//! the node's OpenAI API.
//!
//! - `translate`: the contract every translated provider implements.

pub mod anthropic;
pub mod google;
pub mod translate;
