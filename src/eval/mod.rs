//! Evaluation and decoding: sampling and generation for language models, greedy and beam
//! search for translation, BLEU and chrF.

pub mod bleu;
pub mod classification;
pub mod embeddings;
pub mod entities;
pub mod explain;
pub mod generate;
pub mod report;
pub mod sampling;
pub mod translate;
