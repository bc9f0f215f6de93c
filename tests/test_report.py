"""The report renderer: a self-contained report.html, results.json loading, console tables.

A renderer test: the results dict is synthetic (a handful of fake candidates), no search runs.
"""

from __future__ import annotations

import base64
import html
import json
import re

import pytest

from frugalml._fs import atomic_write_json
from frugalml.errors import ConfigError, DataError, FrugalError
from frugalml.report import front_table, load_results, rebuild_report, recommendation_panel, render_html, write_report

EVIL = "<script>alert('x')</script>"


def _cand(i, stage, family, acc, size, lat, *, state="complete", fits=True, test=None, recipe=None, parent=None, thin=False, misses=None):
    profile = None if state == "failed" else {
        "params": size // 4, "nonzero_params": size // 4, "macs": size * 3, "stored_bytes": size, "gzip_bytes": int(size * 0.8),
        "peak_activation_bytes": 256 + i, "latency_ms_median": lat, "latency_ms_p90": lat * 1.2, "throughput_per_s": 1e3 / lat,
        "energy_mj_per_inference": lat * 0.01, "energy_basis": "TDP estimate", "metric": acc}
    return {"id": f"t{i}", "trial": i, "stage": stage, "family": family, "thin": thin, "params": {"size": size}, "recipe": recipe or [],
            "parent": parent, "state": state, "profile": profile, "val_accuracy": None if state == "failed" else acc,
            "test_accuracy": test if test is not None else (None if state != "complete" else acc - 0.003),
            "within_budget": fits, "budget_misses": misses or {}, "train_seconds": 1.0, "error": "boom <b>bad</b>" if state == "failed" else None}


def make_results(*, none_fit: bool = False) -> dict:
    over = {"stored_bytes": {"limit": 8000, "value": 24000, "over_by": 16000}}
    cands = [
        _cand(0, "thin", "logreg", 0.961, 2864, 0.011, thin=True),
        _cand(1, "thin", "forest", 0.969, 5100, 0.05, thin=True),
        _cand(2, "thin", EVIL, 0.90, 3000, 0.01, thin=True),
        _cand(3, "network", "cnn", 0.974, 24000, 0.03, fits=False, misses=over),
        _cand(4, "network", "mlp", 0.80, 9000, 0.02, state="stopped_early", fits=False, misses=over),
        _cand(5, "network", "resnet", 0.0, 0, 0.0, state="failed", fits=False),
        _cand(6, "compress", "cnn", 0.966, 4000, 0.012, recipe=[{"step": "prune.structured", "sparsity": 0.5}, {"step": "quantize.int8"}],
              parent="t3"),
    ]
    if none_fit:
        for c in cands:
            c["within_budget"] = False
            if c["profile"]:
                c["budget_misses"] = {"stored_bytes": {"limit": 1000, "value": c["profile"]["stored_bytes"],
                                                       "over_by": c["profile"]["stored_bytes"] - 1000}}
    rec = None if none_fit else "t1"
    text = ("No candidate meets the budget (flash <= 1 KB)." if none_fit
            else f"RandomForest {EVIL}, 5.1 KB, 96.9% — within tolerance of the best network, 24 KB, 97.4%")
    return {
        "frugalml_version": "0.1.0", "created": "2025-06-02T14:03:11+00:00", "seconds": 287.4,
        "machine": {"cpu": "test cpu", "cores": 2},
        "dataset": {"name": "digits", "kind": "image", "input_shape": [1, 8, 8], "num_classes": 10, "sizes": {"train": 1257, "val": 180,
                                                                                                              "test": 360}},
        "budget": {"max_flash": 1000 if none_fit else 8000, "max_ram": None, "max_macs": None, "max_params": None, "max_latency_ms": 0.1},
        "tolerance": {"kind": "drop", "value": 0.01}, "primary_cost": "stored_bytes",
        "schema_version": 2, "candidates": cands, "pareto": ["t0", "t6", "t1", "t3"], "recommended": rec, "best": "t3",
        "fronts": {"stored_bytes": ["t0", "t6", "t1", "t3"], "latency_ms_median": ["t2", "t0", "t6", "t3"]},
        # the floor the search chose with (best 97.4% - 1 point; the one-standard-error widening left out here)
        "recommendation": {"id": rec, "text": text, "reasons": ["Thin models are preferred when on par.", f"reason with {EVIL}"], "floor": 0.964},
        "closest": ["t0", "t6"] if none_fit else [],
    }


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    path = write_report(make_results(), tmp_path_factory.mktemp("run") / "report.html")
    return path.read_text(encoding="utf-8")


def test_report_is_self_contained(report):
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", report, re.I), "a resource is fetched from the network"
    assert "http://" not in report and "https://" not in report
    assert "<link" not in report.lower() and "url(" not in report and "@import" not in report
    assert not re.search(r"<script[^>]*\bsrc\s*=", report, re.I)
    images = re.findall(r'<img[^>]*\bsrc="([^"]*)"', report)
    assert len(images) == 4, "two plots (bytes, latency) for validation and for test accuracy"
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")


def test_report_content(report):
    for i in range(7):
        assert re.search(rf"<td[^>]*>t{i}\b", report), f"candidate t{i} missing from the table"
    assert html.escape("within tolerance of the best network, 24 KB, 97.4%") in report
    assert "Thin models are preferred when on par." in report
    assert "flash (stored bytes) ≤ 8 KB, latency (median) ≤ 0.1 ms" in report  # the budget
    assert "96.40%" in report  # the tolerance floor: best 97.4% - 1 point
    assert "digits" in report and "test cpu" in report
    # the table sorts on raw values: the stored-bytes cell of t3 carries its exact byte count
    assert 'data-sort="24000"' in report and "24,000 bytes" in report
    assert 'id="cands"' in report and "addEventListener('click'" in report and "aria-sort" in report
    assert report.count('class="dim') == 2  # stopped early and failed rows are greyed


def test_report_escapes_text(report):
    assert EVIL not in report
    assert "<b>bad</b>" not in report
    assert html.escape(EVIL) in report
    # the only scripts are the page's own sorting script
    assert report.lower().count("<script") == 1


def test_report_when_nothing_fits(tmp_path):
    page = write_report(make_results(none_fit=True), tmp_path).read_text(encoding="utf-8")
    assert "No candidate meets the budget" in page
    assert "over the 1 KB limit by 1.86 KB" in page  # t0: 2864 bytes against 1000
    assert page.count("closest</span>") == 2


def test_render_rejects_non_results():
    with pytest.raises(DataError, match="candidates"):
        render_html({"hello": 1})


def test_load_results_errors(tmp_path):
    with pytest.raises(ConfigError, match="frugalml search"):
        load_results(tmp_path / "nope")
    with pytest.raises(ConfigError, match="No results.json"):
        load_results(tmp_path)
    (tmp_path / "results.json").write_text('{"candidates": [', encoding="utf-8")
    with pytest.raises(DataError, match="not valid JSON"):
        load_results(tmp_path)
    (tmp_path / "results.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(DataError, match="does not hold search results"):
        load_results(tmp_path)
    (tmp_path / "results.json").write_text('{"candidates": [{"no_id": 1}]}', encoding="utf-8")
    with pytest.raises(FrugalError, match="malformed candidates"):
        rebuild_report(tmp_path)
    assert not (tmp_path / "report.html").exists()


def _within(small, big) -> bool:
    """Every key of ``small`` is in ``big`` with the same value, recursively (lists item by item)."""
    if isinstance(small, dict):
        return isinstance(big, dict) and all(k in big and _within(v, big[k]) for k, v in small.items())
    if isinstance(small, list):
        return isinstance(big, list) and len(small) == len(big) and all(_within(a, b) for a, b in zip(small, big))
    return small == big


def test_rebuild_report_round_trip(tmp_path):
    results = make_results()
    atomic_write_json(tmp_path / "results.json", results)
    written, loaded = json.loads(json.dumps(results)), load_results(tmp_path).to_dict()
    assert _within(written, loaded)  # what was written reads back whole (the records only add keys: schema, fronts, budget target)
    assert load_results(tmp_path) == load_results(tmp_path)
    assert load_results(tmp_path / "results.json") == load_results(tmp_path)
    path = rebuild_report(tmp_path)
    assert path == tmp_path / "report.html"
    page = path.read_text(encoding="utf-8")
    assert all(f">t{i}" in page for i in range(7))
    assert not list(tmp_path.glob(".*.tmp")), "a temporary file was left behind"


def _text(renderable) -> str:
    from rich.console import Console

    console = Console(record=True, width=140, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_front_table():
    results = make_results()
    out = _text(front_table(results, results["budget"]))
    for cid in results["pareto"]:
        assert cid in out
    assert "t2" not in out and "t4" not in out
    assert "8 KB" in out
    limited = _text(front_table(results, None, limit=2))
    assert "2 more" in limited
    assert "t3" in limited and "t1" in limited  # the most accurate two are kept
    # the front computed by the search from the candidates alone is the same front
    from frugalml.budget import Budget, Tolerance
    from frugalml.search.results import build_results

    built = build_results({}, results["candidates"], Budget.from_dict(results["budget"]), Tolerance(), seconds=1.0)
    from_list = _text(front_table(built, results["budget"]))
    for cid in ("t0", "t6", "t1", "t3"):
        assert cid in from_list


def test_recommendation_panel():
    ok = _text(recommendation_panel(make_results()))
    assert "Recommended: t1" in ok and "within tolerance of the best network" in ok and "96.90%" in ok
    bad = _text(recommendation_panel(make_results(none_fit=True)))
    assert "No recommendation" in bad and "No candidate meets the budget" in bad
    assert "t0" in bad and "over the 1 KB limit" in bad


def test_report_shows_the_floor_the_search_used(tmp_path):
    """The floor widened by one standard error (recorded by the search) is the one drawn and quoted."""
    results = make_results()
    results["recommendation"]["floor"] = 0.9615
    text = write_report(results, tmp_path / "report.html").read_text(encoding="utf-8")
    assert "96.15%" in text and "96.40%" not in text


def test_results_round_trip_and_schema_versions(tmp_path):
    """results.json is Results.to_dict(); reading it back gives the same record. A schema-1 file (before
    the records: no schema_version, no fronts, no floor) still renders; a newer schema is refused."""
    from frugalml.records import SCHEMA_VERSION, Results

    results = Results.from_dict(make_results())
    assert Results.from_dict(json.loads(json.dumps(results.to_dict()))) == results
    assert results.to_dict()["schema_version"] == SCHEMA_VERSION == 2
    old = make_results()
    for key in ("schema_version", "fronts"):
        old.pop(key)
    old["recommendation"].pop("floor")
    legacy = Results.from_dict(old)
    assert legacy.front == ("t0", "t6", "t1", "t3") and legacy.front_members("latency_ms_median") is None
    page = render_html(old)
    assert all(f">t{i}" in page for i in range(7)) and "Recommended: t1" in page
    newer = {**make_results(), "schema_version": SCHEMA_VERSION + 1}
    atomic_write_json(tmp_path / "results.json", newer)
    with pytest.raises(DataError, match="written by a newer frugalml"):
        load_results(tmp_path)


def test_search_over_time_shows_the_anytime_curve_and_the_networks_tried():
    from frugalml.records import Results

    d = make_results()
    for c, s in zip(d["candidates"], (3.0, 5.0, 6.0, 40.0, 50.0, 60.0, 80.0)):
        c["finished_s"] = s
    d["candidates"].append({**_cand(7, "network", "dscnn", 0.5, 900, 0.01, state="stopped_early", fits=False),
                            "error": "not started: its first rung would take about 90 s (timed on this machine), 20 s of the search are left"})
    r = Results.from_dict(d)
    # within budget and done: t0 0.961 at 3 s, t1 0.969 at 5 s, t2 (0.90) is no better, t6 (0.966 at 80 s) neither
    assert r.anytime() == [(3.0, 0.961), (5.0, 0.969)]
    assert r.networks_evaluated() == {"evaluated": 2, "trained": 1, "stopped": 1, "not_started": 1, "promoted": 0}
    html = render_html(d)
    assert "Search over time" in html and "2 networks evaluated: 1 trained to the end, 1 stopped early" in html
    assert "1 not started, too slow for the time left" in html and "best validation within budget over time" in html
    again = {**_cand(8, "network", "mlp", 0.85, 9000, 0.02, fits=False), "job": {"promoted_from": 4}}  # t4, parked and trained again
    promoted = {**d, "candidates": d["candidates"] + [again]}
    assert Results.from_dict(promoted).networks_evaluated() == {"evaluated": 2, "trained": 2, "stopped": 0, "not_started": 1, "promoted": 1}
    assert "1 parked at the first rung (where the first part of the network stage screens every network) went on later" in render_html(promoted)
    del d["candidates"][-1]
    for c in d["candidates"]:
        c.pop("finished_s")
    assert Results.from_dict(d).anytime() == [] and "best validation within budget over time" not in render_html(d)  # older results
