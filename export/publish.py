"""Publishing a bundle atomically: it is built in a hidden folder beside its destination (`staging`) and renamed into
place only once verified (`publish`); on any failure the hidden folder, and any parent folders the export created,
are removed again, so nothing is left behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

from dim_tf import lite
from dim_tf.export import ExportError


def check_destination(out: str, overwrite: bool) -> None:
    """Refuses an existing `out` unless `overwrite` (checked again when publishing)."""
    if os.path.exists(out) and not overwrite:
        raise ExportError(f"{out} already exists; pass --overwrite to replace it")


@contextlib.contextmanager
def staging(out: str):
    """A hidden, empty folder beside `out` (an absolute path) to build the bundle in; on an exception it and the
    parent folders created for it are removed."""
    parent = os.path.dirname(out)
    created = []  # folders this export creates above the bundle, deepest first (removed again on failure)
    folder = parent
    while not os.path.exists(folder):
        created.append(folder)
        folder = os.path.dirname(folder)
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.tmp-", dir=parent)
    except OSError as e:
        raise ExportError(f"cannot write beside {out} ({e.strerror}); pick another --out") from e
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; a published bundle gets the usual permissions
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in created:
            with contextlib.suppress(OSError):
                os.rmdir(folder)
        raise


def publish(tmp: str, out: str, overwrite: bool) -> None:
    """Renames the verified bundle folder `tmp` to `out`; replaces an existing bundle (never another folder) only
    with `overwrite`."""
    if not os.path.exists(out):
        os.rename(tmp, out)
        return
    if not overwrite:
        raise ExportError(f"{out} already exists; pass --overwrite to replace it")
    if not os.path.isfile(os.path.join(out, lite.BUNDLE_JSON)):
        raise ExportError(f"{out} exists and is not a bundle (no {lite.BUNDLE_JSON}); refusing to replace it")
    old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-", dir=os.path.dirname(out))
    os.rename(out, os.path.join(old, "bundle"))
    os.rename(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
