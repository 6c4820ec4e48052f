"""GRPO on a synthetic task family: does the Mem-Optimizer learn to write the insight that helps?

The family: list puzzles of a few kinds (rotate, reverse, ...). Each task names its kind. A scripted
executor solves a task only when one of the insights it is shown names the method for that kind, so
an insight helps exactly the tasks of its kind, i.e. the task's semantic neighbours.

The Mem-Optimizer is a tiny Llama (2 layers, 64 wide) with a word-level tokenizer, built here, no
hub. A short supervised warm start teaches it the output format with a *random* method word, so
before GRPO the format reward is high and the utility reward is chance (about 1 in the number of
method words). GRPO (trl, through ``memwise.umem.grpo.train_mem_optimizer``) must then raise the
utility by learning which method to write for which task. The bank evolves during training; the
reward is the released form (no memory vs. only the candidate) so that a filled bank does not
lower the reward of a policy that keeps writing the right insight (with the paper's form, a
neighbour the bank already solves has nothing left to gain).

Same-run baseline: the warm-started model is scored before training and the trained model after,
on the same held-out tasks with the same number of samples; the figures are the reward before,
after, and their difference, plus the per-step training curve (plotted to a PNG).

    .venv/bin/python bench/umem_grpo.py [--steps 40] [--json bench/results/umem_grpo.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from memwise.runs.files import write_text_atomic
from memwise.store.sqlite import SQLiteStore
from memwise.tasks.types import Task
from memwise.testing import FakeEmbedder
from memwise.testing.tiny_lm import tiny_llama
from memwise.umem.bank import InsightBank
from memwise.umem.bridge import AsyncBridge
from memwise.umem.executor import ExecutionResult
from memwise.umem.grpo import train_mem_optimizer
from memwise.umem.grpo_settings import GRPOSettings
from memwise.umem.optimizer import build_optimizer_messages
from memwise.umem.trainset import build_trainset

KINDS = {"rotate": "shift", "reverse": "flip", "sort": "order", "dedupe": "unique"}
"""Task kind -> the method word an insight must name to help (a word the task does not contain)."""
DISTRACTORS = ("check", "recheck", "units", "guess")
METHODS = tuple(KINDS.values()) + DISTRACTORS
TAGS = ("<experience>", "</experience>", "<value>", "</value>", "<operation>", "</operation>", "ADD", "UPDATE")
SPECIAL = ("[UNK]", "[PAD]", "[EOS]")
TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}assistant :{% endif %}"
)


def make_tasks(n_per_kind: int, seed: int) -> list[Task]:
    rng = random.Random(seed)
    tasks = []
    for kind in KINDS:
        for i in range(n_per_kind):
            numbers = " ".join(str(rng.randint(1, 9)) for _ in range(5))
            text = f"{kind} puzzle : {kind} the list {numbers}"
            tasks.append(Task(f"{kind}-{i}", "synthetic", text, "", text=text, metadata={"kind": kind}))
    rng.shuffle(tasks)
    return tasks


class MethodExecutor:
    """Solves a task iff a shown insight names its kind's method; shorter when helped (40 vs 100 tokens)."""

    def __init__(self) -> None:
        self.runs = 0

    async def run(self, task: Task, insights: Sequence[str] = ()) -> ExecutionResult:
        self.runs += 1
        method = KINDS[task.metadata["kind"]]
        ok = any(method in text.split() for text in insights)
        return ExecutionResult(task.id, f"attempted {task.text}", None, ok, 40 if ok else 100)


def build_tokenizer(tasks: Sequence[Task]) -> PreTrainedTokenizerFast:
    """Word-level: every word of the prompts the model will see, the tags and the method words."""
    words: dict[str, None] = {w: None for w in SPECIAL}
    sample = build_optimizer_messages(tasks[0].prompt, [], "attempted x", False)
    corpus = [m.content for m in sample] + [t.prompt for t in tasks] + ["assistant : user system CORRECT INCORRECT"]
    for text in corpus:
        for word in text.split():
            words.setdefault(word, None)
    for word in (*TAGS, *METHODS, "use", "the", "method", *(str(i) for i in range(10))):
        words.setdefault(word, None)
    vocab = {w: i for i, w in enumerate(words)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]")
    tok.chat_template = TEMPLATE
    tok.padding_side = "left"
    return tok


def build_model(tok: PreTrainedTokenizerFast, seed: int, hidden: int = 64, layers: int = 2) -> LlamaForCausalLM:
    return tiny_llama(tok, hidden=hidden, layers=layers, heads=4, max_positions=1024, seed=seed)


def completion(method: str) -> str:
    return f"<experience> <value> use the {method} method </value> <operation> ADD </operation> </experience>"


def prompt_text(tok: PreTrainedTokenizerFast, task: Task) -> str:
    messages = build_optimizer_messages(task.prompt, [], f"attempted {task.text}", False)
    chat = [{"role": m.role, "content": m.content} for m in messages]
    return str(tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True))


def warm_start(
    model: LlamaForCausalLM, tok: PreTrainedTokenizerFast, tasks: Sequence[Task], steps: int, seed: int
) -> float:
    """Supervised format lessons with a uniformly random method word; returns the last loss."""
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    loss_value = 0.0
    for _ in range(steps):
        rows = []
        for task in rng.sample(list(tasks), k=min(8, len(tasks))):
            p = tok(prompt_text(tok, task), add_special_tokens=False)["input_ids"]
            c = tok(completion(rng.choice(METHODS)), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            rows.append((p + c, [-100] * len(p) + c))
        width = max(len(ids) for ids, _ in rows)
        pad = tok.pad_token_id
        ids = torch.tensor([[pad] * (width - len(i)) + i for i, _ in rows])
        labels = torch.tensor([[-100] * (width - len(lab)) + lab for _, lab in rows])
        mask = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i, _ in rows])
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss_value = loss.item()
    model.eval()
    return loss_value


def sample_completions(
    model: LlamaForCausalLM, tok: PreTrainedTokenizerFast, task: Task, n: int, seed: int
) -> list[str]:
    torch.manual_seed(seed)
    ids = tok(prompt_text(tok, task), add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(
            ids.repeat(n, 1),
            attention_mask=torch.ones_like(ids).repeat(n, 1),
            do_sample=True,
            temperature=1.0,
            top_k=0,
            max_new_tokens=16,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
    return [tok.decode(row[ids.shape[1] :], skip_special_tokens=True) for row in out]


def evaluate(
    model: Any, tok: PreTrainedTokenizerFast, scorer: Any, tasks: Sequence[Task], bridge: AsyncBridge, n: int
) -> dict[str, float]:
    """Mean reward, format rate and utility over ``n`` samples per task (no bank writes)."""
    rewards, formats, utilities = [], [], []
    for i, task in enumerate(tasks):
        texts = sample_completions(model, tok, task, n, seed=1000 + i)
        scores = bridge.run(scorer.score(task, [], texts))
        rewards += [s.reward for s in scores]
        formats += [1.0 if s.format_ok else 0.0 for s in scores]
        utilities += [s.utility for s in scores if s.format_ok]
    return {
        "reward_mean": statistics.fmean(rewards),
        "format_ok_rate": statistics.fmean(formats),
        "utility_mean": statistics.fmean(utilities) if utilities else 0.0,
    }


def plot(records: Sequence[dict[str, Any]], before: float, after: float, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot (pip install memwise[plots])")
        return False
    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = [r["step"] for r in records]
    ax.plot(steps, [r["reward_mean"] for r in records], marker=".", label="training reward (mean of group)")
    ax.axhline(before, color="grey", linestyle="--", label=f"held-out before: {before:.2f}")
    ax.axhline(after, color="green", linestyle="--", label=f"held-out after: {after:.2f}")
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("reward (format + utility)")
    ax.set_title("UMEM GRPO on a synthetic task family")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=50, help="GRPO steps")
    parser.add_argument("--tasks-per-kind", type=int, default=12)
    parser.add_argument("--group", type=int, default=8, help="completions per task (G)")
    parser.add_argument("--batch", type=int, default=4, help="tasks per GRPO step")
    parser.add_argument("--lr", type=float, default=1e-3, help="GRPO learning rate (tiny model from scratch)")
    parser.add_argument("--warm-steps", type=int, default=100)
    parser.add_argument("--eval-samples", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=64, help="policy width")
    parser.add_argument("--layers", type=int, default=2, help="policy depth")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=Path("bench/results/umem_grpo.json"))
    args = parser.parse_args(argv)

    tasks = make_tasks(args.tasks_per_kind, args.seed)
    held_out = make_tasks(3, args.seed + 1)
    held_out = [Task(f"eval-{t.id}", t.suite, t.prompt, t.answer, t.text, metadata=t.metadata) for t in held_out]
    tok = build_tokenizer(tasks + held_out)
    model = build_model(tok, args.seed, args.hidden, args.layers)
    t0 = time.perf_counter()
    warm_loss = warm_start(model, tok, tasks, args.warm_steps, args.seed)
    warm_s = time.perf_counter() - t0

    embedder = FakeEmbedder(dim=256)
    executor = MethodExecutor()
    with tempfile.TemporaryDirectory() as tmp, AsyncBridge() as bridge, SQLiteStore(Path(tmp) / "bank.db") as store:
        bank = InsightBank(store, embedder, agent_id="bench", similarity_floor=0.3)
        trainset = bridge.run(build_trainset(tasks, embedder))
        evalset = bridge.run(build_trainset(held_out, embedder))
        eval_bank = InsightBank(store, embedder, agent_id="bench-eval", similarity_floor=0.3)
        eval_scorer = evalset.scorer(eval_bank, executor, form="released")
        before = evaluate(model, tok, eval_scorer, held_out, bridge, args.eval_samples)
        print(f"before GRPO (warm start, loss {warm_loss:.3f}): {before}")

        settings = GRPOSettings(
            group_size=args.group,
            batch_tasks=args.batch,
            micro_batch_size=args.group * args.batch,
            beta=0.0,
            learning_rate=args.lr,
            max_steps=args.steps,
            max_completion_length=16,
            gradient_checkpointing=False,
            save_model=False,
            seed=args.seed,
            use_cpu=True,
        )
        t1 = time.perf_counter()
        result = train_mem_optimizer(
            model,
            trainset,
            trainset.scorer(bank, executor, form="released"),
            output_dir=Path(tmp) / "grpo",
            settings=settings,
            tokenizer=tok,
            bridge=bridge,
        )
        train_s = time.perf_counter() - t1
        after = evaluate(model, tok, eval_scorer, held_out, bridge, args.eval_samples)
        print(f"after {result.steps} GRPO steps: {after}")
        records = [r.to_dict() for r in result.records]
        bank_size = bank.count()

    first = statistics.fmean(r["reward_mean"] for r in records[:5])
    last = statistics.fmean(r["reward_mean"] for r in records[-5:])
    figures = {
        "bench": "umem_grpo",
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "config": vars(args) | {"json": str(args.json)},
        "warm_start": {"steps": args.warm_steps, "final_loss": warm_loss, "seconds": warm_s},
        "held_out_before": before,
        "held_out_after": after,
        "held_out_reward_gain": after["reward_mean"] - before["reward_mean"],
        "training_reward_first5": first,
        "training_reward_last5": last,
        "chance_utility": 1 / len(METHODS),
        "grpo_steps": result.steps,
        "grpo_seconds": train_s,
        "executor_cost": result.cost,
        "bank_size": bank_size,
        "steps": records,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.json, json.dumps(figures, indent=1) + "\n")
    png = args.json.with_suffix(".png")
    plotted = plot(records, before["reward_mean"], after["reward_mean"], png)
    print(f"training reward: first 5 steps {first:.3f} -> last 5 steps {last:.3f}")
    print(
        f"held-out reward: {before['reward_mean']:.3f} -> {after['reward_mean']:.3f} "
        f"(utility {before['utility_mean']:.3f} -> {after['utility_mean']:.3f}; chance {figures['chance_utility']:.3f})"
    )
    print(f"{result.steps} steps in {train_s:.1f} s; executor runs for rewards {result.cost['executor_runs']}")
    print(f"wrote {args.json}" + (f" and {png}" if plotted else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
