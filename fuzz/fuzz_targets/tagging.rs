//! The tagged-sentence reader (`token TAG` lines) as a recipe's data reaches it: the input is
//! written to a file and read by `read_tagged` (UTF-8 check, byte-order mark, then the lines).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::LazyLock;

static PATH: LazyLock<PathBuf> =
    LazyLock::new(|| std::env::temp_dir().join(format!("nlpkit-fuzz-{}.txt", std::process::id())));

fuzz_target!(|data: &[u8]| {
    std::fs::write(&*PATH, data).unwrap();
    let _ = nlpkit::data::tagging::read_tagged(&PATH, "data.train");
});
