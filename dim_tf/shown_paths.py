"""How a file that others read (a report, a bundle's metadata, a site's index) records a path: never absolute.
Reports are committed and bundles shipped to devices; /work/main/runs/dim says nothing on another machine (and
names this one), runs/dim does."""

from __future__ import annotations

import os


def shown_path(path: str) -> str:
    """`path` relative to the current folder (normalised if it already was relative)."""
    if not os.path.isabs(path):
        return os.path.normpath(path)
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return os.path.basename(os.path.normpath(path))


def shown_source(source: str | None) -> str | None:
    """A dataset's source as recorded: a local folder by `shown_path`, anything else (a tensorflow-datasets name)
    unchanged."""
    return shown_path(source) if source and os.path.isabs(source) else source
