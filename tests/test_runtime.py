"""Runtime settings and host load: a setting this machine cannot honour is one line in every
stage, before any work; every measurement records its threads and the host load, and warns
once when the host is oversubscribed (two queue workers that each take every core)."""

from __future__ import annotations

import importlib.util
import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from project_params import write_params

from cifarbench import cli
from cifarbench.data import save_prepared
from cifarbench.data.prepare import PreparedData
from cifarbench.errors import UserError
from cifarbench.runtime import (
    Runtime,
    check_host_load,
    environment,
    resolve_runtime,
    watch_host_load,
)

ROOT = Path(__file__).resolve().parents[1]
CPU = Runtime(device=torch.device("cpu"), amp_dtype=None)
DEVNULL = io.StringIO()


def fake_host(monkeypatch, *, load: float | None, cores: int, threads: int) -> None:
    """This process sees ``cores`` cores, runs ``threads`` torch threads, the host ``load``."""
    if load is None:
        monkeypatch.delattr(os, "getloadavg")  # as on Windows
    else:
        monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)


# ------------------------------------------------------------------------------- host load


@pytest.mark.parametrize("load", [0.0, 1.0, 2.0, 2.9])
def test_a_process_alone_is_not_oversubscribed(monkeypatch, load):
    # Up to its own 2 threads on 2 cores, plus less than one thread of background noise.
    fake_host(monkeypatch, load=load, cores=2, threads=2)
    log = io.StringIO()
    assert check_host_load(CPU, what="train@cnn", log=log) == {
        "threads": 2, "host_load_1m": load, "oversubscribed": False}
    assert log.getvalue() == ""


@pytest.mark.parametrize(("load", "cores", "threads"), [
    (4.0, 2, 2),     # two queue workers, each on both cores
    (3.5, 2, 1),     # threads=1, but three other busy threads
    (40.0, 16, 16),  # a busy shared host
    (0.0, 2, 4),     # more torch threads than cores: oversubscribed by construction
])
def test_load_beyond_the_cores_is_oversubscribed(monkeypatch, load, cores, threads):
    fake_host(monkeypatch, load=load, cores=cores, threads=threads)
    assert check_host_load(CPU, what="x", log=io.StringIO())["oversubscribed"]


def test_the_warning_is_one_line_naming_the_work_load_cores_and_threads(monkeypatch):
    fake_host(monkeypatch, load=4.04, cores=2, threads=2)
    log = io.StringIO()
    check_host_load(CPU, what="train@vit run 0", log=log)
    (line,) = log.getvalue().splitlines()
    assert line.startswith("warning: host oversubscribed while timing train@vit run 0 on cpu:")
    assert "load 4.0 on 2 cores, 2 torch threads" in line
    assert "-S threads=N" in line and "dvc queue start -j N" in line


def test_no_load_average_is_recorded_as_none_without_a_warning(monkeypatch):
    fake_host(monkeypatch, load=None, cores=2, threads=2)
    log = io.StringIO()
    assert check_host_load(CPU, what="x", log=log) == {
        "threads": 2, "host_load_1m": None, "oversubscribed": False}
    assert log.getvalue() == ""
    with watch_host_load(CPU, what="x", log=log) as load:
        pass
    assert load["host_load_1m"] is None and not load["oversubscribed"]


def test_watch_records_the_worst_of_start_and_end_and_warns_once(monkeypatch):
    # Two workers started together: the lagging load average sees the other only at the end.
    fake_host(monkeypatch, load=0.5, cores=2, threads=2)
    log = io.StringIO()
    with watch_host_load(CPU, what="profile@cnn", log=log) as load:
        assert not load["oversubscribed"]
        monkeypatch.setattr(os, "getloadavg", lambda: (4.0, 2.0, 1.0))
    assert load == {"threads": 2, "host_load_1m": 4.0, "oversubscribed": True}
    assert len(log.getvalue().splitlines()) == 1

    log = io.StringIO()  # busy throughout: still one line
    with watch_host_load(CPU, what="profile@cnn", log=log) as load:
        pass
    assert load["oversubscribed"] and len(log.getvalue().splitlines()) == 1


def test_environment_keeps_its_keys_and_adds_the_load(monkeypatch):
    fake_host(monkeypatch, load=1.25, cores=2, threads=2)
    env = environment(CPU)
    assert {"device", "device_name", "dtype", "torch_version", "cuda_version", "tf32",
            "cpu_threads", "cpu_count", "python_version"} <= set(env)
    assert (env["threads"], env["host_load_1m"], env["oversubscribed"]) == (2, 1.25, False)


# ---------------------------------------------------------------------- runtime settings


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    return msg


def test_cuda_without_cuda_names_the_key_and_the_choices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError) as exc:
        resolve_runtime("cuda", "auto", None, log=DEVNULL)
    assert "device = 'cuda'" in one_line(exc) and "use auto or cpu" in str(exc.value)


def test_fp16_on_cpu_names_the_key_and_the_choices():
    with pytest.raises(UserError) as exc:
        resolve_runtime("cpu", "fp16", None, log=DEVNULL)
    assert "precision = 'fp16'" in one_line(exc) and "auto, fp32, bf16" in str(exc.value)


def test_bf16_on_a_gpu_without_it_is_refused_before_autocast_would(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla V100")
    with pytest.raises(UserError) as exc:
        resolve_runtime("cuda", "bf16", None, log=DEVNULL)
    assert "precision = 'bf16' is not supported on Tesla V100" in one_line(exc)
    assert "auto, fp32, fp16" in str(exc.value)


def test_more_threads_than_cores_is_refused_and_changes_nothing(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    before = torch.get_num_threads()
    with pytest.raises(UserError) as exc:
        resolve_runtime("cpu", "fp32", 3, log=DEVNULL)
    assert "threads = 3" in one_line(exc) and "null or 1 to 2" in str(exc.value)
    assert torch.get_num_threads() == before


def test_threads_within_the_cores_are_used_and_recorded(monkeypatch):
    before = torch.get_num_threads()
    try:
        rt = resolve_runtime("cpu", "fp32", 1, log=DEVNULL)
        assert environment(rt)["threads"] == 1 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------------- stages


def load_stage(name: str):
    spec = importlib.util.spec_from_file_location(f"stage_{name}", ROOT / "stages" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def stage_argv(stage: str, tmp: Path) -> list[str]:
    """Every path a stage takes, under ``tmp``; inputs made by :func:`write_inputs`."""
    p = ["--params", str(tmp / "params.yaml")]
    out = tmp / "out"
    return p + {
        "download": ["--out", str(out / "raw")],
        "prepare": ["--raw", str(tmp / "raw"), "--out", str(out / "prepared"),
                    "--metrics", str(out / "data.json"), "--details", str(out / "details.json")],
        "train": ["--model", "cnn", "--data", str(tmp / "prepared"),
                  "--weights", str(out / "cnn.pt"), "--live", str(out / "live"),
                  "--details", str(out / "train.json"), "--confusion", str(out / "confusion.csv")],
        "profile_model": ["--model", "cnn", "--meta", str(tmp / "prepared" / "meta.json"),
                          "--weights", str(tmp / "cnn.pt"), "--metrics", str(out / "p.json"),
                          "--details", str(out / "pd.json"), "--throughput", str(out / "t.csv"),
                          "--latency", str(out / "l.csv")],
        "report": ["--data-metrics", str(tmp / "data.json"), "--data-details", str(tmp / "d.json"),
                   "--train-live", str(tmp / "m"), "--train-details", str(tmp / "m"),
                   "--profile-metrics", str(tmp / "m"), "--profile-details", str(tmp / "m"),
                   "--confusion", str(tmp / "m"), "--throughput", str(tmp / "m"),
                   "--latency", str(tmp / "m"), "--figures", str(out / "figures"),
                   "--report", str(out / "report.json"), "--summary", str(out / "summary.md")],
    }[stage]


def write_inputs(tmp: Path) -> None:
    """Valid prepared data and cnn weights: the stages get as far as the runtime."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    y = np.arange(6, dtype=np.int64) % 3
    save_prepared(PreparedData(classes=["a", "b", "c"], layout="imagefolder", source="t",
                               label="t", image_size=8, train_x=x, train_y=y, test_x=x,
                               test_y=y, mean=[0.5] * 3, std=[0.25] * 3,
                               source_train_images=6),
                  tmp / "prepared", tmp / "data.json", tmp / "data-details.json")
    (tmp / "cnn.pt").write_bytes(b"not reached")


def run_stage(stage: str, tmp: Path, capsys) -> str:
    """Run ``stage`` as DVC would; it must exit with status 2, one ``error:`` line on stderr
    and nothing written. Returns stderr from that line on."""
    module = load_stage(stage)
    with pytest.raises(SystemExit) as done:
        cli.run_stage(lambda: module.main(stage_argv(stage, tmp)))
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert [ln for ln in err.splitlines() if ln.startswith("error:")] != []
    assert not (tmp / "out").exists()  # nothing written, not even a folder
    return err[err.index("error:"):]


@pytest.mark.parametrize("stage", ["download", "prepare", "train", "profile_model", "report"])
@pytest.mark.parametrize(("key", "value", "allowed"), [
    ("device", "tpu", "'auto', 'cpu' or 'cuda'"),
    ("device", "cuda:1", "'auto', 'cpu' or 'cuda'"),
    ("precision", "fp8", "'auto', 'fp32', 'bf16' or 'fp16'"),
    ("threads", 0, "greater than or equal to 1"),
    ("threads", -2, "greater than or equal to 1"),
])
def test_a_value_wrong_everywhere_stops_every_stage(tmp_path, capsys, stage, key, value, allowed):
    write_params(tmp_path / "params.yaml", {key: value})
    err = run_stage(stage, tmp_path, capsys)
    # A ParamsError: the file, then one line per bad key (here one), as for every other key.
    assert err.splitlines() == [f"error: {tmp_path / 'params.yaml'}: invalid parameters:",
                                f"  {key} = {value!r}: Input should be {allowed}"]


@pytest.mark.parametrize("stage", ["train", "profile_model"])
@pytest.mark.parametrize(("settings", "expected"), [
    ({"device": "cuda"}, "error: params.yaml: device = 'cuda' but no CUDA device is available"),
    ({"device": "cpu", "precision": "fp16"},
     "error: params.yaml: precision = 'fp16' is not supported on CPU"),
    ({"device": "cpu", "threads": 3}, "error: params.yaml: threads = 3 but this process may use "
                                      "only 2 CPU core(s) (allowed here: null or 1 to 2)"),
])
def test_a_setting_this_machine_cannot_honour_stops_train_and_profile(
        tmp_path, capsys, monkeypatch, stage, settings, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    write_params(tmp_path / "params.yaml", settings)
    write_inputs(tmp_path)
    (line,) = run_stage(stage, tmp_path, capsys).splitlines()
    assert line.startswith(expected)
