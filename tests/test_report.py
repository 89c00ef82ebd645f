"""Tests of the report stage on synthetic metrics written exactly as the contract's schemas say.

The inputs are made by :func:`write_synthetic_inputs` with the project's own writers
(``cifarbench.io``), so the report reads what the train and profile stages write.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text
from PIL import Image
from project_params import LIMITS, params_with, prep, raw_params

from cifarbench.config import Params, parse_params
from cifarbench.data import fetch_source, prepare_dataset
from cifarbench.errors import UserError
from cifarbench.io import read_json, write_csv, write_json
from cifarbench.report import ReportPaths, load_inputs, make_report, write_report
from cifarbench.report.figures import confusion_matrix, pareto_front
from cifarbench.report.tables import caption, summary_markdown
from cifarbench.schema import (
    CurvePoint,
    DataDetails,
    DataMetrics,
    Environment,
    LatencySummary,
    ProfileDetails,
    ProfileMetrics,
    RunRecord,
    StepBreakdown,
    TrainDetails,
    TrainMetrics,
    VariantSummary,
    write_record,
)

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["airplane", "cat", "ship"]
ENV = {"device": "cpu", "device_name": "Test CPU 9000", "torch_version": "2.14.1",
       "cuda_version": None, "cpu_threads": 2}
DATA_LABEL = "synthetic-shapes"  # the name the prepare stage gave the data (metrics/data.json)

# Two models that split the wins: the CNN is more accurate, faster to train and lighter on
# memory; the ViT has fewer parameters and a lower batch-1 latency, and never reaches the target.
MODELS: dict[str, dict[str, Any]] = {
    "cnn": dict(kind="cnn", acc=0.912, acc_std=0.004, runs=3, train_s=31.5, train_s_std=0.8, ttt=14.2,
                params=1_970_000, train_mem=910.0, infer_mem=420.0, thr=21_500.0, lat_median=1.10,
                flops=0.38e9, step={"data": 1.5, "forward": 9.0, "backward": 17.0, "optimizer": 2.5},
                eval_s=1.9, failed=[], train_dtype="bf16", variant="autocast-bf16/channels_last"),
    "vit": dict(kind="vit", acc=0.853, acc_std=0.011, runs=3, train_s=62.0, train_s_std=1.4, ttt=None,
                params=1_210_000, train_mem=1250.0, infer_mem=610.0, thr=9_800.0, lat_median=0.70,
                flops=0.62e9, step={"data": 1.4, "forward": 15.0, "backward": 31.0, "optimizer": 1.8},
                eval_s=3.1, failed=[1024], train_dtype="bf16", variant="fp32"),
}


def params_for(names: list[str], data_label: str | None = None) -> Params:
    """params.yaml with only the models ``names``."""
    train = {"epochs": 5, "batch_size": 512, "optimizer": "sgd", "lr": 0.2}
    raw = raw_params({"models": {n: {"train": train} for n in names},
                      "report": {"dpi": 150, "data_label": data_label}})
    return parse_params({**raw, "models": {n: raw["models"][n] for n in names}})


def synthetic_env(dtype: str) -> Environment:
    return Environment(**ENV, dtype=dtype, tf32=False, cpu_count=2, python_version="3.11.7",
                       threads=2, host_load_1m=1.5, oversubscribed=False)


def write_synthetic_inputs(root: Path, models: dict[str, dict[str, Any]]) -> ReportPaths:
    """Write every input of the report under ``root``, through the schema's own models."""
    rng = np.random.default_rng(0)
    paths = ReportPaths(data_metrics=root / "metrics/data.json",
                        data_details=root / "metrics/details/data.json",
                        train_live=root / "metrics/train",
                        train_details=root / "metrics/details/train",
                        profile_metrics=root / "metrics/profile",
                        profile_details=root / "metrics/details/profile",
                        confusion=root / "plots/confusion", throughput=root / "plots/throughput",
                        latency=root / "plots/latency")
    write_record(paths.data_metrics, DataMetrics(num_classes=3, train_images=300, test_images=90,
                                                 source_train_images=300))
    write_record(paths.data_details, DataDetails(
        label=DATA_LABEL, image_size=32, train_class_counts={c: 100 for c in CLASSES},
        test_class_counts={c: 30 for c in CLASSES}))
    for name, m in models.items():
        live = paths.train_live / name
        write_record(live / "metrics.json", TrainMetrics(
            test_accuracy=m["acc"], test_accuracy_std=m["acc_std"], train_time_s=m["train_s"],
            time_to_target_s=m["ttt"]))
        write_record(paths.train_details / f"{name}.json", TrainDetails(
            model=name, kind=m["kind"], params=m["params"], epochs=5, batch_size=512,
            runs=m["runs"], tta="flip", target_accuracy=0.9,
            runs_reaching_target=0 if m["ttt"] is None else m["runs"], test_loss=0.4,
            train_time_s_std=m["train_s_std"], eval_time_s=m["eval_s"], warmup_time_s=1.0,
            train_throughput_img_s=300 * 5 / m["train_s"], peak_memory_mb=m["train_mem"],
            peak_memory_kind="host_peak_rss", compile_mode="eager", compile_fallback_reason=None,
            compile_time_s=0.0, compile_recompiles=0, breakdown_ms=StepBreakdown(**m["step"]),
            environment=synthetic_env(m["train_dtype"]),
            per_run=[RunRecord(seed=i, test_accuracy=m["acc"], test_loss=0.4,
                               train_time_s=m["train_s"], time_to_target_s=m["ttt"],
                               eval_time_s=m["eval_s"], train_throughput_img_s=100.0,
                               peak_memory_mb=m["train_mem"]) for i in range(m["runs"])]))
        curves = [CurvePoint(epoch=e, train_loss=2.2 * (1.1 - m["acc"]) ** (e / 2),
                             test_accuracy=m["acc"] * (1 - 0.5**e), elapsed_s=m["train_s"] * e / 5)
                  for e in range(1, 6)]
        write_json_list(live / "plots/custom/curves.json", [c.model_dump() for c in curves])
        write_json_list(live / "plots/custom/run_curves.json",
                        [{**c.model_dump(), "run": r, "test_accuracy": c.test_accuracy * (1 - 0.01 * r)}
                         for r in range(m["runs"]) for c in curves])

        latency = m["lat_median"] * rng.lognormal(0.0, 0.15, size=200)
        p50, p90, p99 = (float(np.percentile(latency, q)) for q in (50, 90, 99))
        batch_sizes = [b for b in (1, 16, 64, 256, 1024) if b not in m["failed"]]
        write_record(paths.profile_metrics / f"{name}.json", ProfileMetrics(
            params=m["params"], flops_per_image=m["flops"], train_flops_per_image=3 * m["flops"],
            throughput_img_s=m["thr"], latency_ms_p50=p50, latency_ms_p99=p99,
            peak_memory_mb=m["infer_mem"]))
        write_record(paths.profile_details / f"{name}.json", ProfileDetails(
            model=name, throughput_batch_size=batch_sizes[-1],
            latency_ms=LatencySummary(p50=p50, p90=p90, p99=p99, mean=float(latency.mean())),
            macs_per_image=m["flops"] / 2, param_memory_mb=m["params"] * 4 / 2**20,
            checkpoint_mb=m["params"] * 4 / 2**20 + 0.1, peak_memory_kind="host_peak_rss",
            peak_memory_reserved_mb=None, rss_increase_mb=None, headline_variant=m["variant"],
            layout="contiguous", compile_mode="eager", failed_batch_sizes=m["failed"],
            variants={m["variant"]: VariantSummary(
                throughput_img_s=m["thr"], throughput_batch_size=batch_sizes[-1],
                latency_p50_ms=p50, latency_p90_ms=p90, compile_time_s=None,
                peak_memory_mb=m["infer_mem"], failed_batch_sizes=m["failed"], rel_error=0.0,
                correct=True)},
            environment=synthetic_env("fp32" if m["variant"].startswith("fp32") else "bf16")))
        write_csv(paths.throughput / f"{name}.csv", [
            {"batch_size": b, "throughput_img_s": m["thr"] * b / (b + 20), "step_ms_median": 1000 * b / m["thr"],
             "step_ms_iqr": 0.1, "peak_memory_mb": m["infer_mem"] * (0.3 + 0.7 * b / batch_sizes[-1])}
            for b in batch_sizes])
        write_csv(paths.latency / f"{name}.csv", [{"run": i, "latency_ms": float(v)} for i, v in enumerate(latency)])
        # run 0 predictions: the diagonal share roughly matches the model's accuracy
        rows = []
        for actual in CLASSES:
            for i in range(30):
                wrong = i >= round(30 * m["acc"])
                rows.append({"actual": actual,
                             "predicted": CLASSES[(CLASSES.index(actual) + 1) % 3] if wrong else actual})
        write_csv(paths.confusion / f"{name}.csv", rows)
    return paths


def write_json_list(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows))


def run_report(root: Path, names: list[str]) -> tuple[ReportPaths, Path]:
    paths = write_synthetic_inputs(root, {n: MODELS[n] for n in names})
    report = make_report(load_inputs(names, paths), params_for(names))
    write_report(report, figures_dir=root / "plots/figures", report_path=root / "metrics/report.json",
                 summary_path=root / "metrics/summary.md")
    return paths, root


@pytest.fixture(scope="module")
def two_models(tmp_path_factory) -> tuple[ReportPaths, Path]:
    return run_report(tmp_path_factory.mktemp("report2"), ["cnn", "vit"])


def figure_names(names: list[str]) -> list[str]:
    return ["performance_comparison.png", "memory_comparison.png", "efficiency_metrics.png",
            "timing_breakdown.png", "training_curves.png", *[f"confusion_{n}.png" for n in names]]


def check_png(path: Path) -> None:
    with Image.open(path) as img:
        assert img.format == "PNG", path
        width, height = img.size
        assert 600 <= width <= 5000 and 450 <= height <= 5000, (path.name, img.size)
        assert min(img.info["dpi"]) >= 149.5, (path.name, img.info["dpi"])
        img.load()
        pixels = np.asarray(img.convert("L"))
    # a drawn figure, not a blank canvas: plenty of non-white pixels
    assert (pixels < 200).mean() > 0.01, path.name


# ----------------------------------------------------------------------------------- figures


def test_every_figure_is_a_valid_png(two_models):
    _, root = two_models
    figures = root / "plots/figures"
    assert sorted(p.name for p in figures.iterdir()) == sorted(figure_names(["cnn", "vit"]))
    for name in figure_names(["cnn", "vit"]):
        check_png(figures / name)


def test_one_model_only(tmp_path):
    _, root = run_report(tmp_path, ["vit"])
    for name in figure_names(["vit"]):
        check_png(root / "plots/figures" / name)
    report = read_json(root / "metrics/report.json")
    assert list(report["models"]) == ["vit"]
    assert report["models"]["vit"]["time_to_target_s"] is None
    summary = (root / "metrics/summary.md").read_text()
    assert "**" not in summary.split("\n\n")[0]  # nothing to win against
    assert "not reached" in summary


def test_single_run_has_no_error_bars_or_std(tmp_path):
    one_run = {"cnn": {**MODELS["cnn"], "runs": 1, "acc_std": 0.0, "train_s_std": 0.0}}
    paths = write_synthetic_inputs(tmp_path, one_run)
    report = make_report(load_inputs(["cnn"], paths), params_for(["cnn"]))
    assert "±" not in report.summary
    assert report.numbers["models"]["cnn"]["test_accuracy_std"] == 0.0


# ------------------------------------------------------------------------------ report.json

# report key -> (file kind, key path in that file)
SOURCES = {
    "test_accuracy": ("train", "test_accuracy"), "test_accuracy_std": ("train", "test_accuracy_std"),
    "train_time_s": ("train", "train_time_s"), "train_time_s_std": ("train_details", "train_time_s_std"),
    "time_to_target_s": ("train", "time_to_target_s"),
    "target_accuracy": ("train_details", "target_accuracy"),
    "params": ("profile", "params"), "epochs": ("train_details", "epochs"),
    "runs": ("train_details", "runs"),
    "peak_train_memory_mb": ("train_details", "peak_memory_mb"),
    "eval_time_s": ("train_details", "eval_time_s"),
    "step_data_ms": ("train_details", "breakdown_ms.data"),
    "step_forward_ms": ("train_details", "breakdown_ms.forward"),
    "step_backward_ms": ("train_details", "breakdown_ms.backward"),
    "step_optimizer_ms": ("train_details", "breakdown_ms.optimizer"),
    "peak_inference_memory_mb": ("profile", "peak_memory_mb"),
    "param_memory_mb": ("profile_details", "param_memory_mb"),
    "throughput_img_s": ("profile", "throughput_img_s"),
    "throughput_batch_size": ("profile_details", "throughput_batch_size"),
    "latency_p50_ms": ("profile", "latency_ms_p50"), "latency_p90_ms": ("profile_details", "latency_ms.p90"),
    "latency_p99_ms": ("profile", "latency_ms_p99"), "flops_per_image": ("profile", "flops_per_image"),
    "failed_batch_sizes": ("profile_details", "failed_batch_sizes"),
}


def model_files(paths: ReportPaths, name: str) -> dict[str, Path]:
    """The JSON files of one model, by kind."""
    return {"train": paths.train_live / name / "metrics.json",
            "train_details": paths.train_details / f"{name}.json",
            "profile": paths.profile_metrics / f"{name}.json",
            "profile_details": paths.profile_details / f"{name}.json"}


def dig(data: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        data = data[part]
    return data


def test_report_numbers_equal_the_metrics_read(two_models):
    paths, root = two_models
    report = read_json(root / "metrics/report.json")
    assert list(report["models"]) == ["cnn", "vit"]
    for name, numbers in report["models"].items():
        files = {kind: read_json(path) for kind, path in model_files(paths, name).items()}
        for key, (kind, source_key) in SOURCES.items():
            assert numbers[key] == dig(files[kind], source_key), (name, key)
        gflops = files["profile"]["flops_per_image"] / 1e9
        assert numbers["accuracy_per_gflop"] == pytest.approx(files["train"]["test_accuracy"] / gflops)
        assert numbers["accuracy_per_param_mb"] == pytest.approx(
            files["train"]["test_accuracy"] / files["profile_details"]["param_memory_mb"])
        assert numbers["step_total_ms"] == pytest.approx(
            sum(files["train_details"]["breakdown_ms"].values()))
    assert report["environment"] == {**ENV, "host_load_1m": 1.5, "oversubscribed": False}
    assert report["precision"] == {"train": {"cnn": "bf16", "vit": "bf16"},
                                   "inference": {"cnn": "autocast-bf16/channels_last",
                                                 "vit": "fp32"}}
    assert report["data"] == {"label": DATA_LABEL, "num_classes": 3, "image_size": 32,
                              "train_images": 300, "test_images": 90}
    assert report["params"] == params_for(["cnn", "vit"]).model_dump(mode="json")


def test_environment_lists_every_value_when_files_disagree(tmp_path):
    paths = write_synthetic_inputs(tmp_path, {"cnn": MODELS["cnn"], "vit": MODELS["vit"]})
    vit = read_json(paths.profile_details / "vit.json")
    vit["environment"]["device_name"] = "Other GPU"
    write_json(paths.profile_details / "vit.json", vit)
    report = make_report(load_inputs(["cnn", "vit"], paths), params_for(["cnn", "vit"]))
    assert report.numbers["environment"]["device_name"] == "Test CPU 9000 | Other GPU"
    assert "Test CPU 9000 | Other GPU" in report.summary


# ------------------------------------------------------------------------------- summary.md


def parse_summary(text: str) -> tuple[list[str], dict[str, list[str]]]:
    lines = [line for line in text.splitlines() if line.startswith("|")]
    split = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    header, rows = split[0], split[2:]
    return header, {row[0]: row[1:] for row in rows}


def test_summary_marks_the_right_winners(two_models):
    _, root = two_models
    header, rows = parse_summary((root / "metrics/summary.md").read_text())
    expected = {  # column header prefix -> winner: higher accuracy/throughput, lower time/memory/latency
        "Test accuracy": "cnn", "Train time": "cnn", "Time to 90%": "cnn", "Params": "vit",
        "Peak train memory": "cnn", "Peak inference memory": "cnn", "Throughput": "cnn",
        "Latency p50": "vit", "Latency p99": "vit", "GFLOPs": "cnn", "Accuracy per GFLOP": "cnn",
    }
    for prefix, winner in expected.items():
        col = next(i for i, h in enumerate(header[1:]) if h.startswith(prefix))
        bold = [name for name, cells in rows.items() if cells[col].startswith("**")]
        assert bold == [winner], (prefix, rows)
    assert rows["cnn"][0] == "**91.20 ± 0.40**"
    assert rows["vit"][header.index("Time to 90% (s)") - 1] == "not reached"


def figure_text(fig: Figure) -> str:
    """Every piece of text drawn in ``fig``, line breaks as spaces."""
    return " ".join(" ".join(t.get_text().split()) for t in fig.findobj(Text))


def test_summary_caption_names_device_precision_per_phase_and_data(two_models):
    _, root = two_models
    notes = (root / "metrics/summary.md").read_text().split("\n\n")[1]
    assert notes.startswith(
        "Measured on Test CPU 9000 (cpu, torch 2.14.1). Precision: train bf16; inference "
        "cnn autocast-bf16/channels_last, vit fp32. Data: synthetic-shapes, 300 train / 90 test "
        "images, 32×32 px.")


def test_figures_carry_the_summary_caption(tmp_path):
    paths = write_synthetic_inputs(tmp_path, {"cnn": MODELS["cnn"], "vit": MODELS["vit"]})
    report = make_report(load_inputs(["cnn", "vit"], paths), params_for(["cnn", "vit"]))
    assert caption(report.numbers) + "." in report.summary
    for name, fig in report.figures.items():
        assert caption(report.numbers) in figure_text(fig), name


def test_caption_names_each_models_training_precision_where_they_differ(tmp_path):
    paths = write_synthetic_inputs(tmp_path, {"cnn": MODELS["cnn"],
                                              "vit": {**MODELS["vit"], "train_dtype": "fp32"}})
    report = make_report(load_inputs(["cnn", "vit"], paths), params_for(["cnn", "vit"]))
    assert ("Precision: train cnn bf16, vit fp32; inference cnn autocast-bf16/channels_last, "
            "vit fp32.") in report.summary
    assert report.numbers["precision"]["train"] == {"cnn": "bf16", "vit": "fp32"}


def test_report_data_label_overrides_the_prepared_name(tmp_path):
    paths = write_synthetic_inputs(tmp_path, {"cnn": MODELS["cnn"]})
    report = make_report(load_inputs(["cnn"], paths), params_for(["cnn"], data_label="Shapes v2"))
    assert report.numbers["data"]["label"] == "Shapes v2"
    assert "Data: Shapes v2, 300 train" in report.summary
    assert all("Data: Shapes v2," in figure_text(fig) for fig in report.figures.values())
    assert DATA_LABEL not in report.summary


def test_own_imagefolder_is_named_and_cifar_named_nowhere(tmp_path):
    """The README's own-data example: the project's params.yaml, data.source at a folder."""
    rng = np.random.default_rng(0)
    images = tmp_path / "pollen-grains"
    for split, n in (("train", 6), ("test", 2)):
        for c in CLASSES:  # three of CIFAR-10's class names: still not CIFAR-10
            (images / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
                    images / split / c / f"{i}.png")
    raw = tmp_path / "data/raw"
    write_json(raw / "source.json", fetch_source(str(images), raw, log=io.StringIO(), limits=LIMITS))
    data = prepare_dataset(raw, **prep(image_size=8), log=io.StringIO(), limits=LIMITS)
    paths = write_synthetic_inputs(tmp_path, {"cnn": MODELS["cnn"], "vit": MODELS["vit"]})
    write_record(paths.data_metrics, data.metrics())
    write_record(paths.data_details, data.details())
    params = params_with({"data": {"source": str(images)}})
    assert params.report.data_label is None  # the project's default: no label to set

    report = make_report(load_inputs(list(params.models), paths), params)
    write_report(report, figures_dir=tmp_path / "plots/figures",
                 report_path=tmp_path / "metrics/report.json",
                 summary_path=tmp_path / "metrics/summary.md")
    texts = {name: figure_text(fig) for name, fig in report.figures.items()}
    texts["summary.md"] = (tmp_path / "metrics/summary.md").read_text()
    texts["report.json"] = (tmp_path / "metrics/report.json").read_text()
    for name, text in texts.items():
        assert "pollen-grains" in text, name
        assert "cifar" not in text.lower(), name
    assert "Data: pollen-grains, 18 train / 6 test images, 8×8 px" in texts["summary.md"]


def test_tied_values_share_the_win(tmp_path):
    tied = {"cnn": MODELS["cnn"], "vit": {**MODELS["vit"], "train_mem": MODELS["cnn"]["train_mem"]}}
    paths = write_synthetic_inputs(tmp_path, tied)
    report = make_report(load_inputs(["cnn", "vit"], paths), params_for(["cnn", "vit"]))
    assert report.numbers["winners"]["peak_train_memory_mb"] == ["cnn", "vit"]


# --------------------------------------------------------------------------------- helpers


def test_pareto_front():
    # (throughput, accuracy): b dominates c; a is most accurate, b fastest
    xs, ys = [100.0, 900.0, 500.0], [95.0, 90.0, 85.0]
    assert pareto_front(xs, ys, maximize_x=True) == [0, 1]
    # (training time, accuracy), lower time better: a is fastest and most accurate
    assert pareto_front([10.0, 30.0], [95.0, 90.0], maximize_x=False) == [0]


def test_confusion_matrix_is_row_normalised_with_class_names(two_models):
    paths, _ = two_models
    inputs = load_inputs(["cnn"], paths)
    matrix = confusion_matrix(inputs.models["cnn"], CLASSES)
    assert list(matrix.index) == CLASSES and list(matrix.columns) == CLASSES
    np.testing.assert_allclose(matrix.sum(axis=1), 100.0)
    assert matrix.loc["cat", "cat"] == pytest.approx(100 * 27 / 30)  # round(30 * 0.912) = 27 right
    assert matrix.loc["cat", "ship"] == pytest.approx(100 * 3 / 30)


# ----------------------------------------------------------------------------- bad inputs


def drop_key(path: Path, dotted: str) -> None:
    data = json.loads(path.read_text())
    node = data
    *parents, last = dotted.split(".")
    for part in parents:
        node = node[part]
    del node[last]
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("where, key", [
    ("train_details", "breakdown_ms.forward"),
    ("train", "time_to_target_s"),
    ("profile_details", "latency_ms.p99"),
    ("profile_details", "param_memory_mb"),
    ("data_details", "test_class_counts"),
    ("data_details", "label"),
])
def test_missing_key_names_file_and_key(tmp_path, where, key):
    paths = write_synthetic_inputs(tmp_path, {"cnn": MODELS["cnn"], "vit": MODELS["vit"]})
    target = (paths.data_details if where == "data_details" else model_files(paths, "vit")[where])
    drop_key(target, key)
    with pytest.raises(UserError, match=re.escape(f"{target}: key '{key}' is missing")):
        load_inputs(["cnn", "vit"], paths)


def test_missing_column_and_file_are_named(tmp_path):
    paths = write_synthetic_inputs(tmp_path, {"cnn": MODELS["cnn"]})
    throughput = paths.throughput / "cnn.csv"
    throughput.write_text("batch_size,throughput_img_s,step_ms_median,step_ms_iqr\n1,2.0,0.5,0.1\n")
    with pytest.raises(UserError, match=re.escape(f"{throughput}: column 'peak_memory_mb' is missing")):
        load_inputs(["cnn"], paths)
    paths = write_synthetic_inputs(tmp_path, {"cnn": MODELS["cnn"]})
    with pytest.raises(UserError, match=re.escape(
            f"{paths.train_details / 'vit.json'}: file not found")):
        load_inputs(["cnn", "vit"], paths)


@pytest.mark.parametrize("kind, mutate, message", [
    ("train", lambda d: d.update(test_accuracy="high"),
     "key 'test_accuracy' = 'high': Input should be a valid number"),
    ("train", lambda d: d.update(test_accuracy=93.1),
     "key 'test_accuracy' = 93.1: Input should be less than or equal to 1"),
    ("train", lambda d: d.update(epochs=3),
     "key 'epochs' is not expected here (written by another version of the code?)"),
    ("train_details", lambda d: d.update(model="vit"),
     "key 'model' = 'vit': expected 'cnn' (the file name)"),
])
def test_wrong_values_are_named(tmp_path, kind, mutate, message):
    paths = write_synthetic_inputs(tmp_path, {"cnn": MODELS["cnn"]})
    path = model_files(paths, "cnn")[kind]
    data = read_json(path)
    mutate(data)
    write_json(path, data)
    with pytest.raises(UserError, match=re.escape(message)):
        load_inputs(["cnn"], paths)


def test_bad_curve_points_are_named(tmp_path):
    paths = write_synthetic_inputs(tmp_path, {"cnn": MODELS["cnn"]})
    curves = paths.train_live / "cnn/plots/custom/curves.json"
    curves.write_text(json.dumps([{"epoch": 1, "train_loss": 2.0, "test_accuracy": 0.5}]))
    with pytest.raises(UserError, match=re.escape(f"{curves}: data row 1, column 'elapsed_s'")):
        load_inputs(["cnn"], paths)


def test_bad_csv_cells_and_unknown_classes_are_named(tmp_path):
    paths = write_synthetic_inputs(tmp_path, {"cnn": MODELS["cnn"]})
    latency = paths.latency / "cnn.csv"
    latency.write_text("run,latency_ms\n0,1.5\n1,fast\n")
    with pytest.raises(UserError, match=re.escape(f"{latency}: column 'latency_ms', data row 2: 'fast'")):
        load_inputs(["cnn"], paths)
    latency.write_text("run,latency_ms\n0,1.5\n")
    confusion = paths.confusion / "cnn.csv"
    confusion.write_text("actual,predicted\ncat,dog\n")
    with pytest.raises(UserError, match=re.escape(f"{confusion}: column 'predicted' holds class 'dog'")):
        load_inputs(["cnn"], paths)


# ------------------------------------------------------------------------------- the stage


def stage_command(root: Path, params: Path) -> list[str]:
    return [sys.executable, str(REPO / "stages/report.py"), "--params", str(params),
            "--data-metrics", "metrics/data.json", "--data-details", "metrics/details/data.json",
            "--train-live", "metrics/train", "--train-details", "metrics/details/train",
            "--profile-metrics", "metrics/profile", "--profile-details", "metrics/details/profile",
            "--confusion", "plots/confusion", "--throughput", "plots/throughput",
            "--latency", "plots/latency", "--figures", "plots/figures",
            "--report", "metrics/report.json", "--summary", "metrics/summary.md"]


def test_stage_reports_a_missing_key_in_one_line_and_writes_nothing(tmp_path):
    paths = write_synthetic_inputs(tmp_path, {"cnn": MODELS["cnn"], "vit": MODELS["vit"]})
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps(params_for(["cnn", "vit"]).model_dump(mode="json")))  # JSON is YAML
    drop_key(paths.profile_metrics / "vit.json", "throughput_img_s")
    env = {**os.environ, "MPLBACKEND": "Agg"}
    done = subprocess.run(stage_command(tmp_path, params), cwd=tmp_path, capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == "error: metrics/profile/vit.json: key 'throughput_img_s' is missing"
    assert not (tmp_path / "plots/figures").exists()
    assert not (tmp_path / "metrics/report.json").exists()


def test_times_to_different_targets_name_them_and_crown_no_winner(tmp_path):
    paths = write_synthetic_inputs(tmp_path, {"cnn": MODELS["cnn"], "vit": {**MODELS["vit"], "ttt": 40.0}})
    vit_file = paths.train_details / "vit.json"
    vit = read_json(vit_file)
    vit["target_accuracy"] = 0.7
    write_json(vit_file, vit)
    report = make_report(load_inputs(["cnn", "vit"], paths), params_for(["cnn", "vit"]))
    assert report.numbers["winners"]["time_to_target_s"] == []
    header, rows = parse_summary(summary_markdown(report.numbers))
    col = header.index("Time to target (s)") - 1
    assert rows["cnn"][col] == "14.2 (to 90%)" and rows["vit"][col] == "40.0 (to 70%)"
