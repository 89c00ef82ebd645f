"""Stage train@MODEL: train one model from scratch on the prepared data (see dvc.yaml)."""

import argparse
import json
from pathlib import Path

import torch

from cifarbench import results
from cifarbench.cli import run_stage
from cifarbench.config import load_params
from cifarbench.data import load_split
from cifarbench.io import atomic_path, write_csv, write_json
from cifarbench.models import build_model, count_params
from cifarbench.profiling.breakdown import step_breakdown_ms
from cifarbench.runtime import environment, resolve_runtime
from cifarbench.train import to_device_data, train_runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--model", required=True, help="a key of models: in params.yaml")
    ap.add_argument("--data", required=True, help="prepared data directory")
    ap.add_argument("--weights", required=True, help="output: trained state_dict (.pt)")
    ap.add_argument("--metrics", required=True, help="output: metrics JSON")
    ap.add_argument("--curves", required=True, help="output: per-epoch CSV (mean over runs)")
    ap.add_argument("--run-curves", required=True, help="output: per-epoch CSV of every run")
    ap.add_argument("--confusion", required=True, help="output: actual/predicted CSV")
    args = ap.parse_args()

    params = load_params(args.params)
    cfg = params.model(args.model)
    rt = resolve_runtime(params.device, params.precision, params.threads)

    data_dir = Path(args.data)
    meta = json.loads((data_dir / "meta.json").read_text())
    data = to_device_data(load_split(data_dir / "train.npz"), load_split(data_dir / "test.npz"),
                          classes=meta["classes"], mean=meta["mean"], std=meta["std"],
                          device=rt.device)

    def build() -> torch.nn.Module:
        return build_model(cfg, num_classes=data.num_classes, image_size=data.image_size)

    training = train_runs(build, data, cfg, rt, seed=params.seed, name=args.model)
    breakdown = step_breakdown_ms(training.model, data, cfg, rt, steps=cfg.train.breakdown_steps,
                                  step_model=training.step_model)
    runs = training.runs
    metrics = results.summarize_runs(args.model, cfg.kind, cfg.train, training,
                                     n_params=count_params(training.model),
                                     breakdown_ms=breakdown, env=environment(rt))
    with atomic_path(args.weights) as tmp:
        torch.save(training.weights, tmp)
    write_csv(args.curves, results.mean_curves(runs))
    write_csv(args.run_curves, results.run_curves(runs))
    write_csv(args.confusion, results.confusion_rows(runs[0].predictions, data.y_test.cpu(),
                                                     data.classes))
    write_json(args.metrics, metrics)  # last: its presence means the stage finished


if __name__ == "__main__":
    run_stage(main)
