"""A real copy of this project for the slow tests: a temporary git + DVC repository with the
project's dvc.yaml, stages and src, tiny generated ImageFolder data and tiny params.

Every command runs with the test's Python first on ``PATH`` and ``PYTHONPATH=src``, relative:
a stage imports the ``src/`` of the copy it runs in (the repository, or DVC's temporary copy
for ``dvc exp run --temp`` and queued experiments), not an installed package.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml
from PIL import Image
from project_params import raw_params

ROOT = Path(__file__).resolve().parents[1]

# Overrides of the project's own params.yaml (every key DVC tracks must exist in the file).
TINY_OVERRIDES = {
    "device": "cpu",
    "precision": "fp32",
    "threads": 1,  # more than the cores is refused; CI runners may have one
    "data": {"image_size": 16},
    "models": {
        "cnn": {"arch": {"widths": [8, 16, 16]},
                "train": {"epochs": 1, "batch_size": 16, "lr": 0.1, "runs": 1,
                          "target_accuracy": 0.2, "breakdown_steps": 1, "compile": False}},
        "vit": {"arch": {"patch_size": 4, "dim": 16, "depth": 1, "heads": 2},
                "train": {"epochs": 1, "batch_size": 16, "runs": 1, "target_accuracy": 0.2,
                          "breakdown_steps": 1, "eval_every": 1, "compile": False}},
    },
    "profile": {"batch_sizes": [1, 4], "warmup_iters": 1, "iters": 3, "latency_runs": 10,
                "precisions": ["fp32"], "compile": False, "max_seconds_per_config": 2},
}
ALL_STAGES = {"download", "prepare", "train@cnn", "train@vit", "profile@cnn", "profile@vit",
              "report"}


def make_imagefolder(root: Path, classes=("ant", "bee", "cat"), n_train=16, n_test=6) -> None:
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for k, cls in enumerate(classes):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 60, (16, 16, 3), dtype=np.uint8)
                img[..., k] += 150  # each class has its own dominant channel: learnable
                Image.fromarray(img).save(d / f"{i}.png")


def env() -> dict[str, str]:
    out = dict(os.environ)
    out["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{out['PATH']}"
    out["PYTHONPATH"] = "src"
    out.pop("DVC_SITE_CACHE_DIR", None)
    return out


def run(args: list[str], cwd: Path) -> str:
    proc = subprocess.run(args, cwd=cwd, env=env(), capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{out}"
    return out


def dvc(*args: str, cwd: Path) -> str:
    return run([sys.executable, "-m", "dvc", *args], cwd)


def git(*args: str, cwd: Path) -> str:
    return run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd)


def stages_run(repro_output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", repro_output))


def make_project(repo: Path, source: str) -> Path:
    """``repo`` as a git + DVC repository of this project reading ``source``; nothing run."""
    repo.mkdir()
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, repo / name)
    shutil.copytree(ROOT / "stages", repo / "stages")
    shutil.copytree(ROOT / "src", repo / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    params = raw_params(TINY_OVERRIDES)
    params["data"]["source"] = source
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git("init", "-q", cwd=repo)
    git("commit", "-q", "--allow-empty", "-m", "init", cwd=repo)
    dvc("init", "-q", cwd=repo)
    dvc("config", "core.analytics", "false", cwd=repo)
    return repo
