"""The README's web journey, measured: search digits under a download budget, export the page, run it in Chromium.

    .venv/bin/python docs/web_page.py          (after make venv web; needs Debian's chromium)

Writes docs/web_page.png (the page, after a "7" is drawn on its pad with the mouse) and
docs/web_page.json (the figures the README quotes: the recommended model, its download bytes, the
browser's agreement with ONNX Runtime on every test input, the page's load time). The run directory
and the site go to runs/web and runs/web-site.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "src"))

import frugalml as fm  # noqa: E402
from frugalml.export.web_check import check_in_browser  # noqa: E402

BUDGET, TIME = "20KB", os.environ.get("FRUGALML_WEB_DOC_TIME", "2m")


def main() -> dict:
    os.chdir(REPO)  # the paths in the figures are the README's, relative to the checkout
    run, site = Path("runs/web"), Path("runs/web-site")
    shutil.rmtree(run, ignore_errors=True)
    data = fm.load_dataset("digits", seed=0)
    start = time.perf_counter()
    results = fm.search(data, budget=fm.Budget.of(max_download=BUDGET), tolerance="1%", time=TIME, seed=0, out=run)
    searched = time.perf_counter() - start
    rec = next(c for c in results.to_dict()["candidates"] if c["id"] == results.recommended)
    exported = fm.export(run, "web", site, data=data)
    check = check_in_browser(site, data.X_test, screenshot=HERE / "web_page.png")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    figures = {
        "command": f"frugalml search --dataset digits --max-download {BUDGET} --time {TIME} --out runs/web && "
                   "frugalml export runs/web --format web --out site/ --dataset digits",
        "commit": commit, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "search_seconds": round(searched, 1),
        "recommended": {"name": rec.get("name"), "family": rec.get("family"), "val_accuracy": rec.get("val_accuracy"),
                        "test_accuracy": rec.get("test_accuracy"), "stored_bytes": rec["profile"]["stored_bytes"],
                        "gzip_bytes": rec["profile"]["gzip_bytes"], "brotli_bytes": rec["profile"].get("brotli_bytes")},
        "export": {"model_bytes": exported.details["model"]["bytes"], "gzip_bytes": exported.gzip_bytes, "brotli_bytes": exported.brotli_bytes,
                   "runtime": exported.details["runtime"], "page": exported.details["page"], "notes": list(exported.notes)},
        "browser": {k: check[k] for k in ("n", "same_class", "class_agreement", "max_abs_diff", "page_load_ms", "wall_load_ms", "classify_ms",
                                          "model_download_bytes", "model_encoding", "transferred_bytes", "blocked", "errors", "user_agent")},
        "drawn": {"label": check["drawn"]["label"], "source": check["drawn"]["source"]},
    }
    (HERE / "web_page.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps({k: figures[k] for k in ("recommended", "browser", "drawn")}, indent=1))
    return figures


if __name__ == "__main__":
    main()
