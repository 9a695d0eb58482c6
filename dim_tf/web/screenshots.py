"""`python -m dim_tf.web.screenshots SITE OUT_DIR [--model ID] [--digit N] [--eps 0.3] [--seed 0]`: the two
pictures in docs/ (the page as it opens on a test digit, and after an attack on it), from headless Chromium."""

from __future__ import annotations

import argparse
import os
import sys

from dim_tf.web import SiteError, browser


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dim_tf.web.screenshots", description=__doc__)
    parser.add_argument("site")
    parser.add_argument("out_dir")
    parser.add_argument("--model", default=None, help="model id (default: the site's first)")
    parser.add_argument("--digit", type=int, default=0)
    parser.add_argument("--eps", type=float, default=0.3)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    try:
        with browser.serve(args.site) as url, browser.chromium() as context:
            page = browser.Page(context, url)
            if page.wait() != "ready":
                raise SiteError(page.status())
            if args.model:
                page.call("(d, id) => d.selectModel(id)", args.model)
            page.call("(d, i) => d.loadDigit(i)", args.digit)
            clean = os.path.join(args.out_dir, "web-page.png")
            page.page.screenshot(path=clean, full_page=True)
            result = page.call("(d, o) => d.attack(o)", {"eps": args.eps, "queries": args.queries, "seed": args.seed})
            if result["success"]:
                page.page.click("#inspect")
                page.page.wait_for_function("window.dimweb.current().source === 'adversarial'")
            attacked = os.path.join(args.out_dir, "web-page-attacked.png")
            page.page.screenshot(path=attacked, full_page=True)
            if page.errors():
                raise SiteError("; ".join(page.errors()))
    except SiteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{clean}\n{attacked}\nattack: label {result['clean_label']} -> {result['label']}, success "
          f"{result['success']}, {result['queries']} queries, L-inf {result['linf']}/255")
    return 0


if __name__ == "__main__":
    sys.exit(main())
