//! Reading raw UTF-8 text with errors that say which file, which line and what to do.

use crate::error::{Error, Result, read_file};
use std::path::Path;

/// Read a whole text file; `key` is the recipe key that named it (for the error message).
pub fn read_text(path: &Path, key: &str) -> Result<String> {
    let bytes = read_file(path, key)?;
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(Error::Data(format!(
            "data file {} (from `{key}`) is empty; give a file with text in it",
            path.display()
        )));
    }
    let mut text = String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        let line = 1 + bytes[..valid].iter().filter(|&&b| b == b'\n').count();
        let column = 1 + valid - bytes[..valid].iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
        Error::Data(format!(
            "data file {}:{line}:{column} (from `{key}`) is not valid UTF-8 (byte 0x{:02x} at offset \
             {valid}); convert it, e.g. `iconv -f LATIN1 -t UTF-8`",
            path.display(),
            bytes[valid]
        ))
    })?;
    // A byte-order mark (Excel and Notepad write one) is no part of the first line's text.
    if text.starts_with('\u{feff}') {
        text.drain(..'\u{feff}'.len_utf8());
    }
    Ok(text)
}
