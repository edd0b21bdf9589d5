"""Progress reporting: the engine calls a reporter; the CLI and notebooks show it with rich.

    reporter = RichReporter()            # done/total, rate, ETA, cost so far, per step
    run_plan(plan, reporter=reporter)
"""

from __future__ import annotations


class NullReporter:
    def step_start(self, step_id: str, kind: str, total: int | None) -> None: ...
    def add_total(self, step_id: str, n: int) -> None: ...
    def shards(self, step_id: str, done: int, total: int) -> None: ...
    def advance(self, step_id: str, n: int, cost_usd: float = 0.0, cached: bool = False) -> None: ...
    def step_end(self, step_id: str, summary: str) -> None: ...
    def restart(self, step_id: str) -> None: ...  # a new pass over the shards (mode: batch teachers)
    def message(self, text: str) -> None: ...
    def batches(self, teacher: str, rows: list[dict], waited_s: float) -> None: ...
    def close(self) -> None: ...


class RichReporter(NullReporter):
    """One rich progress bar per step, all live at once (steps stream side by side); totals grow as
    shards reach a step. Updates are throttled by rich's own refresh rate."""

    def __init__(self, console=None):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description:<22}"),
            BarColumn(bar_width=28),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>9}"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TimeElapsedColumn(),
            TextColumn("${task.fields[cost]:.4f}"),
            TextColumn("{task.fields[note]}"),
            console=self.console,
            transient=False,
            refresh_per_second=5,
        )
        self.tasks: dict[str, int] = {}
        self.progress.start()

    def step_start(self, step_id, kind, total):
        if step_id in self.tasks:
            self.progress.update(self.tasks[step_id], total=total)
            return
        self.tasks[step_id] = self.progress.add_task(f"{step_id} ({kind})", total=total, rate="", cost=0.0, note="")

    def add_total(self, step_id, n):
        tid = self.tasks.get(step_id)
        if tid is not None and n:
            task = self.progress.tasks[tid]
            self.progress.update(tid, total=(task.total or 0) + n)

    def shards(self, step_id, done, total):
        tid = self.tasks.get(step_id)
        if tid is not None:
            self.progress.update(tid, note=f"shard {done}/{total}")

    def advance(self, step_id, n, cost_usd=0.0, cached=False):
        tid = self.tasks.get(step_id)
        if tid is None:
            return
        task = self.progress.tasks[tid] if tid < len(self.progress.tasks) else None
        rate = ""
        if task is not None and task.speed:
            rate = f"{task.speed:.1f}/s"
        self.progress.update(tid, advance=n, cost=cost_usd, rate=rate)

    def step_end(self, step_id, summary):
        tid = self.tasks.get(step_id)
        if tid is not None:
            t = self.progress.tasks[tid]
            self.progress.update(tid, completed=t.total or t.completed, note=summary)

    def restart(self, step_id):
        tid = self.tasks.get(step_id)
        if tid is not None:
            self.progress.reset(tid, total=0, completed=0)  # (fields given here would replace them all)

    def batches(self, teacher, rows, waited_s):
        """One bar per provider batch: lines completed+failed of total, its status and failures."""
        for r in rows:
            name = f"batch:{r['submission']}"
            done = r["completed"] + r["failed"]
            note = f"{r['provider_status'] or r['state']}, {r['failed']} failed, waiting {waited_s:.0f}s"
            if name not in self.tasks:
                label = f"{teacher} {(r['batch_id'] or 'creating')[-8:]}"
                self.tasks[name] = self.progress.add_task(label, total=r["n_requests"], rate="", cost=0.0, note="")
            self.progress.update(self.tasks[name], completed=done, note=note,
                                 cost=r["cost_usd"] if r["state"] == "collected" else r["est_cost_usd"])

    def message(self, text):
        self.progress.console.print(text)

    def close(self):
        self.progress.stop()
