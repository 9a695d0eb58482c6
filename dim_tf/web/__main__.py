"""`python -m dim_tf.web BUNDLE [BUNDLE ...] --out SITE`: the bundle(s) in a static web page (see `dim_tf.web`).

    python -m dim_tf.export --model_dir runs/dim --out bundles/dim --views
    python -m dim_tf.export --model_dir runs/dim --out bundles/bidim --variant bi --views
    python -m dim_tf.web bundles/dim bundles/bidim --out site --data_dir ../shared/data/mnist --check
    python -m http.server -d site 8000          # then open http://localhost:8000/

Exit code 2 with the reason when a bundle lacks the files the page needs (or has another format or version),
npm cannot install the pinned LiteRT.js, or the test digits cannot be read; 3 when `--check` saw the page fail
in headless Chromium (a model that does not load, a console error). A failed build leaves nothing at SITE.
`--install_runtime` only installs the pinned runtime into the cache (CI runs it before the tests).
"""

from __future__ import annotations

import argparse
import sys

from dim_tf.web import SiteError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dim_tf.web", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("bundles", nargs="*", help="bundle folders (python -m dim_tf.export ... --views); with "
                        "two or more the page switches between them (DIM / biDIM)")
    parser.add_argument("--out", help="site folder to write")
    parser.add_argument("--digits", type=int, default=10, help="test digits to include (first N test images)")
    parser.add_argument("--data_dir", default=None, help="folder with the LeCun IDX files (else $DIM_TF_DATA_DIR)")
    parser.add_argument("--node_modules", default=None, help="a node_modules folder with the pinned "
                        "@litertjs/core (default: npm ci into ~/.cache/dim_tf/web)")
    parser.add_argument("--adaptive", action="append", default=[], help="adaptive.json of python -m dim_tf.eval "
                        "--suite adaptive (repeatable; default: MODEL_DIR/eval/adaptive/adaptive.json if present)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing site at --out")
    parser.add_argument("--check", action="store_true", help="open the built site in headless Chromium and fail "
                        "unless every model loads and runs (needs playwright and chromium)")
    parser.add_argument("--install_runtime", action="store_true", help="only install the pinned LiteRT.js")
    args = parser.parse_args(argv)
    try:
        if args.install_runtime:
            from dim_tf.web import runtime

            print(runtime.node_modules(args.node_modules))
            return 0
        if not args.bundles or not args.out:
            parser.error("give BUNDLE [BUNDLE ...] and --out SITE")
        from dim_tf.web import builder

        builder.build_site(args.bundles, args.out, digits=args.digits, data_dir=args.data_dir,
                           node_modules=args.node_modules, adaptive=args.adaptive, overwrite=args.overwrite,
                           check=args.check)
    except SiteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3 if str(e).startswith("the page failed") else 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
