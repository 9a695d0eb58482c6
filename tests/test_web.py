"""The web page (`python -m dim_tf.web`) in a real browser: Debian's Chromium, headless, driven by Playwright.

One site holds three bundles of untrained models (exported as tests/test_export.py does, with relaxed checks): DIM
and biDIM with their picture companion (model_views.tflite), and an undefended CNN. The untrained DIM's int8 file
puts every image in class 0, so label-changing tests (the stroke, the attack) run on the CNN, whose labels vary.
Every number the page shows is checked against `dim_tf.lite` on the bundle's own files.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import absolute_paths, untrained_model_dir
from dim_tf import lite
from dim_tf.web import SiteError, browser, builder, preprocess

import playwright.sync_api  # noqa: F401  (a test extra: a missing driver fails the suite, never skips it)

RELAXED = dict(max_accuracy_drop=1.0, min_agreement=0.0)
DIGITS = 10


def export(model_dir: str, out: str, variant: str, data_dir: str) -> str:
    from dim_tf.export import exporter

    exporter.export_bundle(model_dir, out, variant=variant, quantize="int8", data_dir=data_dir,
                           representative_samples=100, verify_images=200, checks=exporter.Checks(**RELAXED),
                           log=lambda *a: None, views=True)
    return out


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, mnist_folder):
    """{"dim", "bidim", "cnn"} -> bundle folder."""
    root = tmp_path_factory.mktemp("web_bundles")
    dim = untrained_model_dir(str(root / "dim_model"), "dim", mnist_folder)
    cnn = untrained_model_dir(str(root / "cnn_model"), "cnn", mnist_folder)
    return {"dim": export(dim, str(root / "dim"), "default", mnist_folder),
            "bidim": export(dim, str(root / "bidim"), "bi", mnist_folder),
            "cnn": export(cnn, str(root / "cnn"), "default", mnist_folder)}


@pytest.fixture(scope="module")
def site(bundles, tmp_path_factory, mnist_folder):
    out = str(tmp_path_factory.mktemp("web") / "site")
    builder.build_site([bundles["dim"], bundles["bidim"], bundles["cnn"]], out, digits=DIGITS,
                       data_dir=mnist_folder, log=lambda *a: None)
    return out


@pytest.fixture(scope="module")
def chrome():
    with browser.chromium() as context:
        yield context


@pytest.fixture(scope="module")
def server(site):
    with browser.serve(site) as url:
        yield url


@pytest.fixture
def page(chrome, server):
    p = browser.Page(chrome, server)
    assert p.wait() == "ready", p.status()
    yield p
    p.page.close()


def lite_predict(bundle: str, images, which: str = "quantized"):
    return lite.load_bundle(bundle, which, num_threads=1).predict(np.asarray(images, np.uint8).reshape(-1, 28, 28, 1))


def test_site_files(site, bundles):
    meta = builder.load_site(site)
    assert meta["format"] == "dim_tf.web-site" and meta["format_version"] == 1
    assert [m["id"] for m in meta["models"]] == ["dim", "bidim", "cnn"]
    assert [m["name"] for m in meta["models"]] == ["DIM", "biDIM", "CNN"]
    assert meta["models"][0]["files"] == {"quantized": "model.tflite", "float": "model_float.tflite",
                                          "views": "model_views.tflite"}
    assert meta["models"][2]["files"]["views"] is None  # a classifier has nothing to picture
    assert meta["runtime"]["version"] == "2.5.3" and meta["runtime"]["wasm_dir"] == "vendor/litertjs/core/wasm/"
    for rel in meta["runtime"]["files"]:
        assert os.path.isfile(os.path.join(site, rel)), rel
    assert len(meta["digits"]) == DIGITS and meta["digits"][0] == {"file": "digits/test-0000.png", "index": 0,
                                                                   "label": 7}
    for m in meta["models"]:  # batch-pinned copies of the bundle's files, nothing else changed (checked below)
        for name, info in m["pinned"].items():
            assert info["source_sha256"] == lite.sha256(os.path.join(bundles[m["id"]], name))
            assert info["sha256"] == lite.sha256(os.path.join(site, m["dir"], name))
    assert "cdn" not in open(os.path.join(site, "index.html")).read().lower()
    # served to any browser: no path of the machine that built it, in the site's index or the bundles it copied
    for m in meta["models"]:
        assert absolute_paths(open(os.path.join(site, m["dir"], lite.BUNDLE_JSON)).read(), os.getcwd()) == []
    assert absolute_paths(open(os.path.join(site, "site.json")).read(), os.getcwd()) == []


def test_page_loads_without_console_errors_or_outside_requests(chrome, server):
    p = browser.Page(chrome, server)
    assert p.wait() == "ready", p.status()
    p.call("(d) => d.selectModel('bidim')")
    p.call("(d) => d.selectPrecision('float')")
    assert p.errors() == []
    assert p.requests and all(u.startswith(server) or u.startswith("data:") for u in p.requests), p.requests
    assert "ready" in p.status()
    log = p.call("(d) => d.log")
    assert any("XNNPACK" in line for line in log)  # LiteRT.js's own log went to the page, not the console
    p.page.close()


@pytest.mark.parametrize("model_id", ["dim", "bidim", "cnn"])
def test_first_ten_test_digits_match_dim_tf_lite(page, site, bundles, model_id):
    """Labels and scores of the page (LiteRT.js, WebAssembly) equal dim_tf.lite's (LiteRT, x86) on the same PNGs,
    for the int8 file (to its output's rounding) and the float file."""
    page.call("(d, id) => d.selectModel(id)", model_id)
    images = np.stack([lite.load_image(os.path.join(site, f"digits/test-{i:04d}.png")) for i in range(DIGITS)])
    for which in ("quantized", "float"):
        page.call("(d, w) => d.selectPrecision(w)", which)
        shown = [page.call("(d, i) => d.loadDigit(i)", i) for i in range(DIGITS)]
        expected = lite_predict(bundles[model_id], images, which)
        assert [s["file"] for s in shown] == [lite.load_bundle(bundles[model_id]).meta["models"][which]] * DIGITS
        assert [s["input"] for s in shown] == images.reshape(DIGITS, -1).tolist()
        assert [s["label"] for s in shown] == expected.labels.tolist()
        scores = np.array([s["scores"] for s in shown], np.float32)
        np.testing.assert_allclose(scores, expected.scores, rtol=1e-5, atol=1e-6, err_msg=f"{model_id} {which}")
        assert [s["truth"] for s in shown] == [json.load(open(os.path.join(site, "site.json")))["digits"][i]["label"]
                                               for i in range(DIGITS)]


def test_views_are_the_models_pictures(page, site, bundles):
    """D(x) and F_i(D(x)) as the page shows them: model_views.tflite's outputs, whose sums give the scores."""
    for model_id in ("dim", "bidim"):
        page.call("(d, id) => d.selectModel(id)", model_id)
        shown = page.call("(d) => d.loadDigit(3)")
        d = np.array(shown["views"]["denoised"], np.float32).reshape(28, 28)
        r = np.array(shown["views"]["reconstructions"], np.float32).reshape(10, 28, 28)
        runner = lite.Runner(os.path.join(bundles[model_id], "model_views.tflite"), num_threads=1)
        out = runner(np.array(shown["input"], np.uint8).reshape(1, 28, 28, 1))
        np.testing.assert_allclose(d, out["denoised"][0, ..., 0], atol=1e-6)
        np.testing.assert_allclose(r, out["reconstructions"][0, ..., 0], atol=1e-6)
        if model_id == "bidim":
            assert set(np.unique(d)) <= {0.0, 1.0}  # biDIM's internal models read a binarized D(x)
    meta = json.load(open(os.path.join(bundles["dim"], "bundle.json")))["views"]
    assert meta["file"] == "model_views.tflite" and meta["verification"]["scores_from_pictures_label_agreement"] == 1.0


def draw(page, points):
    box = page.page.locator("#pad").bounding_box()
    before = page.call("(d) => d.current().predictions")
    page.page.mouse.move(box["x"] + points[0][0], box["y"] + points[0][1])
    page.page.mouse.down()
    for x, y in points[1:]:
        page.page.mouse.move(box["x"] + x, box["y"] + y, steps=4)
    page.page.mouse.up()
    page.page.wait_for_function(f"window.dimweb.current().predictions > {before}")
    return page.call("(d) => d.current()")


def test_a_drawn_stroke_changes_the_prediction(page, bundles):
    page.call("(d) => d.selectModel('cnn')")
    page.page.click("#clear")
    blank = page.call("(d) => d.current()")
    assert blank["source"] == "blank" and not any(blank["input"])
    drawn = draw(page, [(140, 40), (150, 120), (140, 200), (130, 250)])  # a "1"
    assert drawn["source"] == "drawing" and max(drawn["input"]) > 200
    assert drawn["label"] != blank["label"]
    x = np.array(drawn["input"], np.uint8)
    assert lite_predict(bundles["cnn"], x).labels[0] == drawn["label"]
    # the page's preprocessing is dim_tf.web.preprocess's (centred, scaled to 20 pixels)
    gray = np.array(page.call("(d) => d.padGray()"), np.float64).reshape(280, 280) / 255.0
    mine = preprocess.center_digit(gray).astype(int).ravel()
    assert np.abs(mine - x.astype(int)).max() <= 1
    rows, cols = np.nonzero(x.reshape(28, 28))
    assert max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 <= 21  # the MNIST box
    assert drawn["scores"] != blank["scores"]


def test_touch_draws_too(page):
    page.call("(d) => d.selectModel('cnn')")  # the untrained DIM's int8 scores are the same for every image
    page.page.click("#clear")
    before = page.call("(d) => d.current()")
    box = page.page.locator("#pad").bounding_box()
    page.page.touchscreen.tap(box["x"] + 140, box["y"] + 140)
    page.page.wait_for_function(f"window.dimweb.current().predictions > {before['predictions']}")
    after = page.call("(d) => d.current()")
    assert after["source"] == "drawing" and max(after["input"]) == 255 and after["scores"] != before["scores"]


def test_blank_canvas_is_a_clear_message_not_a_crash(page):
    for model_id in ("dim", "bidim"):
        page.call("(d, id) => d.selectModel(id)", model_id)
        page.page.click("#clear")
        page.page.wait_for_function("window.dimweb.current().source === 'blank'")
        now = page.call("(d) => d.current()")
        assert "Blank canvas" in now["status"] and now["status_kind"] == "warn"
        assert all(np.isfinite(now["scores"])) and now["label"] is not None
    assert page.errors() == []


def test_attack_finds_an_adversarial_on_the_undefended_model(page, bundles):
    page.call("(d) => d.selectModel('cnn')")
    clean = page.call("(d) => d.loadDigit(0)")
    result = page.call("(d) => d.attack({eps: 0.3, queries: 500, seed: 0})")
    assert result["success"], result
    assert result["clean_label"] == clean["label"] and result["label"] != clean["label"]
    assert 0 < result["queries"] <= 500
    x0, x = np.array(result["x0"], np.uint8), np.array(result["x"], np.uint8)
    assert np.array_equal(x0, np.array(clean["input"], np.uint8))
    assert result["eps_px"] == 76 and np.abs(x.astype(int) - x0.astype(int)).max() <= 76 == result["linf"]
    # the adversarial really changes the prediction through the model, outside the browser as well
    assert lite_predict(bundles["cnn"], x).labels[0] == result["label"] != lite_predict(bundles["cnn"], x0).labels[0]
    assert "→" in page.page.inner_text("#attack-result")
    assert "no result" in page.page.inner_text("#adaptive")  # no adaptive.json for these models
    # and a budget too small to find one says so
    page.call("(d) => d.loadDigit(0)")
    weak = page.call("(d) => d.attack({eps: 0.01, queries: 20, seed: 0})")
    assert not weak["success"] and weak["label"] == clean["label"]
    assert "No adversarial" in page.page.inner_text("#attack-result")


# ----------------------------------------------------------------------------------------------------- bad input


def _copy_bundle(bundle, dest, edit=None, drop=None):
    shutil.copytree(bundle, dest)
    if drop:
        os.remove(os.path.join(dest, drop))
    if edit:
        path = os.path.join(dest, "bundle.json")
        meta = json.load(open(path))
        edit(meta)
        json.dump(meta, open(path, "w"))
    return str(dest)


def test_builder_refuses_bundles_without_what_the_page_needs(bundles, tmp_path, mnist_folder):
    cases = [
        (_copy_bundle(bundles["dim"], tmp_path / "noviews", edit=lambda m: m.update(views=None),
                      drop="model_views.tflite"), "no model_views.tflite"),
        (_copy_bundle(bundles["dim"], tmp_path / "gone", drop="model_views.tflite"), "model_views.tflite is missing"),
        (_copy_bundle(bundles["dim"], tmp_path / "v2", edit=lambda m: m.update(format_version=2)), "format_version 2"),
        (_copy_bundle(bundles["cnn"], tmp_path / "nofloat", drop="model_float.tflite"), "model_float.tflite is missing"),
        (str(tmp_path / "nowhere"), "does not exist"),
    ]
    for bundle, message in cases:
        out = tmp_path / "site"
        proc = subprocess.run([sys.executable, "-m", "dim_tf.web", bundle, "--out", str(out), "--data_dir",
                               mnist_folder], capture_output=True, text=True)
        assert proc.returncode == 2 and message in proc.stderr, (message, proc.stderr)
        assert not out.exists()
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []  # no temporary folders left
    corrupt = _copy_bundle(bundles["dim"], tmp_path / "corrupt")
    with open(os.path.join(corrupt, "model.tflite"), "ab") as f:
        f.write(b"\0")
    with pytest.raises(SiteError, match="sha256"):
        builder.inspect_bundle(corrupt)


def _broken_site(site, dest, breaks):
    """A copy of the site (symlinks, except the files in `breaks`: name -> bytes)."""
    for root, _, names in os.walk(site):
        rel = os.path.relpath(root, site)
        os.makedirs(os.path.join(dest, rel), exist_ok=True)
        for name in names:
            path = os.path.normpath(os.path.join(rel, name))
            if path in breaks:
                with open(os.path.join(dest, path), "wb") as f:
                    f.write(breaks[path])
            else:
                os.symlink(os.path.join(root, name), os.path.join(dest, path))
    return str(dest)


def test_a_model_that_fails_to_load_is_a_message_on_the_page(site, chrome, tmp_path):
    broken = _broken_site(site, tmp_path / "broken", {"models/dim/model.tflite": b"not a flatbuffer" * 64})
    with browser.serve(broken) as url:
        p = browser.Page(chrome, url)
        assert p.wait() == "error"
        assert "could not load models/dim/model.tflite" in p.status()
        assert p.page.get_attribute("#status", "class") == "error"
        p.page.close()
    with pytest.raises(SiteError, match="could not load models/dim/model.tflite"):
        browser.check_site(broken, log=lambda *a: None, context=chrome)
    meta = json.load(open(os.path.join(site, "site.json")))
    meta["format_version"] = 7
    other = _broken_site(site, tmp_path / "v7", {"site.json": json.dumps(meta).encode()})
    with browser.serve(other) as url:
        p = browser.Page(chrome, url)
        assert p.wait() == "error" and "format_version 7" in p.status()
        p.page.close()


def test_builder_check_passes_on_a_good_site(site, chrome):
    times = browser.check_site(site, log=lambda *a: None, context=chrome)
    assert times["ready"] > 0 and times["dim/quantized"] > 0 and times["cnn/float"] > 0


def test_check_failure_exits_3_and_leaves_nothing(bundles, tmp_path, mnist_folder, monkeypatch):
    """`--check` failing (the page could not load a model in Chromium: tested above on a real page) is exit 3."""
    from dim_tf.web import __main__ as cli

    def failing(site, log=print, context=None):
        assert os.path.isfile(os.path.join(site, "site.json"))  # the finished site, before it is published
        raise SiteError("the page failed in Chromium: could not load models/cnn/model.tflite in LiteRT.js (test)")

    monkeypatch.setattr(browser, "check_site", failing)
    out = tmp_path / "site"
    assert cli.main([bundles["cnn"], "--out", str(out), "--data_dir", mnist_folder, "--check"]) == 3
    assert os.listdir(tmp_path) == []
    garbled = _copy_bundle(bundles["cnn"], tmp_path / "garbled")
    with open(os.path.join(garbled, "model.tflite"), "wb") as f:
        f.write(b"\x00" * 64)
    meta = json.load(open(os.path.join(garbled, "bundle.json")))
    meta["files"]["model.tflite"]["sha256"] = lite.sha256(os.path.join(garbled, "model.tflite"))
    json.dump(meta, open(os.path.join(garbled, "bundle.json"), "w"))
    with pytest.raises(SiteError, match="model.tflite"):
        builder.build_site([garbled], str(out), data_dir=mnist_folder, log=lambda *a: None)
    assert not out.exists()
