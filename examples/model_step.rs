//! One training step of a model nlpkit trains, timed on random data: the twins of
//! `bench/torch_encoder.py`, `bench/torch_seq2seq.py` and `bench/torch_bert.py`, run side by
//! side with them by `bench/compare_pytorch.py`.
//!
//!     cargo build --release --example model_step
//!     target/release/examples/model_step --model encoder|transformer|gru|bert-mlm
//!         [--backend flex] [--layers N] [--batch N] [--seq N] [--steps N] [--warmup N]
//!         [--adamw fused|burn]
//!
//! - `encoder`: post-norm BERT-base-shaped layers (768 wide, 12 heads, ffn 3072) on a random
//!   `[batch, seq, 768]` input; the loss is the mean squared output.
//! - `transformer`: the cmn_en recipe's seq2seq Transformer (pre-norm, 256 wide, 4 heads, ffn
//!   1024, `--layers` encoder and decoder layers, vocabularies 4000 and 3000), label-smoothed
//!   (0.1) cross-entropy over `seq` target tokens per row.
//! - `gru`: the cmn_en recipe's RNN encoder-decoder (bidirectional GRU encoder, 256 wide,
//!   additive attention, GRU decoder), the same data and loss.
//! - `bert-mlm`: BERT-base pretraining (vocabulary 30522), masked LM on every 7th position
//!   (15%, as BERT's rate) plus next-sentence prediction.
//!
//! No dropout anywhere (the PyTorch twins have none either), so both sides do the same
//! arithmetic. AdamW: nlpkit's fused one (what `nlpkit train` runs), or with `--adamw burn`
//! Burn's, the same numbers unfused. Prints one JSON line: the median milliseconds per step.

use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::tensor::Distribution;
use nlpkit::backend::device_for;
use nlpkit::loss::cross_entropy;
use nlpkit::models::bert::{BertConfig, BertHead, BertInput, NextSentence};
use nlpkit::models::encoder::EncoderConfig;
use nlpkit::models::recurrent::CellKind;
use nlpkit::models::rnn_seq2seq::{RnnSeq2SeqConfig, RnnSeq2SeqOptions};
use nlpkit::models::seq2seq::Seq2Seq;
use nlpkit::models::transformer_seq2seq::{TransformerSeq2SeqConfig, TransformerSeq2SeqOptions};
use nlpkit::recipe::{BackendKind, BackendSection};
use nlpkit::train::adamw::FusedAdamW;
use std::collections::HashMap;
use std::time::Instant;

const USAGE: &str = "usage: model_step --model encoder|transformer|gru|bert-mlm [--backend B] \
                     [--layers N] [--batch N] [--seq N] [--steps N] [--warmup N] \
                     [--adamw fused|burn]";
/// The cmn_en recipe's vocabularies: English BPE 4000, Chinese characters about 3000.
const SOURCE_VOCAB: usize = 4000;
const TARGET_VOCAB: usize = 3000;
const BERT_VOCAB: usize = 30522;

fn main() {
    // The settings `nlpkit` itself runs under (one process on this machine).
    nlpkit::backend::run_with_cpu_defaults(1, measure)
}

fn fail(message: &str) -> ! {
    eprintln!("{message}");
    std::process::exit(2)
}

/// The command line as `--key value` pairs, over the model's defaults.
fn options() -> HashMap<String, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model = args
        .iter()
        .position(|a| a == "--model")
        .and_then(|i| args.get(i + 1))
        .unwrap_or_else(|| fail(USAGE));
    let (layers, batch, seq, steps) = match model.as_str() {
        "encoder" => ("2", "8", "128", "10"),
        "transformer" => ("2", "64", "32", "10"),
        "gru" => ("1", "64", "32", "10"),
        "bert-mlm" => ("12", "8", "128", "3"),
        other => fail(&format!("unknown model {other}\n{USAGE}")),
    };
    let mut options: HashMap<String, String> = [
        ("--backend", "flex"),
        ("--layers", layers),
        ("--batch", batch),
        ("--seq", seq),
        ("--steps", steps),
        ("--warmup", "2"),
        ("--adamw", "fused"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for pair in args.chunks(2) {
        match (pair[0].as_str(), pair.get(1)) {
            ("--model", Some(value)) => {
                options.insert("--model".into(), value.clone());
            }
            (key, Some(value)) if options.contains_key(key) => {
                options.insert(key.into(), value.clone());
            }
            _ => fail(USAGE),
        }
    }
    options
}

fn measure() {
    let options = options();
    let number = |key: &str| -> usize {
        options[key]
            .parse()
            .unwrap_or_else(|_| fail(&format!("{key} wants a whole number, got {}", options[key])))
    };
    let kind: BackendKind = serde_json::from_value(serde_json::json!(options["--backend"]))
        .unwrap_or_else(|_| fail(&format!("unknown backend {}", options["--backend"])));
    let section = BackendSection {
        kind,
        device: "default".into(),
    };
    let device = device_for(&section)
        .unwrap_or_else(|e| fail(&e.to_string()))
        .autodiff();
    let (layers, batch, seq) = (number("--layers"), number("--batch"), number("--seq"));
    let burns_adamw = match options["--adamw"].as_str() {
        "fused" => false,
        "burn" => true,
        other => fail(&format!("--adamw is fused or burn, got {other}")),
    };
    let timing = Timing {
        warmup: number("--warmup"),
        steps: number("--steps"),
        burns_adamw,
    };
    let (ms, params) = match options["--model"].as_str() {
        "encoder" => encoder(layers, batch, seq, timing, &device),
        "transformer" => {
            let config = TransformerSeq2SeqConfig {
                options: TransformerSeq2SeqOptions {
                    encoder_layers: layers,
                    decoder_layers: layers,
                    d_model: 256,
                    n_head: 4,
                    ffn_dim: 1024,
                    dropout: 0.0,
                    pre_norm: true,
                    share_embeddings: false,
                    source_vocab_size: None,
                    target_vocab_size: None,
                },
                source_vocab: SOURCE_VOCAB,
                target_vocab: TARGET_VOCAB,
            };
            seq2seq(config.init(&device), batch, seq, timing, &device)
        }
        "gru" => {
            let config = RnnSeq2SeqConfig {
                options: RnnSeq2SeqOptions {
                    cell: CellKind::Gru,
                    embed_dim: 256,
                    hidden_size: 256,
                    num_layers: layers,
                    bidirectional: true,
                    attention_dim: None,
                    dropout: 0.0,
                    source_vocab_size: None,
                    target_vocab_size: None,
                },
                source_vocab: SOURCE_VOCAB,
                target_vocab: TARGET_VOCAB,
            };
            seq2seq(config.init(&device), batch, seq, timing, &device)
        }
        _ => bert_pretraining(layers, batch, seq, timing, &device),
    };
    println!(
        "{}",
        serde_json::json!({
            "backend": options["--backend"],
            "model": options["--model"],
            "ms_per_step": ms,
            "params": params,
        })
    );
}

#[derive(Clone, Copy)]
struct Timing {
    warmup: usize,
    steps: usize,
    /// Step with Burn's AdamW instead of nlpkit's fused one.
    burns_adamw: bool,
}

/// Train `model` for `timing`'s steps with AdamW on `loss`; the median milliseconds of the
/// timed steps and the parameter count.
fn timed<M: Module>(
    mut model: M,
    adamw: FusedAdamW,
    lr: f64,
    timing: Timing,
    loss: impl Fn(&M) -> Tensor<1>,
) -> (f64, usize) {
    let mut optimizer = match timing.burns_adamw {
        true => ModuleOptimizer::from(adamw.burns()),
        false => ModuleOptimizer::from(adamw),
    };
    let mut times = Vec::new();
    for step in 0..timing.warmup + timing.steps {
        let start = Instant::now();
        let value = loss(&model);
        let grads = GradientsParams::from_grads(value.backward(), &model);
        model = optimizer.step(lr, model, grads);
        let _: f32 = value.into_scalar();
        if step >= timing.warmup {
            times.push(start.elapsed().as_secs_f64() * 1000.0);
        }
    }
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], model.num_params())
}

fn encoder(
    layers: usize,
    batch: usize,
    seq: usize,
    timing: Timing,
    device: &Device,
) -> (f64, usize) {
    let config = EncoderConfig {
        n_layer: layers,
        dropout: 0.0,
        ..EncoderConfig::bert_base()
    };
    let x = Tensor::<3>::random(
        [batch, seq, config.width],
        Distribution::Normal(0.0, 1.0),
        device,
    );
    let adamw = FusedAdamW {
        weight_decay: 0.01,
        ..FusedAdamW::default()
    };
    timed(config.init(device), adamw, 1e-4, timing, |model| {
        model.forward(x.clone(), None).square().mean()
    })
}

/// Random token ids in `1..vocab` (0 is the padding id) `[batch, len]`.
fn tokens(batch: usize, len: usize, vocab: usize, device: &Device) -> Tensor<2, Int> {
    Tensor::<2>::random(
        [batch, len],
        Distribution::Uniform(1.0, vocab as f64),
        device,
    )
    .int()
}

fn seq2seq<M: Seq2Seq>(
    model: M,
    batch: usize,
    seq: usize,
    timing: Timing,
    device: &Device,
) -> (f64, usize) {
    let source = tokens(batch, seq, SOURCE_VOCAB, device);
    let padding = source.clone().equal_elem(0);
    let target = tokens(batch, seq + 1, TARGET_VOCAB, device);
    let target_in = target.clone().narrow(1, 0, seq);
    let target_out = target.narrow(1, 1, seq).reshape([batch * seq]);
    let adamw = FusedAdamW {
        beta_2: 0.98,
        weight_decay: 1e-4,
        ..FusedAdamW::default()
    };
    timed(model, adamw, 1e-3, timing, |model| {
        let logits = model.forward(source.clone(), padding.clone(), target_in.clone());
        let (loss, _) = cross_entropy(
            logits.reshape([batch * seq, TARGET_VOCAB]),
            target_out.clone(),
            0.1,
            Some(0),
        );
        loss
    })
}

fn bert_pretraining(
    layers: usize,
    batch: usize,
    seq: usize,
    timing: Timing,
    device: &Device,
) -> (f64, usize) {
    let config = BertConfig {
        encoder: EncoderConfig {
            n_layer: layers,
            dropout: 0.0,
            ..EncoderConfig::bert_base()
        },
        segments: 2,
        position_offset: 0,
        vocab_size: BERT_VOCAB,
        embedding_size: 768,
        max_len: 512,
        head: BertHead::Pretraining,
        next_sentence: NextSentence::Nsp,
        crf: false,
        multi_sample_dropout: None,
        labels: Vec::new(),
    };
    let ids = tokens(batch, seq, BERT_VOCAB, device);
    let segments = Tensor::<2, Int>::zeros([batch, seq], device);
    let padding = segments.clone().equal_elem(1);
    // Every 7th position of the batch, flattened (row * seq + column).
    let masked: Vec<i64> = (0..(batch * seq) as i64).step_by(7).collect();
    let count = masked.len();
    let masked = Tensor::<1, Int>::from_data(TensorData::new(masked, [count]), device);
    let mlm_targets = tokens(1, count, BERT_VOCAB, device).reshape([count]);
    let nsp_targets = tokens(1, batch, 3, device).reshape([batch]).sub_scalar(1);
    let adamw = FusedAdamW {
        weight_decay: 0.01,
        ..FusedAdamW::default()
    };
    let model = config.init_pretraining(0, device);
    timed(model, adamw, 1e-4, timing, |model| {
        let input = BertInput {
            ids: ids.clone(),
            segments: segments.clone(),
            padding: padding.clone(),
        };
        let (mlm, nsp) = model.forward(input, masked.clone());
        let (mlm_loss, _) = cross_entropy(mlm, mlm_targets.clone(), 0.0, None);
        let nsp = nsp.expect("BERT pretraining has a next-sentence head");
        let (nsp_loss, _) = cross_entropy(nsp, nsp_targets.clone(), 0.0, None);
        mlm_loss + nsp_loss
    })
}
