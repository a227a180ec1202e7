//! `nlpkit explain` end to end: a trained TextCNN's attributions as TSV and HTML, and the
//! inputs it refuses.

mod common;

use common::{Scratch, tiny_recipe};

/// Integrated gradients' completeness gap of each explained line, from the stderr summary.
fn gaps(stderr: &str) -> Vec<f64> {
    stderr
        .lines()
        .filter_map(|l| l.split("completeness gap ").nth(1))
        .map(|g| g.trim().parse().expect("a number"))
        .collect()
}

#[test]
fn explain_writes_a_tsv_row_per_token_and_an_html_heat_map_with_the_tokens() {
    let s = Scratch::batch_norm(24);
    s.ok(&["train", "recipe.yaml"]);
    // Line 2 is blank: skipped, the numbers still name the input's lines.
    s.write("texts.txt", "好吃，送餐很快\n\n太难吃了，再也不点了\n");
    let out = s.run(&[
        "explain",
        "exp",
        "-i",
        "texts.txt",
        "-o",
        "sal",
        "--steps",
        "300",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let gaps = gaps(&stderr);
    assert_eq!(gaps.len(), 2, "{stderr}");
    for gap in gaps {
        assert!(gap.abs() < 1e-3, "completeness gap {gap}");
    }
    let tsv = std::fs::read_to_string(s.path().join("sal.tsv")).unwrap();
    let mut lines = tsv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "text\tposition\ttoken\tlabel\tprobability\tgrad_x_input\tintegrated_gradients\tocclusion"
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split('\t').collect()).collect();
    assert!(rows.iter().all(|r| r.len() == 8), "{tsv}");
    // One row per character (the char tokenizer), texts named by their input line.
    let count = |line: &str| rows.iter().filter(|r| r[0] == line).count();
    assert_eq!(count("1"), 7);
    assert_eq!(count("3"), 10);
    assert_eq!(rows.len(), 17);
    let text: String = rows.iter().filter(|r| r[0] == "3").map(|r| r[2]).collect();
    assert_eq!(text, "太难吃了，再也不点了");
    for r in &rows {
        for value in &r[5..] {
            let v: f64 = value.parse().expect("every column has a value");
            assert!(v.is_finite());
        }
        let p: f64 = r[4].parse().unwrap();
        assert!((0.0..=1.0).contains(&p) && ["0", "1"].contains(&r[3]));
    }
    let html = std::fs::read_to_string(s.path().join("sal.html")).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>") && !html.contains("<script"));
    // Three method rows per text, each with every token.
    assert_eq!(html.matches("<td class=\"m\">").count(), 6);
    for r in &rows {
        assert!(html.contains(&format!(">{}</span>", r[2])), "{}", r[2]);
    }

    // One method, a chosen target, TSV on stdout.
    s.write("one.txt", "好吃\n");
    let out = s.ok(&[
        "explain",
        "exp",
        "-i",
        "one.txt",
        "--method",
        "grad_x_input",
        "--target",
        "0",
    ]);
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(
        rows[0],
        "text\tposition\ttoken\tlabel\tprobability\tgrad_x_input"
    );
    assert_eq!(rows.len(), 3);
    assert!(rows[1..].iter().all(|r| r.split('\t').nth(3) == Some("0")));

    // What it refuses: an unknown method or label, blank input.
    let refused = |args: &[&str], says: &str| {
        let out = s.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    };
    refused(
        &["explain", "exp", "-i", "one.txt", "--method", "saliency"],
        "saliency",
    );
    refused(
        &["explain", "exp", "-i", "one.txt", "--target", "5"],
        "not one of the experiment's labels (0, 1)",
    );
    s.write("blank.txt", "\n  \n");
    refused(&["explain", "exp", "-i", "blank.txt"], "no text to explain");
}

#[test]
fn explain_refuses_a_language_model() {
    let s = Scratch::with_recipe(&tiny_recipe("flex", 2));
    s.ok(&["train", "recipe.yaml"]);
    s.write("texts.txt", "ROMEO\n");
    let out = s.run(&["explain", "exp", "-i", "texts.txt"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("`nlpkit explain` works on classifiers and taggers"),
        "{stderr}"
    );
}
