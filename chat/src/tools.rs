//! JSON schemas that constrain tool calls.
