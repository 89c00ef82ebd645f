"""The prepared GPU command cannot rot: its --dry-run (same steps, CPU, tiny data) runs green."""

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("prepare", "train_cnn", "profile_cnn", "train_vit", "profile_vit_and_report", "status",
         "bench_cnn", "bench_vit")


@pytest.mark.slow
def test_gpu_run_dry_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", str(ROOT / "benchmarks/gpu_run.sh"), "--dry-run", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    steps = (out / "steps.log").read_text()
    assert "FAILED" not in steps and "skipped" not in steps, steps
    assert all(f"{name}: done" in steps for name in STEPS), steps
    with tarfile.open(out / "logs.tgz") as tar:
        status = tar.extractfile("logs/status.log")
        assert status is not None and b"Data and pipelines are up to date" in status.read()
    summary = (out / "summary.md").read_text()
    assert "- **cnn** on" in summary and "- **vit** on" in summary
    assert "compile compiled" in summary  # the dry run compiles the CNN, as the GPU run does
    assert "our loop (device-resident data" in summary
    with tarfile.open(out / "results.tgz") as tar:
        names = set(tar.getnames())
    assert {"dvc.lock", "params.yaml", "metrics/train/cnn/metrics.json", "metrics/profile/vit.json",
            "metrics/summary.md"} <= names
    assert (out / "cnn.pt").stat().st_size > 0 and (out / "vit.pt").stat().st_size > 0
    assert len(list(out.iterdir())) <= 8  # what the device tool brings back
