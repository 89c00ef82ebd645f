"""Stage profile@NAME: inference throughput, latency, memory and FLOPs of a trained model."""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import torch

from cifarbench.cli import UserError, run_stage
from cifarbench.config import load_params
from cifarbench.data import read_meta
from cifarbench.io import write_csv
from cifarbench.models import build_model
from cifarbench.profiling.profiler import ProfileError, profile_model
from cifarbench.runtime import resolve_runtime
from cifarbench.schema import LatencyRow, ThroughputRow, columns, write_record


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--params", required=True, type=Path)
    p.add_argument("--model", required=True, help="a key of models: in params.yaml")
    p.add_argument("--meta", required=True, type=Path, help="data/prepared/meta.json")
    p.add_argument("--weights", required=True, type=Path, help="state_dict saved by train")
    p.add_argument("--metrics", required=True, type=Path, help="output: headline metrics JSON")
    p.add_argument("--details", required=True, type=Path, help="output: details JSON")
    p.add_argument("--throughput", required=True, type=Path)
    p.add_argument("--latency", required=True, type=Path)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    params = load_params(args.params)
    model_cfg = params.model(args.model)
    try:  # first: a setting this machine cannot honour is one line before any other work
        runtime = resolve_runtime(params.device, params.precision, params.threads)
    except RuntimeError as exc:  # UserError, or CUDA failing to initialise
        raise UserError(str(exc)) from None
    meta = read_meta(args.meta)
    num_classes, image_size = meta.num_classes, meta.image_size
    if not args.weights.is_file():
        raise UserError(f"{args.weights}: no such checkpoint; run train@{args.model} first")

    model = build_model(model_cfg, num_classes=num_classes, image_size=image_size)
    try:
        state = torch.load(args.weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except (RuntimeError, ValueError, TypeError, OSError, pickle.UnpicklingError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise UserError(f"{args.weights}: does not fit models.{args.model} with {num_classes} "
                        f"classes at {image_size}px ({first}); retrain or fix params.yaml") from None
    try:
        result = profile_model(model, image_size=image_size, cfg=params.profile, runtime=runtime,
                               name=args.model, checkpoint=args.weights)
    except ProfileError as exc:
        raise UserError(f"profile@{args.model}: {exc}; lower profile.batch_sizes") from None

    headline, details = result.metrics()
    write_csv(args.throughput, result.throughput_rows(), columns(ThroughputRow))
    write_csv(args.latency, result.latency_rows(), columns(LatencyRow))
    write_record(args.details, details)
    write_record(args.metrics, headline)


if __name__ == "__main__":
    run_stage(main)
