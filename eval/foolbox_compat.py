"""foolbox 3.3.4 (the paper's attack library) made importable and usable on NumPy 2.

eagerpy 0.30.0, foolbox's tensor layer, calls `np.find_common_type` whenever a TensorFlow op mixes dtypes; NumPy 2
removed it (`np.result_type` is its replacement). Importing this module supplies the function when it is missing
and returns foolbox; nothing else in foolbox or eagerpy is changed. Import foolbox only through here.
"""

from __future__ import annotations

import numpy as np


def _find_common_type(array_types, scalar_types):
    """NumPy 1's `find_common_type` for what eagerpy passes (array dtypes only, no scalar types)."""
    return np.result_type(*array_types, *scalar_types)


if not hasattr(np, "find_common_type"):
    np.find_common_type = _find_common_type

import eagerpy  # noqa: E402  (after the shim)
import foolbox  # noqa: E402

__all__ = ["eagerpy", "foolbox"]
