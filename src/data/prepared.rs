//! What every prepared-data folder shares, whatever the format: the files its format writes and
//! `meta.json`, written last with a fingerprint of the inputs (file contents and the data
//! section), so an unchanged recipe skips the work and a crash mid-way redoes it.

use super::Split;
use crate::error::{Error, IoContext, Result, write_atomic};
use crate::recipe::{DataSection, Recipe};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// A prepared-data folder and what `meta.json` says of it.
pub struct Prepared<M> {
    pub meta: M,
    pub dir: PathBuf,
    /// True when the inputs were unchanged and nothing was redone.
    pub up_to_date: bool,
}

/// The record a format keeps in `meta.json`.
pub trait Meta: Serialize + DeserializeOwned {
    /// What the folder was prepared from (see [`fingerprint`]).
    fn fingerprint(&self) -> &str;
}

/// How a command gets its prepared data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preparation {
    /// Prepare unless the folder is up to date with the inputs.
    IfChanged,
    /// Prepare again, whatever the folder holds.
    Force,
    /// Read what another process (rank 0 of a job) prepared.
    Reuse,
}

impl Preparation {
    /// The recipe's prepared data, by `prepare` (given `force`) or read back.
    pub fn run<M: Meta>(
        self,
        recipe: &Recipe,
        prepare: fn(&Recipe, bool) -> Result<Prepared<M>>,
    ) -> Result<Prepared<M>> {
        match self {
            Preparation::IfChanged => prepare(recipe, false),
            Preparation::Force => prepare(recipe, true),
            Preparation::Reuse => {
                let dir = recipe.prepared_dir();
                Ok(Prepared {
                    meta: load_meta(&dir)?,
                    dir,
                    up_to_date: true,
                })
            }
        }
    }
}

fn meta_path(dir: &Path) -> PathBuf {
    dir.join("meta.json")
}

/// The meta of a prepared folder, or an error that says how to prepare it.
pub fn load_meta<M: Meta>(dir: &Path) -> Result<M> {
    let path = meta_path(dir);
    let text = std::fs::read_to_string(&path).map_err(|_| {
        Error::Data(format!(
            "no prepared data in {} (missing meta.json); run `nlpkit prepare-data RECIPE` first",
            dir.display()
        ))
    })?;
    serde_json::from_str(&text).map_err(|e| {
        Error::Data(format!(
            "{} is damaged or from another kind of recipe ({e}); rerun `nlpkit prepare-data \
             --force`",
            path.display()
        ))
    })
}

/// The prepared folder `dir` when it was prepared from `fingerprint` and still holds `files`
/// (never with `force`): then there is nothing to redo.
pub fn reusable<M: Meta>(
    dir: &Path,
    fingerprint: &str,
    files: &[PathBuf],
    force: bool,
) -> Option<Prepared<M>> {
    if force {
        return None;
    }
    let meta: M = load_meta(dir).ok()?;
    (meta.fingerprint() == fingerprint && files.iter().all(|f| f.exists())).then(|| Prepared {
        meta,
        dir: dir.to_path_buf(),
        up_to_date: true,
    })
}

/// Start (re)writing `dir`: a stale meta.json must not vouch for half-written new files.
pub fn begin(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_path("create", dir)?;
    let _ = std::fs::remove_file(meta_path(dir));
    Ok(())
}

/// Write `meta.json` last, once every other file is in place.
pub fn finish<M: Meta>(dir: &Path, meta: M) -> Result<Prepared<M>> {
    let json = serde_json::to_string_pretty(&meta).expect("meta serialises");
    write_atomic(&meta_path(dir), json.as_bytes())?;
    Ok(Prepared {
        meta,
        dir: dir.to_path_buf(),
        up_to_date: false,
    })
}

/// The raw data of the three splits: `data.train` dealt into three by `split` (given the seed
/// and `data.split`), or `data.train`, `data.valid` and `data.test` read each with `read`
/// (given the file and the recipe key naming it). Valid and test are both given or neither.
pub fn read_splits<T>(
    recipe: &Recipe,
    read: impl Fn(&Path, &str) -> Result<T>,
    split: impl FnOnce(T) -> [T; 3],
) -> Result<[T; 3]> {
    let data = &recipe.data;
    let train = read(&data.train, "data.train")?;
    match split_files(data)? {
        None => Ok(split(train)),
        Some([valid, test]) => Ok([train, read(valid, "data.valid")?, read(test, "data.test")?]),
    }
}

/// `data.valid` and `data.test`, when given: both, or neither (then `data.train` is split).
fn split_files(data: &DataSection) -> Result<Option<[&Path; 2]>> {
    match (&data.valid, &data.test) {
        (None, None) => Ok(None),
        (Some(valid), Some(test)) => Ok(Some([valid, test])),
        _ => Err(Error::Recipe(
            "give both `data.valid` and `data.test`, or neither (then `data.train` is split by \
             `data.split`)"
                .into(),
        )),
    }
}

/// The files of every split, with the recipe keys naming them, for the fingerprint.
pub fn split_inputs(data: &DataSection) -> Vec<(PathBuf, String)> {
    [
        Some((data.train.clone(), "data.train")),
        data.valid.clone().map(|p| (p, "data.valid")),
        data.test.clone().map(|p| (p, "data.test")),
    ]
    .into_iter()
    .flatten()
    .map(|(p, k)| (p, k.to_string()))
    .collect()
}

/// What prepared data depends on: the data section and the bytes of every input file.
pub fn fingerprint(recipe: &Recipe, inputs: &[(PathBuf, String)]) -> Result<String> {
    let mut data = recipe.data.clone();
    data.prepared_dir = None;
    let mut hasher = Sha256::new();
    hasher.update(serde_json::to_string(&data).expect("serialises"));
    if data.split.shuffle {
        hasher.update(recipe.seed.to_le_bytes());
    }
    for (path, key) in inputs {
        hasher.update(crate::error::read_file(path, key)?);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// Per-split counts as a table: a header row and one row per split.
pub fn split_table<const N: usize>(
    headers: [&str; N],
    row: impl Fn(Split) -> [usize; N],
) -> String {
    let mut out = format!("{:<6}", "split");
    for h in headers {
        out += &format!(" {h:>11}");
    }
    out.push('\n');
    for split in Split::ALL {
        out += &format!("{:<6}", split.name());
        for value in row(split) {
            out += &format!(" {value:>11}");
        }
        out.push('\n');
    }
    out
}
