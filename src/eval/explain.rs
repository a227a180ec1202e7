//! Saliency (`nlpkit explain`): which input tokens drove a classifier's or tagger's output.
//!
//! The model-independent parts live here: gradient x input and integrated gradients over the
//! token embeddings given a score function, leave-one-out (occlusion), and the TSV and HTML
//! renderings. The tasks (`tasks::classify`, `tasks::tagging`) supply the score: they encode
//! the text, and turn embeddings `[rows, time, dim]` into the summed score of the rows.
//!
//! Choices (documented in the README): the score is the log-probability of the target (a
//! classifier's predicted label or `--target`; a tagger's predicted tag sequence), not a logit,
//! so attributions read as nats; integrated gradients start from the all-zero embedding (no
//! token at all; positions and segments still added by BERT) and integrate with the trapezoid
//! rule over `steps` intervals, reporting the completeness gap sum(attr) - (f(x) - f(0)).

use burn::prelude::*;

/// An attribution method of `nlpkit explain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum Method {
    /// Gradient of the score w.r.t. each token's embedding, dotted with the embedding.
    GradXInput,
    /// Integrated gradients from the zero embedding (Sundararajan et al. 2017).
    IntegratedGradients,
    /// Leave-one-out: the drop of the target's probability when the token is removed (and, for
    /// a recurrent classifier, the norm of the change of its pooled state).
    Occlusion,
    /// Every method the model supports.
    All,
}

impl Method {
    /// The methods `list` asks for, `all` expanded, each once, in a fixed order.
    pub fn expand(list: &[Method]) -> Vec<Method> {
        let all = list.contains(&Method::All);
        [
            Method::GradXInput,
            Method::IntegratedGradients,
            Method::Occlusion,
        ]
        .into_iter()
        .filter(|m| all || list.contains(m))
        .collect()
    }

    pub fn name(self) -> &'static str {
        match self {
            Method::GradXInput => "grad_x_input",
            Method::IntegratedGradients => "integrated_gradients",
            Method::Occlusion => "occlusion",
            Method::All => "all",
        }
    }
}

/// What to explain and how.
#[derive(Debug, Clone)]
pub struct ExplainOptions {
    pub methods: Vec<Method>,
    /// Integrated gradients' trapezoid intervals.
    pub steps: usize,
    /// A classifier's label to explain (default: the predicted one).
    pub target: Option<String>,
}

/// One text's attributions, one row per input position (special tokens included, so the
/// integrated gradients add up to the score difference).
#[derive(Debug, Clone)]
pub struct Explained {
    /// The text's line in the input (1-based).
    pub line: usize,
    pub tokens: Vec<String>,
    /// A classifier's target label; a tagger's predicted tags, joined by spaces.
    pub label: String,
    /// A tagger's tag of each position (empty at `[CLS]`/`[SEP]`).
    pub token_labels: Option<Vec<String>>,
    /// The target's probability (a tagger's: of the whole tag sequence).
    pub probability: f64,
    /// Per column (a method, or `state_change`): one value per token; NaN where none applies.
    pub columns: Vec<(&'static str, Vec<f64>)>,
    /// Integrated gradients' sum(attr) - (f(x) - f(baseline)).
    pub completeness_gap: Option<f64>,
}

/// A score of embedded inputs: `[rows, time, dim]` to the sum over the rows of each row's
/// score, `[1]` (rows are independent, so the gradient of the sum is each row's own).
pub type ScoreFn<'a> = dyn Fn(Tensor<3>) -> Tensor<1> + 'a;

/// The score of `x` and its gradient w.r.t. `x` (flat, row-major). `x` is made a leaf: the
/// model's parameters, frozen, get no gradient.
pub fn score_and_gradient(score: &ScoreFn, x: Tensor<3>) -> (f64, Vec<f32>) {
    let x = x.detach().require_grad();
    let s = score(x.clone());
    let value = s.clone().into_scalar::<f64>();
    let grads = s.backward();
    let grad = x
        .grad(&grads)
        .map(|g| g.try_into_vec_as::<f32>().expect("f32 gradient"))
        .unwrap_or_else(|| vec![0.0; x.shape().num_elements()]);
    (value, grad)
}

/// The score of `x` without a gradient.
pub fn score_of(score: &ScoreFn, x: Tensor<3>) -> f64 {
    score(x.detach()).into_scalar::<f64>()
}

/// Per-position sums over the embedding dimension of `a * b` (both `[time * dim]` flat).
fn dot_per_position(a: &[f32], b: &[f32], dim: usize) -> Vec<f64> {
    a.chunks(dim)
        .zip(b.chunks(dim))
        .map(|(a, b)| a.iter().zip(b).map(|(&a, &b)| a as f64 * b as f64).sum())
        .collect()
}

/// Gradient x input for one text, `x` `[1, time, dim]`: per position, grad . embedding.
pub fn grad_x_input(score: &ScoreFn, x: Tensor<3>) -> Vec<f64> {
    let [_, _, dim] = x.dims();
    let values = x.clone().try_into_vec_as::<f32>().expect("f32 embeddings");
    let (_, grad) = score_and_gradient(score, x);
    dot_per_position(&grad, &values, dim)
}

/// Interpolated inputs per backward pass: bounds the memory of integrated gradients.
const ROWS_PER_PASS: usize = 16;

/// Integrated gradients for one text, `x` `[1, time, dim]`, from the zero embedding: per
/// position, x . (trapezoid mean over alpha in [0, 1] of the gradient at alpha x), with the
/// completeness gap sum(attr) - (f(x) - f(0)).
pub fn integrated_gradients(score: &ScoreFn, x: Tensor<3>, steps: usize) -> (Vec<f64>, f64) {
    let [_, time, dim] = x.dims();
    let device = x.device();
    let values = x.clone().try_into_vec_as::<f32>().expect("f32 embeddings");
    let steps = steps.max(1);
    let mut mean_grad = vec![0f64; time * dim];
    let points: Vec<usize> = (0..=steps).collect();
    for chunk in points.chunks(ROWS_PER_PASS) {
        let alphas: Vec<f32> = chunk.iter().map(|&k| k as f32 / steps as f32).collect();
        let rows = alphas.len();
        let alphas = Tensor::<1>::from_floats(alphas.as_slice(), &device).reshape([rows, 1, 1]);
        let scaled = x.clone().expand([rows, time, dim]) * alphas;
        let (_, grad) = score_and_gradient(score, scaled);
        for (r, &k) in chunk.iter().enumerate() {
            // Trapezoid weights: half at both ends.
            let weight = if k == 0 || k == steps { 0.5 } else { 1.0 } / steps as f64;
            for (m, &g) in mean_grad
                .iter_mut()
                .zip(&grad[r * time * dim..][..time * dim])
            {
                *m += weight * g as f64;
            }
        }
    }
    let attr: Vec<f64> = mean_grad
        .chunks(dim)
        .zip(values.chunks(dim))
        .map(|(g, v)| g.iter().zip(v).map(|(&g, &v)| g * v as f64).sum())
        .collect();
    let difference = score_of(score, x.clone()) - score_of(score, x.zeros_like());
    let gap = attr.iter().sum::<f64>() - difference;
    (attr, gap)
}

/// Per variant of a text: the target's probability and, optionally, the pooled state.
pub type VariantScores = (Vec<f64>, Option<Vec<Vec<f32>>>);

/// Leave-one-out over the positions not in `keep`: `evaluate` gets the text itself first and
/// then each variant with one position removed, and returns per variant the target's
/// probability and, optionally, the pooled state. Per position: the probability's drop
/// p(x) - p(x without it), and the L2 norm of the state's change (NaN at kept positions).
pub fn leave_one_out(
    ids: &[u32],
    keep: &[bool],
    evaluate: &dyn Fn(&[Vec<u32>]) -> VariantScores,
) -> (Vec<f64>, Option<Vec<f64>>) {
    let removable: Vec<usize> = (0..ids.len()).filter(|&i| !keep[i]).collect();
    let mut variants = vec![ids.to_vec()];
    for &i in &removable {
        let mut v = ids.to_vec();
        v.remove(i);
        variants.push(v);
    }
    let (probs, states) = evaluate(&variants);
    let mut drop = vec![f64::NAN; ids.len()];
    for (k, &i) in removable.iter().enumerate() {
        drop[i] = probs[0] - probs[k + 1];
    }
    let change = states.map(|states| {
        let mut out = vec![f64::NAN; ids.len()];
        for (k, &i) in removable.iter().enumerate() {
            out[i] = states[0]
                .iter()
                .zip(&states[k + 1])
                .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
                .sum::<f64>()
                .sqrt();
        }
        out
    });
    (drop, change)
}

fn cell(value: f64) -> String {
    if value.is_nan() {
        String::new()
    } else {
        format!("{value:.6}")
    }
}

fn clean(text: &str) -> String {
    text.replace(['\t', '\n', '\r'], " ")
}

/// The TSV: a header, then one row per text and position.
pub fn tsv(explained: &[Explained]) -> String {
    let columns: Vec<&str> = explained
        .first()
        .map(|e| e.columns.iter().map(|(name, _)| *name).collect())
        .unwrap_or_default();
    let mut out = format!(
        "text\tposition\ttoken\tlabel\tprobability\t{}\n",
        columns.join("\t")
    );
    for e in explained {
        for (t, token) in e.tokens.iter().enumerate() {
            let label = match &e.token_labels {
                Some(tags) => tags[t].as_str(),
                None => e.label.as_str(),
            };
            let values: Vec<String> = e.columns.iter().map(|(_, v)| cell(v[t])).collect();
            out += &format!(
                "{}\t{t}\t{}\t{}\t{:.6}\t{}\n",
                e.line,
                clean(token),
                clean(label),
                e.probability,
                values.join("\t")
            );
        }
    }
    out
}

/// `text` with HTML's special characters escaped.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A self-contained heat map: one row per text and column, each token's background red for a
/// positive value and blue for a negative one, its strength relative to the row's largest
/// magnitude; the value in the token's tooltip.
pub fn html(explained: &[Explained], title: &str) -> String {
    let mut out = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{}</title>\n<style>\n\
         body{{font-family:sans-serif;margin:1.5em}} table{{border-collapse:collapse}}\n\
         td{{padding:4px 8px;border-bottom:1px solid #ddd;vertical-align:top}}\n\
         .t{{display:inline-block;padding:1px 2px;margin:1px;border-radius:2px;white-space:pre}}\n\
         .m{{color:#555;font-size:90%}}\n</style></head><body>\n<h1>{}</h1>\n\
         <p class=\"m\">red: the token raises the score (log-probability of the target), blue: \
         it lowers it; strength relative to the row's largest value.</p>\n<table>\n\
         <tr><th>text</th><th>target</th><th>method</th><th>tokens</th></tr>\n",
        escape_html(title),
        escape_html(title)
    );
    for e in explained {
        for (name, values) in &e.columns {
            let scale = values
                .iter()
                .filter(|v| v.is_finite())
                .fold(0f64, |m, v| m.max(v.abs()));
            let mut tokens = String::new();
            for (t, token) in e.tokens.iter().enumerate() {
                let v = values[t];
                let (r, g, b) = if v >= 0.0 {
                    (220, 40, 40)
                } else {
                    (40, 90, 220)
                };
                let alpha = if v.is_finite() && scale > 0.0 {
                    v.abs() / scale
                } else {
                    0.0
                };
                let tag = e
                    .token_labels
                    .as_ref()
                    .map(|tags| format!(" {}", tags[t]))
                    .unwrap_or_default();
                tokens += &format!(
                    "<span class=\"t\" style=\"background:rgba({r},{g},{b},{alpha:.3})\" \
                     title=\"{}{}\">{}</span>",
                    cell(v),
                    escape_html(&tag),
                    escape_html(token)
                );
            }
            let gap = match (*name, e.completeness_gap) {
                ("integrated_gradients", Some(gap)) => format!("<br>gap {gap:.2e}"),
                _ => String::new(),
            };
            out += &format!(
                "<tr><td>{}</td><td>{} <span class=\"m\">p={:.4}</span></td>\
                 <td class=\"m\">{name}{gap}</td><td>{tokens}</td></tr>\n",
                e.line,
                escape_html(&e.label),
                e.probability
            );
        }
    }
    out + "</table>\n</body></html>\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::token_batches::TokenBatch;
    use crate::models::bert::{BertHead, BertOptions};
    use crate::models::classifier::ClassifierConfig;
    use crate::models::recurrent::CellKind;
    use crate::models::rnn_classifier::{Pooling, RnnClassifierOptions};
    use crate::models::textcnn::TextCnnOptions;
    use crate::recipe::ModelOptions;
    use burn::module::Module;
    use burn::tensor::activation::log_softmax;

    fn device() -> Device {
        Device::flex().autodiff()
    }

    const IDS: [u32; 6] = [5, 9, 3, 12, 7, 4];

    fn cnn() -> crate::models::textcnn::TextCnnConfig {
        TextCnnOptions {
            embedding_dim: 8,
            kernel_sizes: vec![2, 3],
            channels: 6,
            dropout: 0.3,
            multi_sample_dropout: None,
            batch_norm: true,
            residual_blocks: 1,
            max_len: 16,
            vocab_size: Some(20),
            num_labels: Some(3),
        }
        .config()
        .unwrap()
    }

    fn rnn(pooling: Pooling, cell: CellKind) -> crate::models::rnn_classifier::RnnClassifierConfig {
        RnnClassifierOptions {
            cell,
            embedding_dim: 6,
            hidden_size: 5,
            num_layers: 2,
            bidirectional: true,
            pooling,
            dropout: 0.2,
            multi_sample_dropout: None,
            max_len: 16,
            vocab_size: Some(20),
            num_labels: Some(3),
        }
        .config()
        .unwrap()
    }

    fn bert(head: BertHead, crf: bool) -> crate::models::bert::BertConfig {
        let mut o = BertOptions {
            head,
            crf,
            n_layer: Some(2),
            n_head: Some(2),
            width: Some(16),
            max_len: Some(12),
            dropout: Some(0.1),
            vocab_size: Some(20),
            labels: Some(["O", "B-PER", "I-PER"].map(String::from).to_vec()),
            ..BertOptions::default()
        };
        o.resolve().unwrap();
        o.config().unwrap()
    }

    /// `rows` copies of [`IDS`] as a classifier's batch.
    fn batch(rows: usize, min_len: usize) -> crate::models::classifier::TextBatch {
        TokenBatch::pad(&vec![IDS.as_slice(); rows], None, 0, min_len).text_batch(&device())
    }

    /// A classifier's score as `tasks::classify` builds it: label 1's log-probability.
    fn classifier_check<S: ClassifierConfig>(spec: &S, what: &str, steps: usize) {
        let _generator = crate::rng::seeded_for_test(&device(), 3);
        let model = spec.init(&device()).freeze();
        let score = |x: Tensor<3>| -> Tensor<1> {
            let b = batch(x.dims()[0], spec.min_len());
            log_softmax(S::logits_embedded(&model, x, b), 1)
                .narrow(1, 1, 1)
                .sum()
        };
        let x = S::embed(&model, batch(1, spec.min_len()).ids);
        // The split forward is the plain one, bit for bit.
        let plain = S::logits(&model, batch(1, spec.min_len()));
        let split = S::logits_embedded(&model, x.clone(), batch(1, spec.min_len()));
        assert_eq!(plain.into_data(), split.into_data(), "{what}");
        let (attr, gap) = integrated_gradients(&score, x.clone(), steps);
        assert_eq!(attr.len(), x.dims()[1]);
        let difference = score_of(&score, x.clone()) - score_of(&score, x.zeros_like());
        assert!(difference.abs() > 1e-3, "{what}: f(x) = f(0) tests nothing");
        assert!(gap.abs() < 1e-3, "{what}: completeness gap {gap}");
        finite_difference_check(&score, x, what);
    }

    /// Gradient x input at token t is d/de f(x with token t's embedding scaled by 1 + e) at 0:
    /// a central difference along that token's own embedding direction.
    fn finite_difference_check(score: &ScoreFn, x: Tensor<3>, what: &str) {
        let [_, time, dim] = x.dims();
        let gxi = grad_x_input(score, x.clone());
        let eps = 1e-2;
        for t in [0, time / 2] {
            let mut direction = vec![0f32; time * dim];
            direction[t * dim..][..dim].fill(1.0);
            let mask =
                Tensor::<1>::from_floats(direction.as_slice(), &x.device()).reshape([1, time, dim]);
            let moved =
                |e: f64| score_of(score, x.clone() + x.clone() * mask.clone().mul_scalar(e));
            let numeric = (moved(eps) - moved(-eps)) / (2.0 * eps);
            assert!(
                (numeric - gxi[t]).abs() < 1e-3 + 1e-2 * numeric.abs(),
                "{what} token {t}: finite difference {numeric} vs grad x input {}",
                gxi[t]
            );
        }
    }

    #[test]
    fn integrated_gradients_add_up_and_grad_x_input_matches_finite_differences_on_classifiers() {
        classifier_check(&cnn(), "TextCNN", 200);
        classifier_check(
            &rnn(Pooling::Attention, CellKind::Lstm),
            "LSTM attention",
            100,
        );
        classifier_check(&rnn(Pooling::Max, CellKind::Gru), "GRU max", 200);
        classifier_check(&bert(BertHead::SequenceClassification, false), "BERT", 100);
    }

    /// The tagger's score as `tasks::tagging` builds it: the log-probability of a tag sequence,
    /// per token under the softmax, of the whole path under the CRF.
    #[test]
    fn integrated_gradients_add_up_on_taggers() {
        for crf in [false, true] {
            let _generator = crate::rng::seeded_for_test(&device(), 4);
            let model = bert(BertHead::TokenClassification, crf)
                .init_tagger(&device())
                .freeze();
            let length = IDS.len() - 2;
            let path = [0i64, 1, 2, 0];
            let score = |x: Tensor<3>| -> Tensor<1> {
                let rows = x.dims()[0];
                let input =
                    TokenBatch::pad(&vec![IDS.as_slice(); rows], None, 0, 1).bert_input(&device());
                let e = model.forward_embedded(x, input).narrow(1, 1, length);
                let path = Tensor::<1, Int>::from_data(path, &device())
                    .reshape([1, length])
                    .expand([rows, length]);
                match &model.crf {
                    Some(crf) => crf
                        .neg_log_likelihood(e, path, &vec![length; rows])
                        .mul_scalar(-(rows as f64)),
                    None => log_softmax(e, 2).gather(2, path.unsqueeze_dim(2)).sum(),
                }
            };
            let input = TokenBatch::pad(&[IDS.as_slice()], None, 0, 1).bert_input(&device());
            let x = model.bert.embed(input.ids.clone());
            assert_eq!(
                model
                    .forward(TokenBatch::pad(&[IDS.as_slice()], None, 0, 1).bert_input(&device()))
                    .into_data(),
                model.forward_embedded(x.clone(), input).into_data()
            );
            let (_, gap) = integrated_gradients(&score, x.clone(), 100);
            assert!(gap.abs() < 1e-3, "crf {crf}: completeness gap {gap}");
            finite_difference_check(&score, x, if crf { "CRF tagger" } else { "tagger" });
        }
    }

    /// On f(x) = sum x^2 the integrand of integrated gradients is linear in alpha, so the
    /// trapezoid rule is exact with any number of steps: token t's attribution is |x_t|^2 and
    /// the gap is zero (to rounding).
    #[test]
    fn integrated_gradients_are_exact_on_a_quadratic() {
        let values: Vec<f32> = (0..12).map(|i| (i as f32 - 5.0) / 4.0).collect();
        let x = Tensor::<1>::from_floats(values.as_slice(), &device()).reshape([1, 4, 3]);
        let score = |x: Tensor<3>| -> Tensor<1> { (x.clone() * x).sum() };
        for steps in [1, 3, 7] {
            let (attr, gap) = integrated_gradients(&score, x.clone(), steps);
            for (t, a) in attr.iter().enumerate() {
                let expected: f64 = values[t * 3..][..3].iter().map(|&v| (v * v) as f64).sum();
                assert!(
                    (a - expected).abs() < 1e-5,
                    "steps {steps}, token {t}: {a} vs {expected}"
                );
            }
            assert!(gap.abs() < 1e-5, "steps {steps}: gap {gap}");
        }
        // Gradient x input of sum x^2 is 2 |x_t|^2.
        let gxi = grad_x_input(&score, x);
        for (t, g) in gxi.iter().enumerate() {
            let expected: f64 = values[t * 3..][..3]
                .iter()
                .map(|&v| 2.0 * (v * v) as f64)
                .sum();
            assert!((g - expected).abs() < 1e-5, "token {t}: {g} vs {expected}");
        }
    }

    /// Leave-one-out's state change is the norm of pooled(x) - pooled(x without the token),
    /// each computed here by its own forward pass; under a model that ignores one id (as a
    /// padding-equivalent token), removing that id changes nothing.
    #[test]
    fn leave_one_out_reports_the_state_change_computed_directly() {
        let spec = rnn(Pooling::Last, CellKind::Gru);
        // Its draws would otherwise change the weights of the seeded tests beside it.
        let _generator = crate::rng::seeded_for_test(&device(), 8);
        let model = spec.init(&device()).freeze();
        let state = |ids: &[u32]| -> Vec<f32> {
            let b = TokenBatch::pad(&[ids], None, 0, 1).text_batch(&device());
            <crate::models::rnn_classifier::RnnClassifierConfig as ClassifierConfig>::pooled_state(
                &model, b,
            )
            .unwrap()
            .try_into_vec_as::<f32>()
            .unwrap()
        };
        let keep = [true, false, false, false, false, true];
        let (drop, change) = leave_one_out(&IDS, &keep, &|variants| {
            let states: Vec<Vec<f32>> = variants.iter().map(|v| state(v)).collect();
            (vec![0.5; variants.len()], Some(states))
        });
        let change = change.unwrap();
        assert!(drop[0].is_nan() && change[5].is_nan());
        let whole = state(&IDS);
        for i in 1..5 {
            let mut without = IDS.to_vec();
            without.remove(i);
            let direct: f64 = whole
                .iter()
                .zip(state(&without))
                .map(|(&a, b)| (a as f64 - b as f64).powi(2))
                .sum::<f64>()
                .sqrt();
            assert!(
                (change[i] - direct).abs() < 1e-6,
                "{i}: {} vs {direct}",
                change[i]
            );
            assert!(direct > 0.0);
            assert_eq!(drop[i], 0.0);
        }
        // A model that ignores id 0: removing it changes neither the probability nor the state.
        let ids = [4u32, 0, 6];
        let (drop, change) = leave_one_out(&ids, &[false; 3], &|variants| {
            let p = variants
                .iter()
                .map(|v| v.iter().filter(|&&id| id != 0).count() as f64 / 10.0)
                .collect();
            (p, None)
        });
        assert_eq!(drop, [0.1, 0.0, 0.1]);
        assert!(change.is_none());
    }

    #[test]
    fn all_expands_to_every_method_once_in_order() {
        let m = Method::expand(&[Method::Occlusion, Method::All, Method::GradXInput]);
        assert_eq!(
            m,
            [
                Method::GradXInput,
                Method::IntegratedGradients,
                Method::Occlusion
            ]
        );
        assert_eq!(Method::expand(&[Method::Occlusion]), [Method::Occlusion]);
    }

    #[test]
    fn html_escapes_tokens_and_labels() {
        let e = Explained {
            line: 1,
            tokens: vec!["<b>".into(), "&".into()],
            label: "\"x\"".into(),
            token_labels: None,
            probability: 0.5,
            columns: vec![("grad_x_input", vec![1.0, -0.5])],
            completeness_gap: None,
        };
        let page = html(std::slice::from_ref(&e), "t");
        assert!(page.contains("&lt;b&gt;") && page.contains("&amp;") && page.contains("&quot;x"));
        assert!(!page.contains("<b>"));
        let table = tsv(&[e]);
        assert_eq!(table.lines().count(), 3);
        assert!(table.starts_with("text\tposition\ttoken\tlabel\tprobability\tgrad_x_input\n"));
    }
}
