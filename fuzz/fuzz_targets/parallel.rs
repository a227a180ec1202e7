//! The parallel-corpus reader (a TSV of source and target) as a recipe's data reaches it: the
//! input is written to a file and read by `read_pairs` (UTF-8 check, byte-order mark, then the
//! lines), malformed lines being errors as in tests/fuzz.rs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nlpkit::recipe::ParallelSection;
use std::path::PathBuf;
use std::sync::LazyLock;

static PATH: LazyLock<PathBuf> =
    LazyLock::new(|| std::env::temp_dir().join(format!("nlpkit-fuzz-{}.tsv", std::process::id())));

static SECTION: LazyLock<ParallelSection> = LazyLock::new(|| {
    serde_json::from_value(serde_json::json!({
        "source_lang": "en", "target_lang": "zh", "on_bad_line": "error"
    }))
    .unwrap()
});

fuzz_target!(|data: &[u8]| {
    std::fs::write(&*PATH, data).unwrap();
    let _ = nlpkit::data::parallel::read_pairs(&PATH, "data.train", &SECTION);
});
