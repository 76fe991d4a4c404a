"""Tests of modelcycle.core.datasets and the built-in dataset plugins (modelcycle.datasets): real
MNIST/Fashion-MNIST files, look-up order, downloads from a local HTTP mirror (never the internet),
IDX and CIFAR-10 parsing, safe unpickling and extraction, dispatch through the registry."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import os
import pickle
import shutil
import struct
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from modelcycle.core import datasets
from modelcycle.core.config import DataConfig
from modelcycle.core.datasets import Dataset, Split, dataset_names, load_dataset, locate_dataset, md5sum
from modelcycle.core.errors import ConfigError, DatasetIntegrityError, DatasetNotFoundError, PluginNotFoundError
from modelcycle.datasets import KNOWN_MD5, MIRRORS, read_cifar10, read_idx

IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
GZ_NAMES = tuple(n + ".gz" for n in IDX_NAMES)
CIFAR_NAMES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)


def _real_data_dir() -> Path:
    env = os.environ.get("MODELCYCLE_DATA_DIR")
    if env and (Path(env) / "mnist").is_dir():
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "data"


REAL_DATA = _real_data_dir()


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Every test: cache in tmp, no data dir, no mirror (so nothing can reach the internet)."""
    monkeypatch.setenv("MODELCYCLE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MODELCYCLE_DATA_DIR", raising=False)
    monkeypatch.delenv("MODELCYCLE_DATASET_MIRROR", raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for name in list(MIRRORS):
        monkeypatch.setitem(MIRRORS, name, ())
    datasets.clear_cache()
    yield
    datasets.clear_cache()


@pytest.fixture
def real_data(monkeypatch) -> Path:
    if not (REAL_DATA / "mnist" / "MD5SUMS").is_file():
        pytest.skip(f"real MNIST data not found at {REAL_DATA} (set MODELCYCLE_DATA_DIR)")
    monkeypatch.setenv("MODELCYCLE_DATA_DIR", str(REAL_DATA))
    return REAL_DATA


@pytest.fixture
def serve():
    """Factory: serve a directory over HTTP on 127.0.0.1; returns the base URL."""
    servers = []

    def start(directory: Path) -> str:
        class Quiet(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

        handler = functools.partial(Quiet, directory=str(directory))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_address[1]}/"

    try:
        yield start
    finally:
        for server, thread in servers:
            server.shutdown()
            server.server_close()
            thread.join(5)


# ------------------------------------------------------------------------------------ helpers


def write_idx(path: Path, array: np.ndarray) -> Path:
    codes = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


def fake_mnist(directory: Path, n_train: int, n_test: int, *, gz: bool = False, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for stem, n in (("train", n_train), ("t10k", n_test)):
        write_idx(directory / f"{stem}-images-idx3-ubyte{suffix}",
                  rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(directory / f"{stem}-labels-idx1-ubyte{suffix}", rng.integers(0, 10, n, dtype=np.uint8))
    return directory


def cifar_batches(directory: Path, per_batch: int = 4, n_test: int = 3) -> dict[str, tuple]:
    """Write CIFAR-10 python batches in the real format (pickle protocol 2, channel-major rows)."""
    rng = np.random.default_rng(1)
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in CIFAR_NAMES:
        n = n_test if name == "test_batch" else per_batch
        data = rng.integers(0, 200, (n, 3072), dtype=np.uint8)
        if name == "data_batch_1":
            data[0, 0] = 255            # red plane, pixel (0, 0) of image 0
            data[0, 1024] = data[0, 2048] = 7
            data[1, 1024 + 32 + 2] = 222  # green plane, pixel (1, 2) of image 1
        labels = [int(x) for x in rng.integers(0, 10, n)]
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                 b"filenames": [f"img_{i}.png".encode() for i in range(n)]}
        (directory / name).write_bytes(pickle.dumps(batch, protocol=2))
        written[name] = (data, labels)
    return written


def md5sums_file(path: Path) -> dict[str, str]:
    return {name: digest for digest, name in (line.split() for line in path.read_text().splitlines() if line)}


# ------------------------------------------------------------------------------------ real data


def test_real_mnist_loads_with_lineage_and_normalization(real_data):
    ds = load_dataset("mnist", download=False)
    assert isinstance(ds, Dataset) and ds.name == "mnist"
    assert ds.source == (real_data / "mnist").resolve()
    assert ds.train.images.shape == (60000, 28, 28) and ds.test.images.shape == (10000, 28, 28)
    assert ds.train.images.dtype == np.uint8 and ds.train.labels.dtype == np.int64
    assert ds.test.labels.shape == (10000,) and len(ds.train) == 60000
    assert ds.train.labels.min() == 0 and ds.train.labels.max() == 9
    assert ds.train.labels[0] == 5
    assert ds.classes == tuple("0123456789")
    assert ds.image_shape == (28, 28) and ds.channels == 1
    assert ds.checksums == md5sums_file(real_data / "mnist" / "MD5SUMS")
    (mean,), (std,) = ds.normalization()
    assert mean == pytest.approx(0.1307, abs=1e-3) and std == pytest.approx(0.3081, abs=1e-3)
    assert not ds.train.images.flags.writeable  # shared through the in-process cache


def test_real_fashion_mnist_has_class_names(real_data):
    ds = load_dataset("fashion-mnist", download=False)
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot" and len(ds.classes) == 10
    assert ds.train.images.shape == (60000, 28, 28) and ds.test.labels.shape == (10000,)
    assert ds.checksums == md5sums_file(real_data / "fashion-mnist" / "MD5SUMS")


def test_second_load_returns_same_object(real_data):
    first = load_dataset("mnist", download=False)
    assert load_dataset("mnist", download=False) is first
    assert first.normalization() is first.normalization()


def test_cache_is_invalidated_when_files_change(tmp_path):
    directory = fake_mnist(tmp_path / "d", 6, 2, seed=1)
    first = load_dataset("mnist", directory)
    fake_mnist(directory, 9, 2, seed=2)
    os.utime(directory / "train-images-idx3-ubyte", ns=(1, 1))
    second = load_dataset("mnist", directory)
    assert second is not first and len(second.train) == 9 and len(first.train) == 6


# ------------------------------------------------------------------------------------ look-up order


def test_explicit_path_wins_over_data_dir(tmp_path, monkeypatch):
    fake_mnist(tmp_path / "data" / "mnist", 3, 2)
    explicit = fake_mnist(tmp_path / "explicit", 5, 2)
    monkeypatch.setenv("MODELCYCLE_DATA_DIR", str(tmp_path / "data"))
    ds = load_dataset("mnist", explicit, download=False)
    assert ds.source == explicit.resolve() and len(ds.train) == 5 and len(ds.test) == 2
    assert set(ds.checksums) == set(IDX_NAMES)
    assert locate_dataset("mnist", download=False) == tmp_path / "data" / "mnist"


def test_explicit_path_missing_files_does_not_fall_through(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELCYCLE_DATA_DIR", str(fake_mnist(tmp_path / "data" / "mnist", 3, 2).parent))
    partial = tmp_path / "partial"
    partial.mkdir()
    write_idx(partial / "train-images-idx3-ubyte.gz", np.zeros((1, 28, 28), np.uint8))
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("mnist", partial)
    message = str(err.value)
    assert str(partial) in message
    assert all(name in message for name in GZ_NAMES[1:]) and "train-images" not in message


def test_data_dir_may_hold_files_directly_and_cache_is_searched(tmp_path, monkeypatch):
    direct = fake_mnist(tmp_path / "direct", 4, 2)
    monkeypatch.setenv("MODELCYCLE_DATA_DIR", str(direct))
    assert locate_dataset("mnist", download=False) == direct
    monkeypatch.setenv("MODELCYCLE_DATA_DIR", str(tmp_path / "empty"))
    cached = fake_mnist(tmp_path / "cache" / "mnist", 7, 2)
    assert load_dataset("mnist", download=False).source == cached.resolve()


def test_nothing_anywhere_names_files_and_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELCYCLE_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("fashion-mnist", download=False)
    message = str(err.value)
    assert all(name in message for name in GZ_NAMES)
    assert "MODELCYCLE_DATA_DIR" in message and "fashion-mnist" in message
    assert str(tmp_path / "cache" / "fashion-mnist") in message and str(tmp_path / "nowhere") in message


def test_unknown_dataset_lists_the_installed_ones():
    with pytest.raises(PluginNotFoundError) as err:
        locate_dataset("imagenet", download=False)
    message = str(err.value)
    assert "'imagenet' is not installed" in message
    assert all(name in message for name in ("mnist", "fashion-mnist", "cifar10"))


# ------------------------------------------------------------------------------------ downloads


def test_download_from_local_mirror_lands_in_cache(real_data, tmp_path, monkeypatch, serve):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in GZ_NAMES:
        shutil.copyfile(real_data / "mnist" / name, mirror / name)
    monkeypatch.setenv("MODELCYCLE_DATASET_MIRROR", serve(mirror))
    monkeypatch.delenv("MODELCYCLE_DATA_DIR")
    ds = load_dataset("mnist")
    cache = tmp_path / "cache" / "mnist"
    assert ds.source == cache.resolve() and sorted(p.name for p in cache.iterdir()) == sorted(GZ_NAMES)
    assert ds.checksums == md5sums_file(real_data / "mnist" / "MD5SUMS")
    assert ds.train.labels[0] == 5 and ds.test.images.shape == (10000, 28, 28)


def test_corrupted_mirror_file_is_rejected_and_not_kept(real_data, tmp_path, monkeypatch, serve):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in GZ_NAMES:
        shutil.copyfile(real_data / "mnist" / name, mirror / name)
    raw = bytearray((mirror / "train-labels-idx1-ubyte.gz").read_bytes())
    raw[100] ^= 0xFF
    (mirror / "train-labels-idx1-ubyte.gz").write_bytes(bytes(raw))
    monkeypatch.setenv("MODELCYCLE_DATASET_MIRROR", serve(mirror))
    monkeypatch.delenv("MODELCYCLE_DATA_DIR")
    with pytest.raises((DatasetNotFoundError, DatasetIntegrityError), match="md5 mismatch"):
        load_dataset("mnist")
    left = [p.name for p in (tmp_path / "cache" / "mnist").iterdir()]
    assert "train-labels-idx1-ubyte.gz" not in left and not [n for n in left if n.endswith(".part")]


def test_env_mirror_first_then_next_mirror(tmp_path, monkeypatch, serve):
    good = fake_mnist(tmp_path / "good", 5, 3, gz=True)
    bad = fake_mnist(tmp_path / "bad", 5, 3, gz=True, seed=9)
    monkeypatch.setitem(KNOWN_MD5, "mnist", {n: md5sum(good / n) for n in GZ_NAMES})
    monkeypatch.setenv("MODELCYCLE_DATASET_MIRROR", serve(bad))
    monkeypatch.setitem(MIRRORS, "mnist", (serve(good),))
    ds = load_dataset("mnist")
    assert ds.checksums == {n: md5sum(good / n) for n in GZ_NAMES}
    assert np.array_equal(ds.train.images, read_idx(good / GZ_NAMES[0]))


def test_cifar10_download_and_safe_extract(tmp_path, monkeypatch, serve):
    written = cifar_batches(tmp_path / "src" / "cifar-10-batches-py")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    with tarfile.open(mirror / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    monkeypatch.setenv("MODELCYCLE_DATASET_MIRROR", serve(mirror))
    with pytest.raises(DatasetNotFoundError, match="md5 mismatch"):  # the real md5 is still expected
        load_dataset("cifar10")
    assert not (tmp_path / "cache" / "cifar10" / "cifar-10-batches-py").exists()
    monkeypatch.setitem(KNOWN_MD5, "cifar10",
                        {"cifar-10-python.tar.gz": md5sum(mirror / "cifar-10-python.tar.gz")})
    ds = load_dataset("cifar10")
    cache = tmp_path / "cache" / "cifar10"
    assert ds.source == (cache / "cifar-10-batches-py").resolve()
    assert sorted(p.name for p in cache.iterdir()) == ["cifar-10-batches-py"]  # tarball removed
    assert ds.train.images.shape == (20, 32, 32, 3) and ds.test.labels.tolist() == written["test_batch"][1]


@pytest.mark.parametrize("evil", ["../escaped", "/tmp/modelcycle-abs-escape"])
def test_cifar10_archive_with_unsafe_member_is_refused(tmp_path, monkeypatch, serve, evil):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    with tarfile.open(mirror / "cifar-10-python.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo(evil)
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    monkeypatch.setitem(KNOWN_MD5, "cifar10",
                        {"cifar-10-python.tar.gz": md5sum(mirror / "cifar-10-python.tar.gz")})
    monkeypatch.setenv("MODELCYCLE_DATASET_MIRROR", serve(mirror))
    with pytest.raises(DatasetIntegrityError, match="unsafe archive member"):
        load_dataset("cifar10")
    assert not (tmp_path / "cache" / "escaped").exists() and not Path(evil).exists()
    assert list((tmp_path / "cache" / "cifar10").iterdir()) == []


# ------------------------------------------------------------------------------------ file formats


def test_read_idx_round_trip_plain_and_gz(tmp_path):
    values = np.arange(-3, 9, dtype=">i4").reshape(3, 4)
    assert read_idx(write_idx(tmp_path / "a.idx", values)).tolist() == values.tolist()
    images = np.random.default_rng(0).integers(0, 256, (2, 28, 28), dtype=np.uint8)
    assert np.array_equal(read_idx(write_idx(tmp_path / "b.gz", images)), images)


def test_read_idx_truncated_and_bad_magic_name_the_file(tmp_path):
    good = write_idx(tmp_path / "good-idx3-ubyte", np.ones((3, 28, 28), np.uint8))
    truncated = tmp_path / "truncated-idx3-ubyte"
    truncated.write_bytes(good.read_bytes()[:-10])
    with pytest.raises(DatasetIntegrityError, match="truncated-idx3-ubyte"):
        read_idx(truncated)
    gz = write_idx(tmp_path / "cut-idx3-ubyte.gz", np.ones((3, 28, 28), np.uint8))
    gz.write_bytes(gz.read_bytes()[:-12])
    with pytest.raises(DatasetIntegrityError, match="cut-idx3-ubyte.gz"):
        read_idx(gz)
    padded = tmp_path / "padded-idx3-ubyte"
    padded.write_bytes(good.read_bytes() + b"\0")
    with pytest.raises(DatasetIntegrityError, match="padded-idx3-ubyte"):
        read_idx(padded)
    bad = tmp_path / "badmagic-idx3-ubyte"
    bad.write_bytes(b"\x12\x34\x08\x03" + good.read_bytes()[4:])
    with pytest.raises(DatasetIntegrityError, match="badmagic-idx3-ubyte"):
        read_idx(bad)


def test_known_md5_mismatch_on_load_says_how_to_fix(tmp_path):
    directory = fake_mnist(tmp_path / "d", 3, 2, gz=True)  # .gz names have known (real) md5s
    with pytest.raises(DatasetIntegrityError) as err:
        load_dataset("mnist", directory)
    message = str(err.value)
    assert "f68b3c2dcbeaaa9fbdd348bbdeb94873" in message and "train-images-idx3-ubyte.gz" in message
    assert md5sum(directory / "train-images-idx3-ubyte.gz") in message and "re-download" in message


def test_cifar10_batches_channel_placement_and_labels(tmp_path, monkeypatch):
    written = cifar_batches(tmp_path / "data" / "cifar10" / "cifar-10-batches-py")
    monkeypatch.setenv("MODELCYCLE_DATA_DIR", str(tmp_path / "data"))
    ds = load_dataset("cifar10", download=False)
    assert ds.train.images.shape == (20, 32, 32, 3) and ds.test.images.shape == (3, 32, 32, 3)
    assert ds.train.images.dtype == np.uint8 and ds.train.labels.dtype == np.int64
    assert ds.train.images[0, 0, 0].tolist() == [255, 7, 7]
    assert ds.train.images[1, 1, 2, 1] == 222
    expected = sum((written[n][1] for n in CIFAR_NAMES[:5]), [])
    assert ds.train.labels.tolist() == expected and ds.classes[0] == "airplane" and ds.classes[9] == "truck"
    assert ds.image_shape == (32, 32, 3) and ds.channels == 3
    assert ds.checksums == {n: md5sum(ds.source / n) for n in CIFAR_NAMES}
    means, stds = ds.normalization()
    scaled = ds.train.images.astype(np.float64) / 255
    assert np.allclose(means, scaled.mean(axis=(0, 1, 2))) and np.allclose(stds, scaled.std(axis=(0, 1, 2)))
    train, test = read_cifar10(tmp_path / "data" / "cifar10")  # parent of cifar-10-batches-py works
    assert np.array_equal(train.images, ds.train.images) and len(test) == 3


def test_pickle_with_forbidden_global_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch '{marker}'",)

    directory = tmp_path / "cifar"
    cifar_batches(directory)
    (directory / "data_batch_3").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}, protocol=2))
    with pytest.raises(DatasetIntegrityError, match="system") as err:
        read_cifar10(directory)
    assert "data_batch_3" in str(err.value) and not marker.exists()


def test_split_take_is_a_view():
    split = Split(np.zeros((5, 28, 28), np.uint8), np.arange(5, dtype=np.int64))
    head = split.take(2)
    assert len(head) == 2 and head.labels.tolist() == [0, 1]
    assert np.shares_memory(head.images, split.images) and np.shares_memory(head.labels, split.labels)
    with pytest.raises(ValueError):
        Split(np.zeros((2, 28, 28), np.uint8), np.zeros(3, np.int64))


def test_md5sum_matches_hashlib(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(os.urandom(3 * (1 << 20) + 17))
    assert md5sum(path) == hashlib.md5(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------ dispatch


def test_built_in_datasets_are_installed_plugins():
    assert {"mnist", "fashion-mnist", "cifar10"} <= set(dataset_names())
    from modelcycle.core.registry import plugin_distribution

    assert plugin_distribution("dataset", "fashion-mnist").value == "modelcycle.datasets.fashion_mnist"


def test_names_match_ignoring_case_dashes_and_underscores(tmp_path):
    directory = fake_mnist(tmp_path / "d", 3, 2)
    assert load_dataset("Fashion_MNIST", directory).name == "fashion-mnist"
    cifar_batches(tmp_path / "c")
    assert load_dataset("CIFAR-10", tmp_path / "c").name == "cifar10"


def test_settings_carry_the_path_and_an_explicit_path_wins(tmp_path):
    first = fake_mnist(tmp_path / "first", 3, 2)
    second = fake_mnist(tmp_path / "second", 5, 2)
    settings = DataConfig(dataset="mnist", path=str(first))
    assert load_dataset("mnist", settings=settings).source == first.resolve()
    assert len(load_dataset("mnist", second, settings=settings).train) == 5
    assert locate_dataset("mnist", settings=settings) == first


def test_built_in_datasets_refuse_options(tmp_path):
    settings = DataConfig(dataset="mnist", path=str(fake_mnist(tmp_path / "d", 3, 2)), options={"colour": True})
    with pytest.raises(ConfigError, match="data.options: dataset 'mnist' takes no options, got colour"):
        load_dataset("mnist", settings=settings)


def test_cache_is_per_location(tmp_path):
    a = load_dataset("mnist", fake_mnist(tmp_path / "a", 3, 2, seed=1))
    b = load_dataset("mnist", fake_mnist(tmp_path / "b", 4, 2, seed=2))
    assert a is not b and len(a.train) == 3 and len(b.train) == 4
    assert load_dataset("mnist", tmp_path / "a") is a


def test_clear_cache_forgets_loaded_datasets(tmp_path):
    directory = fake_mnist(tmp_path / "d", 3, 2)
    first = load_dataset("mnist", directory)
    datasets.clear_cache()
    second = load_dataset("mnist", directory)
    assert second is not first and np.array_equal(second.train.images, first.train.images)
