"""``python -m cifarbench.study [EXP ...] --out DIR``: compare DVC experiments (README: Study)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cifarbench.cli import run_stage
from cifarbench.study import run_study


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m cifarbench.study", description=__doc__)
    p.add_argument("experiments", nargs="*", metavar="EXP",
                   help="experiment names (or commit prefixes); default: every finished "
                        "experiment that dvc exp show lists")
    p.add_argument("--out", required=True, type=Path, help="folder for the figures and study.md")
    p.add_argument("--repo", default=Path("."), type=Path, help="the DVC project (default: .)")
    p.add_argument("--allow-mixed", action="store_true",
                   help="draw experiments from different devices, data or budget rules together")
    p.add_argument("--all-commits", action="store_true",
                   help="look at the experiments of every commit (dvc exp show -A), not only HEAD's")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    paths = run_study(args.repo, args.experiments, args.out, allow_mixed=args.allow_mixed,
                      all_commits=args.all_commits)
    for path in paths:
        print(path, file=sys.stderr)


if __name__ == "__main__":
    run_stage(main)
