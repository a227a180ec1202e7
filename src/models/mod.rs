//! Model families, one file each. Models know Burn and nothing of recipes' files or the CLI.

pub mod gpt2;
