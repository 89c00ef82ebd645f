"""The real pipeline: `dvc repro` in a temporary git repository on tiny generated data.

Checks DVC semantics, not accuracy: every stage runs and writes its metrics, a second repro
runs nothing, and a models.vit edit reruns exactly train@vit, profile@vit and report.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dvc_project import ALL_STAGES, dvc, make_imagefolder, make_project, stages_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("pipeline")
    images = work / "bee-wings"  # named in the captions: report.data_label stays null
    make_imagefolder(images)
    repo = make_project(work / "repo", str(images))
    out = dvc("repro", cwd=repo)
    assert stages_run(out) == ALL_STAGES, out
    return repo


def test_repro_writes_every_metric(repo: Path) -> None:
    for model in ("cnn", "vit"):
        train = json.loads((repo / f"metrics/train/{model}.json").read_text())
        prof = json.loads((repo / f"metrics/profile/{model}.json").read_text())
        assert 0.0 <= train["test_accuracy"] <= 1.0
        assert train["train_time_s"] > 0 and train["epochs"] == 1 and train["params"] > 0
        assert train["peak_memory_mb"] > 0 and train["peak_memory_kind"] == "host_peak_rss"
        assert train["device"] == "cpu" and train["torch_version"]
        assert prof["throughput_img_s"] > 0 and prof["flops_per_image"] > 0
        lat = prof["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
        curves = (repo / f"plots/curves/{model}.csv").read_text().splitlines()
        assert curves[0] == "epoch,train_loss,test_accuracy,elapsed_s" and len(curves) == 2
        confusion = (repo / f"plots/confusion/{model}.csv").read_text().splitlines()
        assert confusion[0] == "actual,predicted" and len(confusion) == 1 + 3 * 6
    report = json.loads((repo / "metrics/report.json").read_text())
    assert set(report["models"]) == {"cnn", "vit"}
    assert report["data"]["label"] == "bee-wings"
    summary = (repo / "metrics/summary.md").read_text()
    assert "Precision: train fp32; inference " in summary  # inference: each headline variant
    assert "Data: bee-wings, 48 train / 18 test images, 16×16 px." in summary
    for text in (summary, (repo / "metrics/report.json").read_text()):
        assert "cifar" not in text.lower()
    for png in ("performance_comparison", "memory_comparison", "efficiency_metrics",
                "timing_breakdown"):
        assert (repo / f"plots/figures/{png}.png").stat().st_size > 10_000


def test_metrics_show_lists_both_models(repo: Path) -> None:
    out = dvc("metrics", "show", "--json", cwd=repo)
    shown = json.loads(out)
    files = next(iter(shown.values()))["data"]
    assert {"metrics/train/cnn.json", "metrics/train/vit.json",
            "metrics/profile/cnn.json", "metrics/profile/vit.json"} <= set(files)


def test_second_repro_runs_nothing(repo: Path) -> None:
    assert "up to date" in dvc("status", cwd=repo).lower() or \
        dvc("status", cwd=repo).strip() == "Data and pipelines are up to date."
    assert stages_run(dvc("repro", cwd=repo)) == set()


def test_vit_edit_reruns_only_vit_and_report(repo: Path) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["models"]["vit"]["train"]["lr"] = 0.002
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = dvc("status", cwd=repo)
    assert "train@vit" in status
    for other in ("train@cnn", "profile@cnn", "download", "prepare"):
        assert other not in status, status
    assert stages_run(dvc("repro", cwd=repo)) == {"train@vit", "profile@vit", "report"}
    assert stages_run(dvc("repro", cwd=repo)) == set()


def test_bad_param_fails_fast_without_outputs(repo: Path, tmp_path: Path) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["models"]["vit"]["train"]["epochs"] = 0
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(params))
    out_metrics = tmp_path / "m.json"
    proc = subprocess.run(
        [sys.executable, str(repo / "stages/train.py"), "--params", str(bad), "--model", "vit",
         "--data", str(repo / "data/prepared"), "--weights", str(tmp_path / "w.pt"),
         "--metrics", str(out_metrics), "--curves", str(tmp_path / "c.csv"),
         "--run-curves", str(tmp_path / "r.csv"), "--confusion", str(tmp_path / "x.csv")],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "models.vit.train.epochs" in proc.stderr and "= 0" in proc.stderr
    assert not list(tmp_path.glob("*.json")) and not list(tmp_path.glob("*.pt"))
