"""Prepare stage library: CIFAR python batches and ImageFolder sources (tar, zip, directory)
become exact uint8 arrays; image modes, hidden files, subsets and every bad-input error."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from project_params import LIMITS, prep, write_params

from cifarbench.data import fetch_source, load_prepared, load_split, prepare_dataset, save_split
from cifarbench.data.prepare import balanced_subset, channel_stats, data_label
from cifarbench.data.sources import _NumpyOnlyUnpickler
from cifarbench.errors import UserError

REPO = Path(__file__).resolve().parents[1]
CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
               "truck"]
QUIET = io.StringIO()


# ----------------------------------------------------------------------------- source makers


def _archive(path: Path, files: dict[str, bytes]) -> Path:
    """Write ``files`` as .tar.gz/.tgz/.tar/.zip (by suffix) or, without a suffix, a folder."""
    name = path.name
    if name.endswith(".zip"):
        with zipfile.ZipFile(path, "w") as zf:
            for member, data in files.items():
                zf.writestr(member, data)
    elif name.endswith((".tar.gz", ".tgz", ".tar")):
        with tarfile.open(path, "w" if name.endswith(".tar") else "w:gz") as tar:
            for member, data in files.items():
                info = tarfile.TarInfo(member)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    else:
        for member, data in files.items():
            (path / member).parent.mkdir(parents=True, exist_ok=True)
            (path / member).write_bytes(data)
    return path


def _encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _cifar_files(rng: np.random.Generator, *, per_batch: int = 40, n_test: int = 50,
                 names: list[str] = CIFAR_NAMES) -> tuple[dict[str, bytes], dict]:
    """The official layout: pickled dicts with b'data' uint8 (N, 3072) and b'labels'."""
    files, arrays = {}, {}
    for batch in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = n_test if batch == "test_batch" else per_batch
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, len(names), n)]
        files[f"cifar-10-batches-py/{batch}"] = pickle.dumps(
            {b"batch_label": batch.encode(), b"labels": labels, b"data": data,
             b"filenames": [f"img_{i}.png".encode() for i in range(n)]}, protocol=4)
        arrays[batch] = (data, np.array(labels))
    files["cifar-10-batches-py/batches.meta"] = pickle.dumps(
        {b"label_names": [n.encode() for n in names], b"num_cases_per_batch": per_batch,
         b"num_vis": 3072}, protocol=4)
    files["cifar-10-batches-py/readme.html"] = b"<html></html>"
    return files, arrays


def _imagefolder_files(rng: np.random.Generator, *, classes=("frog", "cat", "dog"), n_train=8,
                       n_test=4, size=48, top="mydata") -> tuple[dict[str, bytes], dict]:
    """3 classes of random 48x48 RGB PNGs (lossless), inside one top-level folder."""
    files, pixels = {}, {}
    for split, n in (("train", n_train), ("test", n_test)):
        for c in classes:
            for i in range(n):
                a = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                member = f"{top}/{split}/{c}/{i:03d}.png".lstrip("/")
                files[member] = _encode(Image.fromarray(a))
                pixels[member] = a
    return files, pixels


def _raw(tmp_path: Path, source: Path, **checksum) -> Path:
    raw = tmp_path / "raw"
    record = fetch_source(str(source), raw, log=QUIET, limits=LIMITS, **checksum)
    (raw / "source.json").write_text(json.dumps(record))
    return raw


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- CIFAR python


def test_cifar_python_arrays_match_the_batches_exactly(tmp_path):
    files, arrays = _cifar_files(np.random.default_rng(0))
    src = _archive(tmp_path / "cifar-10-python.tar.gz", files)
    data = prepare_dataset(_raw(tmp_path, src, sha256=_sha(src)), **prep(), log=QUIET, limits=LIMITS)

    x = np.concatenate([arrays[f"data_batch_{i}"][0] for i in range(1, 6)])
    y = np.concatenate([arrays[f"data_batch_{i}"][1] for i in range(1, 6)])
    assert data.train_x.shape == (200, 32, 32, 3) and data.train_x.dtype == np.uint8
    # row layout: 1024 red, 1024 green, 1024 blue values, each 32 rows of 32
    assert np.array_equal(data.train_x[:, 3, 5, 1], x[:, 1024 + 3 * 32 + 5])
    assert np.array_equal(data.train_x, x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    assert np.array_equal(data.train_y, y) and data.train_y.dtype == np.int64
    assert np.array_equal(data.test_x.reshape(50, -1, 3).transpose(0, 2, 1).reshape(50, -1),
                          arrays["test_batch"][0])
    assert data.classes == CIFAR_NAMES and data.layout == "cifar-python"
    meta, details = data.meta(), data.details()
    assert meta["train_images"] == 200 and meta["test_images"] == 50 and meta["num_classes"] == 10
    assert data.metrics().model_dump() == {"train_images": 200, "test_images": 50, "num_classes": 10,
                                           "source_train_images": 200}
    assert sum(details.train_class_counts.values()) == 200
    assert details.test_class_counts["cat"] == int((arrays["test_batch"][1] == 3).sum())


def test_cifar_label_names_are_sorted_and_labels_follow(tmp_path):
    names = ["zebra", "ant", "moose"]
    files, arrays = _cifar_files(np.random.default_rng(1), per_batch=10, n_test=10, names=names)
    src = _archive(tmp_path / "c.tar.gz", files)
    data = prepare_dataset(_raw(tmp_path, src, md5=hashlib.md5(src.read_bytes()).hexdigest()),
                           **prep(), log=QUIET, limits=LIMITS)
    assert data.classes == ["ant", "moose", "zebra"]
    old = arrays["test_batch"][1]
    assert [data.classes[i] for i in data.test_y] == [names[i] for i in old]


def test_unverified_cifar_pickles_are_not_loaded(tmp_path):
    files, _ = _cifar_files(np.random.default_rng(2), per_batch=4, n_test=4)
    src = _archive(tmp_path / "c.tar.gz", files)
    with pytest.raises(UserError, match="pickles and this source is not verified .* set "
                                        "data.sha256"):
        prepare_dataset(_raw(tmp_path, src), **prep(), log=QUIET, limits=LIMITS)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_restricted_unpickler_refuses_code_even_in_a_verified_archive(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    files, _ = _cifar_files(np.random.default_rng(3), per_batch=4, n_test=4)
    files["cifar-10-batches-py/data_batch_2"] = pickle.dumps({b"data": _Evil()}, protocol=4)
    src = _archive(tmp_path / "c.tar.gz", files)
    with pytest.raises(UserError) as err:
        prepare_dataset(_raw(tmp_path, src, sha256=_sha(src)), **prep(), log=QUIET, limits=LIMITS)
    assert "cifar-10-batches-py/data_batch_2: not a valid CIFAR batch" in str(err.value)
    assert "system is not allowed" in str(err.value)
    assert not (tmp_path / "pwned.txt").exists()
    # the names numpy 1.x wrote (the official files) are accepted
    unpickler = _NumpyOnlyUnpickler(io.BytesIO(b""))
    assert unpickler.find_class("numpy.core.multiarray", "_reconstruct") is \
        unpickler.find_class("numpy._core.multiarray", "_reconstruct")


def test_incomplete_cifar_layout_names_the_missing_batch(tmp_path):
    files, _ = _cifar_files(np.random.default_rng(4), per_batch=4, n_test=4)
    del files["cifar-10-batches-py/data_batch_3"]
    with pytest.raises(UserError, match="incomplete: missing data_batch_3"):
        _raw(tmp_path, _archive(tmp_path / "c.tar.gz", files))


def test_cifar_resized_when_image_size_differs(tmp_path):
    files, _ = _cifar_files(np.random.default_rng(5), per_batch=4, n_test=4)
    src = _archive(tmp_path / "c.tar.gz", files)
    data = prepare_dataset(_raw(tmp_path, src, sha256=_sha(src)), **prep(image_size=16), log=QUIET, limits=LIMITS)
    assert data.train_x.shape == (20, 16, 16, 3) and data.test_x.shape == (4, 16, 16, 3)


# ------------------------------------------------------------------------------- ImageFolder


@pytest.mark.parametrize("kind", ["tar.gz", "tgz", "tar", "zip", "dir"])
def test_imagefolder_arrays_match_the_pngs_exactly(kind, tmp_path):
    files, pixels = _imagefolder_files(np.random.default_rng(6))
    name = "mydata" if kind == "dir" else f"mydata.{kind}"
    if kind == "dir":
        files = {k.removeprefix("mydata/"): v for k, v in files.items()}
        pixels = {k.removeprefix("mydata/"): v for k, v in pixels.items()}
    src = _archive(tmp_path / name, files)
    data = prepare_dataset(_raw(tmp_path, src), **prep(image_size=48), log=QUIET, limits=LIMITS)

    assert data.classes == ["cat", "dog", "frog"] and data.layout == "imagefolder"
    prefix = "" if kind == "dir" else "mydata/"
    order = sorted((c, i) for c in data.classes for i in range(8))  # class, then file name
    expected = np.stack([pixels[f"{prefix}train/{c}/{i:03d}.png"] for c, i in order])
    assert np.array_equal(data.train_x, expected)
    assert data.train_y.tolist() == [data.classes.index(c) for c, _ in order]
    assert data.test_x.shape == (12, 48, 48, 3)
    x = data.train_x / 255.0
    assert np.allclose(data.mean, x.mean(axis=(0, 1, 2)), atol=1e-6)
    assert np.allclose(data.std, x.std(axis=(0, 1, 2)), atol=1e-6)


def test_imagefolder_is_resized_to_image_size(tmp_path):
    files, pixels = _imagefolder_files(np.random.default_rng(7), n_train=2, n_test=1)
    # a smooth 64 wide x 40 high picture: red follows x, green follows y
    wide = np.stack(np.broadcast_arrays(np.linspace(0, 255, 64)[None, :],
                                        np.linspace(0, 255, 40)[:, None], 128), axis=-1)
    wide = wide.round().astype(np.uint8)
    files["mydata/train/cat/wide.png"] = _encode(Image.fromarray(wide))
    data = prepare_dataset(_raw(tmp_path, _archive(tmp_path / "d.tar.gz", files)), **prep(), log=QUIET, limits=LIMITS)
    assert data.train_x.shape == (7, 32, 32, 3)
    square = pixels["mydata/train/cat/000.png"]
    resized = np.asarray(Image.fromarray(square).resize((32, 32), Image.Resampling.BILINEAR))
    assert np.array_equal(data.train_x[0], resized)
    # the wide image keeps its aspect: the centre 40x40 is scaled to 32x32, not the whole squashed
    centre = np.asarray(Image.fromarray(wide[:, 12:52]).resize((32, 32), Image.Resampling.BILINEAR))
    squashed = np.asarray(Image.fromarray(wide).resize((32, 32), Image.Resampling.BILINEAR))
    got = data.train_x[2].astype(int)
    assert np.abs(got - centre).max() <= 2 and np.abs(got - squashed).max() > 20


def test_any_image_mode_and_extension_case_becomes_rgb(tmp_path):
    rng = np.random.default_rng(9)
    rgb = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    smooth = np.stack(np.broadcast_arrays(np.linspace(0, 255, 32)[None, :],
                                          np.linspace(255, 0, 32)[:, None], 100), axis=-1)
    smooth = smooth.round().astype(np.uint8)  # JPEG keeps smooth pictures close to exact
    gray = rng.integers(0, 256, (32, 32), dtype=np.uint8)
    palette = Image.fromarray(rgb).quantize(colors=16)
    wide16 = (gray.astype(np.uint16) * 257)  # 16-bit values whose 8-bit equivalent is gray
    rgba = np.dstack([rgb, rng.integers(0, 256, (32, 32), dtype=np.uint8)])
    files = {
        "train/a/gray.png": _encode(Image.fromarray(gray, "L")),
        "train/a/palette.PNG": _encode(palette),
        "train/a/rgba.png": _encode(Image.fromarray(rgba, "RGBA")),
        "train/b/deep16.png": _encode(Image.fromarray(wide16)),
        "train/b/upper.JPG": _encode(Image.fromarray(smooth), "JPEG", quality=95),
        "train/b/long.jpeg": _encode(Image.fromarray(smooth[..., 0], "L"), "JPEG", quality=95),
        "test/a/0.bmp": _encode(Image.fromarray(rgb), "BMP"),
        "test/b/0.webp": _encode(Image.fromarray(rgb), "WEBP", lossless=True),
    }
    data = prepare_dataset(_raw(tmp_path, _archive(tmp_path / "modes.zip", files)), **prep(), log=QUIET, limits=LIMITS)
    x = dict(zip(["gray", "palette", "rgba", "deep16", "long", "upper"], data.train_x, strict=True))
    assert np.array_equal(x["gray"], np.repeat(gray[..., None], 3, axis=2))
    assert np.array_equal(x["palette"], np.asarray(palette.convert("RGB")))
    assert np.array_equal(x["rgba"], rgb)  # alpha dropped, like torchvision's pil_loader
    assert np.array_equal(x["deep16"], np.repeat(gray[..., None], 3, axis=2))  # scaled, not clipped
    assert np.abs(x["upper"].astype(int) - smooth).max() <= 8  # JPEG is lossy
    assert np.abs(x["long"].astype(int) - smooth[..., :1]).max() <= 8
    assert np.array_equal(x["long"][..., 0], x["long"][..., 2])  # gray stays gray
    assert np.array_equal(data.test_x[0], rgb) and np.array_equal(data.test_x[1], rgb)


def test_hidden_and_non_image_files_are_skipped_with_one_line(tmp_path):
    files, _ = _imagefolder_files(np.random.default_rng(10), n_train=2, n_test=1, top="")
    junk = {"train/cat/.DS_Store": b"\0\0", "train/cat/._000.png": b"AppleDouble",
            "train/.ipynb_checkpoints/x.png": b"not an image", "train/dog/notes.txt": b"hi",
            "test/README.md": b"# readme", ".hidden_top.png": b"x", "LICENSE": b"MIT"}
    log = io.StringIO()
    data = prepare_dataset(_raw(tmp_path, _archive(tmp_path / "j.tar", {**files, **junk})),
                           **prep(), log=log, limits=LIMITS)
    assert data.classes == ["cat", "dog", "frog"] and len(data.train_y) == 6
    lines = [line for line in log.getvalue().splitlines() if "skipped" in line]
    assert len(lines) == 1 and "skipped 5 hidden or non-image files" in lines[0]


# ------------------------------------------------------------------------------------ naming


@pytest.mark.parametrize("kind", ["dir", "tar.gz", "zip"])
def test_own_imagefolder_is_named_after_its_folder_or_archive(kind, tmp_path):
    files, _ = _imagefolder_files(np.random.default_rng(11), n_train=2, n_test=1, top="")
    name = "pollen-grains" if kind == "dir" else f"pollen-grains.{kind}"
    data = prepare_dataset(_raw(tmp_path, _archive(tmp_path / name, files)), **prep(), log=QUIET, limits=LIMITS)
    assert data.label == "pollen-grains"
    assert data.meta()["label"] == data.details().label == "pollen-grains"


def test_cifar_python_layout_that_is_not_the_official_data_is_not_called_cifar10(tmp_path):
    # CIFAR-10's classes and file layout, but random pixels vouched for by a user's checksum
    files, _ = _cifar_files(np.random.default_rng(12))
    src = _archive(tmp_path / "look-alike.tar.gz", files)
    data = prepare_dataset(_raw(tmp_path, src, sha256=_sha(src)), **prep(), log=QUIET, limits=LIMITS)
    assert data.label == "look-alike"


CIFAR_COUNTS = {"train": [5000] * 10, "test": [1000] * 10}


@pytest.mark.parametrize("name, official, classes, counts, jpeg, expected", [
    ("cifar-10-python.tar.gz", True, CIFAR_NAMES, CIFAR_COUNTS, False, "CIFAR-10"),
    ("cifar-10-batches-py", True, CIFAR_NAMES, CIFAR_COUNTS, False, "CIFAR-10"),
    ("cifar10-jpeg.tar.gz", False, CIFAR_NAMES, CIFAR_COUNTS, True, "CIFAR-10 (JPEG copy)"),
    ("cifar10-png.zip", False, CIFAR_NAMES, CIFAR_COUNTS, False, "CIFAR-10 (cifar10-png)"),
    # CIFAR's classes but not its size (a subset, or CINIC-10's 9,000 per class): its own name
    ("cifar10-small", False, CIFAR_NAMES, {"train": [500] * 10, "test": [100] * 10}, True,
     "cifar10-small"),
    ("CINIC-10.tar.gz", False, CIFAR_NAMES, {"train": [9000] * 10, "test": [9000] * 10}, False,
     "CINIC-10"),
    ("digits", False, [f"digit_{k}" for k in range(10)],
     {"train": [144] * 10, "test": [36] * 10}, False, "digits"),
    ("flowers.TGZ", False, ["daisy", "rose"], {"train": [5000] * 2, "test": [1000] * 2}, True,
     "flowers"),
    (".tar.gz", False, ["a", "b"], {"train": [1, 1], "test": [1, 1]}, False, ".tar.gz"),
])
def test_data_label(name, official, classes, counts, jpeg, expected):
    assert data_label(name, official_cifar10=official, classes=classes, class_counts=counts,
                      all_jpeg=jpeg) == expected


# ---------------------------------------------------------------------------------- bad data


def _expect_error(tmp_path: Path, files: dict[str, bytes], pattern: str, **kw) -> None:
    tmp_path.mkdir(parents=True, exist_ok=True)
    with pytest.raises(UserError, match=pattern):
        raw = _raw(tmp_path, _archive(tmp_path / "bad.tar.gz", files))
        prepare_dataset(raw, **prep(**kw), log=QUIET, limits=LIMITS)


def test_undecodable_or_truncated_image_is_named(tmp_path):
    files, _ = _imagefolder_files(np.random.default_rng(11), n_train=2, n_test=1)
    good = files["mydata/train/dog/001.png"]
    _expect_error(tmp_path, {**files, "mydata/train/dog/001.png": b"garbage"},
                  r"bad.tar.gz: mydata/train/dog/001.png: cannot decode image with extension "
                  r".png: not a recognised image")
    _expect_error(tmp_path / "t", {**files, "mydata/test/cat/000.png": good[: len(good) // 2]},
                  r"mydata/test/cat/000.png: cannot decode image .*truncated")


def test_classes_must_match_between_splits(tmp_path):
    files, _ = _imagefolder_files(np.random.default_rng(12), n_train=1, n_test=1)
    no_frog = {k: v for k, v in files.items() if not k.startswith("mydata/test/frog/")}
    _expect_error(tmp_path, no_frog, r"only in train: \['frog'\]; only in test: none")
    extra = {**files, "mydata/test/zebra/0.png": files["mydata/test/cat/000.png"]}
    _expect_error(tmp_path / "r", extra, r"only in train: none; only in test: \['zebra'\]")


def test_empty_class_is_an_error(tmp_path):
    files, _ = _imagefolder_files(np.random.default_rng(13), n_train=1, n_test=1, top="")
    files = {k: v for k, v in files.items() if not k.startswith("train/dog/")}
    files["train/dog/readme.txt"] = b"no images here"
    _expect_error(tmp_path, files, r"class folder train/dog/ has no images")
    # an empty folder on disk is one too
    files.pop("train/dog/readme.txt")
    src = _archive(tmp_path / "folder", files)
    (src / "train" / "dog").mkdir()
    with pytest.raises(UserError, match="class folder train/dog/ has no images"):
        prepare_dataset(_raw(tmp_path / "d", src), **prep(), log=QUIET, limits=LIMITS)


def test_unrecognised_layout_says_what_it_expected_and_found(tmp_path):
    files = {"pictures/a.png": _encode(Image.new("RGB", (4, 4))), "notes.txt": b""}
    _expect_error(tmp_path, files, r"unrecognised layout: expected the CIFAR-10 python layout .*"
                                   r"or an ImageFolder .*; found: notes.txt, pictures")


def test_missing_download_record(tmp_path):
    with pytest.raises(UserError, match="source.json not found: run the download stage first"):
        prepare_dataset(tmp_path, **prep(), log=QUIET, limits=LIMITS)


# ----------------------------------------------------------------------------------- subsets


def test_balanced_subset_is_deterministic_nested_and_balanced():
    labels = np.repeat(np.arange(3), [50, 50, 4])  # class 2 is small
    a = balanced_subset(labels, 11, num_classes=3, seed=0, split="train")
    assert np.array_equal(a, balanced_subset(labels, 11, num_classes=3, seed=0, split="train"))
    assert not np.array_equal(a, balanced_subset(labels, 11, num_classes=3, seed=1, split="train"))
    assert np.bincount(labels[a]).tolist() == [4, 4, 3]
    bigger = balanced_subset(labels, 60, num_classes=3, seed=0, split="train")
    assert set(a) <= set(bigger)  # nested
    assert np.bincount(labels[bigger]).tolist() == [28, 28, 4]  # small class gives all it has
    assert np.array_equal(balanced_subset(labels, None, num_classes=3, seed=0, split="test"),
                          np.arange(104))
    with pytest.raises(UserError, match=r"data.train_size = 105 is larger than the train split "
                                        r"\(104 images\)"):
        balanced_subset(labels, 105, num_classes=3, seed=0, split="train")
    with pytest.raises(UserError, match=r"data.test_size = 2 is smaller than the number of "
                                        r"classes \(3\)"):
        balanced_subset(labels, 2, num_classes=3, seed=0, split="test")


def test_subsets_through_prepare(tmp_path):
    files, _ = _imagefolder_files(np.random.default_rng(14), n_train=8, n_test=4)
    raw = _raw(tmp_path, _archive(tmp_path / "s.tar.gz", files))
    data = prepare_dataset(raw, **prep(train_size=10, test_size=6, seed=3), log=QUIET, limits=LIMITS)
    assert np.bincount(data.train_y).tolist() == [4, 3, 3]
    assert np.bincount(data.test_y).tolist() == [2, 2, 2]
    assert data.meta()["train_images"] == 10 and data.meta()["source_train_images"] == 24
    again = prepare_dataset(raw, **prep(train_size=10, test_size=6, seed=3), log=QUIET, limits=LIMITS)
    assert np.array_equal(data.train_x, again.train_x)
    with pytest.raises(UserError, match=r"data.train_size = 25 is larger than the train split "
                                        r"\(24 images\)"):
        prepare_dataset(raw, **prep(train_size=25), log=QUIET, limits=LIMITS)
    with pytest.raises(UserError, match=r"data.test_size = 0: must be a positive"):
        prepare_dataset(raw, **prep(test_size=0), log=QUIET, limits=LIMITS)


# ------------------------------------------------------------------------------------ arrays


def test_channel_stats_are_exact():
    x = np.random.default_rng(15).integers(0, 256, (7, 5, 3, 3), dtype=np.uint8)
    mean, std = channel_stats(x)
    assert np.allclose(mean, (x / 255).mean(axis=(0, 1, 2)), atol=1e-6)
    assert np.allclose(std, (x / 255).std(axis=(0, 1, 2)), atol=1e-6)


def test_full_cifar_sized_split_round_trips_uncompressed(tmp_path):
    """Uncompressed, so loading is a copy (no decompression); speed is for benchmarks."""
    y = np.arange(50_000, dtype=np.int64) % 10
    x = np.full((50_000, 32, 32, 3), 7, dtype=np.uint8)
    x[:, 5, 9, 1] = y
    save_split(tmp_path / "train.npz", x, y)
    assert (tmp_path / "train.npz").stat().st_size < x.nbytes + y.nbytes + 4096  # uncompressed
    x2, y2 = load_split(tmp_path / "train.npz")
    assert np.array_equal(x2, x) and np.array_equal(y2, y)
    with np.load(tmp_path / "train.npz", allow_pickle=False) as f:
        assert sorted(f.files) == ["x", "y"]


def test_load_prepared_checks_meta_against_the_arrays(tmp_path):
    """What train reads: meta.json is checked key by key and must describe the arrays."""
    x, y = np.zeros((6, 4, 4, 3), dtype=np.uint8), np.arange(6, dtype=np.int64) % 3
    save_split(tmp_path / "train.npz", x, y)
    save_split(tmp_path / "test.npz", x[:3], y[:3])
    meta = {"classes": ["a", "b", "c"], "num_classes": 3, "image_size": 4, "mean": [0.5] * 3,
            "std": [0.25] * 3, "label": "abc", "source_train_images": 6}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    got, (x2, y2), (x3, _) = load_prepared(tmp_path)
    assert got.classes == ["a", "b", "c"] and got.mean == [0.5] * 3
    assert np.array_equal(x2, x) and np.array_equal(y2, y) and len(x3) == 3

    (tmp_path / "meta.json").write_text(json.dumps({**meta, "image_size": 8}))
    with pytest.raises(UserError, match=r"train.npz: images are 4x4 but .*meta.json says "
                                        r"image_size = 8"):
        load_prepared(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps({**meta, "num_classes": 2, "classes": ["a", "b"]}))
    with pytest.raises(UserError, match=r"train.npz: labels 0..2 but .*meta.json has 2 classes"):
        load_prepared(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps({**meta, "num_classes": 4}))
    with pytest.raises(UserError, match="meta.json: num_classes = 4 but classes has 3 names; run"):
        load_prepared(tmp_path)
    del meta["std"]
    (tmp_path / "meta.json").write_text(json.dumps({**meta, "mean": [0.5, "x", 0.5]}))
    with pytest.raises(UserError, match=r"meta.json: mean.1 = 'x': .*; std is missing; run the "
                                        r"prepare stage"):
        load_prepared(tmp_path)


# ------------------------------------------------------------------------------ stage scripts


def _stage(script: str, *args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "stages" / script), *map(str, args)],
                          cwd=cwd, capture_output=True, text=True, timeout=120)


def test_download_and_prepare_scripts_end_to_end(tmp_path):
    files, pixels = _imagefolder_files(np.random.default_rng(17), n_train=4, n_test=2)
    src = _archive(tmp_path / "mydata.tar.gz", files)
    params = write_params(tmp_path / "params.yaml",
                          {"seed": 0, "data": {"source": "mydata.tar.gz", "image_size": 48}})

    done = _stage("download.py", "--params", params, "--out", "data/raw", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "data/raw/source.json").read_text())
    assert record["name"] == "mydata.tar.gz" and record["sha256"] == _sha(src)

    args = ["--params", params, "--raw", "data/raw", "--out", "data/prepared",
            "--metrics", "metrics/data.json", "--details", "metrics/details/data.json"]
    done = _stage("prepare.py", *args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    x, y = load_split(tmp_path / "data/prepared/train.npz")
    assert np.array_equal(x[0], pixels["mydata/train/cat/000.png"]) and len(y) == 12
    meta = json.loads((tmp_path / "data/prepared/meta.json").read_text())
    assert meta["classes"] == ["cat", "dog", "frog"] and meta["source"] == "mydata.tar.gz"
    assert meta["train_images"] == 12 and meta["source_train_images"] == 12
    details = json.loads((tmp_path / "metrics/details/data.json").read_text())
    assert details["test_class_counts"] == {"cat": 2, "dog": 2, "frog": 2}
    assert meta["label"] == details["label"] == "mydata"
    assert json.loads((tmp_path / "metrics/data.json").read_text())["train_images"] == 12

    # a bad value: one line on stderr, exit 2, nothing written
    write_params(params, {"data": {"source": "mydata.tar.gz", "train_size": 500}})
    args[5] = "data/prepared2"
    done = _stage("prepare.py", *args[:7], "metrics/data2.json", "--details", "metrics/d2.json",
                  cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith(
        "error: data.train_size = 500 is larger than the train split (12 images)")
    assert not (tmp_path / "data/prepared2").exists()
    assert not (tmp_path / "metrics/data2.json").exists()
    assert not (tmp_path / "metrics/d2.json").exists()

    write_params(params, {"data": {"source": "mydata.tar.gz", "sha256": "0" * 64}})
    done = _stage("download.py", "--params", params, "--out", "data/raw3", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.startswith("error: checksum mismatch for "
                                                           "mydata.tar.gz")
    assert len(done.stderr.strip().splitlines()) == 1
    assert not list((tmp_path / "data/raw3").glob("*"))
