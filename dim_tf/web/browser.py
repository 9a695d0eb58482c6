"""The site in a real browser: `python -m http.server` on 127.0.0.1 and the system's Chromium, headless, driven by
Python Playwright (`pip install playwright`; `playwright install` is never needed: the browser is Debian's
`chromium` package, or $DIM_TF_CHROMIUM). Used by `python -m dim_tf.web --check`, `dim_tf.web.benchmark` and
tests/test_web.py.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from dim_tf.web import SiteError

# Headless, and quiet on the network: without the background-networking flags Chromium opens connections of its
# own (component updates, sync) that this machine refuses.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-default-apps", "--disable-extensions", "--mute-audio"]
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str:
    """The Chromium executable: $DIM_TF_CHROMIUM, else the first of `CANDIDATES` on PATH."""
    explicit = os.environ.get("DIM_TF_CHROMIUM")
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise SiteError(f"$DIM_TF_CHROMIUM={explicit} is not an executable")
        return explicit
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    raise SiteError("no Chromium found (apt-get install -y chromium, or set $DIM_TF_CHROMIUM)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(site: str, timeout: float = 20.0):
    """`python -m http.server` (the documented way to open the site) serving `site`; yields its base URL."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                             "--directory", site], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL)
    try:
        deadline = time.time() + timeout
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
            if proc.poll() is not None or time.time() > deadline:
                raise SiteError(f"python -m http.server did not start on port {port}")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def chromium():
    """A headless Chromium (Playwright `Browser`) with a fresh profile, closed afterwards."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        raise SiteError("driving the browser needs Playwright: pip install playwright (or pip install -e "
                        "'.[web]'); no browser download is needed, the system's Chromium is used") from e
    executable = find_chromium()
    with tempfile.TemporaryDirectory(prefix="dim_tf_chromium-") as profile, sync_playwright() as p:
        context = p.chromium.launch_persistent_context(profile, executable_path=executable, headless=True,
                                                       args=CHROMIUM_ARGS, viewport={"width": 1360, "height": 900},
                                                       has_touch=True)
        try:
            yield context
        finally:
            context.close()


class Page:
    """A page of the site, its console messages and page errors collected (`errors()`: what a user never sees
    but should not happen)."""

    def __init__(self, context, url: str):
        self.page = context.new_page()
        self.console: list[tuple[str, str]] = []
        self.page_errors: list[str] = []
        self.failed_requests: list[str] = []
        self.requests: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("console", lambda m: self.console.append((m.type, m.text)))
        self.page.on("pageerror", lambda e: self.page_errors.append(str(e)))
        self.page.on("requestfailed", lambda r: self.failed_requests.append(r.url))
        self.started = time.perf_counter()
        self.page.goto(url)

    def wait(self, timeout_ms: float = 60000) -> str:
        """Waits until the page is ready or has failed; returns body[data-state] ("ready" or "error")."""
        self.page.wait_for_function("['ready', 'error'].includes(document.body.dataset.state)", timeout=timeout_ms)
        return self.page.evaluate("document.body.dataset.state")

    def errors(self) -> list[str]:
        return ([f"console.{t}: {text}" for t, text in self.console if t == "error"] +
                [f"page error: {e}" for e in self.page_errors] + [f"request failed: {u}" for u in self.failed_requests])

    def call(self, expression: str, *args):
        """Awaits `expression` (a function of the page's `window.dimweb` API, e.g. "(d, i) => d.loadDigit(i)")."""
        return self.page.evaluate(f"async (args) => {{ const f = {expression}; return await f(window.dimweb, ...args); }}",
                                  list(args))

    def status(self) -> str:
        return self.page.inner_text("#status")


def check_site(site: str, log=print, context=None) -> dict:
    """Opens the site headless, loads every model file in the page and runs each once; raises SiteError with the
    page's own message when anything fails. Returns the load times the page measured. `context`: a browser from
    `chromium()` to reuse (Playwright's sync API runs one at a time)."""
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(serve(site))
        context = context or stack.enter_context(chromium())
        page = Page(context, url)
        state = page.wait()
        if state != "ready":
            raise SiteError(f"the page failed in Chromium: {page.status()}")
        models = page.call("(d) => d.state.site.models.map((m) => [m.id, !!m.files.float])")
        try:
            for model_id, has_float in models:
                page.call("(d, id) => d.selectModel(id)", model_id)
                if has_float:
                    page.call("(d) => d.selectPrecision('float')")
                    page.call("(d) => d.selectPrecision('quantized')")
        except Exception as e:  # the page rejected: its status line says why
            raise SiteError(f"the page failed in Chromium: {page.status()}") from e
        problems = page.errors()
        state = page.page.evaluate("document.body.dataset.state")
        if state != "ready" or problems:
            raise SiteError(f"the page failed in Chromium: {page.status()}" +
                            ("".join(f"\n  {p}" for p in problems)))
        times = page.call("(d) => d.loadTimes")
        page.page.close()
        log(f"checked in {os.path.basename(find_chromium())}: {len(models)} model(s) load and run; ready in "
            f"{times['ready'] / 1000:.2f} s")
        return times
