"""The file server's logic (PROTOCOL.md §3): names, signatures, resumable uploads, downloads.

Layout under `files_path`: `partial/<name>` grows chunk by chunk; `complete/<name>` appears by
an atomic rename once every byte is there, so only complete files are ever served and a crash
never leaves a corrupt file visible. The database row of a name (im_file) records its owner and
the counted size: a chunk is written and then counted, in the transaction that holds the row's
lock (uploads of one name are serialised, across processes too). The file is fsynced before it
is published, and in the background every CHECKPOINT_BYTES (recorded as durable once the fsync
returns: the client does not wait for the disk in the middle of a file); counted bytes past the
last fsync are trusted only within the machine boot that wrote them (docs/files.md). A crash
between the write and the commit leaves an uncounted tail, cut off before the next chunk is
appended; a crash between the rename and the commit is noticed by the next upload request (the
complete file exists).
"""

import errno
import functools
import hashlib
import hmac
import logging
import os
import re
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

import gevent
import pybase64

from im import runtime
from im.buffers import BufferPool, read_exactly, read_some
from im.errors import ImError, bad_request
from im.store import files as store

log = logging.getLogger("im.files")

NAME_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")
MIN_STEM = 16
MD5_RE = re.compile(r"^[0-9A-Fa-f]{32}$")
MAX_CHUNK_BYTES = 8 * 1024 * 1024
MAX_BASE64 = MAX_CHUNK_BYTES * 4 // 3 + 4
READ_BLOCK = 1024 * 1024
SPOOL_BLOCK = 256 * 1024
SPARE_SPOOLS = 4
MEMORY_CHUNK = 1024 * 1024  # chunks up to this size are received into memory ...
MEMORY_BUFFERS = 8  # ... while one of these buffers is free (at most 8 MiB per process)
CHECKPOINT_BYTES = 16 * 1024 * 1024  # fsynced in the background this often (and at the end)
AVATAR_PREFIX = "/file/"


class OffsetConflict(ImError):
    """An upload chunk not at the end of what is stored; `stored` says where to resume."""

    def __init__(self, stored: int, offset: int):
        super().__init__("already_exists", f"offset {offset} is not the {stored} bytes stored", 409)
        self.stored = stored


# --- parameters -----------------------------------------------------------------------------

def check_name(value, field: str = "filename") -> str:
    """1-128 of [A-Za-z0-9._-], not starting with '.', at least 16 chars before the last '.'."""
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise bad_request(field, "1-128 characters of A-Z a-z 0-9 . _ -, not starting with '.'")
    if len(value.rsplit(".", 1)[0]) < MIN_STEM:
        raise bad_request(field, f"at least {MIN_STEM} characters before the extension")
    return value


def check_md5(value) -> str:
    if not isinstance(value, str) or not MD5_RE.match(value):
        raise bad_request("md5", "32 hexadecimal digits")
    return value.lower()


def decode_chunk(value) -> bytes:
    """The base64 `bin`. A clean value is decoded as is; otherwise line breaks, a '+' turned into
    ' ' by a careless form encoder and the URL-safe alphabet are forgiven."""
    if not value:
        return b""
    text = str(value)
    if len(text) <= MAX_BASE64:
        try:
            return pybase64.b64decode(text, validate=True)
        except ValueError:  # binascii.Error included
            pass
    text = "".join(text.split("\n")).replace("\r", "").replace(" ", "+").replace("-", "+").replace("_", "/")
    if len(text) > MAX_BASE64:
        raise ImError("too_large", f"bin: chunks are limited to {MAX_CHUNK_BYTES} bytes", 413)
    try:
        return pybase64.b64decode(text, validate=True)
    except ValueError:
        raise bad_request("bin", "not base64") from None


def signature(token: str, subject: str, offset: str) -> str:
    """Lowercase hex HMAC-SHA256 keyed with the token over "<subject>\\n<offset>"."""
    return hmac.new(token.encode(), f"{subject}\n{offset}".encode(), hashlib.sha256).hexdigest()


def check_signature(token: str, subject: str, offset: str, given) -> None:
    if not isinstance(given, str) or not hmac.compare_digest(signature(token, subject, offset).encode(),
                                                             given.strip().lower().encode()):
        raise ImError("not_authenticated", "bad or missing signature")


# --- storage paths --------------------------------------------------------------------------

def _dir(kind: str) -> Path:
    return _made(runtime.cfg.files_path, kind)


@functools.lru_cache(maxsize=16)
def _made(root: Path, kind: str) -> Path:
    """The directory, created on first use: a mkdir per call cost ~10% of a chunk's CPU."""
    path = root / kind
    path.mkdir(parents=True, exist_ok=True)
    return path


def _in_thread(fn, *args):
    """Run blocking disk work (fsync, hashing) off the event loop."""
    return gevent.get_hub().threadpool.apply(fn, args)


def _size_or_none(path: Path) -> int | None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


# --- upload ---------------------------------------------------------------------------------

def check_chunk(filesize: int, offset: int, length: int, field: str = "bin") -> None:
    """A chunk of `length` bytes at `offset` must fit the announced, allowed filesize."""
    if filesize > runtime.cfg.max_file_bytes:
        raise ImError("too_large", f"filesize: larger than {runtime.cfg.max_file_bytes} bytes", 413)
    if length > MAX_CHUNK_BYTES:
        raise ImError("too_large", f"{field}: chunks are limited to {MAX_CHUNK_BYTES} bytes", 413)
    if offset + length > filesize:
        raise bad_request(field, "the chunk goes past filesize")


class Spool:
    """A raw chunk received before the name's row is locked, so a slow client holds no database
    connection and cannot write into the partial file while someone else appends to it.

    A chunk of up to MEMORY_CHUNK bytes is held in one of MEMORY_BUFFERS reused buffers: a page
    cache write costs ~0.4 ms per MiB here and a spool file made every byte go through it twice.
    A larger chunk, or one arriving while every buffer is taken, goes to an unnamed temporary
    file beside the partial files; those are kept for the next chunks (up to SPARE_SPOOLS):
    creating and freeing one per chunk waits for the filesystem's journal, behind every fsync."""

    spare: list = []
    buffers = BufferPool(MEMORY_CHUNK, MEMORY_BUFFERS)

    def __init__(self, stream, length: int):
        self.length = 0
        self.memory = self.buffers.take(length)
        self.file = None
        try:
            if self.memory is None:
                self.file = self.spare.pop() if self.spare else tempfile.TemporaryFile(dir=_dir("spool"), buffering=0)
            self._receive(stream, length)
        except BaseException:
            self.close()
            raise

    def _receive(self, stream, length: int) -> None:
        if self.memory is not None:
            read_exactly(stream, self.memory[:length])
            self.length = length
            return
        buf = memoryview(bytearray(min(length, SPOOL_BLOCK)))
        while self.length < length:
            got = read_some(stream, buf[:length - self.length], self.length, length)
            self.length = _pwrite_all(self.file.fileno(), buf[:got], self.length)

    def __len__(self) -> int:
        return self.length

    def __enter__(self) -> "Spool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def copy_to(self, fd: int, at: int) -> int:
        """Write the chunk to `fd` at `at` (a spool file's inside the kernel); returns the end offset."""
        if self.memory is not None:
            return _pwrite_all(fd, self.memory[:self.length], at)
        src, done = self.file.fileno(), 0
        while done < self.length:
            copied = os.copy_file_range(src, fd, self.length - done, done, at + done)
            if not copied:
                raise OSError(errno.EIO, "the spooled chunk shrank")
            done += copied
        return at + done

    def close(self) -> None:
        """Give the buffer back; keep the temporary file for another chunk (stale bytes in
        either are never read)."""
        if self.memory is not None:
            self.buffers.give(self.memory)
        elif self.file is not None and len(self.spare) < SPARE_SPOOLS:
            self.spare.append(self.file)
        elif self.file is not None:
            self.file.close()
        self.memory = self.file = None


os.register_at_fork(after_in_child=Spool.spare.clear)  # a child must not share the files (buffers are copies)


def upload(uid: str, name: str, filesize: int, offset: int, data: "bytes | Spool") -> int:
    """Store one chunk (an empty one is a probe); returns the bytes stored after it."""
    check_chunk(filesize, offset, len(data))
    with runtime.db.autocommit() as cur:  # BEGIN and COMMIT ride with the first and last statements
        row = store.lock(cur, name, begin=True)
        claimed = row is None and store.claim(cur, name, uid, filesize)
        row = row or store.lock(cur, name)
        if row["owner"] != uid:
            raise ImError("forbidden", "this file name belongs to another user", 403)
        if row["filesize"] != filesize:
            raise bad_request("filesize", f"differs from the {row['filesize']} bytes announced first")
        stored, durable, done = _settle(cur, name, row)
        if data and (done or offset != stored):
            raise OffsetConflict(stored, offset)
        if done or not data and stored < filesize:
            store.commit(cur)  # a probe: keeps a new owner and what _settle repaired
            return stored
        sync = stored + len(data) == filesize or boot_id() is None
        stored = _append(name, stored, data, sync)
        complete = stored == filesize
        if complete:
            _publish(name)
        # losing this count in a crash only makes the client send chunks again; a new owner and
        # a completion are committed durably
        store.set_size(cur, name, stored, complete, stored if sync else durable, boot_id(),
                       flush=complete or claimed, commit=True)
    if complete:
        log.info("file %s complete (%d bytes) by %s", name, stored, uid)
    elif not sync and stored - durable >= CHECKPOINT_BYTES:
        _checkpoint_soon(name, stored)
    return stored


_checkpointing: set[str] = set()  # names with a background fsync in flight in this process


def _checkpoint_soon(name: str, upto: int) -> None:
    if name not in _checkpointing:
        _checkpointing.add(name)
        gevent.spawn(_checkpoint, name, upto)


def _checkpoint(name: str, upto: int) -> None:
    """fsync the partial file, then record its first `upto` bytes durable. A failure only
    leaves `durable` behind: the next checkpoint or the last chunk's fsync covers the bytes."""
    try:
        try:
            fd = os.open(_dir("partial") / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return  # completed meanwhile: published after its own fsync
        try:
            _in_thread(os.fsync, fd)
        finally:
            os.close(fd)
        with runtime.db.transaction() as cur:
            store.raise_durable(cur, name, upto)
    except Exception as err:
        log.warning("file %s: background fsync to %d bytes not recorded: %s", name, upto, err)
    finally:
        _checkpointing.discard(name)


@functools.cache
def boot_id() -> str | None:
    """This boot of the machine (Linux); None where unknown, and then every chunk is fsynced."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _settle(cur, name: str, row: dict) -> tuple[int, int, bool]:
    """(counted size, fsynced size, complete), reconciled with the disk after a crash: counted
    bytes not yet fsynced are trusted only within the boot that wrote them (the page cache
    survives a crash of the process, not of the machine)."""
    if row["complete"] or _size_or_none(_dir("complete") / name) is not None:
        if not row["complete"]:
            store.set_size(cur, name, row["filesize"], True, row["filesize"], boot_id())
        return row["filesize"], row["filesize"], True
    durable = row["size"] if row["durable"] is None else row["durable"]
    counted = row["size"] if row["boot"] == boot_id() else durable
    on_disk = _size_or_none(_dir("partial") / name) or 0
    if on_disk < counted:
        log.warning("file %s: %d bytes on disk, %d counted; resuming from the disk", name, on_disk, counted)
        counted = on_disk
    elif counted < row["size"]:
        log.warning("file %s: the machine restarted since %d bytes were counted, %d of them fsynced; "
                    "resuming there", name, row["size"], counted)
    if counted != row["size"]:
        store.set_size(cur, name, counted, False, min(durable, counted), boot_id())
    return counted, min(durable, counted), False


def _append(name: str, stored: int, data: "bytes | Spool", sync: bool) -> int:
    """Write `data` at `stored` of the partial file (cutting any uncounted tail); fsync the file
    when `sync`."""
    fd = os.open(_dir("partial") / name, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640)
    try:
        if os.fstat(fd).st_size != stored:
            os.ftruncate(fd, stored)
        at = data.copy_to(fd, stored) if isinstance(data, Spool) else _pwrite_all(fd, data, stored)
        if sync:
            _in_thread(os.fsync, fd)
    finally:
        os.close(fd)
    return at


def _pwrite_all(fd: int, data, at: int) -> int:
    """Write all of `data` (bytes or a memoryview) at `at`; returns the end offset."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, at)
        view, at = view[written:], at + written
    return at


def _publish(name: str) -> None:
    """Move the finished file where downloads look, durably."""
    complete = _dir("complete")
    os.rename(_dir("partial") / name, complete / name)
    dir_fd = os.open(complete, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _in_thread(os.fsync, dir_fd)
    finally:
        os.close(dir_fd)


# --- download -------------------------------------------------------------------------------

@dataclass
class Opened:
    fd: int
    size: int


def open_complete(name: str) -> Opened:
    """Open a complete file (never through a symlink); 404 when there is none."""
    try:
        fd = os.open(_dir("complete") / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as err:
        if err.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
            raise ImError("not_found", "no such file") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise ImError("not_found", "no such file")
    return Opened(fd, st.st_size)


class Blocks:
    """An iterable over `length` bytes of an open file from `start`, read 64 KiB at a time;
    closing it (the WSGI server does, even when the client went away) closes the file."""

    def __init__(self, fd: int, start: int, length: int):
        self.fd, self.at, self.left = fd, start, length

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        if self.left <= 0 or self.fd < 0:
            self.close()
            raise StopIteration
        chunk = os.pread(self.fd, min(READ_BLOCK, self.left), self.at)
        if not chunk:
            self.close()
            raise StopIteration
        self.at += len(chunk)
        self.left -= len(chunk)
        return chunk

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def matches_md5(name: str, md5: str) -> bool:
    """Whether the complete file has this MD5 (computed once, then kept in im_file)."""
    opened = open_complete(name)
    os.close(opened.fd)
    with runtime.db.transaction() as cur:
        row = store.get(cur, name)
    digest = row["md5"] if row and row["md5"] else None
    if digest is None:
        digest = _in_thread(_md5_of, _dir("complete") / name)
        with runtime.db.transaction() as cur:
            store.set_md5(cur, name, digest)
    return hmac.compare_digest(digest, md5)


def _md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


def avatar_name(uid: str) -> str:
    """The file named by the user's avatar (`/file/<name>`); 404 when there is none."""
    with runtime.db.transaction() as cur:
        avatar = store.avatar_of(cur, uid)
    name = (avatar or "").removeprefix(AVATAR_PREFIX)
    try:
        return check_name(name)
    except ImError:
        raise ImError("not_found", "the user has no avatar file") from None
