"""GRPO training of the Mem-Optimizer: settings, the sync->async bridge, bank evolution, and tiny-model runs.

The tiny-model runs use a random 2-layer Llama and a word-level tokenizer built here, no hub access.
A random model almost never writes a well-formed ``<experience>`` block token by token, so every
reward would be 0 and the advantages (hence the gradients) exactly zero. The tokenizer therefore
carries whole experience blocks as single tokens: a random model emits one now and then, rewards
differ within a group, and the weights can only change if the reward function really scored those
completions. A constant reward would leave them untouched, so the weight check can fail.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from tests.umem._unit_tasks import UNIT_TASKS as TASKS
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast
from trl import GRPOTrainer

from memwise.exceptions import ConfigError
from memwise.llm.base import ChatRequest
from memwise.store.sqlite import SQLiteStore
from memwise.tasks.types import Task
from memwise.testing import FakeEmbedder, ScriptedLLM
from memwise.testing.tiny_lm import tiny_llama
from memwise.umem.bank import BankEntry, InsightBank
from memwise.umem.bridge import AsyncBridge
from memwise.umem.executor import ExecutionResult, QAExecutor
from memwise.umem.grpo import UMEMGRPOTrainer, grpo_dataset, train_mem_optimizer
from memwise.umem.grpo_evolution import STEP_LOG, MemoryEvolution, _groups
from memwise.umem.grpo_settings import GRPOSettings, LoRASettings
from memwise.umem.loop import CandidateScore, UtilityScorer
from memwise.umem.trainset import TrainSet, build_trainset

# trl 1.16 reads `model.is_gradient_checkpointing` before every generation, which transformers 5.23
# deprecates; nothing on our side can avoid it.
TRL_GC_WARNING = pytest.mark.filterwarnings(
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning:transformers.modeling_utils"
)

LESSON = "Check the units."
GOOD_ADD = f"<experience><value>{LESSON}</value><operation>ADD</operation></experience>"
GOOD_UPDATE = f"<experience><value>{LESSON}</value><operation>UPDATE 0</operation></experience>"
BAD_ADD = "<experience><value>Pick the longest option.</value><operation>ADD</operation></experience>"
BROKEN = "I would rather not say."


# -- test doubles ---------------------------------------------------------------------------------


class UnitsExecutor:
    """Succeeds iff a shown lesson is LESSON; remembers the thread of every run."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, tuple[str, ...]]] = []
        self.threads: set[str] = set()

    async def run(self, task: Task, insights: Sequence[str] = ()) -> ExecutionResult:
        await asyncio.sleep(0)
        self.threads.add(threading.current_thread().name)
        self.runs.append((task.id, tuple(insights)))
        ok = LESSON in insights
        return ExecutionResult(task.id, f"worked on {task.id}", "B" if ok else "A", ok, 20 if ok else 50)


def units_llm() -> ScriptedLLM:
    """A chat model that gets unit conversions right only when told to check the units."""

    def reply(request: ChatRequest) -> str:
        helped = LESSON in request.messages[-1].content
        return "Multiply by the conversion factor.\nAnswer: B" if helped else "Answer: A"

    return ScriptedLLM(reply)


def grade(task: Task, text: str) -> tuple[str | None, bool]:
    answer = text.rsplit("Answer:", 1)[-1].strip() if "Answer:" in text else None
    return answer, answer == task.answer


class SpyScorer(UtilityScorer):
    """Records, per scored group, the entries it was given and what the bank retrieves right now."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[tuple[str, list[str], list[str], list[str]]] = []

    async def score(self, task: Task, entries: Sequence[BankEntry], completions: Sequence[str]) -> list[CandidateScore]:
        live = await self.bank.retrieve(task.key(), count_usage=False)
        self.seen.append((task.id, [e.id for e in entries], [e.id for e in live.entries], list(completions)))
        return await super().score(task, entries, completions)


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    words = ["[UNK]", "<pad>", "</s>", "<s>", "the", "a", "task", "lesson", "answer", "units", "x", "y"]
    core = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.add_special_tokens([AddedToken(t, special=True) for t in ("<|system|>", "<|user|>", "<|assistant|>")])
    core.add_tokens([AddedToken(b, special=False, normalized=False) for b in (GOOD_ADD, GOOD_UPDATE, BAD_ADD)])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="[UNK]",
        pad_token="<pad>",
        eos_token="</s>",
        bos_token="<s>",
        padding_side="left",
        truncation_side="left",
    )
    tok.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    return tok


def tiny_model(tok: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    return tiny_llama(tok)


def tiny_settings(*, max_steps: int, learning_rate: float, lora: LoRASettings | None = None) -> GRPOSettings:
    """Two tasks of four completions a step, one micro-batch, 16 tokens: a CPU-sized GRPO run."""
    return GRPOSettings(
        group_size=4,
        batch_tasks=2,
        micro_batch_size=8,
        max_steps=max_steps,
        max_completion_length=16,
        learning_rate=learning_rate,
        gradient_checkpointing=False,
        lora=lora,
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    with SQLiteStore(tmp_path / "bank.db") as s:
        yield s


def make_bank(store: SQLiteStore) -> InsightBank:
    return InsightBank(store, FakeEmbedder(dim=256), agent_id="umem", similarity_floor=0.0)


@pytest.fixture
def trainset() -> TrainSet:
    return asyncio.run(build_trainset(TASKS, FakeEmbedder(dim=256), neighbours=3))


# -- settings ---------------------------------------------------------------------------------------


def test_settings_default_to_the_paper(tmp_path: Path) -> None:
    settings = GRPOSettings()
    config = settings.to_grpo_config(tmp_path)
    assert config.num_generations == 8
    assert config.generation_batch_size == 8 * 128  # 128 tasks per step, one optimizer step per batch
    assert config.gradient_accumulation_steps == config.steps_per_generation == 128
    assert (config.beta, config.epsilon, config.learning_rate) == (0.001, 0.2, 1e-6)
    assert config.lr_scheduler_type == "constant"
    assert (config.num_train_epochs, config.temperature) == (3.0, 1.0)
    assert config.use_vllm is False and config.remove_unused_columns is False
    if not torch.cuda.is_available():
        assert config.use_cpu is True and config.bf16 is False


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"group_size": 1}, "group_size"),
        ({"micro_batch_size": 3}, "micro_batch_size"),
        ({"beta": -0.1}, "beta"),
        ({"max_steps": 0}, "max_steps"),
        ({"temperature": 0.0}, "temperature"),
        ({"loss_type": "ppo"}, "loss_type"),
    ],
)
def test_settings_reject_bad_values(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        GRPOSettings(**kwargs)


def test_lora_settings() -> None:
    config = LoRASettings(r=4, alpha=8, target_modules=("q_proj",)).to_peft_config()
    assert (config.r, config.lora_alpha, set(config.target_modules)) == (4, 8, {"q_proj"})
    with pytest.raises(ConfigError, match="lm_head"):
        LoRASettings(target_modules=("lm_head",))


def test_the_overridden_trl_hook_still_exists() -> None:
    # UMEMGRPOTrainer overrides a private trl method; fail loudly if an upgrade renames it.
    hook = GRPOTrainer._generate_and_score_completions
    assert list(inspect.signature(hook).parameters) == ["self", "inputs"]
    assert UMEMGRPOTrainer._generate_and_score_completions is not hook


# -- the bridge ---------------------------------------------------------------------------------------


def test_bridge_runs_on_its_own_thread_and_closes() -> None:
    bridge = AsyncBridge()

    async def where() -> str:
        return threading.current_thread().name

    async def fail() -> None:
        raise KeyError("boom")

    async def sleeper() -> asyncio.Task[None]:
        return asyncio.ensure_future(asyncio.sleep(3600))

    assert bridge.run(where()) == bridge.thread.name != threading.current_thread().name
    with pytest.raises(KeyError, match="boom"):
        bridge.run(fail())
    pending = bridge.run(sleeper())
    bridge.close()
    assert pending.cancelled()
    assert bridge.loop.is_closed() and not bridge.thread.is_alive() and bridge.closed
    bridge.close()  # idempotent
    coro = where()
    with pytest.raises(RuntimeError, match="closed"):
        bridge.run(coro)


def test_rewards_are_computed_on_the_bridge_loop(store: SQLiteStore, trainset: TrainSet, tmp_path: Path) -> None:
    executor = UnitsExecutor()
    bank = make_bank(store)
    with AsyncBridge() as bridge:
        evolution = MemoryEvolution(trainset, trainset.scorer(bank, executor), bridge, log_path=tmp_path / "s.jsonl")
        rows = evolution.refresh_prompts([{"task_id": "u1", "prompt": []}] * 4)
        assert len(executor.runs) == 1  # one attempt serves the whole group
        completions = [[{"role": "assistant", "content": text}] for text in (GOOD_ADD, BAD_ADD, BROKEN, GOOD_ADD)]
        rewards = evolution.utility_reward(
            [r["prompt"] for r in rows], completions, [r["task_id"] for r in rows], [r["entry_ids"] for r in rows]
        )
    assert executor.threads == {bridge.thread.name}
    assert bridge.loop.is_closed() and not bridge.thread.is_alive()
    # GOOD fixes all three neighbours (paper form, empty reference bank): 1 + 1; BAD: 1 + 0; BROKEN: 0
    assert rewards == [2.0, 1.0, 0.0, 2.0]
    assert [e.values for e in bank.entries()] == [[LESSON]]  # the best candidate was committed
    (record,) = evolution.records
    assert record.step == 1 and record.tasks == 1 and record.completions == 4
    assert record.format_ok_rate == 0.75 and record.commits == 1 and record.bank_size == 1
    assert record.format_failures == {"no experience block": 1}
    assert record.prompt_executor_runs == 1 and record.prompt_success_rate == 0.0
    # 3 references + 3 runs for GOOD (its copy is a cache hit) + 3 for BAD; none for BROKEN
    assert (record.reference_runs, record.candidate_runs) == (3, 6) and record.cache_hits >= 1
    assert record.executor_runs == 9 and record.executor_tokens == 3 * 50 + 3 * 20 + 3 * 50
    assert record.bank_changes["added"] == 1
    assert json.loads((tmp_path / "s.jsonl").read_text(encoding="utf-8"))["executor_runs"] == 9


def test_prompt_attempts_serve_as_reference_runs(store: SQLiteStore, trainset: TrainSet) -> None:
    executor = UnitsExecutor()
    with AsyncBridge() as bridge:
        evolution = MemoryEvolution(trainset, trainset.scorer(make_bank(store), executor), bridge)
        rows = evolution.refresh_prompts([{"task_id": "u1"}] * 2 + [{"task_id": "u2"}] * 2)
        ids = [r["entry_ids"] for r in rows]
        evolution.utility_reward([None] * 4, [BROKEN] * 3 + [GOOD_ADD], ["u1", "u1", "u2", "u2"], ids)
    (record,) = evolution.records
    # u2's neighbours are u3, u4 and u1; u1 ran with no memory while its prompt was built
    assert trainset.neighbourhoods.of("u2") == ("u3", "u4", "u1")
    assert record.reference_runs == 2 and record.prompt_executor_runs == 2
    assert executor.runs.count(("u1", ())) == 1


def test_prompts_follow_the_evolving_bank(store: SQLiteStore, trainset: TrainSet) -> None:
    executor = UnitsExecutor()
    bank = make_bank(store)
    with AsyncBridge() as bridge:
        evolution = MemoryEvolution(trainset, trainset.scorer(bank, executor), bridge)
        source = [{"task_id": "u2", "prompt": "placeholder"}] * 2
        first = evolution.refresh_prompts(source)
        assert source[0]["prompt"] == "placeholder"  # rows are copied, not modified
        assert first[0]["entry_ids"] == [] and "only ADD is possible" in first[0]["prompt"][1]["content"]
        bank_entry = bridge.run(bank.add("convert grams to kilograms", ["Pick the longest option."]))
        second = evolution.refresh_prompts(source)
    assert second[0]["entry_ids"] == [bank_entry.id]
    assert "Entry 0:\n  - Pick the longest option." in second[0]["prompt"][1]["content"]
    assert [m["role"] for m in second[0]["prompt"]] == ["system", "user"]


def test_update_maps_to_the_numbered_entry(store: SQLiteStore, trainset: TrainSet) -> None:
    executor = UnitsExecutor()
    bank = make_bank(store)
    with AsyncBridge() as bridge:
        target = bridge.run(bank.add("convert grams to kilograms", ["Pick the longest option."]))
        evolution = MemoryEvolution(trainset, trainset.scorer(bank, executor), bridge)
        rows = evolution.refresh_prompts([{"task_id": "u1"}] * 2)
        assert rows[0]["entry_ids"] == [target.id]
        rewards = evolution.utility_reward(
            [None, None], [GOOD_UPDATE, BAD_ADD], ["u1", "u1"], [rows[0]["entry_ids"]] * 2
        )
    assert rewards[0] == 2.0 and rewards[1] == 1.0
    assert bank.get(target.id).values == [LESSON] and bank.count() == 1


def test_groups_must_share_their_prompt() -> None:
    assert _groups(["a", "a", "b", "b"], [[], [], ["e"], ["e"]]) == [(0, 2), (2, 4)]
    with pytest.raises(ConfigError, match="different entry ids"):
        _groups(["a", "a"], [["e"], []])


def test_train_checks_its_inputs(store: SQLiteStore, trainset: TrainSet, tmp_path: Path) -> None:
    scorer = trainset.scorer(make_bank(store), UnitsExecutor())
    with pytest.raises(ConfigError, match="batch_tasks"):
        train_mem_optimizer("unused", trainset, scorer, output_dir=tmp_path, settings=GRPOSettings(batch_tasks=5))
    tok = tiny_tokenizer()
    tok.padding_side = "right"
    settings = GRPOSettings(batch_tasks=2, group_size=2, micro_batch_size=2)
    with pytest.raises(ConfigError, match="left"):
        train_mem_optimizer("unused", trainset, scorer, output_dir=tmp_path, settings=settings, tokenizer=tok)


def test_dataset_carries_task_ids(trainset: TrainSet) -> None:
    data = grpo_dataset(trainset)
    assert data["task_id"] == ["u1", "u2", "u3", "u4"]
    assert data[0]["prompt"] == [{"role": "user", "content": TASKS[0].prompt}]


# -- tiny-model GRPO runs --------------------------------------------------------------------------------


@TRL_GC_WARNING
def test_two_grpo_steps_train_the_model_and_evolve_the_bank(
    store: SQLiteStore, trainset: TrainSet, tmp_path: Path
) -> None:
    model_dir = tmp_path / "tiny"
    tok = tiny_tokenizer()
    tiny_model(tok).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    initial = load_file(str(model_dir / "model.safetensors"))

    bank = make_bank(store)
    llm = units_llm()
    # A stale, useless entry every task retrieves: the prompts number it 0, so UPDATE 0 has a target.
    stale = asyncio.run(bank.add("convert units of measure", ["Pick the longest option."]))
    scorer = SpyScorer(bank, QAExecutor(llm, grade), trainset.task_map(), trainset.neighbourhoods, form="paper")
    settings = tiny_settings(max_steps=2, learning_rate=1e-4)
    result = train_mem_optimizer(str(model_dir), trainset, scorer, output_dir=tmp_path / "run", settings=settings)

    assert result.steps == 2
    assert result.model_dir is not None
    trained = load_file(str(result.model_dir / "model.safetensors"))
    changed = [name for name, tensor in initial.items() if not torch.equal(tensor, trained[name])]
    assert changed, "GRPO left every weight unchanged"

    # The reward saw each group's prompt entries, which are what the bank retrieves for that task.
    assert len(scorer.seen) == 2 * 2 and all(len(c) == 4 for *_, c in scorer.seen)
    assert all(given == live for _, given, live, _ in scorer.seen)
    assert any(stale.id in given for _, given, _, _ in scorer.seen[:2])  # step 1: the stale entry is shown
    assert any(block in c for block in (GOOD_ADD, GOOD_UPDATE, BAD_ADD) for *_, group in scorer.seen for c in group)

    records = [json.loads(line) for line in (tmp_path / "run" / STEP_LOG).read_text(encoding="utf-8").splitlines()]
    assert [r["step"] for r in records] == [1, 2] and records == [r.to_dict() for r in result.records]
    for r in records:
        assert r["tasks"] == 2 and r["completions"] == 8 and r["prompt_executor_runs"] == 2
        for key in ("executor_runs", "executor_tokens", "cache_hits", "commits", "bank_size", "wall_time_s"):
            assert key in r
    assert any(r["reward_std"] > 0 for r in records)  # what made the gradient non-zero
    assert sum(r["executor_runs"] for r in records) == result.cost["executor_runs"]
    assert records[-1]["bank_size"] == bank.count() == result.bank_size
    assert records[0]["commits"] >= 1  # the bank evolved during training...
    # ...and step 2's prompts show the bank after step 1's commits (floor 0, top-3: every entry is retrieved)
    assert all(len(given) == min(3, records[0]["bank_size"]) for _, given, _, _ in scorer.seen[2:])
    assert llm.calls == sum(r["executor_runs"] + r["prompt_executor_runs"] for r in records)


@TRL_GC_WARNING
def test_lora_run_on_built_objects_trains_only_the_adapter(
    store: SQLiteStore, trainset: TrainSet, tmp_path: Path
) -> None:
    tok = tiny_tokenizer()
    model = tiny_model(tok)
    base = {name: p.detach().clone() for name, p in model.named_parameters()}
    scorer = trainset.scorer(make_bank(store), UnitsExecutor())
    lora = LoRASettings(r=2, alpha=4, dropout=0.0, target_modules=("q_proj", "v_proj"))
    settings = tiny_settings(max_steps=1, learning_rate=1e-3, lora=lora)
    result = train_mem_optimizer(model, trainset, scorer, output_dir=tmp_path / "run", settings=settings, tokenizer=tok)
    assert result.steps == 1 and result.records[0].reward_std > 0
    assert result.model_dir is not None
    adapter = load_file(str(result.model_dir / "adapter_model.safetensors"))
    lora_b = [t for name, t in adapter.items() if "lora_B" in name]
    assert lora_b and any(t.abs().sum() > 0 for t in lora_b)  # lora_B starts at zero
    # peft wrapped the model in place: every original weight is now frozen and unchanged
    after = {
        name.replace("base_model.model.", "").replace(".base_layer", ""): p
        for name, p in model.named_parameters()
        if "lora_" not in name
    }
    assert after.keys() == base.keys()
    assert all(torch.equal(after[name].detach(), weight) for name, weight in base.items())


def test_two_groups_updating_one_entry_keep_the_better_and_log_the_conflict(
    store: SQLiteStore, trainset: TrainSet, tmp_path: Path
) -> None:
    # Both groups UPDATE the one entry their prompts showed, with equal rewards: the earlier group keeps
    # it. Applied in batch order, the later UPDATE would silently have replaced the earlier one.
    executor = UnitsExecutor()
    bank = make_bank(store)
    longer = GOOD_UPDATE.replace("</value>", "</value><value>Write the factor down.</value>", 1)
    with AsyncBridge() as bridge:
        target = bridge.run(bank.add("convert grams to kilograms", ["Pick the longest option."]))
        evolution = MemoryEvolution(trainset, trainset.scorer(bank, executor), bridge, log_path=tmp_path / "s.jsonl")
        rows = evolution.refresh_prompts([{"task_id": "u1"}] * 2 + [{"task_id": "u2"}] * 2)
        assert all(r["entry_ids"] == [target.id] for r in rows)
        rewards = evolution.utility_reward(
            [None] * 4, [GOOD_UPDATE, BROKEN, longer, BROKEN], ["u1", "u1", "u2", "u2"], [r["entry_ids"] for r in rows]
        )
    assert rewards == [2.0, 0.0, 2.0, 0.0]
    assert bank.get(target.id).values == [LESSON] and bank.count() == 1
    (record,) = evolution.records
    assert record.commits == 1
    assert record.update_conflicts == [{"entry_id": target.id, "kept": "u1", "dropped": ("u2",)}]
    logged = json.loads((tmp_path / "s.jsonl").read_text(encoding="utf-8"))
    assert logged["update_conflicts"] == [{"entry_id": target.id, "kept": "u1", "dropped": ["u2"]}]
