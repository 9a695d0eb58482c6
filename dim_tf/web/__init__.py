"""The bundle in a web page: `python -m dim_tf.web BUNDLE [BUNDLE ...] --out SITE` writes a static site.

The page runs the bundle's .tflite files with LiteRT.js (`@litertjs/core` from the npm registry, WebAssembly +
XNNPACK, copied into the site: nothing is fetched from a CDN), so any laptop or phone browser classifies on-device:
draw a digit (mouse or touch) or load a test digit, read the label and the ten scores, see D(x) and the ten
reconstructions F_i(D(x)) (from the bundle's `model_views.tflite`, written by `python -m dim_tf.export ... --views`),
switch DIM / biDIM (when the site has both bundles) and int8 / float32, and run a score-based Square attack.

Modules: `builder` (the site), `runtime` (the pinned npm runtime), `preprocess` (the drawing's preprocessing in
NumPy, mirrored by static/preprocess.js), `browser` (headless Chromium for `--check`, the tests and `benchmark`),
`benchmark` (load time, latency and size against `dim_tf.lite`). See docs/web.md.
"""


class SiteError(ValueError):
    """The site cannot be built: a bundle lacks files or has another format, npm failed, or the page failed."""
