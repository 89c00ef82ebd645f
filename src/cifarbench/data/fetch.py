"""Fetch the data source into ``data/raw/``, verified, the way torchvision's ``download_url`` does.

``data.source`` is an ``http(s)://`` or ``file://`` URL, a local archive or a local directory.
Downloads have a per-read timeout, a few retries with exponential back-off and a byte/rate
progress bar on stderr; every copy goes to a temporary name and is renamed only once it is
complete, its checksum matches and it opens as a safe archive of a known layout. Checksums: the
published MD5 of the official ``cifar-10-python.tar.gz``, ``data.sha256``/``data.md5`` when set,
else a ``<archive>.sha256`` (or ``.md5``) file beside a local archive. Without a network (or
with the host unreachable) it gives up within about :data:`CONNECT_BUDGET_S` seconds and says how
to point ``data.source`` at a local copy.

A relative local path (or ``file://`` URL) resolves against the project root
(:func:`project_root`), not the stage's working directory: ``dvc exp run --temp`` and queued
experiments run the stage in a copy of the project under ``<project>/.dvc/tmp/exps/``, where
``../shared/...`` would point somewhere else. The record keeps the path as written, so
``data/raw`` hashes the same on every machine.

What a source can cost is capped (:class:`~cifarbench.data.sources.Limits`): the bytes kept
(``data.max_source_gib``, from the announced size before any byte arrives, then while
streaming), the whole download's duration (``data.download_deadline_s``) and its rate
(``data.min_rate_kib_s`` over each ``data.timeout_s`` window, so a server that trickles a
byte a second is cut off). A directory is copied file by file from its checked listing, so a
link out of it is refused, never followed.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.client
import os
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from tqdm import tqdm

from cifarbench.config import OFFICIAL_CIFAR10_URL
from cifarbench.data.sources import Limits, Source, detect_layout, open_source, size_text
from cifarbench.errors import UserError
from cifarbench.io import atomic_dir, atomic_path

OFFICIAL_CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
# Known archives by file name (the official URL and its mirrors serve the same bytes).
KNOWN_MD5 = {"cifar-10-python.tar.gz": OFFICIAL_CIFAR10_MD5}
CONNECT_BUDGET_S = 25.0  # total time spent failing to reach a host before giving up
# The rate is measured over RATE_WINDOWS * data.timeout_s, so that a stall (no data at all)
# is always reported, and retried, as the per-read timeout it is.
RATE_WINDOWS = 2
CHUNK = 1 << 20
MAX_NAME_BYTES = 200  # of a file name taken from a URL (file systems allow 255)
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
                 md5: str | None = None, backoff_s: float = 1.0, limits: Limits,
                 root: Path | None = None,
                 log: TextIO | None = None) -> dict:
    """Fetch ``source`` into ``out_dir`` (verified) and return the ``source.json`` record.

    The fetched entry is ``out_dir/<archive name>`` or ``out_dir/<dir name>/``; the record is
    ``{"source", "kind": "archive"|"directory", "name", "sha256", "md5", "verified"}`` where
    ``verified`` names the checksum that matched (null when none was known). ``limits`` are
    the ``data.*`` caps (:meth:`Limits.from_config`). A relative local ``source`` resolves
    against ``root`` (default: the current directory; the download stage passes
    :func:`project_root`); the record keeps ``source`` as given.
    """
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    try:
        return _fetch(source, out_dir, sha256=sha256, md5=md5, backoff_s=backoff_s, limits=limits,
                      root=Path.cwd() if root is None else root, log=log or sys.stderr)
    except BaseException:
        # leave no trace of a failed fetch: not even the empty folder the writes created
        if created and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()
        raise


def _fetch(source: str, out_dir: Path, *, sha256: str | None, md5: str | None,
           backoff_s: float, limits: Limits, root: Path,
           log: TextIO) -> dict:
    url, path = _classify(source, root)
    found = "" if path is None or path.is_absolute() else f" (read from {root / path})"
    if url is not None:
        name = _url_name(url)
        checks = expected_checksums(source, name, sha256=sha256, md5=md5)
        with atomic_path(out_dir / name) as tmp:
            digests = download_url(url, tmp, name=name, backoff_s=backoff_s, limits=limits,
                                   log=log)
            verify(url, digests, checks)
            inspect_source(tmp, label=url, limits=limits)
        kind = "archive"
    elif path is not None and (root / path).is_dir():
        if sha256 or md5:
            raise UserError(f"data.source = {_shown(source)} is a directory, but data.sha256/"
                            "data.md5 checksum a single file; unset them or point data.source at"
                            " an archive")
        name = (root / path).resolve().name
        dest = out_dir / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.resolve().is_relative_to((root / path).resolve()):
            raise UserError(f"data.source = {_shown(source)}{found} contains the output {dest}; "
                            "choose a source outside it")
        try:
            with open_source(root / path, limits) as src:
                src.verify()
                detect_layout(src)
                _copy_dir(src, dest, limits)
        except UserError as exc:  # name the folder as data.source gives it
            text = str(exc)
            prefix = f"{root / path}:"
            if text.startswith(prefix):
                text = f"{path}{found}:{text[len(prefix):]}"
            raise UserError(text) from None
        digests, checks, kind = None, [], "directory"
    else:
        assert path is not None  # _classify returns a URL or a local path
        name = path.name
        checks = expected_checksums(source, name, sha256=sha256, md5=md5, local=path, root=root)
        with atomic_path(out_dir / name) as tmp:
            try:
                with open(root / path, "rb") as src, open(tmp, "wb") as dst:
                    _check_source_size(os.fstat(src.fileno()).st_size, source, limits)
                    digests = _copy_stream(src, dst, total=None, desc=None, log=log,
                                           limits=limits, label=source + found)
            except OSError as exc:
                raise UserError(f"data.source = {_shown(source)}{found}: cannot read "
                                f"({exc.strerror})") from None
            verify(source + found, digests, checks)
            inspect_source(tmp, label=source + found, limits=limits)
        kind = "archive"
    verified = "; ".join(c.origin for c in checks) or None
    size = f"{digests.size / 2**20:.1f} MiB, " if digests else ""
    checked = f"checksum matches {verified}" if verified else "no checksum known"
    print(f"download: {source}{found} -> {name} ({size}{checked})", file=log)
    return {"source": source, "kind": kind, "name": name,
            "sha256": digests.sha256 if digests else None, "md5": digests.md5 if digests else None,
            "verified": verified}


def expected_checksums(source: str, name: str, *, sha256: str | None = None,
                       md5: str | None = None, local: Path | None = None,
                       root: Path | None = None) -> list[Checksum]:
    """The checksums a fetched file must match: params, the official MD5, or a sidecar file.

    ``local`` is the local source as written (relative to ``root``, default the current
    directory); a sidecar is named the same way, so the record does not depend on ``root``.
    """
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
            found = (Path.cwd() if root is None else root) / sidecar
            if found.is_file():
                checks.append(Checksum(algo, _read_sidecar(found, length), str(sidecar)))
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


def inspect_source(path: Path, *, label: str, limits: Limits) -> None:
    """Fail now, not in prepare, on a corrupt, unsafe, oversized or unrecognisable source."""
    try:
        with open_source(path, limits) as src:
            src.verify()
            detect_layout(src)
    except UserError as exc:  # name the source the user gave, not the temporary copy
        raise UserError(str(exc).replace(str(path), label)) from None


# --------------------------------------------------------------------------------- locations


def _shown(source: str, limit: int = 200) -> str:
    """``source`` as messages quote it: repr, clipped (a params value can be any length)."""
    text = repr(source)
    return text if len(text) <= limit else f"{text[:limit - 4]}...'"


def project_root(cwd: Path | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """The project a stage runs for, which relative local sources resolve against.

    DVC sets ``DVC_ROOT`` for every stage command: the project for ``dvc repro`` and ``dvc exp
    run``, and the original project, not the copy the stage runs in, for ``dvc exp run --temp``
    and queued experiments (``dvc/repo/experiments/queue/base.py``). It is used when the
    working directory (default: the current one) lies inside it, so a value inherited from
    another process is ignored; otherwise the working directory is. Either way, a path inside
    an experiment copy, ``<project>/.dvc/tmp/exps/<copy>/...``, gives ``<project>`` (DVC
    versions that set ``DVC_ROOT`` to the copy).
    """
    cwd = Path.cwd() if cwd is None else cwd
    env = os.environ if environ is None else environ
    base = cwd
    dvc_root = env.get("DVC_ROOT")
    if dvc_root and Path(dvc_root).is_absolute() and \
            cwd.resolve().is_relative_to(Path(dvc_root).resolve()):
        base = Path(dvc_root)
    parts = base.parts
    for i in range(1, len(parts) - 3):
        if parts[i:i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return base


def _classify(source: str, root: Path) -> tuple[str | None, Path | None]:
    """(url, None) for http(s); (None, path as written) for file:// URLs and local paths, the
    path existing under ``root`` (where a relative one resolves)."""
    try:
        parts = urllib.parse.urlsplit(source)
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError as exc:
        raise UserError(f"data.source = {_shown(source)}: not a valid URL or path "
                        f"({exc})") from None
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        if not parts.hostname:
            raise UserError(f"data.source = {_shown(source)}: the URL has no host name")
        try:
            parts.hostname.encode("idna")  # what the socket layer does, raising UnicodeError
        except UnicodeError:
            raise UserError(f"data.source = {_shown(source)}: {parts.hostname[:80]!r} is not "
                            "a valid host name") from None
        if any(c in source for c in "\x00\r\n\t "):
            raise UserError(f"data.source = {_shown(source)}: the URL holds a space or control "
                            "character; percent-encode it")
        return source, None
    if scheme == "file":
        # file:///abs/path and file://localhost/abs/path; be lenient with file://../relative
        host = "" if parts.netloc in ("", "localhost") else parts.netloc
        path = Path(urllib.request.url2pathname(host + parts.path))
    elif scheme and len(scheme) > 1:
        raise UserError(f"data.source = {_shown(source)}: unsupported scheme {scheme!r} "
                        "(allowed: http://, https://, file://, a local archive or directory)")
    else:
        path = Path(source)
    if "\x00" in str(path) or not (root / path).exists():
        where = "" if path.is_absolute() else (
            f"; a relative path resolves against the project root, {_shown(str(root))}")
        raise UserError(f"data.source = {_shown(source)}: no such file or directory (looked "
                        f"for {_shown(str(root / path))}{where})")
    if not ((root / path).is_dir() or (root / path).is_file()):  # /dev/zero, a FIFO: endless
        raise UserError(f"data.source = {_shown(source)}: not a regular file or a directory")
    return None, path


def _url_name(url: str) -> str:
    """The archive's file name: the URL path's last segment, percent-decoded, checked to be a
    plain visible file name (never ``..``, a hidden name or one with a separator)."""
    name = urllib.parse.unquote(urllib.parse.urlsplit(url).path).rsplit("/", 1)[-1]
    problem = None
    if name in ("", ".", ".."):
        problem = "does not end in a file name"
    elif name.startswith("."):
        problem = f"ends in a hidden name {name!r}"
    elif any(c in name for c in "\\\x00") or not name.isprintable():
        problem = f"ends in {name!r}, which holds a separator or control character"
    elif len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        problem = f"ends in a name longer than {MAX_NAME_BYTES} bytes"
    elif name == "source.json":
        problem = "ends in source.json, the name of the download record"
    if problem:
        raise UserError(f"data.source = {_shown(url)}: the URL path {problem}; use the URL of "
                        "the archive itself (e.g. .../cifar-10-python.tar.gz)")
    return name


def _check_source_size(size: int, label: str, limits: Limits) -> None:
    if size > limits.source_bytes:
        raise UserError(f"{label} is {size_text(size)}, over {limits.source_cap()}; raise it if "
                        "the source is genuine")


# -------------------------------------------------------------------------------- transfers


def download_url(url: str, dest: Path, *, name: str, backoff_s: float = 1.0, limits: Limits,
                 log: TextIO | None = None) -> Digests:
    """Download ``url`` to ``dest`` with retries; return the size and digests of what arrived.

    ``limits.timeout_s`` bounds each network read; the rate must reach ``limits.min_rate`` over every
    ``RATE_WINDOWS * timeout_s`` seconds, or the download stops. ``limits.retries`` extra attempts
    follow a failure after ``backoff_s``, ``2 * backoff_s``, ... seconds. While the host has
    never answered, all attempts together stop after :data:`CONNECT_BUDGET_S` seconds; whatever
    happens, the whole download stops at ``limits.deadline_s``, and at ``limits.source_bytes``
    bytes.
    """
    log = log or sys.stderr
    start = time.monotonic()
    deadline = start + limits.deadline_s
    timeout_s, retries = limits.timeout_s, limits.retries
    reached, last, attempts, out_of_time = False, "", 0, False
    for attempt in range(retries + 1):
        left = CONNECT_BUDGET_S - (time.monotonic() - start)
        if attempt:
            pause = backoff_s * 2 ** (attempt - 1)
            if not reached and pause >= left:
                break
            if time.monotonic() + pause >= deadline:
                out_of_time = True
                break
            time.sleep(pause)
            left -= pause
        attempts += 1
        timeout = timeout_s if reached else min(timeout_s, left)
        timeout = max(min(timeout, deadline - time.monotonic()), 0.01)
        with _Watch(deadline=deadline, min_rate=limits.min_rate,
                    window=RATE_WINDOWS * timeout_s, limits=limits) as watch:
            try:
                request = urllib.request.Request(url, headers={"User-Agent": "cifarbench"})
                with _opener(watch).open(request, timeout=timeout) as resp:
                    reached = True
                    total = _content_length(resp.headers.get("Content-Length"))
                    if total is not None:
                        _check_source_size(total, f"{url} (Content-Length)", limits)
                    with open(dest, "wb") as f:
                        digests = _copy_stream(resp, f, total=total, desc=name, log=log,
                                               limits=limits, label=url, watch=watch)
                    if watch.reason:  # the connection was cut: what arrived is not the file
                        raise http.client.IncompleteRead(b"")
                    if total is not None and digests.size != total:
                        raise http.client.IncompleteRead(b"", total - digests.size)
                    return digests
            except urllib.error.HTTPError as exc:
                reached = True
                last = _describe_http_error(exc)
                if exc.code not in (408, 429) and exc.code < 500:  # the request itself is wrong
                    raise UserError(f"cannot download {url}: {last}; check data.source") from None
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                last = watch.reason or _describe_network_error(exc, timeout)
            if watch.past_deadline:
                out_of_time = True
                break
            if watch.reason:  # too slow: a server that trickles now will trickle again
                raise UserError(f"cannot download {url}: {watch.reason}; stopped. For a slow "
                                "connection lower data.min_rate_kib_s (0 turns it off), or set "
                                "data.source to a local copy")
        print(f"download: attempt {attempts}/{retries + 1} failed: {last}", file=log)
    elapsed = time.monotonic() - start
    tried = f"{attempts} attempt{'s' * (attempts > 1)} in {elapsed:.0f} s"
    if out_of_time:
        raise UserError(f"cannot download {url}: not complete within data.download_deadline_s = "
                        f"{limits.deadline_s:g} ({tried}); raise it for a slow connection, or "
                        "set data.source to a local copy")
    if reached:
        raise UserError(f"cannot download {url}: {last} ({tried}; data.timeout_s = {timeout_s:g},"
                        f" data.retries = {retries})")
    raise UserError(f"cannot reach {url}: {last} ({tried}). {OFFLINE_HINT}")


def _content_length(value: str | None) -> int | None:
    """The announced size in bytes; None when absent or not a number. A number too long for
    int() (over 4300 digits) is, in any case, over every size cap."""
    value = (value or "").strip()
    if not value.isdigit():
        return None
    return int(value) if len(value) <= 30 else 10 ** 30


def _describe_http_error(exc: urllib.error.HTTPError) -> str:
    if 300 <= exc.code < 400:  # urllib gives up on a loop or after max_redirections
        limit = urllib.request.HTTPRedirectHandler.max_redirections
        return f"HTTP {exc.code}: a redirect loop, or more than {limit} redirects"
    return f"HTTP {exc.code} {' '.join(str(exc.reason).split())}"


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
    return " ".join(str(reason).split()) or type(reason).__name__


class _Watch:
    """Cuts a download attempt's connection when the whole download passes its deadline, or
    when the attempt brings less than ``min_rate`` bytes/s over any ``window`` seconds
    (headers included: a server may trickle those too).

    A per-read socket timeout cannot do either: each byte that arrives starts it again. The
    watch keeps a duplicate of each connection's TCP socket; shutting that down ends any read
    in progress on the original (TLS too), and the attempt fails with :attr:`reason`.
    """

    def __init__(self, *, deadline: float, min_rate: float, window: float,
                 limits: Limits) -> None:
        self.received = 0  # body bytes, updated by the reader
        self.reason: str | None = None
        self.past_deadline = False
        self._deadline, self._min_rate, self._window = deadline, min_rate, window
        self._limits = limits
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="download-watch", daemon=True)

    def __enter__(self) -> _Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        with self._lock:
            for s in self._socks:
                s.close()
            self._socks.clear()

    def track(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.append(sock.dup())
            if self.reason:
                self._shutdown()

    def _run(self) -> None:
        start = time.monotonic()
        samples = deque([(start, 0)])  # (time, bytes received)
        tick = min(0.5, self._window / 5)
        while not self._stop.wait(tick):
            now = time.monotonic()
            if now >= self._deadline:
                self.past_deadline = True
                self._cut(f"not complete within data.download_deadline_s = "
                          f"{self._limits.deadline_s:g}")
                return
            samples.append((now, self.received))
            while len(samples) > 1 and samples[1][0] <= now - self._window:
                samples.popleft()
            t0, n0 = samples[0]
            if self._min_rate > 0 and now - start >= self._window and \
                    (self.received - n0) < self._min_rate * (now - t0):
                self._cut(f"slower than data.min_rate_kib_s = {self._min_rate / 1024:g} over "
                          f"{self._window:g} s ({RATE_WINDOWS} x data.timeout_s)")
                return

    def _cut(self, reason: str) -> None:
        with self._lock:
            self.reason = reason
            self._shutdown()

    def _shutdown(self) -> None:
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


class _WatchedHTTPConnection(http.client.HTTPConnection):
    watch: _Watch | None = None

    def connect(self) -> None:
        super().connect()
        if self.watch is not None:
            self.watch.track(self.sock)


class _WatchedHTTPSConnection(http.client.HTTPSConnection, _WatchedHTTPConnection):
    """MRO: HTTPSConnection.connect -> _WatchedHTTPConnection.connect (tracks the TCP socket,
    so the TLS handshake is watched too) -> HTTPConnection.connect."""


def _connection(cls: type[_WatchedHTTPConnection], watch: _Watch, *args: Any,
                **kwargs: Any) -> _WatchedHTTPConnection:
    conn = cls(*args, **kwargs)
    conn.watch = watch
    return conn


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, watch: _Watch) -> None:
        super().__init__()
        self._watch = watch

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_connection, _WatchedHTTPConnection, self._watch),
                            req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, watch: _Watch) -> None:
        super().__init__()
        self._watch = watch

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        context = self._context  # type: ignore[attr-defined]  # HTTPSHandler's, not in the stubs
        return self.do_open(functools.partial(_connection, _WatchedHTTPSConnection, self._watch),
                            req, context=context)


def _opener(watch: _Watch) -> urllib.request.OpenerDirector:
    """http(s) only (a redirect to ftp:// or file:// fails), through watched connections."""
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), urllib.request.UnknownHandler(),
                    _HTTPHandler(watch), _HTTPSHandler(watch),
                    urllib.request.HTTPDefaultErrorHandler(),
                    urllib.request.HTTPRedirectHandler(), urllib.request.HTTPErrorProcessor()):
        opener.add_handler(handler)
    return opener


def _copy_stream(src: BinaryIO, dst: BinaryIO, *, total: int | None, desc: str | None,
                 log: TextIO, limits: Limits, label: str, watch: _Watch | None = None) -> Digests:
    """Copy while hashing, up to ``limits.source_bytes``; show a byte/rate progress bar when
    ``desc`` is given. Reads return as soon as some data arrived (``read1``), so the watch
    sees a slow but steady download progress."""
    sha, md5, size = hashlib.sha256(), hashlib.md5(), 0
    read = getattr(src, "read1", src.read)
    bar = tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, file=log,
               mininterval=0.5, disable=desc is None, leave=True)
    with bar:
        while chunk := read(CHUNK):
            size += len(chunk)
            if size > limits.source_bytes:
                raise UserError(f"{label}: more than {size_text(limits.source_bytes)} arrived, "
                                f"over {limits.source_cap()}; stopped (raise it if the source "
                                "is genuine)")
            sha.update(chunk)
            md5.update(chunk)
            try:
                dst.write(chunk)
            except OSError as exc:  # not a network problem: do not retry
                raise UserError(f"cannot write {getattr(dst, 'name', 'output')}: "
                                f"{exc.strerror}") from None
            bar.update(len(chunk))
            if watch is not None:
                watch.received = size
    return Digests(size=size, sha256=sha.hexdigest(), md5=md5.hexdigest())


def _copy_dir(src: Source, dest: Path, limits: Limits) -> None:
    """Copy the files and folders of ``src``'s checked listing (links become copies of their
    in-folder targets) to a temporary sibling of ``dest``, then rename."""
    _check_source_size(src.total_bytes, src.label, limits)
    with atomic_dir(dest) as tmp:
        for d in sorted(src.dirs):
            (tmp / d).mkdir(parents=True, exist_ok=True)
        for name in src.files:
            try:
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                with open(tmp / name, "wb") as out:
                    src.copy(name, out)
            except OSError as exc:
                raise UserError(f"cannot copy {name} from {src.label} to {dest}: "
                                f"{exc.strerror}") from None
