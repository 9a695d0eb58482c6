"""dim_tf: Denoised Internal Models (DIM, biDIM), their ablations and baselines in Keras/TensorFlow."""

import sys as _sys

__version__ = "0.1.0"

if _sys.argv[:1] == ["-m"]:  # Python is locating a `python -m dim_tf....` program: quiet its start (not on import)
    from dim_tf import console as _console

    _console.startup()
