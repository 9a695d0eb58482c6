"""The LiteRT.js runtime the site ships: `@litertjs/core` from the npm registry, pinned by `npm/package-lock.json`.

`node_modules()` returns a node_modules folder holding the pinned packages: the one given (`--node_modules`), else
a cache folder keyed by the lockfile's sha256 ($DIM_TF_WEB_CACHE, default ~/.cache/dim_tf/web), filled once with
`npm ci` (the lockfile's exact versions and integrity hashes; no install scripts). The page never fetches anything
from a CDN: `copy_into(site)` copies the runtime's ES modules and WebAssembly files into the site.

    python -m dim_tf.web --install_runtime      # fill the cache (CI runs it before the tests)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile

from dim_tf.web import SiteError

HERE = os.path.dirname(os.path.abspath(__file__))
NPM_DIR = os.path.join(HERE, "npm")
PACKAGES = ("@litertjs/core", "@litertjs/wasm-utils")
# What the page needs: the ES modules, and the single-threaded WebAssembly builds (relaxed SIMD, and `compat` for
# browsers without it). The threaded build needs cross-origin isolation headers a plain static server does not
# send, and the JSPI build is only for WebNN / WebGPU partitioning: neither is copied (19 MB saved).
FILES = {
    "@litertjs/core": ["dist/index.js", "wasm/litert_wasm_internal.js", "wasm/litert_wasm_internal.wasm",
                       "wasm/litert_wasm_compat_internal.js", "wasm/litert_wasm_compat_internal.wasm",
                       "package.json", "README.md"],
    "@litertjs/wasm-utils": ["dist/index.js", "package.json"],
}
SITE_DIR = "vendor/litertjs"  # @litertjs/core -> vendor/litertjs/core
WASM_DIR = f"{SITE_DIR}/core/wasm/"


def locked_versions() -> dict[str, str]:
    with open(os.path.join(NPM_DIR, "package-lock.json"), encoding="utf-8") as f:
        lock = json.load(f)
    return {name: lock["packages"][f"node_modules/{name}"]["version"] for name in PACKAGES}


def lock_digest() -> str:
    digest = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        with open(os.path.join(NPM_DIR, name), "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()[:16]


def cache_root() -> str:
    return os.environ.get("DIM_TF_WEB_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "dim_tf", "web")


def missing_or_wrong(folder: str) -> list[str]:
    """What `folder` (a node_modules) lacks of the pinned runtime: [] when it is complete."""
    problems = []
    for name, version in locked_versions().items():
        meta = os.path.join(folder, name, "package.json")
        if not os.path.isfile(meta):
            problems.append(f"{name} is not installed")
            continue
        with open(meta, encoding="utf-8") as f:
            found = json.load(f).get("version")
        if found != version:
            problems.append(f"{name} is {found}, the lockfile pins {version}")
        problems += [f"{name}/{p} is missing" for p in FILES[name] if not os.path.isfile(os.path.join(folder, name, p))]
    return problems


def npm_ci(target: str, log=print) -> None:
    """`npm ci` of the pinned lockfile into target/node_modules (atomically: a failed install leaves nothing)."""
    npm = shutil.which("npm")
    if npm is None:
        raise SiteError("npm is not installed: the site's LiteRT.js runtime comes from the npm registry "
                            "(`apt-get install -y npm`, or pass --node_modules DIR with @litertjs/core "
                            f"{locked_versions()['@litertjs/core']} installed)")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".npm-", dir=os.path.dirname(target))
    try:
        for name in ("package.json", "package-lock.json"):
            shutil.copy(os.path.join(NPM_DIR, name), tmp)
        log(f"npm ci ({', '.join(f'{k} {v}' for k, v in locked_versions().items())}) in {target}")
        proc = subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
                              cwd=tmp, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-10:])
            raise SiteError(f"npm ci failed (exit code {proc.returncode}):\n{tail}")
        problems = missing_or_wrong(os.path.join(tmp, "node_modules"))
        if problems:
            raise SiteError("npm ci did not install the pinned runtime: " + "; ".join(problems))
        if os.path.exists(target):
            shutil.rmtree(target)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def node_modules(folder: str | None = None, log=print) -> str:
    """A node_modules folder with the pinned runtime (see the module doc); installs it into the cache if needed."""
    if folder:
        problems = missing_or_wrong(folder)
        if problems:
            raise SiteError(f"--node_modules {folder}: " + "; ".join(problems))
        return folder
    target = os.path.join(cache_root(), lock_digest())
    installed = os.path.join(target, "node_modules")
    if missing_or_wrong(installed):
        npm_ci(target, log)
    return installed


def copy_into(site: str, folder: str) -> dict:
    """Copies the runtime's files from node_modules `folder` into site/vendor/litertjs; returns their description."""
    copied = []
    for name, files in FILES.items():
        short = name.split("/", 1)[1]
        for rel in files:
            dst = os.path.join(site, SITE_DIR, short, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copyfile(os.path.join(folder, name, rel), dst)
            copied.append(f"{SITE_DIR}/{short}/{rel}")
    versions = locked_versions()
    return {"package": "@litertjs/core", "version": versions["@litertjs/core"], "versions": versions,
            "license": "Apache-2.0", "wasm_dir": WASM_DIR, "accelerator": "wasm (XNNPACK), single-threaded",
            "files": copied, "lockfile_sha256_16": lock_digest()}
