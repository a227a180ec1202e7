//! Checks that serde's types cannot express: ranges, relations between keys, required pairs.
//! YAML's `.nan` and `.inf` are floats to serde, so every float's check also asks for a finite
//! value (a range check such as `(0.0..1.0).contains` does so by itself).
//!
//! Each problem is one message that starts with the key path it is about, in backticks
//! (`` `train.batch_size` must be at least 1 ``): the loader adds where that key was given.

use super::{
    DataFormat, ModelSection, Recipe, SchedulerKind, TaskKind, TokenizerKind, TokenizerSection,
};

/// The recipe's problems, none when it is valid.
pub fn problems(recipe: &Recipe) -> Vec<String> {
    let mut problems = Vec::new();
    let mut check = |ok: bool, key: &str, what: String| {
        if !ok {
            problems.push(format!("`{key}` {what}"));
        }
    };
    let t = &recipe.train;
    check(
        t.batch_size > 0,
        "train.batch_size",
        "must be at least 1".into(),
    );
    check(
        t.accum_grad > 0,
        "train.accum_grad",
        "must be at least 1".into(),
    );
    check(
        t.log_interval > 0,
        "train.log_interval",
        "must be at least 1".into(),
    );
    check(
        t.eval_interval > 0,
        "train.eval_interval",
        "must be at least 1".into(),
    );
    check(
        t.eval_batches > 0,
        "train.eval_batches",
        "must be at least 1".into(),
    );
    check(
        t.save_interval > 0,
        "train.save_interval",
        "must be at least 1".into(),
    );
    check(
        t.keep_last > 0,
        "train.keep_last",
        "must be at least 1 (the resume point)".into(),
    );
    check(
        t.grad_clip >= 0.0 && t.grad_clip.is_finite(),
        "train.grad_clip",
        format!("must be 0 (off) or a positive norm, got {}", t.grad_clip),
    );
    check(
        t.max_steps.is_some() || t.max_epochs.is_some(),
        "train.max_steps",
        "or `train.max_epochs` must be given".into(),
    );
    check(
        !(t.max_steps.is_some() && t.max_epochs.is_some()),
        "train.max_steps",
        "and `train.max_epochs` cannot both be given; keep one".into(),
    );
    check(
        t.max_steps != Some(0),
        "train.max_steps",
        "must be at least 1".into(),
    );
    check(
        t.max_epochs != Some(0),
        "train.max_epochs",
        "must be at least 1".into(),
    );
    if let Some(e) = &t.early_stopping {
        check(
            e.patience > 0,
            "train.early_stopping.patience",
            "must be at least 1 (the bad evaluations in a row that stop the run)".into(),
        );
        check(
            e.min_delta >= 0.0 && e.min_delta.is_finite(),
            "train.early_stopping.min_delta",
            format!("must be 0 or positive, got {}", e.min_delta),
        );
        // Only evaluations every `eval_interval` steps count: the run must have some.
        check(
            t.max_steps.is_none_or(|steps| t.eval_interval <= steps),
            "train.eval_interval",
            format!(
                "({}) is past `train.max_steps` ({}): early stopping would never see an \
                 evaluation; lower `train.eval_interval` or remove `train.early_stopping`",
                t.eval_interval,
                t.max_steps.unwrap_or_default()
            ),
        );
    }

    if let Some(decay) = t.ema_decay {
        check(
            decay > 0.0 && decay < 1.0,
            "train.ema_decay",
            format!("must be in (0, 1), e.g. 0.999, got {decay}"),
        );
    }

    let o = &recipe.optim;
    if let Some(l) = &o.lookahead {
        check(
            l.k > 0,
            "optim.lookahead.k",
            "must be at least 1 (the optimiser steps between synchronisations)".into(),
        );
        check(
            l.alpha > 0.0 && l.alpha <= 1.0,
            "optim.lookahead.alpha",
            format!("must be in (0, 1], e.g. 0.5, got {}", l.alpha),
        );
    }
    check(
        o.lr > 0.0 && o.lr.is_finite(),
        "optim.lr",
        format!("must be positive, got {}", o.lr),
    );
    check(
        o.betas.iter().all(|b| (0.0..1.0).contains(b)),
        "optim.betas",
        format!("must both be in [0, 1), got {:?}", o.betas),
    );
    check(
        o.eps > 0.0 && o.eps.is_finite(),
        "optim.eps",
        format!("must be positive, got {}", o.eps),
    );
    check(
        o.weight_decay >= 0.0 && o.weight_decay.is_finite(),
        "optim.weight_decay",
        format!("must be 0 or positive, got {}", o.weight_decay),
    );
    check(
        (0.0..1.0).contains(&o.momentum),
        "optim.momentum",
        "must be in [0, 1)".into(),
    );
    if let Some(decay) = o.layer_lr_decay {
        check(
            decay > 0.0 && decay <= 1.0,
            "optim.layer_lr_decay",
            format!("must be in (0, 1] (e.g. 0.9; 1 is no decay), got {decay}"),
        );
    }
    if let Some(scale) = o.head_lr_scale {
        check(
            scale > 0.0 && scale.is_finite(),
            "optim.head_lr_scale",
            format!("must be positive (e.g. 10), got {scale}"),
        );
    }

    let s = &recipe.scheduler;
    check(
        s.min_lr >= 0.0 && s.min_lr.is_finite(),
        "scheduler.min_lr",
        format!("must be 0 or positive, got {}", s.min_lr),
    );
    check(
        // Compared only with a valid `optim.lr` (NaN is reported once, above).
        s.min_lr <= o.lr || o.lr <= 0.0 || o.lr.is_nan(),
        "scheduler.min_lr",
        format!("({}) must not exceed `optim.lr` ({})", s.min_lr, o.lr),
    );
    check(
        !matches!(s.kind, SchedulerKind::Noam | SchedulerKind::InverseSqrt) || s.warmup_steps > 0,
        "scheduler.warmup_steps",
        "must be at least 1 for noam and inverse_sqrt".into(),
    );

    let l = &recipe.loss;
    check(
        (0.0..1.0).contains(&l.label_smoothing),
        "loss.label_smoothing",
        format!("must be in [0, 1), got {}", l.label_smoothing),
    );
    check(
        l.temperature > 0.0 && l.temperature.is_finite(),
        "loss.temperature",
        format!("must be positive, got {}", l.temperature),
    );
    check(
        l.focal_gamma >= 0.0 && l.focal_gamma.is_finite(),
        "loss.focal_gamma",
        format!("must be 0 or positive, got {}", l.focal_gamma),
    );
    check(
        (0.0..1.0).contains(&l.kpi_momentum),
        "loss.kpi_momentum",
        format!("must be in [0, 1), got {}", l.kpi_momentum),
    );
    for (name, weight) in &l.task_weights {
        check(
            *weight >= 0.0 && weight.is_finite(),
            &format!("loss.task_weights.{name}"),
            format!("must be 0 or positive, got {weight}"),
        );
    }

    let sp = &recipe.data.split;
    let ratios = [sp.train, sp.valid, sp.test];
    check(
        ratios.iter().all(|r| (0.0..=1.0).contains(r))
            && (ratios.iter().sum::<f64>() - 1.0).abs() < 1e-6,
        "data.split",
        format!(
            "ratios (train {}, valid {}, test {}) must be in [0, 1] and sum to 1",
            sp.train, sp.valid, sp.test
        ),
    );
    check(
        sp.train > 0.0,
        "data.split.train",
        "must be positive".into(),
    );
    check(
        sp.chunk_lines > 0,
        "data.split.chunk_lines",
        "must be at least 1".into(),
    );

    check_tokenizer(&mut problems, &recipe.data.tokenizer, "data.tokenizer");
    if let Some(target) = &recipe.data.target_tokenizer {
        check_tokenizer(&mut problems, target, "data.target_tokenizer");
    }
    let mut check = |ok: bool, key: &str, what: String| {
        if !ok {
            problems.push(format!("`{key}` {what}"));
        }
    };
    let parallel = recipe.data.format == DataFormat::Parallel;
    let task = recipe.task();
    let model = recipe.model.options();
    let formats: Vec<String> = task
        .formats()
        .iter()
        .map(|f| format!("`{}`", f.name()))
        .collect();
    check(
        task.formats().contains(&recipe.data.format),
        "data.format",
        format!(
            "({}) does not suit `model.type: {}`: {} on {} ({}); set `data.format` to one of \
             them, or choose a model for {} data",
            recipe.data.format.name(),
            model.name(),
            model.title(),
            formats.join(" or "),
            task.name(),
            recipe.data.format.name()
        ),
    );
    check(
        recipe.data.csv.is_none() || recipe.data.format == DataFormat::Csv,
        "data.csv",
        "is for `format: csv` only".into(),
    );
    check(
        recipe.data.mlm.is_none() || task == TaskKind::Pretraining,
        "data.mlm",
        "is for bert with `head: pretraining` only".into(),
    );
    check(
        recipe.init_from.is_none()
            || matches!(recipe.model, ModelSection::Bert(_) | ModelSection::Gpt2(_)),
        "init_from",
        "is for fine-tuning bert (an nlpkit pretraining experiment or an HF BERT folder) or gpt2 \
         (an HF GPT-2 folder)"
            .into(),
    );
    if let Some(mlm) = &recipe.data.mlm {
        check(
            mlm.mask_prob > 0.0
                && mlm.mask_prob < 1.0
                && mlm.mask_token_prob >= 0.0
                && mlm.random_token_prob >= 0.0
                && mlm.mask_token_prob + mlm.random_token_prob <= 1.0
                && (0.0..=1.0).contains(&mlm.short_seq_prob),
            "data.mlm",
            "probabilities must lie in [0, 1], `mask_prob` above 0, and `mask_token_prob + \
             random_token_prob` at most 1"
                .into(),
        );
    }
    check(
        !parallel || recipe.data.parallel.is_some(),
        "data.parallel",
        "must be given for `format: parallel` (at least `source_lang` and `target_lang`)".into(),
    );
    check(
        parallel || (recipe.data.parallel.is_none() && recipe.data.target_tokenizer.is_none()),
        "data.parallel",
        "and `data.target_tokenizer` are for `format: parallel` only".into(),
    );
    if let Some(p) = &recipe.data.parallel {
        check(
            p.source_lang != p.target_lang,
            "data.parallel.target_lang",
            format!("must differ from `source_lang` (both `{}`)", p.source_lang),
        );
        check(
            p.max_source_tokens > 0 && p.max_target_tokens > 0,
            "data.parallel.max_source_tokens",
            "and `max_target_tokens` must be at least 1".into(),
        );
        check(
            p.max_length_ratio == 0.0
                || (p.max_length_ratio >= 1.0 && p.max_length_ratio.is_finite()),
            "data.parallel.max_length_ratio",
            format!("must be 0 (off) or at least 1, got {}", p.max_length_ratio),
        );
    }
    check(
        recipe.train.max_tokens != Some(0),
        "train.max_tokens",
        "must be at least 1".into(),
    );

    let d = &recipe.distributed;
    check(
        d.timeout_s > 0.0 && d.timeout_s.is_finite(),
        "distributed.timeout_s",
        format!("must be a positive number of seconds, got {}", d.timeout_s),
    );
    if let Some(template) = &d.device {
        let unknown = crate::distributed::unknown_placeholders(template);
        check(
            unknown.is_empty(),
            "distributed.device",
            format!(
                "({template}) may only use the placeholders {{local_rank}} and {{rank}}, not {}",
                unknown.join(", ")
            ),
        );
    }

    if let ModelSection::TransformerSeq2seq(m) = &recipe.model
        && m.share_embeddings
        && recipe.data.target_tokenizer.is_some()
    {
        problems.push(
            "`model.share_embeddings: true` needs one vocabulary for both sides: remove \
             `data.target_tokenizer`, or set `model.share_embeddings: false`"
                .into(),
        );
    }
    model.validate(&mut problems);
    problems
}

fn check_tokenizer(problems: &mut Vec<String>, tk: &TokenizerSection, key: &str) {
    match tk.kind {
        TokenizerKind::Bpe | TokenizerKind::Wordpiece | TokenizerKind::Unigram
            if tk.vocab_size.is_none_or(|v| v == 0) =>
        {
            problems.push(format!(
                "`{key}.vocab_size` must be given (and positive) for a trained tokenizer"
            ))
        }
        TokenizerKind::File if tk.path.is_none() => problems.push(format!(
            "`{key}.path` must name a tokenizer.json when `type: file`"
        )),
        _ => {}
    }
}
