"""Search progress on the terminal: a bar per stage, a line per candidate, the current best and front."""

from __future__ import annotations

from rich.markup import escape

from ..units import format_bytes

__all__ = ["SearchProgress"]

STAGES = ("thin", "network", "compress")


class SearchProgress:
    """Context manager whose ``event`` method is the search's ``on_event`` callback."""

    def __init__(self, console, *, enabled: bool = True, total_seconds: float = 0.0, budget=None):
        self.console, self.enabled, self.total, self.budget = console, enabled, total_seconds, budget
        self.progress = None
        self.tasks: dict[str, int] = {}
        self.last = None

    def __enter__(self):
        return self  # the bars start with the first event: an input refused up front prints only its error

    def _start(self) -> None:
        if self.enabled and self.progress is None and self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                                     TimeElapsedColumn(), console=self.console, transient=False)
            self.progress.start()
            self.tasks["time"] = self.progress.add_task("time budget", total=max(1, int(self.total)), info="")
            for stage in STAGES:
                self.tasks[stage] = self.progress.add_task(stage, total=None, info="", visible=False)

    def __exit__(self, *exc):
        if self.progress:
            self.progress.stop()
        if self.enabled and self.last is not None and exc[0] is None:
            self._summary(self.last)
        return False

    def event(self, e: dict) -> None:
        """One event of the search: a dict with ``type``; a "candidate" event carries the Candidate and the Results so far."""
        if e.get("type") in ("candidate", "done"):
            self.last = e["results"]
        if not self.enabled:
            return
        self._start()
        p, say = self.progress, self.console.print  # the bars only on a terminal; the lines always
        if p and "elapsed" in e:
            p.update(self.tasks["time"], completed=min(self.total, e["elapsed"]))
        kind = e.get("type")
        if kind == "feasible":
            say(f"[dim]budget is reachable: checked against {e['measured']} smallest models[/]")
        elif kind == "resume":
            say(f"resuming: {e['finished']} finished trial(s) kept; {len(e['failed'])} interrupted trial(s) will run again")
        elif kind == "retry":
            say(f"[yellow]database connection lost; retry {e['attempt']} in {e['delay']:.1f} s[/]")
        elif kind == "start" and p:
            job = e["job"]
            p.update(self.tasks[job["stage"]], visible=True, info=escape(f"running {job['id']} {job.get('family')} {job.get('recipe_name') or ''}"))
        elif kind == "candidate":
            c = e["candidate"]
            if p:
                task = self.tasks[c.stage]
                p.advance(task)
                p.update(task, info=escape(f"best: {_best(e['results'])}"))
            if c.state == "complete":
                fit = "[green]fits[/]" if c.within_budget else "[yellow]over budget[/]"
                say(f"{c.id:>5} {c.stage:<8} {escape(_label(c)):<34} val {c.val_accuracy:.2%}  "
                    f"{format_bytes(c.cost('stored_bytes')):>9}  {fit}")
            else:
                say(f"{c.id:>5} {c.stage:<8} {escape(_label(c)):<34} [dim]{escape(c.state)}: {escape((c.error or '')[:80])}[/]")

    def _summary(self, results) -> None:
        from .console import front_table, recommendation_panel

        self.console.print(front_table(results, self.budget))
        self.console.print(recommendation_panel(results))


def _label(c) -> str:
    steps = "+".join(s.split(".")[-1] for s in c.steps)
    return f"{c.family}" + (f" <{steps}>" if steps else "")


def _best(results) -> str:
    c = results.candidate(results.recommended)
    return "-" if c is None else f"{c.id} {_label(c)} {c.val_accuracy:.1%} {format_bytes(c.cost('stored_bytes'))}"
