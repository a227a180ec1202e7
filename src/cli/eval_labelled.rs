//! `nlpkit eval` for classification (accuracy, macro-F1, confusion matrix), tagging
//! (entity-level precision/recall/F1 as conlleval/seqeval) and BERT pretraining (masked-LM loss
//! and accuracy, sentence-task accuracy). Reports go to `EXP_DIR/eval_<split>_step_<N>.json`,
//! predictions beside them.

use crate::data::Split;
use crate::data::labelled::{Specials, load_labelled_meta};
use crate::data::tokenizer::TextTokenizer;
use crate::distributed::Shard;
use crate::error::{Error, Result, write_atomic};
use crate::eval::{classification, entities};
use crate::experiment::Experiment;
use crate::models::bert::BertHead;
use crate::recipe::{ModelSection, Recipe};
use crate::tasks::classify::{ClassifierSpec, LabelledSet, predict};
use crate::tasks::pretrain::PretrainTask;
use crate::tasks::tagging::{TaggedSet, predict_tags};
use crate::train::checkpoint::{self, Checkpoint};
use burn::prelude::Device;
use serde_json::{Value, json};
use std::time::Instant;

pub struct EvalRequest<'a> {
    pub exp: &'a Experiment,
    pub recipe: &'a Recipe,
    pub checkpoint: &'a Checkpoint,
    pub split: Split,
    pub batch_size: usize,
    pub device: &'a Device,
}

pub fn run(request: EvalRequest) -> Result<()> {
    let dir = request.recipe.prepared_dir();
    let tokenizer = TextTokenizer::load(&request.exp.tokenizer_path())?;
    let specials = Specials::of(&tokenizer)?;
    let started = Instant::now();
    let (mut report, predictions) = match &request.recipe.model {
        ModelSection::Cnn(o) => classify(&request, o.config()?, &tokenizer, &specials)?,
        ModelSection::Bert(o) => {
            let config = o.config()?;
            match o.head {
                BertHead::SequenceClassification => {
                    classify(&request, config, &tokenizer, &specials)?
                }
                BertHead::TokenClassification => {
                    let meta = load_labelled_meta(&dir)?;
                    let model = config.init_tagger(&meta.labels, request.device);
                    let model = checkpoint::load_model(model, &request.checkpoint.model_path())?;
                    let set = TaggedSet::load(
                        &dir,
                        request.split,
                        &meta,
                        &tokenizer,
                        &specials,
                        config.max_len,
                    )?;
                    let predicted = predict_tags(
                        &model,
                        &meta.labels,
                        &set,
                        request.batch_size,
                        specials.pad,
                        request.device,
                    );
                    let gold: Vec<Vec<String>> =
                        set.sentences.iter().map(|(_, t)| t.clone()).collect();
                    let scores = entities::score(&gold, &predicted);
                    let tokens: usize = gold.iter().map(Vec::len).sum();
                    println!(
                        "entities: precision {:.4} recall {:.4} F1 {:.4} ({} gold); token \
                         accuracy {:.4}",
                        scores.overall.precision,
                        scores.overall.recall,
                        scores.overall.f1,
                        scores.overall.support,
                        scores.token_accuracy
                    );
                    for (kind, prf) in &scores.by_type {
                        println!(
                            "  {kind:<6} P {:.4} R {:.4} F1 {:.4} ({})",
                            prf.precision, prf.recall, prf.f1, prf.support
                        );
                    }
                    // CoNLL layout: token, gold, predicted; a blank line between sentences.
                    let conll: String = set
                        .sentences
                        .iter()
                        .zip(&predicted)
                        .map(|((tokens, gold), pred)| {
                            let mut s: String = tokens
                                .iter()
                                .zip(gold)
                                .zip(pred)
                                .map(|((t, g), p)| format!("{t} {g} {p}\n"))
                                .collect();
                            s.push('\n');
                            s
                        })
                        .collect();
                    let report = json!({
                        "entity_precision": scores.overall.precision,
                        "entity_recall": scores.overall.recall,
                        "entity_f1": scores.overall.f1,
                        "token_accuracy": scores.token_accuracy,
                        "by_type": scores.by_type,
                        "crf": config.crf,
                        "sentences": gold.len(),
                        "tokens": tokens,
                    });
                    (report, Some(("conll", conll)))
                }
                BertHead::Pretraining => {
                    let model =
                        config.init_pretraining(pretraining_terms(request.recipe), request.device);
                    let model = checkpoint::load_model(model, &request.checkpoint.model_path())?;
                    let task =
                        PretrainTask::new(request.recipe, config, &dir, &tokenizer, Shard::WHOLE)?;
                    let (set, batches) =
                        task.split_instances(&dir, request.split, &tokenizer, request.batch_size)?;
                    let sums = task.sums(&model, &set, &batches, request.device, Shard::WHOLE);
                    let mlm_loss = sums.mlm_loss / sums.masked.max(1.0);
                    let mlm_accuracy = sums.mlm_correct / sums.masked.max(1.0);
                    println!(
                        "masked LM: loss {mlm_loss:.4} (ppl {:.2}), accuracy {mlm_accuracy:.4} \
                         over {} masked tokens",
                        mlm_loss.exp(),
                        sums.masked
                    );
                    let mut report = json!({
                        "mlm_loss": mlm_loss,
                        "mlm_accuracy": mlm_accuracy,
                        "masked_tokens": sums.masked,
                        "sequences": set.len(),
                    });
                    if let Some(name) = task.sentence_task().loss_name() {
                        let accuracy = sums.sentence_correct / sums.sequences.max(1.0);
                        let loss = sums.sentence_loss / sums.sequences.max(1.0);
                        println!(
                            "{}: loss {loss:.4}, accuracy {accuracy:.4}",
                            name.to_uppercase()
                        );
                        report[format!("{name}_loss")] = json!(loss);
                        report[format!("{name}_accuracy")] = json!(accuracy);
                    }
                    (report, None)
                }
            }
        }
        _ => unreachable!("labelled experiments train cnn or bert"),
    };
    let seconds = started.elapsed().as_secs_f64();
    report["split"] = json!(request.split.name());
    report["checkpoint"] = json!(request.checkpoint.dir);
    report["step"] = json!(request.checkpoint.state.step);
    report["seconds"] = json!(seconds);
    let stem = format!(
        "{}_step_{:08}",
        request.split.name(),
        request.checkpoint.state.step
    );
    if let Some((kind, text)) = predictions {
        let path = request
            .exp
            .report_path(&format!("predictions_{stem}.{kind}"));
        write_atomic(&path, text.as_bytes())?;
        eprintln!("predictions written to {}", path.display());
    }
    let text = serde_json::to_string_pretty(&report).expect("report serialises");
    let path = request.exp.report_path(&format!("eval_{stem}.json"));
    write_atomic(&path, text.as_bytes())?;
    eprintln!("report written to {} ({seconds:.1}s)", path.display());
    Ok(())
}

fn pretraining_terms(recipe: &Recipe) -> usize {
    let uncertainty = recipe.loss.weighting == crate::recipe::WeightingKind::Uncertainty;
    match &recipe.model {
        ModelSection::Bert(o) if uncertainty && o.next_sentence.loss_name().is_some() => 2,
        _ => 0,
    }
}

fn classify<S: ClassifierSpec>(
    request: &EvalRequest,
    spec: S,
    tokenizer: &TextTokenizer,
    specials: &Specials,
) -> Result<(Value, Option<(&'static str, String)>)> {
    let dir = request.recipe.prepared_dir();
    let meta = load_labelled_meta(&dir)?;
    let model =
        checkpoint::load_model(spec.init(request.device), &request.checkpoint.model_path())?;
    let set = LabelledSet::load(&spec, &dir, request.split, &meta, tokenizer, specials)?;
    if set.ids.is_empty() {
        return Err(Error::Data(format!(
            "the {} split is empty",
            request.split.name()
        )));
    }
    let started = Instant::now();
    let predicted = predict(
        &spec,
        &model,
        &set,
        request.batch_size,
        specials.pad,
        request.device,
    );
    let seconds = started.elapsed().as_secs_f64();
    let scores = classification::score(&meta.labels, &set.labels, &predicted);
    println!(
        "accuracy {:.4}, macro-F1 {:.4} over {} texts ({:.0} texts/s)",
        scores.accuracy,
        scores.macro_f1,
        set.labels.len(),
        set.labels.len() as f64 / seconds
    );
    for (label, prf) in &scores.by_label {
        println!(
            "  {label:<8} P {:.4} R {:.4} F1 {:.4} ({})",
            prf.precision, prf.recall, prf.f1, prf.support
        );
    }
    print!(
        "{}",
        classification::confusion_table(&meta.labels, &scores.confusion)
    );
    let rows: String = set
        .texts
        .iter()
        .zip(&set.labels)
        .zip(&predicted)
        .map(|((text, &g), &p)| {
            let text = text.replace(['\t', '\n'], " ");
            format!("{}\t{}\t{text}\n", meta.labels[g], meta.labels[p])
        })
        .collect();
    let report = json!({
        "accuracy": scores.accuracy,
        "macro_f1": scores.macro_f1,
        "macro_precision": scores.macro_precision,
        "macro_recall": scores.macro_recall,
        "by_label": scores.by_label.iter().map(|(l, p)| json!({"label": l, "precision": p.precision, "recall": p.recall, "f1": p.f1, "support": p.support})).collect::<Vec<_>>(),
        "labels": meta.labels,
        "confusion": scores.confusion,
        "texts": set.labels.len(),
        "texts_per_s": set.labels.len() as f64 / seconds,
    });
    Ok((
        report,
        Some(("tsv", format!("gold\tpredicted\ttext\n{rows}"))),
    ))
}

/// Print the uncertainty weighting's learned log-variances from the last training record.
pub fn report_log_variances(exp: &Experiment) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(exp.metrics_path()) else {
        return Ok(());
    };
    let Some(last) = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .rfind(|v| v["split"] == "train")
    else {
        return Ok(());
    };
    let learned: Vec<String> = last
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| {
            let name = k.strip_suffix("_log_variance")?;
            let s = v.as_f64()?;
            Some(format!(
                "{name}: s = {s:.4}, weight exp(-s) = {:.4}",
                (-s).exp()
            ))
        })
        .collect();
    if !learned.is_empty() {
        println!("learned uncertainty weights: {}", learned.join("; "));
    }
    Ok(())
}
