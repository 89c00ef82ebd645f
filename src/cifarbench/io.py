"""Atomic writes: an output, or a folder of outputs, either appears complete or not at all.

Each writer works on a hidden temporary beside the destination, ``.<name>.<pid>.<random>.tmp``,
and renames it into place (``os.replace`` is atomic on POSIX), so a crash, Ctrl-C or SIGTERM
never leaves a half-written metrics file, plot table, checkpoint or download for DVC to cache.
A run killed outright (``kill -9``) cannot clean up after itself; the next write of the same
destination removes the temporaries of processes that no longer exist.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o644)  # mkstemp makes 0600 files; outputs are for everyone to read
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; if the block succeeds, it replaces
    ``path`` (whatever was there) in two renames. A kill between the renames leaves no
    ``path`` at all, never a mix of old and new files."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(path), suffix=".tmp", dir=path.parent))
    old = None
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700 folders
        if path.exists() or path.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=_tmp_prefix(path), suffix=".tmp",
                                        dir=path.parent))
            os.replace(path, old / "old")
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, old):
            if leftover is not None:
                _remove(leftover)


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Delete the temporaries that killed writers of ``path`` left behind; return them.

    Only temporaries of this exact destination whose process is gone are removed, so two
    processes writing the same folder never delete each other's work in progress.
    """
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(?:(\d+)\.)?[a-z0-9_]+\.tmp")
    removed = []
    with contextlib.suppress(OSError):
        for entry in path.parent.iterdir():
            match = pattern.fullmatch(entry.name)
            if match and not _alive(int(match.group(1) or 0)):
                _remove(entry)
                removed.append(entry)
    return removed


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


def _alive(pid: int) -> bool:
    """Is process ``pid`` running? 0 (a temporary named without a pid) counts as gone."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def write_json(path: str | Path, data: Mapping[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_csv(path: str | Path, rows: Sequence[Mapping[str, Any]],
              columns: Sequence[str] | None = None) -> None:
    """Write rows (dicts) as CSV with a header; floats keep 6 significant digits, None is empty.

    Quoting is the csv module's (RFC 4180): cells holding a comma, quote or newline (class
    names come from folder names) are quoted and their quotes doubled.
    """
    rows = list(rows)
    if columns is None:
        columns = list(rows[0]) if rows else []
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([_cell(row[c]) for c in columns] for row in rows)


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def read_json(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())
