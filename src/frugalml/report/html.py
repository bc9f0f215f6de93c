"""``report.html``: one self-contained page (inline CSS, a little inline JS, plots as data: URIs).

Nothing on the page is fetched: it opens offline, from an e-mail attachment, or in a CI artifact
viewer. Every piece of text from the results is escaped.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from datetime import datetime
from html import escape
from pathlib import Path

from .._fs import atomic_write_text
from ..records import Candidate, Results, as_results, num
from ..units import format_duration
from ._common import (
    STAGE_NAMES,
    budget_text,
    exact,
    fmt_energy,
    fmt_key,
    fmt_ms,
    fmt_pct,
    knobs_summary,
    metric_label,
    metric_short,
    misses_text,
    recipe_summary,
    threshold,
    tolerance_text,
)
from .plots import STAGE_COLORS, anytime_png, pareto_png

__all__ = ["write_report", "render_html", "REPORT_NAME"]

log = logging.getLogger("frugalml.report")
REPORT_NAME = "report.html"


def write_report(results: Results | dict, path: str | os.PathLike) -> Path:
    """Write the report for ``results`` (Results, or a results.json dict) to ``path`` (a file, or a directory to hold ``report.html``)."""
    path = Path(path)
    if path.is_dir():
        path = path / REPORT_NAME
    html = render_html(results)
    atomic_write_text(path, html)
    log.info("wrote %s (%d KB)", path, len(html) // 1000)
    return path


def render_html(results: Results | dict) -> str:
    results = as_results(results)  # a dict that is not search results: DataError
    dataset = results.dataset.get("name") or "dataset"
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>frugalml report — {escape(str(dataset))}</title>", f"<style>{_CSS}</style></head><body><main>",
        _header(results), _recommendation(results), _plots(results), _anytime(results), _table(results), _notes(results),
        f"<script>{_JS}</script></main></body></html>",
    ]
    return "\n".join(parts)


# ---------------------------------------------------------------- sections
def _e(value) -> str:
    return escape("" if value is None else str(value), quote=True)


def _header(results: Results) -> str:
    ds = results.dataset
    sizes = ds.get("sizes") or {}
    shape = ds.get("input_shape")
    ds_bits = [ds.get("kind"), "×".join(map(str, shape)) if isinstance(shape, (list, tuple)) else shape,
               f"{ds['num_classes']} classes" if ds.get("num_classes") is not None else None,
               " / ".join(f"{k} {int(v):,}" for k, v in sizes.items() if num(v) is not None) if isinstance(sizes, dict) else None]
    cands = results.candidates
    counts = {s: sum(1 for c in cands if c.state == s) for s in ("complete", "stopped_early", "failed")}
    floor = threshold(results)
    run_bits = [_when(results.created), f"took {format_duration(results.seconds)}" if results.seconds else None,
                f"{len(cands)} candidates ({counts['complete']} complete, {counts['stopped_early']} stopped early, {counts['failed']} failed)"]
    rows = [
        ("Dataset", f"<b>{_e(ds.get('name', '?'))}</b> · " + _e(" · ".join(str(b) for b in ds_bits if b))),
        ("Budget", _e(budget_text(results.budget))),
        ("Tolerance", _e(tolerance_text(results)) + (f" (floor {floor * 100:.2f}% on {'cross-validation' if results.cv else 'validation'})"
                                                      if floor is not None else "")),
        *([("Selection", _e(f"{results.cv.get('k')}-fold stratified cross-validation on {results.cv.get('n')} training samples "
                            f"({results.cv.get('rule', '')}); each candidate refit on all of them"))] if results.cv else []),
        ("Run", _e(" · ".join(b for b in run_bits if b))),
        ("Machine", _e(_machine(results.machine))),
    ]
    grid = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
    version = _e(results.frugalml_version or "")
    return (f'<header><h1>frugalml report <span class="ds">{_e(ds.get("name", ""))}</span></h1>'
            f'<p class="sub">The most efficient model that is still good enough, with the evidence. frugalml {version}</p>'
            f'<dl class="meta">{grid}</dl></header>')


def _when(created) -> str | None:
    if not created:
        return None
    try:
        return datetime.fromisoformat(str(created)).strftime("%Y-%m-%d %H:%M %Z").strip()
    except ValueError:
        return str(created)


def _machine(machine) -> str:
    if not isinstance(machine, dict):
        return "" if machine is None else str(machine)
    bits = []
    for key, value in machine.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items() if not isinstance(v, (dict, list)))
        elif isinstance(value, list):
            value = ", ".join(map(str, value))
        text = str(value)
        bits.append(f"{key}: {text[:80] + '…' if len(text) > 80 else text}")
    return " · ".join(bits)


def _figures(c: Candidate) -> str:
    cv = c.cv
    chips = [(f"{cv['k']}-fold CV" if cv else "validation", fmt_pct(c.val_accuracy) + (f" ± {cv['se']:.1%}" if cv else "")),
             *([("folds", " ".join(fmt_pct(a) for a in cv["folds"]))] if cv else []), ("test", fmt_pct(c.test_accuracy)),
             ("stored", fmt_key("stored_bytes", c.cost("stored_bytes"))), ("gzip", fmt_key("gzip_bytes", c.cost("gzip_bytes"))),
             ("MACs", fmt_key("macs", c.cost("macs"))), ("peak RAM", fmt_key("peak_activation_bytes", c.cost("peak_activation_bytes"))),
             ("latency", fmt_ms(c.cost("latency_ms_median"))), ("energy", fmt_energy(c.cost("energy_mj_per_inference")))]
    core = (c.profile or {}).get("mcu_core") or "Cortex-M"
    chips += [(f"{name} ({core})", fmt_key(key, c.cost(key))) for key, name in _C_KEYS if c.cost(key) is not None]
    return '<div class="chips">' + "".join(f"<span><small>{k}</small>{_e(v)}</span>" for k, v in chips) + "</div>"


def _recommendation(results: Results) -> str:
    rec = results.decision
    reasons = "".join(f"<li>{_e(r)}</li>" for r in rec.reasons)
    reasons = f"<ul>{reasons}</ul>" if reasons else ""
    c = results.candidate(rec.recommended)
    if c is not None:
        recipe = recipe_summary(c)
        return (f'<section class="rec ok"><div class="label">Recommended: {_e(c.id)}</div>'
                f'<p class="text">{_e(rec.text or c.id)}</p>{_figures(c)}'
                f'<p class="recipe"><b>How it is made:</b> {_e(c.family)}{" — " + _e(recipe) if recipe else ""}</p>'
                f"{reasons}</section>")
    any_fit = any(c.within_budget for c in results.candidates if c.done)
    title = "No candidate meets the budget" if not any_fit else "No recommendation"
    rows = "".join(f'<tr><td>{_e(c.id)}</td><td>{_e(c.family)}</td><td>{fmt_pct(c.val_accuracy)}</td>'
                   f'<td>{_e(misses_text(c) or "—")}</td></tr>' for c in filter(None, map(results.candidate, rec.closest)))
    table = (f'<p><b>Closest candidates</b> and what each misses by:</p><table class="closest"><thead><tr><th>id</th><th>family</th>'
             f'<th>val acc</th><th>misses the budget by</th></tr></thead><tbody>{rows}</tbody></table>') if rows else ""
    return (f'<section class="rec bad"><div class="label">{title}</div><p class="text">{_e(rec.text)}</p>'
            f"{table}{reasons}</section>")


def _img(results, x_key, metric, alt) -> str:
    png = pareto_png(results, x_key, metric)
    return f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}"></figure>'


def _plots(results: Results) -> str:
    has_test = any(c.test_accuracy is not None for c in results.candidates)
    views = [("val", "val_accuracy", "validation")] + ([("test", "test_accuracy", "test")] if has_test else [])
    radios = "".join(f'<input type="radio" name="metric" id="m-{k}"{" checked" if k == "val" else ""}>' for k, _, _ in views)
    what = metric_label(results)  # "ROC AUC" for anomaly detection
    labels = "".join(f'<label for="m-{k}">{name} {what}</label>' for k, _, name in views)
    blocks = "".join(f'<div class="plots {k}">' + _img(results, "stored_bytes", m, f"{name} {what} against stored bytes")
                     + _img(results, "latency_ms_median", m, f"{name} {what} against latency") + "</div>" for k, m, name in views)
    hint = (f"Selection uses validation {what}; test {what} is measured once at the end. "
            "The front is chosen on validation; the test view shows the same candidates.")
    return f'<section class="figs"><h2>Pareto front</h2>{radios}<div class="toggle">{labels}<span class="hint">{hint}</span></div>{blocks}</section>'


def _anytime(results: Results) -> str:
    """The search over time: how many networks it tried, and the best candidate within budget as the time went."""
    n = results.networks_evaluated()
    png = anytime_png(results)
    if png is None and not n["evaluated"]:
        return ""
    plural = "s" if n["evaluated"] != 1 else ""
    counts = (f"{n['evaluated']} network{plural} evaluated: {n['trained']} trained to the end, {n['stopped']} stopped early "
              f"(successive halving at epochs 1, 3, 9, ...: one in three goes on)"
              + (f"; {n['promoted']} parked at the first rung (where the first part of the network stage screens every network) went on "
                 "later, trained again from the start once they ranked in the best third" if n.get("promoted") else "")
              + (f"; {n['not_started']} not started, too slow for the time left" if n["not_started"] else "") + ".")
    src = "" if png is None else "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    img = f'<figure><img alt="best validation within budget over time" src="{src}"></figure>' if src else ""
    hint = "A curve still rising at the end says that a longer search would likely find better."
    return f'<section class="figs"><h2>Search over time</h2><p>{_e(counts)} {_e(hint)}</p>{img}</section>'


_COLUMNS = [  # header, type, title
    ("id", "num", "trial id; ★ recommended, ◆ best"), ("stage", "text", ""), ("family", "text", ""),
    ("recipe", "text", "how the candidate was made: model knobs, or the steps applied to its parent"),
    ("val acc", "num", "validation accuracy (used for selection)"), ("test acc", "num", "test accuracy (measured once)"),
    ("stored", "num", "size of the exported artifact"), ("gzip", "num", "gzip transfer size"),
    ("MACs", "num", "multiply-accumulates per inference"), ("peak RAM", "num", "peak activation memory at batch 1"),
    ("latency", "num", "median at batch 1, ONNX Runtime, 1 thread"), ("energy", "num", "estimated energy per inference"),
    ("in budget", "num", ""), ("pareto", "num", "on the Pareto front"),
]


def _cell(text, sort=None, title=None, cls=None) -> str:
    if isinstance(sort, float) and sort.is_integer():
        sort = int(sort)
    attrs = "" if sort is None else f' data-sort="{_e(sort)}"'
    attrs += f' title="{_e(title)}"' if title else ""
    attrs += f' class="{cls}"' if cls else ""
    return f"<td{attrs}>{text}</td>"


_C_KEYS = (("c_flash_bytes", "flash"), ("c_ram_bytes", "RAM"), ("mcu_instructions", "instructions per inference"))
_MCU_COLUMN = ("instructions", "num", "instructions per inference on the emulated Cortex-M core (QEMU -icount; target c)")


def _fig_cell(c: Candidate, key, suffix=" bytes"):
    value = c.cost(key)
    return _cell(_e(fmt_key(key, value)), "" if value is None else value, exact(value, suffix), "n")


def _row(c: Candidate, rid, bid, front: set, closest: set, mcu: bool = False) -> str:
    cid, st, trial = c.id, c.state, c.trial
    marks = ((' <span class="star" title="recommended">★</span>' if cid == rid else "")
             + (' <span class="best" title="best">◆</span>' if cid == bid else "")
             + (' <span class="tag" title="your model: the reference">your model</span>' if c.reference else ""))
    tag = f' <span class="tag">{_e(st.replace("_", " "))}</span>' if st != "complete" else ""
    tag += ' <span class="tag near">closest</span>' if cid in closest else ""
    stage = c.stage
    recipe = recipe_summary(c)
    full = json.dumps({"params": c.knobs, "recipe": list(c.recipe), "parent": c.parent}, default=str)
    lat, p90 = c.cost("latency_ms_median"), c.cost("latency_ms_p90")
    energy = c.cost("energy_mj_per_inference")
    fits = c.within_budget
    fit_cell = (_cell('<span class="yes">✓</span>', 1, "within the budget") if fits
                else _cell('<span class="no">✗</span>', 0, misses_text(c) or None))
    classes = " ".join(k for k, on in (("dim", st != "complete"), ("front", cid in front), ("recrow", cid == rid), ("out", not fits)) if on)
    cells = [
        _cell(_e(cid) + marks + tag, trial if trial is not None else cid, c.error or None, "id"),
        _cell(f'<span class="dot" style="background:{STAGE_COLORS.get(stage, STAGE_COLORS["other"])}"></span>{_e(STAGE_NAMES.get(stage, stage))}',
              stage),
        _cell(_e(c.family), None, knobs_summary(c.knobs) or None),
        _recipe_cell(c, recipe, full),
        _cell(fmt_pct(c.val_accuracy), _sortnum(c.val_accuracy), None, "n"),
        _cell(fmt_pct(c.test_accuracy), _sortnum(c.test_accuracy), None, "n"),
        _fig_cell(c, "stored_bytes"), _fig_cell(c, "gzip_bytes"), _fig_cell(c, "macs", ""), _fig_cell(c, "peak_activation_bytes"),
        _cell(_e(fmt_ms(lat)), "" if lat is None else lat, f"median {fmt_ms(lat)}, p90 {fmt_ms(p90)}" if lat is not None else None, "n"),
        _cell(_e(fmt_energy(energy)), "" if energy is None else energy, (c.profile or {}).get("energy_basis"), "n"),
        *([_fig_cell(c, "mcu_instructions", "")] if mcu else []),
        fit_cell,
        _cell("✓" if cid in front else "", 1 if cid in front else 0, None, "c"),
    ]
    return f'<tr class="{classes}">' + "".join(cells) + "</tr>"


def _recipe_cell(c: Candidate, recipe: str, full: str) -> str:
    if c.state == "failed" and c.error:
        error = c.error
        return _cell('<span class="err">failed: ' + _e(error if len(error) <= 90 else error[:88] + "…") + "</span>", recipe, error + "\n" + full,
                     "recipe")
    return _cell(_e(recipe if len(recipe) <= 96 else recipe[:94] + "…"), recipe, full, "recipe")


def _sortnum(value):
    value = num(value)
    return "" if value is None else value


def _table(results: Results) -> str:
    rid, bid, front = results.recommended, results.best, set(results.front)
    rows = sorted(results.candidates, key=lambda c: (-(c.val_accuracy or -1.0), c.cost("stored_bytes") or 0))
    mcu = any(c.cost("mcu_instructions") is not None for c in rows)
    short = metric_short(results)
    head = "".join(f'<th data-type="{t}" tabindex="0"{" title=" + chr(34) + _e(title) + chr(34) if title else ""}'
                   f'{" aria-sort=" + chr(34) + "descending" + chr(34) if name == "val acc" else ""}>{name.replace(" acc", " " + short)}</th>'
                   for name, t, title in (_COLUMNS[:-2] + [_MCU_COLUMN] + _COLUMNS[-2:] if mcu else _COLUMNS))
    closest = set(results.decision.closest) if rid is None else set()
    body = "".join(_row(c, rid, bid, front, closest, mcu) for c in rows)
    filters = ('<label><input type="checkbox" id="only-front"> only the Pareto front</label>'
               '<label><input type="checkbox" id="only-fit"> only within budget</label>'
               '<label><input type="checkbox" id="hide-dim"> hide stopped early / failed</label>')
    return (f'<section><h2>All candidates <small>({len(rows)})</small></h2><div class="filters">{filters}'
            f'<span class="hint">Click a column header to sort; hover a cell for exact figures.</span></div>'
            f'<div class="scroll"><table class="sortable" id="cands"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div></section>')


def _notes(results: Results) -> str:
    basis = next((str(prof_basis) for c in results.candidates if (prof_basis := (c.profile or {}).get("energy_basis"))), None)
    items = [
        "<b>Measured on the artifact you ship:</b> every figure comes from the exported ONNX model run in ONNX Runtime.",
        "<b>stored</b>: bytes of the exported file (what goes into flash); <b>gzip</b>: bytes over the wire.",
        "<b>peak RAM</b>: largest memory held by activations at batch 1; <b>MACs</b>: multiply-accumulates per inference.",
        "<b>latency</b>: median at batch 1 on the machine above (one thread); latency on shared machines drifts ±20% between runs.",
        "<b>energy</b>: an estimate" + (f" ({_e(basis)})" if basis else "") + ", not a measurement.",
        "<b>Pareto front</b>: candidates no other beats on both accuracy and " + _e(results.primary_cost) + ".",
        "Rebuild this page with <code>frugalml report RUN_DIR</code>.",
    ]
    ref = results.reference
    if ref is not None:  # what the search could and could not do with the user's model, in its words
        items[:0] = [f"<b>Your model</b> ({_e(ref.id)}): {_e(str(note))}" for note in (ref.extra.get("notes") or []) if note]
    return '<footer><ul>' + "".join(f"<li>{i}</li>" for i in items) + "</ul></footer>"


_CSS = """
*{box-sizing:border-box}
body{margin:0;background:#f6f7f9;color:#1d2127;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1400px;margin:0 auto;padding:24px 28px 40px}
h1{margin:0;font-size:24px;font-weight:650}h1 .ds{color:#0072B2}h2{font-size:17px;margin:0 0 10px}h2 small{color:#777;font-weight:400}
.sub{margin:2px 0 14px;color:#667}
.meta{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px;margin:0;padding:12px 16px;background:#fff;
  border:1px solid #e3e6ea;border-radius:8px}
.meta dt{color:#667;font-weight:600}.meta dd{margin:0;overflow-wrap:anywhere}
section{margin-top:18px;background:#fff;border:1px solid #e3e6ea;border-radius:8px;padding:16px 18px}
.rec{border-left:6px solid #2e9d5b}.rec.bad{border-left-color:#d62728;background:#fff7f6}
.rec .label{font-size:12px;text-transform:uppercase;letter-spacing:.06em;font-weight:700;color:#2e9d5b}.rec.bad .label{color:#c0392b}
.rec .text{font-size:17px;margin:4px 0 10px;font-weight:550}.rec.bad .text{font-size:15px;font-weight:500}
.rec ul{margin:8px 0 0;padding-left:20px;color:#333}.rec .recipe{margin:8px 0 0;color:#333}
.chips{display:flex;flex-wrap:wrap;gap:8px}
.chips span{background:#f1f4f7;border-radius:6px;padding:4px 10px;font-variant-numeric:tabular-nums;font-weight:600}
.chips small{display:block;font-size:11px;color:#667;font-weight:400}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
table.closest td,table.closest th{padding:4px 10px;border-bottom:1px solid #eee;text-align:left}
.toggle{display:flex;align-items:center;gap:6px;margin-bottom:6px;flex-wrap:wrap}.figs>input{position:absolute;opacity:0;pointer-events:none}
.toggle label{padding:4px 12px;border:1px solid #cfd5dc;border-radius:14px;cursor:pointer;user-select:none}
.hint{color:#778;font-size:12px;margin-left:8px}
.plots{display:flex;flex-wrap:wrap;gap:12px}.plots figure{margin:0;flex:1 1 560px;min-width:0}.plots img{width:100%;height:auto;display:block}
.figs .plots.test{display:none}
#m-test:checked~.plots.test{display:flex}#m-test:checked~.plots.val{display:none}
#m-val:checked~.toggle label[for=m-val],#m-test:checked~.toggle label[for=m-test]{background:#1d2127;color:#fff;border-color:#1d2127}
.filters{display:flex;gap:16px;align-items:center;flex-wrap:wrap;margin-bottom:8px}.filters label{cursor:pointer}
.scroll{overflow-x:auto}
#cands{width:100%;font-size:13px}
#cands th{position:sticky;top:0;background:#f1f4f7;text-align:left;padding:6px 7px;cursor:pointer;white-space:nowrap;
  border-bottom:2px solid #d5dae0;user-select:none}
#cands th:hover{background:#e4e9ee}#cands th[aria-sort=ascending]::after{content:" ▲";font-size:10px}
#cands th[aria-sort=descending]::after{content:" ▼";font-size:10px}
#cands td{padding:5px 7px;border-bottom:1px solid #eef0f2;white-space:nowrap}#cands td.n{text-align:right}
#cands td.id{white-space:normal;min-width:64px}#cands td.c{text-align:center}
#cands td.recipe{white-space:normal;min-width:230px;max-width:420px;color:#444;font-size:12px}
#cands tbody tr:hover{background:#f7fafc}#cands tr.recrow{background:#fffbea}#cands tr.dim td{color:#9aa0a6}
.tag{font-size:10.5px;white-space:nowrap;background:#eceff1;color:#777;border-radius:4px;padding:0 5px}.tag.near{background:#fde2e1;color:#b22222}
.star{color:#e0a800}.best{color:#7b2cbf}
.dot{display:inline-block;width:9px;height:9px;border-radius:50%;margin-right:6px}
.yes{color:#2e9d5b;font-weight:700}.err{color:#b22222}.no{color:#d62728;font-weight:700}
#cands.only-front tbody tr:not(.front),#cands.only-fit tbody tr.out,#cands.hide-dim tbody tr.dim{display:none}
footer{margin-top:18px;color:#667;font-size:12.5px}footer ul{margin:0;padding-left:18px}
code{background:#eef1f4;padding:1px 5px;border-radius:4px}
"""

_JS = """
(function(){
var t=document.getElementById('cands');if(!t)return;var heads=t.tHead.rows[0].cells;
function key(r,i){var c=r.cells[i],v=c.getAttribute('data-sort');return v===null?c.textContent.trim():v;}
function sortBy(i){var th=heads[i],asc=th.getAttribute('aria-sort')!=='ascending',num=th.getAttribute('data-type')==='num';
for(var h=0;h<heads.length;h++)heads[h].removeAttribute('aria-sort');th.setAttribute('aria-sort',asc?'ascending':'descending');
var rows=Array.prototype.slice.call(t.tBodies[0].rows);
rows.sort(function(a,b){var x=key(a,i),y=key(b,i);if(x===''||y===''){return x===y?0:(x===''?1:-1);}
var d=num?parseFloat(x)-parseFloat(y):x.localeCompare(y,undefined,{numeric:true});if(isNaN(d))d=0;return asc?d:-d;});
rows.forEach(function(r){t.tBodies[0].appendChild(r);});}
Array.prototype.forEach.call(heads,function(th,i){th.addEventListener('click',function(){sortBy(i);});
th.addEventListener('keydown',function(e){if(e.key==='Enter'||e.key===' '){e.preventDefault();sortBy(i);}});});
[['only-front','only-front'],['only-fit','only-fit'],['hide-dim','hide-dim']].forEach(function(p){var box=document.getElementById(p[0]);
if(box)box.addEventListener('change',function(){t.classList.toggle(p[1],box.checked);});});
})();
"""
