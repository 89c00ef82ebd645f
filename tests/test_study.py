"""The study (issue 13): reading experiments from `dvc exp show --json`, the tidy frame, the
figures and table, and the refusals. Unit tests use a synthetic exp-show output; the slow test
queues a real `dvc exp run --queue` grid over a dummy pipeline (no training) in a temporary
repository and runs `python -m cifarbench.study` on it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from cifarbench.errors import UserError
from cifarbench.study import write_study
from cifarbench.study.collect import parse_exp_show, select
from cifarbench.study.figures import pareto_front
from cifarbench.study.frame import caption, check_consistent, tidy_frame

ROOT = Path(__file__).resolve().parents[1]
FULL = 50_000


def _params(train_size, *, vit_dim=128, budget="steps", device="cpu"):
    return {
        "seed": 0, "device": device, "precision": "auto",
        "data": {"train_size": train_size, "image_size": 32},
        "models": {
            "cnn": {"kind": "cnn", "arch": {"widths": [48, 96, 192]},
                    "train": {"epochs": 9, "budget": budget, "batch_size": 256, "runs": 3}},
            "vit": {"kind": "vit", "arch": {"dim": vit_dim, "depth": 6},
                    "train": {"epochs": 6, "budget": budget, "batch_size": 128, "runs": 1}},
        },
    }


def _metrics(params):
    """The metrics files of the layout the study reads (see collect.py), from params."""
    n = params["data"]["train_size"] or FULL
    out = {"metrics/data.json": {"train_images": n, "test_images": 10_000, "num_classes": 10}}
    for i, (model, cfg) in enumerate(params["models"].items()):
        width = cfg["arch"].get("dim") or cfg["arch"]["widths"][-1]
        out[f"metrics/train/{model}/metrics.json"] = {
            "step": 3, "test_accuracy": 0.4 + 0.1 * i + 0.4 * n / FULL + width / 10_000,
            "test_accuracy_std": 0.01, "train_time_s": n / 100 * (1 + i)}
        out[f"metrics/profile/{model}.json"] = {
            "params": 5_000 * width, "flops_per_image": 1e6 * width,
            "train_flops_per_image": 3e6 * width, "throughput_img_s": 1e6 / width,
            "latency_ms_p50": 1.0, "latency_ms_p99": 2.0, "peak_memory_mb": 100.0}
    return out


def _rev(i):
    return f"{i:07x}".ljust(40, "a")  # a distinct 7-character prefix each


def _entry(rev, name, params):
    return {"rev": rev, "name": name, "error": None, "experiments": None,
            "data": {"rev": rev, "timestamp": None, "params": {"params.yaml": {"data": params}},
                     "metrics": {p: {"data": d} for p, d in _metrics(params).items()},
                     "deps": {}, "outs": {}, "meta": {}}}


def _exp_show(grid, *, queued=()):
    """A DVC 3 `exp show --json` output: the workspace, the baseline, its experiments."""
    base = _params(None)
    exps = [{"executor": None, "name": name, "revs": [_entry(_rev(i + 2), name, p)]}
            for i, (name, p) in enumerate(grid.items())]
    exps += [{"executor": {"state": "queued"}, "name": name,
              "revs": [{"rev": _rev(90 + i), "name": name, "data": {}, "error": None}]}
             for i, name in enumerate(queued)]
    return [{**_entry("workspace", None, base), "rev": "workspace"},
            {**_entry(_rev(1), "main", base), "experiments": exps}]


def _report(device_name="AMD EPYC", device="cpu"):
    return {"data": {"label": "CIFAR-10 (JPEG copy)"},
            "environment": {"device": device, "device_name": device_name, "torch_version": "2"}}


GRID = {f"size-{n or 'all'}": _params(n) for n in (3_125, 12_500, None)}


def _experiments(grid=GRID, reports=None):
    """The experiments of ``grid`` as the collector returns them, report.json read."""
    found = select(parse_exp_show(_exp_show(grid, queued=["waiting"])), list(grid))
    return [replace(e, report=(reports or {}).get(e.name, _report())) for e in found]


# ----------------------------------------------------------------------- collector and frame


def test_parse_exp_show_finds_experiments_and_skips_queued_ones():
    found = parse_exp_show(_exp_show(GRID, queued=["waiting"]))
    names = [e.name for e in found]
    assert names == ["main", "size-3125", "size-12500", "size-all", "waiting"]
    assert [e.name for e in select(found, [])] == ["size-3125", "size-12500", "size-all"]
    exp = found[1]
    assert exp.baseline == "main" and exp.params["data"]["train_size"] == 3_125
    assert exp.metrics["metrics/train/vit/metrics.json"]["train_time_s"] == 31.25 * 2
    with pytest.raises(UserError, match=r"experiment 'waiting': its run is queued"):
        select(found, ["waiting"])
    with pytest.raises(UserError, match=r"experiment 'nope': not found .*size-12500, size-3125"):
        select(found, ["nope"])
    assert [e.name for e in select(found, ["main", _rev(3)[:7]])] == ["main", "size-12500"]


def test_tidy_frame_one_row_per_experiment_and_model():
    frame = tidy_frame(_experiments())
    assert len(frame) == 6 and list(frame["model"].unique()) == ["cnn", "vit"]
    small = frame[(frame["experiment"] == "size-3125") & (frame["model"] == "cnn")].iloc[0]
    assert small.train_images == 3_125 and small.full_train_images == FULL  # from size-all
    # fixed steps: the subset is passed over 16x as often, the FLOPs equal the full run's
    full = frame[(frame["experiment"] == "size-all") & (frame["model"] == "cnn")].iloc[0]
    assert full.epochs_run == 9 and small.epochs_run == pytest.approx(9 * 195 / 12)
    assert small.train_flops == pytest.approx(full.train_flops, rel=1e-3)
    assert full.train_flops == round(9 * 195) * 256 * 3e6 * 192
    assert set(frame["variant"]) == {""}  # one recipe per model: data size is not a recipe key


def test_fixed_epochs_cost_scales_with_the_subset():
    grid = {f"e-{n}": _params(n, budget="epochs") for n in (3_125, None)}
    frame = tidy_frame(_experiments(grid)).set_index(["experiment", "model"])
    assert frame.loc[("e-3125", "cnn"), "epochs_run"] == 9
    ratio = frame.loc[("e-None", "cnn"), "train_flops"] / frame.loc[("e-3125", "cnn"), "train_flops"]
    assert ratio == pytest.approx(195 / 12)
    assert "fixed epochs (9 passes over each training set)" in caption(frame.reset_index())


def test_model_size_variants_and_pareto_front():
    grid = {f"vit-{d}": _params(None, vit_dim=d) for d in (64, 128, 256)}
    frame = tidy_frame(_experiments(grid))
    vit = frame[frame["model"] == "vit"]
    assert list(vit["variant"]) == ["arch.dim=64", "arch.dim=128", "arch.dim=256"]
    # synthetic numbers: a wider ViT is more accurate and slower, so every ViT is on the front;
    # the smallest ViT is both faster and more accurate than the CNN, which drops off it
    front = pareto_front(frame)
    assert front[vit.index].all()
    assert not front[frame["model"] == "cnn"].any()
    # a ViT made less accurate than the faster CNN drops off the front
    slower_worse = frame.assign(test_accuracy=frame["test_accuracy"].where(
        frame["variant"] != "arch.dim=256", 0.1))
    assert list(pareto_front(slower_worse)[vit.index]) == [True, True, False]


def test_refuses_mixed_devices_data_and_budget_with_one_line():
    reports = {"size-all": _report("NVIDIA H100", "cuda")}
    frame = tidy_frame(_experiments(reports=reports))
    with pytest.raises(UserError) as err:
        check_consistent(frame, allow_mixed=False)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("experiments differ in device: 'AMD EPYC (cpu)' in size-3125, size-12500; "
                          "'NVIDIA H100 (cuda)' in size-all;")
    assert msg.endswith("--allow-mixed")
    check_consistent(frame, allow_mixed=True)
    assert "Device: mixed: AMD EPYC (cpu) (size-3125, size-12500); NVIDIA H100 (cuda) (size-all)" \
        in caption(frame)

    other = {"size-all": {**_report(), "data": {"label": "my-images"}}}
    with pytest.raises(UserError, match=r"differ in data: 'CIFAR-10 \(JPEG copy\), 10,000 test "
                                        r"images' in size-3125, size-12500; 'my-images"):
        check_consistent(tidy_frame(_experiments(reports=other)), allow_mixed=False)

    grid = {"a": _params(3_125), "b": _params(None, budget="epochs")}
    with pytest.raises(UserError, match=r"differ in budget rule of cnn: 'steps' in a; 'epochs' in b"):
        check_consistent(tidy_frame(_experiments(grid)), allow_mixed=False)


def test_missing_metrics_name_the_experiment():
    exps = _experiments()
    del exps[0].metrics["metrics/profile/vit.json"]
    with pytest.raises(UserError, match=r"experiment 'size-3125': no metrics/profile/vit.json"):
        tidy_frame(exps)


def test_write_study_draws_figures_and_table(tmp_path):
    grid = {**GRID, **{f"vit-{d}": _params(None, vit_dim=d) for d in (64, 256)}}
    paths = write_study(_experiments(grid), tmp_path)
    names = sorted(p.name for p in paths)
    assert names == ["accuracy_vs_cost.png", "accuracy_vs_data.png", "accuracy_vs_throughput.png",
                     "study.csv", "study.md"]
    for p in paths:
        if p.suffix == ".png":
            assert p.stat().st_size > 20_000
    md = (tmp_path / "study.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ") and "Experiment" not in line]
    assert len(rows) == 10
    assert "| size-3125 | cnn | — | 3,125 | steps | 146 | 3 | " in md  # 9 x 195 / 12 epochs
    assert "Device: AMD EPYC (cpu). Data: CIFAR-10 (JPEG copy), 10,000 test images. Budget: cnn " \
           "fixed steps (9 epochs of the whole 50,000-image split); vit fixed steps" in md


# ------------------------------------------------------------------- real DVC, dummy pipeline

DUMMY_STAGE = '''\
"""Dummy stage for the study test: writes the metrics layout from params.yaml, no training."""
import json, os
import yaml
p = yaml.safe_load(open("params.yaml"))
n = p["data"]["train_size"] or 600
def dump(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f)
dump("metrics/data.json", {"train_images": n, "test_images": 100, "num_classes": 10,
                           "source_train_images": 600})
for i, (m, cfg) in enumerate(p["models"].items()):
    w = cfg["arch"]["width"]
    dump(f"metrics/train/{m}/metrics.json", {"step": 2, "test_accuracy": 0.3 + 0.1 * i + n / 1200,
         "test_accuracy_std": 0.01, "train_time_s": n / 100, "time_to_target_s": None})
    dump(f"metrics/profile/{m}.json", {"params": 100 * w, "flops_per_image": 1e5 * w,
         "train_flops_per_image": 3e5 * w, "throughput_img_s": 1e5 / w, "latency_ms_p50": 1.0,
         "latency_ms_p99": 2.0, "peak_memory_mb": 10.0})
dump("metrics/report.json", {"data": {"label": "dummy-data"}, "params": p,
     "environment": {"device": p["device"], "device_name": p["fake_device_name"],
                     "torch_version": "0"}})
'''

DUMMY_PARAMS = {
    "seed": 0, "device": "cpu", "precision": "fp32", "fake_device_name": "Dummy CPU",
    "data": {"train_size": None},
    "models": {m: {"kind": m, "arch": {"width": w},
                   "train": {"epochs": 2, "budget": "steps", "batch_size": 50, "runs": 1}}
               for m, w in (("cnn", 8), ("vit", 16))},
}

DUMMY_DVC_YAML = {"stages": {"dummy": {
    "cmd": "python stage.py", "deps": ["stage.py"],
    "params": ["seed", "device", "fake_device_name", "data", "models"],
    "outs": [{"metrics/report.json": {"cache": False}}],
    "metrics": [{p: {"cache": False}} for p in (
        "metrics/data.json", "metrics/train/cnn/metrics.json", "metrics/train/vit/metrics.json",
        "metrics/profile/cnn.json", "metrics/profile/vit.json")]}}}


def _run(args, cwd, check=True):
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, f"{' '.join(map(str, args))} failed:\n{proc.stdout}{proc.stderr}"
    return proc


def _dvc(*args, cwd, check=True):
    return _run([sys.executable, "-m", "dvc", *args], cwd, check)


@pytest.mark.slow
def test_queued_grid_then_study(tmp_path):
    import yaml

    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "stage.py").write_text(DUMMY_STAGE)
    (repo / "params.yaml").write_text(yaml.safe_dump(DUMMY_PARAMS, sort_keys=False))
    (repo / "dvc.yaml").write_text(yaml.safe_dump(DUMMY_DVC_YAML, sort_keys=False))
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    _run(["git", "init", "-q"], repo)
    _dvc("init", "-q", cwd=repo)
    _dvc("config", "core.analytics", "false", cwd=repo)
    _dvc("repro", "-q", cwd=repo)
    _run(["git", "add", "-A"], repo)
    _run([*git, "commit", "-q", "-m", "dummy pipeline"], repo)
    try:
        # the data-size grid of README: Study, at this repository's scale
        out = _dvc("exp", "run", "--queue", "-S", "data.train_size=150,300,null", cwd=repo).stdout
        assert out.count("Queued experiment") == 3, out
        _dvc("queue", "start", "-j", "1", cwd=repo)
        deadline = time.monotonic() + 240
        while True:
            status = _dvc("queue", "status", cwd=repo).stdout
            if "Queued" not in status and "Running" not in status:
                break
            assert time.monotonic() < deadline, status
            time.sleep(1)
        assert status.count("Success") == 3, status
    finally:
        _dvc("queue", "stop", "--kill", cwd=repo, check=False)
        _dvc("queue", "stop", cwd=repo, check=False)

    study = [sys.executable, "-m", "cifarbench.study", "--out", str(tmp_path / "study")]
    done = _run(study, repo)
    md = (tmp_path / "study" / "study.md").read_text()
    rows = [line.split(" | ") for line in md.splitlines()[4:] if line.startswith("| ")]
    assert sorted((r[1], r[3]) for r in rows) == sorted(
        (m, n) for m in ("cnn", "vit") for n in ("150", "300", "600"))
    assert "Device: Dummy CPU (cpu). Data: dummy-data, 100 test images." in md
    for name in ("accuracy_vs_data", "accuracy_vs_cost", "accuracy_vs_throughput"):
        assert (tmp_path / "study" / f"{name}.png").stat().st_size > 20_000, done.stderr

    # one more experiment on another "device": the whole set is refused, naming it
    _dvc("exp", "run", "-n", "other-device", "-S", "fake_device_name=Other GPU", "-S", "device=cuda",
         cwd=repo)
    refused = _run(study, repo, check=False)
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: experiments differ in device: ")
    assert "'Other GPU (cuda)' in other-device;" in refused.stderr
    names = [r[0].strip("| ") for r in rows]
    _run([*study, *sorted(set(names))], repo)  # the grid alone, by name
    _run([*study, "--allow-mixed"], repo)
    assert "mixed: " in (tmp_path / "study" / "study.md").read_text()
    assert shutil.which("git")
