"""Stage train@MODEL: train one model from scratch on the prepared data, ``runs`` times.

Paths come from dvc.yaml; the work is in ``cifarbench.train`` (the runs),
``cifarbench.profiling.breakdown`` (the per-part step times), ``cifarbench.live`` (progress:
DVCLive and a progress bar) and ``cifarbench.results`` (metrics and plot tables). While the
runs train, ``LIVE/metrics.json`` holds DVCLive's latest values; the headline replaces it last.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from cifarbench import results
from cifarbench.cli import run_stage
from cifarbench.config import load_params
from cifarbench.data import load_prepared
from cifarbench.errors import UserError
from cifarbench.io import atomic_path, write_csv
from cifarbench.live import LiveProgress
from cifarbench.models import build_model, count_params
from cifarbench.profiling.breakdown import step_breakdown_ms
from cifarbench.runtime import environment, resolve_runtime, watch_host_load
from cifarbench.schema import write_record
from cifarbench.train import to_device_data, train_runs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--params", type=Path, required=True)
    p.add_argument("--model", required=True, help="a key of models: in params.yaml")
    p.add_argument("--data", type=Path, required=True, help="prepared data folder (data/prepared)")
    p.add_argument("--weights", type=Path, required=True, help="output: trained state_dict (.pt)")
    p.add_argument("--live", type=Path, required=True,
                   help="output: DVCLive folder; its metrics.json ends as the headline metrics")
    p.add_argument("--details", type=Path, required=True, help="output: details JSON")
    p.add_argument("--confusion", type=Path, required=True, help="output: actual/predicted CSV")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    params = load_params(args.params)
    cfg = params.model(args.model)
    try:
        rt = resolve_runtime(params.device, params.precision, params.threads)
    except RuntimeError as exc:  # e.g. CUDA present but failing to start
        raise UserError(str(exc)) from None
    meta, train_split, test_split = load_prepared(args.data)
    data = to_device_data(train_split, test_split, classes=meta.classes, mean=meta.mean,
                          std=meta.std, device=rt.device,
                          source_train_images=meta.source_train_images)

    def build() -> torch.nn.Module:
        return build_model(cfg, num_classes=data.num_classes, image_size=data.image_size)

    live = LiveProgress(args.live, name=args.model, runs=cfg.train.runs, epochs=cfg.train.epochs)
    with watch_host_load(rt, what=f"train@{args.model}") as load:
        training = train_runs(build, data, cfg, rt, seed=params.seed, name=args.model,
                              progress=live)
    env = {**environment(rt), **load}  # the load sampled when training started and ended
    breakdown = step_breakdown_ms(training.model, data, cfg, rt, steps=cfg.train.breakdown_steps,
                                  step_model=training.step_model)
    runs = training.runs
    live.finish(results.mean_curves(runs), results.run_curves(runs))
    headline, details = results.summarize_runs(args.model, cfg.kind, cfg.train, training,
                                               n_params=count_params(training.model),
                                               breakdown_ms=breakdown, env=env)
    with atomic_path(args.weights) as tmp:
        torch.save(training.weights, tmp)
    write_csv(args.confusion, results.confusion_rows(runs[0].predictions, data.y_test.cpu(),
                                                     data.classes))
    write_record(args.details, details)
    write_record(args.live / "metrics.json", headline)  # last: replaces DVCLive's live values


if __name__ == "__main__":
    run_stage(main)
