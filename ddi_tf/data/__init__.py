"""CIFAR-10/100 loading, caching and deterministic ``tf.data`` input pipelines.

``load_cifar`` accepts the canonical python-pickle folders (``cifar-10-batches-py``, ``cifar-100-python``),
image-folder trees (``train/<class>/*.jpg|png`` + ``test/<class>/...``) and ``.tar.gz`` archives of either.
Archives are read member by member (never extracted); the decoded uint8 arrays are cached as one ``.npz``
keyed by the source's path, size and modification time, so later runs load in about a second.

The python batches keep CIFAR's own (mixed) order. An image-folder tree has no order of its own beyond class
folders, so each of its splits is returned class-interleaved (see ``interleave_classes``): any prefix, such
as the first N test images that ``--eval_limit`` or a runtime's ``--limit`` evaluates, is class-balanced.

Every problem with the input data raises ``DataError`` with a message that names the file and the fix.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import os
import pickle
import re
import tarfile
import tempfile
import time
import zlib
from pathlib import Path, PurePosixPath

import numpy as np
import tensorflow as tf
from absl import logging
from PIL import Image
from tqdm import tqdm

from ddi_runtime import ModelError
from ddi_runtime import data as runtime_data

DATASETS = {"cifar10": 10, "cifar100": 100}
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
CIFAR10_MEAN = (125.3, 123.0, 113.9)
CIFAR10_STD = (63.0, 62.1, 66.7)
CIFAR100_MEAN = (129.3, 124.1, 112.4)
CIFAR100_STD = (68.2, 65.4, 70.4)
IMAGE_SHAPE = (32, 32, 3)

# Part of every cache key and stored in every cache file; bump it whenever the decoded arrays change.
# 1: image-folder splits sorted by class. 2: image-folder splits class-interleaved; 'cache_version' stored.
_CACHE_VERSION = 2
_IMAGE_EXTS = (".jpg", ".jpeg", ".png")
_ARCHIVE_EXTS = (".tar.gz", ".tgz", ".tar")
_SPLITS = ("train", "test")
_PICKLE_DIR = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
# dataset -> (train files, test files, meta file, label key, label-names key)
_PICKLE_LAYOUT = {
    "cifar10": ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta", "labels",
                "label_names"),
    "cifar100": (["train"], ["test"], "meta", "fine_labels", "fine_label_names"),
}  # fmt: skip
_PICKLE_NAMES = {n for tr, te, meta, _, _ in _PICKLE_LAYOUT.values() for n in (*tr, *te, meta)}


class DataError(ValueError):
    """Missing, corrupt or inconsistent input data."""


@dataclasses.dataclass(eq=False)
class CifarData:
    """A CIFAR train/test split: uint8 images (N, 32, 32, 3) and int64 labels (N,)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)


def _hint(dataset: str) -> str:
    if dataset == "cifar100":
        return "pass --data_dir=/path/to/cifar-100-python (or cifar-100-python.tar.gz)"
    return "pass --data_dir=/path/to/cifar10-jpeg.tar.gz or cifar-10-batches-py"


def _check_dataset(dataset: str) -> str:
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; set --dataset to one of {sorted(DATASETS)}")
    return dataset


def _mismatch(found: str, dataset: str, where: str) -> DataError:
    return DataError(
        f"{where} holds {found} data but --dataset={dataset}; "
        f"pass --dataset={found} or point --data_dir at {dataset} data"
    )


# ----------------------------------------------------------------------------------------------- decoding


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that only builds what CIFAR batches contain (dicts, lists, bytes, numpy arrays)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 writes bytes in protocol-2 pickles
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"unexpected object {module}.{name}")


def _unpickle(raw: bytes, where: str) -> dict:
    try:
        obj = _CifarUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as e:  # a malformed pickle can raise almost anything
        raise DataError(
            f"{where}: not a readable CIFAR python batch ({type(e).__name__}: {e}); "
            "the file is corrupt or truncated, re-download it"
        ) from e
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a pickled dict (CIFAR python batch), got {type(obj).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _pickle_kind(names: set[str]) -> str | None:
    """Which CIFAR python layout a set of file names is: 'cifar10', 'cifar100' or None."""
    if "data_batch_1" in names or "test_batch" in names:
        return "cifar10"
    if {"train", "test"} <= names:
        return "cifar100"
    return None


def _decode_pickles(files: dict[str, bytes], dataset: str, where: str) -> CifarData:
    train_files, test_files, meta_file, label_key, names_key = _PICKLE_LAYOUT[dataset]
    missing = [n for n in (*train_files, *test_files) if n not in files]
    if missing:
        raise DataError(
            f"{where}: the {_PICKLE_DIR[dataset]} layout is missing {', '.join(missing)}; "
            "the copy is incomplete, re-download it"
        )

    def read(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for name in names:
            batch = _unpickle(files[name], f"{where}/{name}")
            if "data" not in batch or label_key not in batch:
                raise DataError(
                    f"{where}/{name}: expected keys 'data' and '{label_key}', found {sorted(batch)}"
                )
            x = np.asarray(batch["data"])
            if x.ndim != 2 or x.shape[1] != 3 * 32 * 32:
                raise DataError(f"{where}/{name}: 'data' has shape {x.shape}, expected (N, 3072)")
            xs.append(x.astype(np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            ys.append(np.asarray(batch[label_key], dtype=np.int64).reshape(-1))
            if len(ys[-1]) != len(xs[-1]):
                raise DataError(f"{where}/{name}: {len(xs[-1])} images but {len(ys[-1])} labels")
        return np.ascontiguousarray(np.concatenate(xs)), np.concatenate(ys)

    x_train, y_train = read(train_files)
    x_test, y_test = read(test_files)
    if meta_file in files:
        meta = _unpickle(files[meta_file], f"{where}/{meta_file}")
        if names_key not in meta:
            raise DataError(f"{where}/{meta_file}: no '{names_key}' entry, found {sorted(meta)}")
        class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta[names_key]]
    elif dataset == "cifar10":
        class_names = list(CIFAR10_CLASSES)
    else:
        raise DataError(f"{where}: missing '{meta_file}' (the class names); re-download cifar-100-python")
    return CifarData(x_train, y_train, x_test, y_test, class_names)


def _decode_image(payload: bytes | Path, name: str) -> np.ndarray:
    try:
        raw = payload.read_bytes() if isinstance(payload, Path) else payload
        with Image.open(io.BytesIO(raw)) as img:
            (w, h), channels = img.size, len(img.getbands())
            if (h, w, channels) != IMAGE_SHAPE or img.mode != "RGB":
                raise DataError(
                    f"{name}: image is {h}x{w}x{channels} ({img.mode}); CIFAR images must be "
                    "32x32x3 RGB, fix or remove the file"
                )
            return np.asarray(img, dtype=np.uint8)
    except DataError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(
            f"{name}: cannot decode image ({type(e).__name__}: {e}); "
            "the file is corrupt, replace it or re-create the archive"
        ) from e


def _class_order(found: set[str], dataset: str, where: str) -> list[str]:
    """Canonical CIFAR-10 order for the canonical folder names, else sorted names (numerically if digits)."""
    expected = DATASETS[dataset]
    if dataset == "cifar10" and found <= set(CIFAR10_CLASSES):
        missing = [c for c in CIFAR10_CLASSES if c not in found]
        if missing:
            raise DataError(
                f"{where}: CIFAR-10 class folders missing: {', '.join(missing)} "
                f"(found {len(found)} of 10); the data set is incomplete"
            )
        return list(CIFAR10_CLASSES)
    if len(found) != expected:
        other = [d for d, n in DATASETS.items() if n == len(found)]
        fix = f"pass --dataset={other[0]}" if other else f"provide all {expected} class folders"
        raise DataError(
            f"{where}: found {len(found)} class folders but --dataset={dataset} has {expected} classes; {fix}"
        )
    return sorted(found, key=lambda c: (int(c), c) if c.isdigit() else (float("inf"), c))


def interleave_classes(labels: np.ndarray) -> np.ndarray:
    """Indices that put ``labels`` in class-interleaved order: sorted by (rank within its class, class).

    The result reads class 0, 1, ..., C-1, then each class's second item, and so on, each class keeping its
    own relative order; once a class runs out the others continue. So every prefix is as class-balanced as
    the class sizes allow: with 10 classes of 1,000 test images, the first 500 hold exactly 50 of each.
    A round robin is used rather than a seeded permutation because it is exact (the first 500 of a seed-0
    permutation of the CIFAR-10 test split hold 40 to 66 per class), needs no random stream that could
    change between numpy versions, and moves no other class's images when one class folder changes.
    """
    labels = np.asarray(labels).reshape(-1)
    by_class = np.argsort(labels, kind="stable")
    _, first, counts = np.unique(labels[by_class], return_index=True, return_counts=True)
    rank = np.empty(len(labels), np.int64)
    rank[by_class] = np.arange(len(labels)) - np.repeat(first, counts)
    return np.lexsort((labels, rank))


# One image of an image-folder tree: (split, class folder, name for messages, bytes or file path).
_ImageItem = tuple[str, str, str, bytes | Path]


def _decode_images(items: list[_ImageItem], dataset: str, where: str) -> CifarData:
    """Decode an image-folder tree; each split in class-interleaved order (files by name within a class).

    A tree lists its images class folder by class folder; kept that way, the first 500 test images would
    all be one class and every consumer that evaluates a prefix would measure one class. Interleaving
    (``interleave_classes``) makes any prefix class-balanced and stays deterministic.
    """
    classes = {s: {c for split, c, _, _ in items if split == s} for s in _SPLITS}
    for split in _SPLITS:
        if not classes[split]:
            raise DataError(f"{where}: no {split} images found (expected {split}/<class>/*.jpg or *.png)")
    if classes["train"] != classes["test"]:
        only_train = sorted(classes["train"] - classes["test"])
        only_test = sorted(classes["test"] - classes["train"])
        raise DataError(
            f"{where}: train and test class folders differ (only in train: {only_train}, "
            f"only in test: {only_test}); both splits need the same classes"
        )
    class_names = _class_order(classes["train"], dataset, where)
    index = {c: i for i, c in enumerate(class_names)}
    arrays = {}
    for split in _SPLITS:
        part = sorted((t for t in items if t[0] == split), key=lambda t: (index[t[1]], t[2]))
        labels = np.array([index[c] for _, c, _, _ in part], np.int64)
        order = interleave_classes(labels)
        part, y = [part[i] for i in order], labels[order]
        x = np.empty((len(part), *IMAGE_SHAPE), np.uint8)
        bar = tqdm(part, desc=f"decoding {split}", unit="img", mininterval=1.0, disable=None)
        for i, (_, _, name, payload) in enumerate(bar):
            x[i] = _decode_image(payload, name)
        arrays[split] = (x, y)
    return CifarData(*arrays["train"], *arrays["test"], class_names)


def _decode_found(pickles: dict[str, bytes], images: list[_ImageItem], dataset: str, where: str) -> CifarData:
    kind = _pickle_kind(set(pickles))
    if kind is not None:
        if kind != dataset:
            raise _mismatch(kind, dataset, where)
        return _decode_pickles(pickles, dataset, where)
    if images:
        return _decode_images(images, dataset, where)
    raise DataError(
        f"{where}: no CIFAR data found (expected the {_PICKLE_DIR[dataset]} python batches or "
        f"train/<class>/*.jpg|png + test/<class>/...); {_hint(dataset)}"
    )


def _is_tree_image(parts: tuple[str, ...]) -> bool:
    """Whether path components end in ``<split>/<class>/<image file>`` (hidden names excluded)."""
    return (
        len(parts) >= 3
        and parts[-3] in _SPLITS
        and parts[-1].lower().endswith(_IMAGE_EXTS)
        and not any(p.startswith(".") for p in parts[-2:])
    )


def _read_archive(path: Path, dataset: str) -> CifarData:
    pickles: dict[str, bytes] = {}
    images: list[_ImageItem] = []
    roots: set[tuple[str, ...]] = set()
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                parts = PurePosixPath(member.name).parts
                if not member.isfile() or any(p.startswith(".") or p == "__MACOSX" for p in parts):
                    continue
                if parts[-1] in _PICKLE_NAMES:
                    pickles[parts[-1]] = tar.extractfile(member).read()
                elif _is_tree_image(parts):
                    images.append(
                        (parts[-3], parts[-2], f"{path}:{member.name}", tar.extractfile(member).read())
                    )
                    roots.add(parts[:-3])
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DataError(
            f"{path}: cannot read the archive ({type(e).__name__}: {e}); it is corrupt or "
            "truncated, re-download it or point --data_dir at an intact copy"
        ) from e
    if len(roots) > 1:
        raise DataError(
            f"{path}: holds several image trees ({sorted('/'.join(r) or '.' for r in roots)}); "
            "keep one train/ + test/ tree per archive"
        )
    return _decode_found(pickles, images, dataset, str(path))


def _read_directory(path: Path, dataset: str) -> CifarData:
    try:
        names = {p.name for p in path.iterdir() if p.is_file()}
        if _pickle_kind(names):
            pickles = {n: (path / n).read_bytes() for n in names & _PICKLE_NAMES}
            return _decode_found(pickles, [], dataset, str(path))
        images = []
        for split in _SPLITS:
            for file in sorted((path / split).glob("*/*")) if (path / split).is_dir() else []:
                if _is_tree_image(file.parts) and file.is_file():
                    images.append((split, file.parent.name, str(file), file))
    except OSError as e:
        raise DataError(
            f"{path}: cannot read ({type(e).__name__}: {e}); check the path and permissions"
        ) from e
    return _decode_found({}, images, dataset, str(path))


def _decode_source(source: Path, dataset: str) -> CifarData:
    """Decode a concrete source (an archive, a python-pickle folder or an image tree)."""
    if source.is_file():
        return _read_archive(source, dataset)
    return _read_directory(source, dataset)


def _validate(data: CifarData, dataset: str, where: str) -> CifarData:
    expected = DATASETS[dataset]
    if data.num_classes != expected:
        found = [d for d, n in DATASETS.items() if n == data.num_classes]
        if found:
            raise _mismatch(found[0], dataset, where)
        raise DataError(f"{where}: {data.num_classes} classes, but --dataset={dataset} has {expected}")
    for split in _SPLITS:
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        _check_xy(x, y, f"{where} ({split} split)")
        if len(x) == 0:
            raise DataError(f"{where}: the {split} split is empty")
        if y.min() < 0 or y.max() >= expected:
            raise DataError(f"{where}: {split} labels span {y.min()}..{y.max()}, expected 0..{expected - 1}")
    return data


def _check_xy(x: np.ndarray, y: np.ndarray, where: str) -> None:
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != IMAGE_SHAPE:
        raise DataError(f"{where}: images are {x.dtype} {x.shape}, expected uint8 (N, 32, 32, 3)")
    if y.dtype != np.int64 or y.shape != (len(x),):
        raise DataError(f"{where}: labels are {y.dtype} {y.shape}, expected int64 ({len(x)},)")


# ---------------------------------------------------------------------------------------- locating data


def _is_archive(path: Path) -> bool:
    return path.name.lower().endswith(_ARCHIVE_EXTS)


def _named_dataset(name: str) -> str | None:
    """The dataset a file or folder name refers to ('cifar-100-python' -> 'cifar100'), if any."""
    name = name.lower()
    if re.search(r"cifar[-_]?100", name):
        return "cifar100"
    if re.search(r"cifar[-_]?10", name):
        return "cifar10"
    return None


def _dir_kind(path: Path) -> str | None:
    """'cifar10'/'cifar100' for a python-pickle folder, 'images' for a train/ + test/ tree, else None."""
    try:
        kind = _pickle_kind({p.name for p in path.iterdir() if p.is_file()})
    except OSError:
        return None
    if kind is None and (path / "train").is_dir() and (path / "test").is_dir():
        kind = "images"
    return kind


def _find_in_dir(path: Path, dataset: str, strict: bool = True) -> Path | None:
    """The data source at or directly inside ``path``; raises on a layout of the other dataset if strict."""
    try:
        children = sorted(p for p in path.iterdir() if not p.name.startswith("."))
    except OSError as e:
        if not strict:
            return None
        raise DataError(f"{path}: cannot list the folder ({e}); check the path and permissions") from e
    others = []  # (where, dataset) of layouts that belong to the other dataset
    for candidate in [path] + [p for p in children if p.is_dir()]:
        kind = _dir_kind(candidate)
        if kind == "images":  # an image tree's dataset is only known from its name (or its classes)
            kind = (_named_dataset(candidate.name) if candidate != path else None) or dataset
        if kind == dataset:
            return candidate
        if kind is not None:
            others.append((candidate, kind))
    archives = [p for p in children if p.is_file() and _is_archive(p)]
    for wanted in (dataset, None):
        matches = [a for a in archives if _named_dataset(a.name) == wanted]
        if matches:
            return matches[0]
    others += [(a, _named_dataset(a.name)) for a in archives]
    if strict and others:
        raise _mismatch(others[0][1], dataset, str(others[0][0]))
    return None


def _resolve_source(data_dir: str | os.PathLike, dataset: str) -> Path:
    path = Path(data_dir).expanduser()
    if not path.exists():
        raise DataError(f"--data_dir={data_dir} does not exist; {_hint(dataset)}")
    if path.is_file():
        if not _is_archive(path):
            raise DataError(
                f"--data_dir={data_dir} is a file but not a .tar.gz/.tgz/.tar archive; {_hint(dataset)}"
            )
        return path
    source = _find_in_dir(path, dataset)
    if source is None:
        raise DataError(
            f"--data_dir={data_dir} holds no CIFAR data (looked for the {_PICKLE_DIR[dataset]} "
            "python batches, train/ + test/ class folders, or a .tar.gz of either); "
            f"{_hint(dataset)}"
        )
    return source


def _keras_dataset_dirs() -> list[Path]:
    dirs = [Path("~/.keras/datasets").expanduser()]
    if os.environ.get("KERAS_HOME"):
        dirs.append(Path(os.environ["KERAS_HOME"]).expanduser() / "datasets")
    return list(dict.fromkeys(dirs))


def _find_in_keras_cache(dataset: str) -> Path | None:
    for folder in _keras_dataset_dirs():
        if folder.is_dir() and (source := _find_in_dir(folder, dataset, strict=False)) is not None:
            return source
    return None


# --------------------------------------------------------------------------------------------- caching


def _fingerprint(source: Path, dataset: str) -> str:
    """Hash of the source path plus the size and mtime of it (and, for a folder, of everything inside)."""
    digest = hashlib.sha256(f"v{_CACHE_VERSION}|{dataset}|{source.resolve()}".encode())
    paths = [source]
    if source.is_dir():
        for root, dirs, files in os.walk(source):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            paths += [Path(root, f) for f in sorted(files)] + [Path(root, d) for d in dirs]
    for p in paths:
        st = p.stat()
        digest.update(f"|{p.relative_to(source)}|{st.st_size}|{st.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def _writable(folder: Path) -> bool:
    """Writable by us and not marked read-only (no write bits: root could write, but should not)."""
    with contextlib.suppress(OSError):
        return os.access(folder, os.W_OK) and bool(folder.stat().st_mode & 0o222)
    return False


def _default_cache_dir(source: Path) -> Path:
    """``.ddi_cache/`` next to the data if that folder is writable, else ``~/.cache/ddi_tf``."""
    parent = source.resolve().parent
    local = parent / ".ddi_cache"
    if local.is_dir() and _writable(local):
        return local
    if not local.exists() and _writable(parent):
        with contextlib.suppress(OSError):
            local.mkdir()
            return local
    return Path("~/.cache/ddi_tf").expanduser()


def _atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    """Write an uncompressed ``.npz`` via a temporary file in the same folder and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _read_cache(path: Path, dataset: str) -> CifarData:
    with np.load(path, allow_pickle=False) as z:
        version = int(z["cache_version"]) if "cache_version" in z.files else 1
        if version != _CACHE_VERSION:  # e.g. a class-sorted version-1 cache copied under a current name
            raise DataError(f"{path}: cache format version {version}, expected {_CACHE_VERSION}")
        data = CifarData(
            z["x_train"], z["y_train"], z["x_test"], z["y_test"], [str(c) for c in z["class_names"]]
        )
    return _validate(data, dataset, str(path))


def _load_source(source: Path, dataset: str, cache_dir: str | os.PathLike | None) -> CifarData:
    folder = Path(cache_dir).expanduser() if cache_dir else _default_cache_dir(source)
    stem = source.name.split(".")[0] or "data"
    cache = folder / f"{dataset}-{stem}.{_fingerprint(source, dataset)}.npz"
    if cache.is_file():
        start = time.perf_counter()
        try:
            data = _read_cache(cache, dataset)
        except Exception as e:  # any unreadable cache is simply rebuilt
            logging.warning(
                "Ignoring unreadable or outdated cache %s (%s: %s); decoding %s again.",
                cache,
                type(e).__name__,
                e,
                source,
            )
        else:
            logging.info("Loaded %s from cache %s in %.1f s.", dataset, cache, time.perf_counter() - start)
            return data
    start = time.perf_counter()
    data = _validate(_decode_source(source, dataset), dataset, str(source))
    logging.info("Decoded %s from %s in %.1f s.", dataset, source, time.perf_counter() - start)
    try:
        _atomic_savez(
            cache,
            x_train=data.x_train,
            y_train=data.y_train,
            x_test=data.x_test,
            y_test=data.y_test,
            class_names=np.array(data.class_names),
            cache_version=np.array(_CACHE_VERSION),
        )
    except OSError as e:
        logging.warning(
            "Could not write the cache %s (%s); the data will be decoded again next time.", cache, e
        )
    return data


def _download(dataset: str, cache_dir: str | os.PathLike | None) -> tuple[CifarData | None, str]:
    """Download with tf_keras; returns (data, "") or (None, reason)."""
    import tf_keras

    try:
        (x_train, y_train), (x_test, y_test) = getattr(tf_keras.datasets, dataset).load_data()
    except Exception as e:  # network failures surface as many exception types
        return None, f"{type(e).__name__}: {e}"
    source = _find_in_keras_cache(dataset)
    if source is not None:  # the downloaded pickles carry the class names
        return _load_source(source, dataset, cache_dir), ""
    names = list(CIFAR10_CLASSES) if dataset == "cifar10" else [str(i) for i in range(100)]
    data = CifarData(
        x_train, y_train.reshape(-1).astype(np.int64), x_test, y_test.reshape(-1).astype(np.int64), names
    )
    return _validate(data, dataset, f"tf_keras.datasets.{dataset}"), ""


def load_cifar(
    data_dir: str | os.PathLike | None,
    dataset: str = "cifar10",
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
) -> CifarData:
    """Load CIFAR-10 or CIFAR-100 from a folder or archive, decoding once and caching the arrays.

    Args:
      data_dir: a ``.tar.gz`` (python batches or image tree), a ``cifar-10-batches-py`` /
        ``cifar-100-python`` folder, an image tree (``train/<class>/*``, ``test/<class>/*``), or a folder
        holding one of those. None searches the Keras cache (``~/.keras/datasets``, ``$KERAS_HOME/datasets``).
      dataset: ``cifar10`` or ``cifar100``.
      cache_dir: where to keep the decoded ``.npz``; default ``.ddi_cache/`` next to the data if writable,
        else ``~/.cache/ddi_tf``.
      download: with ``data_dir=None`` and nothing in the Keras cache, try ``tf_keras.datasets`` download.

    Returns:
      The train and test splits, uint8 images and int64 labels, with the class names in label order.

    Raises:
      DataError: the data is missing, corrupt, or does not match ``dataset``.
    """
    _check_dataset(dataset)
    if data_dir is not None:
        return _load_source(_resolve_source(data_dir, dataset), dataset, cache_dir)
    source = _find_in_keras_cache(dataset)
    if source is not None:
        return _load_source(source, dataset, cache_dir)
    reason = "download=False"
    if download:
        data, reason = _download(dataset, cache_dir)
        if data is not None:
            return data
    looked = ", ".join(str(d) for d in _keras_dataset_dirs())
    raise DataError(
        f"no {dataset} data found: looked in {looked} (Keras cache) and could not download "
        f"({reason}); {_hint(dataset)}"
    )


# -------------------------------------------------------------------------------------- arrays and files


def split_train_val(
    data: CifarData, val_size: int, seed: int
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Hold out ``val_size`` random training images (a seeded permutation): ((x_tr, y_tr), (x_val, y_val))."""
    n = len(data.x_train)
    if not 0 <= val_size < n:
        raise DataError(
            f"val_size={val_size} must be in [0, {n}) (the training split has {n} images); "
            "lower the validation size"
        )
    perm = np.random.default_rng(seed).permutation(n)
    val, train = np.sort(perm[:val_size]), np.sort(perm[val_size:])
    return (data.x_train[train], data.y_train[train]), (data.x_train[val], data.y_train[val])


def _check_labels(y: np.ndarray, num_classes: int | None, where: str) -> np.ndarray:
    """``y`` as int64 class indices, or a DataError naming the first label that is not in 0..num_classes-1.

    The rule is the board runtime's (``ddi_runtime.data.check_labels``, the one owner of the ``.npz`` format's
    labels): whole-number float labels are accepted as their integers; 2.5, NaN or inf are not class indices.
    Labels of another dtype or shape are left to ``_check_xy``, which names them.
    """
    y = np.asarray(y)
    if y.dtype.kind not in "iuf" or y.ndim != 1:
        return y
    try:
        return runtime_data.check_labels(y, num_classes, where)
    except ModelError as e:
        raise DataError(str(e)) from None


def write_npz(
    path: str | os.PathLike, x: np.ndarray, y: np.ndarray, class_names: list[str] | None = None
) -> None:
    """Atomically write ``x`` (uint8 N x 32 x 32 x 3), ``y`` (int64 N) and ``class_names`` to an ``.npz``.

    Labels must be class indices, in ``0..len(class_names)-1`` when class names are given.
    """
    x, y = np.asarray(x), np.asarray(y)
    y = _check_labels(y, len(class_names) if class_names else None, f"write_npz({path})")
    _check_xy(x, y, f"write_npz({path})")
    names = np.array(class_names if class_names is not None else [], dtype=str)
    _atomic_savez(Path(path), x=x, y=y, class_names=names)


def load_npz(path: str | os.PathLike, num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read an ``.npz`` written by :func:`write_npz`; returns validated ``(x, y)``.

    Labels are checked to be class indices in ``0..num_classes-1`` (default: the file's ``class_names``, if any).
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            if not {"x", "y"} <= set(z.files):
                raise DataError(
                    f"{path}: expected arrays 'x' and 'y', found {z.files}; write it with write_npz"
                )
            x, y = z["x"], z["y"]
            if num_classes is None and "class_names" in z.files:
                num_classes = len(z["class_names"]) or None
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zlib.error) as e:
        raise DataError(
            f"{path}: cannot read .npz ({type(e).__name__}: {e}); check the path or rewrite it"
        ) from e
    y = _check_labels(y, num_classes, str(path))
    _check_xy(x, y, str(path))
    return x, y


def synthetic_cifar(
    num_train: int = 512, num_test: int = 256, num_classes: int = 10, seed: int = 0
) -> CifarData:
    """Learnable random data: each class is a fixed blocky colour pattern plus per-image noise (uint8)."""
    if num_train <= 0 or num_test <= 0 or num_classes < 2:
        raise DataError("synthetic_cifar needs num_train > 0, num_test > 0 and num_classes >= 2")
    rng = np.random.default_rng(seed)
    patterns = rng.uniform(30, 225, size=(num_classes, 4, 4, 3)).repeat(8, axis=1).repeat(8, axis=2)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.permutation(np.arange(n) % num_classes).astype(np.int64)
        x = patterns[y] + rng.normal(0.0, 25.0, size=(n, *IMAGE_SHAPE))
        return np.clip(np.rint(x), 0, 255).astype(np.uint8), y

    return CifarData(*draw(num_train), *draw(num_test), [f"class_{i}" for i in range(num_classes)])


# -------------------------------------------------------------------------------------------- tf.data


def normalization_for(dataset: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (mean, std) on the 0..255 scale for ``cifar10`` or ``cifar100``."""
    _check_dataset(dataset)
    return (CIFAR10_MEAN, CIFAR10_STD) if dataset == "cifar10" else (CIFAR100_MEAN, CIFAR100_STD)


def normalize(x: tf.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> tf.Tensor:
    """``(x - mean) / std`` per channel, as float32 (``x`` is uint8 or float, channels last)."""
    x = tf.cast(x, tf.float32)
    return (x - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def _augment(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Zero-pad 4, random 32x32 crop and random horizontal flip of a uint8 batch, from a stateless seed."""
    batch = tf.shape(images)[0]
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    padded = tf.pad(images, [[0, 0], [4, 4], [4, 4], [0, 0]])
    offsets = tf.random.stateless_uniform([batch, 2], crop_seed, minval=0, maxval=9, dtype=tf.int32)
    rows = offsets[:, :1] + tf.range(32)
    cols = offsets[:, 1:] + tf.range(32)
    out = tf.gather(padded, rows, axis=1, batch_dims=1)
    out = tf.gather(out, cols, axis=2, batch_dims=1)
    flip = tf.random.stateless_uniform([batch], flip_seed) < 0.5
    return tf.where(flip[:, None, None, None], tf.reverse(out, axis=[2]), out)


def _check_pipeline_args(x: np.ndarray, y: np.ndarray, batch_size: int) -> None:
    if len(x) == 0 or len(x) != len(y):
        raise DataError(f"need a non-empty dataset with as many labels as images, got {len(x)} and {len(y)}")
    if batch_size <= 0:
        raise DataError(f"batch_size must be positive, got {batch_size}")


def make_train_dataset(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    seed: int,
    augment: bool = True,
    mean: tuple[float, ...] = CIFAR10_MEAN,
    std: tuple[float, ...] = CIFAR10_STD,
    shuffle_buffer: int | None = None,
    drop_remainder: bool = True,
    skip_batches: int = 0,
) -> tf.data.Dataset:
    """Endless, shuffled, augmented training batches ``(float32 (B, 32, 32, 3), int32 (B,))``.

    The order and the augmentation depend only on ``seed``: with ``shuffle_buffer=None`` each epoch is a
    full permutation from a stateless shuffle seeded by (seed, epoch), and batch ``k`` is augmented with
    the stateless seed (seed, k). ``skip_batches=k`` starts exactly where an uninterrupted run's
    ``k``-th batch would start, without computing the skipped batches. An integer ``shuffle_buffer`` uses
    ``tf.data`` shuffling with that buffer instead (also seeded, but resuming replays the skipped indices).
    """
    _check_pipeline_args(x, y, batch_size)
    if skip_batches < 0:
        raise DataError(f"skip_batches must be >= 0, got {skip_batches}")
    n = len(x)
    images = tf.constant(np.asarray(x, np.uint8))
    labels = tf.constant(np.asarray(y, np.int32))
    skip = skip_batches * batch_size  # elements consumed before the first batch
    if shuffle_buffer is None:
        first_epoch, offset = divmod(skip, n)

        def epoch_order(epoch: tf.Tensor) -> tf.data.Dataset:
            perm = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed=[seed, epoch])
            return tf.data.Dataset.from_tensor_slices(perm)

        order = tf.data.Dataset.range(first_epoch, 2**62).flat_map(epoch_order).skip(offset)
    else:
        order = tf.data.Dataset.range(n).shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        order = order.repeat().skip(skip)

    def load(step: tf.Tensor, idx: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        batch = tf.gather(images, idx)
        if augment:
            batch = _augment(batch, tf.stack([tf.constant(seed, tf.int64), step]))
        return normalize(batch, mean, std), tf.gather(labels, idx)

    batches = order.batch(batch_size, drop_remainder=drop_remainder).enumerate(start=skip_batches)
    batches = batches.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return batches.prefetch(tf.data.AUTOTUNE)


def make_eval_dataset(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    mean: tuple[float, ...] = CIFAR10_MEAN,
    std: tuple[float, ...] = CIFAR10_STD,
) -> tf.data.Dataset:
    """One pass of normalised batches ``(float32 (B, 32, 32, 3), int32 (B,))`` in order, remainder kept."""
    _check_pipeline_args(x, y, batch_size)
    ds = tf.data.Dataset.from_tensor_slices((np.asarray(x, np.uint8), np.asarray(y, np.int32))).batch(
        batch_size
    )
    ds = ds.map(
        lambda a, b: (normalize(a, mean, std), b), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    return ds.prefetch(tf.data.AUTOTUNE)
