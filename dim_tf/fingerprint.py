"""What identifies a trained model: a hash of its weights' values, not of the file's bytes.

Training is deterministic on this stack (the default DIM reproduced 98.08% / 97.10% on four fresh machines), so a
model retrained from the same settings has the same fingerprint; results computed on it (attack cells in
eval/results/) stay valid for the retrained model, and a mismatch says the model changed."""

from __future__ import annotations

import hashlib

import numpy as np


def weights_fingerprint(model) -> str:
    """sha256 (first 16 hex digits) over every weight's shape and float32 bytes, in the model's order. Independent
    of the file format, of where the model was saved or loaded and of the layer names Keras numbers per process
    (`conv2d_3` when other models were built before), which is why the weights' paths are left out."""
    digest = hashlib.sha256()
    for weight in model.weights:
        value = np.ascontiguousarray(np.asarray(weight.numpy(), dtype=np.float32))
        digest.update(f"{value.shape};".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()[:16]
