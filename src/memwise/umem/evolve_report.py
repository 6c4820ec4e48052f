"""Summaries and reports of an online evolution run: per-epoch figures, curves, Markdown and plots.

Everything here works from the per-task records alone, so a report can be rebuilt from
``records.jsonl`` after the fact, and resumed runs report the same figures as uninterrupted ones.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memwise.exceptions import ConfigError
from memwise.runs.files import write_text_atomic
from memwise.runs.ledger import StageStats, retries_line
from memwise.umem.bank import BankStats

if TYPE_CHECKING:
    from memwise.umem.evolve import TaskRecord

__all__ = [
    "EpochSummary",
    "EvolveSummary",
    "ReportFiles",
    "build_markdown",
    "cumulative_accuracy",
    "failures_text",
    "plot_stream",
    "repairs_text",
    "stream_band",
    "summarise",
    "wilson_interval",
    "write_report",
]

WRITE_COUNTERS = ("added", "merged", "updated", "evicted")
"""The bank counters a task's writes change (the others count reads)."""


# -- pure: summary ------------------------------------------------------------------------------


def cumulative_accuracy(records: Sequence[TaskRecord]) -> list[float]:
    """Success rate of the first 1, 2, ..., n records: the paper's curve over a task stream.

    Example:
        >>> from memwise.umem.evolve import TaskRecord
        >>> rec = lambda ok: TaskRecord(1, 0, 0, "t", ok, None, "", 0, 1, None, 0, (), (), 0, 0, None, None, None, 0)
        >>> cumulative_accuracy([rec(True), rec(False), rec(True), rec(True)])
        [1.0, 0.5, 0.6666666666666666, 0.75]
    """
    out: list[float] = []
    wins = 0
    for n, record in enumerate(records, start=1):
        wins += record.success
        out.append(wins / n)
    return out


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


@dataclass(frozen=True)
class EpochSummary:
    """One epoch's figures; ``complete`` is False for an epoch the run stopped inside."""

    epoch: int
    tasks: int
    complete: bool
    successes: int
    accuracy: float
    mean_progress: float | None
    mean_steps: float
    mean_tokens: float
    adds: int
    updates: int
    format_failures: int
    bank_size: int


@dataclass(frozen=True)
class EvolveSummary:
    """The figures of a run so far: per epoch, along the stream, the optimizer's output and the bank.

    ``epoch_curves`` holds the cumulative accuracy within each epoch (one list per epoch);
    ``cumulative_accuracy`` runs over the whole stream. ``format_failures`` counts malformed optimizer
    replies by reason; ``actions`` counts ADD, UPDATE and malformed (``"none"``). ``bank`` is the
    bank's counters rebuilt from the records, so they hold across resumed processes. ``mode`` is the
    run mode (see :mod:`memwise.umem.baselines`), ``chance`` the accuracy of guessing (multiple
    choice only) and ``outcomes`` the success of each task along the stream, for plots and intervals.
    """

    suite: str
    tasks_per_epoch: int
    epochs_planned: int
    completed: int
    total: int
    accuracy: float | None
    epochs: list[EpochSummary]
    cumulative_accuracy: list[float]
    epoch_curves: list[list[float]]
    format_failures: dict[str, int]
    actions: dict[str, int]
    bank: BankStats
    bank_size: int
    stages: dict[str, StageStats] = field(default_factory=dict)
    repaired: int = 0
    mode: str = "umem"
    chance: float | None = None
    outcomes: list[bool] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        """Whether every task of the run has a record."""
        return self.completed == self.total

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, ``finished`` included."""
        out = asdict(self)
        out["finished"] = self.finished
        return out


def summarise(
    records: Sequence[TaskRecord],
    *,
    suite: str,
    tasks_per_epoch: int,
    epochs: int,
    stages: Mapping[str, StageStats] | None = None,
    mode: str = "umem",
    chance: float | None = None,
) -> EvolveSummary:
    """The run summary from its records (pure); ``stages`` are the ledger's per-stage call totals."""
    if tasks_per_epoch < 1:
        raise ConfigError(f"summarise: tasks_per_epoch must be at least 1, got {tasks_per_epoch}")
    by_epoch: dict[int, list[TaskRecord]] = {}
    for record in records:
        by_epoch.setdefault(record.epoch, []).append(record)
    epoch_rows = []
    for epoch, rows in sorted(by_epoch.items()):
        progress = [r.progress for r in rows if r.progress is not None]
        epoch_rows.append(
            EpochSummary(
                epoch=epoch,
                tasks=len(rows),
                complete=len(rows) == tasks_per_epoch,
                successes=sum(r.success for r in rows),
                accuracy=sum(r.success for r in rows) / len(rows),
                mean_progress=_mean(progress),
                mean_steps=sum(r.steps for r in rows) / len(rows),
                mean_tokens=sum(r.tokens for r in rows) / len(rows),
                adds=sum(1 for r in rows if r.action == "ADD"),
                updates=sum(1 for r in rows if r.action is not None and r.action.startswith("UPDATE")),
                format_failures=sum(1 for r in rows if r.format_failure is not None),
                bank_size=rows[-1].bank_size,
            )
        )
    failures = Counter(r.format_failure for r in records if r.format_failure is not None)
    # A record without action nor failure asked no Mem-Optimizer (a baseline mode): it is not "malformed".
    actions = Counter(
        r.action.split()[0] if r.action is not None else "none" for r in records if r.action or r.format_failure
    )
    bank = BankStats(
        retrievals=len(records),
        hits=sum(r.retrieved for r in records),
        dropped_by_floor=sum(r.dropped_by_floor for r in records),
        **{name: sum(r.bank_changes.get(name, 0) for r in records) for name in WRITE_COUNTERS},
    )
    curve = cumulative_accuracy(records)
    return EvolveSummary(
        suite=suite,
        tasks_per_epoch=tasks_per_epoch,
        epochs_planned=epochs,
        completed=len(records),
        total=tasks_per_epoch * epochs,
        accuracy=curve[-1] if curve else None,
        epochs=epoch_rows,
        cumulative_accuracy=curve,
        epoch_curves=[cumulative_accuracy(rows) for _, rows in sorted(by_epoch.items())],
        format_failures=dict(sorted(failures.items())),
        actions={key: actions.get(key, 0) for key in ("ADD", "UPDATE", "none")},
        bank=bank,
        bank_size=records[-1].bank_size if records else 0,
        stages=dict(stages or {}),
        repaired=sum(1 for r in records if r.repaired),
        mode=mode,
        chance=chance,
        outcomes=[r.success for r in records],
    )


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a success rate (95% by default); (0, 1) when n is 0.

    Wilson rather than the normal approximation: it stays inside [0, 1] and is sensible for the
    small n at the start of a stream and for rates near 0 or 1.

    Example:
        >>> [round(x, 3) for x in wilson_interval(8, 10)]
        [0.49, 0.943]
    """
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def repairs_text(summary: EvolveSummary) -> str | None:
    """One wording for repaired replies, shared by the report and the CLI (None when there were none)."""
    if not summary.repaired:
        return None
    return (
        f"{summary.repaired} malformed replies were repaired by a schema-constrained second request and their "
        "action applied (still counted as format failures)"
    )


def failures_text(summary: EvolveSummary) -> str | None:
    """One wording for format failures, shared by the report and the CLI (None when there were none).

    Only the failures no repair rescued left the bank unchanged, so the line says how many those are.
    """
    if not summary.format_failures:
        return None
    total = sum(summary.format_failures.values())
    reasons = ", ".join(f"{reason}: {n}" for reason, n in summary.format_failures.items())
    unchanged = total - summary.repaired
    return (
        f"Mem-Optimizer format failures: {reasons} ({unchanged} left the bank unchanged, {summary.repaired} repaired)"
    )


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def build_markdown(summary: EvolveSummary, *, plots: Sequence[str] = (), plot_note: str | None = None) -> str:
    """The report text (pure): per-epoch table, curve, optimizer format failures, bank, model calls."""
    state = "finished" if summary.finished else f"stopped after {summary.completed} of {summary.total} tasks"
    if summary.completed:
        low, high = wilson_interval(sum(summary.outcomes), len(summary.outcomes))
        interval = f" (95% interval {low:.3f}-{high:.3f})" if summary.outcomes else ""
    else:
        interval = ""
    chance = "" if summary.chance is None else f" Chance level {summary.chance:.3f}."
    lines = [
        f"# UMEM online evolution: {summary.suite}" + ("" if summary.mode == "umem" else f" ({summary.mode})"),
        "",
        f"{summary.tasks_per_epoch} tasks per epoch, {summary.epochs_planned} epoch(s), {state}. "
        f"Stream accuracy {_fmt(summary.accuracy)}{interval}.{chance}",
        "",
        "## Accuracy by epoch",
        "",
        "| epoch | tasks | accuracy | mean progress | mean steps | mean tokens | ADD | UPDATE | malformed | bank |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in summary.epochs:
        label = f"{e.epoch}" if e.complete else f"{e.epoch} (partial)"
        lines.append(
            f"| {label} | {e.tasks} | {_fmt(e.accuracy)} | {_fmt(e.mean_progress)} | {_fmt(e.mean_steps, 1)} | "
            f"{_fmt(e.mean_tokens, 1)} | {e.adds} | {e.updates} | {e.format_failures} | {e.bank_size} |"
        )
    lines.append("")
    if plots:
        lines += [f"![{Path(name).stem.replace('_', ' ')}]({name})" for name in plots] + [""]
    if plot_note:
        lines += [plot_note, ""]
    lines += ["## Mem-Optimizer replies", ""]
    if summary.mode not in ("umem", "no-train"):
        lines.append(f"Mode {summary.mode}: no Mem-Optimizer is called.")
    lines.append(
        ", ".join(f"{k}: {v}" for k, v in summary.actions.items())
        + " (none = malformed and not repaired, bank unchanged)"
    )
    for text in (repairs_text(summary), failures_text(summary)):
        if text:
            lines.append("")
            lines.append(text + ".")
    lines.append("")
    if summary.format_failures:
        lines += ["| format failure | count |", "|---|---|"]
        lines += [f"| {reason} | {n} |" for reason, n in summary.format_failures.items()]
        lines.append("")
    b = summary.bank
    lines += [
        "## Insight bank",
        "",
        f"{summary.bank_size} entries at the end; {b.added} added, {b.merged} merged into an entry with the same "
        f"key, {b.updated} updated, {b.evicted} evicted. Retrievals returned {b.hits} entries over "
        f"{b.retrievals} tasks; {b.dropped_by_floor} top-K hits fell under the similarity floor.",
        "",
        "## Model calls by stage",
        "",
        "| stage | calls | prompt tokens | completion tokens | latency s | errors | failures | retries |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, st in summary.stages.items():
        lines.append(
            f"| {name} | {st.calls} | {st.prompt_tokens} | {st.completion_tokens} | {st.latency_s:.1f} | "
            f"{st.errors} | {st.failures} | {st.retries_text()} |"
        )
    lines += ["", retries_line(summary.stages) + " (failed attempts retried before a call succeeded)"]
    return "\n".join(lines) + "\n"


# -- I/O: report --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportFiles:
    """What :func:`write_report` wrote; ``plot_note`` says why plots are missing, when they are."""

    summary_json: Path
    report_md: Path
    plots: list[Path]
    plot_note: str | None = None


def stream_band(outcomes: Sequence[bool]) -> tuple[list[float], list[float], list[float]]:
    """Cumulative accuracy along a stream and its 95% Wilson band, point by point (pure)."""
    curve: list[float] = []
    low: list[float] = []
    high: list[float] = []
    wins = 0
    for n, ok in enumerate(outcomes, start=1):
        wins += ok
        curve.append(wins / n)
        a, b = wilson_interval(wins, n)
        low.append(a)
        high.append(b)
    return curve, low, high


def plot_stream(
    path: Path,
    lines: Mapping[str, Sequence[bool]],
    *,
    title: str,
    tasks_per_epoch: int,
    chance: float | None = None,
) -> Path:
    """One plot of cumulative accuracy for several runs on one stream, the x axis running on across epochs.

    Each line gets its 95% Wilson band; epochs are marked by dotted rules, and a dashed rule shows
    chance level when there is one (multiple choice). ``lines`` maps a label to the stream's
    per-task outcomes, in stream order.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7.0, 4.0))
    longest = max((len(o) for o in lines.values()), default=0)
    for label, outcomes in lines.items():
        if not outcomes:
            continue
        curve, low, high = stream_band(outcomes)
        xs = list(range(1, len(curve) + 1))
        # Line2D keywords, typed loosely: plot's stubs give each keyword its own type.
        style: dict[str, Any] = {"linestyle": "--", "color": "black"} if label == "no memory" else {}
        (drawn,) = ax.plot(xs, curve, marker="." if len(curve) < 60 else None, label=label, **style)
        ax.fill_between(xs, low, high, alpha=0.15, color=drawn.get_color(), linewidth=0)
    for boundary in range(tasks_per_epoch, longest, tasks_per_epoch):
        ax.axvline(boundary + 0.5, color="grey", linestyle=":", linewidth=1)
    if chance is not None:
        ax.axhline(chance, color="red", linestyle="--", linewidth=1, label=f"chance ({chance:.2f})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("tasks seen along the stream (epochs marked by dotted lines)")
    ax.set_ylabel("cumulative accuracy (95% band)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _plot(summary: EvolveSummary, folder: Path, baselines: Mapping[str, Sequence[bool]]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []
    label = "UMEM" if summary.mode == "umem" else summary.mode
    written.append(
        plot_stream(
            folder / "cumulative_accuracy.png",
            {label: summary.outcomes, **baselines},
            title=f"{summary.suite}: cumulative accuracy along the stream",
            tasks_per_epoch=summary.tasks_per_epoch,
            chance=summary.chance,
        )
    )

    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    xs = [e.epoch for e in summary.epochs]
    ax.plot(xs, [e.accuracy for e in summary.epochs], marker="o", label="success rate")
    progress = [(e.epoch, e.mean_progress) for e in summary.epochs if e.mean_progress is not None]
    if progress:
        ax.plot([p[0] for p in progress], [p[1] for p in progress], marker="s", label="progress rate")
        ax.legend(fontsize="small")
    ax.set_xticks(xs)
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{summary.suite}: accuracy per epoch")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = folder / "epoch_accuracy.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    written.append(path)
    return written


def write_report(
    folder: Path, summary: EvolveSummary, baselines: Mapping[str, Sequence[bool]] | None = None
) -> ReportFiles:
    """Write ``summary.json``, the two PNG plots and ``report.md`` into ``folder``.

    ``baselines`` are other runs' outcomes on the same stream (e.g. ``{"no memory": [...]}``), drawn
    beside this run's curve. Plots need matplotlib (``memwise[plots]``); without it the JSON and
    Markdown are still written and the report says the plots were skipped.
    """
    summary_json = write_text_atomic(
        folder / "summary.json", json.dumps(summary.to_dict(), indent=2, ensure_ascii=False) + "\n"
    )
    note: str | None = None
    plots: list[Path] = []
    if summary.completed:
        try:
            plots = _plot(summary, folder, dict(baselines or {}))
        except ImportError:
            note = "Plots skipped: matplotlib is not installed (`pip install 'memwise[plots]'`)."
    else:
        note = "No task finished yet: nothing to plot."
    text = build_markdown(summary, plots=[p.name for p in plots], plot_note=note)
    report_md = write_text_atomic(folder / "report.md", text)
    return ReportFiles(summary_json=summary_json, report_md=report_md, plots=plots, plot_note=note)
