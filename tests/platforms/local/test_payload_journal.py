"""The payload journal: frame format, torn and corrupt tails, segment rotation, idempotent replay,
the journal lock, orphan draining and deterministic sampling (real MNIST inputs, a real SQLite
store)."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from modelcycle.platforms.local.journal import (
    JournalDrainer,
    JournalWriter,
    drain_orphaned_journals,
    encode_frame,
    lock_journal,
    parse_frames,
    record_ids,
    sampled,
)
from modelcycle.core.monitoring.store import MonitoringStore


@pytest.fixture
def store(tmp_path: Path) -> MonitoringStore:
    return MonitoringStore(f"sqlite:///{tmp_path / 'monitoring.db'}")


def _frame(images: np.ndarray, scoring_id: str | None = None) -> tuple[str, bytes]:
    sid = scoring_id or uuid.uuid4().hex
    probabilities = np.random.default_rng(len(images)).dirichlet(np.ones(10), size=len(images)).astype(np.float32)
    return sid, encode_frame(sid, time.time(), 1.0, images.reshape(-1, 1, 28, 28), probabilities)


def _write(writer: JournalWriter, images: np.ndarray, per_request: int = 1) -> list[str]:
    ids = []
    for i in range(0, len(images), per_request):
        sid, frame = _frame(images[i:i + per_request])
        writer.append(frame)
        ids += record_ids(sid, len(images[i:i + per_request]))
    return ids


def _segments(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.seg"))


def test_frames_round_trip_with_per_record_ids(mnist_test_images) -> None:
    images, _ = mnist_test_images
    sid, frame = _frame(images[:3])
    single_id, single = _frame(images[3:4])
    frames, consumed, needed, corrupt = parse_frames(frame + single)
    assert (consumed, needed, corrupt) == (len(frame) + len(single), 0, False)
    assert [f.scoring_id for f in frames] == [sid, single_id]
    assert np.array_equal(frames[0].pixels, images[:3].reshape(3, 784))
    assert frames[0].shape == (1, 28, 28) and frames[0].probabilities.shape == (3, 10)
    assert record_ids(sid, 3) == [f"{sid}-0", f"{sid}-1", f"{sid}-2"] and record_ids(sid, 1) == [sid]
    # an incomplete frame asks for its full size; nothing is consumed from it
    frames, consumed, needed, corrupt = parse_frames(frame + single[:-5])
    assert len(frames) == 1 and consumed == len(frame) and needed == len(single) and not corrupt


def test_drain_stores_everything_and_retires_segments(tmp_path: Path, store: MonitoringStore, mnist_test_images) -> None:
    images, _ = mnist_test_images
    directory = tmp_path / "ep.journal"
    directory.mkdir()
    writer = JournalWriter(directory, "ep", "run", segment_bytes=8 * 1024)  # ~9 frames per segment
    writer.open()
    ids = _write(writer, images[:40]) + _write(writer, images[40:64], per_request=8)
    assert len(_segments(directory)) > 3
    drainer = JournalDrainer(directory, store, writer)
    assert drainer.drain() == 64
    assert _segments(directory) == [f"{writer.current_seq:010d}.seg"]  # only the one being written
    assert store.existing_scoring_ids(ids, "ep") == set(ids) and store.payload_count("ep") == 64
    ids += _write(writer, images[:5])
    assert drainer.drain() == 5
    writer.close()
    assert drainer.drain() == 0 and _segments(directory) == []  # writer gone: fully drained, deleted
    assert store.payload_count("ep") == 69


def test_replay_from_an_old_offset_stores_nothing_twice(tmp_path: Path, store: MonitoringStore, mnist_test_images) -> None:
    images, _ = mnist_test_images
    directory = tmp_path / "ep.journal"
    directory.mkdir()
    writer = JournalWriter(directory, "ep", "run")
    writer.open()
    _write(writer, images[:20])
    JournalDrainer(directory, store, writer).drain()
    for journal_id in _journal_ids(store):  # as if the offset had never been committed
        store.forget_journal(journal_id)
    assert JournalDrainer(directory, store, writer).drain() == 20  # re-read from the start ...
    assert store.payload_count("ep") == 20  # ... and skipped by scoring_id
    writer.close()


def _journal_ids(store: MonitoringStore) -> list[str]:
    with store.engine.connect() as conn:
        return [row[0] for row in conn.exec_driver_sql("SELECT journal_id FROM mc_journal_offsets")]


def test_a_torn_last_frame_of_a_dead_writer_is_dropped(tmp_path: Path, store: MonitoringStore, mnist_test_images) -> None:
    images, _ = mnist_test_images
    directory = tmp_path / "ep.journal"
    directory.mkdir()
    writer = JournalWriter(directory, "ep", "run")
    writer.open()
    ids = _write(writer, images[:10])
    segment = directory / f"{writer.current_seq:010d}.seg"
    writer.close()
    _, frame = _frame(images[10:11])
    with open(segment, "ab") as handle:  # a kill in the middle of os.write: never answered 200
        handle.write(frame[: len(frame) // 2])
    assert JournalDrainer(directory, store).drain() == 10
    assert store.existing_scoring_ids(ids, "ep") == set(ids) and store.payload_count("ep") == 10
    assert _segments(directory) == []


def test_a_corrupt_frame_stops_the_segment_and_is_kept_aside(tmp_path: Path, store: MonitoringStore, mnist_test_images) -> None:
    images, _ = mnist_test_images
    directory = tmp_path / "ep.journal"
    directory.mkdir()
    writer = JournalWriter(directory, "ep", "run")
    writer.open()
    good = _write(writer, images[:5])
    offset = writer.position
    _write(writer, images[5:8])
    segment = directory / f"{writer.current_seq:010d}.seg"
    writer.close()
    data = bytearray(segment.read_bytes())
    data[offset + 100] ^= 0xFF  # flip a pixel byte of the 6th frame: its CRC no longer matches
    segment.write_bytes(bytes(data))
    assert JournalDrainer(directory, store).drain() == 5
    assert store.existing_scoring_ids(good, "ep") == set(good)
    assert [p.suffix for p in directory.iterdir() if p.name != "lock"] == [".corrupt"]


def test_the_journal_lock_is_exclusive_and_orphans_are_drained(tmp_path: Path, store: MonitoringStore, mnist_test_images) -> None:
    images, _ = mnist_test_images
    endpoints = tmp_path / "endpoints"
    held, orphan = endpoints / "live.journal", endpoints / "dead.journal"
    for directory, name in ((held, "live"), (orphan, "dead")):
        directory.mkdir(parents=True)
        writer = JournalWriter(directory, name, "run")
        writer.open()
        _write(writer, images[:7])
        writer.close()
    fd = lock_journal(held)
    assert fd is not None
    try:
        assert lock_journal(held) is None  # a second owner is refused
        assert drain_orphaned_journals(endpoints, store) == 7  # only the journal nobody holds
        assert store.payload_count("dead") == 7 and store.payload_count("live") == 0
    finally:
        os.close(fd)
    assert drain_orphaned_journals(endpoints, store) == 7
    assert store.payload_count("live") == 7


def test_sampling_is_deterministic_per_request() -> None:
    ids = [uuid.uuid4().hex for _ in range(20_000)]
    picked = [sampled(i, 25) for i in ids]
    assert picked == [sampled(i, 25) for i in ids]
    assert 0.23 < sum(picked) / len(ids) < 0.27
    assert all(sampled(i, 100) for i in ids[:100]) and not any(sampled(i, 0) for i in ids[:100])
