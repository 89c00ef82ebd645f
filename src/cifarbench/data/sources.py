"""Read a data source (archive or directory) in place and recognise its layout.

Members are read straight out of the ``.tar``/``.tar.gz``/``.tgz``/``.zip`` archive or the
directory, never extracted, so even a hostile archive cannot write anywhere. Members that *would*
land outside the target on extraction (absolute paths, ``..``, links pointing out) are refused
all the same, with the rules of tarfile's ``data`` filter (PEP 706), so an unsafe archive is
reported before someone extracts it by hand. Two layouts are recognised: the official CIFAR-10
python batches, and torchvision's ImageFolder (``train/<class>/*``, ``test/<class>/*``,
optionally inside one top-level folder), with its extension list and ``find_classes`` rules
(minus its habit of treating hidden folders as classes). CIFAR batches are pickles: they are
loaded only through :func:`restricted_loads`, which allows the numpy array constructors and
nothing else.
"""

from __future__ import annotations

import io
import lzma
import os
import pickle
import posixpath
import re
import stat
import tarfile
import zipfile
import zlib
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from cifarbench.errors import UserError

# torchvision.datasets.folder.IMG_EXTENSIONS, compared case-insensitively as torchvision does.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_FILES = (*CIFAR_TRAIN_BATCHES, "test_batch", "batches.meta")
# MD5 of each file inside the official cifar-10-python.tar.gz (as torchvision checks them), so an
# extracted official copy is trusted without the archive it came from.
CIFAR_FILE_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}

_READ_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error,
                lzma.LZMAError)


def is_hidden(member: str) -> bool:
    """Hidden files and folders (``.DS_Store``, ``.ipynb_checkpoints/``) and macOS zip debris."""
    return any(part.startswith(".") or part == "__MACOSX" for part in member.split("/"))


def is_image_name(member: str) -> bool:
    return member.lower().endswith(IMG_EXTENSIONS)


# ------------------------------------------------------------------------------- member safety


def _member_path(name: str, label: str) -> str:
    """Normalised relative posix path of an archive member, or a UserError if it points out."""
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise UserError(f"{label}: unsafe member {name!r}: absolute path, would be extracted "
                        "outside the target directory; refusing to read this archive")
    norm = posixpath.normpath(name)
    if norm == ".." or norm.startswith("../"):
        raise UserError(f"{label}: unsafe member {name!r}: its '..' would be extracted outside "
                        "the target directory; refusing to read this archive")
    return "" if norm == "." else norm


def _link_target(name: str, linkname: str, *, hard: bool, label: str) -> str:
    """Where a link member points, relative to the archive root; refuse links that point out."""
    base = "" if hard else posixpath.dirname(name)  # hard links are relative to the root
    target = posixpath.normpath(posixpath.join(base, linkname))
    if linkname.startswith("/") or target == ".." or target.startswith("../"):
        raise UserError(f"{label}: unsafe member {name!r}: link to {linkname!r} points outside "
                        "the target directory; refusing to read this archive")
    return target


def _resolve_links(regular: dict[str, Any],
                   links: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    """Map each in-archive link to the regular member it finally points at (chains allowed)."""
    resolved, dangling = {}, []
    for name in links:
        target, hops = links[name], 0
        while target in links and hops < 32:
            target, hops = links[target], hops + 1
        if target in regular:
            resolved[name] = regular[target]
        else:  # points at a folder, at nothing, or loops: like a broken link on disk
            dangling.append(name)
    return resolved, dangling


# ------------------------------------------------------------------------------------ sources


class Source:
    """The files of an archive or directory, read in place.

    ``files`` are normalised posix paths relative to the source root (links resolved to their
    target's content), ``dirs`` every folder seen, ``ignored`` entries that are not readable files
    (devices, broken links). :meth:`read` yields ``(name, bytes)`` in storage order, which keeps
    reading a compressed tar one sequential pass.
    """

    def __init__(self, label: str) -> None:
        self.label = label
        self.files: list[str] = []
        self.dirs: set[str] = set()
        self.ignored: list[str] = []

    def read(self, names: Iterable[str]) -> Iterator[tuple[str, bytes]]:
        raise NotImplementedError

    def verify(self) -> None:
        """Read every byte once to detect corruption not found by listing (zip CRCs)."""

    def close(self) -> None:
        pass

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _add_parents(self) -> None:
        for name in self.files:
            parent = posixpath.dirname(name)
            while parent and parent not in self.dirs:
                self.dirs.add(parent)
                parent = posixpath.dirname(parent)


class _DirSource(Source):
    def __init__(self, root: Path) -> None:
        super().__init__(str(root))
        self._root = root
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            rel = Path(dirpath).relative_to(root).as_posix()
            rel = "" if rel == "." else rel
            for d in dirnames:
                self.dirs.add(posixpath.join(rel, d))
            for f in sorted(filenames):
                name = posixpath.join(rel, f)
                (self.files if (root / name).is_file() else self.ignored).append(name)

    def read(self, names: Iterable[str]) -> Iterator[tuple[str, bytes]]:
        for name in names:
            try:
                yield name, (self._root / name).read_bytes()
            except OSError as exc:
                raise UserError(f"{self.label}: cannot read {name} ({exc.strerror})") from None


class _TarSource(Source):
    def __init__(self, path: Path, mode: TarReadMode) -> None:
        super().__init__(str(path))
        self._file = open(path, "rb")  # noqa: SIM115 - the source owns it; close() closes it
        self._tar: tarfile.TarFile | None = None
        try:
            self._index(mode)
        except BaseException:
            self.close()
            raise

    def _index(self, mode: TarReadMode) -> None:
        try:
            self._tar = tarfile.open(fileobj=self._file, mode=mode)  # noqa: SIM115 - closed by close()
            members = self._tar.getmembers()  # one pass through the (decompressed) stream
            self._check_end(members)
        except _READ_ERRORS as exc:
            raise UserError(f"{self.label}: corrupt or truncated archive "
                            f"({_describe(exc)})") from None
        regular: dict[str, tarfile.TarInfo] = {}
        links: dict[str, str] = {}
        for m in members:  # a later member of the same name wins, as on extraction
            name = _member_path(m.name, self.label)
            if not name:
                continue
            if m.isdir():
                self.dirs.add(name)
            elif m.isfile():
                regular[name] = m
            elif m.issym() or m.islnk():
                links[name] = _link_target(name, m.linkname, hard=m.islnk(), label=self.label)
            else:  # FIFO, device: nothing to read
                self.ignored.append(name)
        resolved, dangling = _resolve_links(regular, links)
        self._members = {**regular, **resolved}
        self.files = sorted(self._members, key=lambda n: self._members[n].offset_data)
        self.ignored += dangling
        self._add_parents()

    def _check_end(self, members: list[tarfile.TarInfo]) -> None:
        # tarfile stops listing silently at a truncated or corrupt header after the first one;
        # a complete archive ends with zero blocks (and, compressed, a valid end of stream).
        if not members:
            raise UserError(f"{self.label}: archive is empty")
        assert self._tar is not None and self._tar.fileobj is not None  # set by _index
        f = self._tar.fileobj
        f.seek(self._tar.offset)
        seen = 0
        while chunk := f.read(1 << 20):
            if chunk.count(0) != len(chunk):
                raise UserError(f"{self.label}: corrupt archive: unreadable data after member "
                                f"{members[-1].name!r}")
            seen += len(chunk)
        if seen == 0:
            raise UserError(f"{self.label}: truncated archive: it ends after member "
                            f"{members[-1].name!r} without the end-of-archive marker")

    def read(self, names: Iterable[str]) -> Iterator[tuple[str, bytes]]:
        assert self._tar is not None  # opened by the constructor
        for name in sorted(names, key=lambda n: self._members[n].offset_data):
            try:
                f = self._tar.extractfile(self._members[name])
                data = f.read() if f is not None else b""
            except _READ_ERRORS as exc:
                raise UserError(f"{self.label}: cannot read member {name!r} "
                                f"({_describe(exc)}); the archive is corrupt") from None
            yield name, data

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()
        self._file.close()


class _ZipSource(Source):
    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        try:
            self._zip = zipfile.ZipFile(path)
        except _READ_ERRORS as exc:
            raise UserError(f"{path}: corrupt or truncated zip archive "
                            f"({_describe(exc)})") from None
        try:
            self._index()
        except BaseException:
            self.close()
            raise

    def _index(self) -> None:
        infos = self._zip.infolist()
        regular: dict[str, zipfile.ZipInfo] = {}
        links: dict[str, str] = {}
        for info in infos:
            name = _member_path(info.filename, self.label)
            if not name:
                continue
            if info.is_dir():
                self.dirs.add(name)
            elif stat.S_ISLNK(info.external_attr >> 16):  # unix symlink: the data is the target
                target = self._read(info, name).decode("utf-8", "replace")
                links[name] = _link_target(name, target, hard=False, label=self.label)
            else:
                regular[name] = info
        resolved, dangling = _resolve_links(regular, links)
        self._members = {**regular, **resolved}
        order = {info.filename: i for i, info in enumerate(infos)}
        self.files = sorted(self._members, key=lambda n: order[self._members[n].filename])
        self.ignored += dangling
        self._add_parents()

    def _read(self, info: zipfile.ZipInfo, name: str) -> bytes:
        try:
            return self._zip.read(info)
        except _READ_ERRORS as exc:
            raise UserError(f"{self.label}: cannot read member {name!r} "
                            f"({_describe(exc)}); the archive is corrupt") from None

    def read(self, names: Iterable[str]) -> Iterator[tuple[str, bytes]]:
        for name in names:
            yield name, self._read(self._members[name], name)

    def verify(self) -> None:
        for _ in self.read(self.files):  # checks every CRC
            pass

    def close(self) -> None:
        self._zip.close()


def open_source(path: str | Path) -> Source:
    """Open a directory, zip or (optionally compressed) tar archive for reading in place.

    The archive is recognised by its content, not its name. Listing it checks every member's
    path (see the module docstring) and, for tars, that the archive is complete.
    """
    path = Path(path)
    if path.is_dir():
        return _DirSource(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    if magic.startswith(b"PK"):
        return _ZipSource(path)
    mode = next((c for m, c in _COMPRESSION_MAGIC.items() if magic.startswith(m)), None)
    if mode is None and not tarfile.is_tarfile(path):
        raise UserError(f"{path}: not a tar or zip archive (expected .tar.gz, .tgz, .tar, .zip "
                        "or a directory)")
    return _TarSource(path, mode=mode or "r:")


TarReadMode = Literal["r:", "r:gz", "r:bz2", "r:xz"]
_COMPRESSION_MAGIC: dict[bytes, TarReadMode] = {b"\x1f\x8b": "r:gz", b"BZh": "r:bz2", b"\xfd7zXZ": "r:xz"}


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.replace("\n", " ")


# ------------------------------------------------------------------------------------ layouts


@dataclass(frozen=True)
class CifarPythonLayout:
    """The official ``cifar-10-batches-py/`` folder (``folder`` is its path in the source)."""

    folder: str

    def member(self, name: str) -> str:
        return posixpath.join(self.folder, name)


@dataclass(frozen=True)
class ImageFolderLayout:
    """``train/<class>/**`` and ``test/<class>/**``: members with class indices, classes sorted."""

    root: str  # "" or the single top-level folder that holds train/ and test/
    classes: list[str]
    train: list[tuple[str, int]]  # (member, label) sorted by class then path, like torchvision
    test: list[tuple[str, int]]
    skipped: list[str]  # hidden or non-image files inside train/ and test/


Layout = CifarPythonLayout | ImageFolderLayout


def detect_layout(src: Source) -> Layout:
    """Recognise the CIFAR-10 python layout or an ImageFolder, or explain what was found."""
    visible = [f for f in src.files if not is_hidden(f)]
    by_folder: dict[str, set[str]] = defaultdict(set)
    for f in visible:
        by_folder[posixpath.dirname(f)].add(posixpath.basename(f))
    cifar = sorted((d for d, names in by_folder.items() if names & {"data_batch_1", "test_batch"}),
                   key=lambda d: (d.count("/"), d))
    if cifar:
        folder = cifar[0]
        missing = [n for n in CIFAR_FILES if n not in by_folder[folder]]
        if missing:
            raise UserError(f"{src.label}: CIFAR-10 python layout in {folder or '.'}/ is "
                            f"incomplete: missing {', '.join(missing)}")
        return CifarPythonLayout(folder)
    return _imagefolder(src)


def _children(names: Iterable[str], parent: str) -> set[str]:
    prefix = f"{parent}/" if parent else ""
    return {n[len(prefix):].split("/", 1)[0] for n in names if n.startswith(prefix) and n != parent}


def _imagefolder(src: Source) -> ImageFolderLayout:
    dirs = {d for d in src.dirs if not is_hidden(d)}
    top = sorted(_children(dirs, ""))
    if {"train", "test"} <= set(top):
        root = ""
    elif len(top) == 1 and {"train", "test"} <= _children(dirs, top[0]):
        root = top[0]
    else:
        found = sorted(_children([f for f in src.files if not is_hidden(f)], "") | set(top))
        shown = ", ".join(found[:8]) + (", ..." if len(found) > 8 else "") or "nothing"
        raise UserError(
            f"{src.label}: unrecognised layout: expected the CIFAR-10 python layout "
            f"(cifar-10-batches-py/{{{','.join(CIFAR_FILES)}}}) or an ImageFolder (train/<class>/*"
            f" and test/<class>/*, optionally inside one top-level folder); found: {shown}")

    splits: dict[str, dict[str, list[str]]] = {}
    skipped: list[str] = []
    for split in ("train", "test"):
        base = posixpath.join(root, split)
        classes: dict[str, list[str]] = {c: [] for c in _children(dirs, base)}
        for f in src.files:
            if not f.startswith(base + "/"):
                continue
            rel = f[len(base) + 1:]
            if "/" not in rel or is_hidden(rel) or not is_image_name(rel):
                skipped.append(f)  # loose files beside the class folders, hidden, not images
                continue
            classes[rel.split("/", 1)[0]].append(f)
        skipped += [i for i in src.ignored if i.startswith(base + "/")]  # devices, broken links
        if not classes:
            raise UserError(f"{src.label}: {base}/ has no class folders "
                            f"(expected {base}/<class>/*)")
        for c, members in classes.items():
            if not members:
                raise UserError(f"{src.label}: class folder {base}/{c}/ has no images (looked "
                                f"for {', '.join(IMG_EXTENSIONS)}, any case)")
        splits[split] = classes

    train_only = sorted(set(splits["train"]) - set(splits["test"]))
    test_only = sorted(set(splits["test"]) - set(splits["train"]))
    if train_only or test_only:
        raise UserError(f"{src.label}: train/ and test/ must hold the same classes; only in "
                        f"train: {train_only or 'none'}; only in test: {test_only or 'none'}")
    class_names = sorted(splits["train"])
    items = {split: [(m, i) for i, c in enumerate(class_names) for m in sorted(splits[split][c])]
             for split in splits}
    return ImageFolderLayout(root=root, classes=class_names, train=items["train"],
                             test=items["test"], skipped=skipped)


# ---------------------------------------------------------------------------- CIFAR batches


def _allowed_globals() -> dict[tuple[str, str], Any]:
    # The functions numpy itself pickles arrays with, under their numpy 1.x and 2.x names.
    reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray,
                                           ("numpy", "dtype"): np.dtype}
    for pkg in ("numpy.core", "numpy._core"):
        allowed[(f"{pkg}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{pkg}.numeric", "_frombuffer")] = frombuffer
    return allowed


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler for CIFAR batches: dicts, lists, bytes and numpy arrays, no other globals."""

    _allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed") from None


def restricted_loads(data: bytes, *, label: str) -> Any:
    """Unpickle a CIFAR python batch (Python 2 pickle; keys come back as bytes)."""
    try:
        return _NumpyOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as exc:  # noqa: BLE001 - any malformed pickle is bad data, not a bug here
        raise UserError(f"{label}: not a valid CIFAR batch ({_describe(exc)})") from None


def _field(batch: Any, key: str, label: str) -> Any:
    if isinstance(batch, dict):
        for k in (key.encode(), key):
            if k in batch:
                return batch[k]
    raise UserError(f"{label}: not a valid CIFAR batch (no {key!r} entry)")


def parse_cifar_batch(data: bytes, *, label: str) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> images (N, 32, 32, 3) uint8 NHWC and labels (N,) int64."""
    batch = restricted_loads(data, label=label)
    pixels = _field(batch, "data", label)
    labels = np.asarray(_field(batch, "labels", label))
    if not (isinstance(pixels, np.ndarray) and pixels.dtype == np.uint8 and pixels.ndim == 2
            and pixels.shape[1] == 3 * 32 * 32):
        raise UserError(f"{label}: not a valid CIFAR batch (data must be uint8 (N, 3072), got "
                        f"{getattr(pixels, 'dtype', type(pixels).__name__)} "
                        f"{getattr(pixels, 'shape', '')})")
    if labels.shape != (len(pixels),) or labels.dtype.kind not in "iu":
        raise UserError(f"{label}: not a valid CIFAR batch ({len(pixels)} images but labels "
                        f"of shape {labels.shape})")
    # (N, 3072) row = 1024 red, 1024 green, 1024 blue values, rows of 32 -> (N, 32, 32, 3)
    images = pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.int64)


def parse_cifar_meta(data: bytes, *, label: str) -> list[str]:
    names = _field(restricted_loads(data, label=label), "label_names", label)
    if not isinstance(names, list) or not names:
        raise UserError(f"{label}: not a valid CIFAR batches.meta (label_names missing)")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]
