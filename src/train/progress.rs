//! What a run reports: an indicatif bar on a terminal, one plain line per log interval
//! otherwise, and every figure as one JSON object a line in `metrics.jsonl` and, unless turned
//! off, as a TensorBoard scalar (`tensorboard.rs`).

use super::tensorboard::EventWriter;
use crate::error::{IoContext, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Map, Value, json};
use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::Path;

pub struct Progress {
    display: Display,
    /// `None` on ranks other than 0, which record nothing.
    metrics: Option<File>,
    /// `None` there too, and where `train.tensorboard` is off.
    events: Option<EventWriter>,
}

/// Where log lines go.
enum Display {
    /// A terminal: a bar whose message is the latest log line.
    Bar(ProgressBar),
    /// Not a terminal (a log file, CI): one plain line per log interval.
    Lines,
    /// `--quiet`: metrics.jsonl only.
    Silent,
}

impl Progress {
    /// `done` steps of `total` are already behind us (a resumed run): records of later steps,
    /// logged by the interrupted run after its last checkpoint, are dropped so that every step
    /// appears once. The same holds for the event files in `tensorboard`, if given.
    pub fn new(
        metrics_path: &Path,
        tensorboard: Option<&Path>,
        done: usize,
        total: usize,
        quiet: bool,
    ) -> Result<Self> {
        forget_after(metrics_path, done)?;
        let events = tensorboard
            .map(|dir| EventWriter::create(dir, done))
            .transpose()?;
        let metrics = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(metrics_path)
            .with_path("open", metrics_path)?;
        let display = if quiet {
            Display::Silent
        } else if std::io::stdout().is_terminal() {
            // Drawn on the stream just tested: indicatif's default, stderr, would hide the bar
            // and the evaluation lines printed above it whenever stderr alone is redirected.
            let bar =
                ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stdout());
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
                )
                .expect("valid template"),
            );
            bar.set_position(done as u64);
            bar.reset_eta();
            Display::Bar(bar)
        } else {
            Display::Lines
        };
        Ok(Self {
            display,
            metrics: Some(metrics),
            events,
        })
    }

    /// Reports nothing and writes nothing (ranks other than 0).
    pub fn silent() -> Self {
        Self {
            display: Display::Silent,
            metrics: None,
            events: None,
        }
    }

    /// Record one set of figures: `fields` must hold `step` and `split`.
    pub fn record(&mut self, fields: Map<String, Value>) -> Result<()> {
        let Some(metrics) = &mut self.metrics else {
            return Ok(());
        };
        // One write a record: a killed run leaves at most one partial last line, which a
        // resumed run drops (`forget_after`).
        if let Some(events) = &mut self.events {
            let (step, scalars) = scalars(&fields);
            events.scalars(step, scalars)?;
        }
        let line = format!("{}\n", Value::Object(fields));
        metrics
            .write_all(line.as_bytes())
            .map_err(|e| crate::error::Error::io("cannot write metrics.jsonl", e))
    }

    /// A training log line: to the bar's message on a terminal, to stdout otherwise.
    pub fn train_line(&mut self, line: &TrainLine) {
        let TrainLine {
            step,
            loss,
            nll,
            parts,
            lr,
            grad_norm,
            tokens_per_s,
        } = line;
        let nll = nll.map_or(String::new(), |n| format!(" | nll {n:.4}"));
        // Each loss of a multi-task objective with its current weight.
        let parts: String = parts
            .iter()
            .map(|(name, l, w)| format!(" | {name} {l:.4} (w {w:.3})"))
            .collect();
        let text = format!(
            "step {step} | loss {loss:.4}{nll}{parts} | lr {lr:.3e} | grad_norm {grad_norm:.3} | {tokens_per_s:.0} tok/s"
        );
        match &self.display {
            Display::Bar(bar) => bar.set_message(text),
            Display::Lines => println!("{text}"),
            Display::Silent => {}
        }
    }

    /// An evaluation line: printed above the bar (kept in the scroll-back) or to stdout.
    pub fn println(&self, text: &str) {
        match &self.display {
            Display::Bar(bar) => bar.println(text),
            Display::Lines => println!("{text}"),
            Display::Silent => {}
        }
    }

    pub fn set_step(&self, step: usize) {
        if let Display::Bar(bar) = &self.display {
            bar.set_position(step as u64);
        }
    }

    /// Leave the bar at the last step done: a run that stops early (or on a signal or a
    /// failure) must not show `total/total`, as indicatif's `finish` would.
    pub fn finish(&self) {
        if let Display::Bar(bar) = &self.display {
            bar.abandon();
        }
    }
}

/// Keep only the records of `metrics_path` up to `step` (a file that does not exist is fine).
fn forget_after(metrics_path: &Path, step: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(metrics_path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|line| {
            serde_json::from_str::<Value>(line)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s as usize <= step)
        })
        .map(|line| format!("{line}\n"))
        .collect();
    if kept.len() != text.len() {
        crate::error::write_atomic(metrics_path, kept.as_bytes())?;
    }
    Ok(())
}

/// A record's step and its numeric fields as TensorBoard scalars tagged `<split>/<field>`
/// (`train/loss`, `valid/loss`, `train/lr`, ...): TensorBoard groups the charts by split.
fn scalars(fields: &Map<String, Value>) -> (usize, Vec<(String, f32)>) {
    let step = fields["step"].as_u64().unwrap_or(0) as usize;
    let split = fields["split"].as_str().unwrap_or("train");
    let scalars = fields
        .iter()
        .filter(|(key, _)| *key != "step")
        .filter_map(|(key, value)| Some((format!("{split}/{key}"), value.as_f64()? as f32)))
        .collect();
    (step, scalars)
}

/// The figures of one training log line.
pub struct TrainLine<'a> {
    pub step: usize,
    pub loss: f64,
    /// The plain NLL, when it differs from the optimised loss.
    pub nll: Option<f64>,
    /// `(name, loss, weight)` of each loss of a multi-task objective.
    pub parts: &'a [(&'a str, f64, f64)],
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens_per_s: f64,
}

/// ` (ppl X)` after a per-token validation loss; nothing after other losses.
pub fn perplexity_note(loss: f64, per_token: bool) -> String {
    if per_token {
        format!(" (ppl {:.2})", loss.exp())
    } else {
        String::new()
    }
}

/// A metrics record with the fields every line has.
pub fn record(step: usize, split: &str, loss: f64, lr: f64) -> Map<String, Value> {
    let Value::Object(map) = json!({ "step": step, "split": split, "loss": loss, "lr": lr }) else {
        unreachable!()
    };
    map
}
