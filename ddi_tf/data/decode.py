"""Decoding: CIFAR's python pickles (a restricted unpickler) and image-folder trees (JPEG/PNG, in a folder or a
tar archive) into ``CifarData``, validated."""

from __future__ import annotations

import io
import pickle
import tarfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image
from tqdm import tqdm

from ddi_tf.data.common import (
    _IMAGE_EXTS,
    _PICKLE_DIR,
    _PICKLE_LAYOUT,
    _PICKLE_NAMES,
    _SPLITS,
    CIFAR10_CLASSES,
    DATASETS,
    IMAGE_SHAPE,
    CifarData,
    DataError,
    _hint,
    _mismatch,
)


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
