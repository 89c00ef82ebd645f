"""Download stage library: verified fetch over http (a local test server), file:// URLs, local
archives and directories, retries and timeouts, unsafe or broken archives."""

from __future__ import annotations

import hashlib
import io
import re
import socket
import tarfile
import threading
import time
import zipfile
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from project_params import LIMITS

from cifarbench.config import OFFICIAL_CIFAR10_URL
from cifarbench.data import OFFICIAL_CIFAR10_MD5, fetch, fetch_source, open_source
from cifarbench.errors import UserError

FAST_LIMITS = replace(LIMITS, timeout_s=0.3, retries=3)  # a local test server answers at once
FAST_BACKOFF_S = 0.01


# ------------------------------------------------------------------------------ tiny archives


def _png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((4, 4, 3), value, dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


IMAGEFOLDER = {f"{split}/{c}/{i}.png": _png(10 * i + 100 * k) for split in ("train", "test")
               for k, c in enumerate(("ant", "bee")) for i in range(2)}


def _tar(path: Path, files: dict[str, bytes], mode: str = "w:gz",
         links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, mode) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def data_archive(tmp_path: Path) -> Path:
    """A valid ImageFolder .tar.gz with a top-level folder (2 classes, 4x4 PNGs)."""
    (tmp_path / "src").mkdir()
    return _tar(tmp_path / "src" / "tiny.tar.gz",
                {f"tiny/{name}": data for name, data in IMAGEFOLDER.items()})


# ------------------------------------------------------------------------------- http server


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.body``; ``server.plan`` says what each successive request gets:
    "ok", "stall" (half the body, then silence), "stall_headers", "short" (closes early), or an
    HTTP status code."""

    def do_GET(self) -> None:
        srv = self.server
        with srv.lock:
            n = len(srv.requests)
            srv.requests.append(self.path)
        action = srv.plan[min(n, len(srv.plan) - 1)]
        body = srv.body
        if action == "stall_headers":
            srv.stop.wait(5)
            return
        if isinstance(action, int):
            self.send_error(action)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if action == "ok":
            self.wfile.write(body)
        elif action == "stall":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            srv.stop.wait(5)  # bounded; released at teardown
        elif action == "short":
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def data_http():
    """``serve(body, plan=["ok"], name=...) -> url`` on 127.0.0.1; servers stop at teardown."""
    servers = []

    def serve(body: bytes, plan=("ok",), name: str = "tiny.tar.gz"):
        srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        srv.daemon_threads, srv.block_on_close = True, False
        srv.body, srv.plan, srv.requests = body, list(plan), []
        srv.lock, srv.stop = threading.Lock(), threading.Event()
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        watchdog = threading.Timer(60, srv.shutdown)  # never outlive a hung test
        watchdog.daemon = True
        watchdog.start()
        servers.append((srv, watchdog))
        return f"http://127.0.0.1:{srv.server_address[1]}/files/{name}", srv

    yield serve
    for srv, watchdog in servers:
        srv.stop.set()
        srv.shutdown()
        srv.server_close()
        watchdog.cancel()


def _leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir()) if out.exists() else []


# -------------------------------------------------------------------------------------- http


def test_http_download_is_verified_renamed_and_shows_progress(data_archive, data_http, tmp_path,
                                                              capsys):
    body = data_archive.read_bytes()
    url, srv = data_http(body)
    out = tmp_path / "raw"
    record = fetch_source(url, out, sha256=_sha256(data_archive), backoff_s=FAST_BACKOFF_S, limits=FAST_LIMITS)
    assert (out / "tiny.tar.gz").read_bytes() == body
    assert _leftovers(out) == ["tiny.tar.gz"]  # no temporary file left behind
    assert record == {"source": url, "kind": "archive", "name": "tiny.tar.gz",
                      "sha256": _sha256(data_archive), "md5": record["md5"],
                      "verified": "data.sha256"}
    err = capsys.readouterr().err
    # the bar: name, 100%, bytes done/total and the rate
    assert re.search(r"tiny\.tar\.gz: 100%.*[\d.]+k?B?/[\d.]+k?B? .*[\d.]+[kMG]?B/s", err), err


def test_checksum_mismatch_discards_the_download(data_archive, data_http, tmp_path):
    url, _ = data_http(data_archive.read_bytes())
    wrong = "0" * 64
    with pytest.raises(UserError) as err:
        fetch_source(url, tmp_path / "raw", sha256=wrong, backoff_s=FAST_BACKOFF_S, limits=FAST_LIMITS)
    msg = str(err.value)
    assert f"checksum mismatch for {url}" in msg
    assert f"SHA256 is {_sha256(data_archive)}, expected {wrong} (data.sha256)" in msg
    assert _leftovers(tmp_path / "raw") == []


def test_official_archive_name_is_held_to_the_published_md5(data_archive, data_http, tmp_path):
    url, _ = data_http(data_archive.read_bytes(), name="cifar-10-python.tar.gz")
    with pytest.raises(UserError, match=f"expected {OFFICIAL_CIFAR10_MD5}"):
        fetch_source(url, tmp_path / "raw", backoff_s=FAST_BACKOFF_S, limits=FAST_LIMITS)
    assert _leftovers(tmp_path / "raw") == []
    # The official URL is checked against it even when the user adds a checksum of their own.
    checks = fetch.expected_checksums(OFFICIAL_CIFAR10_URL, "cifar-10-python.tar.gz",
                                      sha256="a" * 64)
    assert {(c.algo, c.hexdigest) for c in checks} == {("sha256", "a" * 64),
                                                       ("md5", OFFICIAL_CIFAR10_MD5)}


@pytest.mark.parametrize("failure", ["stall", "short", 503])
def test_transient_failures_are_retried(failure, data_archive, data_http, tmp_path, capsys):
    body = data_archive.read_bytes()
    url, srv = data_http(body, plan=[failure, failure, "ok"])
    fetch_source(url, tmp_path / "raw", backoff_s=FAST_BACKOFF_S, limits=FAST_LIMITS)
    assert len(srv.requests) == 3
    assert (tmp_path / "raw" / "tiny.tar.gz").read_bytes() == body
    err = capsys.readouterr().err
    assert "attempt 1/4 failed" in err and "attempt 2/4 failed" in err
    if failure == "stall":
        assert "timed out (no data for 0.3 s)" in err


def test_a_server_that_keeps_stalling_fails_naming_the_settings(data_archive, data_http, tmp_path):
    url, srv = data_http(data_archive.read_bytes(), plan=["stall"])
    start = time.monotonic()
    with pytest.raises(UserError) as err:
        fetch_source(url, tmp_path / "raw", backoff_s=0.01, limits=replace(LIMITS, timeout_s=0.3, retries=1))
    assert time.monotonic() - start < 3
    assert len(srv.requests) == 2
    msg = str(err.value)
    assert "timed out" in msg and "data.timeout_s = 0.3, data.retries = 1" in msg
    assert _leftovers(tmp_path / "raw") == []


def test_http_404_is_not_retried(data_http, tmp_path):
    url, srv = data_http(b"", plan=[404])
    with pytest.raises(UserError, match="HTTP 404"):
        fetch_source(url, tmp_path / "raw", backoff_s=FAST_BACKOFF_S, limits=FAST_LIMITS)
    assert len(srv.requests) == 1


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_host_fails_fast_and_says_how_to_use_a_local_copy(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/cifar-10-python.tar.gz"
    start = time.monotonic()
    with pytest.raises(UserError) as err:
        fetch_source(url, tmp_path / "raw", backoff_s=0.05, limits=replace(LIMITS, timeout_s=30, retries=3))
    assert time.monotonic() - start < 5
    msg = str(err.value)
    assert msg.startswith(f"cannot reach {url}: connection refused (4 attempts")
    assert "dvc exp run -S data.source=" in msg and "\n" not in msg


def test_connect_budget_caps_a_host_that_never_answers(data_http, tmp_path, monkeypatch):
    monkeypatch.setattr(fetch, "CONNECT_BUDGET_S", 1.0)
    url, _ = data_http(b"", plan=["stall_headers"])
    start = time.monotonic()
    with pytest.raises(UserError, match="cannot reach .* timed out"):
        fetch_source(url, tmp_path / "raw", backoff_s=0.2, limits=replace(LIMITS, timeout_s=10, retries=5))
    assert time.monotonic() - start < 2.5  # not 6 x 10 s


# ------------------------------------------------------------------------------ local sources


def test_local_archive_is_checked_against_its_sidecar(data_archive, tmp_path):
    sidecar = data_archive.with_name("tiny.tar.gz.sha256")
    sidecar.write_text(f"{_sha256(data_archive)}  tiny.tar.gz\n")
    record = fetch_source(str(data_archive), tmp_path / "raw", limits=LIMITS)
    assert record["verified"] == str(sidecar) and record["kind"] == "archive"
    assert (tmp_path / "raw" / "tiny.tar.gz").read_bytes() == data_archive.read_bytes()

    sidecar.write_text("f" * 64 + "  tiny.tar.gz\n")
    with pytest.raises(UserError, match=f"expected f{{64}} \\({re.escape(str(sidecar))}\\)"):
        fetch_source(str(data_archive), tmp_path / "raw2", limits=LIMITS)
    assert _leftovers(tmp_path / "raw2") == []


def test_file_url_works_like_a_path(data_archive, tmp_path):
    record = fetch_source(data_archive.as_uri(), tmp_path / "raw", md5=None, limits=LIMITS)
    assert record["name"] == "tiny.tar.gz" and record["verified"] is None
    assert (tmp_path / "raw" / "tiny.tar.gz").read_bytes() == data_archive.read_bytes()


def test_directory_source_is_copied(tmp_path):
    src = tmp_path / "mydata"
    for name, data in IMAGEFOLDER.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    (src / "train" / ".DS_Store").write_bytes(b"\0junk")
    record = fetch_source(str(src), tmp_path / "raw", limits=LIMITS)
    assert record["kind"] == "directory" and record["name"] == "mydata"
    copied = sorted(p.relative_to(tmp_path / "raw" / "mydata").as_posix()
                    for p in (tmp_path / "raw" / "mydata").rglob("*") if p.is_file())
    assert copied == sorted([*IMAGEFOLDER, "train/.DS_Store"])
    with pytest.raises(UserError, match="is a directory, but data.sha256"):
        fetch_source(str(src), tmp_path / "raw", sha256="a" * 64, limits=LIMITS)


def test_missing_source_and_unknown_scheme(tmp_path):
    with pytest.raises(UserError, match="no such file or directory"):
        fetch_source(str(tmp_path / "nope.tar.gz"), tmp_path / "raw", limits=LIMITS)
    with pytest.raises(UserError, match="unsupported scheme 'ftp'"):
        fetch_source("ftp://example.com/x.tar.gz", tmp_path / "raw", limits=LIMITS)


# ------------------------------------------------------------------- relative local sources


@pytest.mark.parametrize(("cwd", "dvc_root", "expected"), [
    ("proj", "proj", "proj"),                                    # dvc repro, dvc exp run
    ("proj/.dvc/tmp/exps/standalone/tmp1", "proj", "proj"),     # dvc exp run --temp
    ("proj/.dvc/tmp/exps/tmp2", "proj", "proj"),                # a queued experiment
    ("proj/.dvc/tmp/exps/tmp2", "proj/.dvc/tmp/exps/tmp2", "proj"),  # DVC_ROOT = the copy
    ("proj/.dvc/tmp/exps/tmp2/sub", None, "proj"),              # stage run by hand in a copy
    ("proj", None, "proj"),                                     # stage run by hand
    ("proj", "elsewhere", "proj"),                              # DVC_ROOT inherited: ignored
    ("proj/.dvc/tmp/exps", None, "proj/.dvc/tmp/exps"),         # not inside a copy
])
def test_project_root(tmp_path, cwd, dvc_root, expected):
    env = {} if dvc_root is None else {"DVC_ROOT": str(tmp_path / dvc_root)}
    assert fetch.project_root(tmp_path / cwd, env) == tmp_path / expected
    relative = {"DVC_ROOT": "proj"}  # not absolute: not DVC's, ignored
    assert fetch.project_root(tmp_path / "proj" / "a", relative) == tmp_path / "proj" / "a"


def test_relative_source_resolves_against_root_and_is_recorded_as_written(data_archive,
                                                                        tmp_path, monkeypatch):
    project = tmp_path / "proj"
    copy = project / ".dvc" / "tmp" / "exps" / "tmp1"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)  # where the stage runs for `dvc exp run --temp`
    data_archive.with_name("tiny.tar.gz.sha256").write_text(f"{_sha256(data_archive)}  x\n")
    log = io.StringIO()
    for source in ("../src/tiny.tar.gz", "file://../src/tiny.tar.gz"):
        out = tmp_path / f"raw{len(source)}"
        record = fetch_source(source, out, root=project, limits=LIMITS, log=log)
        assert record["source"] == source and record["verified"] == "../src/tiny.tar.gz.sha256"
        assert (out / "tiny.tar.gz").read_bytes() == data_archive.read_bytes()
    assert f"(read from {project / '../src/tiny.tar.gz'})" in log.getvalue()
    # a relative directory source resolves the same way
    (tmp_path / "imgs").mkdir()
    for name, data in IMAGEFOLDER.items():
        (tmp_path / "imgs" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "imgs" / name).write_bytes(data)
    record = fetch_source("../imgs", tmp_path / "rawdir", root=project, limits=LIMITS, log=log)
    assert record == {**record, "source": "../imgs", "kind": "directory", "name": "imgs"}


def test_missing_relative_source_names_the_param_and_the_path_tried(tmp_path):
    project = tmp_path / "proj"
    project.mkdir()
    with pytest.raises(UserError) as err:
        fetch_source("../data/c.tar.gz", tmp_path / "raw", root=project, limits=LIMITS)
    text = str(err.value)
    assert "data.source = '../data/c.tar.gz'" in text
    assert repr(str(project / "../data/c.tar.gz")) in text and repr(str(project)) in text


# ------------------------------------------------------------------------- broken or unsafe


def _corrupt(src: Path, dest: Path) -> Path:
    data = bytearray(src.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 64] = bytes(b ^ 0xFF for b in data[mid:mid + 64])
    dest.write_bytes(bytes(data))
    return dest


def _plain_tar(tmp_path: Path) -> bytes:
    """8 members of one header block + one data block each, then the end-of-archive blocks."""
    return _tar(tmp_path / "plain.tar", {f"tiny/{n}": d for n, d in IMAGEFOLDER.items()},
                "w").read_bytes()


@pytest.mark.parametrize("kind, expected", [
    ("corrupt gz", "corrupt or truncated archive .*zlib"),
    ("truncated gz", "corrupt or truncated archive .*end-of-stream"),
    ("tar cut inside a member", "corrupt or truncated archive .*unexpected end of data"),
    # tarfile itself stops listing silently at these two
    ("tar cut between members", "truncated archive: it ends after member 'tiny/train/bee/0.png'"),
    ("tar with a garbage header", "corrupt archive: unreadable data after member"),
    ("text file", "not a tar or zip archive"),
])
def test_broken_archives_are_refused_before_anything_is_kept(kind, expected, data_archive,
                                                             tmp_path):
    bad = tmp_path / "bad.tar.gz"
    gz, plain = data_archive.read_bytes(), _plain_tar(tmp_path)
    bad.write_bytes({
        "corrupt gz": _corrupt(data_archive, bad).read_bytes(),
        "truncated gz": gz[: len(gz) * 2 // 3],
        "tar cut inside a member": plain[:2600],
        "tar cut between members": plain[:3072],
        "tar with a garbage header": plain[:3072] + b"\x01" * 512 + plain[3584:],
        "text file": b"hello, I am a text file\n",
    }[kind])
    with pytest.raises(UserError, match=f"^{re.escape(str(bad))}: {expected}"):
        fetch_source(str(bad), tmp_path / "raw", limits=LIMITS)
    assert _leftovers(tmp_path / "raw") == []


@pytest.mark.parametrize("member, link", [("../evil.png", None), ("/tmp/evil.png", None),
                                          ("tiny/train/../../../up.png", None),
                                          ("tiny/train/ant/link.png", "../../../../etc/passwd"),
                                          ("tiny/train/ant/abs.png", "/etc/passwd")])
def test_members_that_would_land_outside_are_refused(member, link, tmp_path):
    files = {f"tiny/{n}": d for n, d in IMAGEFOLDER.items()}
    if link is None:
        files[member] = _png(1)
    path = _tar(tmp_path / "evil.tar.gz", files, links={member: link} if link else None)
    with pytest.raises(UserError) as err:
        fetch_source(str(path), tmp_path / "raw", limits=LIMITS)
    assert f"unsafe member {member!r}" in str(err.value)
    assert _leftovers(tmp_path / "raw") == []


def test_zip_traversal_member_is_refused(tmp_path):
    path = tmp_path / "evil.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in IMAGEFOLDER.items():
            zf.writestr(name, data)
        zf.writestr("../../evil.png", _png(1))
    with pytest.raises(UserError, match=r"unsafe member '\.\./\.\./evil\.png'"):
        fetch_source(str(path), tmp_path / "raw", limits=LIMITS)


def test_inward_links_are_read_as_their_target(tmp_path):
    files = {f"tiny/{n}": d for n, d in IMAGEFOLDER.items()}
    path = _tar(tmp_path / "links.tar.gz", files, links={"tiny/train/bee/copy.png": "0.png"})
    with open_source(path, LIMITS) as src:
        assert dict(src.read(["tiny/train/bee/copy.png"])) == {
            "tiny/train/bee/copy.png": IMAGEFOLDER["train/bee/0.png"]}


def test_failed_fetch_leaves_no_output_folder(tmp_path):
    out = tmp_path / "raw"
    with pytest.raises(UserError, match="cannot reach"):  # port 9 (discard) is closed here
        fetch_source("http://127.0.0.1:9/cifar.tar.gz", out, limits=replace(LIMITS, retries=0, timeout_s=2))
    assert not out.exists()
