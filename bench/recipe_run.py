"""A short timed run of the shakespeare_char recipe, shared by the benchmark scripts."""
import json
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "recipes/shakespeare_char/conf/train.yaml")


def train_windows(command_prefix, binary, steps, workdir, tag, overrides=(), run=None):
    """Train the recipe for `steps` (a log line every 10, no evaluation or checkpoint) under
    `command_prefix` (e.g. mpirun), and return its train records but the first (start-up).
    `run(cmd, cwd=...)` runs the command (default: subprocess.run, failing on an error)."""
    out = os.path.join(workdir, f"exp_{tag}")
    subprocess.run(["rm", "-rf", out], check=True)
    cmd = list(command_prefix) + [
        binary, "train", RECIPE, "--quiet",
        "--set", f"output_dir={out}",
        "--set", f"data.prepared_dir={os.path.join(workdir, 'prepared')}",
        "--set", f"train.max_steps={steps}",
        "--set", "train.log_interval=10",
        "--set", "train.eval_interval=100000",
        "--set", "train.save_interval=100000"] + list(overrides)
    cwd = os.path.dirname(os.path.dirname(RECIPE))
    if run is None:
        subprocess.run(cmd, check=True, cwd=cwd)
    else:
        run(cmd, cwd=cwd)
    with open(os.path.join(out, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    return [r for r in records if r["split"] == "train"][1:]
