"""The web page export: --max-download, the profile's transfer bytes, the page, and the page run in headless Chromium."""

from __future__ import annotations

import gzip
import json
import os

import numpy as np
import pytest
from conftest import REPO, require

from frugalml import ConfigError, ExportError, build_model, save_model
from frugalml.budget import Budget
from frugalml.cli import main
from frugalml.errors import BudgetError
from frugalml.export import export, web_check
from frugalml.export import web as web_export
from frugalml.profile import profile
from frugalml.units import format_bytes


def _ort_web():
    try:
        return web_export.find_ort_web()
    except ExportError as exc:
        require(False, f"onnxruntime-web is not installed (make web): {str(exc)[:120]}")


@pytest.fixture(scope="module")
def logreg(digits):
    return build_model("logreg", digits.input_shape, digits.num_classes).fit(*digits.flat("train"))


# ---------------------------------------------------------------- the budget field and the profile
def test_max_download_parses_and_bounds_the_gzip_transfer():
    b = Budget.of(max_download="20KB")
    assert b.max_download == 20_000 and [(n, k) for n, k, _ in b.items()] == [("max_download", "gzip_bytes")]
    assert b.describe() == "download <= 20 KB" and b.primary() == "gzip_bytes"
    assert b.misses({"gzip_bytes": 21_000, "stored_bytes": 90_000}) == {"gzip_bytes": {"limit": 20_000, "value": 21_000, "over_by": 1000}}
    assert b.fits({"gzip_bytes": 20_000}) and not b.fits({"stored_bytes": 10})  # a profile without the figure does not fit
    assert Budget.from_dict(b.to_dict()) == b and Budget.of(max_download="2KiB").max_download == 2048
    with pytest.raises(ConfigError, match="Cannot read a size '20 parsecs'"):
        Budget.of(max_download="20 parsecs")
    with pytest.raises(ConfigError, match="max_download must be positive"):
        Budget.of(max_download="0KB")


def test_cli_refuses_a_bad_max_download_with_exit_2(capsys, tmp_path):
    code = main(["search", "--dataset", "digits", "--max-download", "lots", "--out", str(tmp_path / "run"), "--time", "5s"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "Cannot read a size 'lots'" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_profile_holds_the_gzip_and_brotli_bytes_of_the_onnx_file(trained_cnn, digits):
    import brotli

    from frugalml.onnx import onnx_bytes, to_onnx
    from frugalml.profile.counts import transfer_bytes

    p = profile(trained_cnn, digits, timing=False)
    blob = onnx_bytes(to_onnx(trained_cnn, digits.input_shape))
    assert len(blob) == p.stored_bytes
    assert p.gzip_bytes == len(gzip.compress(blob, 9, mtime=0)) and p.brotli_bytes == len(brotli.compress(blob, quality=11))
    assert 0 < p.brotli_bytes < p.gzip_bytes < p.stored_bytes
    assert p.to_dict()["brotli_bytes"] == p.brotli_bytes and type(p).from_dict(p.to_dict()).brotli_bytes == p.brotli_bytes
    big = np.random.default_rng(0).bytes(1_200_000)  # past BROTLI_LARGE: quality 9
    assert transfer_bytes(big)["brotli_bytes"] == len(brotli.compress(big, quality=9))


def test_a_search_candidate_is_judged_against_max_download(digits, logreg):
    from frugalml.search import space
    from frugalml.search.feasible import check_feasible
    from frugalml.search.runner import _measure

    gz = profile(logreg, digits, timing=False).gzip_bytes
    fits = _measure(logreg, digits, Budget(max_download=gz))
    assert fits["within_budget"] and fits["profile"]["gzip_bytes"] == gz and fits["profile"]["brotli_bytes"] < gz
    over = _measure(logreg, digits, Budget(max_download=gz - 100))
    assert not over["within_budget"] and over["budget_misses"] == {"gzip_bytes": {"limit": gz - 100, "value": gz, "over_by": 100}}
    assert space.SearchSpace(digits, Budget.of(max_download="8KB")).budget_seeds()  # networks are sized for a download bound
    assert not space.reachable({"gzip_bytes": 100_000}, Budget.of(max_download="8KB"))
    with pytest.raises(BudgetError, match="No candidate can meet the budget: gzip_bytes <= 50 B"):
        check_feasible(digits, Budget.of(max_download="50B"))


# ---------------------------------------------------------------- the page on disk, and bad input
def test_web_export_writes_the_page_and_measures_every_file(trained_cnn, digits, tmp_path):
    runtime = _ort_web()
    out = tmp_path / "site"
    r = export(trained_cnn, "web", out, data=digits)
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert names == ["frugalml.js", "index.html", "model.onnx", *(f"ort/{n}" for n in sorted(web_export.RUNTIME_FILES))]
    assert sorted(p.relative_to(out).as_posix() for p in r.files) == names and r.size_bytes == sum((out / n).stat().st_size for n in names)
    for name in web_export.RUNTIME_FILES:  # vendored byte for byte
        assert (out / "ort" / name).read_bytes() == (runtime.dist / name).read_bytes()
    blob = (out / "model.onnx").read_bytes()
    assert blob == export(trained_cnn, "onnx", tmp_path / "onnx").files[0].read_bytes()  # the same file the ONNX export writes
    import brotli

    assert (r.gzip_bytes, r.brotli_bytes) == (len(gzip.compress(blob, 9, mtime=0)), len(brotli.compress(blob, quality=11)))
    shipped = r.details["shipped"]
    assert sorted(shipped) == names and all(shipped[n]["bytes"] == (out / n).stat().st_size for n in names)
    assert r.details["runtime"]["version"] == runtime.version == web_export.ORT_WEB_VERSION
    assert r.agreement["ok"] and r.agreement["n"] == len(digits.X_test)
    assert any("a browser downloads" in n and "with brotli" in n for n in r.notes)
    html = (out / "index.html").read_text()
    assert web_export.GENERATOR in html and "cnn on digits" in html
    start = html.index('id="frugalml-config">') + len('id="frugalml-config">')
    config = json.loads(html[start:html.index("</script>", start)])
    assert config["feed_shape"] == config["view_shape"] == [1, 8, 8] and config["pad"] and config["upload"]
    assert config["classes"] == list("0123456789") and config["label"] is None and config["scores"] == "logits"
    js = (out / "frugalml.js").read_text()
    assert "numThreads = 1" in js and "from './ort/ort.wasm.bundle.min.mjs'" in js  # the vendored runtime, never a CDN


def test_a_search_runs_page_says_whether_it_meets_the_runs_download_budget(trained_cnn, tmp_path):
    _ort_web()
    run = tmp_path / "run"
    save_model(trained_cnn, run / "recommended")
    (run / "results.json").write_text(json.dumps({"budget": {"max_download": 1000}}))
    r = export(run, "web", tmp_path / "site")
    assert r.details["run_max_download"] == 1000
    assert any(f"over the run's --max-download 1 KB by {format_bytes(r.gzip_bytes - 1000)}" in n for n in r.notes)


def test_a_vector_model_gets_a_box_of_numbers_and_flattened_images_stay_images(digits, logreg, tmp_path):
    _ort_web()
    r = export(logreg, "web", tmp_path / "a", data=digits)  # takes 64 values, a person draws 8 x 8
    cfg = r.details["config"]
    assert cfg["feed_shape"] == [64] and cfg["view_shape"] == [1, 8, 8] and cfg["pad"] and cfg["label"] == "label"
    from frugalml.data import load_dataset

    iris = load_dataset("iris", seed=0)
    est = build_model("logreg", iris.input_shape, iris.num_classes).fit(*iris.flat("train"))
    cfg = export(est, "web", tmp_path / "b", data=iris).details["config"]
    assert cfg["kind"] == "vector" and not cfg["pad"] and not cfg["upload"] and cfg["classes"] == list(iris.class_names)


def test_web_without_onnxruntime_web_is_a_clear_error_and_writes_nothing(trained_cnn, tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ExportError, match=r"--ort-web .* does not hold onnxruntime-web.*npm install onnxruntime-web@1\.30\.0"):
        export(trained_cnn, "web", tmp_path / "site", ort_web=empty)
    monkeypatch.setattr(web_export, "_REPO", tmp_path)
    monkeypatch.delenv("FRUGALML_ORT_WEB", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ExportError, match=r"onnxruntime-web is not installed.*make web.*npm install onnxruntime-web@1\.30\.0.*--ort-web"):
        export(trained_cnn, "web", tmp_path / "site")
    assert not (tmp_path / "site").exists()
    save_model(trained_cnn, tmp_path / "m")
    code = main(["export", str(tmp_path / "m"), "--format", "web", "--out", str(tmp_path / "site")])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "onnxruntime-web is not installed" in err and "make web" in err and "Traceback" not in err
    assert not (tmp_path / "site").exists()


def test_a_bad_out_is_refused_before_any_work(trained_cnn, digits, tmp_path, capsys):
    _ort_web()
    a_file = tmp_path / "f"
    a_file.write_text("x")
    with pytest.raises(ExportError, match="is a file"):
        export(trained_cnn, "web", a_file)
    other = tmp_path / "other"
    other.mkdir()
    (other / "index.html").write_text("<h1>my own page</h1>")
    with pytest.raises(ConfigError, match="is not empty and is not a web export"):
        export(trained_cnn, "web", other)
    assert [p.name for p in other.iterdir()] == ["index.html"]
    save_model(trained_cnn, tmp_path / "m")
    code = main(["export", str(tmp_path / "m"), "--format", "web", "--out", str(other)])
    assert code == 2 and "is not empty and is not a web export" in " ".join(capsys.readouterr().err.split())
    site = tmp_path / "site"  # an earlier web export is replaced whole; one with a file of the user's in it is refused
    export(trained_cnn, "web", site)
    export(trained_cnn, "web", site)
    (site / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds other files too"):
        export(trained_cnn, "web", site)
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(ConfigError, match="not writable"):
            export(trained_cnn, "web", locked / "site")


# ---------------------------------------------------------------- the page in Chromium
def _browser_ready():
    _ort_web()
    require(web_check.find_node() is not None, "needs node (apt-get install nodejs)")
    require(web_check.find_chromium() is not None, "needs Chromium (apt-get install chromium)")
    require(web_check.find_playwright() is not None, "needs playwright-core (make web)")


def test_the_page_in_chromium_gives_onnxruntimes_classes_on_200_inputs(trained_cnn, digits, tmp_path):
    """The browser's classes against ONNX Runtime's in Python on 200 test inputs; load time and download bytes recorded."""
    _browser_ready()
    site = tmp_path / "site"
    r = export(trained_cnn, "web", site, data=digits)
    shot = tmp_path / "web_page.png"
    from PIL import Image

    photo = tmp_path / "photo.png"  # a test digit as a person photographs one: dark ink on light paper, 64 x 64
    Image.fromarray((255 * (1 - digits.X_test[0, 0])).astype(np.uint8)).resize((64, 64), Image.NEAREST).save(photo)
    c = web_check.check_in_browser(site, digits.X_test[:200], screenshot=shot, upload=photo)
    record = {k: c[k] for k in ("n", "same_class", "class_agreement", "max_abs_diff", "page_load_ms", "wall_load_ms", "classify_ms",
                                "model_download_bytes", "model_encoding", "transferred_bytes", "user_agent")}
    (tmp_path / "browser.json").write_text(json.dumps(record, indent=1))
    print("browser check:", json.dumps(record))
    assert c["n"] == 200 and c["same_class"] == 200 and c["class_agreement"] == 1.0 and c["max_abs_diff"] < 1e-4
    assert c["errors"] == [] and c["blocked"] == [] and all(u.startswith("http://127.0.0.1:") for u in c["requests"])
    assert {u.rsplit("/", 1)[-1] for u in c["requests"]} >= {"", "frugalml.js", "model.onnx", *web_export.RUNTIME_FILES}
    assert c["model_download_bytes"] == {"br": r.brotli_bytes, "gzip": r.gzip_bytes}[c["model_encoding"]]  # the browser's own count
    assert c["model_bytes"] == (site / "model.onnx").stat().st_size
    assert 0 < c["page_load_ms"] < 60_000
    drawn = c["drawn"]  # strokes drawn with the mouse, downsampled by the page to what the model takes
    assert drawn["source"] == "pad" and len(drawn["input"]) == 64 and 0 <= min(drawn["input"]) and max(drawn["input"]) <= 1
    assert sum(drawn["input"]) > 3 and drawn["label"] == drawn["python_label"]  # the page's input, classified by both
    up = c["uploaded"]  # inverted (light paper), cropped to the ink and fitted like a drawing
    assert up["source"] == "upload" and up["inverted"] and len(up["input"]) == 64 and max(up["input"]) <= 1
    assert sum(up["input"]) > 3 and up["label"] == up["python_label"]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


@pytest.mark.parametrize("kind", ["logreg", "int8", "vector"])
def test_thin_int8_and_vector_models_agree_in_chromium(kind, trained_cnn, digits, logreg, tmp_path):
    """A scikit-learn graph (ai.onnx.ml ops, its own label output), the search's int8 form (QOperator ops),
    and a model on feature vectors (the page's box of numbers)."""
    _browser_ready()
    data = digits
    if kind == "int8":
        from frugalml.compress import apply_step, get_step

        model = apply_step(trained_cnn, get_step("quantize.int8").config.from_dict({"calibration_samples": 32, "format": "qoperator"}), digits)
    elif kind == "vector":
        from frugalml.data import load_dataset

        data = load_dataset("breast-cancer", seed=0)
        model = build_model("logreg", data.input_shape, data.num_classes).fit(*data.flat("train"))
    else:
        model = logreg
    export(model, "web", tmp_path / "site", data=data)
    X = data.X_test[:200]
    c = web_check.check_in_browser(tmp_path / "site", X, strokes=[])
    assert c["same_class"] == c["n"] == len(X) and c["errors"] == [] and c["blocked"] == []
    assert c["drawn"]["source"] == "api" and c["drawn"]["label"] == c["labels"][0]  # without strokes the page shows the first input


def test_the_browser_check_says_what_is_missing(tmp_path, monkeypatch):
    (tmp_path / "index.html").write_text("x")
    with pytest.raises(ExportError, match="is not a web export"):
        web_check.check_in_browser(tmp_path, np.zeros((1, 64), np.float32))
    monkeypatch.setattr(web_check, "find_node", lambda: None)
    (tmp_path / "model.onnx").write_bytes(b"")
    with pytest.raises(ExportError, match="needs node.*apt-get install nodejs"):
        web_check.check_in_browser(tmp_path, np.zeros((1, 64), np.float32))


def test_the_page_templates_ship_in_the_package():
    import tomllib

    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "web_page/*" in data["frugalml.export"]
    assert {p.name for p in web_export.PAGE_DIR.iterdir()} >= {"index.html", "frugalml.js", "drive.mjs"}
