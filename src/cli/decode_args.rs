//! Decoding options shared by `eval` (on translation experiments) and `translate`.

use crate::error::{Error, Result};
use crate::eval::translate::{DecodeOptions, LengthPenalty};

#[derive(clap::Args, Debug, Clone)]
pub struct DecodeArgs {
    /// Beam size; 1 decodes greedily.
    #[arg(long, default_value_t = 5)]
    pub beam: usize,
    /// Length penalty exponent alpha: hypotheses are ranked by log p / L^alpha (fairseq's
    /// --lenpen; 0 ranks by log p alone).
    #[arg(long, default_value_t = 0.75)]
    pub lenpen: f64,
    /// `simple`: L^alpha; `gnmt`: ((5 + L) / 6)^alpha.
    #[arg(long, value_enum, default_value_t = LengthPenalty::Simple)]
    pub length_penalty: LengthPenalty,
    /// Maximum output length: ceil(A * source tokens) + B.
    #[arg(long, default_value_t = 1.5)]
    pub max_len_a: f64,
    #[arg(long, default_value_t = 10)]
    pub max_len_b: usize,
    /// Sentences decoded together.
    #[arg(long, default_value_t = 32)]
    pub batch_sentences: usize,
}

impl DecodeArgs {
    pub fn options(&self) -> Result<DecodeOptions> {
        if self.beam == 0 {
            return Err(Error::Usage("--beam must be at least 1".into()));
        }
        if !(self.lenpen.is_finite() && self.lenpen >= 0.0) {
            return Err(Error::Usage("--lenpen must be 0 or positive".into()));
        }
        if !(self.max_len_a.is_finite() && self.max_len_a >= 0.0) {
            return Err(Error::Usage("--max-len-a must be 0 or positive".into()));
        }
        Ok(DecodeOptions {
            beam: self.beam,
            max_len_a: self.max_len_a,
            max_len_b: self.max_len_b,
            length_penalty: self.length_penalty,
            alpha: self.lenpen,
            batch_sentences: self.batch_sentences.max(1),
        })
    }
}
