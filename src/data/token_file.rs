//! Token streams on disk: raw little-endian `u16` when the vocabulary fits, else `u32`
//! (nanoGPT's `.bin` layout), so a corpus costs 2 bytes a token.

use crate::error::{Error, IoContext, Result, write_atomic};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TokenWidth {
    U16,
    U32,
}

impl TokenWidth {
    pub fn for_vocab(vocab_size: usize) -> Self {
        if vocab_size <= u16::MAX as usize + 1 {
            TokenWidth::U16
        } else {
            TokenWidth::U32
        }
    }

    fn bytes(self) -> usize {
        match self {
            TokenWidth::U16 => 2,
            TokenWidth::U32 => 4,
        }
    }
}

pub fn write_tokens(path: &Path, tokens: &[u32], width: TokenWidth) -> Result<()> {
    let mut bytes = Vec::with_capacity(tokens.len() * width.bytes());
    for &t in tokens {
        match width {
            TokenWidth::U16 => bytes.extend_from_slice(&(t as u16).to_le_bytes()),
            TokenWidth::U32 => bytes.extend_from_slice(&t.to_le_bytes()),
        }
    }
    write_atomic(path, &bytes)
}

pub fn read_tokens(path: &Path, width: TokenWidth) -> Result<Vec<u32>> {
    let bytes = std::fs::read(path).with_path("read", path)?;
    if bytes.len() % width.bytes() != 0 {
        return Err(Error::Data(format!(
            "token file {} has {} bytes, not a whole number of {:?} tokens; it is damaged, rerun \
             `nlpkit prepare-data --force`",
            path.display(),
            bytes.len(),
            width
        )));
    }
    Ok(match width {
        TokenWidth::U16 => bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32)
            .collect(),
        TokenWidth::U32 => bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_both_widths() {
        let dir = tempfile::tempdir().unwrap();
        for (width, tokens) in [
            (TokenWidth::U16, vec![0, 1, 65535]),
            (TokenWidth::U32, vec![0, 70000]),
        ] {
            let path = dir.path().join("t.bin");
            write_tokens(&path, &tokens, width).unwrap();
            assert_eq!(read_tokens(&path, width).unwrap(), tokens);
        }
        assert_eq!(TokenWidth::for_vocab(65536), TokenWidth::U16);
        assert_eq!(TokenWidth::for_vocab(65537), TokenWidth::U32);
    }
}
