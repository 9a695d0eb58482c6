"""The IDX loader, the splits and the source order."""

import gzip
import os
import struct

import numpy as np
import pytest

from dim_tf import data


def _write_idx(path, magic, dims, payload: bytes, compress=True):
    raw = struct.pack(">i", magic) + struct.pack(">" + "i" * len(dims), *dims) + payload
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(raw)


def _fake_folder(tmp_path, n_train=60000, n_test=10000, compress=True, **overrides):
    suffix = ".gz" if compress else ""
    specs = {"train-images-idx3-ubyte": (2051, (n_train, 28, 28)), "train-labels-idx1-ubyte": (2049, (n_train,)),
             "t10k-images-idx3-ubyte": (2051, (n_test, 28, 28)), "t10k-labels-idx1-ubyte": (2049, (n_test,))}
    for stem, (magic, dims) in specs.items():
        magic, dims, payload = overrides.get(stem, (magic, dims, bytes(int(np.prod(dims)))))
        _write_idx(tmp_path / (stem + suffix), magic, dims, payload, compress)
    return str(tmp_path)


def test_real_mnist_splits_and_ranges(mnist):
    assert (len(mnist.train), len(mnist.validation), len(mnist.test)) == (55000, 5000, 10000)
    for split in (mnist.train, mnist.validation, mnist.test):
        assert split.images.dtype == np.float32 and split.images.shape[1:] == (28, 28, 1)
        assert split.images.min() == 0.0 and split.images.max() == 1.0
        assert split.labels.dtype == np.int32
    assert np.bincount(mnist.test.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    full_train_mean = np.concatenate([mnist.train.images, mnist.validation.images]).mean()
    assert abs(full_train_mean - 0.1307) < 1e-3


def test_plain_idx_files_load(tmp_path):
    ds = data.load("mnist", _fake_folder(tmp_path, compress=False))
    assert len(ds.test) == 10000 and ds.train.images.max() == 0.0


@pytest.mark.parametrize("override, message", [
    ({"t10k-images-idx3-ubyte": (2049, (10000, 28, 28), bytes(10000 * 784))}, "magic number 2049"),
    ({"t10k-labels-idx1-ubyte": (2049, (10000,), bytes(9000))}, "truncated"),
    ({"t10k-images-idx3-ubyte": (2051, (10000, 27, 28), bytes(10000 * 27 * 28))}, "header says shape"),
    ({"t10k-labels-idx1-ubyte": (2049, (10000,), bytes([11]) * 10000)}, "outside 0..9"),
])
def test_corrupt_idx_is_a_clear_error(tmp_path, override, message):
    folder = _fake_folder(tmp_path, **override)
    with pytest.raises(data.DataError, match=message):
        data.load("mnist", folder)


def test_truncated_gzip_is_a_clear_error(tmp_path):
    folder = _fake_folder(tmp_path)
    path = os.path.join(folder, "t10k-images-idx3-ubyte.gz")
    with open(path, "rb") as f:
        head = f.read(100)
    with open(path, "wb") as f:
        f.write(head)
    with pytest.raises(data.DataError, match="not a readable"):
        data.load("mnist", folder)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(data.DataError, match="not found"):
        data.load("mnist", str(tmp_path))
    with pytest.raises(data.DataError, match="does not exist"):
        data.load("mnist", str(tmp_path / "nope"))
    with pytest.raises(data.DataError, match="unknown dataset"):
        data.load("cifar10", str(tmp_path))


def test_env_variable_is_used_after_the_flag(tmp_path, monkeypatch, mnist_folder):
    monkeypatch.setenv(data.DATA_DIR_ENV, mnist_folder)
    assert data.resolve_data_dir(None) == mnist_folder
    assert data.resolve_data_dir(str(tmp_path)) == str(tmp_path)


def test_tfds_failure_names_both_ways_out(monkeypatch):
    import tensorflow_datasets as tfds

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(tfds, "load", offline)
    with pytest.raises(data.DataError, match="--data_dir.*DIM_TF_DATA_DIR.*network access"):
        data.load("mnist", None)


def test_take_and_pipeline(mnist):
    small = mnist.train.take(300)
    assert len(small) == 300
    with pytest.raises(data.DataError, match="holds 55000"):
        mnist.train.take(60001)
    batches = list(data.pipeline(small, 128, shuffle_seed=1, drop_remainder=True))
    assert len(batches) == 2 and batches[0][0].shape == (128, 28, 28, 1)
    again = list(data.pipeline(small, 128, shuffle_seed=1, drop_remainder=True))
    np.testing.assert_array_equal(batches[0][1], again[0][1])
