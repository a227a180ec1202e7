//! Model families, one file each. Models know Burn and nothing of recipes' files or the CLI.

pub mod encoder;
pub mod gelu;
pub mod gpt2;
