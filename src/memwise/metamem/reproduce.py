"""``memwise reproduce metamem``: the paper's protocol end to end, resumable, in one report.

The protocol (``metamem.md``): a question set whose fragments are retrieved once from a factual memory;
``k`` folds (LongMemEval-S: 5 folds of 100 test / 50 validation / 350 train), each conversation whole in
one part (:mod:`memwise.metamem.splits`); per fold, train, pick the best step on validation and test with
and without the chosen rules; then mean and spread over folds per question type.

Layout under the run root: ``questions.jsonl`` (prepared once), ``memory.sqlite3`` (the factual memory),
``fold-<i>/`` (a run directory per fold: checkpoint, ledger, result), ``report.md`` and ``results.json``.
A re-run resumes every fold from its checkpoint, and the ledger replays every call already paid for, so
finishing a killed run costs only what was not done.

The cost estimate is computed from the data and the configuration before any model call, as an upper
bound: every question kept in every step (so every rollout is reflected on), judge retries left out.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from memwise.config import Settings
from memwise.exceptions import ConfigError
from memwise.facts.types import Conversation
from memwise.metamem.data import MetaQuestion, load_questions, save_questions
from memwise.metamem.splits import Fold, make_folds
from memwise.metamem.train_config import TrainConfig
from memwise.runs.files import write_text_atomic

# memwise.metamem.prepare's kinds, spelled here so that importing the CLI does not import the memory stack.
MEMORY_KINDS = ("memwise", "lightmem")


# Published figures (metamem.md, "Results to anchor on"): other models, other judges; shown beside ours
# for orientation, never as a like-for-like comparison.
PAPER_GAIN = "more than +3.6% over strong baselines (MetaMem abstract); largest on multi-session and temporal"
LIGHTMEM_LOCOMO = (
    ("FullText", 74.87),
    ("NaiveRAG", 66.95),
    ("MemoryOS", 61.04),
    ("A-MEM", 56.10),
    ("Mem0", 43.31),
)
LIGHTMEM_SETUP = "LightMem's LoCoMo table: qwen3-30b-a3b backbone, gpt-4o-mini judge, accuracy %"


@dataclass(frozen=True)
class ReproduceConfig:
    """The protocol around training: folds, question set construction, scoring."""

    folds: int = field(default=5, metadata={"help": "k folds; every question is tested in exactly one"})
    val_frac: float = field(
        default=0.1, metadata={"help": "validation share of the whole set per fold (paper: 50 of 500)"}
    )
    seed: int = field(default=0, metadata={"help": "seeds the fold assignment"})
    memory: str = field(
        default="memwise", metadata={"help": "factual memory: memwise (hybrid) or lightmem (LLM facts, cosine top-k)"}
    )
    top_k: int = field(default=20, metadata={"help": "memory fragments retrieved per question"})
    metric: str = field(default="judge", metadata={"help": "how answers are scored: judge, f1 or em"})

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise ConfigError(f"reproduce needs at least 2 folds, got folds={self.folds}")
        if self.memory not in MEMORY_KINDS:
            raise ConfigError(f"memory must be one of {', '.join(MEMORY_KINDS)}, got {self.memory!r}")
        if self.top_k < 1:
            raise ConfigError(f"top_k must be >= 1, got {self.top_k}")
        if not 0 <= self.val_frac < 1:
            raise ConfigError(f"val_frac must be in [0, 1), got {self.val_frac}")


@dataclass(frozen=True)
class StageCost:
    """An upper bound on one stage's calls and output tokens."""

    stage: str
    calls: int
    output_tokens: int


def plan_folds(questions: Sequence[MetaQuestion], config: ReproduceConfig) -> list[Fold]:
    """The folds of the protocol: ``val_frac`` of the set validates in each fold, capped at one chunk."""
    n_val = round(len(questions) * config.val_frac)
    n_val = min(max(n_val, 1 if config.val_frac else 0), len(questions) // config.folds)
    return make_folds(questions, k=config.folds, n_val=n_val, seed=config.seed)


def estimate_cost(folds: Sequence[Fold], train: TrainConfig, *, metric: str) -> list[StageCost]:
    """Calls and output tokens per stage, at most, for all folds (pure; no call is made).

    Per step of ``b`` questions: ``b*N`` rollouts, ``b*N`` judge calls, ``b*N`` reflections (every
    question assumed kept), ``b`` proposals and one consolidation. Validation answers every version
    (steps + 1) on the fold's validation questions; the test answers twice (with and without rules).
    Each call is charged its stage's budget (:meth:`TrainConfig.tokens`); evaluation answers and their
    judge calls use the rollout and judge budgets.
    """
    judged = metric == "judge"
    totals: dict[str, int] = dict.fromkeys(
        ("rollout", "judge", "reflect", "propose", "consolidate", "eval", "eval_judge"), 0
    )
    for fold in folds:
        n_train = len(fold.train_ids)
        batches = [min(train.batch_size, n_train - i) for i in range(0, n_train, train.batch_size)]
        steps = train.epochs * len(batches)
        per_epoch = sum(batches)
        totals["rollout"] += train.epochs * per_epoch * train.samples
        totals["judge"] += train.epochs * per_epoch * train.samples if judged else 0
        totals["reflect"] += train.epochs * per_epoch * train.samples
        totals["propose"] += train.epochs * per_epoch
        totals["consolidate"] += steps
        answers = (steps + 1) * len(fold.val_ids) + 2 * len(fold.test_ids)
        totals["eval"] += answers
        totals["eval_judge"] += answers if judged else 0
    budget = {
        "rollout": train.tokens("rollout"),
        "judge": train.tokens("judge"),
        "reflect": train.tokens("reflection"),
        "propose": train.tokens("proposal"),
        "consolidate": train.tokens("consolidation"),
        "eval": train.tokens("rollout"),
        "eval_judge": train.tokens("judge"),
    }
    return [StageCost(stage, calls, calls * budget[stage]) for stage, calls in totals.items()]


def render_estimate(costs: Sequence[StageCost]) -> str:
    """The estimate as a Markdown table (also printed before the run starts)."""
    lines = ["| stage | calls (at most) | output tokens (at most) |", "|---|---|---|"]
    lines += [f"| {c.stage} | {c.calls:,} | {c.output_tokens:,} |" for c in costs]
    lines.append(f"| total | {sum(c.calls for c in costs):,} | {sum(c.output_tokens for c in costs):,} |")
    return "\n".join(lines)


@dataclass(frozen=True)
class Spread:
    """Mean and spread of one accuracy over folds (folds without a score for it left out)."""

    mean: float | None
    std: float | None
    low: float | None
    high: float | None
    folds: int

    @staticmethod
    def of(values: Sequence[float | None]) -> Spread:
        """The spread of the folds that scored; the sample std (0 for one fold), since folds are a sample."""
        got = [v for v in values if v is not None]
        if not got:
            return Spread(None, None, None, None, 0)
        std = statistics.stdev(got) if len(got) > 1 else 0.0
        return Spread(statistics.fmean(got), std, min(got), max(got), len(got))

    def text(self) -> str:
        """As the report shows it, in percent: ``mean ± std [min-max]``, or ``-`` when no fold scored."""
        if self.mean is None or self.std is None:
            return "-"
        low, high = 100 * (self.low or 0.0), 100 * (self.high or 0.0)
        return f"{100 * self.mean:.1f} ± {100 * self.std:.1f} [{low:.1f}-{high:.1f}]"


def aggregate(fold_results: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Spread]]:
    """Per question type (and ``all``): the spread over folds of test accuracy without and with rules (pure)."""
    types: set[str] = set()
    for r in fold_results:
        for key in ("test_without_rules", "test_with_rules"):
            types |= set((r.get(key) or {}).get("by_type") or {})
    out: dict[str, dict[str, Spread]] = {}
    for qtype in [*sorted(types), "all"]:
        row: dict[str, Spread] = {}
        for key, name in (("test_without_rules", "without"), ("test_with_rules", "with")):
            values: list[float | None] = []
            for r in fold_results:
                part = r.get(key) or {}
                values.append(part.get("accuracy") if qtype == "all" else (part.get("by_type") or {}).get(qtype))
            row[name] = Spread.of(values)
        out[qtype] = row
    return out


def build_report(
    *,
    source: str,
    n_questions: int,
    folds: Sequence[Fold],
    config: ReproduceConfig,
    train: TrainConfig,
    costs: Sequence[StageCost],
    fold_results: Sequence[Mapping[str, Any]],
    models: Mapping[str, str],
) -> str:
    """report.md (pure): setup, estimate, per-type table with the paper column, per-fold results, anchors."""
    table = aggregate(fold_results)
    k = len(folds)
    lines = [
        "# MetaMem reproduction",
        "",
        f"Data: `{source}`, {n_questions} questions, {k} folds (test / validation / train per fold: "
        + ", ".join(f"{len(f.test_ids)}/{len(f.val_ids)}/{len(f.train_ids)}" for f in folds)
        + "); a conversation's questions always sit in one part.",
        f"Factual memory: {config.memory}, top-{config.top_k} fragments; metric: {config.metric}.",
        f"Training: epochs {train.epochs}, batch {train.batch_size}, samples {train.samples}, "
        f"temperature {train.temperature}, seed {train.seed}.",
        "Models: " + ", ".join(f"{role} {name}" for role, name in models.items()) + ".",
        "",
        "## Test accuracy by question type",
        "",
        f"Mean ± std over {k} folds [min-max], accuracy %. Each question is tested in exactly one fold.",
        "",
        "| question type | without rules | with rules | gain (mean) | paper (published, other models) |",
        "|---|---|---|---|---|",
    ]
    for qtype, row in table.items():
        without, with_rules = row["without"], row["with"]
        gain = (
            f"{100 * (with_rules.mean - without.mean):+.1f}"
            if with_rules.mean is not None and without.mean is not None
            else "-"
        )
        paper = PAPER_GAIN if qtype == "all" else "-"
        lines.append(f"| {qtype} | {without.text()} | {with_rules.text()} | {gain} | {paper} |")
    lines += ["", "## Per fold", "", "| fold | best step | without rules | with rules | rules |"]
    lines.append("|---|---|---|---|---|")
    for i, r in enumerate(fold_results):
        acc = [((r.get(key) or {}).get("accuracy")) for key in ("test_without_rules", "test_with_rules")]
        shown = ["-" if a is None else f"{100 * a:.1f}" for a in acc]
        n_rules = len(((r.get("rules") or {}).get("rules")) or [])
        lines.append(f"| {i} | {r.get('best_step')} | {shown[0]} | {shown[1]} | {n_rules} |")
    all_row = table["all"]
    lines += [
        "",
        "## Beside the published LoCoMo table",
        "",
        f"Published figures for other systems and models ({LIGHTMEM_SETUP}); ours on this data, for orientation.",
        "",
        "| system | accuracy % | source |",
        "|---|---|---|",
        f"| memwise, without rules | {all_row['without'].text()} | this run |",
        f"| memwise + MetaMem rules | {all_row['with'].text()} | this run |",
    ]
    lines += [f"| {name} | {value:.2f} | paper (published) |" for name, value in LIGHTMEM_LOCOMO]
    lines += ["", "## Cost estimate (computed before any call)", "", render_estimate(costs), ""]
    return "\n".join(lines)


def _stub_questions(
    path: Path, dataset: Literal["auto", "locomo", "longmemeval", "jsonl"], limit: int | None
) -> tuple[list[Conversation], list[MetaQuestion]]:
    """The conversations and their questions without fragments: enough to plan folds and cost, no call made."""
    from memwise.facts.readers import read_conversations
    from memwise.metamem.prepare import build_meta_question, selected_questions

    convs = read_conversations(path, dataset)[:limit]
    stubs = [build_meta_question(c, q, []) for c in convs for q in selected_questions(c, include_adversarial=False)]
    return convs, stubs


async def _prepare(
    convs: Sequence[Conversation], root: Path, settings: Settings, config: ReproduceConfig
) -> list[MetaQuestion]:
    from memwise.facts.memory import AsyncMemory
    from memwise.metamem.prepare import check_memory_kind, prepare_from_conversations

    kind = check_memory_kind(config.memory)
    if kind == "lightmem":
        # Its own database (facts, not turns) and a run directory whose ledger replays the extraction.
        memory = AsyncMemory.from_settings(settings, root / "memory-lightmem.sqlite3", run_dir=root / "extract")
    else:
        memory = AsyncMemory.from_settings(settings, root / "memory.sqlite3", with_llm=False)
    try:
        return await prepare_from_conversations(convs, memory=memory, top_k=config.top_k, kind=kind)
    finally:
        await memory.aclose()


async def reproduce_metamem(
    path: Path,
    root: Path,
    *,
    settings: Settings,
    dataset: Literal["auto", "locomo", "longmemeval", "jsonl"] = "auto",
    config: ReproduceConfig | None = None,
    train: TrainConfig | None = None,
    conversations: int | None = None,
    estimate_only: bool = False,
    echo: Callable[[str], None] = print,
) -> Path | None:
    """Run every fold (resuming each), then write ``report.md`` and ``results.json`` under ``root``.

    Returns the report's path, or ``None`` with ``estimate_only`` (the estimate is printed, no call made).
    """
    from memwise.llm.registry import ModelSet
    from memwise.metamem.pipeline import train_and_select
    from memwise.runs.rundir import RunDir

    config = config or ReproduceConfig()
    train = train or TrainConfig()
    convs, stubs = _stub_questions(path, dataset, conversations)
    if not stubs:
        raise ConfigError(f"{path} holds no questions to reproduce on")
    folds = plan_folds(stubs, config)
    costs = estimate_cost(folds, train, metric=config.metric)
    echo(f"{len(stubs)} questions, {len(folds)} folds. Cost estimate (upper bound, before any call):")
    echo(render_estimate(costs))
    if estimate_only:
        return None
    root.mkdir(parents=True, exist_ok=True)
    qfile = root / "questions.jsonl"
    if qfile.exists():
        questions = load_questions(qfile)
        made_by = {str(q.metadata.get("memory", "memwise")) for q in questions}
        if made_by - {config.memory}:
            raise ConfigError(
                f"{qfile} was prepared with memory {', '.join(sorted(made_by))}, not {config.memory}: "
                "use another --out for this memory, or move the file away to prepare again"
            )
    else:
        questions = await _prepare(convs, root, settings, config)
        save_questions(qfile, questions)
    by_id = {q.question_id: q for q in questions}
    missing = [qid for f in folds for qid in (*f.train_ids, *f.val_ids, *f.test_ids) if qid not in by_id]
    if missing:
        raise ConfigError(
            f"{qfile} lacks {len(missing)} planned questions (e.g. {missing[0]!r}): it was prepared from other "
            "data; move it away to prepare again"
        )
    fold_results: list[dict[str, Any]] = []
    for i, fold in enumerate(folds):
        echo(f"fold {i}: train {len(fold.train_ids)} / validation {len(fold.val_ids)} / test {len(fold.test_ids)}")
        with RunDir(root / f"fold-{i}", command="memwise reproduce metamem") as run:
            run.write_manifest(
                "memwise reproduce metamem",
                {"run": {"reproduce": config, "train": train, "fold": i}, "settings": settings},
            )
            models = ModelSet(settings)
            try:
                result = await train_and_select(
                    [by_id[q] for q in fold.train_ids],
                    [by_id[q] for q in fold.val_ids],
                    [by_id[q] for q in fold.test_ids],
                    policy=models.get("policy"),
                    judge=models.get("judge"),
                    optimizer=models.get("optimizer"),
                    run=run,
                    metric=config.metric,
                    config=train,
                )
            finally:
                await models.aclose()
        fold_results.append(result.to_dict())
    names = {role: settings.model(role).model or "(default)" for role in ("policy", "judge", "optimizer")}
    report = build_report(
        source=str(path),
        n_questions=len(questions),
        folds=folds,
        config=config,
        train=train,
        costs=costs,
        fold_results=fold_results,
        models=names,
    )
    out = root / "report.md"
    write_text_atomic(out, report)
    table = aggregate(fold_results)
    payload = {
        "config": {"reproduce": asdict(config), "train": asdict(train)},
        "folds": [f.to_dict() for f in folds],
        "by_type": {t: {k: asdict(v) for k, v in row.items()} for t, row in table.items()},
        "fold_results": [
            {k: r.get(k) for k in ("best_step", "rules", "test_with_rules", "test_without_rules")} for r in fold_results
        ],
        "estimate": [asdict(c) for c in costs],
        "paper": {"gain": PAPER_GAIN, "lightmem_locomo": dict(LIGHTMEM_LOCOMO), "setup": LIGHTMEM_SETUP},
    }
    write_text_atomic(root / "results.json", json.dumps(payload, indent=1, ensure_ascii=False, default=str))
    return out
