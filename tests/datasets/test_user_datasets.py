"""The user-data dataset plugins (``imagefolder``, ``npz``, ``loader``): what they load from
files written here with Pillow and numpy, and the clear error each bad input gets."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from modelcycle.core.config import DataConfig, load_config
from modelcycle.core.datasets import clear_cache, load_dataset
from modelcycle.core.errors import ConfigError, DatasetIntegrityError, DatasetNotFoundError


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELCYCLE_CACHE_DIR", str(tmp_path / "cache"))
    clear_cache()


def _load(name: str, path: Path | str | None, **options: Any):
    return load_dataset(name, settings=DataConfig(dataset=name, path=None if path is None else str(path),
                                                  options=options))


def _image(path: Path, value: int, size: tuple[int, int] = (6, 8), mode: str = "L", fmt: str | None = None) -> None:
    """A ``size`` (H, W) image of one ``value`` (a channel triple for RGB)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = size if mode == "L" else (*size, 3)
    fill = value if mode == "L" else [value, 255 - value, value // 2]
    Image.fromarray(np.full(shape, fill, np.uint8), mode).save(path, format=fmt)


def _folder(root: Path, classes: dict[str, int], splits: tuple[str, ...] = ("train", "test"), **kw: Any) -> Path:
    """``root/<split>/<class>/`` with ``n`` images per class; class ``k``'s pixels are ``10 * k``."""
    for split in splits:
        for k, (name, n) in enumerate(sorted(classes.items())):
            for i in range(n):
                _image(root / split / name / f"{i}.png", 10 * k + i, **kw)
    return root


# ------------------------------------------------------------------------------ imagefolder

def test_imagefolder_loads_train_and_test_with_sorted_folder_classes_and_every_md5(tmp_path: Path) -> None:
    root = _folder(tmp_path / "img", {"dog": 2, "cat": 3})
    data = _load("imagefolder", root)
    assert data.classes == ("cat", "dog")
    assert data.train.images.shape == (5, 6, 8) and data.train.images.dtype == np.uint8
    assert data.train.labels.tolist() == [0, 0, 0, 1, 1] and data.test.labels.tolist() == [0, 0, 0, 1, 1]
    assert data.train.images[3, 0, 0] == 10 and data.train.images[1, 0, 0] == 1  # dog #0, cat #1
    assert not data.train.images.flags.writeable
    assert sorted(data.checksums) == sorted(f"{s}/{c}/{i}.png" for s in ("train", "test")
                                            for c, n in (("cat", 3), ("dog", 2)) for i in range(n))
    import hashlib
    assert data.checksums["train/dog/1.png"] == hashlib.md5((root / "train/dog/1.png").read_bytes()).hexdigest()


def test_imagefolder_color_auto_is_rgb_when_any_image_has_colour(tmp_path: Path) -> None:
    root = _folder(tmp_path / "img", {"a": 2, "b": 2})
    _image(root / "train" / "b" / "9.png", 200, mode="RGB")
    data = _load("imagefolder", root)
    assert data.train.images.shape == (5, 6, 8, 3) and data.test.images.shape == (4, 6, 8, 3)
    assert data.train.images[-1, 0, 0].tolist() == [200, 55, 100]
    assert data.train.images[0, 0, 0].tolist() == [0, 0, 0]  # a grayscale file, repeated
    clear_cache()
    assert _load("imagefolder", root, color="grayscale").train.images.shape == (5, 6, 8)


def test_imagefolder_rgb_files_without_colour_load_as_grayscale_unless_rgb_is_asked(tmp_path: Path) -> None:
    root = tmp_path / "img"
    for split in ("train", "test"):
        for name in ("a", "b"):
            path = root / split / name / "0.png"
            path.parent.mkdir(parents=True)
            Image.fromarray(np.full((4, 4, 3), 77, np.uint8), "RGB").save(path)
    assert _load("imagefolder", root).train.images.shape == (2, 4, 4)
    clear_cache()
    assert _load("imagefolder", root, color="rgb").train.images.shape == (2, 4, 4, 3)


def test_imagefolder_resizes_jpegs_and_pngs_of_any_size_to_image_size(tmp_path: Path) -> None:
    root = tmp_path / "img"
    _image(root / "train" / "a" / "0.jpg", 100, size=(60, 90), mode="RGB", fmt="JPEG")
    _image(root / "train" / "b" / "0.PNG", 30, size=(7, 5))
    _image(root / "test" / "a" / "0.jpeg", 100, size=(20, 20), fmt="JPEG")
    _image(root / "test" / "b" / "0.png", 30, size=(24, 32))
    (root / "train" / "b" / "notes.txt").write_text("ignored: not an image")
    data = _load("imagefolder", root, image_size=[12, 16])
    assert data.train.images.shape == (2, 12, 16, 3) and data.test.images.shape == (2, 12, 16, 3)
    assert abs(int(data.train.images[0, 6, 8, 0]) - 100) <= 3  # the JPEG's colour survives decoding
    clear_cache()
    assert _load("imagefolder", root, image_size=10, color="grayscale").train.images.shape == (2, 10, 10)


def test_imagefolder_images_of_different_sizes_name_two_files_and_suggest_image_size(tmp_path: Path) -> None:
    root = _folder(tmp_path / "img", {"a": 1, "b": 1})
    _image(root / "train" / "b" / "1.png", 5, size=(9, 9))
    with pytest.raises(DatasetIntegrityError, match=r"train/a/0.png is 6x8 \(HxW\) but .*train/b/1.png is 9x9; "
                                                     r"set data.options.image_size"):
        _load("imagefolder", root)


def test_imagefolder_splits_one_folder_by_test_fraction_stratified_and_seeded(tmp_path: Path) -> None:
    root = _folder(tmp_path / "img", {"a": 10, "b": 20}, splits=("",))
    data = _load("imagefolder", root, test_fraction=0.2, seed=3)
    assert len(data.train) == 24 and len(data.test) == 6
    assert np.bincount(data.test.labels).tolist() == [2, 4]  # 20 % of each class
    assert "a/0.png" in data.checksums
    clear_cache()
    again = _load("imagefolder", root, test_fraction=0.2, seed=3)
    assert np.array_equal(again.test.images, data.test.images)
    clear_cache()
    other = _load("imagefolder", root, test_fraction=0.2, seed=4)
    assert not np.array_equal(other.test.images, data.test.images)


def test_imagefolder_layout_errors_say_how_to_fix_them(tmp_path: Path) -> None:
    single = _folder(tmp_path / "single", {"a": 2, "b": 2}, splits=("",))
    with pytest.raises(DatasetNotFoundError, match="set data.options.test_fraction"):
        _load("imagefolder", single)
    split = _folder(tmp_path / "split", {"a": 2, "b": 2})
    with pytest.raises(DatasetNotFoundError, match="already has train/ and test/; remove data.options.test_fraction"):
        _load("imagefolder", split, test_fraction=0.5)
    with pytest.raises(DatasetNotFoundError, match="is not a directory"):
        _load("imagefolder", tmp_path / "missing")
    with pytest.raises(DatasetNotFoundError, match="needs data.path"):
        _load("imagefolder", None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="has no class folders"):
        _load("imagefolder", tmp_path / "empty", test_fraction=0.5)


def test_imagefolder_empty_class_folder_and_mismatched_classes_are_refused(tmp_path: Path) -> None:
    root = _folder(tmp_path / "img", {"a": 1, "b": 1})
    (root / "test" / "c").mkdir()
    with pytest.raises(DatasetIntegrityError, match=r"class folder .*test/c holds no images"):
        _load("imagefolder", root)
    _image(root / "test" / "c" / "0.png", 1)
    with pytest.raises(DatasetIntegrityError, match=r"only in train: none, only in test: \['c'\]"):
        _load("imagefolder", root)


def test_imagefolder_unreadable_image_is_named(tmp_path: Path) -> None:
    root = _folder(tmp_path / "img", {"a": 1, "b": 1})
    (root / "train" / "b" / "0.png").write_bytes(b"not a png")
    with pytest.raises(DatasetIntegrityError, match=r"cannot read image .*train/b/0.png"):
        _load("imagefolder", root)


def test_imagefolder_misspelt_or_bad_options_list_the_allowed(tmp_path: Path) -> None:
    root = _folder(tmp_path / "img", {"a": 1, "b": 1})
    with pytest.raises(ConfigError, match=r"data.options.colour: unknown key; allowed keys: cache, color, image_size"):
        _load("imagefolder", root, colour="rgb")
    with pytest.raises(ConfigError, match=r"data.options.color"):
        _load("imagefolder", root, color="cmyk")
    with pytest.raises(ConfigError, match=r"image_size sides must be 1..8192"):
        _load("imagefolder", root, image_size=[0, 4])


def test_imagefolder_disk_cache_serves_unchanged_files_and_sees_a_changed_one(tmp_path: Path) -> None:
    root = _folder(tmp_path / "img", {"a": 2, "b": 2})
    first = _load("imagefolder", root)
    entries = list((tmp_path / "cache" / "imagefolder").iterdir())
    assert len(entries) == 1 and (entries[0] / "images.npy").is_file()
    # a warm load reads the cache, not the images: prove it by making the images undecodable
    # while keeping their sizes and mtimes
    victim = root / "train" / "a" / "0.png"
    st = victim.stat()
    victim.write_bytes(b"\0" * st.st_size)
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    clear_cache()
    warm = _load("imagefolder", root)
    assert np.array_equal(warm.train.images, first.train.images) and warm.checksums == first.checksums
    # a changed file (new mtime) is decoded again
    _image(victim, 99)
    clear_cache()
    changed = _load("imagefolder", root)
    assert changed.train.images[0, 0, 0] == 99
    assert changed.checksums["train/a/0.png"] != first.checksums["train/a/0.png"]
    assert len(list((tmp_path / "cache" / "imagefolder").iterdir())) == 1  # the entry was replaced
    clear_cache()
    victim.write_bytes(b"garbage")
    with pytest.raises(DatasetIntegrityError, match="cannot read image"):
        _load("imagefolder", root, cache=False)


# -------------------------------------------------------------------------------------- npz

def _npz(path: Path, **arrays: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def _images(n: int, shape: tuple[int, ...] = (5, 7), dtype: Any = np.uint8) -> np.ndarray:
    return (np.arange(n * int(np.prod(shape))).reshape(n, *shape) % 256).astype(dtype)


def test_npz_loads_uint8_images_string_labels_and_records_the_md5(tmp_path: Path) -> None:
    path = _npz(tmp_path / "d.npz", x_train=_images(4, (5, 7, 3)), y_train=np.array(["dog", "cat", "dog", "cat"]),
                x_test=_images(2, (5, 7, 3)), y_test=np.array(["cat", "dog"]))
    data = _load("npz", path)
    assert data.classes == ("cat", "dog") and data.train.labels.tolist() == [1, 0, 1, 0]
    assert data.image_shape == (5, 7, 3) and data.train.images.dtype == np.uint8
    from modelcycle.core.datasets import md5sum
    assert data.checksums == {"d.npz": md5sum(path)} and data.source == tmp_path
    clear_cache()
    assert _load("npz", tmp_path).classes == ("cat", "dog")  # a directory with one .npz


def test_npz_float_images_in_0_1_are_scaled_and_in_0_255_rounded_with_given_classes(tmp_path: Path) -> None:
    unit = np.full((2, 4, 4), 0.5, np.float32)
    path = _npz(tmp_path / "f.npz", x_train=unit, y_train=np.array([0, 2]), x_test=unit * 200,
                y_test=np.array([1.0, 2.0]), classes=np.array(["x", "y", "z"]))
    data = _load("npz", path)
    assert data.train.images[0, 0, 0] == 128 and data.test.images[0, 0, 0] == 100
    assert data.classes == ("x", "y", "z") and data.test.labels.dtype == np.int64


@pytest.mark.parametrize(("arrays", "message"), [
    ({"x_train": _images(3), "y_train": np.arange(2)}, "x_train holds 3 images but y_train 2 labels"),
    ({"y_train": np.array([0, -1, 1])}, r"label -1 is not a class: labels must lie in 0..1"),
    ({"y_train": np.array([0, 1, 2]), "classes": np.array(["a", "b"])}, r"label 2 is not a class: .*0..1"),
    ({"y_train": np.array([0, 1.5, 1])}, r"label 1.5 is not an integer"),
    ({"y_test": np.array(["a", "zebra"]), "y_train": np.array(["a", "b", "a"]), "classes": np.array(["a", "b"])},
     r"y_test: labels \['zebra'\] are not classes; classes are \['a', 'b'\]"),
    ({"x_test": _images(2).reshape(2, -1)}, r"x_test: shape \[2, 35\] is 2-D feature vectors while x_train holds images"),
    ({"x_train": _images(3).reshape(3, -1)}, r"x_test: feature vectors must be a numeric \(N, F\) array"),
    ({"x_train": _images(3).astype(np.float32) + 200}, r"pixel values 200..304 are outside 0..255"),
    ({"x_train": np.full((3, 5, 7), np.nan)}, r"are outside 0..255 \(or not finite\)"),
    ({"x_test": _images(2, (6, 7))}, r"train images are \[5, 7\] but test images \[6, 7\]"),
    ({"x_test": None}, "missing x_test"),
])
def test_npz_bad_arrays_get_a_clear_error(tmp_path: Path, arrays: dict[str, Any], message: str) -> None:
    base = {"x_train": _images(3), "y_train": np.array([0, 1, 1]), "x_test": _images(2), "y_test": np.array([1, 0])}
    merged = {k: v for k, v in {**base, **arrays}.items() if v is not None}
    with pytest.raises(DatasetIntegrityError, match=message):
        _load("npz", _npz(tmp_path / "bad.npz", **merged))


def test_npz_missing_or_unreadable_files_and_options_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        _load("npz", tmp_path / "none.npz")
    with pytest.raises(DatasetNotFoundError, match="needs data.path"):
        _load("npz", None)
    (tmp_path / "broken.npz").write_bytes(b"nope")
    with pytest.raises(DatasetIntegrityError, match="not a readable .npz"):
        _load("npz", tmp_path / "broken.npz")
    with pytest.raises(ConfigError, match="takes no options"):
        _load("npz", tmp_path / "broken.npz", color="rgb")


# ----------------------------------------------------------------------------------- loader

LOADER = '''
import numpy as np

def fetch(n=4):
    x = (np.arange(n * 36).reshape(n, 6, 6) % 256).astype(np.uint8)
    return x, np.arange(n) % 2, x[:2], np.array([1, 0])

def named():
    x = np.zeros((2, 3, 3, 3), np.float64)
    return {"x_train": x, "y_train": ["b", "a"], "x_test": x, "y_test": ["a", "a"], "classes": ["a", "b"]}

def wrong():
    return [1, 2]

def broken():
    raise RuntimeError("database unreachable")
'''


def test_loader_file_relative_to_the_use_case_directory_with_arguments(tmp_path: Path) -> None:
    (tmp_path / "uc").mkdir()
    (tmp_path / "uc" / "loader.py").write_text(LOADER)
    (tmp_path / "uc" / "raw.bin").write_bytes(b"raw")
    (tmp_path / "uc" / "modelcycle.yaml").write_text(
        "name: uc\nframework: pytorch\ndata:\n  dataset: loader\n  path: .\n"
        "  options: {function: 'loader.py:fetch', arguments: {n: 6}, files: [raw.bin]}\n")
    config = load_config(tmp_path / "uc")
    assert config.data.path == str(tmp_path / "uc")  # relative paths resolve against the use case
    data = load_dataset("loader", settings=config.data)
    leftovers = [m for m in sys.modules if m == "loader" or m.startswith("_modelcycle_loader")]
    assert leftovers == []  # the user's file is not left in sys.modules
    assert len(data.train) == 6 and data.classes == ("0", "1") and data.test.labels.tolist() == [1, 0]
    assert set(data.checksums) == {"loader.py", "raw.bin"}


def test_loader_dict_with_classes_and_an_installed_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_loaders.py").write_text(LOADER)
    (tmp_path / "loader_file.py").write_text(LOADER)
    data = _load("loader", tmp_path, function="loader_file.py:named")
    assert data.classes == ("a", "b") and data.train.labels.tolist() == [1, 0]
    assert data.image_shape == (3, 3, 3)
    monkeypatch.syspath_prepend(str(tmp_path))
    clear_cache()
    data = _load("loader", None, function="my_loaders:fetch")
    assert len(data.train) == 4 and "my_loaders.py" in data.checksums


@pytest.mark.parametrize(("options", "error", "message"), [
    ({"function": "nowhere.py:fetch"}, DatasetNotFoundError, r"nowhere.py does not exist .*set data.path"),
    ({"function": "loader.py:absent"}, ConfigError, r"has no function 'absent'; its functions: broken, fetch"),
    ({"function": "loader.py:wrong"}, DatasetIntegrityError, r"loader.py:wrong returned list of length 2; return \(x_train"),
    ({"function": "loader.py:broken"}, DatasetIntegrityError, "loader.py:broken raised RuntimeError: database unreachable"),
    ({"function": "fetch"}, ConfigError, "must be 'FILE.py:FUNCTION' or 'package.module:FUNCTION'"),
    ({"function": "no_such_package_xyz.mod:fetch"}, DatasetNotFoundError, "module 'no_such_package_xyz.mod' .* is not installed"),
    ({"function": "loader.py:fetch", "files": ["gone.csv"]}, DatasetNotFoundError, "names gone.csv"),
    ({"function": "loader.py:fetch", "arguments": {"m": 1}}, DatasetIntegrityError, "unexpected keyword argument 'm'"),
    ({"funtion": "loader.py:fetch"}, ConfigError, "data.options.funtion: unknown key; allowed keys: arguments, files, function"),
])
def test_loader_errors_name_the_file_and_what_to_fix(tmp_path: Path, options: dict[str, Any], error: type,
                                                     message: str) -> None:
    (tmp_path / "loader.py").write_text(LOADER)
    with pytest.raises(error, match=message):
        _load("loader", tmp_path, **options)


def test_loader_syntax_error_in_the_file_is_reported_with_the_file(tmp_path: Path) -> None:
    (tmp_path / "loader.py").write_text("def fetch(:\n")
    with pytest.raises(ConfigError, match=r"importing .*loader.py failed: SyntaxError"):
        _load("loader", tmp_path, function="loader.py:fetch")


def test_a_user_dataset_cannot_go_to_a_training_container_and_says_how_to_train_instead(tmp_path: Path) -> None:
    from modelcycle.core.entrypoint import channel_files

    with pytest.raises(ConfigError, match="dataset 'imagefolder' cannot be shipped .* training.mode: in_process"):
        channel_files("imagefolder", _folder(tmp_path / "img", {"a": 1, "b": 1}))
