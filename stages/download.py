"""Stage download: fetch ``data.source`` into the output folder, verified, plus ``source.json``.

Paths come from dvc.yaml; the work is in ``cifarbench.data.fetch``. The output folder is
filled under a temporary name and renamed into place: nothing appears unless it arrived
complete, within the ``data.*`` caps, matched its checksum and opened as a known layout.
A relative ``data.source`` resolves against the project, also from an experiment's temporary
copy (``dvc exp run --temp``, ``--queue``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cifarbench.cli import run_stage
from cifarbench.config import load_params
from cifarbench.data import SOURCE_RECORD, Limits, fetch_source, project_root
from cifarbench.io import atomic_dir, write_json


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--params", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="output folder (data/raw)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    data = load_params(args.params).data
    with atomic_dir(args.out) as out:
        record = fetch_source(data.source, out, sha256=data.sha256, md5=data.md5,
                              limits=Limits.from_config(data), root=project_root())
        write_json(out / SOURCE_RECORD, record)


if __name__ == "__main__":
    run_stage(main)
