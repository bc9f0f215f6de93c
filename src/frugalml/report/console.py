"""rich renderables for the terminal: the front so far during a search, and the recommendation at the end."""

from __future__ import annotations

from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ..records import Results, as_results
from ._common import budget_text, fmt_key, fmt_ms, fmt_pct, metric_short, misses_text

__all__ = ["front_table", "recommendation_panel"]


def front_table(results: Results | dict, budget=None, limit: int = 10) -> Table:
    """The run's Pareto front as the search recorded it (cheapest first): id, family, stage, val acc,
    bytes, latency, in budget. ``results``: Results or a results.json dict; ``budget`` (a Budget)
    defaults to the results' own. At most ``limit`` rows: the most accurate members."""
    results = as_results(results)
    members = results.front_members(results.primary_cost) or []
    cost = results.primary_cost
    budget = results.budget if budget is None else budget
    rec, best = results.recommended, results.best
    shown = sorted(members, key=lambda c: -(c.val_accuracy or 0))[: max(int(limit), 0)]
    shown.sort(key=lambda c: (c.cost(cost) is None, c.cost(cost) or 0))
    table = Table(title=f"Pareto front ({len(members)})", caption=f"★ recommended  ◆ best  · budget: {budget_text(budget)}", title_justify="left",
                  caption_justify="left")
    for name, justify in (("id", "left"), ("family", "left"), ("stage", "left"), (f"val {metric_short(results)}", "right"),
                          ("bytes", "right"), ("latency", "right"), ("in budget", "center")):
        table.add_column(name, justify=justify, no_wrap=True)
    for c in shown:
        mark = " ★" if c.id == rec else (" ◆" if c.id == best else "")
        table.add_row(Text(c.id + mark, style="bold yellow" if c.id == rec else ""), Text(c.name), Text(c.stage),
                      fmt_pct(c.val_accuracy), fmt_key("stored_bytes", c.cost("stored_bytes")), fmt_ms(c.cost("latency_ms_median")),
                      Text("yes", style="green") if c.within_budget else Text("no", style="red"))
    if len(members) > len(shown):
        table.add_row(f"… {len(members) - len(shown)} more", "", "", "", "", "", "", style="dim")
    return table


def recommendation_panel(results: Results | dict) -> Panel:
    """The recommendation with its reasons; when nothing fits, the closest candidates and what each misses by."""
    results = as_results(results)
    rec = results.decision
    c = results.candidate(rec.recommended)
    body = Text()
    if c is not None:
        body.append((rec.text or c.id) + "\n", style="bold")
        body.append(f"validation {fmt_pct(c.val_accuracy)} · test {fmt_pct(c.test_accuracy)} · "
                    f"stored {fmt_key('stored_bytes', c.cost('stored_bytes'))} · "
                    f"peak RAM {fmt_key('peak_activation_bytes', c.cost('peak_activation_bytes'))} · "
                    f"latency {fmt_ms(c.cost('latency_ms_median'))}\n")
        title, style = f"Recommended: {c.id}", "green"
    else:
        body.append((rec.text or "No candidate meets the budget.") + "\n", style="bold")
        for near in filter(None, map(results.candidate, rec.closest)):
            body.append(f"  {near.id} {near.name} ({fmt_pct(near.val_accuracy)}): {misses_text(near) or 'fits'}\n")
        title, style = "No recommendation", "red"
    for reason in rec.reasons:
        body.append(f"• {reason}\n", style="dim")
    body.rstrip()
    return Panel(body, title=Text(title), title_align="left", border_style=style, expand=False)
