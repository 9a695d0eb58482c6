"""MNIST / Fashion-MNIST as NumPy arrays and `tf.data` pipelines.

Images are NHWC float32 in [0, 1] with shape [N, 28, 28, 1]; labels are int32 in [0, 9].
Sources, in order: an explicit `data_dir`, the env `DIM_TF_DATA_DIR` (a folder with the four LeCun IDX
files, `.gz` or plain), then tensorflow-datasets. A local folder never touches the network; without one, and
with nothing in tensorflow-datasets' cache, an unreachable download host is an error within seconds.
The validation split is the last `VALIDATION_SIZE` training images (fixed, never shuffled in).
"""

from __future__ import annotations

import dataclasses
import glob
import gzip
import os
import socket
import struct
import threading
import urllib.parse
import urllib.request

import numpy as np

DATASETS = ("mnist", "fashion_mnist")
DATA_DIR_ENV = "DIM_TF_DATA_DIR"
VALIDATION_SIZE = 5000
IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10
_IMAGE_MAGIC = 2051
_LABEL_MAGIC = 2049
# Where tensorflow-datasets downloads from; probed first (PROBE_SECONDS) so that an offline start fails fast.
DOWNLOAD_URLS = {"mnist": "https://storage.googleapis.com/cvdf-datasets/mnist/",
                 "fashion_mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"}
PROBE_SECONDS = 3.0
_SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10000),
}
TEST_SIZE = _SPLIT_FILES["test"][2]  # images in the test split


class DataError(ValueError):
    """A data source is missing, corrupt or unreachable; the message names the fix."""


@dataclasses.dataclass(frozen=True)
class Split:
    """One split: `images` float32 [N, 28, 28, 1] in [0, 1], `labels` int32 [N]."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, n: int | None) -> "Split":
        """The first `n` examples (all when `n` is None)."""
        if n is None:
            return self
        if n <= 0 or n > len(self):
            raise DataError(f"asked for {n} examples but the split holds {len(self)}; pick 1..{len(self)}")
        return Split(self.images[:n], self.labels[:n])


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Train (first 55k), validation (last 5k of the official train set) and test splits."""

    name: str
    source: str
    train: Split
    validation: Split
    test: Split


def _open_idx(folder: str, stem: str) -> tuple[str, bytes]:
    """(the path read, its bytes) of `stem`.gz or `stem` in `folder`."""
    for name in (stem + ".gz", stem):
        path = os.path.join(os.path.abspath(folder), name)
        if os.path.exists(path):
            try:
                if name.endswith(".gz"):
                    with gzip.open(path, "rb") as f:
                        return path, f.read()
                with open(path, "rb") as f:
                    return path, f.read()
            except (OSError, EOFError, gzip.BadGzipFile) as e:
                raise DataError(f"{path} is not a readable (gzipped) IDX file ({e}); replace it with the original") from e
    raise DataError(f"{os.path.join(folder, stem)}[.gz] not found; the folder must hold the four LeCun IDX files")


def parse_idx(raw: bytes, magic: int, dims: tuple[int, ...], what: str) -> np.ndarray:
    """Parses an IDX byte string, checking its magic number, dimensions and length.

    `dims` are the expected sizes (count first); returns uint8 of that shape.
    """
    ndim = len(dims)
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{what}: {len(raw)} bytes is too short for an IDX header; the file is truncated")
    (got_magic,) = struct.unpack(">i", raw[:4])
    if got_magic != magic:
        raise DataError(f"{what}: magic number {got_magic}, expected {magic}; wrong or corrupt file")
    got_dims = struct.unpack(">" + "i" * ndim, raw[4:header])
    if tuple(got_dims) != tuple(dims):
        raise DataError(f"{what}: header says shape {got_dims}, expected {dims}")
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise DataError(f"{what}: {len(raw) - header} data bytes, expected {expected}; the file is truncated or padded")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def load_idx_split(folder: str, split: str) -> Split:
    """Reads one split ("train" or "test") from a folder of LeCun IDX files."""
    image_stem, label_stem, count = _SPLIT_FILES[split]
    image_path, raw_images = _open_idx(folder, image_stem)
    images = parse_idx(raw_images, _IMAGE_MAGIC, (count, 28, 28), image_path)
    label_path, raw_labels = _open_idx(folder, label_stem)
    labels = parse_idx(raw_labels, _LABEL_MAGIC, (count,), label_path)
    if labels.max() >= NUM_CLASSES:
        raise DataError(f"{label_path}: label {labels.max()} is outside 0..9; wrong or corrupt file")
    return Split(images[..., None].astype(np.float32) / 255.0, labels.astype(np.int32))


def _tfds_cached(name: str) -> bool:
    """Whether tensorflow-datasets has `name` prepared in its data folder ($TFDS_DATA_DIR or ~/tensorflow_datasets)."""
    root = os.environ.get("TFDS_DATA_DIR") or os.path.join(os.path.expanduser("~"), "tensorflow_datasets")
    return bool(glob.glob(os.path.join(root, name, "*", "dataset_info.json")))


def unreachable(url: str, timeout: float | None = None) -> str | None:
    """None if a TCP connection to `url`'s host (or to the configured proxy) opens within `timeout` seconds
    (default `PROBE_SECONDS`), else why not. Runs in a thread, so that a name lookup that hangs cannot hold the
    caller longer either."""
    timeout = PROBE_SECONDS if timeout is None else timeout
    target = urllib.parse.urlparse(url)
    proxy = urllib.request.getproxies().get(target.scheme)
    if proxy and not urllib.request.proxy_bypass(target.hostname):
        target = urllib.parse.urlparse(proxy if "://" in proxy else "http://" + proxy)
    host, port = target.hostname, target.port or (443 if target.scheme == "https" else 80)
    outcome = []

    def probe():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as e:
            outcome.append(f"cannot reach {host}:{port}: {e.strerror or e}")

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return outcome[0] if outcome else f"no answer from {host}:{port} within {timeout:g} s"


def _load_tfds(name: str, data_dir: str | None) -> tuple[Split, Split]:
    offline = None if _tfds_cached(name) else unreachable(DOWNLOAD_URLS.get(name, DOWNLOAD_URLS["mnist"]))
    if offline:  # fail in seconds: tensorflow-datasets would retry the download for minutes
        raise DataError(_tfds_failure(name, f"offline? {offline}"))
    try:
        import tensorflow_datasets as tfds

        splits = tfds.as_numpy(tfds.load(name, split=["train", "test"], batch_size=-1, as_supervised=True,
                                         data_dir=data_dir))
    except Exception as e:  # tfds raises many kinds of errors when offline
        raise DataError(_tfds_failure(name, f"{type(e).__name__}: {e}")) from e
    return tuple(Split(x.astype(np.float32) / 255.0, y.astype(np.int32)) for x, y in splits)


def _tfds_failure(name: str, reason: str) -> str:
    return (f"tensorflow-datasets could not load {name!r} ({reason}). Either give a folder with the four LeCun IDX "
            f"files via --data_dir or ${DATA_DIR_ENV}, or run once with network access so that tensorflow-datasets "
            "can download and cache it.")


def resolve_data_dir(data_dir: str | None) -> str | None:
    """The local IDX folder to use: the flag, then the env variable, else None (use tfds)."""
    return data_dir or os.environ.get(DATA_DIR_ENV) or None


def data_dir_for(data_dir: str | None, manifest: dict) -> str | None:
    """The data folder for a trained model: `data_dir` (a --data_dir flag), else ${DIM_TF_DATA_DIR}, else the local
    folder the model was trained from (its manifest's data_source, if it still exists), else None
    (tensorflow-datasets)."""
    chosen = resolve_data_dir(data_dir)
    if chosen:
        return chosen
    source = manifest.get("data_source")
    if isinstance(source, str) and os.path.isdir(source):
        return source
    return None


def load(name: str = "mnist", data_dir: str | None = None) -> Dataset:
    """Loads a dataset; see the module docstring for the order of sources."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    folder = resolve_data_dir(data_dir)
    if folder:
        where, fix = "", "pass a folder with the four LeCun IDX files"
        if folder == os.environ.get(DATA_DIR_ENV):  # named by the environment (callers may pass its value on)
            where = f" (from ${DATA_DIR_ENV})"
            fix = f"set ${DATA_DIR_ENV} to a folder with the four LeCun IDX files, or unset it"
        if not os.path.exists(folder):
            raise DataError(f"data folder {folder!r}{where} does not exist; {fix}")
        if not os.path.isdir(folder):
            raise DataError(f"data folder {folder!r}{where} is a file, not a folder; {fix}")
        try:
            train, test = load_idx_split(folder, "train"), load_idx_split(folder, "test")
        except DataError as e:
            if not where:
                raise
            raise DataError(f"{e} (the folder comes from ${DATA_DIR_ENV}; fix or unset it)") from e
        source = os.path.abspath(folder)
    else:
        train, test = _load_tfds(name, None)
        source = "tensorflow-datasets"
    cut = len(train) - VALIDATION_SIZE
    return Dataset(name, source, Split(train.images[:cut], train.labels[:cut]),
                   Split(train.images[cut:], train.labels[cut:]), test)


def pipeline(split: Split, batch_size: int, shuffle_seed: int | None = None, drop_remainder: bool = False):
    """A `tf.data.Dataset` of (images, labels) batches; shuffled with `shuffle_seed` when given."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((split.images, split.labels))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(split), seed=shuffle_seed, reshuffle_each_iteration=False)
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
