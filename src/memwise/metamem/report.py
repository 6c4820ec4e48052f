"""The MetaMem run report: Markdown with a PNG of validation accuracy per step.

Built from what the run left on disk (``metamem/result.json`` and the ledger), so it can be made
again at any time, and for a run that another process trained.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from memwise.runs.ledger import StageStats, retries_line


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def build_markdown(result: Mapping[str, Any], stages: Mapping[str, StageStats], *, plot_name: str | None) -> str:
    """The report text (pure): validation by step, test by question type, rules, cost per stage."""
    lines = ["# MetaMem run report", ""]
    validation = result.get("validation") or {}
    best = result.get("best_step")
    if validation:
        lines += ["## Validation accuracy by step", ""]
        if plot_name:
            lines += [f"![validation accuracy per step]({plot_name})", ""]
        lines += ["| step | accuracy | scored | failures |", "|---|---|---|---|"]
        for step in sorted(validation, key=int):
            v = validation[step]
            mark = " (chosen)" if int(step) == best else ""
            lines.append(f"| {step}{mark} | {_fmt(v['accuracy'])} | {v['scored']} | {v['failures']} |")
        lines.append("")
    with_rules, without = result.get("test_with_rules"), result.get("test_without_rules")
    if with_rules and without:
        lines += [
            "## Test accuracy by question type",
            "",
            "| question type | without rules | with rules |",
            "|---|---|---|",
        ]
        for qtype in sorted(set(with_rules["by_type"]) | set(without["by_type"])):
            lines.append(
                f"| {qtype} | {_fmt(without['by_type'].get(qtype))} | {_fmt(with_rules['by_type'].get(qtype))} |"
            )
        lines.append(f"| all | {_fmt(without['accuracy'])} | {_fmt(with_rules['accuracy'])} |")
        lines.append("")
    rules = (result.get("rules") or {}).get("rules") or []
    lines += [f"## Chosen rules (step {best})", ""]
    lines += [f"- [{r['id']}] {r['text']}" for r in rules] or ["(no rules)"]
    lines.append("")
    steps = result.get("steps") or []
    if steps:
        lines += [
            "## Steps",
            "",
            "| step | kept | reflections | proposals | consolidation | applied | rejected | merged | rules |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for s in steps:
            lines.append(
                f"| {s['step']} | {len(s['kept_questions'])}/{len(s['question_ids'])} | {s['reflections']} | "
                f"{s['proposals']} | {s['consolidation']} | {s['applied']} | {s['rejected']} | {s['merged']} | "
                f"{s['rules_after']} |"
            )
        lines.append("")
    lines += [
        "## Model calls by stage",
        "",
        "| stage | calls | prompt tokens | completion tokens | errors | failures | retries |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, st in stages.items():
        lines.append(
            f"| {name} | {st.calls} | {st.prompt_tokens} | {st.completion_tokens} | {st.errors} | {st.failures} | "
            f"{st.retries_text()} |"
        )
    lines += ["", retries_line(stages) + " (failed attempts retried before a call succeeded: 429s, 5xx, timeouts)"]
    return "\n".join(lines) + "\n"


def plot_validation(result: Mapping[str, Any], path: Path) -> bool:
    """Validation accuracy per step as a PNG; False when there is nothing to plot or no matplotlib."""
    validation = result.get("validation") or {}
    points = sorted((int(k), v["accuracy"]) for k, v in validation.items() if v["accuracy"] is not None)
    if not points:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([p[0] for p in points], [p[1] for p in points], marker="o")
    best = result.get("best_step")
    for step, acc in points:
        if step == best:
            ax.annotate("chosen", (step, acc), textcoords="offset points", xytext=(0, 8), ha="center")
    ax.set_xlabel("step")
    ax.set_ylabel("validation accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_report(run_dir: Path, stages: Mapping[str, StageStats]) -> Path:
    """Write ``report.md`` (and ``validation.png``) into the run's ``metamem`` folder."""
    folder = run_dir / "metamem"
    result = json.loads((folder / "result.json").read_text())
    plotted = plot_validation(result, folder / "validation.png")
    out = folder / "report.md"
    out.write_text(build_markdown(result, stages, plot_name="validation.png" if plotted else None))
    return out
