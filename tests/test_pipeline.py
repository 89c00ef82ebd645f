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

from cifarbench.schema import ProfileDetails, ProfileMetrics, TrainDetails, TrainMetrics, read_record

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
        live = repo / "metrics/train" / model
        train = read_record(live / "metrics.json", TrainMetrics)  # the headline replaced DVCLive's
        details = read_record(repo / f"metrics/details/train/{model}.json", TrainDetails)
        prof = read_record(repo / f"metrics/profile/{model}.json", ProfileMetrics)
        prof_details = read_record(repo / f"metrics/details/profile/{model}.json", ProfileDetails)
        assert train.train_time_s > 0 and details.epochs == 1 and details.params > 0
        assert details.per_run[0].test_accuracy == train.test_accuracy
        assert details.peak_memory_mb > 0 and details.peak_memory_kind == "host_peak_rss"
        assert details.environment.device == "cpu" and details.environment.torch_version
        for env in (details.environment, prof_details.environment):  # what each timing ran with
            assert env.threads == 1 and (env.host_load_1m is None or env.host_load_1m >= 0)
        assert prof.throughput_img_s > 0 and prof.flops_per_image > 0
        assert prof.params == details.params
        lat = prof_details.latency_ms
        assert 0 < lat.p50 <= lat.p90 <= lat.p99 and lat.p50 == prof.latency_ms_p50
        # DVCLive's per-epoch logs (1 epoch, evaluated) and the evaluated curves
        for name in ("train_loss", "lr", "train_img_s", "test_accuracy"):
            rows = (live / f"plots/metrics/{name}.tsv").read_text().splitlines()
            assert rows[0].split("\t") == ["step", name] and len(rows) == 2, rows
        curves = json.loads((live / "plots/custom/curves.json").read_text())
        assert [c["epoch"] for c in curves] == [1.0]
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
                "timing_breakdown", "training_curves"):
        assert (repo / f"plots/figures/{png}.png").stat().st_size > 10_000


def test_metrics_show_lists_the_headline_only(repo: Path) -> None:
    shown = json.loads(dvc("metrics", "show", "--json", cwd=repo))
    files = next(iter(shown.values()))["data"]
    assert set(files) == {"metrics/data.json", "metrics/train/cnn/metrics.json",
                          "metrics/train/vit/metrics.json", "metrics/profile/cnn.json",
                          "metrics/profile/vit.json"}, set(files)
    columns = [k for f in files.values() for k in f["data"]]
    assert len(columns) <= 30, columns
    assert all(isinstance(v, (int, float)) or v is None
               for f in files.values() for v in f["data"].values())


def test_exp_show_fits_the_column_budget(repo: Path) -> None:
    """The issue's goal: at most 30 metric columns in `dvc exp show`."""
    rows = json.loads(dvc("exp", "show", "--json", cwd=repo))
    metric_files = rows[0]["data"]["metrics"]  # the workspace row
    columns = {(f, k) for f, d in metric_files.items() for k in d["data"]}
    assert 0 < len(columns) <= 30, sorted(columns)


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
    proc = subprocess.run(
        [sys.executable, str(repo / "stages/train.py"), "--params", str(bad), "--model", "vit",
         "--data", str(repo / "data/prepared"), "--weights", str(tmp_path / "w.pt"),
         "--live", str(tmp_path / "live"), "--details", str(tmp_path / "d.json"),
         "--confusion", str(tmp_path / "x.csv")],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "models.vit.train.epochs" in proc.stderr and "= 0" in proc.stderr
    assert not list(tmp_path.glob("*.json")) and not list(tmp_path.glob("*.pt"))
    assert not (tmp_path / "live").exists()
