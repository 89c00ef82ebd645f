"""Fetch the data source into ``data/raw/``, verified, the way torchvision's ``download_url`` does.

``data.source`` is an ``http(s)://`` or ``file://`` URL, a local archive or a local directory.
Downloads have a per-read timeout, a few retries with exponential back-off and a byte/rate
progress bar on stderr; every copy goes to a temporary name and is renamed only once it is
complete, its checksum matches and it opens as a safe archive of a known layout. Checksums: the
published MD5 of the official ``cifar-10-python.tar.gz``, ``data.sha256``/``data.md5`` when set,
else a ``<archive>.sha256`` (or ``.md5``) file beside a local archive. Without a network (or
with the host unreachable) it gives up within about :data:`CONNECT_BUDGET_S` seconds and says how
to point ``data.source`` at a local copy.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import shutil
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TextIO

from tqdm import tqdm

from cifarbench.config import OFFICIAL_CIFAR10_URL
from cifarbench.data.sources import detect_layout, open_source
from cifarbench.errors import UserError
from cifarbench.io import atomic_path

OFFICIAL_CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
# Known archives by file name (the official URL and its mirrors serve the same bytes).
KNOWN_MD5 = {"cifar-10-python.tar.gz": OFFICIAL_CIFAR10_MD5}
CONNECT_BUDGET_S = 25.0  # total time spent failing to reach a host before giving up
CHUNK = 1 << 20
OFFLINE_HINT = ("If this machine is offline, set data.source to a local copy of the data (an "
                "archive, a directory or a file:// URL), e.g. "
                "`dvc exp run -S data.source=../shared/data/cifar10-jpeg.tar.gz`")


@dataclass(frozen=True)
class Checksum:
    algo: str  # "sha256" | "md5"
    hexdigest: str
    origin: str  # named in messages: "data.sha256", "the official CIFAR-10 MD5", a sidecar file


@dataclass(frozen=True)
class Digests:
    size: int
    sha256: str
    md5: str


def fetch_source(source: str, out_dir: str | Path, *, sha256: str | None = None,
                 md5: str | None = None, timeout_s: float = 30.0, retries: int = 3,
                 backoff_s: float = 1.0, log: TextIO | None = None) -> dict:
    """Fetch ``source`` into ``out_dir`` (verified) and return the ``source.json`` record.

    The fetched entry is ``out_dir/<archive name>`` or ``out_dir/<dir name>/``; the record is
    ``{"source", "kind": "archive"|"directory", "name", "sha256", "md5", "verified"}`` where
    ``verified`` names the checksum that matched (null when none was known).
    """
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    try:
        return _fetch(source, out_dir, sha256=sha256, md5=md5, timeout_s=timeout_s,
                      retries=retries, backoff_s=backoff_s, log=log or sys.stderr)
    except BaseException:
        # leave no trace of a failed fetch: not even the empty folder the writes created
        if created and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()
        raise


def _fetch(source: str, out_dir: Path, *, sha256: str | None, md5: str | None,
           timeout_s: float, retries: int, backoff_s: float, log: TextIO) -> dict:
    url, path = _classify(source)
    if url is not None:
        name = _url_name(url)
        checks = expected_checksums(source, name, sha256=sha256, md5=md5)
        with atomic_path(out_dir / name) as tmp:
            digests = download_url(url, tmp, name=name, timeout_s=timeout_s, retries=retries,
                                   backoff_s=backoff_s, log=log)
            verify(url, digests, checks)
            inspect_source(tmp, label=url)
        kind = "archive"
    elif path is not None and path.is_dir():
        if sha256 or md5:
            raise UserError(f"data.source = {source!r} is a directory, but data.sha256/data.md5 "
                            "checksum a single file; unset them or point data.source at an archive")
        name = path.resolve().name
        inspect_source(path, label=source)
        _copy_dir(path, out_dir / name)
        digests, checks, kind = None, [], "directory"
    else:
        assert path is not None  # _classify returns a URL or a local path
        name = path.name
        checks = expected_checksums(source, name, sha256=sha256, md5=md5, local=path)
        with atomic_path(out_dir / name) as tmp:
            try:
                with open(path, "rb") as src, open(tmp, "wb") as dst:
                    digests = _copy_stream(src, dst, total=None, desc=None, log=log)
            except OSError as exc:
                raise UserError(f"data.source = {source!r}: cannot read ({exc.strerror})") from None
            verify(source, digests, checks)
            inspect_source(tmp, label=source)
        kind = "archive"
    verified = "; ".join(c.origin for c in checks) or None
    size = f"{digests.size / 2**20:.1f} MiB, " if digests else ""
    checked = f"checksum matches {verified}" if verified else "no checksum known"
    print(f"download: {source} -> {out_dir / name} ({size}{checked})", file=log)
    return {"source": source, "kind": kind, "name": name,
            "sha256": digests.sha256 if digests else None, "md5": digests.md5 if digests else None,
            "verified": verified}


def expected_checksums(source: str, name: str, *, sha256: str | None = None,
                       md5: str | None = None, local: Path | None = None) -> list[Checksum]:
    """The checksums a fetched file must match: params, the official MD5, or a sidecar file."""
    checks = []
    if sha256:
        checks.append(Checksum("sha256", sha256.lower(), "data.sha256"))
    if md5:
        checks.append(Checksum("md5", md5.lower(), "data.md5"))
    # The official URL is always held to its published MD5; a file of the official name only
    # when the user gave no checksum of their own.
    if source == OFFICIAL_CIFAR10_URL:
        checks.append(Checksum("md5", OFFICIAL_CIFAR10_MD5, "the published MD5 of CIFAR-10"))
    elif not checks and name in KNOWN_MD5:
        checks.append(Checksum("md5", KNOWN_MD5[name], f"the published MD5 of {name}"))
    if not checks and local is not None:
        for algo, length in (("sha256", 64), ("md5", 32)):
            sidecar = local.with_name(f"{local.name}.{algo}")
            if sidecar.is_file():
                checks.append(Checksum(algo, _read_sidecar(sidecar, length), str(sidecar)))
    return checks


def _read_sidecar(path: Path, length: int) -> str:
    # sha256sum/md5sum format: "<hex>  <file name>"
    words = path.read_text(errors="replace").split()
    digest = words[0].lower() if words else ""
    if len(digest) != length or any(c not in "0123456789abcdef" for c in digest):
        raise UserError(f"{path}: expected a {length}-digit hex checksum first, "
                        f"got {digest[:70]!r}")
    return digest


def verify(label: str, digests: Digests, checks: list[Checksum]) -> None:
    for c in checks:
        got = digests.sha256 if c.algo == "sha256" else digests.md5
        if got != c.hexdigest:
            raise UserError(
                f"checksum mismatch for {label}: {c.algo.upper()} is {got}, expected "
                f"{c.hexdigest} ({c.origin}); the copy was discarded. The file is corrupt or not "
                f"the expected one: fetch it again, or correct {c.origin} if the data changed "
                "on purpose")


def inspect_source(path: Path, *, label: str) -> None:
    """Fail now, not in prepare, on a corrupt, unsafe or unrecognisable source."""
    try:
        with open_source(path) as src:
            src.verify()
            detect_layout(src)
    except UserError as exc:  # name the source the user gave, not the temporary copy
        raise UserError(str(exc).replace(str(path), label)) from None


# --------------------------------------------------------------------------------- locations


def _classify(source: str) -> tuple[str | None, Path | None]:
    """(url, None) for http(s); (None, path) for file:// URLs and local paths."""
    scheme = urllib.parse.urlsplit(source).scheme.lower()
    if scheme in ("http", "https"):
        return source, None
    if scheme == "file":
        parts = urllib.parse.urlsplit(source)
        # file:///abs/path and file://localhost/abs/path; be lenient with file://../relative
        host = "" if parts.netloc in ("", "localhost") else parts.netloc
        path = Path(urllib.request.url2pathname(host + parts.path))
    elif scheme and len(scheme) > 1:
        raise UserError(f"data.source = {source!r}: unsupported scheme {scheme!r} (allowed: "
                        "http://, https://, file://, a local archive or directory)")
    else:
        path = Path(source)
    if not path.exists():
        raise UserError(f"data.source = {source!r}: no such file or directory ({path.absolute()};"
                        f" relative paths are resolved from the directory dvc runs in)")
    return None, path


def _url_name(url: str) -> str:
    name = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
    if not name or name in ("source.json",):
        raise UserError(f"data.source = {url!r}: the URL path does not end in a file name")
    return name


# -------------------------------------------------------------------------------- transfers


def download_url(url: str, dest: Path, *, name: str, timeout_s: float = 30.0, retries: int = 3,
                 backoff_s: float = 1.0, log: TextIO | None = None) -> Digests:
    """Download ``url`` to ``dest`` with retries; return the size and digests of what arrived.

    ``timeout_s`` bounds each network read; ``retries`` extra attempts follow a failure after
    ``backoff_s``, ``2 * backoff_s``, ... seconds. While the host has never answered, all
    attempts together stop after :data:`CONNECT_BUDGET_S` seconds.
    """
    log = log or sys.stderr
    start = time.monotonic()
    reached, last, attempts = False, "", 0
    for attempt in range(retries + 1):
        left = CONNECT_BUDGET_S - (time.monotonic() - start)
        if attempt:
            pause = backoff_s * 2 ** (attempt - 1)
            if not reached and pause >= left:
                break
            time.sleep(pause)
            left -= pause
        attempts += 1
        timeout = timeout_s if reached else min(timeout_s, left)
        try:
            request = urllib.request.Request(url, headers={"User-Agent": "cifarbench"})
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                reached = True
                total = resp.headers.get("Content-Length")
                total = int(total) if total and total.isdigit() else None
                with open(dest, "wb") as f:
                    digests = _copy_stream(resp, f, total=total, desc=name, log=log)
                if total is not None and digests.size != total:
                    raise http.client.IncompleteRead(b"", total - digests.size)
                return digests
        except urllib.error.HTTPError as exc:
            reached = True
            last = f"HTTP {exc.code} {exc.reason}"
            if exc.code not in (408, 429) and exc.code < 500:  # the request itself is wrong
                raise UserError(f"cannot download {url}: {last}; check data.source") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            last = _describe_network_error(exc, timeout)
        print(f"download: attempt {attempts}/{retries + 1} failed: {last}", file=log)
    elapsed = time.monotonic() - start
    tried = f"{attempts} attempt{'s' * (attempts > 1)} in {elapsed:.0f} s"
    if reached:
        raise UserError(f"cannot download {url}: {last} ({tried}; data.timeout_s = {timeout_s:g},"
                        f" data.retries = {retries})")
    raise UserError(f"cannot reach {url}: {last} ({tried}). {OFFLINE_HINT}")


def _describe_network_error(exc: BaseException, timeout: float) -> str:
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, socket.gaierror):
        return "host name not found (no network or DNS)"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return f"timed out (no data for {timeout:g} s)"
    if isinstance(reason, http.client.IncompleteRead):
        return f"connection closed with {reason.expected} bytes still to come"
    return str(reason).replace("\n", " ") or type(reason).__name__


def _copy_stream(src: BinaryIO, dst: BinaryIO, *, total: int | None, desc: str | None,
                 log: TextIO) -> Digests:
    """Copy while hashing; show a byte/rate progress bar when ``desc`` is given."""
    sha, md5, size = hashlib.sha256(), hashlib.md5(), 0
    bar = tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, file=log,
               mininterval=0.5, disable=desc is None, leave=True)
    with bar:
        while chunk := src.read(CHUNK):
            sha.update(chunk)
            md5.update(chunk)
            size += len(chunk)
            try:
                dst.write(chunk)
            except OSError as exc:  # not a network problem: do not retry
                raise UserError(f"cannot write {getattr(dst, 'name', 'output')}: "
                                f"{exc.strerror}") from None
            bar.update(len(chunk))
    return Digests(size=size, sha256=sha.hexdigest(), md5=md5.hexdigest())


def _copy_dir(src: Path, dest: Path) -> None:
    """Copy a directory (links followed) to a temporary sibling of ``dest``, then rename."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.resolve().is_relative_to(src.resolve()):
        raise UserError(f"data.source = {str(src)!r} contains the output {dest}; choose a source "
                        "outside it")
    with _temporary_dir(dest) as tmp:
        try:
            shutil.copytree(src, tmp, symlinks=False, dirs_exist_ok=True)
        except (shutil.Error, OSError) as exc:
            raise UserError(f"cannot copy {src} to {dest}: {exc}") from None
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        elif dest.exists():
            dest.unlink()
        os.replace(tmp, dest)


@contextlib.contextmanager
def _temporary_dir(dest: Path) -> Iterator[Path]:
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
