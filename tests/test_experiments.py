"""Experiments and sharing, the DVC way, on a real copy of the project (tiny data).

``dvc exp run --temp`` and queued experiments run every stage in a copy of the project under
``.dvc/tmp/exps/``; a relative ``data.source`` must still mean the same file as for ``dvc
repro``. A pushed pipeline must come back complete: a fresh clone that pulls has nothing to do.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from dvc_project import ALL_STAGES, dvc, git, make_imagefolder, make_project, run, stages_run

pytestmark = pytest.mark.slow

SOURCE = "../bee-wings"  # relative to the project, outside it
UP_TO_DATE = "Data and pipelines are up to date."


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """The pipeline run once with a relative data.source, and committed (a baseline)."""
    work = tmp_path_factory.mktemp("exps")
    make_imagefolder(work / "bee-wings")
    repo = make_project(work / "repo", SOURCE)
    assert stages_run(dvc("repro", cwd=repo)) == ALL_STAGES
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "baseline", cwd=repo)
    return repo


def _experiments(repo: Path) -> tuple[dict, dict[str, dict]]:
    """``dvc exp show --json``: the baseline commit's row and its experiments by name."""
    shown = json.loads(dvc("exp", "show", "--json", cwd=repo))
    baseline = next(row for row in shown if row["rev"] != "workspace")
    return baseline, {e["name"]: e for e in baseline.get("experiments") or []}


def _state(exp: dict) -> str:
    """queued, running, success or failed; a finished --temp run has no executor left."""
    return (exp.get("executor") or {}).get("state", "success")


def _data_raw_hash(rev_data: dict) -> str:
    return rev_data["outs"]["data/raw"]["hash"]


def _queue_workers(repo: Path) -> list[int]:
    """Live queue workers of ``repo`` (pids from DVC's worker pid files)."""
    pids = []
    for pidfile in (repo / ".dvc/tmp/exps/celery").glob("*.pid"):
        pid = int(pidfile.read_text().split()[0])
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue  # exited
        if b"dvc" in cmdline:
            pids.append(pid)
    return pids


def _stop_queue(repo: Path) -> None:
    """`dvc queue stop`, then wait for the workers to exit; SIGTERM any that do not."""
    dvc("queue", "stop", cwd=repo)
    deadline = time.monotonic() + 30
    while _queue_workers(repo) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in _queue_workers(repo):
        os.kill(pid, signal.SIGTERM)


def test_temp_and_queued_experiments_read_a_relative_source(project: Path) -> None:
    baseline_raw = json.loads((project / "data/raw/source.json").read_text())
    assert baseline_raw["source"] == SOURCE

    # --temp: the stages run in .dvc/tmp/exps/standalone/<tmp>/, where ../bee-wings is missing
    out = dvc("exp", "run", "--temp", "-n", "temp-rel", "-S", "data.retries=2", cwd=project)
    # the record keeps the path as written: data/raw hashes as before, nothing downstream reruns
    assert stages_run(out) == {"download"}, out

    # --queue: the stages run in .dvc/tmp/exps/<tmp>/, started by a worker
    dvc("exp", "run", "--queue", "-n", "queue-rel", "-S", "data.retries=1", cwd=project)
    try:
        dvc("queue", "start", cwd=project)
        deadline = time.monotonic() + 300
        while True:
            state = _state(_experiments(project)[1]["queue-rel"])
            if state not in ("queued", "running") or time.monotonic() > deadline:
                break
            time.sleep(2)
        logs = dvc("queue", "logs", "queue-rel", cwd=project)
        assert state == "success", f"queued experiment: {state}\n{logs}"
        assert stages_run(logs) == {"download"}, logs
    finally:
        _stop_queue(project)
    assert _queue_workers(project) == []

    baseline, shown = _experiments(project)
    for name, retries in (("temp-rel", 2), ("queue-rel", 1)):
        exp = shown[name]
        assert _state(exp) == "success", exp
        data = exp["revs"][0]["data"]
        params = data["params"]["params.yaml"]["data"]  # params.yaml as the experiment ran it
        assert params["data"]["source"] == SOURCE and params["data"]["retries"] == retries
        assert _data_raw_hash(data) == _data_raw_hash(baseline["data"])
    # the workspace was not touched
    assert dvc("status", cwd=project).strip() == UP_TO_DATE


def test_push_then_clone_and_pull_has_nothing_to_do(project: Path, tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    dvc("remote", "add", "--local", "-d", "store", str(remote), cwd=project)
    dvc("push", cwd=project)
    assert any(remote.rglob("*")), "nothing pushed"

    clone = project.parent / "clone"  # beside the project: ../bee-wings is the same folder
    run(["git", "clone", "-q", str(project), str(clone)], cwd=project.parent)
    dvc("remote", "add", "--local", "-d", "store", str(remote), cwd=clone)
    dvc("pull", cwd=clone)
    assert dvc("status", cwd=clone).strip() == UP_TO_DATE
    assert stages_run(dvc("repro", cwd=clone)) == set()
    assert git("status", "--porcelain", cwd=clone).strip() == ""  # nor did it rewrite anything
