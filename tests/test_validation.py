"""Bad images are clear errors, never silently used."""

import numpy as np
import pytest

from dim_tf.validation import InputError, check_images, check_labels


def test_good_images_pass():
    x = np.random.default_rng(0).uniform(size=(2, 28, 28, 1))
    assert check_images(x).dtype == np.float32


@pytest.mark.parametrize("images, message", [
    (np.zeros((2, 28, 28)), r"x\[\.\.\., None\]"),
    (np.zeros((2, 32, 32, 3)), "shape"),
    (np.full((2, 28, 28, 1), 255, np.uint8), "divide by 255|x / 255"),
    (np.full((2, 28, 28, 1), 200.0), "0..255"),
    (np.full((2, 28, 28, 1), -0.1), r"\[0, 1\]"),
    (np.full((2, 28, 28, 1), np.nan), "NaN"),
])
def test_bad_images_are_named(images, message):
    with pytest.raises(InputError, match=message):
        check_images(images)


def test_labels():
    assert check_labels([1, 2], 2).tolist() == [1, 2]
    with pytest.raises(InputError):
        check_labels([1, 10], 2)
    with pytest.raises(InputError):
        check_labels([1.0, 2.0], 2)
