"""The Python environment the PyTorch side of the benchmarks runs in: `.venv-torch` at the
repository root with torch 2.9.0, numpy and tokenizers 0.22.1, created on first use."""
import os
import subprocess
import sys

from recipe_run import ROOT

VENV = os.path.join(ROOT, ".venv-torch")
PACKAGES = ["torch==2.9.0", "numpy", "tokenizers==0.22.1"]


def torch_python(path=None):
    """The venv's python; creates the venv and installs PACKAGES if it cannot import them."""
    python = path or os.path.join(VENV, "bin/python")
    check = [python, "-c", "import torch, numpy, tokenizers"]
    if os.path.exists(python) and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    if path:
        raise SystemExit(f"{python} cannot import torch, numpy and tokenizers")
    print(f"setting up {VENV} ({' '.join(PACKAGES)}; PyTorch is a large download)",
          file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    subprocess.run([os.path.join(VENV, "bin/pip"), "install", *PACKAGES], check=True)
    return python
