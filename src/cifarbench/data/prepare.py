"""Turn the fetched source into compact, fast-loading arrays: one uncompressed ``.npz`` per split.

Images are decoded with PIL and converted to RGB the way torchvision's ``pil_loader`` does
(grayscale, palette, RGBA, CMYK ...), except that 16-bit images are scaled to 8 bits instead of
clipped; images that are not ``data.image_size`` square are resized on the shorter side and
centre-cropped (the usual ``Resize`` + ``CenterCrop`` evaluation transform). Arrays are uint8
NHWC with int64 labels, loadable without pickle; the full CIFAR-10 train split loads in a few
hundredths of a second. ``data.train_size``/``data.test_size`` take class-balanced subsets that
are deterministic for a seed and nested (a larger subset keeps the smaller one's images).
The data set's name (``label`` in ``meta.json`` and ``metrics/data.json``, printed in every report
caption) is decided here, from what was read: see :func:`data_label`.

Memory is bounded before it is spent: the arrays' size (images x ``image_size``² x 3 bytes) is
checked against ``data.max_arrays_gib`` before they are allocated, each image's declared pixel
count against ``data.max_image_mpx`` before it is decoded, and each member against the source
caps as it is read. The three files of ``data/prepared`` appear together (one folder rename).
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, TextIO

import numpy as np
from PIL import Image, ImageOps
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from tqdm import tqdm

from cifarbench.data.sources import (
    CIFAR_FILE_MD5,
    CIFAR_FILES,
    CIFAR_TRAIN_BATCHES,
    CifarPythonLayout,
    ImageFolderLayout,
    Limits,
    Source,
    detect_layout,
    open_source,
    parse_cifar_batch,
    parse_cifar_meta,
    size_text,
)
from cifarbench.errors import UserError
from cifarbench.io import atomic_dir, atomic_path, read_json, write_json
from cifarbench.schema import DataDetails, DataMetrics, write_record

SOURCE_RECORD = "source.json"  # written by the download stage beside the fetched entry
META_FILE, TRAIN_FILE, TEST_FILE = "meta.json", "train.npz", "test.npz"  # in data/prepared
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                   "truck")
CIFAR10_PER_CLASS = {"train": 5000, "test": 1000}  # images per class in each split
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar", ".zip")
_SPLIT_STREAM = {"train": 0, "test": 1}  # independent random streams per split


@dataclass(frozen=True)
class PreparedData:
    classes: list[str]  # sorted; label i is classes[i]
    layout: str  # "cifar-python" | "imagefolder"
    source: str  # data.source as the download stage recorded it
    label: str  # the data set's name for captions, from data_label()
    image_size: int
    train_x: np.ndarray  # (N, H, W, 3) uint8 RGB
    train_y: np.ndarray  # (N,) int64
    test_x: np.ndarray  # (M, H, W, 3) uint8 RGB
    test_y: np.ndarray  # (M,) int64
    mean: list[float]  # per channel (R, G, B), 0-1 scale, train split
    std: list[float]
    source_train_images: int  # the source's whole train split, before data.train_size

    def class_counts(self, y: np.ndarray) -> dict[str, int]:
        counts = np.bincount(y, minlength=len(self.classes))
        return {c: int(n) for c, n in zip(self.classes, counts, strict=True)}

    def meta(self) -> dict:
        """``data/prepared/meta.json``."""
        return {"classes": self.classes, "num_classes": len(self.classes),
                "image_size": self.image_size, "mean": self.mean, "std": self.std,
                "layout": self.layout, "source": self.source, "label": self.label,
                "train_images": len(self.train_y), "test_images": len(self.test_y),
                "source_train_images": self.source_train_images}

    def metrics(self) -> DataMetrics:
        """``metrics/data.json`` (a DVC metric)."""
        return DataMetrics(num_classes=len(self.classes), train_images=len(self.train_y),
                           test_images=len(self.test_y),
                           source_train_images=self.source_train_images)

    def details(self) -> DataDetails:
        """``metrics/details/data.json``."""
        return DataDetails(label=self.label, image_size=self.image_size,
                           train_class_counts=self.class_counts(self.train_y),
                           test_class_counts=self.class_counts(self.test_y))


class DataMeta(BaseModel):
    """The keys of ``meta.json`` that training and profiling read, checked (others ignored)."""

    model_config = ConfigDict(frozen=True, strict=True)

    num_classes: Annotated[int, Field(ge=1)]
    image_size: Annotated[int, Field(ge=1)]  # pixels, square
    classes: Annotated[list[str], Field(min_length=1)]  # label i is classes[i]
    mean: Annotated[list[float], Field(min_length=3, max_length=3)]  # per channel, 0-1 scale
    std: Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=3, max_length=3)]
    source_train_images: Annotated[int, Field(ge=1)]  # before data.train_size (budget_epochs)

    @model_validator(mode="after")
    def _one_name_per_class(self) -> DataMeta:
        if len(self.classes) != self.num_classes:
            raise ValueError(f"num_classes = {self.num_classes} but classes has "
                             f"{len(self.classes)} names")
        return self


def prepare_dataset(raw_dir: str | Path, *, image_size: int, train_size: int | None,
                    test_size: int | None, seed: int, limits: Limits,
                    log: TextIO | None = None) -> PreparedData:
    """Read what the download stage fetched into ``raw_dir`` and build both splits within the
    ``data.*`` caps of ``limits``."""
    log = log or sys.stderr
    start = time.perf_counter()
    raw_dir = Path(raw_dir)
    record = read_source_record(raw_dir)
    entry = raw_dir / record["name"]
    sizes = {"train": train_size, "test": test_size}
    for split, size in sizes.items():
        if size is not None and size < 1:
            raise UserError(f"data.{split}_size = {size}: must be a positive number of images "
                            "(or null for the whole split)")

    with open_source(entry, limits) as src:
        layout = detect_layout(src)
        if isinstance(layout, CifarPythonLayout):
            classes, splits, official = _read_cifar(src, layout,
                                                    trusted=_archive_verified(entry, record))
            counts = {split: np.bincount(y, minlength=len(classes)).tolist()
                      for split, (_, y) in splits.items()}
            all_jpeg = False
            keep = {split: balanced_subset(y, sizes[split], num_classes=len(classes), seed=seed,
                                           split=split) for split, (_, y) in splits.items()}
            check_memory(sum(map(len, keep.values())), image_size, limits)
            for split, (x, y) in splits.items():
                splits[split] = (_resize_all(x[keep[split]], image_size), y[keep[split]])
            kind = "cifar-python"
        else:
            classes, official = layout.classes, False
            items = {"train": layout.train, "test": layout.test}
            counts = {split: np.bincount([label for _, label in split_items],
                                         minlength=len(classes)).tolist()
                      for split, split_items in items.items()}
            all_jpeg = all(member.lower().endswith((".jpg", ".jpeg"))
                           for split_items in items.values() for member, _ in split_items)
            splits = _read_imagefolder(src, layout, sizes, image_size=image_size, seed=seed,
                                       limits=limits, log=log)
            kind = "imagefolder"

    (train_x, train_y), (test_x, test_y) = splits["train"], splits["test"]
    mean, std = channel_stats(train_x)
    label = data_label(record["name"], official_cifar10=official, classes=classes,
                       class_counts=counts, all_jpeg=all_jpeg)
    print(f"prepare: {label!r}, {kind} from {entry}: {len(classes)} classes, {len(train_y)} train "
          f"and {len(test_y)} test images of {image_size}x{image_size} "
          f"({time.perf_counter() - start:.1f} s)", file=log)
    return PreparedData(classes=classes, layout=kind, source=str(record.get("source", entry)),
                        label=label, image_size=image_size, train_x=train_x, train_y=train_y,
                        test_x=test_x, test_y=test_y, mean=mean, std=std,
                        source_train_images=sum(counts["train"]))


def check_memory(images: int, image_size: int, limits: Limits) -> None:
    """Refuse, before allocating, arrays larger than ``data.max_arrays_gib``."""
    need = images * image_size * image_size * 3
    if need > limits.arrays_bytes:
        raise UserError(
            f"data.image_size = {image_size}: {images} images of {image_size}x{image_size}x3 "
            f"need {size_text(need)} of memory, over data.max_arrays_gib = "
            f"{limits.arrays_bytes / 2**30:g}; lower data.image_size, take a subset with "
            "data.train_size/data.test_size, or raise data.max_arrays_gib if the machine has "
            "the memory")


def save_prepared(data: PreparedData, out_dir: str | Path, metrics_path: str | Path,
                  details_path: str | Path) -> None:
    """Write ``train.npz``, ``test.npz`` and ``meta.json`` into ``out_dir`` as one unit, then
    the details and, last, the metrics.

    The folder is filled under a temporary name and renamed into place, so a kill leaves the
    old folder or the new one, never new arrays beside an old meta.json. The old metrics file
    is removed first: a kill before the new one is written leaves it missing (DVC reruns the
    stage) rather than describing other data.
    """
    Path(metrics_path).unlink(missing_ok=True)
    with atomic_dir(out_dir) as tmp:
        save_split(tmp / TRAIN_FILE, data.train_x, data.train_y)
        save_split(tmp / TEST_FILE, data.test_x, data.test_y)
        write_json(tmp / META_FILE, data.meta())
    write_record(details_path, data.details())
    write_record(metrics_path, data.metrics())


def read_meta(path: str | Path) -> DataMeta:
    """Prepare's ``meta.json``, checked before any model is built; a UserError names the key."""
    try:
        raw = read_json(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read dataset metadata ({exc}); run the prepare stage") \
            from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a JSON object, got {type(raw).__name__}; run the "
                        "prepare stage")
    try:
        return DataMeta.model_validate(raw)
    except ValidationError as err:
        problems = []
        for e in err.errors():
            key = ".".join(str(part) for part in e["loc"])
            if e["type"] == "missing":
                problems.append(f"{key} is missing")
            elif not key:  # _one_name_per_class: its message names the keys
                problems.append(str(e.get("ctx", {}).get("error", e["msg"])))
            else:
                problems.append(f"{key} = {e['input']!r}: {e['msg']}")
        raise UserError(f"{path}: {'; '.join(problems)}; run the prepare stage") from None


def load_prepared(folder: str | Path
                  ) -> tuple[DataMeta, tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The prepare stage's folder: its ``meta.json`` and both splits (see :func:`load_split`),
    checked to agree with each other (image size, label range)."""
    folder = Path(folder)
    meta = read_meta(folder / META_FILE)
    size = meta.image_size
    splits = []
    for name in (TRAIN_FILE, TEST_FILE):
        x, y = load_split(folder / name)
        if x.shape[1:3] != (size, size):
            raise UserError(f"{folder / name}: images are {x.shape[2]}x{x.shape[1]} but "
                            f"{folder / META_FILE} says image_size = {size}; run the prepare stage")
        if len(y) and (y.min() < 0 or y.max() >= meta.num_classes):
            raise UserError(f"{folder / name}: labels {y.min()}..{y.max()} but "
                            f"{folder / META_FILE} has {meta.num_classes} classes; run the "
                            "prepare stage")
        splits.append((x, y))
    return meta, splits[0], splits[1]


def read_source_record(raw_dir: Path) -> dict:
    path = raw_dir / SOURCE_RECORD
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} not found: run the download stage first "
                        "(dvc repro download)") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable ({exc}); run the download stage again") from None
    name = record.get("name") if isinstance(record, dict) else None
    # The entry must be a plain name inside raw_dir, whatever the record says.
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name:
        raise UserError(f"{path}: 'name' must be the file or folder name of the fetched source, "
                        f"got {name!r}; run the download stage again")
    if not (raw_dir / name).exists():
        raise UserError(f"{raw_dir / name} (named in {path}) does not exist; run the download "
                        "stage again")
    return record


def _archive_verified(entry: Path, record: dict) -> bool:
    """Did the download stage match this exact file against a known checksum?"""
    if record.get("kind") != "archive" or not record.get("verified"):
        return False
    sha = hashlib.sha256()
    with open(entry, "rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest() == record.get("sha256")


# ---------------------------------------------------------------------------------- naming


def data_label(source_name: str, *, official_cifar10: bool, classes: list[str],
               class_counts: dict[str, list[int]], all_jpeg: bool) -> str:
    """The data set's name in captions: CIFAR-10 only where the images are CIFAR-10's.

    ``CIFAR-10`` when the batches are the official files; ``CIFAR-10 (JPEG copy)`` (or
    ``CIFAR-10 (<source>)`` for other formats) for a copy that has CIFAR-10's classes and its
    5,000 train / 1,000 test images per class; otherwise the source's own folder or archive
    name, without its archive suffix. ``class_counts`` are per split, before any subset.
    """
    if official_cifar10:
        return "CIFAR-10"
    name = source_name
    for suffix in ARCHIVE_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            name = name[:-len(suffix)]
            break
    cifar_copy = tuple(classes) == CIFAR10_CLASSES and all(
        counts == [CIFAR10_PER_CLASS[split]] * len(classes)
        for split, counts in class_counts.items())
    if cifar_copy:
        return "CIFAR-10 (JPEG copy)" if all_jpeg else f"CIFAR-10 ({name})"
    return name


# --------------------------------------------------------------------------------- subsets


def balanced_subset(labels: np.ndarray, size: int | None, *, num_classes: int, seed: int,
                    split: str) -> np.ndarray:
    """Sorted indices of a class-balanced subset of ``size`` images (all when ``size`` is None).

    Each class gets ``size // K`` images and the first ``size % K`` classes one more; a class
    with fewer images gives all it has and the others share the rest. Within a class the pick
    is a prefix of a seeded permutation, so the subset is deterministic for ``seed`` and a
    larger ``size`` keeps every image of a smaller one.
    """
    n = len(labels)
    if size is None:
        return np.arange(n)
    key = f"data.{split}_size"
    if size > n:
        raise UserError(f"{key} = {size} is larger than the {split} split ({n} images); use at "
                        f"most {n}, or null for the whole split")
    if size < num_classes:
        raise UserError(f"{key} = {size} is smaller than the number of classes ({num_classes}):"
                        " a class-balanced subset needs at least one image per class")
    counts = np.bincount(labels, minlength=num_classes)
    quota = _balanced_quota(counts, size)
    rng = np.random.default_rng([seed, _SPLIT_STREAM[split]])
    picked = [rng.permutation(np.flatnonzero(labels == c))[:quota[c]] for c in range(num_classes)]
    return np.sort(np.concatenate(picked))


def _balanced_quota(counts: np.ndarray, size: int) -> np.ndarray:
    """Images per class summing to ``size`` (<= counts.sum()), as equal as the counts allow."""
    quota = np.zeros_like(counts)
    left = size
    while left > 0:  # each round fills at least one class or finishes
        open_ = np.flatnonzero(quota < counts)
        share, extra = divmod(left, len(open_))
        add = np.full(len(open_), share)
        add[:extra] += 1
        add = np.minimum(add, counts[open_] - quota[open_])
        quota[open_] += add
        left -= int(add.sum())
    return quota


# ------------------------------------------------------------------------------ CIFAR batches


def _read_cifar(src: Source, layout: CifarPythonLayout, *, trusted: bool
                ) -> tuple[list[str], dict[str, tuple[np.ndarray, np.ndarray]], bool]:
    """Classes, both splits, and whether every file is the official CIFAR-10 one."""
    members = {layout.member(n): n for n in CIFAR_FILES}
    blobs = {members[m]: data for m, data in src.read(members)}
    differ = [n for n in CIFAR_FILES if hashlib.md5(blobs[n]).hexdigest() != CIFAR_FILE_MD5[n]]
    # Pickles run code when loaded; the restricted unpickler stops that, and we still only
    # read batches whose origin is vouched for: a checksum, or the official files' MD5s.
    if differ and not trusted:
        raise UserError(
            f"{src.label}: the CIFAR-10 python batches are pickles and this source is not "
            f"verified ({', '.join(differ)} differ from the official files and no checksum "
            "was given); set data.sha256 (or data.md5) to the archive's checksum to vouch "
            "for it")
    where = {n: f"{src.label}: {layout.member(n)}" for n in CIFAR_FILES}
    names = parse_cifar_meta(blobs["batches.meta"], label=where["batches.meta"])
    parts = [parse_cifar_batch(blobs[b], label=where[b]) for b in CIFAR_TRAIN_BATCHES]
    splits = {"train": (np.concatenate([x for x, _ in parts]),
                        np.concatenate([y for _, y in parts])),
              "test": parse_cifar_batch(blobs["test_batch"], label=where["test_batch"])}
    classes = sorted(names)
    if len(set(classes)) != len(classes):
        raise UserError(f"{where['batches.meta']}: duplicate class names in label_names: {names}")
    to_sorted = np.array([classes.index(n) for n in names], dtype=np.int64)
    for split, (x, y) in splits.items():
        if y.size and (y.min() < 0 or y.max() >= len(names)):
            raise UserError(f"{src.label}: {split} labels must lie in 0..{len(names) - 1} "
                            f"(batches.meta has {len(names)} classes), found {y.min()}..{y.max()}")
        splits[split] = (x, to_sorted[y])
    return classes, splits, not differ


def _resize_all(x: np.ndarray, size: int) -> np.ndarray:
    """(N, h, w, 3) uint8 -> (N, size, size, 3) uint8; no copy when already that size."""
    if x.shape[1:3] == (size, size):
        return x
    out = np.empty((len(x), size, size, 3), dtype=np.uint8)
    for i, img in enumerate(x):
        out[i] = np.asarray(_fit(Image.fromarray(img), size))
    return out


# ------------------------------------------------------------------------------- ImageFolder


def _read_imagefolder(src: Source, layout: ImageFolderLayout, sizes: dict[str, int | None], *,
                      image_size: int, seed: int, limits: Limits,
                      log: TextIO) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    if layout.skipped:
        examples = ", ".join(layout.skipped[:3]) + (", ..." if len(layout.skipped) > 3 else "")
        print(f"prepare: skipped {len(layout.skipped)} hidden or non-image files in "
              f"{src.label} ({examples})", file=log)
    items = {"train": layout.train, "test": layout.test}
    where: dict[str, tuple[str, int]] = {}  # member -> (split, row)
    labels = {}
    for split, split_items in items.items():
        y_all = np.array([label for _, label in split_items], dtype=np.int64)
        keep = balanced_subset(y_all, sizes[split], num_classes=len(layout.classes), seed=seed,
                               split=split)
        labels[split] = y_all[keep]
        where.update({split_items[i][0]: (split, row) for row, i in enumerate(keep)})

    check_memory(len(where), image_size, limits)
    x = {split: np.empty((len(y), image_size, image_size, 3), dtype=np.uint8)
         for split, y in labels.items()}
    bar = tqdm(total=len(where), desc="prepare: decoding", unit="img", file=log, mininterval=1.0,
               disable=None)
    # One pass over the source in storage order (a compressed tar cannot seek cheaply).
    with bar, warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="PIL")
        for member, data in src.read(where):
            split, row = where[member]
            x[split][row] = decode_image(data, image_size, label=f"{src.label}: {member}",
                                         max_pixels=limits.image_pixels)
            bar.update()
    return {split: (x[split], labels[split]) for split in items}


def decode_image(data: bytes, size: int, *, label: str = "image", max_pixels: int) -> np.ndarray:
    """Encoded image bytes -> (size, size, 3) uint8 RGB; a UserError naming ``label`` if bad.

    An image that declares more than ``max_pixels`` (``data.max_image_mpx``, in pixels) is
    refused before it is decoded; this check replaces PIL's decompression-bomb warning.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:  # over twice PIL's limit, so over any allowed cap
        assert Image.MAX_IMAGE_PIXELS is not None  # PIL raises this only while a limit is set
        raise UserError(f"{label}: image of more than {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} "
                        f"megapixels, over data.max_image_mpx = {max_pixels / 1e6:g}") from None
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad data; all mean "cannot decode"
        raise _undecodable(label, exc) from None
    with img:
        width, height = img.size
        if width * height > max_pixels:
            raise UserError(f"{label}: image of {width}x{height} = {width * height / 1e6:.1f} "
                            f"megapixels, over data.max_image_mpx = {max_pixels / 1e6:g}; raise "
                            "it if the image is genuine")
        try:
            if img.format == "JPEG" and min(img.size) >= 2 * size:
                img.draft(None, (size, size))  # let libjpeg downscale by 2/4/8 while decoding
            return np.asarray(_fit(to_rgb(img), size), dtype=np.uint8)
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad data
            raise _undecodable(label, exc) from None


def _undecodable(label: str, exc: Exception) -> UserError:
    kind = "not a recognised image" if isinstance(exc, Image.UnidentifiedImageError) else exc
    ext = posixpath.splitext(label)[1] or "(none)"
    text = " ".join(str(kind).split())
    return UserError(f"{label}: cannot decode image with extension {ext}: {text}")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB. 16-bit and 32-bit integer images are scaled from 0..65535."""
    if img.mode == "RGB":
        img.load()
        return img
    if img.mode.startswith("I"):  # I;16, I;16B, I: PIL's convert() would clip at 255
        wide = np.asarray(img).astype(np.int32)  # I;16 fits; I is clipped next
        gray = ((np.clip(wide, 0, 65535) + 128) // 257).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    return img.convert("RGB")


def _fit(img: Image.Image, size: int) -> Image.Image:
    if img.size == (size, size):
        return img
    return ImageOps.fit(img, (size, size), method=Image.Resampling.BILINEAR)


# ------------------------------------------------------------------------------------ arrays


def channel_stats(x: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and (population) std of uint8 (N, H, W, 3) images on the 0-1 scale.

    Exact and memory-light: computed from each channel's 256-bin histogram, built in chunks.
    """
    pixels = x.reshape(-1, 3)  # (N*H*W, 3)
    offset = np.array([0, 256, 512], dtype=np.int16)  # one bincount for the three channels
    counts = np.zeros(3 * 256, dtype=np.int64)
    for i in range(0, len(pixels), 1 << 16):
        counts += np.bincount((pixels[i:i + (1 << 16)] + offset).ravel(), minlength=3 * 256)
    values = np.arange(256, dtype=np.float64) / 255.0
    mean, std = [], []
    for hist in counts.reshape(3, 256).astype(np.float64):
        m = float(hist @ values / hist.sum())
        mean.append(round(m, 6))
        std.append(round(float(np.sqrt(hist @ (values - m) ** 2 / hist.sum())), 6))
    return mean, std


def save_split(path: str | Path, x: np.ndarray, y: np.ndarray) -> None:
    """Write ``x`` (N, H, W, 3) uint8 and ``y`` (N,) int64 as an uncompressed npz, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, x=x, y=y)


def load_split(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a prepared split: ``x`` (N, H, W, 3) uint8 NHWC RGB, ``y`` (N,) int64."""
    try:
        with np.load(path, allow_pickle=False) as f:
            x, y = f["x"], f["y"]
    except (OSError, KeyError, ValueError) as exc:
        raise UserError(f"{path}: not a prepared split ({exc}); run the prepare stage") from None
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3 or y.dtype != np.int64 \
            or y.shape != (len(x),):
        raise UserError(f"{path}: expected x uint8 (N, H, W, 3) and y int64 (N,), got x "
                        f"{x.dtype} {x.shape} and y {y.dtype} {y.shape}")
    return x, y
