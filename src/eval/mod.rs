//! Evaluation and decoding: perplexity reports and sampling.

pub mod generate;
pub mod sampling;
