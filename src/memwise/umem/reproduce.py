"""UMEM's evaluation protocol end to end: every baseline and ablation on the same streams, one report.

For each suite the same tasks, in the same order and with the same seeds, are streamed through one
online evolution run per *method* (a sub-run directory ``<out>/<suite>/<method>``):

- baselines: ``no-memory`` (the executor alone), ``no-train`` (the UMEM step with the untrained base
  model as Mem-Optimizer), ``raw-trajectory`` (raw past attempts retrieved by similarity);
- ``umem``: the trained Mem-Optimizer (the ``optimizer`` model role);
- ablations: Mem-Optimizers trained without SNM, with N = 1 or N = 5 neighbours, or with the
  released reward form (``memwise umem train --no-snm | --neighbours N | --form released``), each
  served under its own model name and given as ``ablations={"no-snm": "<model>", ...}``. Training
  needs a GPU and trl, so it is not started here: an ablation without a model is listed in the report
  as not run, with the command that trains it.

Each sub-run is an :func:`~memwise.umem.evolve.evolve` run, so it resumes where it stopped and a
finished one costs nothing again (its calls replay from its ledger). Before any call the cost is
estimated from the task counts and the token budgets and passed to ``echo``. The report
(``report.md``, ``results.json`` and one plot per suite with every method) puts the paper's published
figures (:data:`PAPER`, from the UMEM paper's GPT-5.1 tables) in a column beside ours, labelled as
figures for other models and data.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from memwise.config import ModelConfig, Settings
from memwise.exceptions import ConfigError
from memwise.llm.base import ChatModel
from memwise.runs.files import write_text_atomic
from memwise.runs.rundir import RunDir
from memwise.tasks.types import Task
from memwise.umem.baselines import OPTIMIZER_MODES, Mode
from memwise.umem.evolve import chance_level
from memwise.umem.evolve_config import EXECUTOR_STAGE, OPTIMIZER_STAGE, EvolveConfig
from memwise.umem.evolve_report import EvolveSummary, plot_stream, wilson_interval, write_report
from memwise.umem.evolve_steps import REPAIR_MAX_TOKENS
from memwise.umem.executor import PROMPT_STYLES, PromptStyle
from memwise.umem.executors import ALFWORLD_MAX_STEPS, check_suite, is_env_suite
from memwise.umem.optimizer import build_optimizer_messages

__all__ = [
    "ABLATIONS",
    "PAPER",
    "Method",
    "MethodCost",
    "ReproduceUMEMConfig",
    "build_report",
    "estimate_cost",
    "plan_methods",
    "render_estimate",
    "reproduce_umem",
]

BASELINES: tuple[tuple[str, str, Mode], ...] = (
    ("no-memory", "No memory", "no-memory"),
    ("no-train", "No-Train (untrained base model as Mem-Optimizer)", "no-train"),
    ("raw-trajectory", "Raw-trajectory retrieval", "raw-trajectory"),
    ("umem", "UMEM (trained Mem-Optimizer)", "umem"),
)

ABLATIONS: dict[str, tuple[str, str]] = {
    "no-snm": ("without SNM (reward on the task itself)", "--no-snm"),
    "n1": ("N = 1 neighbour", "--neighbours 1"),
    "n5": ("N = 5 neighbours", "--neighbours 5"),
    "released-form": ("released reward form (vs. no memory)", "--form released"),
}
"""Ablation key: (label, the `memwise umem train` flag that trains its Mem-Optimizer)."""

PAPER: dict[str, str] = {
    "no-memory": "45.36 avg; ALFWorld SR 61.94",
    "no-train": "-",
    "raw-trajectory": "54.71 avg (best baseline, Memp)",
    "umem": "57.74 avg; ALFWorld SR 82.84",
    "no-snm": "AIME -10 points vs. UMEM",
    "n1": "N = 3 beats N = 1 (no figure given)",
    "n5": "N = 3 beats N = 5 (no figure given)",
    "released-form": "-",
}
"""The UMEM paper's published figures (GPT-5.1 executor, UMEM-Qwen3-4B; averages over AIME, GPQA,
HLE, HotpotQA and ALFWorld SR/PR), from docs/umem.md. Other models and data: for orientation only."""

PAPER_NOTE = (
    "The paper column holds the UMEM paper's published figures (GPT-5.1 executor, Qwen3-4B Mem-Optimizer, "
    "average over its six benchmark cells). They were measured with other models and data: read them for "
    "orientation, not as a target our numbers must hit."
)

PROMPT_TOKENS_PER_CHAR = 0.25
"""Rough tokens per character of English and math text, for the prompt side of the estimate."""
EXECUTOR_OVERHEAD_TOKENS = 150
LESSON_TOKENS = 60


@dataclass(frozen=True)
class ReproduceUMEMConfig:
    """The protocol's settings, shared by every method so they differ only in what they are."""

    epochs: int = field(default=1, metadata={"help": "passes over each stream (the paper repeats ALFWorld 10 times)"})
    top_k: int = field(default=3, metadata={"help": "entries retrieved per task (paper: 3)"})
    similarity_floor: float = field(default=0.5, metadata={"help": "drop hits below this cosine (released: 0.5)"})
    max_tokens: int = field(default=1024, metadata={"help": "executor completion budget (QA suites)"})
    optimizer_max_tokens: int = field(default=1024, metadata={"help": "Mem-Optimizer completion budget"})
    repair: bool = field(default=True, metadata={"help": "one schema-constrained retry after a malformed reply"})
    prompt_style: PromptStyle = field(
        default="paper", metadata={"help": "executor prompt: paper (\\boxed{} / option letter) or generic"}
    )
    seed: int = field(default=0, metadata={"help": "GPQA's option order"})
    limit: int | None = field(default=None, metadata={"help": "use only the first N tasks of each suite"})

    def __post_init__(self) -> None:
        if self.prompt_style not in PROMPT_STYLES:
            raise ConfigError(f"prompt_style must be one of {', '.join(PROMPT_STYLES)}, got {self.prompt_style!r}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be at least 1, got {self.limit}")
        self.evolve_config("mmlu", "umem")  # EvolveConfig checks the rest

    def evolve_config(self, suite: str, mode: Mode) -> EvolveConfig:
        """The evolution settings of one sub-run."""
        return EvolveConfig(
            suite=suite,
            epochs=self.epochs,
            top_k=self.top_k,
            similarity_floor=self.similarity_floor,
            max_tokens=self.max_tokens,
            optimizer_max_tokens=self.optimizer_max_tokens,
            repair=self.repair,
            mode=mode,
            prompt_style=self.prompt_style,
        )


@dataclass(frozen=True)
class Method:
    """One row of the report: its folder name, label, run mode and the Mem-Optimizer model it uses.

    ``optimizer`` is ``"optimizer"`` (the configured role), ``"baseline"`` (the untrained base model),
    a served model name (an ablation), or None (no Mem-Optimizer call).
    """

    key: str
    label: str
    mode: Mode
    group: str
    optimizer: str | None = None
    train_flag: str | None = None

    @property
    def runnable(self) -> bool:
        """An ablation without a served model cannot run; every other method can."""
        return self.group != "ablation" or self.optimizer is not None


def plan_methods(ablations: Mapping[str, str]) -> list[Method]:
    """Baselines, UMEM, then every known ablation (with its served model when ``ablations`` names one)."""
    unknown = sorted(set(ablations) - set(ABLATIONS))
    if unknown:
        raise ConfigError(f"unknown ablation(s) {', '.join(unknown)}; known: {', '.join(ABLATIONS)}")
    methods = []
    for key, label, mode in BASELINES:
        optimizer = {"no-train": "baseline", "umem": "optimizer"}.get(key)
        methods.append(Method(key, label, mode, "method" if key == "umem" else "baseline", optimizer))
    for key, (label, flag) in ABLATIONS.items():
        methods.append(Method(key, f"UMEM {label}", "umem", "ablation", ablations.get(key), flag))
    return methods


# -- cost ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MethodCost:
    """Upper bounds of one sub-run's model calls and tokens, from task counts and token budgets."""

    suite: str
    method: str
    executor_calls: int
    optimizer_calls: int
    repair_calls: int
    prompt_tokens: int
    completion_tokens: int


def estimate_cost(
    suites: Mapping[str, Sequence[Task]], methods: Sequence[Method], config: ReproduceUMEMConfig
) -> list[MethodCost]:
    """Calls and tokens each runnable sub-run may spend (pure).

    Completion tokens are budgets (every reply using its whole ``max_tokens``), so they bound the
    cost from above; prompt tokens are estimated from the tasks' text (about 4 characters a token)
    plus the lessons shown, so they are approximate. ALFWorld counts one call per step, 30 steps.
    """
    from memwise.umem.executor import build_executor_messages

    costs = []
    for suite, tasks in suites.items():
        env = is_env_suite(suite)
        steps = ALFWORLD_MAX_STEPS if env else 1
        exec_budget = 16 if env else config.max_tokens
        task_chars = sum(len(m.content) for t in tasks for m in build_executor_messages(t, []))
        opt_chars = sum(len(m.content) for t in tasks for m in build_optimizer_messages(t.prompt, [], "", False))
        for method in methods:
            if not method.runnable:
                continue
            runs = len(tasks) * config.epochs
            shown = 0 if method.mode == "no-memory" else config.top_k * LESSON_TOKENS
            executor_calls = runs * steps
            prompt = int(task_chars * PROMPT_TOKENS_PER_CHAR * config.epochs * steps) + executor_calls * shown
            completion = executor_calls * exec_budget
            optimizer_calls = repairs = 0
            if method.mode in OPTIMIZER_MODES:
                optimizer_calls = runs
                repairs = runs if config.repair else 0
                trajectory = config.max_tokens if not env else steps * 40
                prompt += int(opt_chars * PROMPT_TOKENS_PER_CHAR * config.epochs) + runs * (shown + trajectory)
                prompt += repairs * int(opt_chars * PROMPT_TOKENS_PER_CHAR / max(len(tasks), 1) + shown + trajectory)
                completion += optimizer_calls * config.optimizer_max_tokens + repairs * REPAIR_MAX_TOKENS
            costs.append(MethodCost(suite, method.key, executor_calls, optimizer_calls, repairs, prompt, completion))
    return costs


def render_estimate(costs: Sequence[MethodCost]) -> str:
    """The estimate as the command prints it before the first call."""
    lines = ["Cost estimate (upper bounds; prompt tokens approximate):"]
    for c in costs:
        lines.append(
            f"  {c.suite}/{c.method}: {c.executor_calls} executor + {c.optimizer_calls} optimizer calls "
            f"(+ up to {c.repair_calls} repairs), ~{c.prompt_tokens:,} prompt + <= {c.completion_tokens:,} "
            "completion tokens"
        )
    calls = sum(c.executor_calls + c.optimizer_calls + c.repair_calls for c in costs)
    prompt = sum(c.prompt_tokens for c in costs)
    completion = sum(c.completion_tokens for c in costs)
    lines.append(f"  total: <= {calls:,} calls, ~{prompt:,} prompt + <= {completion:,} completion tokens")
    return "\n".join(lines)


# -- report -------------------------------------------------------------------------------------


def _cell(result: Mapping[str, Any] | None) -> str:
    if result is None:
        return "not run"
    if not result["n"]:
        return "-"
    low, high = result["interval"]
    text = f"{100 * result['accuracy']:.1f} [{100 * low:.1f}-{100 * high:.1f}]"
    if result.get("mean_progress") is not None:
        text += f", PR {100 * result['mean_progress']:.1f}"
    return text + ("" if result["finished"] else " (partial)")


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _average(results: Mapping[str, Mapping[str, Any]], key: str, suites: Sequence[str]) -> str:
    values = [results[s][key]["accuracy"] for s in suites if key in results[s] and results[s][key]["n"]]
    if len(values) != len(suites) or not values:
        return "-"
    return f"{100 * sum(values) / len(values):.1f}"


def build_report(
    results: Mapping[str, Mapping[str, Mapping[str, Any]]],
    methods: Sequence[Method],
    *,
    chance: Mapping[str, float | None],
    tasks: Mapping[str, int],
    plots: Sequence[str] = (),
    estimate: str = "",
) -> str:
    """``report.md`` (pure): the main table, the ablation table, calls per sub-run, the paper column.

    ``results[suite][method]`` is a sub-run's figures (see :func:`method_result`); a method without
    an entry was not run.
    """
    suites = list(results)
    head = "| method | " + " | ".join(f"{s} ({tasks[s]})" for s in suites) + " | average | paper (published) |"
    rule = "|---" * (len(suites) + 3) + "|"
    lines = [
        "# UMEM reproduction",
        "",
        "Accuracy in % with its 95% Wilson interval, every method on the same task stream (same order, same "
        "seeds). ALFWorld cells give the success rate and the progress rate (PR).",
        "",
        PAPER_NOTE,
        "",
        "Chance level: " + ", ".join(f"{s} {_percent(chance[s])}" for s in suites) + " (multiple choice only).",
        "",
        "## Baselines and UMEM",
        "",
        head,
        rule,
    ]
    for m in methods:
        if m.group == "ablation":
            continue
        cells = " | ".join(_cell(results[s].get(m.key)) for s in suites)
        lines.append(f"| {m.label} | {cells} | {_average(results, m.key, suites)} | {PAPER[m.key]} |")
    lines += ["", "## Ablations (Mem-Optimizers trained differently)", "", head, rule]
    umem_cells = " | ".join(_cell(results[s].get("umem")) for s in suites)
    lines.append(f"| UMEM (SNM, N = 3, paper form) | {umem_cells} | {_average(results, 'umem', suites)} | "
                 f"{PAPER['umem']} |")  # fmt: skip
    not_run = []
    for m in methods:
        if m.group != "ablation":
            continue
        cells = " | ".join(_cell(results[s].get(m.key)) for s in suites)
        lines.append(f"| {m.label} | {cells} | {_average(results, m.key, suites)} | {PAPER[m.key]} |")
        if not m.runnable:
            not_run.append(
                f"- {m.label}: train it with `memwise umem train --suite mmlu --path MMLU {m.train_flag} "
                f"--run-dir runs/umem-{m.key} --optimizer-model BASE`, serve the result, and pass "
                f"`--ablation {m.key}=SERVED_MODEL_NAME`."
            )
    if not_run:
        lines += ["", "Not run (no served Mem-Optimizer given):", "", *not_run]
    lines += [
        "",
        "## Model calls by sub-run",
        "",
        "| suite | method | executor calls | optimizer calls | tokens (prompt+completion) | format failures |",
        "|---|---|---|---|---|---|",
    ]
    for s in suites:
        for m in methods:
            r = results[s].get(m.key)
            if r is None:
                continue
            calls = r["calls"]
            failures = ", ".join(f"{k}: {v}" for k, v in r["format_failures"].items()) or "none"
            lines.append(
                f"| {s} | {m.key} | {calls['executor']} | {calls['optimizer']} | "
                f"{calls['prompt_tokens']}+{calls['completion_tokens']} | {failures} |"
            )
    if plots:
        lines += ["", "## Cumulative accuracy along each stream", ""]
        lines += [f"![{Path(p).stem.replace('_', ' ')}]({p})" for p in plots]
    if estimate:
        lines += ["", "## Cost estimate printed before the run", "", "```", estimate, "```"]
    return "\n".join(lines) + "\n"


def method_result(summary: EvolveSummary) -> dict[str, Any]:
    """The figures of one finished (or partial) sub-run that the report and ``results.json`` keep."""
    n = len(summary.outcomes)
    wins = sum(summary.outcomes)
    progress = [e.mean_progress for e in summary.epochs if e.mean_progress is not None]
    executor = summary.stages.get(EXECUTOR_STAGE)
    optimizer = summary.stages.get(OPTIMIZER_STAGE)
    return {
        "n": n,
        "successes": wins,
        "accuracy": wins / n if n else None,
        "interval": list(wilson_interval(wins, n)),
        "mean_progress": progress[-1] if progress else None,
        "finished": summary.finished,
        "bank_size": summary.bank_size,
        "format_failures": dict(summary.format_failures),
        "repaired": summary.repaired,
        "calls": {
            "executor": executor.calls if executor else 0,
            "optimizer": optimizer.calls if optimizer else 0,
            "prompt_tokens": sum(st.prompt_tokens for st in summary.stages.values()),
            "completion_tokens": sum(st.completion_tokens for st in summary.stages.values()),
        },
        "outcomes": list(summary.outcomes),
    }


# -- the run ------------------------------------------------------------------------------------


def _load(suites: Mapping[str, Path], config: ReproduceUMEMConfig) -> dict[str, list[Task]]:
    from memwise.tasks.suites import load_suite

    loaded = {}
    for name, path in suites.items():
        key = check_suite(name)
        tasks = load_suite(key, path, seed=config.seed, limit=config.limit)
        if not tasks:
            raise ConfigError(f"{path} holds no {key} tasks")
        loaded[key] = tasks
    return loaded


def _optimizer_config(settings: Settings, method: Method, baseline: ModelConfig | None) -> ModelConfig | None:
    if method.optimizer is None:
        return None
    if method.optimizer == "optimizer":
        return settings.model("optimizer")
    if method.optimizer == "baseline":
        return baseline or settings.model("policy")
    return replace(settings.model("optimizer"), model=method.optimizer)


async def _run_method(
    out: Path,
    suite: str,
    tasks: Sequence[Task],
    method: Method,
    *,
    config: ReproduceUMEMConfig,
    executor_llm: ChatModel,
    optimizer_llm: ChatModel | None,
    embedder: Any,
) -> EvolveSummary:
    from memwise.umem.evolve import evolve
    from memwise.umem.executors import make_executor

    folder = out / suite / method.key
    run = RunDir(folder, command=f"memwise reproduce umem ({suite}/{method.key})")
    try:
        evolve_config = config.evolve_config(suite, method.mode)
        run.write_manifest(
            f"memwise reproduce umem ({suite}/{method.key})",
            {"evolve": evolve_config, "optimizer": None if optimizer_llm is None else optimizer_llm.describe()},
        )
        executor = make_executor(
            suite,
            run.record(executor_llm, EXECUTOR_STAGE),
            max_tokens=config.max_tokens,
            prompt_style=config.prompt_style,
        )
        optimizer = None if optimizer_llm is None else run.record(optimizer_llm, OPTIMIZER_STAGE)
        result = await evolve(
            tasks, executor=executor, optimizer=optimizer, embedder=embedder, run=run, config=evolve_config
        )
    finally:
        run.close()
    return result.summary


async def reproduce_umem(
    suites: Mapping[str, Path],
    out: Path,
    *,
    settings: Settings,
    config: ReproduceUMEMConfig,
    ablations: Mapping[str, str] | None = None,
    baseline_optimizer: ModelConfig | None = None,
    estimate_only: bool = False,
    echo: Callable[[str], None] = print,
) -> Path | None:
    """Run (or resume) every method on every suite and write ``report.md`` under ``out``.

    Args:
        suites: suite name -> data file (``mmlu``, ``aime``, ``gpqa``, ``hotpotqa``, ``hle``, ``alfworld``).
        out: the run root; sub-runs live in ``out/<suite>/<method>``.
        settings: model roles: ``policy`` is the frozen executor, ``optimizer`` the trained Mem-Optimizer.
        config: the protocol's shared settings.
        ablations: ablation key (:data:`ABLATIONS`) -> served model name of the Mem-Optimizer trained
            that way, reached at the optimizer role's server.
        baseline_optimizer: the untrained base model for ``no-train`` (default: the policy model).
        estimate_only: stop after printing the estimate.
        echo: where progress lines and the estimate go.

    Returns:
        The report's path, or None with ``estimate_only``.

    Raises:
        ConfigError: an unknown suite or ablation, or an empty suite file.
    """
    from memwise.embed.registry import build_embedder
    from memwise.llm.registry import build_llm

    if not suites:
        raise ConfigError("reproduce umem needs at least one suite (--suite NAME=PATH)")
    methods = plan_methods(ablations or {})
    loaded = _load(suites, config)
    estimate = render_estimate(estimate_cost(loaded, methods, config))
    echo(estimate)
    if estimate_only:
        return None
    out.mkdir(parents=True, exist_ok=True)
    embedder = build_embedder(settings.embedding, cache_path=out / "embeddings.sqlite3")
    opened: dict[str, ChatModel] = {}

    def model(cfg: ModelConfig) -> ChatModel:
        # One client per distinct model configuration, so one server's concurrency limit is shared.
        key = json.dumps(asdict(cfg), sort_keys=True, default=str)
        if key not in opened:
            opened[key] = build_llm(cfg)
        return opened[key]

    results: dict[str, dict[str, dict[str, Any]]] = {}
    plots: list[str] = []
    try:
        executor_llm = model(settings.model("policy"))
        for suite, tasks in loaded.items():
            runnable = [m for m in methods if m.runnable]
            echo(f"{suite}: {len(tasks)} tasks x {config.epochs} epoch(s), {len(runnable)} methods")

            async def one(method: Method, suite: str = suite, tasks: Sequence[Task] = tasks) -> EvolveSummary:
                cfg = _optimizer_config(settings, method, baseline_optimizer)
                return await _run_method(
                    out,
                    suite,
                    tasks,
                    method,
                    config=config,
                    executor_llm=executor_llm,
                    optimizer_llm=None if cfg is None else model(cfg),
                    embedder=embedder,
                )

            # Sub-runs are independent (own directory, bank and ledger), so they share the servers at once.
            summaries = await asyncio.gather(*(one(m) for m in runnable))
            results[suite] = {}
            by_key = dict(zip((m.key for m in runnable), summaries, strict=True))
            for method, summary in by_key.items():
                results[suite][method] = method_result(summary)
                # each sub-run's own report draws the no-memory line beside its curve
                others = {"no memory": by_key["no-memory"].outcomes} if method != "no-memory" else {}
                write_report(out / suite / method, summary, baselines=others)
                echo(f"  {suite}/{method}: accuracy {_cell(results[suite][method])}")
            plot = _plot_suite(out, suite, results[suite], methods, len(tasks), chance_level(tasks))
            if plot is not None:
                plots.append(plot)
    finally:
        await embedder.aclose()
        for llm in opened.values():
            await llm.aclose()
    chance = {s: chance_level(t) for s, t in loaded.items()}
    text = build_report(
        results, methods, chance=chance, tasks={s: len(t) for s, t in loaded.items()}, plots=plots, estimate=estimate
    )
    payload = {
        "config": asdict(config),
        "suites": {s: {"tasks": len(loaded[s]), "chance": chance[s], "methods": results[s]} for s in results},
        "paper": PAPER,
        "paper_note": PAPER_NOTE,
        "not_run": [m.key for m in methods if not m.runnable],
    }
    write_text_atomic(out / "results.json", json.dumps(payload, indent=2, ensure_ascii=False, default=str) + "\n")
    return write_text_atomic(out / "report.md", text)


def _plot_suite(
    out: Path,
    suite: str,
    results: Mapping[str, Mapping[str, Any]],
    methods: Sequence[Method],
    tasks_per_epoch: int,
    chance: float | None,
) -> str | None:
    """One plot of every method's stream on ``suite`` (its file name), or None without matplotlib."""
    name = f"{suite}_cumulative_accuracy.png"
    label = {"no-memory": "no memory"}
    lines = {label.get(m.key, m.key): results[m.key]["outcomes"] for m in methods if m.key in results}
    try:
        plot_stream(
            out / name,
            lines,
            title=f"{suite}: cumulative accuracy, every method on the same stream",
            tasks_per_epoch=tasks_per_epoch,
            chance=chance,
        )
    except ImportError:
        return None
    return name
