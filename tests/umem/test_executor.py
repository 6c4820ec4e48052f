"""Executors: insights reach the prompt; multi-turn environments play through the small protocol."""

from __future__ import annotations

import pytest

from memwise.llm.base import ChatRequest
from memwise.tasks.types import Task
from memwise.testing import ScriptedLLM
from memwise.umem.executor import EnvExecutor, Observation, QAExecutor, choose_action


def _letter_scorer(task: Task, text: str) -> tuple[str | None, bool]:
    answer = text.rsplit("Answer:", 1)[-1].strip() if "Answer:" in text else None
    return answer, answer == task.answer


async def test_qa_executor_shows_insights_and_scores_the_final_answer() -> None:
    seen: list[ChatRequest] = []

    def model(req: ChatRequest) -> str:
        seen.append(req)
        return "2 plus 2 is 4.\nAnswer: B"

    task = Task("t1", "mmlu", "What is 2+2?\nA) 3\nB) 4", "B")
    result = await QAExecutor(ScriptedLLM(model), _letter_scorer).run(task, ["Re-check the arithmetic."])
    assert result.success and result.answer == "B" and result.length == len("2 plus 2 is 4.\nAnswer: B".split())
    assert "- Re-check the arithmetic." in seen[0].messages[-1].content
    assert seen[0].temperature == 0.0


class Counter:
    """Reach the goal number by choosing 'add one'; 'wait' does nothing."""

    def __init__(self) -> None:
        self.value = 0

    def reset(self, task: Task) -> Observation:
        self.value = 0
        self.goal = int(task.answer)
        return Observation("the counter shows 0", ("wait", "add one"))

    def step(self, action: str) -> Observation:
        if action == "add one":
            self.value += 1
        won = self.value >= self.goal
        return Observation(
            f"the counter shows {self.value}",
            ("wait", "add one"),
            done=won,
            won=won,
            progress=min(1.0, self.value / self.goal),
        )


async def test_env_executor_plays_to_success_and_counts_steps() -> None:
    task = Task("g1", "counter", "make the counter show 3", "3")
    result = await EnvExecutor(ScriptedLLM(lambda req: "2"), Counter, max_steps=30).run(task, ["Add until done."])
    assert result.success and result.steps == 3 and result.progress == 1.0
    assert result.trajectory.count("> add one") == 3


async def test_env_executor_stops_at_the_step_cap() -> None:
    task = Task("g2", "counter", "make the counter show 3", "3")
    result = await EnvExecutor(ScriptedLLM(lambda req: "1"), Counter, max_steps=5).run(task)
    assert not result.success and result.steps == 5 and result.progress == 0.0


def test_choose_action_by_number_text_or_fallback() -> None:
    actions = ("go to desk 1", "open drawer 2", "look")
    assert choose_action("2", actions) == "open drawer 2"
    assert choose_action("I will open drawer 2 now", actions) == "open drawer 2"
    assert choose_action("hmm", actions) == "go to desk 1"
    assert choose_action("7", actions) == "go to desk 1"


async def test_env_executor_closes_each_environment_it_made() -> None:
    closed: list[bool] = []

    class Closable(Counter):
        def close(self) -> None:
            closed.append(True)

    llm = ScriptedLLM(lambda req: "2")
    await EnvExecutor(llm, Closable, max_steps=3).run(Task("t", "toy", "count to 2", "2"))
    assert closed == [True]


@pytest.mark.parametrize(
    ("suite", "task", "reply", "asks"),
    [
        ("aime", Task("a-1", "aime", "Find m+n.", "73"), "So m+n = 73.\n\\boxed{73}", "final answer within \\boxed{}"),
        ("mmlu", Task("m-1", "mmlu", "2+2?\nA) 3\nB) 4", "B", choices=("3", "4")), "It is four: \\boxed{B}",
         "letter of the correct option within \\boxed{}"),
        ("hotpotqa", Task("h-1", "hotpotqa", "Were both born in 1950?", "yes"), "Both were.\n\\boxed{yes}",
         "final short answer within \\boxed{}"),
    ],
)  # fmt: skip
async def test_paper_prompt_style_asks_per_domain_and_its_answers_are_graded(
    suite: str, task: Task, reply: str, asks: str
) -> None:
    from memwise.umem.executors import make_executor

    seen: list[str] = []

    def answer(request: ChatRequest) -> str:
        seen.append(request.messages[-1].content)
        return reply

    paper = await make_executor(suite, ScriptedLLM(answer), prompt_style="paper").run(task)
    assert asks in seen[-1] and "Answer: <answer>" not in seen[-1]
    assert paper.success and paper.answer == task.answer
    generic = await make_executor(suite, ScriptedLLM(answer)).run(task)
    assert seen[-1].rstrip().endswith("Answer: <answer>") and generic.success  # the box is read either way


def test_an_unknown_prompt_style_is_refused_up_front() -> None:
    from memwise.exceptions import ConfigError
    from memwise.umem.executors import make_executor

    with pytest.raises(ConfigError, match="prompt style must be one of generic, paper"):
        make_executor("mmlu", ScriptedLLM(["x"]), prompt_style="fancy")  # type: ignore[arg-type]
