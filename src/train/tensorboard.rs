//! TensorBoard scalar event files: every figure `metrics.jsonl` records, written beside it as
//! `EXP_DIR/tensorboard/events.out.tfevents.<time>.<host>.<pid>.nlpkit`.
//!
//! The format is TFRecord framing around `Event` protobufs, written by hand (a few varint and
//! fixed-width helpers and a CRC32C table) rather than through prost and TensorFlow's protos:
//!
//! ```text
//! record = u64 length | u32 masked_crc32c(length) | data | u32 masked_crc32c(data)   (LE)
//! Event  { double wall_time = 1; int64 step = 2; string file_version = 3;
//!          Summary summary = 5 }
//! Summary { repeated Value value = 1 }   Value { string tag = 1; float simple_value = 2 }
//! ```
//!
//! A resumed run opens a new file, and first drops from the folder's older files the scalars of
//! steps after its checkpoint (as `metrics.jsonl` drops its records), so each step appears once
//! whichever way TensorBoard merges the files.

use crate::error::{Error, IoContext, Result};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The folder of event files inside an experiment.
pub const DIR: &str = "tensorboard";
const PREFIX: &str = "events.out.tfevents.";

/// Appends scalar events to one file.
pub struct EventWriter {
    file: File,
    path: PathBuf,
}

impl EventWriter {
    /// Start a new events file in `dir` (created if missing) after dropping, from the files
    /// already there, every scalar of a step after `done`.
    pub fn create(dir: &Path, done: usize) -> Result<Self> {
        std::fs::create_dir_all(dir).with_path("create", dir)?;
        for old in event_files(dir)? {
            forget_after(&old, done as i64)?;
        }
        let now = wall_time();
        // TensorBoard reads a folder's files in name order: the time first keeps a resumed
        // run's file after the one it continues. A name taken (a run resumed within the same
        // second by the same process) moves on to the next second.
        let (host, pid) = (hostname(), std::process::id());
        let mut secs = now as u64;
        let (file, path) = loop {
            let path = dir.join(format!("{PREFIX}{secs}.{host}.{pid}.nlpkit"));
            match std::fs::OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)
            {
                Ok(file) => break (file, path),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => secs += 1,
                Err(e) => return Err(Error::io(format!("cannot create {}", path.display()), e)),
            }
        };
        let mut writer = Self { file, path };
        writer.write_event(&Event {
            wall_time: now,
            step: 0,
            file_version: Some("brain.Event:2".into()),
            scalars: Vec::new(),
        })?;
        Ok(writer)
    }

    /// One event holding each `(tag, value)` at `step`.
    pub fn scalars(&mut self, step: usize, scalars: Vec<(String, f32)>) -> Result<()> {
        self.write_event(&Event {
            wall_time: wall_time(),
            step: step as i64,
            file_version: None,
            scalars,
        })
    }

    fn write_event(&mut self, event: &Event) -> Result<()> {
        // One write a record, flushed (a File is unbuffered): TensorBoard shows the run live,
        // and a killed run leaves at most one partial record, which the reader stops at.
        self.file
            .write_all(&frame(&event.encode()))
            .map_err(|e| Error::io(format!("cannot write {}", self.path.display()), e))
    }
}

/// One `Event`: the first of a file carries `file_version`, the others scalars.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub wall_time: f64,
    pub step: i64,
    pub file_version: Option<String>,
    pub scalars: Vec<(String, f32)>,
}

impl Event {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        key(&mut out, 1, WIRE_FIXED64);
        out.extend_from_slice(&self.wall_time.to_le_bytes());
        if self.step != 0 {
            key(&mut out, 2, WIRE_VARINT);
            varint(&mut out, self.step as u64);
        }
        if let Some(version) = &self.file_version {
            bytes_field(&mut out, 3, version.as_bytes());
        }
        if !self.scalars.is_empty() {
            let mut summary = Vec::new();
            for (tag, value) in &self.scalars {
                let mut v = Vec::new();
                bytes_field(&mut v, 1, tag.as_bytes());
                key(&mut v, 2, WIRE_FIXED32);
                v.extend_from_slice(&value.to_le_bytes());
                bytes_field(&mut summary, 1, &v);
            }
            bytes_field(&mut out, 5, &summary);
        }
        out
    }

    /// The fields of an `Event` this module writes; any other field is skipped.
    pub fn decode(data: &[u8]) -> std::result::Result<Self, String> {
        let mut event = Event {
            wall_time: 0.0,
            step: 0,
            file_version: None,
            scalars: Vec::new(),
        };
        for field in Fields::new(data) {
            match field? {
                (1, Payload::Fixed64(v)) => event.wall_time = f64::from_le_bytes(v),
                (2, Payload::Varint(v)) => event.step = v as i64,
                (3, Payload::Bytes(b)) => {
                    event.file_version = Some(String::from_utf8_lossy(b).into_owned())
                }
                (5, Payload::Bytes(summary)) => {
                    for value in Fields::new(summary) {
                        let (1, Payload::Bytes(value)) = value? else {
                            continue;
                        };
                        let (mut tag, mut simple) = (String::new(), None);
                        for f in Fields::new(value) {
                            match f? {
                                (1, Payload::Bytes(b)) => {
                                    tag = String::from_utf8_lossy(b).into_owned()
                                }
                                (2, Payload::Fixed32(v)) => simple = Some(f32::from_le_bytes(v)),
                                _ => {}
                            }
                        }
                        if let Some(simple) = simple {
                            event.scalars.push((tag, simple));
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(event)
    }
}

/// The events of a file's sound records, in order, and whether a damaged or partial record
/// ended the reading early (a killed run's last write).
pub fn read_events(bytes: &[u8]) -> (Vec<Event>, bool) {
    let mut events = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let Some((data, after)) = unframe(rest) else {
            return (events, true);
        };
        match Event::decode(data) {
            Ok(event) => events.push(event),
            Err(_) => return (events, true),
        }
        rest = after;
    }
    (events, false)
}

/// The events files of `dir`, in name order (a folder that does not exist has none).
pub fn event_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.with_path("read", dir)?;
        if entry.file_name().to_string_lossy().starts_with(PREFIX) {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// Rewrite `path` without the events of steps after `step` (and without a partial last record);
/// remove it if no scalar is left (a run killed before it logged).
fn forget_after(path: &Path, step: i64) -> Result<()> {
    let bytes = std::fs::read(path).with_path("read", path)?;
    let (events, damaged) = read_events(&bytes);
    let kept: Vec<&Event> = events
        .iter()
        .filter(|e| e.file_version.is_some() || e.step <= step)
        .collect();
    if kept.iter().all(|e| e.scalars.is_empty()) {
        return std::fs::remove_file(path).with_path("remove", path);
    }
    if kept.len() == events.len() && !damaged {
        return Ok(());
    }
    let out: Vec<u8> = kept.iter().flat_map(|e| frame(&e.encode())).collect();
    crate::error::write_atomic(path, &out)
}

fn wall_time() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    // The name is one component of a file name.
    let name: String = name
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

// --- TFRecord framing ---------------------------------------------------------------------

/// `data` as one TFRecord.
pub fn frame(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

/// The data of the first record of `bytes` and what follows it; `None` when the record is
/// cut short or a checksum does not match.
fn unframe(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let len_bytes = bytes.get(..8)?;
    let len_crc = u32::from_le_bytes(bytes.get(8..12)?.try_into().ok()?);
    if masked_crc(len_bytes) != len_crc {
        return None;
    }
    let len = usize::try_from(u64::from_le_bytes(len_bytes.try_into().ok()?)).ok()?;
    let end = 12usize.checked_add(len)?;
    let data = bytes.get(12..end)?;
    let crc = u32::from_le_bytes(bytes.get(end..end.checked_add(4)?)?.try_into().ok()?);
    (masked_crc(data) == crc).then(|| (data, &bytes[end + 4..]))
}

/// TFRecord's masked CRC32C: rotated and offset so that a CRC of data holding CRCs stays strong.
pub fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// CRC-32C (Castagnoli), byte-wise from a table built at compile time; a few KB a step.
pub fn crc32c(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82f6_3b78
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &b in data {
        crc = TABLE[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

// --- protobuf wire format -----------------------------------------------------------------

const WIRE_VARINT: u8 = 0;
const WIRE_FIXED64: u8 = 1;
const WIRE_BYTES: u8 = 2;
const WIRE_FIXED32: u8 = 5;

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, (u64::from(field) << 3) | u64::from(wire));
}

fn bytes_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    key(out, field, WIRE_BYTES);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

enum Payload<'a> {
    Varint(u64),
    Fixed64([u8; 8]),
    Bytes(&'a [u8]),
    Fixed32([u8; 4]),
}

/// The `(field number, payload)` pairs of one message.
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn new(rest: &'a [u8]) -> Self {
        Self { rest }
    }

    fn varint(&mut self) -> std::result::Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.rest.split_first().ok_or("varint cut short")?;
            self.rest = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        if self.rest.len() < n {
            return Err(format!("field of {n} bytes cut short"));
        }
        let (taken, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(taken)
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = std::result::Result<(u64, Payload<'a>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let item = (|| {
            let key = self.varint()?;
            let payload = match (key & 7) as u8 {
                WIRE_VARINT => Payload::Varint(self.varint()?),
                WIRE_FIXED64 => Payload::Fixed64(self.take(8)?.try_into().expect("8 bytes")),
                WIRE_BYTES => {
                    let n = usize::try_from(self.varint()?).map_err(|e| e.to_string())?;
                    Payload::Bytes(self.take(n)?)
                }
                WIRE_FIXED32 => Payload::Fixed32(self.take(4)?.try_into().expect("4 bytes")),
                wire => return Err(format!("unsupported wire type {wire}")),
            };
            Ok((key >> 3, payload))
        })();
        if item.is_err() {
            // One error ends the message.
            self.rest = &[];
        }
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        // The check value of CRC-32C (RFC 3720, appendix B.4).
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
    }

    #[test]
    fn events_written_are_read_back_with_sound_checksums() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = EventWriter::create(dir.path(), 0).unwrap();
        writer
            .scalars(
                10,
                vec![("train/loss".into(), 2.5), ("train/lr".into(), 3e-4)],
            )
            .unwrap();
        writer
            .scalars(20, vec![("valid/loss".into(), 1.25)])
            .unwrap();
        drop(writer);
        let files = event_files(dir.path()).unwrap();
        assert_eq!(files.len(), 1);
        let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with(PREFIX) && name.ends_with(".nlpkit"),
            "{name}"
        );

        let bytes = std::fs::read(&files[0]).unwrap();
        let (events, damaged) = read_events(&bytes);
        assert!(!damaged);
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].file_version.as_deref(), Some("brain.Event:2"));
        assert_eq!(events[1].step, 10);
        assert_eq!(
            events[1].scalars,
            vec![
                ("train/loss".to_string(), 2.5),
                ("train/lr".to_string(), 3e-4)
            ]
        );
        assert_eq!(events[2].step, 20);
        assert_eq!(events[2].scalars, vec![("valid/loss".to_string(), 1.25)]);
        assert!(events[2].wall_time > 1.6e9);

        // A flipped byte in the data fails its checksum: the reader stops before that record.
        let mut bad = bytes.clone();
        let last = bad.len() - 6;
        bad[last] ^= 1;
        let (events, damaged) = read_events(&bad);
        assert!(damaged);
        assert_eq!(events.len(), 2);
    }

    #[test]
    fn the_record_framing_is_tensorflows() {
        // An empty record: length 0, its masked CRC, no data, the masked CRC of nothing.
        let r = frame(&[]);
        assert_eq!(r.len(), 16);
        assert_eq!(&r[..8], &[0u8; 8]);
        assert_eq!(
            u32::from_le_bytes(r[12..16].try_into().unwrap()),
            0xa282_ead8
        );
        // The first event of a file, byte for byte as TensorFlow's writer encodes it.
        let e = Event {
            wall_time: 1.5,
            step: 0,
            file_version: Some("brain.Event:2".into()),
            scalars: Vec::new(),
        }
        .encode();
        let mut want = vec![0x09];
        want.extend_from_slice(&1.5f64.to_le_bytes());
        want.extend_from_slice(&[0x1a, 13]);
        want.extend_from_slice(b"brain.Event:2");
        assert_eq!(e, want);
    }

    #[test]
    fn a_resumed_run_drops_later_steps_from_older_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = EventWriter::create(dir.path(), 0).unwrap();
        for step in [10, 20, 30] {
            first
                .scalars(step, vec![("train/loss".into(), step as f32)])
                .unwrap();
        }
        let first_path = first.path.clone();
        drop(first);
        // A partial record at the end, as a killed run leaves.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&first_path)
            .unwrap();
        f.write_all(&[1, 2, 3]).unwrap();
        drop(f);

        let mut second = EventWriter::create(dir.path(), 20).unwrap();
        second
            .scalars(30, vec![("train/loss".into(), 0.5)])
            .unwrap();
        let (events, damaged) = read_events(&std::fs::read(&first_path).unwrap());
        assert!(!damaged);
        let steps: Vec<i64> = events.iter().map(|e| e.step).collect();
        assert_eq!(steps, vec![0, 10, 20]);
        let files = event_files(dir.path()).unwrap();
        assert_eq!(files.len(), 2, "{files:?}");
    }

    #[test]
    fn decoding_garbage_is_an_error_not_a_panic() {
        for bytes in [&[0xffu8; 12][..], &[0x0a, 0x05, 1][..], &[0x2a, 0x80][..]] {
            let _ = Event::decode(bytes);
            let _ = read_events(bytes);
        }
    }
}
