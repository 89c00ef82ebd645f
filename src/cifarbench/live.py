"""Training progress while it happens: DVCLive's files and a progress bar with ETA.

DVCLive (DVC's own logger) writes ``DIR/metrics.json`` (the latest value of each metric) and
``DIR/plots/metrics/NAME.tsv`` (one row per epoch) after every epoch, so a running experiment
updates in ``dvc exp show`` and in DVC's editor integrations. The stage declares those files in
dvc.yaml itself (``dvcyaml=None``: DVCLive writes no dvc.yaml of its own). When training ends the
stage replaces ``metrics.json`` with the headline (:class:`cifarbench.schema.TrainMetrics`) and
DVCLive writes the evaluated curves to ``DIR/plots/custom/`` for the DVC plots in dvc.yaml.

Everything here runs between epochs, after the epoch's clock has stopped (see
:func:`cifarbench.train.train_run`), so logging never counts as training time.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from cifarbench.schema import CurvePoint
from cifarbench.train import EpochRecord, PrintProgress

# Values logged every epoch (each a DVCLive metric and a .tsv under plots/metrics/).
LIVE_METRICS = ("train_loss", "lr", "train_img_s", "test_accuracy")


class LiveProgress:
    """A :class:`cifarbench.train.Progress` that logs to DVCLive and draws a tqdm bar.

    The bar counts epochs over all runs; on a stream that is not a terminal (a log file, a DVC
    queue worker) it is off and one line per evaluation is printed instead."""

    def __init__(self, directory: str | Path, *, name: str, runs: int, epochs: float,
                 log: TextIO = sys.stderr) -> None:
        from dvclive import Live  # imported here: it opens the DVC repository it runs in

        self.live = Live(dir=str(directory), save_dvc_exp=False, dvcyaml=None, report=None)
        # in epochs of the budget (a pass over the data, or the steps of one over the whole
        # split under `budget: steps`), so fractional updates
        self.bar = tqdm(total=runs * epochs, desc=f"train@{name}", unit="epoch", file=log,
                        disable=None, dynamic_ncols=True, leave=True,
                        bar_format="{l_bar}{bar}| {n:.1f}/{total:g} epochs [{elapsed}<{remaining}{postfix}]")
        self.lines = PrintProgress(name, epochs, log) if self.bar.disable else None
        self.run, self.epoch = 0, 0.0  # where the bar stands

    def epoch_end(self, r: EpochRecord) -> None:
        live = self.live
        live.log_metric("run", r.run, plot=False)
        live.log_metric("epoch", r.epoch, plot=False)
        live.log_metric("train_loss", r.train_loss)
        live.log_metric("lr", r.lr)
        live.log_metric("train_img_s", r.img_s)
        if r.test_accuracy is not None:
            live.log_metric("test_accuracy", r.test_accuracy)
        live.next_step()
        shown = {"run": r.run, "loss": f"{r.train_loss:.4f}"}
        if r.test_accuracy is not None:
            shown["acc"] = f"{r.test_accuracy:.4f}"
        if r.run != self.run:
            self.run, self.epoch = r.run, 0.0
        self.bar.set_postfix(shown, refresh=False)
        self.bar.update(r.epoch - self.epoch)
        self.epoch = r.epoch
        if self.lines is not None:
            self.lines.epoch_end(r)

    def finish(self, curves: Sequence[CurvePoint], run_curves: Sequence[CurvePoint]) -> None:
        """Write the evaluated curves (mean over runs, and every run's) and close the log."""
        self.bar.close()
        self.live.log_plot("curves", [c.model_dump(exclude={"run"}) for c in curves],
                           x="elapsed_s", y="test_accuracy")
        self.live.log_plot("run_curves", [c.model_dump() for c in run_curves],
                           x="epoch", y="test_accuracy")
        self.live.end()
