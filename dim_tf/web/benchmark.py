"""`python -m dim_tf.web.benchmark SITE [--calls 200] [--loads 3] [--output FILE.json]`: the page against
`dim_tf.lite` on the same machine.

  * page load: a fresh headless Chromium (empty cache) per load, from navigation to the page's "ready" (LiteRT.js
    fetched and instantiated, the first model and its picture companion fetched, compiled and run, test digit 0
    shown), served by `python -m http.server` on 127.0.0.1; median of --loads;
  * per-image latency in the browser: the page's own timer around one model call (LiteRT.js `run` plus reading
    the outputs; WebAssembly, single-threaded XNNPACK), median of --calls after 5 warm-up calls, per model and
    file (int8 model.tflite, float32 model_float.tflite), on test digit 0; the browser's clock is coarsened to
    0.1 ms, so the mean over the same calls (one clock pair around all) is given too;
  * the same in Python: `dim_tf.lite` on the bundle's original files, 1 thread (the interpreter call alone, and
    `Bundle.predict` end to end), median of --calls on the same image;
  * the site's size on disk, by part.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

from dim_tf import lite
from dim_tf.shown_paths import shown_path
from dim_tf.web import SiteError, browser, builder


def _size(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(r, n)) for r, _, names in os.walk(folder) for n in names)


def site_sizes(site: str) -> dict:
    total = _size(site)
    runtime = _size(os.path.join(site, "vendor"))
    models = {m: _size(os.path.join(site, "models", m)) for m in sorted(os.listdir(os.path.join(site, "models")))}
    return {"total_bytes": total, "runtime_bytes": runtime, "models_bytes": models,
            "page_and_digits_bytes": total - runtime - sum(models.values())}


def page_loads(site: str, loads: int, log) -> list[dict]:
    out = []
    with browser.serve(site) as url:
        for i in range(loads):
            with browser.chromium() as context:
                t0 = time.perf_counter()
                page = browser.Page(context, url)
                state = page.wait()
                wall = time.perf_counter() - t0
                if state != "ready":
                    raise SiteError(f"the page failed: {page.status()}")
                times = page.call("(d) => d.loadTimes")
                nav = page.page.evaluate("performance.getEntriesByType('navigation')[0].toJSON()")
                out.append({"wall_seconds": wall, "page_ready_ms": times["ready"] + nav.get("domInteractive", 0),
                            "module_to_ready_ms": times["ready"], "runtime_ms": times["runtime"],
                            "errors": page.errors()})
                log(f"load {i + 1}: {wall:.2f} s to ready (page: {out[-1]['page_ready_ms'] / 1000:.2f} s)")
    return out


def browser_latency(site: str, calls: int, log) -> dict:
    out = {}
    with browser.serve(site) as url, browser.chromium() as context:
        page = browser.Page(context, url)
        if page.wait() != "ready":
            raise SiteError(f"the page failed: {page.status()}")
        for model_id in page.call("(d) => d.state.site.models.map((m) => m.id)"):
            page.call("(d, id) => d.selectModel(id)", model_id)
            page.call("(d) => d.loadDigit(0)")
            out[model_id] = page.call("(d, n) => d.benchmark(n)", calls)
            log(f"browser {model_id}: " + ", ".join(f"{r['file']} {r['median_ms']:.3f} ms" for r in out[model_id].values()))
    return out


def lite_latency(bundle: str, image: np.ndarray, calls: int) -> dict:
    out = {}
    meta = lite.read_meta(bundle)
    for which in lite.MODELS:
        if not meta["models"].get(which):
            continue
        b = lite.load_bundle(bundle, which, num_threads=1)
        x = b.prepare(image)
        for _ in range(5):
            b.runner(x)
            b.predict(image)
        invoke, predict = [], []
        for _ in range(calls):
            t = time.perf_counter()
            b.runner(x)
            invoke.append((time.perf_counter() - t) * 1e3)
        for _ in range(calls):
            t = time.perf_counter()
            b.predict(image)
            predict.append((time.perf_counter() - t) * 1e3)
        out[which] = {"file": meta["models"][which], "calls": calls, "median_ms": statistics.median(invoke),
                      "predict_median_ms": statistics.median(predict)}
    return out


def run(site: str, calls: int = 200, loads: int = 3, log=print) -> dict:
    meta = builder.load_site(site)
    sizes = site_sizes(site)
    log(f"site {site}: {sizes['total_bytes'] / 1e6:.1f} MB (LiteRT.js {sizes['runtime_bytes'] / 1e6:.1f} MB)")
    loads_out = page_loads(site, loads, log)
    in_browser = browser_latency(site, calls, log)
    image = lite.load_image(os.path.join(site, meta["digits"][0]["file"])) if meta["digits"] else \
        np.zeros((28, 28, 1), np.uint8)
    in_python = {}
    for m in meta["models"]:  # site.json names each bundle relative to the folder the site was built from
        in_python[m["id"]] = lite_latency(m["bundle"], image, calls)
        log(f"dim_tf.lite {m['id']}: " + ", ".join(f"{r['file']} {r['median_ms']:.3f} ms" for r in in_python[m["id"]].values()))
    return {"site": shown_path(site), "calls": calls, "sizes": sizes, "loads": loads_out,
            "load_median_seconds": statistics.median(l["wall_seconds"] for l in loads_out),
            "browser": in_browser, "dim_tf_lite": in_python, "chromium": browser.find_chromium(),
            "cpu_count": os.cpu_count(), "load_average": os.getloadavg(),
            "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def table(result: dict) -> str:
    rows = ["| model | file | browser (LiteRT.js wasm) median / mean ms | dim_tf.lite invoke median ms | "
            "dim_tf.lite predict() median ms |", "|---|---|---|---|---|"]
    for model_id, files in result["browser"].items():
        for which, r in files.items():
            p = result["dim_tf_lite"][model_id][which]
            rows.append(f"| {model_id} | {r['file']} | {r['median_ms']:.2f} / {r['mean_ms']:.3f} | "
                        f"{p['median_ms']:.3f} | {p['predict_median_ms']:.3f} |")
    s = result["sizes"]
    rows.append("")
    rows.append(f"page load to ready (fresh browser, median of {len(result['loads'])}): "
                f"{result['load_median_seconds']:.2f} s; site {s['total_bytes'] / 1e6:.1f} MB (LiteRT.js "
                f"{s['runtime_bytes'] / 1e6:.1f} MB, " + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in
                                                                  s["models_bytes"].items()) + ")")
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dim_tf.web.benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("site")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--loads", type=int, default=3)
    parser.add_argument("--output", default=None, help="write the result as JSON")
    args = parser.parse_args(argv)
    try:
        result = run(args.site, args.calls, args.loads)
    except SiteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table(result))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
