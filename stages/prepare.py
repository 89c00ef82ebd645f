"""Stage prepare: decode the fetched source into ``train.npz``/``test.npz`` + ``meta.json``.

Paths come from dvc.yaml; the work is in ``cifarbench.data.prepare``. Everything is computed
before the first file is written; the three files of the output folder appear together.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cifarbench.cli import run_stage
from cifarbench.config import load_params
from cifarbench.data import Limits, prepare_dataset, save_prepared


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--params", type=Path, required=True)
    p.add_argument("--raw", type=Path, required=True, help="download output (data/raw)")
    p.add_argument("--out", type=Path, required=True, help="output folder (data/prepared)")
    p.add_argument("--metrics", type=Path, required=True, help="output: metrics/data.json")
    p.add_argument("--details", type=Path, required=True,
                   help="output: metrics/details/data.json (label, class counts)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    params = load_params(args.params)
    data = prepare_dataset(args.raw, image_size=params.data.image_size,
                           train_size=params.data.train_size, test_size=params.data.test_size,
                           seed=params.seed, limits=Limits.from_config(params.data))
    save_prepared(data, args.out, args.metrics, args.details)


if __name__ == "__main__":
    run_stage(main)
