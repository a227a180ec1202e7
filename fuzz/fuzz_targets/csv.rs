//! The CSV reader as a recipe's data reaches it: the input is written to a file and read by
//! `read_labelled` (UTF-8 check, byte-order mark, then the records and columns).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nlpkit::recipe::CsvSection;
use std::path::PathBuf;
use std::sync::LazyLock;

static PATH: LazyLock<PathBuf> =
    LazyLock::new(|| std::env::temp_dir().join(format!("nlpkit-fuzz-{}.csv", std::process::id())));

static SECTION: LazyLock<CsvSection> = LazyLock::new(|| CsvSection {
    text_column: "review".into(),
    label_column: "label".into(),
    ..CsvSection::default()
});

fuzz_target!(|data: &[u8]| {
    std::fs::write(&*PATH, data).unwrap();
    let _ = nlpkit::data::table::read_labelled(&PATH, "data.train", &SECTION);
});
