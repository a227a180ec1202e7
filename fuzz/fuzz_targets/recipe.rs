//! The recipe loader: the input is written to a recipe file and loaded (parse, `--set`
//! overrides, presets and defaults, validation); lines holding `=` also go in as overrides, as
//! in tests/fuzz.rs. Any answer is fine, a panic is not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::LazyLock;

/// One recipe file per process, rewritten for each input.
static PATH: LazyLock<PathBuf> = LazyLock::new(|| {
    std::env::temp_dir().join(format!("nlpkit-fuzz-recipe-{}.yaml", std::process::id()))
});

fuzz_target!(|data: &[u8]| {
    std::fs::write(&*PATH, data).unwrap();
    let text = String::from_utf8_lossy(data);
    let overrides: Vec<String> = (text.lines())
        .filter(|line| line.contains('='))
        .take(2)
        .map(|line| line.trim().replace(": ", "."))
        .collect();
    let _ = nlpkit::recipe::load_recipe(&PATH, &overrides);
});
