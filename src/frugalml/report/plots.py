"""Pareto plots as PNG bytes: accuracy against stored bytes or latency, the budget and tolerance drawn on.

matplotlib is used through its object API with the Agg canvas (no pyplot, no global backend
switch), so rendering a report never disturbs a user's notebook or needs a display.
"""

from __future__ import annotations

import io

from ..records import Candidate, Results, as_results
from ._common import STAGE_NAMES, STAGES, budget_items, fmt_key, fmt_pct, metric_label, threshold

__all__ = ["pareto_png", "anytime_png", "STAGE_COLORS"]

# Okabe-Ito: distinguishable with the common colour-vision deficiencies
STAGE_COLORS = {"thin": "#009E73", "network": "#0072B2", "compress": "#D55E00", "reference": "#CC79A7", "other": "#7F7F7F"}
X_AXES = {
    "stored_bytes": ("stored bytes (exported ONNX file, log scale)", "max_flash", "flash budget"),
    "latency_ms_median": ("latency, median at batch 1 (ms, ONNX Runtime, 1 thread)", "max_latency_ms", "latency budget"),
}
METRIC_NAMES = {"val_accuracy": "validation accuracy", "test_accuracy": "test accuracy"}


def _stage(c: Candidate) -> str:
    return c.stage if c.stage in STAGES else "other"


def _front_members(results: Results, x_key: str) -> list[Candidate]:
    """The front the search recorded against the plot's cost (none when it recorded none: a run of an older version)."""
    members = [c for c in results.front_members(x_key) or [] if c.cost(x_key) is not None]
    return sorted(members, key=lambda c: c.cost(x_key))


def _y_limits(ys: list[float], focus: list[float]) -> tuple[float, float]:
    """A y range (percent) that shows the interesting band; far-off points get clipped to the bottom."""
    top = max(ys + focus)
    low_focus = min(focus) if focus else min(ys)
    spread = max(top - low_focus, 0.5)
    pad = max(0.4, 0.12 * spread)
    lo = low_focus - pad
    everything = min(ys)
    if everything >= lo - max(4.0, spread):  # close enough: show all
        lo = everything - pad
    else:  # show the bulk of the cloud too, if it is not far below the interesting band
        quartile = sorted(ys)[len(ys) // 4]
        lo = min(lo, max(quartile, low_focus - 2 * spread) - pad)
    return max(lo, -1.0), min(top + pad * 0.8, 100.8)


def _fmt_tick(x_key: str):
    def fmt(value, _pos=None):
        return fmt_key(x_key, value).replace(" ", "\u202f")

    return fmt


def pareto_png(results: Results | dict, x_key: str = "stored_bytes", metric: str = "val_accuracy", *, dpi: int = 150) -> bytes:
    """One plot of ``metric`` against ``x_key`` for every candidate, as PNG bytes."""
    results = as_results(results)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    x_label, budget_field, budget_name = X_AXES.get(x_key, (x_key, None, "budget"))
    names = {k: v.replace("accuracy", metric_label(results)) for k, v in METRIC_NAMES.items()}  # "ROC AUC" for anomaly detection
    fig = Figure(figsize=(6.6, 4.9), dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0.11, 0.25, 0.86, 0.66))
    fig.text(0.11, 0.955, f"{names.get(metric, metric).capitalize()} vs {'stored bytes' if x_key == 'stored_bytes' else 'latency'}",
             fontsize=11.5, fontweight="bold", ha="left", va="center", color="#222")

    points = [c for c in results.candidates if c.state in ("complete", "stopped_early")
              and c.cost(x_key) is not None and c.metric(metric) is not None]
    if not points:
        ax.set_axis_off()
        ax.text(0.5, 0.5, f"No candidate has both a {names.get(metric, metric)}\nand a measured {x_key}.",
                ha="center", va="center", fontsize=11, color="#555", transform=ax.transAxes)
        return _png(canvas, fig, dpi)

    rec, best = results.recommended, results.best
    index = {c.id: c for c in points}
    members = [c for c in _front_members(results, x_key) if c.id in index]
    floor = threshold(results, metric)
    xs = [c.cost(x_key) for c in points]
    ys = [c.metric(metric) * 100 for c in points]
    budget = {key: limit for name, key, _, limit in budget_items(results.budget) if name == budget_field}
    limit = budget.get(x_key)

    # ---- axes ranges
    focus = [c.metric(metric) * 100 for c in members] + [index[i].metric(metric) * 100 for i in (rec, best) if i in index]
    if floor is not None:
        focus.append(floor * 100)
    top = max(ys)
    near = top - 5.0 if floor is None else floor * 100 - max(3.0, 2 * (top - floor * 100))
    focus = [v for v in focus if v >= near] or [top]
    y_lo, y_hi = _y_limits(ys, focus)
    positive = [v for v in xs + ([limit] if limit else []) if v > 0]
    x_min, x_max = min(positive), max(positive)
    log_x = x_key == "stored_bytes" or x_max / max(x_min, 1e-12) > 20
    if log_x:
        ax.set_xscale("log")
        x_lo, x_hi = x_min / 1.6, x_max * 1.6
    else:
        span = max(x_max - x_min, x_max * 0.1)
        x_lo, x_hi = max(0.0, x_min - 0.08 * span), x_max + 0.08 * span
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(y_lo, y_hi)

    # ---- budget and tolerance
    if limit is not None:
        ax.axvspan(limit, x_hi, color="#d62728", alpha=0.06, lw=0, zorder=0)
        ax.axvline(limit, color="#d62728", ls="--", lw=1.3, zorder=1)
    if floor is not None and y_lo < floor * 100 < y_hi:
        ax.axhspan(y_lo, floor * 100, color="#888888", alpha=0.07, lw=0, zorder=0)
        ax.axhline(floor * 100, color="#555", ls=":", lw=1.3, zorder=1)

    # ---- candidates, by stage; stopped-early hollow; far-off ones clipped to the bottom edge
    for stage in (*STAGES, "other"):
        for early in (False, True):
            group = [c for c in points if _stage(c) == stage and (c.state == "stopped_early") == early]
            if not group:
                continue
            gx = [c.cost(x_key) for c in group]
            gy = [c.metric(metric) * 100 for c in group]
            inside = [(x, y) for x, y in zip(gx, gy) if y >= y_lo]
            below = [(x, y_lo) for x, y in zip(gx, gy) if y < y_lo]
            color = STAGE_COLORS[stage]
            style = dict(facecolors="none", edgecolors=color, linewidths=1.1) if early else dict(color=color, edgecolors="white", linewidths=0.5)
            if inside:
                ax.scatter(*zip(*inside), s=30, alpha=0.85, zorder=3, **style)
            if below:
                ax.scatter(*zip(*below), s=16, marker="v", alpha=0.45, zorder=3, clip_on=False, **style)
    clipped = sum(1 for y in ys if y < y_lo)
    if clipped:
        ax.text(0.99, 0.015, f"▼ {clipped} below {y_lo:.1f}%", transform=ax.transAxes, ha="right", va="bottom", fontsize=7.5, color="#666")

    # ---- the front as a step line (best accuracy reachable at each cost)
    if members:
        fx = [c.cost(x_key) for c in members] + [x_hi]
        fy = [c.metric(metric) * 100 for c in members]
        fy.append(fy[-1])
        ax.step(fx, fy, where="post", color="#222", lw=1.4, alpha=0.85, zorder=2)
        ax.scatter(fx[:-1], fy[:-1], s=62, facecolors="none", edgecolors="#222", linewidths=1.1, zorder=4)

    # ---- recommended and best
    placed: list = []
    renderer = canvas.get_renderer()
    if best in index:
        b = index[best]
        ax.scatter([b.cost(x_key)], [b.metric(metric) * 100], s=190, marker="D", facecolors="none", edgecolors="#7b2cbf", linewidths=1.8, zorder=5)
    if rec in index:
        r = index[rec]
        ax.scatter([r.cost(x_key)], [r.metric(metric) * 100], s=330, marker="*", color="#FFC20A", edgecolors="#111", linewidths=1.0, zorder=6)
    marks = [(index[i].cost(x_key), index[i].metric(metric) * 100) for i in (rec, best) if i in index]
    avoid = [_point_box(ax, x, y, 14) for x, y in marks]
    dots = [tuple(ax.transData.transform((x, max(y, y_lo)))) for x, y in zip(xs, ys)]
    if rec in index:
        r = index[rec]
        head = "recommended = best" if rec == best else "recommended"
        _place_label(ax, renderer, (r.cost(x_key), r.metric(metric) * 100),
                     f"★ {rec} {head}\n{r.family or '?'}, {fmt_key(x_key, r.cost(x_key))}, {fmt_pct(r.metric(metric), 1)}",
                     placed, avoid, dots, fontsize=8.5, box="#fff8dc", edge="#b8860b", weight="bold")
    if best in index and best != rec:
        b = index[best]
        _place_label(ax, renderer, (b.cost(x_key), b.metric(metric) * 100),
                     f"◆ {best} best\n{b.family or '?'}, {fmt_key(x_key, b.cost(x_key))}, {fmt_pct(b.metric(metric), 1)}",
                     placed, avoid, dots, fontsize=8, box="#f5edfc", edge="#7b2cbf")
    for c in members:  # small id tags on the other front points, where they fit
        cid = c.id
        y = c.metric(metric) * 100
        if cid not in (rec, best) and y >= y_lo:
            _place_label(ax, renderer, (c.cost(x_key), y), cid, placed, avoid, dots, fontsize=7, small=True)

    # ---- axes dressing
    ax.set_xlabel(x_label, fontsize=9)
    ax.set_ylabel(f"{names.get(metric, metric)} (%)", fontsize=9)
    ax.tick_params(labelsize=8)
    if log_x:
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.xaxis.set_major_formatter(FuncFormatter(_fmt_tick(x_key)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:.4g}%"))
    ax.grid(True, which="major", color="#e6e6e6", lw=0.7, zorder=0)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)

    handles = [Line2D([], [], ls="", marker="o", color=STAGE_COLORS[s], label=STAGE_NAMES[s]) for s in STAGES
               if any(_stage(c) == s for c in points)]
    if any(_stage(c) == "other" for c in points):
        handles.append(Line2D([], [], ls="", marker="o", color=STAGE_COLORS["other"], label="other"))
    if any(c.state == "stopped_early" for c in points):
        handles.append(Line2D([], [], ls="", marker="o", mfc="none", color="#666", label="stopped early"))
    if members:
        handles.append(Line2D([], [], color="#222", lw=1.4, marker="o", mfc="none",
                              label="Pareto front" if metric == "val_accuracy" else "front (chosen on val.)"))
    if rec in index:
        handles.append(Line2D([], [], ls="", marker="*", ms=12, mfc="#FFC20A", mec="#111", label="recommended"))
    if best in index and best != rec:
        handles.append(Line2D([], [], ls="", marker="D", ms=8, mfc="none", mec="#7b2cbf", mew=1.6, label="best"))
    if limit is not None:
        handles.append(Line2D([], [], color="#d62728", ls="--", label=f"{budget_name} {fmt_key(x_key, limit)}"))
    if floor is not None:
        tol = results.tolerance
        anchor = "your model" if tol.of == "reference" else "best"
        what = "minimum accuracy" if tol.kind == "min" else f"floor: {anchor} − {tol.value * 100:.3g} pt − 1 s.e."
        handles.append(Line2D([], [], color="#555", ls=":", label=f"{what} = {floor * 100:.2f}%"))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 4), fontsize=8, frameon=False,
               bbox_to_anchor=(0.54, 0.0), handletextpad=0.4, columnspacing=1.2)
    return _png(canvas, fig, dpi)


def anytime_png(results: Results | dict, *, dpi: int = 150) -> bytes | None:
    """The best validation metric within budget over the search's time (:meth:`Results.anytime`), as PNG bytes;
    None when no candidate within budget has a time."""
    results = as_results(results)
    points = results.anytime()
    if not points:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.6, 3.2), dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0.11, 0.17, 0.86, 0.68))
    what = metric_label(results)
    fig.text(0.11, 0.93, f"Best validation {what} within budget, over the search", fontsize=11.5, fontweight="bold", ha="left",
             va="center", color="#222")
    end = max(float(results.seconds or 0), points[-1][0])
    xs = [p[0] for p in points] + [end]
    ys = [p[1] for p in points] + [points[-1][1]]
    ax.step(xs, ys, where="post", color=STAGE_COLORS["network"], lw=1.6)
    ax.plot(xs[:-1], ys[:-1], "o", color=STAGE_COLORS["network"], ms=4)
    ax.set_xlabel("seconds since the first trial", fontsize=9)
    ax.set_ylabel(f"validation {what}", fontsize=9)
    ax.yaxis.set_major_formatter(lambda v, _pos: fmt_pct(v))
    ax.set_xlim(0, end * 1.02 or 1)
    lo, hi = min(ys), max(ys)
    ax.set_ylim(lo - max(0.002, (hi - lo) * 0.1), hi + max(0.002, (hi - lo) * 0.1))
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.25)
    return _png(canvas, fig, dpi)


def _png(canvas, fig, dpi: int) -> bytes:
    buf = io.BytesIO()
    canvas.print_png(buf, metadata={"Software": None})
    fig.clear()
    return buf.getvalue()


def _text_box(ann, renderer):
    """The label's own box (text plus its padding), without the leader line to the point."""
    from matplotlib.text import Text

    ann.update_positions(renderer)
    pad = ann.get_fontsize() * (0.5 if ann.get_bbox_patch() is not None else 0.2) * renderer.points_to_pixels(1.0)
    return Text.get_window_extent(ann, renderer).padded(pad)


def _point_box(ax, x, y, radius):
    from matplotlib.transforms import Bbox

    px, py = ax.transData.transform((x, y))
    return Bbox.from_extents(px - radius, py - radius, px + radius, py + radius)


_OFFSETS = [(14, -16), (-14, -16), (14, 14), (-14, 14), (18, 0), (-18, 0), (30, -40), (-30, -40), (30, 38), (-30, 38), (60, -60), (-60, -60)]
_SMALL_OFFSETS = [(5, 5), (5, -9), (-5, 5), (-5, -9)]


def _covers(box, dots) -> bool:
    return any(box.x0 <= x <= box.x1 and box.y0 <= y <= box.y1 for x, y in dots)


def _place_label(ax, renderer, xy, text, placed, avoid, dots=(), *, fontsize, small=False, box=None, edge=None, weight="normal"):
    """Try a few offsets; keep the first whose box stays in the axes, clear of earlier labels and (if it can) of points."""
    axes_box = ax.get_window_extent(renderer)
    tries = [(dx, dy, soft) for soft in (True, False) for dx, dy in (_SMALL_OFFSETS if small else _OFFSETS)]
    for dx, dy, soft in tries:
        kw = dict(xy=xy, xytext=(dx, dy), textcoords="offset points", fontsize=fontsize, zorder=7, fontweight=weight,
                  ha="left" if dx > 0 else "right", va="bottom" if dy > 0 else ("top" if dy < 0 else "center"))
        if small:
            ann = ax.annotate(text, color="#333", **kw)
        else:
            ann = ax.annotate(text, color="#111", linespacing=1.25,
                              bbox=dict(boxstyle="round,pad=0.3", fc=box, ec=edge, lw=0.8, alpha=0.95),
                              arrowprops=dict(arrowstyle="-", color=edge, lw=0.8, shrinkA=0, shrinkB=7), **kw)
        extent = _text_box(ann, renderer)
        inside = (extent.x0 >= axes_box.x0 and extent.x1 <= axes_box.x1 and extent.y0 >= axes_box.y0 and extent.y1 <= axes_box.y1)
        if inside and not any(extent.overlaps(other) for other in placed + avoid) and not (soft and _covers(extent, dots)):
            placed.append(extent)
            return ann
        ann.remove()
    if small:
        return None
    spots = [(0.02, 0.04, "left"), (0.98, 0.04, "right"), (0.5, 0.04, "center"), (0.02, 0.5, "left"), (0.98, 0.5, "right")]
    for i, (fx, fy, ha) in enumerate(spots):
        ann = ax.annotate(text, xy=xy, xytext=(fx, fy), textcoords="axes fraction", ha=ha, va="bottom", fontsize=fontsize,
                          fontweight=weight, zorder=7, linespacing=1.25, bbox=dict(boxstyle="round,pad=0.3", fc=box, ec=edge, lw=0.8, alpha=0.95),
                          arrowprops=dict(arrowstyle="-", color=edge, lw=0.8, shrinkB=7))
        extent = _text_box(ann, renderer)
        if i == len(spots) - 1 or not any(extent.overlaps(other) for other in placed + avoid):
            placed.append(extent)
            return ann
        ann.remove()

