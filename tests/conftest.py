"""Shared test fixtures and helpers: the real MNIST folder (from DIM_TF_DATA_DIR or ../shared/data/mnist), a tiny
trained CNN, finished-looking model folders, evaluation settings parsed as the CLI parses them. Test modules import
the helpers from here (`from conftest import ...`), never from each other."""

import os
import re

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
    monkeypatch.setattr("dim_tf.eval.attack_run.run_attack", forbidden)


@pytest.fixture(scope="session")
def tiny_cnn(mnist):
    """A small undefended CNN, ~250 Adam steps on 4000 real MNIST images (a few seconds on 2 cores)."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(16, 3, strides=2, activation="relu"),
        keras.layers.Conv2D(32, 3, strides=2, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(10),
    ])
    model.compile(keras.optimizers.Adam(2e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(mnist.train.images[:4000], mnist.train.labels[:4000], batch_size=32, epochs=2, verbose=0)
    return model


def save_model_dir(folder, name, data_source, train=None):
    """A minimal finished run: model.keras + manifest.json (what dim_tf.model_dir.load needs)."""
    import keras

    from dim_tf import model_dir as md, registry

    keras.utils.set_random_seed(0)
    model = registry.build(registry.TrainConfig(model=name))
    if train is not None:  # a few plain-Keras steps, so that some test images are classified right
        model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(*train, batch_size=50, epochs=1, verbose=0)
    os.makedirs(folder, exist_ok=True)
    md.save_model(model, str(folder))
    md.write_json(os.path.join(folder, md.MANIFEST), {"model": name, "dataset": "mnist", "data_source": data_source,
                                                      "seed": 0, "test_accuracy": {}})
    return str(folder)


def eval_settings(*args):
    """`python -m dim_tf.eval ARGS` as the library gets it: the flags parsed by the CLI, as an `EvalSettings`."""
    from absl import flags

    from dim_tf.eval import cli

    fv = flags.FlagValues()
    cli.define_flags(fv)
    fv(["dim_tf.eval", *args])
    return cli.settings_from(fv)


def untrained_model_dir(folder: str, name: str, data_source: str) -> str:
    """An untrained `name` model saved as a finished model folder (model.keras + manifest.json, what model_dir.load
    reads)."""
    import dataclasses

    import keras

    from dim_tf import model_dir as md, registry

    keras.utils.set_random_seed(0)
    cfg = registry.TrainConfig(model=name)
    model = registry.build(cfg)
    os.makedirs(folder)
    md.save_model(model, folder)
    md.write_json(os.path.join(folder, md.MANIFEST), {
        "model": name, "dataset": "mnist", "data_source": data_source, "config": dataclasses.asdict(cfg),
        "model_config": model.get_config(), "test_accuracy": {name: None, registry.BI_VARIANTS[name]: None}})
    return folder


# An absolute path in a report: /a/b (two parts at least) at the start of a string, after a space, a quote, a
# backtick, a parenthesis, '=', ',' or '['; `L2/L-inf` or `distance/accuracy` are not.
ABSOLUTE_PATH = re.compile(r"""(?:^|[\s"'`(=,\[])(/(?:[\w.+-]+/)+[\w.+-]+)""")


def absolute_paths(text: str, *roots: str) -> list[str]:
    """The absolute paths in a report's text, and any of `roots` (e.g. the test's tmp_path, the current folder)
    that appears in it other than inside a relative path (../../tmp/x holds /tmp/x)."""
    return ABSOLUTE_PATH.findall(text) + [r for r in roots if re.search(r"(?<![\w.])" + re.escape(r), text)]
