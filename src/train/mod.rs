//! The training loop: step-based, model-agnostic (it sees the model only through [`Task`]),
//! with averaged gradient accumulation, clipping by the global norm, periodic evaluation,
//! atomic checkpoints and exact resume.

pub mod adamw;
pub mod average;
pub mod checkpoint;
pub mod early_stopping;
pub mod ema;
pub mod freeze;
pub mod layer_lr;
pub mod lookahead;
pub mod lora;
pub mod optim;
pub mod params;
pub mod pretrained;
pub mod progress;
pub mod schedule;
pub mod stop;
pub mod tensorboard;
pub mod weighting;

use crate::distributed::grads::{average_step, weights_checksum};
use crate::distributed::{Ranks, Shard};
use crate::error::{Error, Result};
use crate::experiment::Experiment;
use crate::recipe::Recipe;
use crate::tasks::{LossSum, Task};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;
use checkpoint::TrainerState;
use early_stopping::EarlyStopping;
use progress::{Progress, TrainLine, perplexity_note, record};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;
use weighting::LossWeighting;

#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Continue from the latest checkpoint in the experiment folder.
    pub resume: bool,
    /// Continue from this checkpoint folder (of this experiment or another) instead.
    pub resume_from: Option<PathBuf>,
    /// Continuing: start with a fresh optimiser (no moments, its own step count at 0).
    pub reset_optimizer: bool,
    /// Continuing: a new run from the checkpoint's weights: step 0 of the recipe's schedule, data
    /// order and `max_steps`, with fresh loss-weighting and early-stopping state.
    pub reset_schedule: bool,
    /// No progress bar or log lines (metrics are still written).
    pub quiet: bool,
}

impl TrainOptions {
    /// Whether the run continues from a checkpoint (`--resume` or `--resume-from`).
    pub fn continues(&self) -> bool {
        self.resume || self.resume_from.is_some()
    }
}

#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub steps: usize,
    pub final_valid_loss: Option<f64>,
    /// The step and validation loss of the best checkpoint.
    pub best: Option<(usize, f64)>,
    pub elapsed_s: f64,
    /// Training throughput of this invocation.
    pub tokens_per_s: f64,
    /// Uncertainty weighting: each loss's learned log-variance s at the end.
    pub log_variances: Vec<(&'static str, f64)>,
}

/// What one optimiser step measured, averaged over its micro-batches (and, with several ranks,
/// across ranks: the figures travel in the gradients' all-reduce buffer).
#[derive(Debug, Clone, PartialEq)]
pub struct StepFigures {
    /// The optimised (weighted, possibly label-smoothed) loss.
    pub loss: f32,
    /// The plain negative log-likelihood.
    pub nll: f32,
    /// With several losses: each loss, in the order of `Task::loss_names`.
    pub part_losses: Vec<f32>,
    /// With several losses: each loss's KPI (an accuracy).
    pub part_kpis: Vec<f32>,
}

impl StepFigures {
    /// The figures as one flat buffer: loss, nll, the part losses, the KPIs.
    pub fn to_buffer(&self) -> Vec<f32> {
        let mut out = vec![self.loss, self.nll];
        out.extend(&self.part_losses);
        out.extend(&self.part_kpis);
        out
    }

    /// The figures of a buffer made by [`StepFigures::to_buffer`] with `parts` losses.
    pub fn from_buffer(buffer: &[f32], parts: usize) -> Self {
        assert_eq!(buffer.len(), 2 + 2 * parts, "a step's figures buffer");
        Self {
            loss: buffer[0],
            nll: buffer[1],
            part_losses: buffer[2..2 + parts].to_vec(),
            part_kpis: buffer[2 + parts..].to_vec(),
        }
    }
}

/// Optimiser steps the run is asked for.
pub fn total_steps<T: Task>(recipe: &Recipe, task: &T) -> usize {
    let train = &recipe.train;
    match (train.max_steps, train.max_epochs) {
        (Some(steps), _) => steps,
        (None, Some(epochs)) => {
            (epochs * task.micro_batches_per_epoch()).div_ceil(train.accum_grad)
        }
        (None, None) => unreachable!("validated: max_steps or max_epochs"),
    }
}

/// The dropout seed of one step on one rank: a function of the step, so a resumed run draws the
/// same masks, and of the rank, so ranks drop different units (rank 0 draws what a single
/// process draws).
fn step_seed(seed: u64, step: usize, rank: usize) -> u64 {
    seed ^ (step as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ (rank as u64).wrapping_mul(0xd1b5_4a32_d192_ed03)
}

pub fn train<T: Task>(
    recipe: &Recipe,
    task: &T,
    exp: &Experiment,
    device: &Device,
    ranks: &Ranks,
    options: &TrainOptions,
) -> Result<TrainSummary> {
    let cfg = &recipe.train;
    let total = total_steps(recipe, task);
    let accum = cfg.accum_grad;
    let ad = device.clone().autodiff();
    ad.seed(recipe.seed);
    let checkpoints = exp.checkpoints_dir();
    // The checkpoint a continuation starts from, found before the model is built: its weights
    // replace everything, so a fine-tuning run's pretrained weights are then not read at all.
    let from = match (&options.resume_from, options.continues()) {
        (Some(path), _) => {
            let named = checkpoint::resolve_user_checkpoint(path)?;
            checkpoint::verify(&named)?;
            Some(named)
        }
        (None, true) => checkpoint::latest(&checkpoints)?,
        (None, false) => None,
    };
    if options.continues() {
        ranks.require_same(
            from.as_ref().map_or(0, |c| c.state.step as u64),
            "the step of the checkpoint resumed from (the experiment folder must be on a file \
             system that every rank reads)",
        )?;
    }
    let mut model = params::with_stable_ids(task.init_model(&ad, from.is_none())?);
    // Fine-tuning: what stays frozen, and each parameter's learning-rate factor. Freezing is not
    // saved with the weights, so it is applied again after a checkpoint is loaded.
    let anatomy = freeze::Anatomy::of(&recipe.model, &model);
    let frozen = match &cfg.freeze {
        Some(section) => anatomy.frozen_paths(section)?,
        None => Default::default(),
    };
    let lr_factors = layer_lr::factors(&recipe.optim, &anatomy)?;
    model = freeze::freeze_paths(model, &frozen);
    // LoRA: the base weights (pretrained ones loaded above) stop training.
    model = lora::freeze_base(&recipe.model, model);
    let steps_per_epoch = (task.micro_batches_per_epoch() / accum).max(1);
    let mut weighting = LossWeighting::new(&recipe.loss, &task.loss_names(), steps_per_epoch)?;
    if !options.quiet && ranks.is_main() {
        let trainable = match frozen.is_empty() {
            true => String::new(),
            false => format!(
                " ({:.2}M trainable)",
                freeze::trainable_params(&model) as f64 / 1e6
            ),
        };
        println!(
            "{:.2}M parameters{trainable}",
            model.num_params() as f64 / 1e6
        );
        if lora::scale_of(&recipe.model).is_some() {
            println!("{}", lora::trainable_line(&model));
        }
    }
    let mut optimizer = optim::build(&recipe.optim, &model);
    let mut schedule = layer_lr::with_factors(
        schedule::build(
            &recipe.scheduler,
            recipe.optim.lr,
            total,
            task.model_width(),
        )?,
        lr_factors,
    );

    let mut start = 0;
    let mut tokens_seen = 0u64;
    let mut elapsed_before = 0.0;
    let mut early = cfg.early_stopping.as_ref().map(EarlyStopping::new);
    // Only rank 0 speaks.
    let quiet = options.quiet || !ranks.is_main();
    // Checkpoints of this experiment past the start belong to a continuation now abandoned.
    let mut restarted_earlier = false;
    if options.continues() {
        match &from {
            Some(from) => {
                model = checkpoint::load_model(model, &from.model_path())?;
                model = freeze::freeze_paths(model, &frozen);
                // LoRA's rule is the recipe's: apply it again.
                model = lora::freeze_base(&recipe.model, model);
                if !options.reset_optimizer {
                    optimizer = checkpoint::load_optimizer(optimizer, &from.optimizer_path())?;
                }
                if !options.reset_schedule {
                    start = from.state.step;
                    if let Some(state) = from.state.loss_weighting.clone() {
                        weighting.restore(state);
                    }
                    if let (Some(early), Some(state)) = (&mut early, &from.state.early_stopping) {
                        early.restore(state.clone());
                    }
                    tokens_seen = from.state.tokens_seen;
                    elapsed_before = from.state.elapsed_s;
                    // Schedules are pure functions of the step: replay them to where we stopped.
                    for _ in 0..start {
                        schedule.step();
                    }
                }
                restarted_earlier = options.resume_from.is_some() || options.reset_schedule;
                if !quiet {
                    let mut fresh = Vec::new();
                    if options.reset_optimizer {
                        fresh.push("a fresh optimiser");
                    }
                    if options.reset_schedule {
                        fresh.push("the schedule and the step count from 0");
                    }
                    let fresh = match fresh.is_empty() {
                        true => String::new(),
                        false => format!(", with {}", fresh.join(" and ")),
                    };
                    println!(
                        "resuming from {} (step {}){fresh}",
                        from.dir.display(),
                        from.state.step
                    );
                }
            }
            None if !quiet => println!(
                "no checkpoint in {} yet; starting from step 0",
                checkpoints.display()
            ),
            None => {}
        }
    }
    // Lookahead's slow weights and the EMA start as the weights the run starts from, or go on
    // from those the checkpoint saved (the slow weights are optimiser state).
    let mut lookahead =
        (recipe.optim.lookahead.as_ref()).map(|l| lookahead::Lookahead::new(l, &model));
    let mut ema = cfg.ema_decay.map(|decay| ema::Ema::new(decay, &model));
    if let Some(from) = &from {
        if let Some(l) = lookahead.as_mut().filter(|_| !options.reset_optimizer) {
            let path = from.dir.join(checkpoint::LOOKAHEAD_FILE);
            if let Some(slow) = load_weight_set(l.slow(), &path, "Lookahead's slow weights", quiet)?
            {
                l.restore(slow);
            }
        }
        if let Some(e) = &mut ema {
            let path = from.dir.join(checkpoint::EMA_FILE);
            if let Some(weights) = load_weight_set(e.weights(), &path, "the EMA", quiet)? {
                e.restore(weights);
            }
        }
    }
    // Truncated BPTT's state goes on from the checkpoint's step; a new schedule starts the
    // streams afresh.
    if let Some(from) = from.as_ref().filter(|_| !options.reset_schedule) {
        restore_carried_state(task, from, quiet)?;
    }
    let stopped_early = early.as_ref().filter(|e| e.should_stop());
    if start >= total || stopped_early.is_some() {
        if !quiet {
            match stopped_early {
                Some(early) => println!(
                    "{}; the run stopped at step {start}, nothing to do (raise \
                     `train.early_stopping.patience` to train on)",
                    early.reason()
                ),
                None => println!("already trained to step {start} of {total}; nothing to do"),
            }
        }
        let best = best_checkpoint(&checkpoints)?;
        return Ok(TrainSummary {
            steps: start,
            final_valid_loss: best.map(|b| b.1),
            best,
            elapsed_s: elapsed_before,
            tokens_per_s: 0.0,
            log_variances: Vec::new(),
        });
    }

    // Seeded initialisation (or the shared checkpoint) gives every rank the same weights; check.
    if ranks.world > 1 {
        ranks.require_same(
            weights_checksum(&model),
            "the weights' checksum at the start",
        )?;
    }
    // After the check above, every rank has read the checkpoint: rank 0 may move it.
    if restarted_earlier && ranks.is_main() {
        let moved = checkpoint::set_aside_after(&checkpoints, start)?;
        if !quiet && !moved.is_empty() {
            println!(
                "moved {} checkpoint(s) past step {start} to {}",
                moved.len(),
                checkpoints.join(checkpoint::SUPERSEDED_DIR).display()
            );
        }
    }

    let mut progress = if ranks.is_main() {
        let tensorboard = cfg.tensorboard.then(|| exp.tensorboard_dir());
        Progress::new(
            &exp.metrics_path(),
            tensorboard.as_deref(),
            start,
            total,
            quiet,
        )?
    } else {
        Progress::silent()
    };
    let tokens_per_step = (task.tokens_per_micro_batch() * accum * ranks.world) as u64;
    let run_start = Instant::now();
    let mut window_start = Instant::now();
    let mut window_tokens = 0u64;
    let mut window_steps = 0usize;
    let mut window_allreduce_s = 0.0;
    let mut final_valid = None;
    let stop_signals = stop::StopSignals::listen();
    // The last step trained: `total`, unless early stopping ends the run before it.
    let mut end = total;

    for step in start..total {
        let lr = schedule.step();
        let lr_value = lr.base();
        ad.seed(step_seed(recipe.seed, step, ranks.rank));

        let mut accumulator = GradientsAccumulator::new();
        // The weights of this step, from what the steps before it observed.
        let weights = weighting.weights(task.log_variances(&model).as_ref());
        let parts = weighting.names().len();
        let (mut losses, mut nlls) = (Vec::with_capacity(accum), Vec::with_capacity(accum));
        let mut part_losses: Vec<Vec<Tensor<1>>> = vec![Vec::new(); parts];
        let mut part_kpis: Vec<Vec<Tensor<1>>> = vec![Vec::new(); parts];
        for micro in 0..accum {
            let out = task.train_loss(&model, step, micro, &ad);
            debug_assert!(parts == 0 || (out.losses.len() == parts && out.kpis.len() == parts));
            for (values, part) in part_losses.iter_mut().zip(&out.losses) {
                values.push(part.clone().inner());
            }
            for (values, kpi) in part_kpis.iter_mut().zip(&out.kpis) {
                values.push(kpi.clone().inner());
            }
            let loss = weighting.combine(&out.losses, &weights, task.log_variances(&model));
            losses.push(loss.clone().inner());
            nlls.push(out.nll.inner());
            // Dividing each micro-batch's loss makes the summed gradients their average.
            let grads = loss.div_scalar(accum as f64).backward();
            accumulator.accumulate(&model, GradientsParams::from_grads(grads, &model));
        }
        let grads = accumulator.grads();
        let mean = |values: Vec<Tensor<1>>| Tensor::cat(values, 0).mean().into_scalar::<f32>();
        let figures = StepFigures {
            loss: mean(losses),
            nll: mean(nlls),
            part_losses: part_losses.into_iter().map(mean).collect(),
            part_kpis: part_kpis.into_iter().map(mean).collect(),
        };
        // With several ranks, gradients and the figures are averaged across them here, before
        // clipping, so every rank clips by the same norm and applies the same update. A stop
        // signal travels with them, so that all ranks stop after the same step.
        let mut buffer = figures.to_buffer();
        let stop_signal = stop_signals.requested();
        buffer.push(if stop_signal.is_some() { 1.0 } else { 0.0 });
        // Validation's collectives are not part of the step: leave them out of the share.
        ranks.take_comm_seconds();
        let (averaged, mut grads) = average_step(model, grads, &mut buffer, ranks, step + 1);
        model = averaged;
        window_allreduce_s += ranks.take_comm_seconds();
        let stop_now = buffer.pop().is_some_and(|asked| asked > 0.0);
        let figures = StepFigures::from_buffer(&buffer, parts);
        let (train_loss, train_nll) = (figures.loss as f64, figures.nll as f64);
        let part_losses: Vec<f64> = figures.part_losses.iter().map(|&v| v as f64).collect();
        let part_kpis: Vec<f64> = figures.part_kpis.iter().map(|&v| v as f64).collect();
        weighting.observe(&part_losses, &part_kpis);
        let grad_norm = params::clip_grad_norm(&model, &mut grads, cfg.grad_clip);
        if !train_loss.is_finite() || !grad_norm.is_finite() {
            progress.finish();
            let last_good = checkpoint::latest(&checkpoints)?
                .map(|c| format!("the last good checkpoint is {}", c.dir.display()))
                .unwrap_or_else(|| "no checkpoint was written yet".into());
            return Err(Error::Run(format!(
                "the loss became {train_loss} (gradient norm {grad_norm}) at step {}; stopped \
                 without applying that update, {last_good}. Lower `optim.lr` or set \
                 `train.grad_clip`, then resume with --resume",
                step + 1
            )));
        }
        model = optimizer.step(lr, model, grads);
        if let Some(lookahead) = &mut lookahead {
            model = lookahead.after_step(step + 1, model);
        }
        if let Some(ema) = &mut ema {
            ema.update(&model);
        }

        let done = step + 1;
        tokens_seen += tokens_per_step;
        window_tokens += tokens_per_step;
        window_steps += 1;
        progress.set_step(done);
        if done % cfg.log_interval == 0 || done == total {
            let window_s = window_start.elapsed().as_secs_f64();
            let tokens_per_s = window_tokens as f64 / window_s;
            // The plain NLL is shown beside a loss that differs from it (label smoothing).
            let nll = (train_nll != train_loss).then_some(train_nll);
            let named: Vec<(&str, f64, f64)> = weighting
                .names()
                .iter()
                .zip(&part_losses)
                .zip(&weights)
                .map(|((name, l), w)| (*name, *l, *w))
                .collect();
            progress.train_line(&TrainLine {
                step: done,
                loss: train_loss,
                nll,
                parts: &named,
                lr: lr_value,
                grad_norm,
                tokens_per_s,
            });
            let mut line = record(done, "train", train_loss, lr_value);
            for (i, (name, part_loss, weight)) in named.iter().enumerate() {
                line.insert(format!("{name}_loss"), json!(part_loss));
                line.insert(format!("{name}_weight"), json!(weight));
                if let Some(kpi) = part_kpis.get(i) {
                    line.insert(format!("{name}_accuracy"), json!(kpi));
                }
            }
            if let Some(s) = task.log_variances(&model) {
                let s: Vec<f64> = s.try_into_vec_as::<f64>().expect("f64");
                for (name, s) in weighting.names().iter().zip(s) {
                    line.insert(format!("{name}_log_variance"), json!(s));
                }
            }
            line.insert("nll".into(), json!(train_nll));
            line.insert("grad_norm".into(), json!(grad_norm));
            line.insert("tokens_per_s".into(), json!(tokens_per_s));
            line.insert(
                "step_ms".into(),
                json!(1e3 * window_s / window_steps as f64),
            );
            if ranks.world > 1 {
                // Time in the gradient all-reduce, waiting for the slowest rank included.
                let allreduce_ms = 1e3 * window_allreduce_s / window_steps as f64;
                line.insert("allreduce_ms".into(), json!(allreduce_ms));
            }
            line.insert(
                "elapsed_s".into(),
                json!(elapsed_before + run_start.elapsed().as_secs_f64()),
            );
            progress.record(line)?;
            window_start = Instant::now();
            window_tokens = 0;
            window_steps = 0;
            window_allreduce_s = 0.0;
        }

        let scheduled_save = done % cfg.save_interval == 0 || done == total;
        let eval_now = done % cfg.eval_interval == 0 || scheduled_save;
        let mut valid_loss = None;
        if eval_now {
            // With EMA on, validation (and so early stopping and the best checkpoint) measures
            // the averaged weights.
            let measured = ema.as_ref().map_or(&model, |e| e.weights());
            let part = validation_sum(task, measured, &ad, ranks.shard());
            let mut sums = [part.total, part.count];
            ranks.sum(
                &mut sums,
                &format!("the validation all-reduce of step {done}"),
            );
            let loss = LossSum {
                total: sums[0],
                count: sums[1],
            }
            .mean();
            valid_loss = Some(loss);
            final_valid = Some(loss);
            let ppl = perplexity_note(loss, task.loss_is_token_nll());
            progress.println(&format!(
                "step {done}: valid loss {loss:.4}{ppl}, train loss {train_loss:.4}"
            ));
            let mut line = record(done, "valid", loss, lr_value);
            if task.loss_is_token_nll() {
                line.insert("ppl".into(), json!(loss.exp()));
            }
            progress.record(line)?;
        }
        // Only the evaluations every `eval_interval` steps count, not the extra ones at a
        // checkpoint or the last step: the decision must not depend on `save_interval` or
        // `max_steps`, so that a run cut short and resumed stops where a straight one does. The
        // loss is all-reduced, so every rank takes the same decision.
        let mut stop_early = false;
        if let (Some(early), Some(loss)) = (&mut early, valid_loss)
            && done % cfg.eval_interval == 0
        {
            early.observe(done, loss);
            stop_early = early.should_stop();
        }
        // A stop saves at once, without a validation pass that was not due (a pre-emption
        // notice leaves little time).
        let save_now = scheduled_save || stop_now || stop_early;
        if save_now && ranks.world > 1 {
            ranks.require_same(
                weights_checksum(&model),
                &format!("the weights' checksum at step {done}"),
            )?;
            if let Some(ema) = &ema {
                ranks.require_same(
                    weights_checksum(ema.weights()),
                    &format!("the EMA weights' checksum at step {done}"),
                )?;
            }
        }
        // Each rank holds its own rows of the carried state, zeros elsewhere: summed, rank 0
        // has the whole job's to save (adding zeros changes no bit).
        let carried = match task.carried_state() {
            Some(mut carried) if save_now => {
                for tensor in carried.values_mut() {
                    let what = format!("the carried state of step {done}");
                    ranks.sum(&mut tensor.values, &what);
                }
                let bytes = crate::hf::serialize(&carried, None);
                vec![(checkpoint::CARRIED_STATE_FILE, bytes)]
            }
            _ => Vec::new(),
        };
        if save_now && ranks.is_main() {
            let state = TrainerState {
                step: done,
                valid_loss,
                train_loss,
                lr: lr_value,
                tokens_seen,
                elapsed_s: elapsed_before + run_start.elapsed().as_secs_f64(),
                loss_weighting: Some(weighting.state().clone()),
                early_stopping: early.as_ref().map(|e| e.state().clone()),
            };
            let mut extras = Vec::new();
            if let Some(lookahead) = &lookahead {
                extras.push((checkpoint::LOOKAHEAD_FILE, lookahead.slow()));
            }
            if let Some(ema) = &ema {
                extras.push((checkpoint::EMA_FILE, ema.weights()));
            }
            checkpoint::save(&checkpoints, &model, &extras, &carried, &optimizer, &state)?;
            checkpoint::prune(&checkpoints, cfg.keep_last, cfg.keep_best)?;
        }
        if let Some(early) = early.as_ref().filter(|_| stop_early) {
            progress.println(&format!(
                "{}; stopped after step {done} of {total}",
                early.reason()
            ));
            end = done;
            break;
        }
        if stop_now && done < total {
            progress.finish();
            let signal = stop_signal.unwrap_or_else(stop::default_signal);
            let by = match stop_signal {
                Some(_) => stop::signal_name(signal),
                None => "a stop signal to another rank".into(),
            };
            return Err(Error::Stopped {
                message: format!(
                    "{by} stopped training after step {done} of {total}; its checkpoint is in \
                     {}. Continue with `nlpkit train RECIPE --resume`",
                    checkpoints.display()
                ),
                signal,
            });
        }
    }
    progress.finish();
    if !quiet && ranks.world > 1 {
        println!(
            "the weights were identical on all {} ranks at every checkpoint",
            ranks.world
        );
    }
    let elapsed = run_start.elapsed().as_secs_f64();
    let trained_tokens = (end - start) as u64 * tokens_per_step;
    let log_variances = match task.log_variances(&model) {
        Some(s) => {
            let s: Vec<f64> = s.try_into_vec_as::<f64>().expect("f64");
            weighting.names().iter().copied().zip(s).collect()
        }
        None => Vec::new(),
    };
    Ok(TrainSummary {
        steps: end,
        final_valid_loss: final_valid,
        best: best_checkpoint(&checkpoints)?,
        elapsed_s: elapsed_before + elapsed,
        tokens_per_s: trained_tokens as f64 / elapsed,
        log_variances,
    })
}

/// The summed validation loss of the batches of the task's validation sample that `shard` owns
/// (the parts of all shards add up to the whole sample's).
fn validation_sum<T: Task>(task: &T, model: &T::Model, device: &Device, shard: Shard) -> LossSum {
    let model = model.valid();
    let device = device.clone().without_autodiff();
    let mut sum = LossSum::default();
    for batch in (0..task.validation_batches()).filter(|&b| shard.owns(b)) {
        sum += task.validation_loss(&model, batch, &device);
    }
    sum
}

/// A weight set of `model`'s shape saved beside a checkpoint's model (Lookahead's, the EMA's),
/// or None, with a note, when the run that saved it had it off: it then starts from the weights.
fn load_weight_set<M: Module + burn::store::ModuleSnapshot>(
    model: &M,
    path: &std::path::Path,
    what: &str,
    quiet: bool,
) -> Result<Option<M>> {
    if !path.exists() {
        if !quiet {
            println!(
                "{} does not exist (the run that saved it had it off): starting {what} from the \
                 checkpoint's weights",
                path.display()
            );
        }
        return Ok(None);
    }
    checkpoint::load_model(model.clone(), path).map(Some)
}

/// Give the task the state it carried at the checkpoint's step, when it carries any.
fn restore_carried_state<T: Task>(
    task: &T,
    from: &checkpoint::Checkpoint,
    quiet: bool,
) -> Result<()> {
    let path = from.dir.join(checkpoint::CARRIED_STATE_FILE);
    if path.exists() {
        return task.restore_carried_state(crate::hf::read_safetensors(&path)?);
    }
    if task.carried_state().is_some() && !quiet {
        println!(
            "{} does not exist: the carried state starts from zeros",
            path.display()
        );
    }
    Ok(())
}

/// The step and validation loss of the checkpoint with the lowest validation loss.
fn best_checkpoint(root: &std::path::Path) -> Result<Option<(usize, f64)>> {
    let best = checkpoint::best(root)?;
    Ok(best.and_then(|c| c.state.valid_loss.map(|loss| (c.state.step, loss))))
}

/// A fresh run must not overwrite an experiment that has checkpoints: that takes `--resume`.
pub fn refuse_to_overwrite(exp: &Experiment, resume: bool) -> Result<()> {
    if resume {
        return Ok(());
    }
    // Any checkpoint counts here, sound or not: none is overwritten without --resume.
    match checkpoint::list(&exp.checkpoints_dir())?.pop() {
        Some(last) => Err(Error::Usage(format!(
            "{} already holds checkpoints (latest: step {}); pass --resume to continue it, or set \
             another output_dir (e.g. --set output_dir=exp/run2)",
            exp.dir.display(),
            last.state.step
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::StepFigures;

    #[test]
    fn step_figures_travel_through_the_all_reduce_buffer_by_name() {
        let figures = StepFigures {
            loss: 2.5,
            nll: 2.25,
            part_losses: vec![3.0, 0.5],
            part_kpis: vec![0.25, 0.75],
        };
        let buffer = figures.to_buffer();
        assert_eq!(buffer, vec![2.5, 2.25, 3.0, 0.5, 0.25, 0.75]);
        // Two ranks' buffers summed and halved, as the all-reduce averages them.
        let other = StepFigures {
            loss: 1.5,
            nll: 1.25,
            part_losses: vec![1.0, 1.5],
            part_kpis: vec![0.75, 0.25],
        };
        let averaged: Vec<f32> = buffer
            .iter()
            .zip(other.to_buffer())
            .map(|(a, b)| (a + b) / 2.0)
            .collect();
        let back = StepFigures::from_buffer(&averaged, 2);
        assert_eq!((back.loss, back.nll), (2.0, 1.75));
        assert_eq!(back.part_losses, vec![2.0, 1.0]);
        assert_eq!(back.part_kpis, vec![0.5, 0.5]);
        // A task with one loss has no parts.
        let single = StepFigures {
            loss: 1.0,
            nll: 0.5,
            part_losses: vec![],
            part_kpis: vec![],
        };
        assert_eq!(StepFigures::from_buffer(&single.to_buffer(), 0), single);
    }
}
