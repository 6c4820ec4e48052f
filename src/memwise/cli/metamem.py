"""`memwise metamem prepare|train|eval|answer|show|diff`: learn and use a meta-memory from the shell."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from memwise.cli._config_options import ConfigOptions, with_config_options
from memwise.cli._option_blocks import train_options
from memwise.cli._options import (
    DEFAULT_METRIC,
    DatasetFormat,
    DatasetPath,
    GlobalOptions,
    MetricOption,
    dataset_format,
    parse_when,
    progress_bar,
    spinner,
)
from memwise.cli._rundirs import open_run
from memwise.config import Settings
from memwise.exceptions import ConfigError
from memwise.facts.answer import AnswerStyle, check_answer_style
from memwise.metamem.data import MetaQuestion, load_questions, save_questions
from memwise.metamem.evaluate import EvalResult
from memwise.metamem.rule_history import RuleHistory, diff, render_diff
from memwise.metamem.rules import RuleSet, render
from memwise.metamem.splits import SplitConfig, split_questions
from memwise.metamem.train_checkpoint import StepRecord
from memwise.metamem.train_config import TrainConfig

metamem_app = typer.Typer(help="MetaMem: learn rules on how to use retrieved memory.", no_args_is_help=True)
RunDirArg = Annotated[Path, typer.Option(help="the MetaMem run directory")]
AnswerStyleOption = Annotated[
    str | None, typer.Option(help="direct or reasoning (default: the style the run trained with)")
]


@metamem_app.command("prepare")
def prepare(
    ctx: typer.Context,
    path: DatasetPath,
    out: Annotated[Path, typer.Option(help="where to write the question set (JSONL)")],
    dataset: DatasetFormat = "auto",
    top_k: Annotated[int, typer.Option(help="memory fragments retrieved per question")] = 20,
    conversations: Annotated[int | None, typer.Option(help="use only the first N conversations")] = None,
    db: Annotated[Path | None, typer.Option(help="factual memory database (default: beside --out)")] = None,
    memory: Annotated[
        str, typer.Option(help="memwise (turns, hybrid retrieval) or lightmem (model-extracted facts, cosine top-k)")
    ] = "memwise",
) -> None:
    """Build a question set by retrieving each question's top-k fragments from the factual memory."""
    from memwise.facts.memory import AsyncMemory
    from memwise.facts.readers import read_conversations
    from memwise.metamem.prepare import check_memory_kind, prepare_from_conversations, selected_questions

    opts: GlobalOptions = ctx.obj
    kind = check_memory_kind(memory)
    convs = read_conversations(path, dataset_format(dataset))[:conversations]
    turns = sum(len(c.turns()) for c in convs)
    wanted = sum(len(selected_questions(c, include_adversarial=False)) for c in convs)

    async def run() -> list[MetaQuestion]:
        mem = AsyncMemory.from_settings(opts.settings(), db or out.with_suffix(".db"), with_llm=kind == "lightmem")
        try:
            with progress_bar() as bar:
                ingested = bar.add_task("ingest turns", total=turns)
                retrieved = bar.add_task("retrieve", total=wanted)
                return await prepare_from_conversations(
                    convs,
                    memory=mem,
                    top_k=top_k,
                    kind=kind,
                    on_ingested=lambda n: bar.advance(ingested, n),
                    on_done=lambda _: bar.advance(retrieved),
                )
        finally:
            await mem.aclose()

    questions = asyncio.run(run())
    save_questions(out, questions)
    typer.echo(f"wrote {len(questions)} questions to {out}")


@metamem_app.command("train")
@with_config_options(
    config=train_options("max_rules", "max_words"),
    split_options=ConfigOptions(SplitConfig, ("folds", "fold", "val_frac", "test_frac", "group_by")),
)
def train(
    ctx: typer.Context,
    questions: Annotated[Path, typer.Option(help="question set (JSON or JSONL)")],
    run_dir: RunDirArg = Path("runs/metamem"),
    metric: MetricOption = DEFAULT_METRIC,
    limit: Annotated[int | None, typer.Option(help="use only the first N questions")] = None,
    *,
    config: TrainConfig,
    split_options: SplitConfig,
) -> None:
    """Train rules, validate every step at temperature 0, pick the best, and test with and without it."""
    opts: GlobalOptions = ctx.obj
    split_config = replace(split_options, seed=config.seed)  # one --seed for the rules and the split
    split = split_questions(load_questions(questions)[:limit], split_config)
    asyncio.run(_train(opts.settings(), split, run_dir, config, split_config, metric))


async def _train(
    settings: Settings,
    split: tuple[list[MetaQuestion], list[MetaQuestion], list[MetaQuestion]],
    run_dir: Path,
    config: TrainConfig,
    split_config: SplitConfig,
    metric: str,
) -> None:
    from memwise.llm.registry import ModelSet
    from memwise.metamem.pipeline import train_and_select

    console = Console()
    train_qs, val_qs, test_qs = split
    console.print(f"train {len(train_qs)} / validation {len(val_qs)} / test {len(test_qs)} questions")
    run = open_run(
        run_dir,
        "memwise metamem train",
        {"train": config, "split": split_config, "metric": metric},
        settings,
        warn=Console(stderr=True).print,
    )
    try:
        models = ModelSet(settings)
    except BaseException:
        run.close()
        raise

    def progress(record: StepRecord) -> None:
        mean = "-" if record.train_mean_score is None else f"{record.train_mean_score:.2f}"
        console.print(
            f"step {record.step} (epoch {record.epoch}): kept {len(record.kept_questions)}/{len(record.question_ids)}"
            f" questions, train score {mean}, reflections {record.reflections}, proposals {record.proposals}, "
            f"consolidation {record.consolidation}, +{record.applied} applied / {record.rejected} rejected / "
            f"{record.merged} merged -> {record.rules_after} rules"
        )

    stages = ("rollout", "judge", "reflect", "propose", "consolidate", "eval", "eval_judge")
    bars = Progress(
        TextColumn("{task.description:>12}"),
        BarColumn(),
        TextColumn("{task.completed} calls"),
        TimeElapsedColumn(),
        console=console,
    )
    tasks = {stage: bars.add_task(stage, total=None) for stage in stages}
    try:
        with bars:
            result = await train_and_select(
                train_qs,
                val_qs,
                test_qs,
                policy=models.get("policy"),
                judge=models.get("judge"),
                optimizer=models.get("optimizer"),
                run=run,
                metric=metric,
                config=config,
                on_step=progress,
                on_call=lambda stage: bars.advance(tasks[stage]),
            )
        stats = run.ledger.stats()
    finally:
        await models.aclose()
        run.close()
    _print_validation(console, result.validation, result.best_step)
    console.print(f"[bold]rules chosen (step {result.best_step}):[/]")
    console.print(render(result.rules) or "(no rules)")
    _print_test(console, result.test_without_rules, result.test_with_rules)
    from memwise.metamem.report import write_report

    console.print(f"report: {write_report(run_dir, stats)}")
    table = Table("stage", "calls", "tokens", "errors", "failures", "retries")
    for name, s in stats.items():
        table.add_row(
            name, str(s.calls), f"{s.prompt_tokens}+{s.completion_tokens}", str(s.errors), str(s.failures),
            s.retries_text(),
        )  # fmt: skip
    console.print(table)


def _acc(result: EvalResult | None) -> str:
    return "-" if result is None or result.accuracy is None else f"{result.accuracy:.3f}"


def _print_validation(console: Console, validation: dict[int, EvalResult], best: int) -> None:
    if not validation:
        return
    line = ", ".join(f"{step}: {_acc(r)}{' *' if step == best else ''}" for step, r in sorted(validation.items()))
    console.print(f"validation accuracy by step: {line}")


def _print_test(console: Console, without: EvalResult | None, with_rules: EvalResult | None) -> None:
    if without is None or with_rules is None:
        return
    table = Table("question type", "without rules", "with rules")
    for qtype in sorted(set(without.by_type) | set(with_rules.by_type)):
        table.add_row(
            qtype,
            f"{without.by_type.get(qtype, float('nan')):.3f}",
            f"{with_rules.by_type.get(qtype, float('nan')):.3f}",
        )
    table.add_row("all", _acc(without), _acc(with_rules))
    console.print(table)
    failures = without.failures + with_rules.failures
    if failures:
        console.print(f"[yellow]{failures} test answers could not be scored (counted, not scored as wrong)[/]")


@metamem_app.command("eval")
def evaluate(
    ctx: typer.Context,
    questions: Annotated[Path, typer.Option(help="question set to evaluate on")],
    run_dir: RunDirArg = Path("runs/metamem"),
    metric: MetricOption = DEFAULT_METRIC,
    step: Annotated[int | None, typer.Option(help="a step's rules instead of the chosen ones")] = None,
    max_tokens: Annotated[int, typer.Option()] = 1024,
    answer_style: AnswerStyleOption = None,
) -> None:
    """Accuracy on a question set with and without the learned rules, per question type."""
    opts: GlobalOptions = ctx.obj
    style = _style_for(run_dir, answer_style)
    asyncio.run(_evaluate(opts.settings(), load_questions(questions), run_dir, metric, step, max_tokens, style))


async def _evaluate(
    settings: Settings,
    qs: list[MetaQuestion],
    run_dir: Path,
    metric: str,
    step: int | None,
    max_tokens: int,
    style: AnswerStyle,
) -> None:
    from memwise.llm.registry import ModelSet
    from memwise.metamem.evaluate import evaluate_rules
    from memwise.metamem.pipeline import load_history, load_result_rules
    from memwise.metamem.scoring import make_scorer

    rules = load_result_rules(run_dir) if step is None else _rules_at(load_history(run_dir), step)
    # It records eval calls: a writer, and one that should say when the models changed since training.
    run = open_run(
        run_dir, "memwise metamem eval", {"metric": metric, "step": step}, settings, warn=Console(stderr=True).print
    )
    models = ModelSet(settings)
    try:
        # Calls in flight: each role's backend (max_concurrency, the global --concurrency) bounds them.
        policy = run.record(models.get("policy"), "eval")
        judge = run.record(models.get("judge"), "eval_judge")
        scorer = make_scorer(metric, judge, run.ledger)
        with_rules, without = await asyncio.gather(
            evaluate_rules(qs, rules, policy=policy, scorer=scorer, max_tokens=max_tokens, style=style),
            evaluate_rules(qs, RuleSet(), policy=policy, scorer=scorer, max_tokens=max_tokens, style=style),
        )
    finally:
        await models.aclose()
        run.close()
    _print_test(Console(), without, with_rules)


def _style_for(run_dir: Path, given: str | None) -> AnswerStyle:
    """The answer style asked for, else the one the run trained with, else ``direct``."""
    from memwise.metamem.pipeline import load_train_config

    if given is not None:
        return check_answer_style(given)
    config = load_train_config(run_dir)
    return config.style if config is not None else "direct"


def _rules_at(history: RuleHistory, step: int) -> RuleSet:
    try:
        return history.at_step(step)
    except KeyError as exc:
        raise ConfigError(str(exc.args[0])) from exc


@metamem_app.command("show")
def show(
    run_dir: RunDirArg = Path("runs/metamem"),
    step: Annotated[int | None, typer.Option(help="a step's rules instead of the chosen ones")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Print a rule set: the chosen one, or a step's."""
    from memwise.metamem.pipeline import load_history, load_result_rules

    rules = load_result_rules(run_dir) if step is None else _rules_at(load_history(run_dir), step)
    if as_json:
        typer.echo(json.dumps(rules.to_dict(), indent=2))
        return
    typer.echo(render(rules) or "(no rules)")


@metamem_app.command("diff")
def diff_steps(
    a: Annotated[int, typer.Argument(help="from step")],
    b: Annotated[int, typer.Argument(help="to step")],
    run_dir: RunDirArg = Path("runs/metamem"),
) -> None:
    """What changed between two steps, with the step and question ids behind each change."""
    from memwise.metamem.pipeline import load_history

    history = load_history(run_dir)
    typer.echo(render_diff(diff(_rules_at(history, a), _rules_at(history, b)), history) or "(no change)")


@metamem_app.command("answer")
def answer(
    ctx: typer.Context,
    question: Annotated[str, typer.Argument()],
    user_id: Annotated[str, typer.Option(help="whose factual memory")],
    db: Annotated[Path, typer.Option(help="the factual memory database")],
    run_dir: RunDirArg = Path("runs/metamem"),
    question_date: Annotated[str | None, typer.Option(help="'today' for the question")] = None,
    top_k: Annotated[int, typer.Option()] = 20,
    answer_style: AnswerStyleOption = None,
    max_tokens: Annotated[int | None, typer.Option(help="output tokens (default: the run's rollout budget)")] = None,
) -> None:
    """Answer from the factual memory with the learned rules; the question date reaches the prompt.

    The prompt is the one the rules were trained and selected on: same builder, rule ids, answer style
    (the run's, unless ``--answer-style`` says otherwise) and the question date as given.
    """
    from memwise.facts.memory import AsyncMemory
    from memwise.metamem.pipeline import load_result_rules, load_train_config

    opts: GlobalOptions = ctx.obj
    rules = load_result_rules(run_dir)
    style = _style_for(run_dir, answer_style)
    trained = load_train_config(run_dir)
    budget = max_tokens or (trained.answer_tokens if trained is not None else 256)
    # Checked here for a clear error, but passed on as written: rollouts showed the dataset's own text.
    parse_when(question_date, "--question-date")

    async def run() -> str:
        mem = AsyncMemory.from_settings(opts.settings(), db)
        try:
            with spinner("answering"):
                reply = await mem.answer(
                    question,
                    user_id=user_id,
                    question_date=question_date,
                    top_k=top_k,
                    rules={r.id: r.text for r in rules.rules},
                    style=style,
                    max_tokens=budget,
                )
        finally:
            await mem.aclose()
        return reply.text

    typer.echo(asyncio.run(run()))


@metamem_app.command("report")
def report(run_dir: RunDirArg = Path("runs/metamem")) -> None:
    """Write report.md with a PNG of validation accuracy per step, test accuracy by type, and costs."""
    from memwise.metamem.pipeline import result_path
    from memwise.metamem.report import write_report
    from memwise.runs.rundir import RunDir

    if not result_path(run_dir).exists():
        raise ConfigError(f"no finished MetaMem run in {run_dir}: run `memwise metamem train` first")
    # A reader: no lock, so a report can be made while another process still trains in this folder.
    with RunDir(run_dir, lock=False) as run:
        stats = run.ledger.stats()
    out = write_report(run_dir, stats)
    typer.echo(f"wrote {out}")
