//! Training curves: the TensorBoard event files a run writes beside metrics.jsonl, and
//! `nlpkit plot`.

mod common;
use common::{Scratch, same_scalars, tensorboard_scalars, tiny_recipe};
use nlpkit::train::tensorboard::event_files;

#[test]
fn tensorboard_events_hold_every_figure_of_metrics_jsonl_across_a_resume() {
    let s = Scratch::with_recipe(&tiny_recipe("flex", 12));
    s.ok(&[
        "train",
        "recipe.yaml",
        "--quiet",
        "--set",
        "train.max_steps=6",
    ]);
    s.ok(&["train", "recipe.yaml", "--quiet", "--resume"]);
    let exp = s.path().join("exp");
    assert_eq!(event_files(&exp.join("tensorboard")).unwrap().len(), 2);
    let events = tensorboard_scalars(&exp);
    // Every step trained once, training and validation figures alike.
    for step in 1..=12 {
        assert!(events.contains_key(&("train/loss".into(), step)), "{step}");
        assert!(events.contains_key(&("train/lr".into(), step)), "{step}");
        assert!(events.contains_key(&("train/grad_norm".into(), step)));
        assert!(events.contains_key(&("train/tokens_per_s".into(), step)));
    }
    assert!(events.contains_key(&("valid/loss".into(), 10)));
    same_scalars(&exp);

    // `train.tensorboard: false` writes none.
    let off = Scratch::with_recipe(&tiny_recipe("flex", 2));
    off.ok(&[
        "train",
        "recipe.yaml",
        "--quiet",
        "--set",
        "train.tensorboard=false",
    ]);
    assert!(!off.path().join("exp/tensorboard").exists());
}

/// The `points` attribute of each `<polyline>` in `svg`, as point counts.
fn polyline_lengths(svg: &str) -> Vec<usize> {
    svg.split("<polyline")
        .skip(1)
        .map(|el| {
            let points = el.split("points=\"").nth(1).unwrap();
            points[..points.find('"').unwrap()]
                .split_whitespace()
                .count()
        })
        .collect()
}

#[test]
fn plot_draws_each_experiment_with_every_logged_step() {
    let s = Scratch::with_recipe(&tiny_recipe("flex", 12));
    s.ok(&["train", "recipe.yaml", "--quiet"]);
    s.ok(&[
        "train",
        "recipe.yaml",
        "--quiet",
        "--set",
        "output_dir=exp_fast",
        "--set",
        "train.max_steps=7",
        "--set",
        "optim.lr=3.0e-2",
    ]);
    let said = s.ok(&["plot", "exp", "exp_fast", "-o", "curves.svg"]);
    assert!(said.contains("curves.svg"), "{said}");
    let svg = std::fs::read_to_string(s.path().join("curves.svg")).unwrap();
    assert!(svg.trim_start().starts_with("<svg"), "{svg}");
    assert!(svg.trim_end().ends_with("</svg>"), "{svg}");
    assert_eq!(svg.matches("<svg").count(), 1);
    // Each experiment is named in the legends of both panels (a text element's own line).
    let texts = |name: &str| svg.lines().filter(|l| l.trim() == name).count();
    assert_eq!(texts("exp"), 2, "{svg}");
    assert_eq!(texts("exp_fast"), 2, "{svg}");

    // Lines: a training loss and a learning rate line with one point per logged step, per
    // experiment; dots: one per validation.
    let lengths = polyline_lengths(&svg);
    assert_eq!(
        lengths.iter().filter(|&&n| n == 12).count(),
        2,
        "{lengths:?}"
    );
    assert_eq!(
        lengths.iter().filter(|&&n| n == 7).count(),
        2,
        "{lengths:?}"
    );
    let valid = s.metric_values("valid").len() + s.metric_values_of("exp_fast", "valid").len();
    assert_eq!(svg.matches("<circle").count(), valid, "{svg}");

    // The same curves as a PNG (chosen by the extension): a valid file of the picture's size,
    // with both experiments' colours and dark text and axes on the white background.
    let said = s.ok(&["plot", "exp", "exp_fast", "-o", "curves.png"]);
    assert!(said.contains("curves.png"), "{said}");
    let bytes = std::fs::read(s.path().join("curves.png")).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .unwrap();
    let mut pixels = vec![0; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut pixels).unwrap();
    assert_eq!((frame.width, frame.height), (1000, 760));
    assert_eq!(frame.color_type, png::ColorType::Rgb);
    let rgb: Vec<[u8; 3]> = pixels[..frame.buffer_size()]
        .chunks(3)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    let count = |colour: [u8; 3]| rgb.iter().filter(|&&p| p == colour).count();
    // tab10's first two colours, one per experiment, in lines thick enough to count.
    assert!(count([31, 119, 180]) > 500, "{}", count([31, 119, 180]));
    assert!(count([255, 127, 14]) > 500, "{}", count([255, 127, 14]));
    let dark = rgb.iter().filter(|p| p.iter().all(|&c| c < 80)).count();
    assert!(dark > 2000, "{dark} dark pixels");
    let rows: Vec<&[[u8; 3]]> = rgb.chunks(1000).collect();
    assert!(rows.iter().any(|r| r != &rows[0]), "a blank picture");
}

#[test]
fn plot_refuses_what_it_cannot_draw() {
    let s = Scratch::new();
    std::fs::create_dir(s.path().join("untrained")).unwrap();
    std::fs::create_dir(s.path().join("empty")).unwrap();
    s.write("empty/metrics.jsonl", "");
    for (args, says) in [
        (
            &["plot", "untrained", "-o", "c.svg"][..],
            "untrained has no metrics.jsonl",
        ),
        (&["plot", "empty", "-o", "c.svg"][..], "holds no training"),
        (
            &["plot", "empty", "-o", "c.pdf"][..],
            "give an output file ending in .svg",
        ),
        (&["plot", "empty", "-o", "c"][..], "unknown picture format"),
    ] {
        let out = s.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    assert!(!s.path().join("c.svg").exists());
}
