"""Where the data comes from: ``--data_dir`` (a folder or an archive, found by its layout), the Keras cache or a
download, and the decoded-array cache beside it (fingerprinted, written atomically)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import time
from pathlib import Path

import numpy as np
from absl import logging

from ddi_tf.data.common import (
    _ARCHIVE_EXTS,
    _PICKLE_DIR,
    CIFAR10_CLASSES,
    CifarData,
    DataError,
    _check_dataset,
    _hint,
    _mismatch,
)
from ddi_tf.data.decode import _decode_source, _pickle_kind, _validate

_CACHE_VERSION = 2  # of the decoded-array cache; a cache of another version is decoded again


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
