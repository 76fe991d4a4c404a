"""The payload journal: an append-only, crash-safe log of scored records, one directory per endpoint.

Layout: ``<endpoint>.journal/`` holds numbered segment files ``0000000001.seg``, ... and a
``lock`` file (``flock``: one process owns a journal at a time). A segment starts with a header
(magic ``MCPJ``, version, a random 16-byte segment id, the deployment id and asset revision),
then frames, one per scoring request::

    frame := u32 body_length | u32 crc32(body) | body
    body  := u8 version | f64 timestamp | f32 latency_ms | u8 flags | u16 id_length | u32 n
             | u16 k | u8 c | u16 h | u16 w | scoring_id (utf-8) | n·c·h·w uint8 pixels
             | n·k float32 probabilities (little-endian)

    flags bit 0 (``FLAG_RECORDS``): the inputs are tabular records, ``c = h = 1``, ``w = F``
    little-endian float32 values each instead of uint8 pixels.

A frame is written with one ``os.write`` before the HTTP 200 is sent, so it is in the kernel's
page cache when the client hears back: it survives the process being killed (SIGKILL included),
not a power loss unless ``fsync`` is on. A kill in the middle of a write can leave a torn last
frame; it is detected (length beyond the end, or a CRC mismatch) and was never answered 200.

The writer starts a new segment at every start and whenever the current one passes
``segment_bytes``. The drainer reads segments in order from the offset stored in the database
(``mc_journal_offsets``, moved in the same transaction as the records it covers), inserts the
records (idempotent by ``scoring_id``), and deletes a segment once it is fully drained and no
longer written to.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
import struct
import time
import uuid
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from modelcycle.core.monitoring.errors import MonitoringError
from modelcycle.core.monitoring.records import PayloadRecord, build_records, record_ids

if TYPE_CHECKING:  # pragma: no cover
    from modelcycle.core.monitoring.store import MonitoringStore

__all__ = [
    "Frame",
    "segment_numbers",
    "JournalWriter",
    "JournalDrainer",
    "encode_frame",
    "parse_frames",
    "frames_to_rows",
    "record_ids",
    "sampled",
    "lock_journal",
    "drain_orphaned_journals",
]

log = logging.getLogger(__name__)

MAGIC = b"MCPJ"
VERSION = 1
_FRAME = struct.Struct("<II")
_BODY = struct.Struct("<BdfBHIHBHH")
_SEG_HEAD = struct.Struct("<4sH16s")
_U16 = struct.Struct("<H")
SEGMENT_SUFFIX = ".seg"
MAX_FRAME = 256 << 20
FLAG_RECORDS = 1


def sampled(scoring_id: str, percentage: float) -> bool:
    """Deterministic per-request sampling: the same id is always in or out."""
    if percentage >= 100:
        return True
    if percentage <= 0:
        return False
    return zlib.crc32(scoring_id.encode()) % 10_000 < percentage * 100


def encode_frame(scoring_id: str, timestamp: float, latency_ms: float, pixels: np.ndarray, probabilities: np.ndarray) -> bytes:
    """One request's frame. ``pixels`` uint8 ``(N, C, H, W)`` — or tabular records, float32
    ``(N, F)`` — and ``probabilities`` ``(N, K)``."""
    flags = 0
    if pixels.ndim == 2:
        flags, pixels = FLAG_RECORDS, np.ascontiguousarray(pixels, dtype="<f4").reshape(len(pixels), 1, 1, -1)
    n, c, h, w = pixels.shape
    k = probabilities.shape[1]
    sid = scoring_id.encode()
    body = b"".join((
        _BODY.pack(VERSION, timestamp, latency_ms, flags, len(sid), n, k, c, h, w),
        sid,
        pixels.tobytes(),
        np.ascontiguousarray(probabilities, dtype="<f4").tobytes(),
    ))
    return _FRAME.pack(len(body), zlib.crc32(body)) + body


class Frame:
    """One parsed request: header fields plus where its pixels and probabilities sit in ``buffer``."""

    __slots__ = ("scoring_id", "timestamp", "latency_ms", "n", "k", "shape", "buffer", "pixel_offset",
                 "probability_offset", "flags")

    def __init__(self, scoring_id: str, timestamp: float, latency_ms: float, n: int, k: int,
                 shape: tuple[int, int, int], buffer: bytes, pixel_offset: int, probability_offset: int,
                 flags: int = 0) -> None:
        self.scoring_id, self.timestamp, self.latency_ms = scoring_id, timestamp, latency_ms
        self.n, self.k, self.shape = n, k, shape
        self.buffer, self.pixel_offset, self.probability_offset = buffer, pixel_offset, probability_offset
        self.flags = flags

    @property
    def tabular(self) -> bool:
        """The inputs are float32 tabular records (``FLAG_RECORDS``)."""
        return bool(self.flags & FLAG_RECORDS)

    @property
    def chw(self) -> int:
        c, h, w = self.shape
        return c * h * w

    @property
    def input_bytes(self) -> int:
        """Bytes of one record's input (4 per value for tabular records, 1 per pixel)."""
        return self.chw * (4 if self.tabular else 1)

    @property
    def pixels(self) -> np.ndarray:
        """uint8 ``(n, C·H·W)``; tabular records: float32 ``(n, F)``."""
        dtype = "<f4" if self.tabular else np.uint8
        return np.frombuffer(self.buffer, dtype, self.n * self.chw, self.pixel_offset).reshape(self.n, self.chw)

    @property
    def probabilities(self) -> np.ndarray:
        """float32 ``(n, K)``."""
        return np.frombuffer(self.buffer, "<f4", self.n * self.k, self.probability_offset).reshape(self.n, self.k)


def parse_frames(buffer: bytes, limit: int | None = None) -> tuple[list[Frame], int, int, bool]:
    """Parse whole frames from the start of ``buffer`` (kept by the frames, not copied).

    Returns:
        ``(frames, consumed, needed, corrupt)``: the frames, the bytes they span, the total
        size the next (incomplete) frame needs from ``consumed`` on (0 when the buffer ends
        on a frame boundary), and whether parsing stopped at a corrupt frame.
    """
    frames: list[Frame] = []
    pos, end = 0, len(buffer)
    view = memoryview(buffer)
    frame_unpack, body_unpack = _FRAME.unpack_from, _BODY.unpack_from
    head, body_size = _FRAME.size, _BODY.size
    crc32 = zlib.crc32
    while pos + head <= end and (limit is None or len(frames) < limit):
        length, crc = frame_unpack(buffer, pos)
        if length < body_size or length > MAX_FRAME:
            return frames, pos, 0, True
        start = pos + head
        if start + length > end:
            return frames, pos, head + length, False
        if crc32(view[start:start + length]) != crc:
            return frames, pos, 0, True
        version, timestamp, latency, flags, id_len, n, k, c, h, w = body_unpack(buffer, start)
        offset = start + body_size
        size = c * h * w * (4 if flags & FLAG_RECORDS else 1)
        if version != VERSION or body_size + id_len + n * size + 4 * n * k != length:
            return frames, pos, 0, True
        scoring_id = str(view[offset:offset + id_len], "utf-8")
        offset += id_len
        frames.append(Frame(scoring_id, timestamp, latency, n, k, (c, h, w), buffer, offset, offset + n * size, flags))
        pos = start + length
    if pos < end and pos + head > end:
        return frames, pos, head, False
    return frames, pos, 0, False


def frames_to_rows(frames: list[Frame], deployment_id: str, asset_revision: str | None) -> list[PayloadRecord]:
    """The frames' :class:`~modelcycle.core.monitoring.records.PayloadRecord` (one per image);
    the statistics are computed vectorised over all frames of one shape."""
    groups: dict[tuple[int, int, bool], list[Frame]] = defaultdict(list)
    for frame in frames:
        groups[(frame.chw, frame.k, frame.tabular)].append(frame)
    rows: list[PayloadRecord] = []
    for (chw, k, tabular), group in groups.items():
        size = chw * (4 if tabular else 1)
        pixel_bytes = b"".join([f.buffer[f.pixel_offset:f.pixel_offset + f.n * size] for f in group])
        probability_bytes = b"".join([f.buffer[f.probability_offset:f.probability_offset + 4 * f.n * k] for f in group])
        ids: list[str] = []
        requests: list[str] = []
        times: list[float] = []
        latencies: list[float] = []
        for frame in group:
            if frame.n == 1:
                ids.append(frame.scoring_id)
                requests.append(frame.scoring_id)
                times.append(frame.timestamp)
                latencies.append(frame.latency_ms)
            else:
                ids += record_ids(frame.scoring_id, frame.n)
                requests += [frame.scoring_id] * frame.n
                times += [frame.timestamp] * frame.n
                latencies += [frame.latency_ms] * frame.n
        rows += build_records(ids, requests, times, latencies, deployment_id, asset_revision,
                              pixel_bytes, probability_bytes, chw, k, tabular)
    return rows


def _segment_header(journal_id: bytes, deployment_id: str, asset_revision: str | None) -> bytes:
    dep, rev = deployment_id.encode(), (asset_revision or "").encode()
    return _SEG_HEAD.pack(MAGIC, VERSION, journal_id) + _U16.pack(len(dep)) + dep + _U16.pack(len(rev)) + rev


def _read_segment_header(fd: int) -> tuple[str, str, str | None, int] | None:
    """``(journal_id hex, deployment_id, asset_revision, header_size)``; None if torn or foreign."""
    head = os.pread(fd, 4096, 0)
    if len(head) < _SEG_HEAD.size + 2:
        return None
    magic, version, journal_id = _SEG_HEAD.unpack_from(head, 0)
    if magic != MAGIC or version != VERSION:
        return None
    pos = _SEG_HEAD.size
    (dep_len,) = _U16.unpack_from(head, pos)
    pos += 2
    if len(head) < pos + dep_len + 2:
        return None
    deployment_id = head[pos:pos + dep_len].decode()
    pos += dep_len
    (rev_len,) = _U16.unpack_from(head, pos)
    pos += 2
    if len(head) < pos + rev_len:
        return None
    revision = head[pos:pos + rev_len].decode() or None
    return journal_id.hex(), deployment_id, revision, pos + rev_len


def _segments(directory: Path) -> list[tuple[int, Path]]:
    found = []
    for path in directory.glob(f"*{SEGMENT_SUFFIX}"):
        try:
            found.append((int(path.stem), path))
        except ValueError:
            continue
    return sorted(found)


def segment_numbers(directory: Path) -> list[int]:
    """The numbers of the journal's segment files, in order."""
    return [seq for seq, _ in _segments(Path(directory))]


def lock_journal(directory: Path, timeout: float = 0.0) -> int | None:
    """Take the journal directory's exclusive lock; the fd holds it (None if busy after ``timeout``)."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            return fd
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            if time.monotonic() >= deadline:
                os.close(fd)
                return None
            time.sleep(0.05)


class JournalWriter:
    """Appends frames to the current segment; called from one thread (the event loop).

    Raises:
        OSError: the frame could not be written (disk full, ...): the caller must not answer 200.
    """

    def __init__(self, directory: Path, deployment_id: str, asset_revision: str | None,
                 segment_bytes: int = 64 << 20, fsync: bool = False) -> None:
        self.directory = Path(directory)
        self.deployment_id, self.asset_revision = deployment_id, asset_revision
        self.segment_bytes, self.fsync = segment_bytes, fsync
        self.current_seq: int | None = None
        self.current_journal_id: str | None = None
        self.header_size = 0
        #: segments numbered from here on may still be written (published before a segment is
        #: created, so the drainer never retires a segment the writer is about to use)
        self.active_from: int | None = None
        self.position = 0
        self._fd: int | None = None
        self.last_error: OSError | None = None  #: the last failed append, until one succeeds

    def open(self) -> None:
        """Start a fresh segment after the highest existing one."""
        existing = _segments(self.directory)
        self._start_segment((existing[-1][0] if existing else 0) + 1)

    def _start_segment(self, seq: int) -> None:
        self.active_from = seq  # no more writes go to earlier segments
        path = self.directory / f"{seq:010d}{SEGMENT_SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        journal_id = uuid.uuid4().bytes
        header = _segment_header(journal_id, self.deployment_id, self.asset_revision)
        os.write(fd, header)
        if self.fsync:
            os.fsync(fd)
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        previous, self._fd = self._fd, fd
        self.position = self.header_size = len(header)
        self.current_seq, self.current_journal_id = seq, journal_id.hex()
        if previous is not None:
            os.close(previous)

    def append(self, frame: bytes) -> None:
        if self._fd is None:
            raise OSError(errno.EBADF, "payload journal is closed")
        try:
            written = os.write(self._fd, frame)
            if written != len(frame):  # a short write is a failure; the torn frame is never answered
                raise OSError(errno.ENOSPC, f"short write to the payload journal ({written} of {len(frame)} bytes)")
            if self.fsync:
                os.fdatasync(self._fd)
        except OSError as exc:
            self.last_error = exc
            raise
        self.last_error = None
        self.position += written
        if self.position >= self.segment_bytes:
            self._start_segment(int(self.current_seq or 0) + 1)

    def problem(self, min_free_bytes: int = 0) -> str | None:
        """Why the journal cannot take records now, or None when it can: it is closed, its file
        system has less than ``min_free_bytes`` free, or its last append failed and a probe
        write into the journal directory fails too (a passing probe clears that failure)."""
        fd = self._fd
        if fd is None:
            return "the payload journal is closed"
        try:
            stats = os.fstatvfs(fd)
        except OSError as exc:
            return f"the payload journal cannot be checked: {exc}"
        free = stats.f_bavail * stats.f_frsize
        if free < min_free_bytes:
            return (f"the payload journal's file system has {free / 2**20:.1f} MB free, less than the "
                    f"{min_free_bytes / 2**20:.1f} MB it keeps in reserve: free space under {self.directory}")
        if self.last_error is not None:
            probe = self.directory / f".probe.{os.getpid()}"
            try:
                probe.write_bytes(b"\0" * 4096)
                probe.unlink()
            except OSError as exc:
                return f"the payload journal cannot be written ({self.last_error}; a probe write failed: {exc})"
            self.last_error = None
        return None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self.current_seq, self.active_from = None, None, None


@dataclass
class _Segment:
    seq: int
    path: Path
    fd: int
    journal_id: str
    deployment_id: str
    asset_revision: str | None
    offset: int


class JournalDrainer:
    """Moves a journal's records into the store; one drain at a time per journal (the caller
    serialises).

    A segment still being written is never deleted, and a short or unparsable tail in it is
    waited for rather than dropped. Which segment that is: ``writer``'s (same process), or with
    ``follow`` the newest segment present (a writer in another process only ever appends to its
    newest segment, and creates a newer one only after its last write to the previous). With
    neither, no writer is alive and every segment is final.
    """

    def __init__(self, directory: Path, store: MonitoringStore, writer: JournalWriter | None = None,
                 read_bytes: int = 8 << 20, follow: bool = False) -> None:
        self.directory = Path(directory)
        self.store, self.writer, self.read_bytes, self.follow = store, writer, read_bytes, follow
        self._open: dict[int, _Segment] = {}
        self._newest = 0
        self.records = 0
        self.offsets: dict[str, int] = {}  # journal id -> byte offset stored, for the open segments

    def _segment(self, seq: int, path: Path) -> _Segment | None:
        segment = self._open.get(seq)
        if segment is not None:
            return segment
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        header = _read_segment_header(fd)
        if header is None:
            if self._active(seq):  # header not fully written yet
                os.close(fd)
                return None
            os.close(fd)
            log.warning("payload journal %s: no valid header (torn at creation); removing it", path)
            path.unlink(missing_ok=True)
            return None
        journal_id, deployment_id, revision, header_size = header
        stored = self.store.journal_offset(journal_id)
        segment = _Segment(seq, path, fd, journal_id, deployment_id, revision, header_size if stored is None else int(stored))
        self._open[seq] = segment
        return segment

    def _active(self, seq: int) -> bool:
        if self.writer is not None:
            active_from = self.writer.active_from
            return active_from is not None and seq >= active_from
        return self.follow and seq >= self._newest

    def _retire(self, segment: _Segment, corrupt: bool = False) -> None:
        os.close(segment.fd)
        self._open.pop(segment.seq, None)
        if corrupt:
            target = segment.path.with_suffix(".corrupt")
            log.error("payload journal %s: corrupt frame at byte %d; kept as %s", segment.path, segment.offset, target)
            os.replace(segment.path, target)
        else:
            segment.path.unlink(missing_ok=True)
        self.store.forget_journal(segment.journal_id)
        self.offsets.pop(segment.journal_id, None)

    def drain(self) -> int:
        """Insert every complete frame written so far; returns the records inserted."""
        inserted = 0
        segments = _segments(self.directory)
        self._newest = segments[-1][0] if segments else 0
        for seq, path in segments:
            segment = self._segment(seq, path)
            if segment is None:
                continue
            while True:
                active = self._active(seq)  # read before the size: a retired segment is complete
                size = os.fstat(segment.fd).st_size
                if segment.offset >= size:
                    if not active:
                        self._retire(segment)
                    break
                chunk = os.pread(segment.fd, min(size - segment.offset, self.read_bytes), segment.offset)
                frames, consumed, needed, corrupt = parse_frames(chunk)
                if frames:
                    rows = frames_to_rows(frames, segment.deployment_id, segment.asset_revision)
                    self.store.ingest(rows, (segment.journal_id, segment.deployment_id, segment.offset + consumed))
                    segment.offset += consumed
                    self.offsets[segment.journal_id] = segment.offset
                    inserted += len(rows)
                    self.records += len(rows)  # counted per committed batch: a later failure keeps it
                if corrupt:
                    if active:  # never expected: a reader sees whole pages of a write; retry later
                        break
                    self._retire(segment, corrupt=True)
                    break
                if needed:
                    if segment.offset + needed <= size:  # the read stopped inside a large frame
                        if needed > self.read_bytes:
                            self.read_bytes = needed
                        continue
                    if not active:  # a torn last frame of a dead writer: never answered 200
                        log.warning("payload journal %s: dropping a torn last frame at byte %d", path, segment.offset)
                        self._retire(segment)
                    break
                if not frames:
                    break
        return inserted

    def close(self) -> None:
        for segment in list(self._open.values()):
            os.close(segment.fd)
        self._open.clear()


def remove_drained_journal(directory: Path) -> bool:
    """Delete the journal ``directory`` when no live endpoint holds it and every record in it
    is stored (no segment left); returns whether it was deleted. A journal still holding records
    stays for :func:`drain_orphaned_journals`."""
    directory = Path(directory)
    if not directory.is_dir():
        return False
    fd = lock_journal(directory)
    if fd is None:  # a live endpoint owns it
        return False
    try:
        if segment_numbers(directory):
            return False
        shutil.rmtree(directory, ignore_errors=True)
        return True
    finally:
        os.close(fd)


def drain_orphaned_journals(endpoints_dir: Path, store: MonitoringStore) -> int:
    """Drain the journals no live endpoint holds (a killed endpoint's records reach the store
    without restarting it), deleting each once it is empty. Returns the records inserted."""
    total = 0
    if not Path(endpoints_dir).is_dir():
        return 0
    for directory in sorted(Path(endpoints_dir).glob("*.journal")):
        fd = lock_journal(directory)
        if fd is None:  # a live endpoint owns it and drains it itself
            continue
        try:
            drainer = JournalDrainer(directory, store)
            try:
                total += drainer.drain()
            finally:
                drainer.close()
        except OSError as exc:
            raise MonitoringError(f"cannot drain the payload journal {directory}: {exc}") from exc
        finally:
            os.close(fd)
        remove_drained_journal(directory)
    return total
