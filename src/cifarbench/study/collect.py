"""Read the experiments of a DVC project: params and metrics from ``dvc exp show --json``, the
environment and data name from each experiment's git-tracked ``metrics/report.json``.

DVC 3's ``exp show --json`` is a list of commits: the workspace, then each baseline commit with
its ``experiments``, each of which has an ``executor`` (null for ``dvc exp run`` in the
workspace; ``state`` queued, running, failed or success for queued ones) and ``revs``, whose
``data`` holds ``params`` (file -> {"data": mapping}) and ``metrics`` (file -> {"data": mapping}
or {"error": ...}). A metric that is not a number (``time_to_target_s: null``) is left out.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cifarbench.errors import UserError

PARAMS_FILE = "params.yaml"
DATA_METRICS = "metrics/data.json"
REPORT_FILE = "metrics/report.json"  # a plain git-tracked output: environment, data, params


def train_metrics_path(model: str) -> str:
    return f"metrics/train/{model}/metrics.json"  # DVCLive summary of train@<model>


def profile_metrics_path(model: str) -> str:
    return f"metrics/profile/{model}.json"


@dataclass(frozen=True)
class Experiment:
    name: str  # the experiment's name, or the branch/commit for a baseline
    rev: str  # commit holding the experiment's outputs
    baseline: str  # the commit it derives from (its name when it has one)
    params: dict[str, Any]  # params.yaml
    metrics: dict[str, dict[str, Any]]  # metrics file -> content, for the files DVC could read
    state: str  # success | queued | running | failed (a baseline: success)
    is_baseline: bool = False
    report: dict[str, Any] = field(default_factory=dict)  # metrics/report.json, once read


def parse_exp_show(show: Any) -> list[Experiment]:
    """Every baseline and experiment of ``dvc exp show --json``'s output (the workspace row
    is left out: it is not a commit, so it has no report.json to read)."""
    if not isinstance(show, list):
        raise UserError(f"dvc exp show --json: expected a list of commits, got {type(show).__name__}")
    found = []
    for commit in show:
        if commit.get("rev") == "workspace":
            continue
        base_name = commit.get("name") or commit["rev"][:7]
        found.append(_experiment(commit, base_name, "success", is_baseline=True))
        for exp in commit.get("experiments") or []:
            executor = exp.get("executor") or {}
            state = executor.get("state") or "success"
            for rev in exp.get("revs") or []:
                found.append(_experiment(rev, base_name, state))
    return found


def _experiment(entry: dict[str, Any], baseline: str, state: str, *,
                is_baseline: bool = False) -> Experiment:
    data = entry.get("data") or {}
    params = ((data.get("params") or {}).get(PARAMS_FILE) or {}).get("data") or {}
    metrics = {path: m["data"] for path, m in (data.get("metrics") or {}).items()
               if isinstance(m, dict) and isinstance(m.get("data"), dict)}
    if entry.get("error"):
        state = "failed"
    return Experiment(name=entry.get("name") or entry["rev"][:7], rev=entry["rev"],
                      baseline=baseline, params=params, metrics=metrics, state=state,
                      is_baseline=is_baseline)


def select(found: Sequence[Experiment], names: Sequence[str]) -> list[Experiment]:
    """The experiments called ``names`` (a name, a baseline's branch or a commit prefix of
    at least 7 characters); with no names, every experiment that finished (no baselines)."""
    if not names:
        return [e for e in found if not e.is_baseline and e.state == "success"]
    chosen = []
    for name in names:
        match = [e for e in found if name == e.name or (len(name) >= 7 and e.rev.startswith(name))]
        if not match:
            known = ", ".join(sorted({e.name for e in found if not e.is_baseline})) or "none"
            raise UserError(f"experiment {name!r}: not found in dvc exp show (experiments: {known}); "
                            "pass --all-commits for experiments of other commits")
        exp = match[0]
        if exp.state != "success":
            raise UserError(f"experiment {name!r}: its run is {exp.state}, no results to compare "
                            "(dvc queue status, dvc queue logs)")
        if exp not in chosen:
            chosen.append(exp)
    return chosen


def run_exp_show(repo: Path, *, all_commits: bool = False) -> Any:
    """``dvc exp show --json`` in ``repo``, parsed (the dvc of this Python environment)."""
    cmd = [sys.executable, "-m", "dvc", "exp", "show", "--json", *(["-A"] if all_commits else [])]
    proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"{repo}: dvc exp show failed ({last})")
    try:
        return json.loads(proc.stdout)
    except ValueError as exc:
        raise UserError(f"{repo}: dvc exp show --json printed no JSON ({exc})") from None


def read_report(repo: Path, exp: Experiment) -> dict[str, Any]:
    """``metrics/report.json`` as the experiment's commit holds it (``git show``)."""
    proc = subprocess.run(["git", "show", f"{exp.rev}:{REPORT_FILE}"], cwd=repo,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise UserError(f"experiment {exp.name!r}: {REPORT_FILE} is not in its commit "
                        f"{exp.rev[:7]}; did its report stage run?")
    try:
        report = json.loads(proc.stdout)
    except ValueError as exc:
        raise UserError(f"experiment {exp.name!r}: {REPORT_FILE} is not JSON ({exc})") from None
    if not isinstance(report, dict):
        raise UserError(f"experiment {exp.name!r}: {REPORT_FILE} is not a JSON object")
    return report


def collect(repo: Path, names: Sequence[str] = (), *, all_commits: bool = False) -> list[Experiment]:
    """The chosen experiments of ``repo``, each with its report.json read."""
    chosen = select(parse_exp_show(run_exp_show(repo, all_commits=all_commits)), names)
    if not chosen:
        raise UserError(f"{repo}: no finished experiments in dvc exp show; queue a grid (README: "
                        "Study) and run it with dvc queue start")
    return [replace(exp, report=read_report(repo, exp)) for exp in chosen]
