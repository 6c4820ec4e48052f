"""memwise umem train / export-verl from the shell: a tiny local model, a fake executor server on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast
from typer.testing import CliRunner

from memwise.cli import app
from memwise.exceptions import ConfigError
from memwise.testing import FakeOpenAIServer
from memwise.testing.fake_openai import ChatCall
from memwise.testing.tiny_lm import tiny_llama

runner = CliRunner()

LESSON = "<experience><value>Recall the defining fact first.</value><operation>ADD</operation></experience>"
MMLU = [
    {"question": f"Which gas do plants absorb, case {i}?", "type": "biology", "choices": ["O2", "CO2"], "answer": 1}
    for i in range(5)
]


def _executor(call: ChatCall) -> str:
    # Right only when a lesson is shown, so a written memory has utility on the neighbours.
    return "Answer: B" if "Lessons from similar past tasks" in call.messages[-1]["content"] else "Answer: A"


def _save_tiny_model(path: Path) -> None:
    words = ["[UNK]", "<pad>", "</s>", "<s>", "the", "task", "lesson"]
    core = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.add_special_tokens([AddedToken(t, special=True) for t in ("<|user|>", "<|system|>", "<|assistant|>")])
    core.add_tokens([AddedToken(LESSON, special=False, normalized=False)])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="[UNK]", pad_token="<pad>", eos_token="</s>", bos_token="<s>",
        padding_side="left", truncation_side="left",
    )  # fmt: skip
    tok.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    tiny_llama(tok).save_pretrained(path)
    tok.save_pretrained(path)


def _global(srv: FakeOpenAIServer) -> list[str]:
    url = srv.base_url
    return ["--base-url", url, "--model", "m", "--embed-backend", "openai", "--embed-base-url", url]


@pytest.mark.filterwarnings("ignore::FutureWarning:transformers.modeling_utils")
def test_train_runs_grpo_steps_and_writes_the_step_log_and_model(tmp_path: Path) -> None:
    data, model_dir, run_dir = tmp_path / "mmlu.jsonl", tmp_path / "tiny", tmp_path / "run"
    data.write_text("".join(json.dumps(r) + "\n" for r in MMLU))
    _save_tiny_model(model_dir)
    with FakeOpenAIServer(responder=_executor).in_thread() as srv:
        result = runner.invoke(
            app,
            [
                *_global(srv), "umem", "train", "--suite", "mmlu", "--path", str(data),
                "--optimizer-model", str(model_dir), "--run-dir", str(run_dir), "--group-size", "4",
                "--batch-tasks", "2", "--micro-batch-size", "8", "--max-steps", "2", "--beta", "0",
                "--learning-rate", "0.01", "--max-completion-length", "4", "--max-tokens", "16",
                "--form", "released", "--floor", "0",
            ],
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    steps = [json.loads(line) for line in (run_dir / "grpo" / "umem_steps.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [1, 2]
    assert all(s["completions"] == 8 and "executor_runs" in s for s in steps)
    assert (run_dir / "grpo" / "final" / "config.json").exists()
    trainset = json.loads((run_dir / "trainset.json").read_text())
    assert len(trainset["rows"]) == 5
    assert all(len(row["neighbour_ids"]) == 3 and row["id"] not in row["neighbour_ids"] for row in trainset["rows"])
    assert "UMEM GRPO: 2 steps" in result.output


@pytest.mark.filterwarnings("ignore::FutureWarning:transformers.modeling_utils")
def test_a_rerun_resumes_from_the_latest_checkpoint_with_that_steps_bank(tmp_path: Path) -> None:
    data, model_dir, run_dir = tmp_path / "mmlu.jsonl", tmp_path / "tiny", tmp_path / "run"
    data.write_text("".join(json.dumps(r) + "\n" for r in MMLU))
    _save_tiny_model(model_dir)

    def train(max_steps: int) -> str:
        with FakeOpenAIServer(responder=_executor).in_thread() as srv:
            result = runner.invoke(
                app,
                [
                    *_global(srv), "umem", "train", "--suite", "mmlu", "--path", str(data),
                    "--optimizer-model", str(model_dir), "--run-dir", str(run_dir), "--group-size", "4",
                    "--batch-tasks", "2", "--micro-batch-size", "8", "--max-steps", str(max_steps), "--beta", "0",
                    "--learning-rate", "0.01", "--max-completion-length", "4", "--max-tokens", "16",
                    "--form", "released", "--floor", "0", "--save-steps", "1",
                ],
            )  # fmt: skip
        assert result.exit_code == 0, result.output
        return result.output

    assert "resuming" not in train(2)
    grpo = run_dir / "grpo"
    assert sorted(p.name for p in grpo.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert (grpo / "checkpoint-2" / "umem_bank.sqlite3").exists()
    # A step that ran after the checkpoint (as if the process died then) must not survive the resume.
    with (grpo / "umem_steps.jsonl").open("a") as log:
        log.write(json.dumps({"step": 3, "tasks": 99}) + "\n" + '{"step": 4, "trunc')
    output = train(3)
    assert "resuming from" in output and "checkpoint-2" in output
    steps = [json.loads(line) for line in (grpo / "umem_steps.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [1, 2, 3] and steps[2]["tasks"] == 2
    assert "UMEM GRPO: 3 steps" in output


def test_export_verl_writes_one_row_per_task_with_neighbours(tmp_path: Path) -> None:
    data, out = tmp_path / "mmlu.jsonl", tmp_path / "train.parquet"
    data.write_text("".join(json.dumps(r) + "\n" for r in MMLU))
    with FakeOpenAIServer(responder=_executor).in_thread() as srv:
        result = runner.invoke(
            app,
            [
                *_global(srv), "umem", "export-verl", "--suite", "mmlu", "--path", str(data), "--out", str(out),
                "--run-dir", str(tmp_path / "run"), "--max-tokens", "16",
            ],
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 5
    assert rows[0]["reward_model"]["ground_truth"] == "B"
    assert rows[0]["prompt"][0]["role"] == "system" and "<experience>" in rows[0]["prompt"][0]["content"]
    assert len(rows[0]["extra_info"]["neighbours"]) == 3


def test_train_rejects_an_unknown_reward_form(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["umem", "train", "--suite", "mmlu", "--path", str(tmp_path), "--optimizer-model", "x", "--form", "odd"],
    )
    assert isinstance(result.exception, ConfigError)
    assert "--form must be 'paper' or 'released'" in str(result.exception)
