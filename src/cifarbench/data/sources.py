"""Read a data source (archive or directory) in place and recognise its layout.

Members are read straight out of the ``.tar``/``.tar.gz``/``.tgz``/``.zip`` archive or the
directory, never extracted, so even a hostile archive cannot write anywhere. Members that *would*
land outside the target on extraction (absolute paths, ``..``, links pointing out) are refused
all the same by tarfile's own ``data`` filter (PEP 706; zip members are put through it as tar
members), so an unsafe archive is reported before someone extracts it by hand. A directory
source is held to the same rule: no link in it may resolve outside it or into a loop.

What a source may cost is capped (:class:`Limits`, from the ``data.max_*`` params): bytes per
member (checked from the declared size before reading, enforced while reading), bytes unpacked
in all, the number of members. Readers stream; a zip's CRCs are checked as it is read.

Two layouts are recognised: the official CIFAR-10 python batches, and torchvision's ImageFolder
(``train/<class>/*``, ``test/<class>/*``, optionally inside one top-level folder), with its
extension list and ``find_classes`` rules (minus its habit of treating hidden folders as
classes). CIFAR batches are pickles: they are loaded only through :func:`restricted_loads`,
which allows the numpy array constructors and nothing else.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import pickle
import posixpath
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

import numpy as np

from cifarbench.config import DataConfig
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

MiB, GiB = 1 << 20, 1 << 30
CHUNK = 1 << 20  # bytes per read when streaming
MAX_LINK_TARGET = 4096  # bytes of a zip symlink's target (PATH_MAX)
# Compression methods Python's zipfile can read (others: Deflate64, implode, AES, ...).
ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
_DECOMPRESSORS: dict[bytes, Callable[[IO[bytes]], io.BufferedIOBase]] = {
    b"\x1f\x8b": lambda f: gzip.GzipFile(fileobj=f, mode="rb"),
    b"BZh": bz2.BZ2File, b"\xfd7zXZ": lzma.LZMAFile}

_READ_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error,
                lzma.LZMAError, NotImplementedError)


@dataclass(frozen=True)
class Limits:
    """What reading and fetching one source may cost, from the ``data.*`` caps.

    Units: bytes, counts, pixels, bytes per second, seconds. Each message that a cap stops
    names its param, so the user knows what to raise.
    """

    source_bytes: int  # data.max_source_gib: the download or copy kept in data/raw
    unpacked_bytes: int  # data.max_unpacked_gib: all files of the source, as read
    member_bytes: int  # data.max_member_mib: one archive member or file
    members: int  # data.max_members: files, folders and links
    image_pixels: int  # data.max_image_mpx: one decoded image
    arrays_bytes: int  # data.max_arrays_gib: prepare's image arrays
    min_rate: float  # data.min_rate_kib_s, in bytes/s
    deadline_s: float  # data.download_deadline_s
    timeout_s: float  # data.timeout_s: one network read
    retries: int  # data.retries: extra download attempts after the first

    @classmethod
    def from_config(cls, data: DataConfig) -> Limits:
        """The caps of ``data`` (params.yaml's ``data`` section)."""
        return cls(source_bytes=int(data.max_source_gib * GiB),
                   unpacked_bytes=int(data.max_unpacked_gib * GiB),
                   member_bytes=int(data.max_member_mib * MiB), members=data.max_members,
                   image_pixels=int(data.max_image_mpx * 1e6),
                   arrays_bytes=int(data.max_arrays_gib * GiB),
                   min_rate=data.min_rate_kib_s * 1024, deadline_s=data.download_deadline_s,
                   timeout_s=data.timeout_s, retries=data.retries)

    # "data.<key> = <value>", for messages
    def source_cap(self) -> str:
        return f"data.max_source_gib = {self.source_bytes / GiB:g}"

    def unpacked_cap(self) -> str:
        return f"data.max_unpacked_gib = {self.unpacked_bytes / GiB:g}"

    def member_cap(self) -> str:
        return f"data.max_member_mib = {self.member_bytes / MiB:g}"

    def members_cap(self) -> str:
        return f"data.max_members = {self.members}"


def size_text(n: float) -> str:
    return f"{n / GiB:.1f} GiB" if n >= GiB else f"{n / MiB:.1f} MiB"


def is_hidden(member: str) -> bool:
    """Hidden files and folders (``.DS_Store``, ``.ipynb_checkpoints/``) and macOS zip debris."""
    return any(part.startswith(".") or part == "__MACOSX" for part in member.split("/"))


def is_image_name(member: str) -> bool:
    return member.lower().endswith(IMG_EXTENSIONS)


# ------------------------------------------------------------------------------- member safety

_FILTER_REASONS = {
    tarfile.AbsolutePathError: "absolute path",
    tarfile.OutsideDestinationError: "its '..' would be extracted outside the target directory",
    tarfile.AbsoluteLinkError: "link to an absolute path, outside the target directory",
    tarfile.LinkOutsideDestinationError: "link points outside the target directory",
}


def _checked(member: tarfile.TarInfo, empty_dir: str, label: str) -> bool:
    """Put ``member`` through tarfile's ``data`` filter; False for a special file (device,
    FIFO: nothing to read, skipped), a UserError if it would land or point outside.

    ``empty_dir`` is an empty real directory standing in for the extraction target (the
    filter resolves paths against the file system). The filter strips a leading ``/``; we
    refuse such names instead, as GNU tar without -P would not extract them where they say.
    """
    try:
        kept = tarfile.data_filter(member, empty_dir)
    except tarfile.SpecialFileError:
        return False
    except tarfile.FilterError as exc:
        reason = _FILTER_REASONS.get(type(exc), type(exc).__name__)
        link = f" ({member.linkname!r})" if member.linkname else ""
        raise UserError(f"{label}: unsafe member {member.name!r}: {reason}{link}; refusing to "
                        "read this archive") from None
    if kept.name != member.name:
        raise UserError(f"{label}: unsafe member {member.name!r}: absolute path, would be "
                        "extracted outside the target directory; refusing to read this archive")
    return True


def _link_target(name: str, linkname: str, *, hard: bool) -> str:
    """Where a link member (already checked) points, relative to the archive root."""
    base = "" if hard else posixpath.dirname(name)  # hard links are relative to the root
    return posixpath.normpath(posixpath.join(base, linkname))


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


def _normalised(name: str) -> str:
    norm = posixpath.normpath(name)
    return "" if norm == "." else norm


# ------------------------------------------------------------------------------------ sources


class Source:
    """The files of an archive or directory, read in place.

    ``files`` are normalised posix paths relative to the source root (links resolved to their
    target's content), ``dirs`` every folder seen, ``ignored`` entries that are not readable files
    (devices, broken links). :meth:`read` yields ``(name, bytes)`` in storage order, which keeps
    reading a compressed tar one sequential pass; a member that several links share is read
    once.
    """

    def __init__(self, label: str, limits: Limits) -> None:
        self.label = label
        self.limits = limits
        self.files: list[str] = []
        self.dirs: set[str] = set()
        self.ignored: list[str] = []
        self._members: dict[str, Any] = {}  # name -> stored member (shared by links)
        self._count = 0
        self.total_bytes = 0  # of all files, links counted at their target's size

    # what each kind of source provides
    def _order(self, member: Any) -> Any:
        raise NotImplementedError

    def _size(self, member: Any) -> int:
        raise NotImplementedError

    def _open(self, member: Any) -> IO[bytes]:
        raise NotImplementedError

    def read(self, names: Iterable[str]) -> Iterator[tuple[str, bytes]]:
        groups: dict[Any, list[str]] = defaultdict(list)
        for name in names:
            groups[self._members[name]].append(name)
        for member in sorted(groups, key=self._order):
            data = self._read_member(member, groups[member][0])
            for name in groups[member]:
                yield name, data

    def copy(self, name: str, dst: BinaryIO) -> None:
        """Stream one file into ``dst``, under the same caps as :meth:`read`."""
        for chunk in self._stream(self._members[name], name):
            dst.write(chunk)

    def verify(self) -> None:
        """Read every byte once to detect corruption not found by listing (zip CRCs)."""

    def close(self) -> None:
        pass

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _counted(self) -> None:
        self._count += 1
        if self._count > self.limits.members:
            raise UserError(f"{self.label}: more than {self.limits.members} files, folders and "
                            f"links, over {self.limits.members_cap()}; raise it if the source "
                            "is genuine")

    def _check_size(self, name: str, size: int) -> None:
        if size > self.limits.member_bytes:
            raise UserError(f"{self.label}: member {name!r} is {size_text(size)}, over "
                            f"{self.limits.member_cap()}; raise it if the file is genuine")

    def _finish_index(self) -> None:
        """Order the files, list their folders, and check what reading them all would cost."""
        self.files = sorted(self._members, key=lambda n: self._order(self._members[n]))
        for name in self.files:
            parent = posixpath.dirname(name)
            while parent and parent not in self.dirs:
                self.dirs.add(parent)
                parent = posixpath.dirname(parent)
        total = self.total_bytes = sum(self._size(m) for m in self._members.values())
        if total > self.limits.unpacked_bytes:
            raise UserError(f"{self.label}: its files total {size_text(total)} (links count at "
                            f"their target's size), over {self.limits.unpacked_cap()}; raise it "
                            "if the source is genuine")

    def _read_member(self, member: Any, name: str) -> bytes:
        return b"".join(self._stream(member, name))

    def _stream(self, member: Any, name: str) -> Iterator[bytes]:
        """Chunks of one stored member: refused before reading if its declared size is over
        the member cap, and stopped if it holds more than it declared."""
        size = self._size(member)
        self._check_size(name, size)
        try:
            with self._open(member) as f:
                got = 0
                while chunk := f.read(min(CHUNK, size + 1 - got)):
                    got += len(chunk)
                    if got > size:
                        raise UserError(f"{self.label}: member {name!r} holds more than the "
                                        f"{size} bytes it declares; the source is corrupt or "
                                        "was changed while read")
                    yield chunk
        except _READ_ERRORS + (RuntimeError,) as exc:
            if isinstance(exc, UserError):
                raise
            raise UserError(f"{self.label}: cannot read member {name!r} ({_describe(exc)}); "
                            "the source is corrupt") from None


class _DirSource(Source):
    """A folder, walked without following any link out of it or into a loop."""

    def __init__(self, root: Path, limits: Limits) -> None:
        super().__init__(str(root), limits)
        self._root = os.path.realpath(root)
        self._sizes: dict[str, int] = {}  # real path -> bytes
        self._walk()
        self._finish_index()

    def _walk(self) -> None:
        # (relative name, real path, real paths of the folders above it: a loop re-enters one)
        stack: list[tuple[str, str, tuple[str, ...]]] = [("", self._root, (self._root,))]
        while stack:
            rel, real, above = stack.pop()
            try:
                with os.scandir(real) as it:
                    entries = sorted(it, key=lambda e: e.name, reverse=True)
            except OSError as exc:
                raise UserError(f"{self.label}: cannot list {rel or '.'} ({exc.strerror})") \
                    from None
            for entry in entries:
                self._counted()
                name = posixpath.join(rel, entry.name)
                path = entry.path
                if entry.is_symlink():
                    path = os.path.realpath(entry.path)
                    if os.path.commonpath([path, self._root]) != self._root:
                        raise UserError(f"{self.label}: unsafe link {name!r} -> "
                                        f"{os.readlink(entry.path)!r}: resolves outside the "
                                        "source folder; refusing to read it (copy the file in "
                                        "instead)")
                try:
                    st = os.stat(path)
                except OSError:  # broken link
                    self.ignored.append(name)
                    continue
                if stat.S_ISDIR(st.st_mode):
                    if path in above:
                        raise UserError(f"{self.label}: link {name!r} leads back to a folder "
                                        "above it (a loop); refusing to read this folder")
                    self.dirs.add(name)
                    stack.append((name, path, (*above, path)))
                elif stat.S_ISREG(st.st_mode):
                    self._members[name] = path
                    self._sizes[path] = st.st_size
                else:  # FIFO, device, socket: nothing to read
                    self.ignored.append(name)

    def _order(self, member: str) -> str:
        return member

    def _size(self, member: str) -> int:
        return self._sizes[member]

    def _open(self, member: str) -> IO[bytes]:
        # No link followed at the last step, no blocking on a FIFO swapped in since listing.
        fd = os.open(member, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | os.O_NONBLOCK)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(f"{member} is no longer a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")


class _CappedStream:
    """The decompressed bytes of a tar, as tarfile reads them, with the caps enforced.

    tarfile reads a pax or GNU long-name header in one piece whatever size it declares, and
    seeks through member data by decompressing it; here no single read may exceed the member
    cap, and no read or seek may go past the unpacked cap.
    """

    def __init__(self, raw: io.BufferedIOBase, limits: Limits, label: str) -> None:
        self._raw, self._limits, self._label = raw, limits, label
        self._max_read = max(limits.member_bytes, CHUNK) + tarfile.BLOCKSIZE

    def read(self, n: int | None = -1) -> bytes:
        if n is None or n < 0 or n > self._max_read:
            raise UserError(f"{self._label}: an archive header declares more than "
                            f"{size_text(self._max_read)} of data, over "
                            f"{self._limits.member_cap()}; refusing to read it")
        self._within(self._raw.tell() + n)
        return self._raw.read(n)

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        if whence != io.SEEK_SET:
            raise ValueError("only absolute seeks")
        self._within(pos)
        return self._raw.seek(pos)

    def tell(self) -> int:
        return self._raw.tell()

    def seekable(self) -> bool:
        return True

    def _within(self, end: int) -> None:
        # a little slack for the end-of-archive blocks of an archive exactly at the cap
        if end > self._limits.unpacked_bytes + 64 * tarfile.BLOCKSIZE:
            raise UserError(f"{self._label}: the archive unpacks to more than "
                            f"{size_text(self._limits.unpacked_bytes)}, over "
                            f"{self._limits.unpacked_cap()}; raise it if the archive is genuine")


class _TarSource(Source):
    def __init__(self, path: Path, magic: bytes, limits: Limits) -> None:
        super().__init__(str(path), limits)
        self._file = open(path, "rb")  # noqa: SIM115 - the source owns it; close() closes it
        self._tar: tarfile.TarFile | None = None
        try:
            decompress = next((d for m, d in _DECOMPRESSORS.items() if magic.startswith(m)), None)
            raw = decompress(self._file) if decompress else self._file
            self._tarstream = _CappedStream(raw, limits, self.label)
            self._index()
        except BaseException:
            self.close()
            raise

    def _index(self) -> None:
        regular: dict[str, tarfile.TarInfo] = {}
        links: dict[str, str] = {}
        last = None
        try:
            # The stubs' tarfile._Fileobj also asks for write() and close(), which reading never
            # calls (a TarFile does not close a fileobj it was given).
            fileobj = cast("tarfile._Fileobj", self._tarstream)
            self._tar = tarfile.open(fileobj=fileobj, mode="r:")  # noqa: SIM115 - closed by close()
            with tempfile.TemporaryDirectory() as empty:
                # Each check runs before the next iteration skips past this member's data.
                for m in self._tar:  # a later member of the same name wins, as on extraction
                    self._counted()
                    last = m.name
                    if not _checked(m, empty, self.label):
                        self.ignored.append(_normalised(m.name))
                        continue
                    name = _normalised(m.name)
                    if not name:
                        continue
                    if m.isdir():
                        self.dirs.add(name)
                    elif m.isfile():
                        self._check_size(name, m.size)
                        regular[name] = m
                    elif m.issym() or m.islnk():
                        links[name] = _link_target(name, m.linkname, hard=m.islnk())
            self._check_end(last)
        except _READ_ERRORS + (ValueError,) as exc:  # tarfile's parsing errors on bad headers
            raise UserError(f"{self.label}: corrupt or truncated archive "
                            f"({_describe(exc)})") from None
        resolved, dangling = _resolve_links(regular, links)
        self._members = {**regular, **resolved}
        self.ignored += dangling
        self._finish_index()

    def _check_end(self, last: str | None) -> None:
        # tarfile stops listing silently at a truncated or corrupt header after the first one;
        # a complete archive ends with zero blocks (and, compressed, a valid end of stream).
        if last is None:
            raise UserError(f"{self.label}: archive is empty")
        assert self._tar is not None  # opened by _index() before it calls this
        f = self._tarstream
        f.seek(self._tar.offset)
        seen = 0
        while chunk := f.read(CHUNK):
            if chunk.count(0) != len(chunk):
                raise UserError(f"{self.label}: corrupt archive: unreadable data after member "
                                f"{last!r}")
            seen += len(chunk)
        if seen == 0:
            raise UserError(f"{self.label}: truncated archive: it ends after member "
                            f"{last!r} without the end-of-archive marker")

    def _order(self, member: tarfile.TarInfo) -> int:
        return member.offset_data

    def _size(self, member: tarfile.TarInfo) -> int:
        return member.size

    def _open(self, member: tarfile.TarInfo) -> IO[bytes]:
        assert self._tar is not None  # the constructor has indexed it, or raised
        f = self._tar.extractfile(member)
        assert f is not None  # None only for non-regular members, never indexed
        return f

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()
        self._file.close()


class _ZipSource(Source):
    def __init__(self, path: Path, limits: Limits) -> None:
        super().__init__(str(path), limits)
        declared = _zip_entry_count(path)
        if declared is not None and declared > limits.members:
            self._count = declared - 1
            self._counted()
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
        if len(infos) > self.limits.members:
            self._count = len(infos) - 1
            self._counted()
        self._order_of = {id(info): i for i, info in enumerate(infos)}
        regular: dict[str, zipfile.ZipInfo] = {}
        links: dict[str, str] = {}
        with tempfile.TemporaryDirectory() as empty:
            for info in infos:
                self._counted()
                is_link = stat.S_ISLNK(info.external_attr >> 16)
                member = tarfile.TarInfo(info.filename)
                member.type = tarfile.DIRTYPE if info.is_dir() else tarfile.REGTYPE
                if is_link:  # unix symlink: the data is the target
                    self._check_method(info)
                    member.type = tarfile.SYMTYPE
                    member.linkname = self._link_text(info)
                _checked(member, empty, self.label)
                name = _normalised(info.filename)
                if not name:
                    continue
                if info.is_dir():
                    self.dirs.add(name)
                elif is_link:
                    links[name] = _link_target(name, member.linkname, hard=False)
                else:
                    self._check_method(info)
                    self._check_size(name, info.file_size)
                    regular[name] = info
        resolved, dangling = _resolve_links(regular, links)
        self._members = {**regular, **resolved}
        self.ignored += dangling
        self._finish_index()

    def _check_method(self, info: zipfile.ZipInfo) -> None:
        if info.flag_bits & 0x1:
            raise UserError(f"{self.label}: member {info.filename!r} is encrypted; decrypt the "
                            "archive first (or use a .tar.gz)")
        if info.compress_type not in ZIP_METHODS:
            names = zipfile.compressor_names  # type: ignore[attr-defined]  # undocumented, not in the stubs
            method = names.get(info.compress_type, "unknown")
            raise UserError(f"{self.label}: member {info.filename!r} uses compression method "
                            f"{info.compress_type} ({method}), which Python's zipfile cannot "
                            "read; re-create the archive with deflate (zip -Z deflate) or as "
                            ".tar.gz")

    def _link_text(self, info: zipfile.ZipInfo) -> str:
        if info.file_size > MAX_LINK_TARGET:
            raise UserError(f"{self.label}: link member {info.filename!r} declares a "
                            f"{info.file_size}-byte target; not a link")
        return b"".join(self._stream(info, info.filename)).decode("utf-8", "replace")

    def _order(self, member: zipfile.ZipInfo) -> int:
        return self._order_of[id(member)]

    def _size(self, member: zipfile.ZipInfo) -> int:
        return member.file_size

    def _open(self, member: zipfile.ZipInfo) -> IO[bytes]:
        return self._zip.open(member)

    def verify(self) -> None:
        """Stream every member once: zipfile checks each CRC as the last byte arrives."""
        for member in sorted(set(self._members.values()), key=self._order):
            for _ in self._stream(member, member.filename):
                pass

    def close(self) -> None:
        self._zip.close()


def _zip_entry_count(path: Path) -> int | None:
    """The number of entries a zip's end record declares, read before zipfile builds an object
    per entry (a few hundred bytes of memory each). zipfile's own reader of that record is
    private, so any surprise from it just skips this early check."""
    try:
        with open(path, "rb") as f:
            end = zipfile._EndRecData(f)  # type: ignore[attr-defined]  # private, not in the stubs
        total = zipfile._ECD_ENTRIES_TOTAL  # type: ignore[attr-defined]  # private, not in the stubs
        return int(end[total]) if end else None
    except Exception:  # noqa: BLE001 - a corrupt record is reported by ZipFile() itself
        return None


def open_source(path: str | Path, limits: Limits) -> Source:
    """Open a directory, zip or (optionally compressed) tar archive for reading in place.

    The archive is recognised by its content, not its name. Listing it checks every member's
    path (see the module docstring) and the caps of ``limits`` and, for tars, that the archive
    is complete.
    """
    path = Path(path)
    if path.is_dir():
        return _DirSource(path, limits)
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    if magic.startswith(b"PK"):
        return _ZipSource(path, limits)
    compressed = any(magic.startswith(m) for m in _DECOMPRESSORS)
    if not compressed and not tarfile.is_tarfile(path):
        raise UserError(f"{path}: not a tar or zip archive (expected .tar.gz, .tgz, .tar, .zip "
                        "or a directory)")
    return _TarSource(path, magic, limits)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())


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
    allowed[("_codecs", "encode")] = _latin1_bytes
    return allowed


def _latin1_bytes(text: Any, encoding: Any = "latin1") -> bytes:
    """Python 3 pickles bytes at protocol 2 as ``_codecs.encode(text, 'latin1')``; allow that
    call and no other codec (some, such as zlib or bz2, would run a decompressor)."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode is allowed only as (str, 'latin1')")
    return text.encode("latin1")


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
