"""Hostile or careless input costs bounded memory, time and disk, ends in one line, and
interrupted stages leave nothing stale (issue 11).

Bombs are made small by lowering the cap they hit; network tests use servers on 127.0.0.1
whose loops are bounded in count and time; interruption tests signal real stage processes.
"""

from __future__ import annotations

import codecs
import dataclasses
import hashlib
import io
import json
import os
import pickle
import resource
import signal
import struct
import subprocess
import sys
import tarfile
import threading
import time
import tracemalloc
import warnings
import zipfile
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from project_params import LIMITS, prep, write_params

from cifarbench import cli
from cifarbench.config import ParamsError, load_params
from cifarbench.data import Limits, fetch_source, prepare_dataset, save_prepared
from cifarbench.data.prepare import decode_image
from cifarbench.data.sources import open_source, restricted_loads
from cifarbench.errors import UserError
from cifarbench.io import atomic_dir, atomic_path, remove_stale_temporaries, write_csv

REPO = Path(__file__).resolve().parents[1]
QUIET = io.StringIO()
MiB = 1 << 20


def _limits(**caps) -> Limits:
    """params.yaml's caps with some replaced (in Limits' units: bytes, counts, pixels, s)."""
    return dataclasses.replace(LIMITS, **caps)


def _png(value: int, size: tuple[int, int] = (4, 4)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (value, value, value)).save(buf, "PNG")
    return buf.getvalue()


IMAGEFOLDER = {f"{split}/{c}/{i}.png": _png(10 * i + 100 * k) for split in ("train", "test")
               for k, c in enumerate(("ant", "bee")) for i in range(2)}


def _tar(path: Path, files: dict[str, bytes], mode: str = "w:gz", **kw) -> Path:
    with tarfile.open(path, mode, **kw) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def _folder(path: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)
    return path


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and len(msg) < 600, msg
    return msg


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ------------------------------------------------------------------------------ archive bombs


def test_zip_bomb_is_refused_from_its_declared_size_without_reading_it(tmp_path):
    # 32 MiB of zeros compress to 32 kB; with a 1 MiB member cap nothing is decompressed.
    bomb = _zip(tmp_path / "bomb.zip", {**IMAGEFOLDER, "train/ant/zeros.png": bytes(32 * MiB)})
    assert bomb.stat().st_size < 100_000
    tracemalloc.start()
    with pytest.raises(UserError) as err:
        fetch_source(str(bomb), tmp_path / "raw", limits=_limits(member_bytes=MiB), log=QUIET)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 * MiB  # the 32 MiB member was never decompressed
    assert "member 'train/ant/zeros.png' is 32.0 MiB, over data.max_member_mib = 1" in \
        _one_line(err)
    assert _entries(tmp_path / "raw") == []


def test_tar_gz_bomb_is_refused_while_listing(tmp_path):
    bomb = _tar(tmp_path / "bomb.tar.gz", {**IMAGEFOLDER, "train/ant/zeros.png": bytes(32 * MiB)})
    tracemalloc.start()
    with pytest.raises(UserError) as err, open_source(bomb, _limits(member_bytes=MiB)):
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 * MiB
    assert "'train/ant/zeros.png' is 32.0 MiB, over data.max_member_mib = 1" in _one_line(err)


def test_tar_header_bomb_is_refused(tmp_path):
    # tarfile reads a pax header in one piece, whatever size it declares: here 2 MiB of path.
    long_name = "train/ant/" + "x" * (2 * MiB) + ".png"
    bomb = _tar(tmp_path / "pax.tar.gz", {**IMAGEFOLDER, long_name: _png(1)},
                format=tarfile.PAX_FORMAT)
    with pytest.raises(UserError) as err, open_source(bomb, _limits(member_bytes=256 << 10)):
        pass
    assert "an archive header declares more than" in _one_line(err)
    assert "data.max_member_mib = 0.25" in str(err.value)


@pytest.mark.parametrize("kind", ["tar.gz", "zip", "dir"])
def test_members_under_the_cap_still_count_towards_the_unpacked_total(kind, tmp_path):
    files = {**IMAGEFOLDER, **{f"train/ant/big{i}.png": bytes(400_000) for i in range(4)}}
    src = {"tar.gz": _tar, "zip": _zip, "dir": _folder}[kind](tmp_path / f"s.{kind}", files)
    with pytest.raises(UserError) as err, open_source(src, _limits(unpacked_bytes=MiB)):
        pass
    assert "data.max_unpacked_gib" in _one_line(err)


@pytest.mark.parametrize("kind", ["tar.gz", "zip", "dir"])
def test_member_count_is_capped(kind, tmp_path):
    files = {**IMAGEFOLDER, **{f"train/ant/{i}.txt": b"" for i in range(40)}}
    src = {"tar.gz": _tar, "zip": _zip, "dir": _folder}[kind](tmp_path / f"s.{kind}", files)
    with pytest.raises(UserError) as err, open_source(src, _limits(members=30)):
        pass
    assert "over data.max_members = 30" in _one_line(err)


def test_links_to_one_big_member_count_once_per_link(tmp_path):
    # 1000 links to one 100 kB member: each would be decoded, so each counts.
    path = tmp_path / "links.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in {**IMAGEFOLDER, "train/ant/big.png": bytes(100_000)}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for i in range(1000):
            info = tarfile.TarInfo(f"train/bee/l{i}.png")
            info.type, info.linkname = tarfile.SYMTYPE, "../ant/big.png"
            tar.addfile(info)
    with pytest.raises(UserError, match=r"files total 95\.\d MiB \(links count"), \
            open_source(path, _limits(unpacked_bytes=50 * MiB)):
        pass
    with open_source(path, LIMITS) as src:  # under the cap: the member is read once for all its links
        read = dict(src.read([f"train/bee/l{i}.png" for i in range(3)]))
        assert len(read) == 3 and all(len(v) == 100_000 for v in read.values())


def _patched_zip(path: Path, *, method: int | None = None, flags: int | None = None) -> Path:
    """A valid stored zip whose first member claims another compression method or encryption
    (in both the local header and the central directory, as the zip tools would write)."""
    _zip(path, {"train/ant/0.png": _png(1), **IMAGEFOLDER})
    data = bytearray(path.read_bytes())
    for sig, flag_at, method_at in ((b"PK\x03\x04", 6, 8), (b"PK\x01\x02", 8, 10)):
        at = data.index(sig)
        if flags is not None:
            data[at + flag_at:at + flag_at + 2] = struct.pack("<H", flags)
        if method is not None:
            data[at + method_at:at + method_at + 2] = struct.pack("<H", method)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("method, flags, expected", [
    (9, None, "uses compression method 9 (deflate64), which Python's zipfile cannot read"),
    (99, None, "uses compression method 99 (unknown)"),
    (None, 0x1, "'train/ant/0.png' is encrypted; decrypt the archive first"),
])
def test_unreadable_zip_members_are_one_line(method, flags, expected, tmp_path):
    path = _patched_zip(tmp_path / "odd.zip", method=method, flags=flags)
    with pytest.raises(UserError) as err:
        fetch_source(str(path), tmp_path / "raw", log=QUIET, limits=LIMITS)
    assert expected in _one_line(err)
    assert _entries(tmp_path / "raw") == []


# ------------------------------------------------------------------------- directory sources


def _imagefolder_dir(root: Path) -> Path:
    return _folder(root, IMAGEFOLDER)


def test_directory_link_to_a_host_file_is_refused_and_nothing_copied(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    src = _imagefolder_dir(tmp_path / "mydata")
    (src / "train/ant/stolen.png").symlink_to(secret)
    with pytest.raises(UserError) as err:
        fetch_source(str(src), tmp_path / "raw", log=QUIET, limits=LIMITS)
    assert "unsafe link 'train/ant/stolen.png'" in _one_line(err)
    assert "resolves outside the source folder" in str(err.value)
    assert not (tmp_path / "raw").exists()


def test_directory_link_to_an_outside_folder_is_refused(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    src = _imagefolder_dir(tmp_path / "mydata")
    (src / "train/cow").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(UserError, match="unsafe link 'train/cow'"):
        open_source(src, LIMITS)


@pytest.mark.parametrize("target", ["..", "../..", "."])
def test_directory_link_loops_end_at_once(target, tmp_path):
    src = _imagefolder_dir(tmp_path / "mydata")
    (src / "train/ant/loop").symlink_to(target, target_is_directory=True)
    start = time.monotonic()
    with pytest.raises(UserError) as err:
        fetch_source(str(src), tmp_path / "raw", log=QUIET, limits=LIMITS)
    assert time.monotonic() - start < 2
    assert "link 'train/ant/loop' leads back to a folder above it" in _one_line(err)
    assert not (tmp_path / "raw").exists()


def test_directory_links_inside_are_copied_as_files(tmp_path):
    src = _imagefolder_dir(tmp_path / "mydata")
    (src / "train/ant/copy.png").symlink_to("../bee/1.png")  # a file inside: fine
    (src / "extra").mkdir()
    (src / "extra/more.png").write_bytes(_png(7))
    (src / "test/ant/linked").symlink_to("../../extra", target_is_directory=True)
    record = fetch_source(str(src), tmp_path / "raw", log=QUIET, limits=LIMITS)
    out = tmp_path / "raw" / record["name"]
    assert not (out / "train/ant/copy.png").is_symlink()
    assert (out / "train/ant/copy.png").read_bytes() == IMAGEFOLDER["train/bee/1.png"]
    assert (out / "test/ant/linked/more.png").read_bytes() == _png(7)
    assert not any(p.is_symlink() for p in out.rglob("*"))


def test_directory_source_over_the_disk_cap_is_not_copied(tmp_path):
    src = _folder(tmp_path / "mydata", {**IMAGEFOLDER, "train/ant/big.png": bytes(300_000)})
    with pytest.raises(UserError, match=r"is 0\.3 MiB, over data.max_source_gib"):
        fetch_source(str(src), tmp_path / "raw", limits=_limits(source_bytes=200_000), log=QUIET)
    assert not (tmp_path / "raw").exists()


def test_local_archive_over_the_disk_cap_is_not_copied(tmp_path):
    src = _tar(tmp_path / "a.tar", {**IMAGEFOLDER, "train/ant/big.png": bytes(300_000)}, "w")
    with pytest.raises(UserError, match="over data.max_source_gib"):
        fetch_source(str(src), tmp_path / "raw", limits=_limits(source_bytes=200_000), log=QUIET)
    assert _entries(tmp_path / "raw") == []


# ---------------------------------------------------------------------------------- prepare


def _raw(tmp_path: Path, source: Path, **kw) -> Path:
    raw = tmp_path / "raw"
    record = fetch_source(str(source), raw, log=QUIET, limits=LIMITS, **kw)
    (raw / "source.json").write_text(json.dumps(record))
    return raw


def test_prepare_refuses_arrays_over_the_memory_cap_before_allocating(tmp_path):
    raw = _raw(tmp_path, _tar(tmp_path / "d.tar.gz", IMAGEFOLDER))
    tracemalloc.start()
    with pytest.raises(UserError) as err:  # 8 images x 512 x 512 x 3 = 6 MiB > 4 MiB
        prepare_dataset(raw, **prep(image_size=512), limits=_limits(arrays_bytes=4 * MiB), log=QUIET)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 * MiB
    assert _one_line(err).startswith("data.image_size = 512: 8 images of 512x512x3 need 6.0 MiB "
                                     "of memory, over data.max_arrays_gib")
    # params.yaml's caps refuse CIFAR-10 at 512 (its train split alone was a 36.6 GiB allocation)
    from cifarbench.data.prepare import check_memory
    with pytest.raises(UserError, match=r"60000 images .* 43\.9 GiB .* data.max_arrays_gib = 8;"):
        check_memory(60_000, 512, LIMITS)


def _png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height (its data is one pixel's worth)."""
    data = bytearray(_png(0, (1, 1)))
    ihdr = data.index(b"IHDR")
    data[ihdr + 4:ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr:ihdr + 17]))
    data[ihdr + 17:ihdr + 21] = struct.pack(">I", crc)
    return bytes(data)


def test_image_pixel_cap_is_one_line_and_replaces_pils_warning():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(UserError) as err:  # PIL would warn (over 89.5 Mpx), in two lines
            decode_image(_png_declaring(12_000, 10_000), 32, label="x.png",
                         max_pixels=100_000_000)
        assert "x.png: image of 12000x10000 = 120.0 megapixels, over data.max_image_mpx = 100" \
            in _one_line(err)
        with pytest.raises(UserError) as err:  # PIL refuses it itself (over 179 Mpx)
            decode_image(_png_declaring(20_000, 10_000), 32, label="x.png",
                         max_pixels=100_000_000)
        assert "x.png: image of more than 179 megapixels, over data.max_image_mpx = 100" in \
            _one_line(err)
        with pytest.raises(UserError) as err:  # under a raised cap: decoded (and corrupt here)
            decode_image(_png_declaring(10_000, 9_500), 32, label="y.png",
                         max_pixels=170_000_000)
        assert "y.png: cannot decode image" in _one_line(err)
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def test_prepare_outputs_appear_together(tmp_path, monkeypatch):
    raw = _raw(tmp_path, _tar(tmp_path / "d.tar.gz", IMAGEFOLDER))
    data = prepare_dataset(raw, **prep(image_size=4), log=QUIET, limits=LIMITS)
    out, metrics = tmp_path / "prepared", tmp_path / "metrics" / "data.json"
    save_prepared(data, out, metrics, tmp_path / "metrics" / "details.json")
    assert _entries(out) == ["meta.json", "test.npz", "train.npz"]
    assert json.loads(metrics.read_text())["train_images"] == 4
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    import cifarbench.data.prepare as prepare_module
    real = prepare_module.save_split

    def fail_second(path, x, y):  # the kill lands between two outputs
        if path.name == "test.npz":
            raise KeyboardInterrupt
        real(path, x, y)

    monkeypatch.setattr(prepare_module, "save_split", fail_second)
    with pytest.raises(KeyboardInterrupt):
        save_prepared(prepare_dataset(raw, **prep(image_size=8), log=QUIET, limits=LIMITS), out, metrics,
                      tmp_path / "details.json")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old set, whole
    assert not metrics.exists()  # no metrics that describe other arrays: DVC reruns prepare
    assert _entries(tmp_path) == ["d.tar.gz", "metrics", "prepared", "raw"]  # no temporary


def _cifar_files(per_batch: int, protocol: int) -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    files = {}
    for batch in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        files[f"cifar-10-batches-py/{batch}"] = pickle.dumps(
            {b"labels": [int(v) for v in rng.integers(0, 10, per_batch)],
             b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
             b"batch_label": batch.encode()}, protocol=protocol)
    files["cifar-10-batches-py/batches.meta"] = pickle.dumps(
        {b"label_names": [f"c{i}".encode() for i in range(10)]}, protocol=protocol)
    return files


def test_cifar_batches_pickled_by_python3_at_protocol_2_load(tmp_path):
    src = _tar(tmp_path / "c.tar.gz", _cifar_files(10, protocol=2))
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    data = prepare_dataset(_raw(tmp_path, src, sha256=sha), **prep(), log=QUIET, limits=LIMITS)
    assert data.train_x.shape == (50, 32, 32, 3) and data.classes[0] == "c0"


class _OtherCodec:
    def __reduce__(self):
        return (codecs.encode, ("eJzLSM3JyQcABiwCFQ==", "base64"))


def test_only_latin1_encode_is_allowed_from_codecs():
    with pytest.raises(UserError, match=r"_codecs.encode is allowed only as \(str, 'latin1'\)"):
        restricted_loads(pickle.dumps(_OtherCodec(), protocol=2), label="batch")


# ----------------------------------------------------------------------------------- network


class _Hostile(BaseHTTPRequestHandler):
    """``server.mode``: "trickle" (body, a byte per 20 ms), "trickle_headers", "endless"
    (64 kB chunks without a length), "huge" (announces 10 GiB), "digits" (a 5000-digit
    length), "slow" (64 kB/s), "redirect" (to itself). Every loop stops within 15 s or when
    the test ends."""

    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        srv = self.server
        mode, stop, until = srv.mode, srv.stop, time.monotonic() + 15
        try:
            if mode == "redirect":
                self.send_response(302)
                self.send_header("Location", self.path)
                self.end_headers()
                return
            if mode == "trickle_headers":
                self.wfile.write(b"HTTP/1.0 200 OK\r\n")
                while not stop.is_set() and time.monotonic() < until:
                    self.wfile.write(b"X-Slow: a\r\n")
                    self.wfile.flush()
                    stop.wait(0.05)
                return
            self.send_response(200)
            if mode in ("trickle", "slow"):
                self.send_header("Content-Length", str(10 << 20))
            elif mode == "huge":
                self.send_header("Content-Length", str(10 << 30))
            elif mode == "digits":  # too long for int(): http.client itself gives up on it
                self.send_header("Content-Length", "9" * 5000)
                mode = "huge"
            self.end_headers()
            pace = {"trickle": (b"\0", 0.02), "endless": (bytes(65536), 0.0),
                    "slow": (bytes(6554), 0.1), "huge": (b"", 0.1)}[mode]
            while not stop.is_set() and time.monotonic() < until:
                self.wfile.write(pace[0])
                self.wfile.flush()
                if pace[1]:
                    stop.wait(pace[1])
        except OSError:  # the client hung up: what the tests want
            pass

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hostile():
    """``serve(mode, name=...) -> url`` on 127.0.0.1; servers stop when the test ends."""
    servers = []

    def serve(mode: str, name: str = "tiny.tar.gz") -> str:
        srv = ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
        srv.daemon_threads, srv.block_on_close = True, False
        srv.mode, srv.stop = mode, threading.Event()
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}/files/{name}"

    yield serve
    for srv in servers:
        srv.stop.set()
        srv.shutdown()
        srv.server_close()


@pytest.mark.parametrize("mode", ["trickle", "trickle_headers"])
def test_a_trickling_server_is_cut_off_by_the_minimum_rate(mode, hostile, tmp_path):
    url = hostile(mode)
    start = time.monotonic()
    with pytest.raises(UserError) as err:
        fetch_source(url, tmp_path / "raw", backoff_s=0.01, log=QUIET,
                     limits=_limits(min_rate=1024, timeout_s=0.3, retries=3))
    assert time.monotonic() - start < 3  # 2 x timeout_s, not retried
    assert "slower than data.min_rate_kib_s = 1 over 0.6 s" in _one_line(err)
    assert _entries(tmp_path / "raw") == []


def test_an_endless_stream_stops_at_the_size_cap(hostile, tmp_path):
    url = hostile("endless")
    with pytest.raises(UserError) as err:
        fetch_source(url, tmp_path / "raw", log=QUIET, limits=_limits(source_bytes=2 * MiB, timeout_s=2))
    assert "more than 2.0 MiB arrived, over data.max_source_gib" in _one_line(err)
    assert _entries(tmp_path / "raw") == []


@pytest.mark.parametrize("mode", ["huge", "digits"])
def test_an_announced_size_over_the_cap_is_refused_before_reading(mode, hostile, tmp_path):
    url = hostile(mode)
    start = time.monotonic()
    with pytest.raises(UserError) as err:
        fetch_source(url, tmp_path / "raw", log=QUIET, limits=_limits(timeout_s=2))
    assert time.monotonic() - start < 2
    assert "(Content-Length) is " in _one_line(err) and "over data.max_source_gib = 4" in \
        str(err.value)
    if mode == "huge":
        assert "is 10.0 GiB" in str(err.value)


def test_the_deadline_bounds_a_slow_but_steady_download(hostile, tmp_path):
    url = hostile("slow")  # 64 kB/s: above the minimum rate, 10 MiB would take 160 s
    start = time.monotonic()
    with pytest.raises(UserError) as err:
        fetch_source(url, tmp_path / "raw", log=QUIET, limits=_limits(deadline_s=1.5, timeout_s=2, retries=3))
    assert time.monotonic() - start < 4
    assert "not complete within data.download_deadline_s = 1.5" in _one_line(err)
    assert _entries(tmp_path / "raw") == []


def test_a_redirect_loop_is_one_line(hostile, tmp_path):
    with pytest.raises(UserError) as err:
        fetch_source(hostile("redirect"), tmp_path / "raw", log=QUIET, limits=_limits(timeout_s=2))
    assert "HTTP 302: a redirect loop, or more than 10 redirects" in _one_line(err)


@pytest.mark.parametrize("url, expected", [
    ("http://127.0.0.1:9/files/%2e%2e", "does not end in a file name"),
    ("http://127.0.0.1:9/files/..%2F..%2F", "does not end in a file name"),
    ("http://127.0.0.1:9/files/a%00b.tar", "holds a separator or control character"),
    ("http://127.0.0.1:9/files/.hidden.tar", "ends in a hidden name"),
    ("http://127.0.0.1:9/" + "a" * 300 + ".tar", "longer than 200 bytes"),
    ("http://127.0.0.1:99999/x.tar", "not a valid URL or path (Port out of range"),
    ("http://[::1/x.tar", "not a valid URL or path"),
    ("http:///x.tar", "has no host name"),
    ("http://a..b/x.tar", "'a..b' is not a valid host name"),
    ("/dev/zero", "not a regular file or a directory"),
])
def test_odd_urls_are_one_line(url, expected, tmp_path):
    with pytest.raises(UserError) as err:
        fetch_source(url, tmp_path / "raw", log=QUIET, limits=_limits(timeout_s=1, retries=0))
    assert expected in _one_line(err)
    assert not (tmp_path / "raw").exists()


# ------------------------------------------------------------------------------------ config


def _params(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "params.yaml"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def test_yaml_alias_bomb_is_refused_at_once(tmp_path):
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    lines.append("data: {source: *i}")  # an error message would print it whole
    start = time.monotonic()
    with pytest.raises(ParamsError, match="YAML aliases expand to more than 100000 values"):
        load_params(_params(tmp_path, "\n".join(lines)))
    assert time.monotonic() - start < 1


@pytest.mark.parametrize("text, expected", [
    ("a: &a [*a]\n", "a YAML alias refers to a structure that contains it"),
    (b"seed: 0\ndata: {source: '\xff'}\n", "not UTF-8 text (byte 0xff at offset 24)"),
    ("seed: [1\n", "not valid YAML: expected ',' or ']', but got '<stream end>' at line 2"),
    ("seed: " + "1" * 5000 + "\n", "not valid YAML: Exceeds the limit (4300 digits)"),
    ("x: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
])
def test_broken_params_files_are_one_line(text, expected, tmp_path):
    with pytest.raises(ParamsError) as err:
        load_params(_params(tmp_path, text))
    assert expected in _one_line(err)


def test_error_messages_clip_what_they_show(tmp_path):
    path = write_params(tmp_path / "params.yaml",
                        {"data": {"source": ["x" * 5000] * 50}, "bogus": "y" * 10**5})
    with pytest.raises(ParamsError) as err:
        load_params(path)
    lines = str(err.value).splitlines()
    assert len(lines) == 3 and all(len(line) < 200 for line in lines)
    assert lines[1].startswith("  data.source = ['xxx") and lines[2].startswith("  bogus: unknown")


# ----------------------------------------------------------------------- io and interruption


def test_csv_cells_with_quotes_and_newlines_round_trip(tmp_path):
    import csv
    rows = [{"actual": 'say "hi"', "predicted": "two\nlines, and a comma", "x": 0.1234567,
             "y": None}]
    write_csv(tmp_path / "c.csv", rows)
    with open(tmp_path / "c.csv", newline="") as f:
        back = list(csv.DictReader(f))
    assert back == [{"actual": 'say "hi"', "predicted": "two\nlines, and a comma",
                     "x": "0.123457", "y": ""}]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temporaries_of_dead_writers_are_removed_by_the_next_write(tmp_path):
    dead, alive = _dead_pid(), os.getppid()
    stale = [tmp_path / f".out.json.{dead}.abc123_x.tmp", tmp_path / ".out.json.q1w2e3r4.tmp"]
    stale[0].write_text("partial")
    stale[1].mkdir()  # the older naming, without a pid
    (stale[1] / "f").write_text("partial")
    live = tmp_path / f".out.json.{alive}.zzz.tmp"
    other = tmp_path / f".other.json.{dead}.abc.tmp"
    live.write_text("another process is writing this")
    other.write_text("not ours")
    with atomic_path(tmp_path / "out.json") as tmp:
        tmp.write_text("{}")
    assert _entries(tmp_path) == sorted([live.name, other.name, "out.json"])
    assert remove_stale_temporaries(tmp_path / "other.json") == [other]


def test_atomic_dir_replaces_a_folder_whole_or_not_at_all(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "a").write_text("1")
        (tmp / "b").write_text("1")
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "a").write_text("2")
        raise RuntimeError("killed between the two files")
    assert {p.name: p.read_text() for p in out.iterdir()} == {"a": "1", "b": "1"}
    with atomic_dir(out) as tmp:
        (tmp / "c").write_text("3")
    assert _entries(out) == ["c"] and _entries(tmp_path) == ["out"]


def test_run_stage_turns_memory_error_into_one_line(capsys):
    def main():
        np.zeros((1 << 62,), dtype=np.uint8)  # numpy's MemoryError names the size

    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as done:
        cli.run_stage(main)
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: out of memory in test_hardening.py")
    assert "Unable to allocate" in err and "Traceback" not in err
    assert signal.getsignal(signal.SIGTERM) is previous  # handler restored


def _stage(script: str, *args: str | Path, cwd: Path, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.Popen([sys.executable, str(REPO / "stages" / script), *map(str, args)],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kw)


def _wait_for_partial_download(data: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        if [p for p in data.glob(".raw.*.tmp/.*.tmp") if p.stat().st_size > 0]:
            return
        time.sleep(0.05)
    raise AssertionError(f"no partial download appeared; stage: {proc.communicate(timeout=5)}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_download_stage_leaves_nothing_a_rerun_would_trust(sig, hostile, tmp_path):
    url = hostile("slow")
    params = write_params(tmp_path / "params.yaml", {"data": {"source": url}})
    proc = _stage("download.py", "--params", params, "--out", "data/raw", cwd=tmp_path)
    _wait_for_partial_download(tmp_path / "data", proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=20)
    if sig == signal.SIGTERM:
        assert proc.returncode == 143 and "Traceback" not in err
        assert err.strip().splitlines()[-1] == "terminated (SIGTERM); temporary files removed"
        assert _entries(tmp_path / "data") == []  # the partial download went with it
    else:  # kill -9 cannot clean up; the next run does
        assert proc.returncode == -signal.SIGKILL
        assert [p.name.split(".")[1] for p in (tmp_path / "data").iterdir()] == ["raw"]
        src = _tar(tmp_path / "good.tar.gz", IMAGEFOLDER)
        write_params(params, {"data": {"source": str(src)}})
        rerun = _stage("download.py", "--params", params, "--out", "data/raw", cwd=tmp_path)
        _, err = rerun.communicate(timeout=60)
        assert rerun.returncode == 0, err
        assert _entries(tmp_path / "data") == ["raw"]
        assert _entries(tmp_path / "data/raw") == ["good.tar.gz", "source.json"]


def test_prepare_stage_out_of_memory_is_one_line(tmp_path):
    # 3000 CIFAR images at 512 x 512 need 2.2 GiB; the process may have 1.5 GiB of address space.
    src = _tar(tmp_path / "c.tar.gz", _cifar_files(500, protocol=4))
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    _raw(tmp_path, src, sha256=sha)
    params = write_params(tmp_path / "params.yaml", {"data": {
        "source": "c.tar.gz", "sha256": sha, "image_size": 512, "max_arrays_gib": 100}})

    def limit_memory():
        resource.setrlimit(resource.RLIMIT_AS, (3 << 29, 3 << 29))

    env_threads = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "stages/prepare.py"), "--params", str(params), "--raw", "raw",
         "--out", "prepared", "--metrics", "data.json", "--details", "details.json"], cwd=tmp_path, capture_output=True,
        text=True, timeout=120, preexec_fn=limit_memory,
        env={**os.environ, **env_threads, "PYTHONPATH": str(REPO / "src")})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: out of memory in prepare.py")
    assert not (tmp_path / "prepared").exists() and not (tmp_path / "data.json").exists()


def test_stage_failures_on_hostile_input_are_one_line_exit_2(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("x")
    src = _imagefolder_dir(tmp_path / "mydata")
    (src / "train/ant/s.png").symlink_to(secret)
    params = write_params(tmp_path / "params.yaml", {"data": {"source": "mydata"}})
    proc = _stage("download.py", "--params", params, "--out", "data/raw", cwd=tmp_path)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and err.count("\n") == 1
    assert err.startswith(f"error: mydata (read from {tmp_path / 'mydata'}): unsafe link "
                          "'train/ant/s.png'")
    assert _entries(tmp_path / "data") == []
    params.write_bytes(b"data: {source: '\xff'}\n")
    proc = _stage("download.py", "--params", params, "--out", "data/raw", cwd=tmp_path)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert "not UTF-8" in err

