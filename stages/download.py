"""Stage download: fetch ``data.source`` into the output folder, verified, plus ``source.json``.

Paths come from dvc.yaml; the work is in ``cifarbench.data.fetch``. Nothing is left in the
output folder unless it arrived complete, matched its checksum and opened as a known layout.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cifarbench.cli import run_stage
from cifarbench.config import load_params
from cifarbench.data import SOURCE_RECORD, fetch_source
from cifarbench.io import write_json


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--params", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="output folder (data/raw)")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    data = load_params(args.params).data
    record = fetch_source(data.source, args.out, sha256=data.sha256, md5=data.md5,
                          timeout_s=data.timeout_s, retries=data.retries)
    write_json(args.out / SOURCE_RECORD, record)


if __name__ == "__main__":
    run_stage(main)
