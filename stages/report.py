"""Stage report: figures, metrics/report.json and metrics/summary.md from every model's metrics.

Paths come from dvc.yaml; the work is in ``cifarbench.report``. All inputs are validated before
anything is drawn, and every output is written atomically.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cifarbench.cli import run_stage
from cifarbench.config import load_params
from cifarbench.report import ReportPaths, load_inputs, make_report, write_report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--params", type=Path, required=True)
    p.add_argument("--data-metrics", type=Path, required=True, help="metrics/data.json")
    p.add_argument("--data-details", type=Path, required=True, help="metrics/details/data.json")
    p.add_argument("--train-live", type=Path, required=True,
                   help="directory of <model>/ DVCLive folders (metrics.json, plots/)")
    p.add_argument("--train-details", type=Path, required=True, help="directory of <model>.json")
    p.add_argument("--profile-metrics", type=Path, required=True, help="directory of <model>.json")
    p.add_argument("--profile-details", type=Path, required=True,
                   help="directory of <model>.json")
    p.add_argument("--confusion", type=Path, required=True, help="directory of <model>.csv")
    p.add_argument("--throughput", type=Path, required=True, help="directory of <model>.csv")
    p.add_argument("--latency", type=Path, required=True, help="directory of <model>.csv")
    p.add_argument("--figures", type=Path, required=True, help="output directory for the PNGs")
    p.add_argument("--report", type=Path, required=True, help="output: report JSON")
    p.add_argument("--summary", type=Path, required=True, help="output: Markdown summary")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    params = load_params(args.params)
    inputs = load_inputs(list(params.models), ReportPaths(
        data_metrics=args.data_metrics, data_details=args.data_details, train_live=args.train_live,
        train_details=args.train_details, profile_metrics=args.profile_metrics,
        profile_details=args.profile_details, confusion=args.confusion,
        throughput=args.throughput, latency=args.latency))
    report = make_report(inputs, params)
    written = write_report(report, figures_dir=args.figures, report_path=args.report,
                           summary_path=args.summary)
    print(f"report: wrote {len(written)} files ({args.figures}/, {args.report}, {args.summary})",
          file=sys.stderr)


if __name__ == "__main__":
    run_stage(main)
