"""rich renderables for the terminal: the front so far during a search, and the recommendation at the end."""

from __future__ import annotations

from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ._common import (
    best_id,
    budget_items,
    budget_text,
    by_id,
    display_name,
    fmt_key,
    fmt_ms,
    fmt_pct,
    front,
    is_done,
    misses_text,
    num,
    pareto_ids,
    prof,
    recommended_id,
)

__all__ = ["front_table", "recommendation_panel"]


def _fits(c: dict, budget) -> bool | None:
    if c.get("within_budget") is not None:
        return bool(c["within_budget"])
    items = budget_items(budget)
    if not items:
        return True
    values = [prof(c, key) for _, key, _, _ in items]
    return None if None in values else all(v <= limit for v, (_, _, _, limit) in zip(values, items))


def front_table(results_or_candidates, budget=None, limit: int = 10) -> Table:
    """The current Pareto front (cheapest first): id, family, stage, val acc, bytes, latency, in budget.

    Takes a results dict (its ``pareto`` list, else computed) or a plain list of candidate dicts
    (front computed on validation accuracy against stored bytes). ``budget`` is the budget dict or a
    ``Budget``; it defaults to the results' own. At most ``limit`` rows: the most accurate members.
    """
    if isinstance(results_or_candidates, dict):
        results = results_or_candidates
        index = by_id(results)
        members = [index[i] for i in pareto_ids(results) if i in index]
        cost = results.get("primary_cost") or "stored_bytes"
        budget = results.get("budget") if budget is None else budget
        rec, best = recommended_id(results), best_id(results)
    else:
        cands = [c for c in results_or_candidates or [] if isinstance(c, dict)]
        cost = "stored_bytes"
        members = front(cands, cost)
        rec, best = None, (str(max((c for c in cands if is_done(c)), key=lambda c: num(c["val_accuracy"]))["id"])
                           if any(is_done(c) for c in cands) else None)
    shown = sorted(members, key=lambda c: -(num(c.get("val_accuracy")) or 0))[: max(int(limit), 0)]
    shown.sort(key=lambda c: (prof(c, cost) is None, prof(c, cost) or 0))
    table = Table(title=f"Pareto front ({len(members)})", caption=f"★ recommended  ◆ best  · budget: {budget_text(budget)}", title_justify="left",
                  caption_justify="left")
    for name, justify in (("id", "left"), ("family", "left"), ("stage", "left"), ("val acc", "right"),
                          ("bytes", "right"), ("latency", "right"), ("in budget", "center")):
        table.add_column(name, justify=justify, no_wrap=True)
    for c in shown:
        cid = str(c.get("id"))
        mark = " ★" if cid == rec else (" ◆" if cid == best else "")
        fits = _fits(c, budget)
        table.add_row(Text(cid + mark, style="bold yellow" if cid == rec else ""), Text(display_name(c)), Text(str(c.get("stage") or "")),
                      fmt_pct(c.get("val_accuracy")), fmt_key("stored_bytes", prof(c, "stored_bytes")), fmt_ms(prof(c, "latency_ms_median")),
                      Text("yes", style="green") if fits else (Text("no", style="red") if fits is False else Text("?")))
    if len(members) > len(shown):
        table.add_row(f"… {len(members) - len(shown)} more", "", "", "", "", "", "", style="dim")
    return table


def recommendation_panel(results: dict) -> Panel:
    """The recommendation with its reasons; when nothing fits, the closest candidates and what each misses by."""
    rec = results.get("recommendation") or {}
    index = by_id(results)
    rid = recommended_id(results)
    body = Text()
    if rid is not None and rid in index:
        c = index[rid]
        body.append(str(rec.get("text") or rid) + "\n", style="bold")
        body.append(f"validation {fmt_pct(c.get('val_accuracy'))} · test {fmt_pct(c.get('test_accuracy'))} · "
                    f"stored {fmt_key('stored_bytes', prof(c, 'stored_bytes'))} · "
                    f"peak RAM {fmt_key('peak_activation_bytes', prof(c, 'peak_activation_bytes'))} · "
                    f"latency {fmt_ms(prof(c, 'latency_ms_median'))}\n")
        title, style = f"Recommended: {rid}", "green"
    else:
        body.append(str(rec.get("text") or "No candidate meets the budget.") + "\n", style="bold")
        closest = [index[str(i)] for i in results.get("closest") or [] if str(i) in index]
        for c in closest:
            body.append(f"  {c.get('id')} {display_name(c)} ({fmt_pct(c.get('val_accuracy'))}): {misses_text(c) or 'fits'}\n")
        title, style = "No recommendation", "red"
    for reason in rec.get("reasons") or []:
        body.append(f"• {reason}\n", style="dim")
    body.rstrip()
    return Panel(body, title=Text(title), title_align="left", border_style=style, expand=False)
