//! `nlpkit plot`: the training curves of several experiments in one SVG or PNG picture, from
//! their `metrics.jsonl`: losses (training lines, validation lines with dots) above, the learning
//! rate below, one colour per experiment. Text is laid out (and, in a PNG, drawn) with the DejaVu
//! Sans subset in `assets/fonts/` (Latin-1: other characters of a folder name are left out).

use crate::error::{Error, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use serde_json::Value;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One experiment's curves: `(step, value)` in the file's order.
#[derive(Debug, Default)]
pub struct Curves {
    pub name: String,
    pub train_loss: Vec<(f64, f64)>,
    pub valid_loss: Vec<(f64, f64)>,
    pub lr: Vec<(f64, f64)>,
}

/// The picture formats `plot` writes, chosen by the output's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Svg,
    Png,
}

/// The size of the picture in pixels.
const SIZE: (u32, u32) = (1000, 760);

/// The font every text of the pictures is laid out with: plotters' `ab_glyph` feature reads no
/// system fonts, so one is bundled (a 22 kB subset; licence beside it).
const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans-subset.ttf");

/// Draw the curves of `exp_dirs` into `output` (.svg or .png); returns what was written, for the
/// user.
pub fn plot(exp_dirs: &[PathBuf], output: &Path) -> Result<String> {
    let format = match output.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("svg") => Format::Svg,
        Some(e) if e.eq_ignore_ascii_case("png") => Format::Png,
        _ => {
            return Err(Error::Usage(format!(
                "cannot write {}: unknown picture format; give an output file ending in .svg or \
                 .png",
                output.display()
            )));
        }
    };
    let names = names(exp_dirs);
    let curves = exp_dirs
        .iter()
        .zip(names)
        .map(|(dir, name)| read_curves(dir, name))
        .collect::<Result<Vec<_>>>()?;
    plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| Error::Run("the bundled font does not load (a bug in nlpkit)".into()))?;
    let drawn = match format {
        Format::Svg => draw(SVGBackend::new(output, SIZE).into_drawing_area(), &curves),
        Format::Png => draw(
            BitMapBackend::new(output, SIZE).into_drawing_area(),
            &curves,
        ),
    };
    drawn.map_err(|e| {
        Error::Run(format!(
            "cannot draw {}: {e}; check that its folder exists and is writable",
            output.display()
        ))
    })?;
    let steps: usize = curves.iter().map(|c| c.train_loss.len()).sum();
    Ok(format!(
        "wrote {} ({} experiment(s), {steps} training points)",
        output.display(),
        curves.len()
    ))
}

/// Each folder's name in the legend: its last component, or the whole path where two share it.
fn names(dirs: &[PathBuf]) -> Vec<String> {
    let short: Vec<String> = dirs
        .iter()
        .map(|d| {
            d.file_name()
                .map_or_else(|| d.display().to_string(), |n| n.to_string_lossy().into())
        })
        .collect();
    short
        .iter()
        .zip(dirs)
        .map(|(s, d)| {
            if short.iter().filter(|o| *o == s).count() > 1 {
                d.display().to_string()
            } else {
                s.clone()
            }
        })
        .collect()
}

/// The curves of one experiment folder's `metrics.jsonl`.
pub fn read_curves(dir: &Path, name: String) -> Result<Curves> {
    let path = dir.join("metrics.jsonl");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Usage(format!(
                "{} has no metrics.jsonl: give the output_dir of a `nlpkit train` run",
                dir.display()
            )));
        }
        Err(e) => return Err(Error::io(format!("cannot read {}", path.display()), e)),
    };
    let mut curves = Curves {
        name,
        ..Curves::default()
    };
    // A line that is not a record (a killed run's partial last line) is skipped, as a resumed
    // run would drop it.
    for record in text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
    {
        let Some(step) = record["step"].as_f64() else {
            continue;
        };
        let finite = |key: &str| record[key].as_f64().filter(|v| v.is_finite());
        match record["split"].as_str() {
            Some("train") => {
                if let Some(loss) = finite("loss") {
                    curves.train_loss.push((step, loss));
                }
                if let Some(lr) = finite("lr") {
                    curves.lr.push((step, lr));
                }
            }
            Some("valid") => {
                if let Some(loss) = finite("loss") {
                    curves.valid_loss.push((step, loss));
                }
            }
            _ => {}
        }
    }
    if curves.train_loss.is_empty() && curves.valid_loss.is_empty() {
        return Err(Error::Usage(format!(
            "{} holds no training or validation loss: the run logged nothing yet (its first \
             record comes after train.log_interval steps)",
            path.display()
        )));
    }
    Ok(curves)
}

/// A categorical palette (matplotlib's tab10): distinct on screen and in print.
const COLOURS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// What one panel draws of one experiment: a line through `line`, dots on `dots`.
struct Series<'a> {
    name: &'a str,
    colour: RGBColor,
    line: &'a [(f64, f64)],
    dots: &'a [(f64, f64)],
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, curves: &[Curves]) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(460);
    let colour = |i: usize| COLOURS[i % COLOURS.len()];
    let losses: Vec<Series> = curves
        .iter()
        .enumerate()
        .map(|(i, c)| Series {
            name: &c.name,
            colour: colour(i),
            line: &c.train_loss,
            dots: &c.valid_loss,
        })
        .collect();
    panel(
        &top,
        "loss (lines: training, dots: validation)",
        "loss",
        &losses,
    )?;
    let lrs: Vec<Series> = curves
        .iter()
        .enumerate()
        .map(|(i, c)| Series {
            name: &c.name,
            colour: colour(i),
            line: &c.lr,
            dots: &[],
        })
        .collect();
    panel(&bottom, "learning rate", "lr", &lrs)?;
    root.present()?;
    Ok(())
}

/// One chart of every experiment's series, with a legend naming them.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    caption: &str,
    y_desc: &str,
    series: &[Series],
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let all = || series.iter().flat_map(|s| s.line.iter().chain(s.dots));
    // A little room on the right and left so that the dots at the ends are drawn whole.
    let x = range(all().map(|p| p.0), 0.01);
    let y = range(all().map(|p| p.1), 0.05);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(x, y)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc(y_desc)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| {
            if *v != 0.0 && v.abs() < 1e-2 {
                format!("{v:.1e}")
            } else {
                format!("{v:.3}")
            }
        })
        .draw()?;
    for s in series {
        let colour = s.colour;
        if !s.line.is_empty() {
            chart
                .draw_series(LineSeries::new(
                    s.line.iter().copied(),
                    colour.stroke_width(2),
                ))?
                .label(s.name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                });
        }
        if !s.dots.is_empty() {
            let drawn =
                chart.draw_series(s.dots.iter().map(|&p| Circle::new(p, 4, colour.filled())))?;
            // Validation alone (no training line) still gets a legend entry.
            if s.line.is_empty() {
                drawn
                    .label(s.name)
                    .legend(move |(x, y)| Circle::new((x + 10, y), 4, colour.filled()));
            }
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// The axis range over `values`, widened by `pad` of their span on each side (never empty).
fn range(values: impl Iterator<Item = f64>, pad: f64) -> Range<f64> {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        return 0.0..1.0;
    }
    let span = hi - lo;
    if span <= 0.0 {
        let d = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        return lo - d..hi + d;
    }
    lo - span * pad..hi + span * pad
}
