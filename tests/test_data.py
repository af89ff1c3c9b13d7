"""Tests for ddi_tf.data: every input layout, the cache, error messages and the tf.data pipelines."""

import pickle
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ddi_tf import data as D
from ddi_tf.data import sources

PER_CLASS = 3
REPO_ROOT = Path(__file__).resolve().parents[1]


def _images(
    num_classes: int = 10, per_class: int = PER_CLASS, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Class-major smooth (8x8 blocks) random images, so JPEG round trips stay close."""
    rng = np.random.default_rng(seed)
    n = num_classes * per_class
    x = rng.integers(0, 256, size=(n, 4, 4, 3), dtype=np.uint8).repeat(8, axis=1).repeat(8, axis=2)
    return x, np.repeat(np.arange(num_classes, dtype=np.int64), per_class)


def _write_pickle_dir(folder: Path, xs: tuple, ys: tuple, classes=D.CIFAR10_CLASSES) -> Path:
    folder.mkdir(parents=True)

    def dump(name: str, obj: dict) -> None:
        with open(folder / name, "wb") as f:
            pickle.dump(obj, f, protocol=2)

    for i, (x, y) in enumerate(zip(np.array_split(xs[0], 5), np.array_split(ys[0], 5), strict=True), 1):
        dump(f"data_batch_{i}", {b"data": x.transpose(0, 3, 1, 2).reshape(len(x), -1), b"labels": y.tolist()})
    dump(
        "test_batch",
        {b"data": xs[1].transpose(0, 3, 1, 2).reshape(len(xs[1]), -1), b"labels": ys[1].tolist()},
    )
    dump("batches.meta", {b"label_names": [c.encode() for c in classes]})
    return folder


def _write_tree(
    root: Path, x: np.ndarray, y: np.ndarray, classes=D.CIFAR10_CLASSES, ext: str = "png"
) -> Path:
    for split, (xs, ys) in {"train": (x, y), "test": (x[::-1], y[::-1])}.items():
        for i, (img, label) in enumerate(zip(xs, ys, strict=True)):
            path = root / split / classes[label] / f"{i:04d}.{ext}"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(path, quality=95) if ext == "jpg" else Image.fromarray(img).save(path)
    return root


def _tar(src: Path, out: Path, arcname: str) -> Path:
    with tarfile.open(out, "w:gz") as tar:
        tar.add(src, arcname=arcname)
    return out


def _sorted_by_label(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(y, kind="stable")
    return x[order], y[order]


def _interleaved(x: np.ndarray, y: np.ndarray, per_class: int = PER_CLASS) -> tuple[np.ndarray, np.ndarray]:
    """Class-major arrays with equal classes, reordered c0 c1 .. c9 c0 c1 .. (how image trees are loaded)."""
    num_classes = len(y) // per_class

    def swap(a: np.ndarray) -> np.ndarray:
        return a.reshape(num_classes, per_class, *a.shape[1:]).swapaxes(0, 1).reshape(a.shape)

    return swap(x), swap(y)


@pytest.fixture
def pickle_dir(tmp_path: Path) -> Path:
    x, y = _images()
    return _write_pickle_dir(tmp_path / "src" / "cifar-10-batches-py", (x, x[:10]), (y, y[:10]))


@pytest.fixture
def png_tree(tmp_path: Path) -> Path:
    x, y = _images()
    return _write_tree(tmp_path / "src" / "cifar10-png", x, y)


# ----------------------------------------------------------------------------------------------- layouts


@pytest.mark.parametrize("given", ["folder", "parent", "targz", "targz_parent"])
def test_pickle_layouts(pickle_dir: Path, tmp_path: Path, given: str) -> None:
    archive = _tar(pickle_dir, pickle_dir.parent / "cifar-10-python.tar.gz", "cifar-10-batches-py")
    if given.startswith("targz"):
        pickle_dir.rename(tmp_path / "moved")  # only the archive is left to find
    target = {
        "folder": pickle_dir,
        "parent": pickle_dir.parent,
        "targz": archive,
        "targz_parent": archive.parent,
    }
    data = D.load_cifar(target[given], cache_dir=tmp_path / "cache")
    x, y = _images()
    np.testing.assert_array_equal(data.x_train, x)
    np.testing.assert_array_equal(data.y_train, y)
    np.testing.assert_array_equal(data.x_test, x[:10])
    assert data.x_train.dtype == np.uint8 and data.y_train.dtype == np.int64
    assert data.class_names == list(D.CIFAR10_CLASSES) and data.num_classes == 10


@pytest.mark.parametrize("given", ["folder", "parent", "targz_top_folder"])
def test_png_tree_exact(png_tree: Path, tmp_path: Path, given: str) -> None:
    target = {"folder": png_tree, "parent": png_tree.parent}.get(given)
    if target is None:
        target = _tar(png_tree, tmp_path / "cifar10-png.tar.gz", "cifar10-png")
    data = D.load_cifar(target, cache_dir=tmp_path / "cache")
    x, y = _images()
    np.testing.assert_array_equal(data.x_train, _interleaved(x, y)[0])
    np.testing.assert_array_equal(data.y_train, np.tile(np.arange(10), PER_CLASS))
    x_test, y_test = _interleaved(*_sorted_by_label(x[::-1], y[::-1]))  # test files: by name within a class
    np.testing.assert_array_equal(data.x_test, x_test)
    np.testing.assert_array_equal(data.y_test, y_test)
    assert data.class_names == list(D.CIFAR10_CLASSES)


def test_jpeg_tree_approximate(tmp_path: Path) -> None:
    x, y = _images()
    data = D.load_cifar(_write_tree(tmp_path / "jpg", x, y, ext="jpg"), cache_dir=tmp_path / "cache")
    assert data.x_train.shape == (30, 32, 32, 3) and data.x_train.dtype == np.uint8
    x, y = _interleaved(x, y)
    np.testing.assert_array_equal(data.y_train, y)
    assert np.abs(data.x_train.astype(float) - x).mean() < 8


def test_non_cifar_class_names_are_sorted(tmp_path: Path) -> None:
    classes = [f"k{i}" for i in range(9, -1, -1)]
    x, y = _images()
    data = D.load_cifar(_write_tree(tmp_path / "t", x, y, classes=classes), cache_dir=tmp_path / "cache")
    assert data.class_names == sorted(classes)
    # label j is now folder k<j>, which held class 9 - j
    by_label = x.reshape(10, PER_CLASS, 32, 32, 3)[::-1].reshape(x.shape)
    np.testing.assert_array_equal(data.x_train, _interleaved(by_label, y)[0])
    np.testing.assert_array_equal(data.y_train, _interleaved(by_label, y)[1])


def test_interleave_classes_is_a_round_robin_keeping_each_class_order() -> None:
    y = np.array([2, 2, 0, 0, 0, 1, 2])
    order = D.interleave_classes(y)
    np.testing.assert_array_equal(order, [2, 5, 0, 3, 1, 4, 6])
    np.testing.assert_array_equal(y[order], [0, 1, 2, 0, 2, 0, 2])
    assert D.interleave_classes(np.array([], np.int64)).shape == (0,)


@pytest.mark.parametrize("given", ["folder", "targz"])
def test_image_tree_prefixes_have_every_class(tmp_path: Path, given: str) -> None:
    """An image tree lists files class by class; loaded, any prefix of a split is class-balanced."""
    x, y = _images(per_class=4)
    root = _write_tree(tmp_path / "src" / "cifar10-png", x, y)
    min((root / "test" / "bird").iterdir()).unlink()  # unequal classes: bird has 3 test images
    target = root if given == "folder" else _tar(root, tmp_path / "cifar10-png.tar.gz", "cifar10-png")
    data = D.load_cifar(target, cache_dir=tmp_path / "cache")
    for k in range(1, 4):
        assert np.bincount(data.y_test[: 10 * k], minlength=10).tolist() == [k] * 10
        assert np.bincount(data.y_train[: 10 * k], minlength=10).tolist() == [k] * 10
    assert np.bincount(data.y_test, minlength=10).tolist() == [4, 4, 3, 4, 4, 4, 4, 4, 4, 4]
    assert 2 not in data.y_test[30:]  # once a class runs out the others go on
    for img, label in zip(data.x_test, data.y_test, strict=True):
        assert y[np.flatnonzero((x == img).all(axis=(1, 2, 3)))[0]] == label


def test_pickle_order_is_unchanged(tmp_path: Path) -> None:
    """The python batches keep CIFAR's own order, mixed or class-major; also when read from the cache."""
    x, y = _images()
    perm = np.random.default_rng(1).permutation(len(y))
    folder = _write_pickle_dir(tmp_path / "cifar-10-batches-py", (x[perm], x), (y[perm], y))
    for _ in range(2):  # decoded, then from the cache
        data = D.load_cifar(folder, cache_dir=tmp_path / "cache")
        np.testing.assert_array_equal(data.x_train, x[perm])
        np.testing.assert_array_equal(data.y_train, y[perm])
        np.testing.assert_array_equal(data.x_test, x)
        np.testing.assert_array_equal(data.y_test, y)  # class-major stays class-major


def test_keras_cache_is_searched(pickle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keras = tmp_path / "home" / ".keras" / "datasets"
    keras.mkdir(parents=True)
    _tar(pickle_dir, keras / "cifar-10-batches-py.tar.gz", "cifar-10-batches-py")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KERAS_HOME", raising=False)
    data = D.load_cifar(None, download=False)
    assert len(data.x_train) == 30
    assert list((keras / ".ddi_cache").glob("cifar10-*.npz"))  # default cache: next to the data


# ---------------------------------------------------------------------------------------------- caching


def test_cache_hit_and_corrupt_cache(png_tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    first = D.load_cifar(png_tree, cache_dir=cache)
    (cache_file,) = cache.glob("cifar10-cifar10-png.*.npz")
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although the cache is valid")

    with monkeypatch.context() as m:
        m.setattr(sources, "_decode_source", no_decoding)
        np.testing.assert_array_equal(D.load_cifar(png_tree, cache_dir=cache).x_train, first.x_train)

    cache_file.write_bytes(b"not a zip file")
    rebuilt = D.load_cifar(png_tree, cache_dir=cache)
    np.testing.assert_array_equal(rebuilt.x_test, first.x_test)
    assert cache_file.stat().st_size > 1000  # rewritten


def test_old_class_sorted_cache_is_not_reused(
    png_tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version-1 cache (class-sorted, no 'cache_version') is neither found nor, if renamed, trusted."""
    cache = tmp_path / "cache"
    x, y = _images()
    x_old, y_old = _sorted_by_label(x[::-1], y[::-1])
    old = dict(x_train=x, y_train=y, x_test=x_old, y_test=y_old, class_names=np.array(D.CIFAR10_CLASSES))
    with monkeypatch.context() as m:
        m.setattr(sources, "_CACHE_VERSION", 1)
        old_name = cache / f"cifar10-cifar10-png.{sources._fingerprint(png_tree, 'cifar10')}.npz"
    new_name = cache / f"cifar10-cifar10-png.{sources._fingerprint(png_tree, 'cifar10')}.npz"
    assert old_name != new_name
    cache.mkdir()
    np.savez(old_name, **old)
    np.savez(new_name, **old)  # as if copied under the current name
    data = D.load_cifar(png_tree, cache_dir=cache)
    np.testing.assert_array_equal(data.y_test, np.tile(np.arange(10), PER_CLASS))
    with np.load(new_name) as z:  # rebuilt in the current format
        assert int(z["cache_version"]) == sources._CACHE_VERSION
        np.testing.assert_array_equal(z["y_test"], data.y_test)
    with np.load(old_name) as z:  # left alone
        assert "cache_version" not in z.files

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although the rebuilt cache is valid")

    monkeypatch.setattr(sources, "_decode_source", no_decoding)
    np.testing.assert_array_equal(D.load_cifar(png_tree, cache_dir=cache).y_test, data.y_test)


def test_cache_key_follows_source_changes(png_tree: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    D.load_cifar(png_tree, cache_dir=cache)
    extra = png_tree / "train" / "cat" / "9999.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(extra)
    assert len(D.load_cifar(png_tree, cache_dir=cache).x_train) == 31
    assert len(list(cache.glob("*.npz"))) == 2


# ----------------------------------------------------------------------------------------------- errors


def test_nonexistent_path(tmp_path: Path) -> None:
    with pytest.raises(D.DataError, match="does not exist.*--data_dir"):
        D.load_cifar(tmp_path / "nope")


def test_truncated_archive(png_tree: Path, tmp_path: Path) -> None:
    archive = _tar(png_tree, tmp_path / "c.tar.gz", "cifar10-png")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(D.DataError, match="corrupt or truncated"):
        D.load_cifar(archive, cache_dir=tmp_path / "cache")


def test_undecodable_image(png_tree: Path, tmp_path: Path) -> None:
    (png_tree / "train" / "dog" / "0001.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(D.DataError, match=r"dog/0001\.png: cannot decode"):
        D.load_cifar(png_tree, cache_dir=tmp_path / "cache")


def test_wrong_image_size(png_tree: Path, tmp_path: Path) -> None:
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(png_tree / "test" / "ship" / "0000.png")
    with pytest.raises(D.DataError, match=r"ship/0000\.png: image is 16x16x3"):
        D.load_cifar(png_tree, cache_dir=tmp_path / "cache")


def test_missing_class(png_tree: Path, tmp_path: Path) -> None:
    for split in ("train", "test"):
        for f in (png_tree / split / "truck").iterdir():
            f.unlink()
        (png_tree / split / "truck").rmdir()
    with pytest.raises(D.DataError, match="class folders missing: truck"):
        D.load_cifar(png_tree, cache_dir=tmp_path / "cache")


def test_train_test_classes_differ(png_tree: Path, tmp_path: Path) -> None:
    (png_tree / "test" / "frog").rename(png_tree / "test" / "toad")
    with pytest.raises(D.DataError, match=r"only in train: \['frog'\].*only in test: \['toad'\]"):
        D.load_cifar(png_tree, cache_dir=tmp_path / "cache")


def test_empty_split(tmp_path: Path) -> None:
    x, y = _images()
    root = _write_tree(tmp_path / "t", x, y)
    for f in (root / "test").glob("*/*"):
        f.unlink()
    with pytest.raises(D.DataError, match="no test images"):
        D.load_cifar(root, cache_dir=tmp_path / "cache")


def test_cifar100_layout_for_cifar10(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name in ("train", "test", "meta"):
        (folder / name).write_bytes(b"")
    with pytest.raises(D.DataError, match="cifar100 data but --dataset=cifar10"):
        D.load_cifar(tmp_path, cache_dir=tmp_path / "cache")


def test_cifar100_pickles(tmp_path: Path) -> None:
    x, y = _images(num_classes=100, per_class=1)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name in ("train", "test"):
        blob = {b"data": x.transpose(0, 3, 1, 2).reshape(100, -1), b"fine_labels": y.tolist()}
        (folder / name).write_bytes(pickle.dumps(blob, protocol=2))
    (folder / "meta").write_bytes(
        pickle.dumps({b"fine_label_names": [f"c{i:03d}".encode() for i in range(100)]})
    )
    data = D.load_cifar(tmp_path, "cifar100", cache_dir=tmp_path / "cache")
    assert data.num_classes == 100 and data.class_names[5] == "c005"
    np.testing.assert_array_equal(data.x_test, x)
    with pytest.raises(D.DataError, match="cifar100 data but --dataset=cifar10"):
        D.load_cifar(folder, "cifar10", cache_dir=tmp_path / "cache")


def test_nothing_found_lists_places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    (tmp_path / "kh" / "datasets").mkdir(parents=True)
    with pytest.raises(D.DataError) as err:
        D.load_cifar(None, download=False)
    message = str(err.value)
    assert str(tmp_path / "home" / ".keras" / "datasets") in message
    assert str(tmp_path / "kh" / "datasets") in message
    assert "--data_dir" in message


def test_unknown_dataset() -> None:
    with pytest.raises(D.DataError, match="cifar100"):
        D.load_cifar("/x", "mnist")


# (arrays, files and the tf.data pipeline: tests/test_data_arrays.py)


# ------------------------------------------------------------------------------------------------- CLI


def test_cli_writes_test_npz(png_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "test.npz"
    flags = [f"--data_dir={png_tree}", f"--write_test_npz={out}", "--limit=10", f"--cache_dir={tmp_path}"]
    cmd = [sys.executable, "-m", "ddi_tf.data", *flags]
    result = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "wrote the first 10 test images" in result.stdout and "class-interleaved" in result.stdout
    x, y = D.load_npz(out)
    assert x.shape == (10, 32, 32, 3) and y.tolist() == list(range(10))  # one of each class
    data = D.load_cifar(png_tree, cache_dir=tmp_path)
    np.testing.assert_array_equal(x, data.x_test[:10])  # the same images as training's --eval_limit=10


# ------------------------------------------------------------------------------------------- real data


@pytest.mark.slow
def test_real_cifar10_jpeg_archive(tmp_path: Path) -> None:
    archive = REPO_ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
    if not archive.is_file():
        pytest.skip(f"real CIFAR-10 archive not found at {archive}")
    start = time.perf_counter()
    data = D.load_cifar(archive, cache_dir=tmp_path / "cache")
    decode_s = time.perf_counter() - start
    start = time.perf_counter()
    cached = D.load_cifar(archive, cache_dir=tmp_path / "cache")
    cache_s = time.perf_counter() - start
    print(f"\nreal archive: decode {decode_s:.1f} s, cached load {cache_s:.2f} s")
    assert data.x_train.shape == (50000, 32, 32, 3) and data.x_test.shape == (10000, 32, 32, 3)
    assert data.class_names == list(D.CIFAR10_CLASSES)
    assert np.bincount(data.y_train).tolist() == [5000] * 10
    assert np.bincount(data.y_test).tolist() == [1000] * 10
    assert np.bincount(data.y_test[:500]).tolist() == [50] * 10  # class-interleaved: prefixes are balanced
    np.testing.assert_allclose(data.x_train.reshape(-1, 3).mean(0), (125.3, 122.9, 113.9), atol=2)
    np.testing.assert_array_equal(cached.x_train, data.x_train)
    assert cache_s < 5


