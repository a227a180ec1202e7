//! Data-parallel training over MPI, run as a user runs it: `mpirun -np 2 nlpkit train ...`.
//! Built only with the `mpi` feature (CI: `cargo test --release --features mpi`); needs OpenMPI's
//! `mpirun` on the PATH.
#![cfg(feature = "mpi")]

mod common;

use common::{
    Scratch, latest_step, logged_steps, max_weight_difference, resumable_recipe, same_weights,
    succeeded, tiny_recipe,
};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `mpirun -np RANKS nlpkit ARGS` in the scratch folder (as root too, as CI runs).
fn mpirun(s: &Scratch, ranks: usize, args: &[&str]) -> Command {
    let mut command = Command::new("mpirun");
    command
        .args(["--allow-run-as-root", "--oversubscribe", "-np"])
        .arg(ranks.to_string())
        .arg(env!("CARGO_BIN_EXE_nlpkit"))
        .args(args)
        .current_dir(s.path());
    command
}

fn succeed(mut command: Command) -> String {
    let out = command
        .output()
        .expect("mpirun runs (is OpenMPI installed?)");
    succeeded(&format!("{command:?}"), out)
}

/// AdamW with clipping that bites and two accumulated micro-batches of 4 sequences per rank,
/// checkpoints (and the cross-rank weight check) every 3 steps.
fn recipe(batch_size: usize, extra: &str) -> String {
    let recipe = tiny_recipe("flex", 6)
        .replace(
            "  batch_size: 8\n",
            &format!("  batch_size: {batch_size}\n"),
        )
        .replace("  eval_interval: 10\n", "  eval_interval: 3\n")
        .replace("  save_interval: 10\n", "  save_interval: 3\n");
    format!("{recipe}  accum_grad: 2\n  grad_clip: 0.3\n{extra}")
}

fn final_weights(s: &Scratch, exp: &str, step: usize) -> PathBuf {
    s.path().join(format!(
        "{exp}/checkpoints/step_{step:08}/model.safetensors"
    ))
}

/// `(split, step, loss)` of every record in `EXP/metrics.jsonl`.
fn records(s: &Scratch, exp: &str) -> Vec<(String, u64, f64)> {
    let text = std::fs::read_to_string(s.path().join(exp).join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| {
            (
                v["split"].as_str().unwrap().to_string(),
                v["step"].as_u64().unwrap(),
                v["loss"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn two_ranks_train_what_one_rank_trains_with_the_double_batch() {
    let s = Scratch::with_recipe(&recipe(4, ""));
    s.write(
        "global.yaml",
        recipe(8, "distributed:\n  batch_size_is: global\n"),
    );
    // One process, batch 8.
    s.ok(&[
        "train",
        "recipe.yaml",
        "-q",
        "--set",
        "train.batch_size=8",
        "--set",
        "output_dir=one",
    ]);
    // Two ranks of 4 (per-rank batch), and the batch-8 recipe split over two ranks.
    let out = succeed(mpirun(
        &s,
        2,
        &["train", "recipe.yaml", "--set", "output_dir=two"],
    ));
    assert!(
        out.contains("identical on all 2 ranks"),
        "rank 0 reports the cross-rank weight check:\n{out}"
    );
    succeed(mpirun(
        &s,
        2,
        &["train", "global.yaml", "-q", "--set", "output_dir=global"],
    ));

    let one = final_weights(&s, "one", 6);
    let two = final_weights(&s, "two", 6);
    let difference = max_weight_difference(&one, &two);
    assert!(difference < 1e-5, "weights differ by {difference}");
    same_weights(&two, &final_weights(&s, "global", 6))
        .expect("per-rank batch 4 on 2 ranks is global batch 8 on 2 ranks, bit for bit");

    // Rank 0 alone writes metrics: every step once, and the same losses as one process.
    let (a, b) = (records(&s, "one"), records(&s, "two"));
    let keys = |r: &[(String, u64, f64)]| -> Vec<(String, u64)> {
        r.iter()
            .map(|(split, step, _)| (split.clone(), *step))
            .collect()
    };
    assert_eq!(keys(&a), keys(&b));
    assert_eq!(b.iter().filter(|r| r.0 == "train").count(), 6);
    for ((split, step, x), (_, _, y)) in a.iter().zip(&b) {
        assert!(
            (x - y).abs() < 1e-5,
            "{split} loss at step {step}: {x} vs {y}"
        );
    }
    // The all-reduce's share of the step is measured for the benchmark.
    let metrics = std::fs::read_to_string(s.path().join("two/metrics.jsonl")).unwrap();
    assert!(metrics.contains("\"allreduce_ms\""));
}

#[test]
fn a_resumed_two_rank_run_equals_an_uninterrupted_one() {
    let s = Scratch::with_recipe(&recipe(4, ""));
    succeed(mpirun(
        &s,
        2,
        &["train", "recipe.yaml", "-q", "--set", "output_dir=straight"],
    ));
    let resumed = ["--set", "output_dir=resumed"];
    let mut first = vec!["train", "recipe.yaml", "-q", "--set", "train.max_steps=3"];
    first.extend(resumed);
    succeed(mpirun(&s, 2, &first));
    let mut second = vec!["train", "recipe.yaml", "-q", "--resume"];
    second.extend(resumed);
    succeed(mpirun(&s, 2, &second));
    same_weights(
        &final_weights(&s, "straight", 6),
        &final_weights(&s, "resumed", 6),
    )
    .expect("a resumed 2-rank run ends with the uninterrupted run's weights");
}

#[test]
fn a_global_batch_that_does_not_split_evenly_is_refused() {
    let s = Scratch::with_recipe(&recipe(5, "distributed:\n  batch_size_is: global\n"));
    let out = mpirun(&s, 2, &["train", "recipe.yaml", "-q"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`train.batch_size` (5)") && stderr.contains("2 ranks"),
        "{stderr}"
    );
}

/// A long 2-rank run, started in the background once training is under way.
fn start_long_run(s: &Scratch, extra: &[&str]) -> Child {
    let mut args = vec![
        "train",
        "recipe.yaml",
        "-q",
        "--set",
        "train.max_steps=1000000",
    ];
    args.extend(extra);
    start_run(s, &args, 1)
}

/// `mpirun -np 2 nlpkit ARGS` in the background, once it has written `records` lines of
/// `exp/metrics.jsonl`.
fn start_run(s: &Scratch, args: &[&str], records: usize) -> Child {
    let child = mpirun(s, 2, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let metrics = s.path().join("exp/metrics.jsonl");
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::fs::read_to_string(&metrics).map_or(0, |m| m.lines().count()) < records {
        assert!(Instant::now() < deadline, "training never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// The process id of rank `rank` of the job running in `dir`.
fn rank_pid(dir: &Path, rank: usize) -> u32 {
    find_rank(dir, rank)
        .unwrap_or_else(|| panic!("no process of rank {rank} runs in {}", dir.display()))
}

/// The process id of rank `rank` of the job running in `dir`, if one runs.
fn find_rank(dir: &Path, rank: usize) -> Option<u32> {
    let wanted = format!("OMPI_COMM_WORLD_RANK={rank}");
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let in_dir = std::fs::read_link(entry.path().join("cwd")).is_ok_and(|cwd| cwd == dir);
            let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
            let is_rank = environ
                .split(|b| *b == 0)
                .any(|var| var == wanted.as_bytes());
            (in_dir && is_rank).then_some(pid)
        })
}

/// Wait for the job to end; fail if it takes longer than `limit`.
fn wait_at_most(mut child: Child, limit: Duration) -> (Output, Duration) {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = Command::new("pkill")
                .args(["-9", "-P", &child.id().to_string()])
                .status();
            let _ = child.kill();
            panic!(
                "the job still ran {} s after a rank was lost",
                limit.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    (child.wait_with_output().unwrap(), started.elapsed())
}

#[test]
fn killing_one_rank_ends_the_job_with_an_error_naming_it() {
    let s = Scratch::with_recipe(&recipe(4, ""));
    let dir = s.path().canonicalize().unwrap();
    let child = start_long_run(&s, &[]);
    let victim = rank_pid(&dir, 1);
    Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status()
        .unwrap();
    let (out, took) = wait_at_most(child, Duration::from_secs(60));
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("rank 1"),
        "the message names the lost rank:\n{text}"
    );
    assert!(took < Duration::from_secs(60));
}

#[test]
fn a_hung_rank_makes_the_others_abort_after_the_timeout() {
    let s = Scratch::with_recipe(&recipe(4, ""));
    let dir = s.path().canonicalize().unwrap();
    let child = start_long_run(&s, &["--set", "distributed.timeout_s=2"]);
    let frozen = rank_pid(&dir, 1);
    // SIGSTOP: the process lives on but never answers, as a hung GPU or a dead node would.
    Command::new("kill")
        .args(["-STOP", &frozen.to_string()])
        .status()
        .unwrap();
    let (out, _) = wait_at_most(child, Duration::from_secs(60));
    let _ = Command::new("kill")
        .args(["-9", &frozen.to_string()])
        .status();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        // It may be waiting in the gradient or the validation all-reduce, or in the weights'
        // checksum at a checkpoint.
        stderr.contains("rank 0 of 2: waited 2 s for the other ranks in the")
            && (stderr.contains("all-reduce of step") || stderr.contains("checksum at step")),
        "{stderr}"
    );
}

/// SIGTERM to one rank alone (a pre-emption notice that reached one node): the ranks agree on
/// the stop in the step's all-reduce, all stop after the same step with its checkpoint, the job
/// shuts down cleanly (no abort), and resuming it ends with the uninterrupted run's weights.
#[test]
fn a_stop_signal_to_one_rank_stops_every_rank_after_the_same_step() {
    let steps = 40;
    let s = Scratch::with_recipe(
        &recipe(4, "").replace("  max_steps: 6\n", &format!("  max_steps: {steps}\n")),
    );
    succeed(mpirun(
        &s,
        2,
        &["train", "recipe.yaml", "-q", "--set", "output_dir=straight"],
    ));
    let dir = s.path().canonicalize().unwrap();
    let child = start_run(&s, &["train", "recipe.yaml", "-q"], 5);
    Command::new("kill")
        .args(["-TERM", &rank_pid(&dir, 1).to_string()])
        .status()
        .unwrap();
    let (out, _) = wait_at_most(child, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("rank 1 of 2: SIGTERM stopped training after step")
            && stderr.contains("rank 0 of 2: a stop signal to another rank stopped training"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("MPI_ABORT"),
        "a clean shutdown, not an abort:\n{stderr}"
    );
    let stopped_at = records(&s, "exp").iter().filter(|r| r.0 == "train").count();
    assert!(stopped_at < steps, "the run was not stopped early");
    assert!(
        final_weights(&s, "exp", stopped_at).exists(),
        "the checkpoint of the stop step {stopped_at}"
    );
    succeed(mpirun(&s, 2, &["train", "recipe.yaml", "-q", "--resume"]));
    same_weights(
        &final_weights(&s, "straight", steps),
        &final_weights(&s, "exp", steps),
    )
    .expect("the stopped and resumed 2-rank run ends with the uninterrupted run's weights");
}

/// Each rank updates BatchNorm's running statistics from its own half of the batch; averaged in
/// the step's all-reduce, they stay equal across ranks (the loop compares the checksum of the
/// weights, statistics included, at every checkpoint), and a resumed run ends with the
/// uninterrupted run's weights and statistics.
#[test]
fn batch_norm_statistics_stay_equal_across_ranks() {
    let s = Scratch::batch_norm(8);
    succeed(mpirun(
        &s,
        2,
        &["train", "recipe.yaml", "-q", "--set", "output_dir=straight"],
    ));
    succeed(mpirun(
        &s,
        2,
        &["train", "recipe.yaml", "-q", "--set", "train.max_steps=4"],
    ));
    succeed(mpirun(&s, 2, &["train", "recipe.yaml", "-q", "--resume"]));
    same_weights(
        &final_weights(&s, "straight", 8),
        &final_weights(&s, "exp", 8),
    )
    .expect("the resumed 2-rank run ends with the uninterrupted run's weights and statistics");
    s.ok(&["eval", "exp"]);
}

/// Multi-sample dropout under 2 ranks: each rank draws its samples' masks from its own step-seeded
/// generator, the ranks stay equal (the loop's checksum at every checkpoint), three samples train
/// other weights than one, and a run cut at step 4 and resumed ends bit for bit as a straight one.
#[test]
fn multi_sample_dropout_on_two_ranks_resumes_exactly() {
    let s = Scratch::batch_norm(8);
    let msd = "model.multi_sample_dropout={samples: 3, rate: 0.3}";
    let train = |extra: &[&str]| {
        let args = [&["train", "recipe.yaml", "-q", "--set", msd][..], extra].concat();
        succeed(mpirun(&s, 2, &args));
    };
    train(&["--set", "output_dir=straight"]);
    train(&["--set", "train.max_steps=4"]);
    train(&["--resume"]);
    same_weights(
        &final_weights(&s, "straight", 8),
        &final_weights(&s, "exp", 8),
    )
    .expect("the resumed 2-rank run ends with the uninterrupted run's weights");
    // One sample at the same rate is plain dropout: three must train something else.
    let one = "model.multi_sample_dropout={samples: 1, rate: 0.3}";
    succeed(mpirun(
        &s,
        2,
        &[
            "train",
            "recipe.yaml",
            "-q",
            "--set",
            one,
            "--set",
            "output_dir=one",
        ],
    ));
    assert!(
        same_weights(
            &final_weights(&s, "straight", 8),
            &final_weights(&s, "one", 8)
        )
        .is_err(),
        "three samples at 0.3 trained what one sample trains"
    );
}

/// The kills and stops of the fault-injection tests below, at pseudo-random moments that are the
/// same on every run: `(which rank(s), delay)`, the ranks as `[rank 0, rank 1]`.
fn fault_plan(seed: u64, count: usize, max_ms: u64) -> Vec<([bool; 2], Duration)> {
    let mut state = seed;
    (0..count)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let ranks = match (state >> 20) % 3 {
                0 => [true, false],
                1 => [false, true],
                _ => [true, true],
            };
            (ranks, Duration::from_millis(50 + (state >> 33) % max_ms))
        })
        .collect()
}

/// `mpirun -np 2 nlpkit train recipe.yaml --resume` in the background, once both ranks run;
/// with their process ids.
fn start_resumed_ranks(s: &Scratch, dir: &Path, stderr: Stdio) -> (Child, [u32; 2]) {
    let child = mpirun(s, 2, &["train", "recipe.yaml", "-q", "--resume"])
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    (child, wait_for_ranks(dir))
}

/// The process ids of ranks 0 and 1 of the job in `dir`, once both run.
fn wait_for_ranks(dir: &Path) -> [u32; 2] {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let (Some(a), Some(b)) = (find_rank(dir, 0), find_rank(dir, 1)) {
            return [a, b];
        }
        assert!(Instant::now() < deadline, "the ranks never started");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Send `signal` to the processes of `pids` that `which` picks.
fn signal_ranks(pids: [u32; 2], which: [bool; 2], signal: &str) {
    for (pid, _) in pids.iter().zip(which).filter(|(_, chosen)| *chosen) {
        // A rank that has ended already is no error.
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

/// Resume the interrupted 2-rank run in `s` to its end: the weights and the logged losses of the
/// straight run in `straight`, every step logged once.
fn resume_to_the_end_as(s: &Scratch, straight: &str, steps: usize) {
    succeed(mpirun(s, 2, &["train", "recipe.yaml", "-q", "--resume"]));
    same_weights(
        &final_weights(s, straight, steps),
        &final_weights(s, "exp", steps),
    )
    .expect("the interrupted and resumed 2-rank run ends with the straight run's weights");
    assert_eq!(logged_steps(s), (1..=steps as u64).collect::<Vec<_>>());
    assert_eq!(s.metric_values_of(straight, "train"), s.train_losses());
}

/// Steps of the 2-rank fault-injection runs: their 20 signals come at most 0.85 s after the ranks
/// start, and a 2-core AMD EPYC Zen 3 trains about 100 steps/s in 2 ranks after a start-up of
/// about 0.3 s, so the signals come before the end on a machine several times as fast.
const TWO_RANK_FAULT_STEPS: usize = 1500;

/// A 2-rank run with dropout, accumulation, clipping and warm-up, and its straight twin in
/// `straight`.
fn two_rank_fault_scratch(steps: usize) -> Scratch {
    let s = Scratch::with_recipe(&resumable_recipe(steps));
    succeed(mpirun(
        &s,
        2,
        &["train", "recipe.yaml", "-q", "--set", "output_dir=straight"],
    ));
    s
}

/// SIGKILL at 20 pseudo-random moments to rank 0, rank 1 or both (a node lost, the job killed by
/// the scheduler), each followed by `mpirun ... --resume`: the run ends with the weights of an
/// uninterrupted 2-rank run, and `metrics.jsonl` holds every step exactly once.
#[test]
fn a_two_rank_run_killed_at_random_moments_and_resumed_ends_as_a_straight_run() {
    let steps = TWO_RANK_FAULT_STEPS;
    let s = two_rank_fault_scratch(steps);
    let dir = s.path().canonicalize().unwrap();
    let mut killed = 0;
    for (ranks, delay) in fault_plan(0x5eed_0001, 20, 800) {
        let (child, pids) = start_resumed_ranks(&s, &dir, Stdio::null());
        std::thread::sleep(delay);
        signal_ranks(pids, ranks, "KILL");
        let (out, took) = wait_at_most(child, Duration::from_secs(60));
        eprintln!(
            "SIGKILL to {ranks:?} after {delay:?}: {}, ended in {took:?}",
            out.status
        );
        killed += usize::from(!out.status.success());
    }
    assert_eq!(killed, 20, "every kill came before the run's end");
    let logged = logged_steps(&s).len();
    assert!(
        logged > 0 && logged < steps,
        "{logged} steps before the resume"
    );
    resume_to_the_end_as(&s, "straight", steps);
}

/// SIGTERM at 20 pseudo-random moments to rank 0, rank 1 or both (a pre-emption notice): each
/// time that training was under way, every rank stops after the same step with its checkpoint
/// (no step lost) and the job ends cleanly with exit 143; resumed each time, the run ends as an
/// uninterrupted one.
#[test]
fn a_two_rank_run_stopped_at_random_moments_and_resumed_ends_as_a_straight_run() {
    let steps = TWO_RANK_FAULT_STEPS;
    let s = two_rank_fault_scratch(steps);
    let dir = s.path().canonicalize().unwrap();
    let mut graceful = 0;
    for (ranks, delay) in fault_plan(0x5eed_0002, 20, 800) {
        let (child, pids) = start_resumed_ranks(&s, &dir, Stdio::piped());
        std::thread::sleep(delay);
        signal_ranks(pids, ranks, "TERM");
        let (out, took) = wait_at_most(child, Duration::from_secs(60));
        eprintln!(
            "SIGTERM to {ranks:?} after {delay:?}: {}, ended in {took:?}",
            out.status
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("stopped training after step") {
            // Stopped during training: no step lost, a clean shutdown.
            assert_eq!(out.status.code(), Some(143), "{stderr}");
            assert!(!stderr.contains("MPI_ABORT"), "{stderr}");
            let last = logged_steps(&s).last().copied();
            assert_eq!(
                latest_step(&s),
                last,
                "the stop checkpoint is the last step logged"
            );
            graceful += 1;
        }
    }
    eprintln!("{graceful} of 20 stops came during training");
    assert!(graceful >= 10, "only {graceful} stops came during training");
    resume_to_the_end_as(&s, "straight", steps);
}

/// Early stopping decides on the all-reduced validation loss: both ranks stop after the same
/// step (a rank going on alone would wait in the next all-reduce until the job aborts), and
/// rank 0 alone reports and saves it.
#[test]
fn two_ranks_stop_early_at_the_same_step() {
    let s = Scratch::with_recipe(
        &recipe(4, "  early_stopping: {patience: 2, min_delta: 10.0}\n")
            .replace("  max_steps: 6\n", "  max_steps: 30\n"),
    );
    // Evaluations at steps 3 (the best), 6 and 9 (bad): it stops at 9.
    let out = succeed(mpirun(&s, 2, &["train", "recipe.yaml"]));
    assert_eq!(
        out.matches("stopped after step 9 of 30").count(),
        1,
        "{out}"
    );
    assert_eq!(latest_step(&s), Some(9));
    assert_eq!(logged_steps(&s), (1..=9).collect::<Vec<_>>());
}

/// Lookahead (synchronising every 2 steps) and the EMA under 2 ranks: the same weight sets as one
/// process with the double batch, the same validation losses (measured on the EMA), and a run
/// cut at step 3 (between two synchronisations) and resumed ends bit for bit as a straight one.
#[test]
fn two_ranks_keep_lookahead_and_the_ema_as_one_process_and_resume_exactly() {
    let averaging = |batch_size: usize| {
        recipe(batch_size, "  ema_decay: 0.8\n").replace(
            "  weight_decay: 0.0\n",
            "  weight_decay: 0.0\n  lookahead: {k: 2, alpha: 0.5}\n",
        )
    };
    let s = Scratch::with_recipe(&averaging(4));
    s.write("one.yaml", averaging(8));
    s.ok(&["train", "one.yaml", "-q", "--set", "output_dir=one"]);
    succeed(mpirun(
        &s,
        2,
        &["train", "recipe.yaml", "-q", "--set", "output_dir=straight"],
    ));
    let set = |exp: &str, name: &str| {
        s.path().join(format!(
            "{exp}/checkpoints/step_00000006/{name}.safetensors"
        ))
    };
    for name in ["model", "lookahead", "ema"] {
        let difference = max_weight_difference(&set("one", name), &set("straight", name));
        assert!(difference < 1e-5, "{name}: differs by {difference}");
    }
    let valid = |exp: &str| -> Vec<f64> {
        records(&s, exp)
            .into_iter()
            .filter(|r| r.0 == "valid")
            .map(|r| r.2)
            .collect()
    };
    let (one, two) = (valid("one"), valid("straight"));
    assert_eq!(one.len(), two.len());
    assert!(
        one.iter().zip(&two).all(|(a, b)| (a - b).abs() < 1e-5),
        "{one:?} vs {two:?}"
    );

    let resumed = ["--set", "output_dir=resumed"];
    let first = ["train", "recipe.yaml", "-q", "--set", "train.max_steps=3"];
    succeed(mpirun(&s, 2, &[&first[..], &resumed].concat()));
    let second = ["train", "recipe.yaml", "-q", "--resume"];
    succeed(mpirun(&s, 2, &[&second[..], &resumed].concat()));
    for name in ["model", "lookahead", "ema"] {
        same_weights(&set("straight", name), &set("resumed", name))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// The recurrent LM by truncated BPTT on two ranks: each rank carries its own streams' state,
/// the checkpoint holds the whole job's (what one process with the double batch carries), and a
/// two-rank run cut and resumed ends as a straight one does, bit for bit.
#[test]
fn two_ranks_carry_their_own_streams_of_the_rnn_lm_state() {
    let gpt = "model:\n  type: gpt2\n  n_layer: 1\n  n_head: 2\n  n_embd: 32\n  block_size: 16\n  dropout: 0.0\n";
    let rnn = "model:\n  type: rnn_lm\n  cell: lstm\n  embedding_dim: 16\n  hidden_size: 16\n  \
               num_layers: 2\n  dropout: 0.0\n  bptt: 8\n";
    let recipe = recipe(4, "");
    assert!(recipe.contains(gpt));
    let s = Scratch::with_recipe(&recipe.replace(gpt, rnn));
    let one = ["--set", "train.batch_size=8", "--set", "output_dir=one"];
    s.ok(&[&["train", "recipe.yaml", "-q"][..], &one].concat());
    succeed(mpirun(
        &s,
        2,
        &["train", "recipe.yaml", "-q", "--set", "output_dir=two"],
    ));
    let file = |exp: &str, step: usize, name: &str| {
        s.path()
            .join(format!("{exp}/checkpoints/step_{step:08}/{name}"))
    };
    for name in ["model.safetensors", "carried_state.safetensors"] {
        let difference = max_weight_difference(&file("one", 6, name), &file("two", 6, name));
        assert!(difference < 1e-5, "{name} differs by {difference}");
    }
    for ((split, step, x), (_, _, y)) in records(&s, "one").iter().zip(&records(&s, "two")) {
        assert!(
            (x - y).abs() < 1e-5,
            "{split} loss at step {step}: {x} vs {y}"
        );
    }
    let cut = ["--set", "output_dir=cut"];
    let first = [
        &["train", "recipe.yaml", "-q", "--set", "train.max_steps=4"][..],
        &cut,
    ];
    succeed(mpirun(&s, 2, &first.concat()));
    succeed(mpirun(
        &s,
        2,
        &[&["train", "recipe.yaml", "-q", "--resume"][..], &cut].concat(),
    ));
    for name in ["model.safetensors", "carried_state.safetensors"] {
        same_weights(&file("two", 6, name), &file("cut", 6, name))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// Frozen weights take no gradient on any rank: they stay bit-identical, stay out of the
/// all-reduce (which would fail on a layout mismatch) and the ranks stay equal (the loop checks
/// the weights' checksum at each checkpoint).
#[test]
fn frozen_weights_stay_unchanged_on_two_ranks() {
    let freeze = "  freeze:\n    embeddings: true\n    bottom_layers: 1\n";
    let s = Scratch::with_recipe(&recipe(4, freeze).replace("  n_layer: 1\n", "  n_layer: 2\n"));
    let out = succeed(mpirun(&s, 2, &["train", "recipe.yaml"]));
    assert!(out.contains("M trainable)"), "{out}");
    let tensors = |step: usize| -> Vec<(String, Vec<u8>)> {
        let bytes = std::fs::read(final_weights(&s, "exp", step)).unwrap();
        let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut out: Vec<(String, Vec<u8>)> = file
            .names()
            .into_iter()
            .map(|n| (n.to_string(), file.tensor(n).unwrap().data().to_vec()))
            .collect();
        out.sort();
        out
    };
    let (first, last) = (tensors(3), tensors(6));
    let frozen = |name: &str| {
        ["wte.", "wpe.", "blocks.0."]
            .iter()
            .any(|p| name.starts_with(p))
    };
    for ((name, a), (_, b)) in first.iter().zip(&last) {
        match frozen(name) {
            true => assert!(a == b, "{name} moved while frozen"),
            false if name.ends_with("weight") => assert!(a != b, "{name} did not train"),
            false => {}
        }
    }
}

/// LoRA over two ranks trains what one process trains with the double batch; the frozen base
/// stays bit for bit (its tensors are neither trained nor taken for running statistics).
#[test]
fn two_ranks_train_lora_adapters_as_one_process_does() {
    let lora = |r: String| {
        r.replace(
            "  dropout: 0.0\n",
            "  dropout: 0.0\n  lora: {rank: 2, target: [all]}\n",
        )
    };
    let s = Scratch::with_recipe(&lora(recipe(4, "")));
    s.ok(&[
        "train",
        "recipe.yaml",
        "-q",
        "--set",
        "train.batch_size=8",
        "--set",
        "output_dir=one",
    ]);
    succeed(mpirun(
        &s,
        2,
        &["train", "recipe.yaml", "--set", "output_dir=two"],
    ));
    let (one, two) = (final_weights(&s, "one", 6), final_weights(&s, "two", 6));
    let difference = max_weight_difference(&one, &two);
    assert!(difference < 1e-5, "weights differ by {difference}");
    let (a, b) = (std::fs::read(&one).unwrap(), std::fs::read(&two).unwrap());
    let (a, b) = (
        safetensors::SafeTensors::deserialize(&a).unwrap(),
        safetensors::SafeTensors::deserialize(&b).unwrap(),
    );
    let mut adapters = 0;
    for name in a.names() {
        if name.contains(".lora_") {
            adapters += 1;
        } else {
            assert_eq!(
                a.tensor(name).unwrap().data(),
                b.tensor(name).unwrap().data(),
                "{name}"
            );
        }
    }
    assert_eq!(adapters, 2 * 4);
}
