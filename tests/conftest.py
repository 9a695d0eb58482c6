"""Shared test fixtures: the real MNIST folder (from DIM_TF_DATA_DIR or ../shared/data/mnist)."""

import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def mnist_dir() -> str | None:
    for candidate in (os.environ.get("DIM_TF_DATA_DIR"), os.path.join(REPO, "..", "shared", "data", "mnist")):
        if candidate and os.path.exists(os.path.join(candidate, "train-images-idx3-ubyte.gz")):
            return candidate
    return None


@pytest.fixture(scope="session")
def mnist_folder():
    folder = mnist_dir()
    if folder is None:
        pytest.fail("real MNIST IDX files not found: set DIM_TF_DATA_DIR to a folder holding them")
    return folder


@pytest.fixture(scope="session")
def mnist(mnist_folder):
    from dim_tf import data

    return data.load("mnist", mnist_folder)


@pytest.fixture
def no_work(monkeypatch):
    """Fails the test if an evaluation touches the model, the data or the attack (bad input must be refused first)."""

    def forbidden(*_, **__):
        raise AssertionError("work started before the input was checked")

    monkeypatch.setattr("dim_tf.model_dir.load", forbidden)
    monkeypatch.setattr("dim_tf.data.load", forbidden)
    monkeypatch.setattr("dim_tf.eval.runner.benchmark", forbidden)
