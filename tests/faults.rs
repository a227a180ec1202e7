//! Nothing lost when a run is stopped or killed: graceful stops on SIGTERM, SIGINT and SIGUSR1,
//! SIGKILL at pseudo-random moments, damaged checkpoints, and byte-identical artefacts.
#![cfg(unix)]

mod common;

use common::{
    Scratch, latest_step, logged_steps, resumable_recipe, same_scalars, same_weights,
    truncate_to_a_fraction,
};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

fn spawn_train(s: &Scratch, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_nlpkit"))
        .args(["train", "recipe.yaml", "--resume", "--quiet"])
        .args(extra)
        .current_dir(s.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("nlpkit runs")
}

fn send(child: &Child, signal: &str) {
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill -{signal}");
}

fn checkpoint_dir(s: &Scratch, step: u64) -> PathBuf {
    s.path().join(format!("exp/checkpoints/step_{step:08}"))
}

/// Wait until the run has logged `steps` train steps, or it ends.
fn wait_for_steps(s: &Scratch, child: &mut Child, steps: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while logged_steps(s).len() < steps && child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "no progress in time");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn finish(child: Child) -> (ExitStatus, String) {
    let out = child.wait_with_output().unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A straight run of `steps` steps of [`resumable_recipe`], for comparison.
fn straight_run(steps: usize) -> Scratch {
    let straight = Scratch::with_recipe(&resumable_recipe(steps));
    straight.ok(&["train", "recipe.yaml", "--quiet"]);
    straight
}

fn final_weights(s: &Scratch, steps: u64) -> PathBuf {
    checkpoint_dir(s, steps).join("model.safetensors")
}

/// Resume the interrupted run `s` to its end: it must end with the weights and the logged
/// losses of the `straight` run, every step logged once.
fn resume_to_the_end_as(s: &Scratch, straight: &Scratch, steps: usize) {
    s.ok(&["train", "recipe.yaml", "--resume", "--quiet"]);
    same_weights(
        &final_weights(straight, steps as u64),
        &final_weights(s, steps as u64),
    )
    .expect("the interrupted and resumed run ends with the straight run's weights");
    assert_eq!(logged_steps(s), (1..=steps as u64).collect::<Vec<_>>());
    assert_eq!(straight.train_losses(), s.train_losses());
    // TensorBoard's files, one per run, hold each step once: the figures of metrics.jsonl.
    same_scalars(&s.path().join("exp"));
}

/// Each stop signal finishes the step under way, writes its checkpoint and exits with 128 + the
/// signal's number; resuming after every stop ends with the weights and the logged losses of an
/// uninterrupted run.
#[test]
fn stop_signals_save_the_current_step_and_the_resumed_run_equals_a_straight_one() {
    let steps = 60;
    let straight = straight_run(steps);
    let s = Scratch::with_recipe(&resumable_recipe(steps));
    let mut stops = 0;
    for (signal, code, after) in [("TERM", 143, 3), ("INT", 130, 11), ("USR1", 138, 29)] {
        let mut child = spawn_train(&s, &[]);
        wait_for_steps(&s, &mut child, after);
        send(&child, signal);
        let (status, stderr) = finish(child);
        assert_eq!(status.code(), Some(code), "SIG{signal}: {stderr}");
        assert!(
            stderr.contains(&format!("SIG{signal} stopped training after step"))
                && stderr.contains("--resume"),
            "{stderr}"
        );
        // No step lost: the checkpoint holds the last step logged.
        let logged = logged_steps(&s);
        assert_eq!(latest_step(&s), logged.last().copied(), "SIG{signal}");
        stops += 1;
    }
    assert_eq!(stops, 3);
    resume_to_the_end_as(&s, &straight, steps);
}

/// Ctrl-C twice: the second one ends the run at once, without waiting for the step.
#[test]
fn a_second_sigint_aborts_at_once() {
    let s = Scratch::with_recipe(&resumable_recipe(100_000));
    // Steps of a tenth of a second or more, so that the second signal comes inside the step the
    // first one lets finish.
    let slow = [
        "--set",
        "model.n_embd=256",
        "--set",
        "model.block_size=128",
        "--set",
        "train.batch_size=32",
    ];
    let mut child = spawn_train(&s, &slow);
    wait_for_steps(&s, &mut child, 2);
    send(&child, "INT");
    std::thread::sleep(Duration::from_millis(10));
    send(&child, "INT");
    let (status, stderr) = finish(child);
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(
        !stderr.contains("stopped training"),
        "not the graceful stop: {stderr}"
    );
}

/// Delays of 30 to 330 ms from a fixed linear congruential sequence: the same moments on every
/// run of a test.
fn delays(seed: u64) -> impl FnMut() -> Duration {
    let mut state = seed;
    move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        Duration::from_millis(30 + (state >> 33) % 300)
    }
}

// Both random-moment tests take enough steps that their signals come before the end on a
// machine twice as fast as this one (a 2-core AMD EPYC Zen 3 trains about 200 steps/s here, and
// 24 signals allow at most 8 s).
const RANDOM_MOMENT_STEPS: usize = 4000;

/// SIGKILL at 24 pseudo-random moments (during start-up, steps, validation and checkpoint
/// writes), each followed by `--resume`: the run ends with the weights of an uninterrupted one,
/// and `metrics.jsonl` holds every step exactly once.
#[test]
fn killed_at_random_moments_and_resumed_each_time_ends_as_a_straight_run() {
    let steps = RANDOM_MOMENT_STEPS;
    let straight = straight_run(steps);
    let s = Scratch::with_recipe(&resumable_recipe(steps));
    let mut next_delay = delays(0x2545_f491);
    let mut kills = 0;
    while kills < 24 {
        let mut child = spawn_train(&s, &[]);
        std::thread::sleep(next_delay());
        if child.try_wait().unwrap().is_some() {
            break; // finished before the kill: the machine is faster than planned
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
    }
    assert!(
        kills >= 20,
        "only {kills} kills happened before the run finished"
    );
    let reached = latest_step(&s).unwrap_or(0);
    assert!(reached < steps as u64, "the kills left nothing to resume");
    resume_to_the_end_as(&s, &straight, steps);
}

/// SIGTERM at 24 pseudo-random moments, each followed by `--resume`: every stop that found
/// training under way exits 143 with the checkpoint of the last step logged (no step lost; one
/// during start-up ends the process before training), and the run ends as an uninterrupted one.
#[test]
fn stopped_at_random_moments_and_resumed_each_time_ends_as_a_straight_run() {
    let steps = RANDOM_MOMENT_STEPS;
    let straight = straight_run(steps);
    let s = Scratch::with_recipe(&resumable_recipe(steps));
    let mut next_delay = delays(0x9e37_79b9);
    let (mut signals, mut graceful) = (0, 0);
    while signals < 24 {
        let child = spawn_train(&s, &[]);
        std::thread::sleep(next_delay());
        send(&child, "TERM");
        signals += 1;
        let (status, stderr) = finish(child);
        if status.success() {
            break; // finished before the signal: the machine is faster than planned
        }
        if stderr.contains("stopped training after step") {
            assert_eq!(status.code(), Some(143), "{stderr}");
            assert_eq!(latest_step(&s), logged_steps(&s).last().copied());
            graceful += 1;
        } else {
            // Before the loop listens, SIGTERM's default action ends the process.
            assert_eq!(status.signal(), Some(15), "{status}: {stderr}");
        }
    }
    eprintln!("{graceful} of {signals} stops came during training");
    assert!(
        graceful >= 16,
        "only {graceful} of {signals} stops came during training"
    );
    resume_to_the_end_as(&s, &straight, steps);
}

/// A stop saves BatchNorm's running statistics as the step it finished left them (the stop's
/// save has no validation pass before it, which would bring them up to date), so the stopped
/// and resumed run ends as a straight one.
#[test]
fn a_stopped_batch_norm_model_resumes_to_the_straight_run() {
    // Few steps after the stop, or the running statistics forget the difference (momentum 0.1).
    let steps = 60;
    // Validated and saved at the end only.
    let apart = [
        "--set",
        "train.eval_interval=1000",
        "--set",
        "train.save_interval=1000",
    ];
    let straight = Scratch::batch_norm(steps);
    let mut train = vec!["train", "recipe.yaml", "--quiet"];
    train.extend(apart);
    straight.ok(&train);
    let s = Scratch::batch_norm(steps);
    let mut child = spawn_train(&s, &apart);
    wait_for_steps(&s, &mut child, 3);
    send(&child, "TERM");
    let (status, stderr) = finish(child);
    assert_eq!(status.code(), Some(143), "{stderr}");
    let stopped = latest_step(&s).unwrap();
    assert!(stopped < steps as u64, "stopped at step {stopped}");
    let mut resume = vec!["train", "recipe.yaml", "--resume", "--quiet"];
    resume.extend(apart);
    s.ok(&resume);
    same_weights(
        &final_weights(&straight, steps as u64),
        &final_weights(&s, steps as u64),
    )
    .expect("the stopped and resumed run ends with the straight run's weights and statistics");
}

/// A write that fails mid-save (EFBIG here, from a file-size limit between the sizes of the
/// model and of the optimiser state, where a full disk would give ENOSPC) ends the run with exit
/// 1 and a message naming the last good checkpoint, which stays loadable; no half-written folder
/// is left behind, and the run resumes once the space is there.
#[test]
fn a_failed_checkpoint_write_ends_the_run_and_keeps_the_last_checkpoint() {
    let s =
        Scratch::with_recipe(&resumable_recipe(20).replace("  keep_last: 1\n", "  keep_last: 5\n"));
    s.ok(&[
        "train",
        "recipe.yaml",
        "--quiet",
        "--set",
        "train.max_steps=10",
    ]);
    let good = checkpoint_dir(&s, 10);
    let size = |name: &str| std::fs::metadata(good.join(name)).unwrap().len();
    let (model, optimizer) = (size("model.safetensors"), size("optimizer.bpk"));
    assert!(
        optimizer > model + 4096,
        "model {model}, optimiser {optimizer} bytes"
    );
    // bash's `ulimit -f` counts KiB; an ignored SIGXFSZ turns the limit into a write error.
    let command = format!(
        "trap '' XFSZ; ulimit -f {}; exec '{}' train recipe.yaml --resume --quiet",
        (model + optimizer) / 2 / 1024,
        env!("CARGO_BIN_EXE_nlpkit")
    );
    let out = Command::new("bash")
        .args(["-c", &command])
        .current_dir(s.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot save the checkpoint of step 15")
            && stderr.contains("the last complete checkpoint is")
            && stderr.contains("step_00000010"),
        "{stderr}"
    );
    let mut left: Vec<String> = std::fs::read_dir(s.path().join("exp/checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["step_00000005", "step_00000010"]);
    s.ok(&["eval", "exp", "--split", "valid"]);
    s.ok(&["train", "recipe.yaml", "--resume", "--quiet"]);
    assert_eq!(logged_steps(&s), (1..=20).collect::<Vec<_>>());
}

fn corrupt_one_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(path, bytes).unwrap();
}

/// A damaged newest checkpoint is skipped by `--resume` with a warning naming it, and refused,
/// naming its file, when asked for by `--checkpoint`.
#[test]
fn a_damaged_checkpoint_is_found_before_it_is_loaded() {
    let s =
        Scratch::with_recipe(&resumable_recipe(15).replace("  keep_last: 1\n", "  keep_last: 3\n"));
    s.ok(&["train", "recipe.yaml", "--quiet"]);
    let newest = checkpoint_dir(&s, 15);
    corrupt_one_byte(&newest.join("model.safetensors"));

    let out = s.run(&["eval", "exp", "--checkpoint", newest.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("model.safetensors") && stderr.contains("SHA-256"),
        "{stderr}"
    );

    // A truncated optimiser state in the same checkpoint: found by its size.
    let optimizer = newest.join("optimizer.bpk");
    truncate_to_a_fraction(&optimizer, 2);

    let out = s.run(&[
        "train",
        "recipe.yaml",
        "--resume",
        "--set",
        "train.max_steps=20",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains("warning") && stderr.contains("step_00000015"),
        "{stderr}"
    );
    assert!(stdout.contains("step_00000010 (step 10)"), "{stdout}");
}

/// Two runs with the same seed write byte-identical weight and optimiser files.
#[test]
fn equal_runs_write_byte_identical_checkpoints() {
    let (a, b) = (straight_run(10), straight_run(10));
    for file in ["model.safetensors", "optimizer.bpk"] {
        let (x, y) = (
            checkpoint_dir(&a, 10).join(file),
            checkpoint_dir(&b, 10).join(file),
        );
        assert!(
            std::fs::read(&x).unwrap() == std::fs::read(&y).unwrap(),
            "{file} differs"
        );
    }
}
