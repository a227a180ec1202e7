//! Checks that serde's types cannot express: ranges, relations between keys, required pairs.

use super::{Recipe, SchedulerKind, TokenizerKind};
use crate::error::{Error, Result};

pub fn validate(recipe: &Recipe) -> Result<()> {
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

    let o = &recipe.optim;
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
    check(o.eps > 0.0, "optim.eps", "must be positive".into());
    check(
        o.weight_decay >= 0.0,
        "optim.weight_decay",
        "must not be negative".into(),
    );
    check(
        (0.0..1.0).contains(&o.momentum),
        "optim.momentum",
        "must be in [0, 1)".into(),
    );

    let s = &recipe.scheduler;
    check(
        s.min_lr >= 0.0,
        "scheduler.min_lr",
        "must not be negative".into(),
    );
    check(
        s.min_lr <= o.lr || o.lr <= 0.0,
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

    let tk = &recipe.data.tokenizer;
    match tk.kind {
        TokenizerKind::Bpe | TokenizerKind::Wordpiece | TokenizerKind::Unigram => check(
            tk.vocab_size.is_some_and(|v| v > 0),
            "data.tokenizer.vocab_size",
            "must be given (and positive) for a trained tokenizer".into(),
        ),
        TokenizerKind::File => check(
            tk.path.is_some(),
            "data.tokenizer.path",
            "must name a tokenizer.json when `type: file`".into(),
        ),
        TokenizerKind::Char => {}
    }

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

    match &recipe.model {
        super::ModelSection::Gpt2(m) => m.validate(&mut problems),
    }

    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Recipe(format!(
            "invalid recipe:\n  - {}",
            problems.join("\n  - ")
        )))
    }
}
