"""Where a bundle may be published: the destination is checked before any work (`check_destination`); the bundle
is then built in a hidden folder beside it and renamed into place only once verified (`dim_tf.model_dir.
atomic_folder`), so a failed export leaves nothing behind."""

from __future__ import annotations

import os

from dim_tf import lite
from dim_tf.export import ExportError


def check_destination(out: str, overwrite: bool) -> None:
    """Refuses an existing `out` unless `overwrite`, and never replaces a folder that is not a bundle."""
    if not os.path.exists(out):
        return
    if not overwrite:
        raise ExportError(f"{out} already exists; pass --overwrite to replace it")
    if not os.path.isfile(os.path.join(out, lite.BUNDLE_JSON)):
        raise ExportError(f"{out} exists and is not a bundle (no {lite.BUNDLE_JSON}); refusing to replace it")
