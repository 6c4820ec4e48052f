"""MetaMem training: evolve a rule set on how to use retrieved memory, step by step.

Per step, for a batch of questions (``metamem.md``, "Training loop"):

1. each question is answered ``samples`` times with the current rules, and each answer is scored as
   soon as it exists (a judge call per sample, overlapping the other rollouts);
2. a question is kept when its mean score is strictly between 0 and 1 (every question when
   ``samples == 1``);
3. every kept answer is reflected on, and each kept question proposes edits from its reflections;
4. one consolidation call merges the step's proposals against the rules; if it fails, a bounded,
   de-conflicted subset of the raw proposals is applied instead (and the step says so);
5. the edits are applied, making a new version with its provenance.

The calls in flight are bounded by each model's backend (its role's ``max_concurrency``, one setting
per role, whoever calls it), and a question's stages start as soon as its own inputs are ready, so
no stage waits for another question's slowest call. Every call
goes through the run ledger: a killed run, re-run, replays what was paid for, and the per-epoch
shuffle is seeded by (seed, epoch), so a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import hashlib
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from memwise._aio import gather_or_cancel
from memwise.exceptions import ConfigError, LLMError, ParseError
from memwise.facts.answer import final_answer
from memwise.llm.base import ChatModel, ChatRequest, ChatResponse
from memwise.llm.structured import complete_structured
from memwise.metamem.data import MetaQuestion
from memwise.metamem.parse import (
    Consolidation,
    Proposal,
    ProposedOp,
    Reflection,
    consolidation_schema,
    proposal_schema,
    reflection_schema,
)
from memwise.metamem.prompts import (
    build_consolidation_messages,
    build_proposal_messages,
    build_reflection_messages,
    build_rollout_messages,
    question_labels,
    unlabel_questions,
)
from memwise.metamem.rule_fallback import fallback_subset
from memwise.metamem.rule_history import RuleHistory
from memwise.metamem.rules import ApplyResult, Operation, RuleSet
from memwise.metamem.scoring import Scorer, make_scorer
from memwise.metamem.train_checkpoint import StepRecord, load_checkpoint, save_checkpoint
from memwise.metamem.train_config import TrainConfig
from memwise.runs.rundir import RunDir


@dataclass(frozen=True)
class Rollout:
    """One sampled answer and its score (``None`` when the scorer gave no verdict)."""

    index: int
    text: str
    score: float | None
    feedback: str = ""
    answer: str | None = None  # what the judge saw: the final answer line of a reasoning reply


@dataclass
class _QuestionOutcome:
    """What one question's pipeline produced within a step."""

    question_id: str
    rollouts: list[Rollout]
    kept: bool = False
    reflections: int = 0
    reflection_failures: int = 0
    ops: list[Operation] = field(default_factory=list)
    proposal_failed: bool = False


class CallCounter:
    """A chat model that reports each paid call that returned: ``on_done(stage)`` (progress per stage).

    It limits nothing: the backend bounds calls in flight (``ModelConfig.max_concurrency``).
    """

    def __init__(
        self,
        inner: ChatModel,
        stage: str = "",
        on_done: Callable[[str], None] | None = None,
    ) -> None:
        self.inner = inner
        self.stage = stage
        self.on_done = on_done
        self.name = inner.name

    def describe(self) -> str:
        """The wrapped model's description; counting changes nothing it would say."""
        return self.inner.describe()

    async def aclose(self) -> None:
        """Close the wrapped model."""
        await self.inner.aclose()

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """Forward the request and report the stage once it returned (failed calls are not counted)."""
        response = await self.inner.complete(request)
        if self.on_done is not None:
            self.on_done(self.stage)
        return response


def stable_seed(*parts: object) -> int:
    """A seed from text parts that is the same in every process (``hash()`` is salted per process)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big")


def rollout_seed(seed: int, *, epoch: int, step: int, question_id: str, index: int) -> int:
    """The sampling seed of one rollout: fresh per (epoch, step), identical on resume.

    A question seen again in a later epoch must draw new samples: with the old seed (no epoch, no step)
    and rules that had not changed, the request was identical and the ledger replayed the earlier
    answers, so a second pass over the data learned nothing new. Pure and process-independent.

    Example:
        >>> a = rollout_seed(0, epoch=0, step=1, question_id="q1", index=0)
        >>> a == rollout_seed(0, epoch=0, step=1, question_id="q1", index=0)
        True
        >>> a != rollout_seed(0, epoch=1, step=3, question_id="q1", index=0)
        True
    """
    return stable_seed(seed, "rollout", epoch, step, question_id, index)


def epoch_batches(question_ids: Sequence[str], *, epoch: int, batch_size: int, seed: int) -> list[list[str]]:
    """The batches of one epoch: a shuffle seeded by (seed, epoch) alone, so resuming never changes it."""
    order = sorted(question_ids)
    random.Random(stable_seed("epoch", seed, epoch)).shuffle(order)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def keep_question(rollouts: Sequence[Rollout], samples: int) -> bool:
    """Informative groups only: mean score strictly between 0 and 1; with one sample, every question."""
    scores = [r.score for r in rollouts if r.score is not None]
    if not scores:
        return False
    if samples == 1:
        return True
    mean = statistics.fmean(scores)
    return 0.0 < mean < 1.0


def to_operations(ops: Sequence[ProposedOp], *, step: int, question_ids: Sequence[str]) -> list[Operation]:
    """Parsed edits as rule-set operations, with provenance (the proposers when the op names none)."""
    out = []
    for op in ops:
        askers = tuple(op.question_ids) or tuple(question_ids)
        text = op.text if op.op != "delete" else None
        out.append(Operation(op.op, rule_id=op.rule_id, text=text, step=step, question_ids=askers, reason=op.reason))
    return out


class MetaMemTrainer:
    """Learns a :class:`RuleSet` from training questions; ``compile`` returns the rule history.

    Args:
        policy: answers questions (rollouts).
        run: the run directory; its ledger records and replays every call.
        metric: ``"judge"`` (LLM judge with the rubric of each question type), ``"f1"`` or ``"em"``.
        judge: the judge model (default: the policy model); used when ``metric == "judge"``.
        optimizer: writes reflections, proposals and consolidations (default: the policy model).
        config: hyper-parameters.
        on_step: called after each step with its record (progress display).
        on_call: called with the stage name after each paid model call (progress bars per stage).
    """

    def __init__(
        self,
        *,
        policy: ChatModel,
        run: RunDir,
        metric: str = "judge",
        judge: ChatModel | None = None,
        optimizer: ChatModel | None = None,
        config: TrainConfig | None = None,
        on_step: Callable[[StepRecord], None] | None = None,
        on_call: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config or TrainConfig()
        self.run = run
        self.on_step = on_step
        # The ledger sits outside the counter, so replays are not counted as paid calls.
        self.models = {
            stage: run.record(CallCounter(model, stage, on_call), stage)  # type: ignore[arg-type]
            for stage, model in (
                ("rollout", policy),
                ("judge", judge or policy),
                ("reflect", optimizer or policy),
                ("propose", optimizer or policy),
                ("consolidate", optimizer or policy),
                ("eval", policy),
                ("eval_judge", judge or policy),
            )
        }
        self.metric = metric
        judge_tokens = self.config.tokens("judge")
        self.scorer: Scorer = make_scorer(metric, self.models["judge"], run.ledger, max_tokens=judge_tokens)
        self.eval_scorer: Scorer = make_scorer(metric, self.models["eval_judge"], run.ledger, max_tokens=judge_tokens)

    @property
    def checkpoint_path(self) -> Path:
        """Where the rule history is checkpointed and a resumed run reads it from."""
        return self.run.path / "metamem" / "history.json"

    async def compile(self, trainset: Sequence[MetaQuestion], *, initial: RuleSet | None = None) -> RuleHistory:
        """Train over ``trainset``; returns every version from the initial rules to the last step's.

        Resumes from the run's checkpoint when one exists (and the ledger replays the calls of a step
        that was cut off), so a re-run after a kill continues instead of starting again.
        """
        if not trainset:
            raise ConfigError("MetaMem training needs at least one training question")
        by_id = {q.question_id: q for q in trainset}
        if len(by_id) != len(trainset):
            raise ConfigError("training questions must have unique question_id values")
        cfg = self.config
        history, records = load_checkpoint(self.checkpoint_path, cfg)
        if history is None:
            start = initial or RuleSet(max_rules=cfg.max_rules, max_words=cfg.max_words)
            history = RuleHistory.start(start)
        step = 0
        for epoch in range(cfg.epochs):
            for batch_ids in epoch_batches(list(by_id), epoch=epoch, batch_size=cfg.batch_size, seed=cfg.seed):
                step += 1
                if step <= len(records):
                    continue  # done before the restart: its version is in the checkpoint
                batch = [by_id[i] for i in batch_ids]
                result, record = await self._checked_step(step, epoch, batch, history.latest.rules)
                history = history.record(result, note=record.consolidation)
                records.append(record)
                save_checkpoint(self.checkpoint_path, cfg, history, records)
                if self.on_step:
                    self.on_step(record)
        return history

    async def _checked_step(
        self, step: int, epoch: int, batch: Sequence[MetaQuestion], rules: RuleSet
    ) -> tuple[ApplyResult, StepRecord]:
        """A step whose failure is one clear error, raised only once every call of the step has settled.

        A rollout whose retries ran out stops the step: its siblings are cancelled and awaited (see
        :func:`gather_or_cancel`), so every call that failed has its error in the ledger, counted in the
        message, before the caller closes the run.
        """
        errors_before = self.run.ledger.count_errors()
        try:
            return await self.train_step(step, epoch, batch, rules)
        except LLMError as exc:
            failed = self.run.ledger.count_errors() - errors_before
            self.run.ledger.record_failure(stage="train", kind="step_aborted", detail=f"step {step}: {exc}")
            raise LLMError(
                f"MetaMem training stopped in step {step}: {failed} model call(s) failed after their retries "
                f"(recorded in {self.run.ledger.path}; the first: {exc}). Steps done so far and every recorded "
                "call are kept: fix the model server and re-run the same command to resume",
                backend=exc.backend,
                status=exc.status,
                retry_after=exc.retry_after,
                attempts=exc.attempts,
            ) from exc

    async def train_step(
        self, step: int, epoch: int, batch: Sequence[MetaQuestion], rules: RuleSet
    ) -> tuple[ApplyResult, StepRecord]:
        """One step on one batch; returns the applied result and the step's record."""
        rule_map = {r.id: r.text for r in rules.rules}
        outcomes = await gather_or_cancel(*(self._question(q, rule_map, step, epoch) for q in batch))
        proposals = {o.question_id: o.ops for o in outcomes if o.ops}
        note, ops = await self._consolidate(rule_map, proposals, rules, step)
        result = rules.apply(ops, step=step)
        rollouts = [r for o in outcomes for r in o.rollouts]
        scores = [r.score for r in rollouts if r.score is not None]
        record = StepRecord(
            step=step,
            epoch=epoch,
            question_ids=tuple(q.question_id for q in batch),
            rollouts=len(rollouts),
            score_failures=len(rollouts) - len(scores),
            kept_questions=tuple(o.question_id for o in outcomes if o.kept),
            reflections=sum(o.reflections for o in outcomes),
            reflection_failures=sum(o.reflection_failures for o in outcomes),
            proposals=len(proposals),
            proposal_failures=sum(o.proposal_failed for o in outcomes),
            consolidation=note,
            applied=len(result.applied),
            rejected=len(result.rejected),
            merged=len(result.merged),
            rules_after=len(result.new_set),
            train_mean_score=statistics.fmean(scores) if scores else None,
        )
        return result, record

    # -- per question: rollouts -> scores -> reflections -> proposal --------------------------

    async def _question(self, q: MetaQuestion, rule_map: dict[str, str], step: int, epoch: int) -> _QuestionOutcome:
        cfg = self.config
        rollouts = await gather_or_cancel(
            *(self._rollout(q, rule_map, i, step=step, epoch=epoch) for i in range(cfg.samples))
        )
        outcome = _QuestionOutcome(q.question_id, rollouts)
        if not keep_question(rollouts, cfg.samples):
            return outcome
        outcome.kept = True
        judged = [r for r in rollouts if r.score is not None]
        reflected = await gather_or_cancel(*(self._reflect(q, r) for r in judged))
        pairs = [(r, ref) for r, ref in zip(judged, reflected, strict=True) if ref is not None]
        outcome.reflections = len(pairs)
        outcome.reflection_failures = len(judged) - len(pairs)
        if pairs:
            ops = await self._propose(q, rule_map, pairs, step)
            outcome.ops = ops or []
            outcome.proposal_failed = ops is None
        return outcome

    async def _rollout(
        self, q: MetaQuestion, rule_map: dict[str, str], index: int, *, step: int, epoch: int
    ) -> Rollout:
        cfg = self.config
        messages = build_rollout_messages(
            q.question, q.memories, question_date=q.question_date, rules=rule_map, style=cfg.style
        )
        request = ChatRequest(
            messages=tuple(messages),
            temperature=cfg.temperature,
            max_tokens=cfg.answer_tokens,
            seed=rollout_seed(cfg.seed, epoch=epoch, step=step, question_id=q.question_id, index=index),
        )
        reply = await self.models["rollout"].complete(request)
        text = reply.text.strip()
        # The judge grades the final answer only; the reflection sees the whole reply, reasoning included.
        answer = final_answer(text, cfg.style)
        try:
            score = await self.scorer.score(q, answer)
        except (ParseError, LLMError) as exc:
            # No verdict is not a wrong answer: leave it out of the group, counted in the step record.
            self.run.ledger.record_failure(stage="score", kind="no_verdict", detail=f"{q.question_id}: {exc}")
            return Rollout(index, text, None, answer=answer)
        return Rollout(index, text, score.value, score.feedback, answer=answer)

    async def _reflect(self, q: MetaQuestion, rollout: Rollout) -> Reflection | None:
        messages = build_reflection_messages(
            q.question,
            q.memories,
            gold=q.answer,
            response=rollout.text,
            correct=(rollout.score or 0.0) >= 0.5,
            question_date=q.question_date,
            feedback=rollout.feedback,
        )
        request = ChatRequest(
            messages=tuple(messages),
            max_tokens=self.config.tokens("reflection"),
            json_schema=reflection_schema(len(q.memories)),
            schema_name="Reflection",
            seed=stable_seed(self.config.seed, q.question_id, rollout.index, "reflect"),
        )
        llm = self.models["reflect"]
        try:
            return await complete_structured(llm, request, Reflection, ledger=self.run.ledger, stage="reflect")
        except (ParseError, LLMError):
            return None  # complete_structured has counted it in the ledger

    async def _propose(
        self, q: MetaQuestion, rule_map: dict[str, str], pairs: Sequence[tuple[Rollout, Reflection]], step: int
    ) -> list[Operation] | None:
        successes = [ref for r, ref in pairs if (r.score or 0.0) >= 0.5]
        failures = [ref for r, ref in pairs if (r.score or 0.0) < 0.5]
        messages = build_proposal_messages(
            q.question, rules=rule_map, successes=successes, failures=failures, max_words=self.config.max_words
        )
        request = ChatRequest(
            messages=tuple(messages),
            max_tokens=self.config.tokens("proposal"),
            json_schema=proposal_schema(list(rule_map), max_ops=3),
            schema_name="Proposal",
            seed=stable_seed(self.config.seed, q.question_id, "propose"),
        )
        llm = self.models["propose"]
        try:
            proposal = await complete_structured(llm, request, Proposal, ledger=self.run.ledger, stage="propose")
        except (ParseError, LLMError):
            return None
        try:
            return to_operations(proposal.operations, step=step, question_ids=[q.question_id])
        except ValueError as exc:
            self.run.ledger.record_failure(stage="propose", kind="invalid_op", detail=f"{q.question_id}: {exc}")
            return None

    async def _consolidate(
        self, rule_map: dict[str, str], proposals: dict[str, list[Operation]], rules: RuleSet, step: int
    ) -> tuple[str, list[Operation]]:
        if not proposals:
            return "skipped", []
        shown = {
            qid: [ProposedOp(op=o.op, rule_id=o.rule_id, text=o.text, reason=o.reason) for o in ops]
            for qid, ops in proposals.items()
        }
        messages = build_consolidation_messages(
            rule_map, shown, max_rules=self.config.max_rules, max_words=self.config.max_words
        )
        labels = question_labels(shown)  # the prompt names questions Q1..Qn, never by their dataset ids
        request = ChatRequest(
            messages=tuple(messages),
            max_tokens=self.config.tokens("consolidation"),
            json_schema=consolidation_schema(list(rule_map), list(labels), max_ops=self.config.max_rules),
            schema_name="Consolidation",
            seed=stable_seed(self.config.seed, step, "consolidate"),
        )
        llm = self.models["consolidate"]
        try:
            merged = await complete_structured(llm, request, Consolidation, ledger=self.run.ledger, stage="consolidate")
            ops = unlabel_questions(merged.operations, labels)
            return "ok", to_operations(ops, step=step, question_ids=list(proposals))
        except (ParseError, LLMError, ValueError) as exc:
            subset = fallback_subset(list(proposals.values()), rules, limit=self.config.fallback_limit)
            reason = str(exc).splitlines()[0][:160]
            return f"failed: {reason}; fallback applied {len(subset)} of {sum(map(len, proposals.values()))}", subset

    def step_records(self) -> list[StepRecord]:
        """The records of the steps done so far in this run (from the checkpoint)."""
        return load_checkpoint(self.checkpoint_path, self.config)[1]
