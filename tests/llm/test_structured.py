"""The tolerant parsers and the one-repair structured completion."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from memwise.exceptions import LLMError, ParseError
from memwise.llm.base import ChatRequest, Sample, Usage
from memwise.llm.structured import (
    Rejected,
    complete_structured,
    complete_with_repair,
    drop_trailing_commas,
    extract_json,
    extract_tag,
    extract_tags,
    parse_model,
    repair_prompt,
    repair_request,
    strip_reasoning,
)
from memwise.runs.ledger import Ledger
from memwise.testing.scripted import ScriptedLLM


class Answer(BaseModel):
    answer: str
    confidence: int


# ---------------------------------------------------------------- strip_reasoning


def test_strip_reasoning_closed_blocks() -> None:
    assert strip_reasoning("<think>hmm</think>Paris") == "Paris"
    assert strip_reasoning('<thinking>a\nb</thinking>\n\n{"a": 1}') == '{"a": 1}'
    assert strip_reasoning("<reasoning>x</reasoning> yes") == "yes"
    assert strip_reasoning("<THINK>x</Think>yes") == "yes"
    assert strip_reasoning('<think reason="deep">x</think>ok') == "ok"


def test_strip_reasoning_several_and_nested_blocks() -> None:
    assert strip_reasoning("<think>a</think>one <think>b</think>two") == "one two"
    assert strip_reasoning("<think>a <thinking>b</thinking> c</think>done") == "done"


def test_strip_reasoning_unclosed_leading_block_is_all_reasoning() -> None:
    assert strip_reasoning("<think>I was cut off mid-thought and never answered") == ""
    assert strip_reasoning("Answer: 4 <think>but wait") == "Answer: 4"


def test_strip_reasoning_lone_closing_tag_means_prompt_opened_it() -> None:
    # Qwen3/DeepSeek-R1 templates put <think> in the prompt: the reply starts inside the block.
    assert strip_reasoning("Let me check 2+2.\nIt is 4.\n</think>\n\n4") == "4"


def test_strip_reasoning_stray_closing_after_a_block_keeps_the_answer() -> None:
    assert strip_reasoning("<think>a</think>answer</think>") == "answer"


def test_strip_reasoning_leaves_other_text_alone() -> None:
    assert strip_reasoning("  plain answer  ") == "plain answer"
    assert strip_reasoning("<thinker>keep</thinker>") == "<thinker>keep</thinker>"
    assert strip_reasoning("") == ""


# ---------------------------------------------------------------- extract_json


def test_json_plain_object_and_array() -> None:
    assert extract_json('{"a": 1}') == {"a": 1}
    assert extract_json("[1, 2, 3]") == [1, 2, 3]
    assert extract_json("  42  ") == 42


def test_json_in_fences() -> None:
    assert extract_json('```json\n{"a": 1}\n```') == {"a": 1}
    assert extract_json('```JSON\n[{"a": 1}]\n```') == [{"a": 1}]
    assert extract_json('Here:\n```\n{"b": 2}\n```\nDone.') == {"b": 2}


def test_json_fence_preferred_over_prose_braces() -> None:
    text = 'The set {x} is small.\n```json\n{"real": true}\n```'
    assert extract_json(text) == {"real": True}


def test_json_unclosed_fence() -> None:
    assert extract_json('```json\n{"a": [1, 2]}\n') == {"a": [1, 2]}


def test_json_surrounded_by_prose() -> None:
    text = 'Sure! Here is the answer: {"answer": "Paris", "confidence": 9}. Let me know if you need more.'
    assert extract_json(text) == {"answer": "Paris", "confidence": 9}


def test_json_braces_and_quotes_inside_strings() -> None:
    text = 'Result -> {"code": "if (x) { return \\"}\\"; }", "list": "[not, an, array"} trailing }'
    assert extract_json(text) == {"code": 'if (x) { return "}"; }', "list": "[not, an, array"}


def test_json_nested_structures() -> None:
    text = 'out: {"a": {"b": [1, {"c": [2, 3]}]}, "d": []} end'
    assert extract_json(text) == {"a": {"b": [1, {"c": [2, 3]}]}, "d": []}


def test_json_skips_brackets_that_do_not_parse() -> None:
    text = 'As noted in [1] and {see above}, the answer is {"answer": "x", "confidence": 1}'
    # [1] is valid JSON and comes first: extract_json takes it; parse_model looks further.
    assert extract_json(text) == [1]
    assert parse_model(text, Answer) == Answer(answer="x", confidence=1)


def test_json_array_of_objects_in_prose() -> None:
    text = 'Experiences:\n[{"title": "a"}, {"title": "b"}]\nThat is all.'
    assert extract_json(text) == [{"title": "a"}, {"title": "b"}]


def test_json_trailing_commas() -> None:
    assert extract_json('{"a": 1, "b": [1, 2, ], }') == {"a": 1, "b": [1, 2]}
    assert extract_json('text {"a": "keep, }",} text') == {"a": "keep, }"}


def test_drop_trailing_commas_respects_strings() -> None:
    assert drop_trailing_commas('["a,]", "b",]') == '["a,]", "b"]'
    assert drop_trailing_commas('{"a": "\\",}"}') == '{"a": "\\",}"}'


def test_json_smart_quotes() -> None:
    assert extract_json("{\u201canswer\u201d: \u201cParis\u201d}") == {"answer": "Paris"}


def test_json_smart_quotes_inside_valid_json_are_kept() -> None:
    assert extract_json('{"q": "he said \u201chi\u201d"}') == {"q": "he said \u201chi\u201d"}


def test_json_python_literal_fallback() -> None:
    assert extract_json("{'answer': 'Paris', 'ok': True, 'n': None}") == {"answer": "Paris", "ok": True, "n": None}


def test_json_after_thinking_block() -> None:
    text = '<think>maybe {"answer": "wrong"}</think>\n{"answer": "right", "confidence": 3}'
    assert extract_json(text) == {"answer": "right", "confidence": 3}


def test_json_after_lone_closing_think() -> None:
    assert extract_json('reasoning {"draft": 1}\n</think>\n{"final": 2}') == {"final": 2}


def test_json_garbage_raises_with_raw_kept() -> None:
    with pytest.raises(ParseError) as info:
        extract_json("I am not sure what you mean.")
    assert info.value.raw == "I am not sure what you mean."
    assert "no JSON" in str(info.value)


def test_json_empty_reply() -> None:
    with pytest.raises(ParseError, match="empty reply") as info:
        extract_json("   ")
    assert info.value.raw == "   "


def test_json_only_reasoning() -> None:
    with pytest.raises(ParseError, match="nothing but reasoning"):
        extract_json('<think>{"a": 1} and then I ran out of tok')


def test_json_truncated_reply_says_so() -> None:
    raw = '{"answer": "Paris", "confidence": '
    with pytest.raises(ParseError, match="never closed") as info:
        extract_json(raw)
    assert info.value.raw == raw


def test_json_broken_reports_decoder_error() -> None:
    with pytest.raises(ParseError, match="invalid JSON"):
        extract_json('{"a": 1 "b": 2}')


def test_json_mismatched_brackets_are_not_json() -> None:
    with pytest.raises(ParseError):
        extract_json('{"a": [1, 2}')


def test_json_pathological_brackets_terminate() -> None:
    with pytest.raises(ParseError):
        extract_json("[" * 5000)


# ---------------------------------------------------------------- extract_tag(s)


def test_tag_simple_and_missing() -> None:
    assert extract_tag("<verdict>CORRECT</verdict>", "verdict") == "CORRECT"
    assert extract_tag("no tags here", "verdict") is None
    assert extract_tags("no tags here", "verdict") == []


def test_tags_multiple_with_nested_other_tags() -> None:
    text = (
        "<experience><title>A</title><body>do x</body></experience>\n"
        "noise\n"
        "<experience>\n  <title>B</title>\n</experience>"
    )
    assert extract_tags(text, "experience") == [
        "<title>A</title><body>do x</body>",
        "<title>B</title>",
    ]
    first = extract_tag(text, "experience")
    assert first is not None and extract_tag(first, "title") == "A"


def test_tags_case_insensitive_and_attributes() -> None:
    text = "<Experience id=\"3\" kind='rule'>keep it</EXPERIENCE>"
    assert extract_tag(text, "experience") == "keep it"
    assert extract_tag(text, "EXPERIENCE") == "keep it"


def test_tags_do_not_match_longer_names() -> None:
    text = "<experiences><experience>one</experience></experiences>"
    assert extract_tags(text, "experience") == ["one"]
    assert extract_tags(text, "experiences") == ["<experience>one</experience>"]


def test_tags_unclosed_last_block_runs_to_end() -> None:
    text = "<item>a</item>\n<item>b is cut of"
    assert extract_tags(text, "item") == ["a", "b is cut of"]


def test_tags_forgotten_close_before_next_block() -> None:
    assert extract_tags("<item>a\n<item>b</item>", "item") == ["a", "b"]


def test_tags_self_closing_and_empty() -> None:
    assert extract_tags("<item/><item></item><item />", "item") == ["", "", ""]


def test_tags_stray_closing_is_ignored() -> None:
    assert extract_tags("</item> <item>x</item>", "item") == ["x"]


def test_tags_inside_reasoning_are_not_answers() -> None:
    text = "<think>maybe <verdict>WRONG</verdict></think><verdict>RIGHT</verdict>"
    assert extract_tag(text, "verdict") == "RIGHT"
    assert extract_tag(text, "think") == "maybe <verdict>WRONG</verdict>"


def test_tag_name_with_regex_characters() -> None:
    assert extract_tag("<a.b>x</a.b><aXb>y</aXb>", "a.b") == "x"


# ---------------------------------------------------------------- parse_model


def test_parse_model_valid() -> None:
    assert parse_model('```json\n{"answer": "Paris", "confidence": 8}\n```', Answer) == Answer(
        answer="Paris", confidence=8
    )


def test_parse_model_validation_error_is_named() -> None:
    raw = '{"answer": "Paris"}'
    with pytest.raises(ParseError) as info:
        parse_model(raw, Answer)
    assert "confidence" in str(info.value) and "Field required" in str(info.value)
    assert "Answer" in str(info.value)
    assert info.value.raw == raw


def test_parse_model_wrong_type_is_named() -> None:
    with pytest.raises(ParseError, match="confidence"):
        parse_model('{"answer": "x", "confidence": "very"}', Answer)


def test_parse_model_no_json() -> None:
    with pytest.raises(ParseError, match="no JSON") as info:
        parse_model("Paris, probably.", Answer)
    assert info.value.raw == "Paris, probably."


# ---------------------------------------------------------------- repair prompt


def test_repair_prompt_shows_error_and_schema() -> None:
    text = repair_prompt("confidence: Field required", Answer.model_json_schema(), cut_off=True)
    assert "confidence: Field required" in text
    assert '"confidence"' in text
    assert "cut off" in text
    assert "cut off" not in repair_prompt("x", None)


def test_repair_request_appends_reply_and_follow_up() -> None:
    request = ChatRequest.of("q", system="s", json_schema={"type": "object"}, temperature=0.5)
    fix = repair_request(request, "bad reply", "no JSON")
    assert [m.role for m in fix.messages] == ["system", "user", "assistant", "user"]
    assert fix.messages[2].content == "bad reply"
    assert "no JSON" in fix.messages[3].content
    assert fix.temperature == 0.5 and fix.json_schema == {"type": "object"}


# ---------------------------------------------------------------- complete_structured


async def test_complete_structured_first_try_sets_schema(tmp_path) -> None:
    llm = ScriptedLLM(['{"answer": "Paris", "confidence": 9}'])
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        result = await complete_structured(llm, ChatRequest.of("capital?"), Answer, ledger=ledger)
        assert ledger.failures() == []
    assert result == Answer(answer="Paris", confidence=9)
    assert llm.calls == 1
    assert llm.requests[0].json_schema == Answer.model_json_schema()
    assert llm.requests[0].schema_name == "Answer"


async def test_complete_structured_keeps_given_schema() -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    llm = ScriptedLLM(['{"answer": "a", "confidence": 1}'])
    await complete_structured(llm, ChatRequest.of("q", json_schema=schema), Answer)
    assert llm.requests[0].json_schema == schema


async def test_complete_structured_repairs_once(tmp_path) -> None:
    llm = ScriptedLLM(["I think it is Paris.", '{"answer": "Paris", "confidence": 7}'])
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        result = await complete_structured(llm, ChatRequest.of("capital?"), Answer, ledger=ledger, stage="judge")
        failures = ledger.failures()
    assert result == Answer(answer="Paris", confidence=7)
    assert llm.calls == 2
    repair = llm.requests[1]
    assert repair.messages[-2].role == "assistant" and repair.messages[-2].content == "I think it is Paris."
    assert "no JSON" in repair.messages[-1].content
    assert failures == [
        {"stage": "judge", "kind": "parse_repaired", "detail": failures[0]["detail"], "raw": "I think it is Paris."}
    ]
    assert "no JSON" in failures[0]["detail"]


async def test_complete_structured_repair_shows_validation_error() -> None:
    llm = ScriptedLLM(['{"answer": "Paris"}', '{"answer": "Paris", "confidence": 5}'])
    result = await complete_structured(llm, ChatRequest.of("capital?"), Answer)
    assert result.confidence == 5
    assert "confidence: Field required" in llm.requests[1].messages[-1].content


async def test_complete_structured_mentions_cut_off_reply() -> None:
    cut = Sample(text='{"answer": "Par', finish_reason="length", usage=Usage(1, 1), latency_s=0.0)
    llm = ScriptedLLM([cut, '{"answer": "Paris", "confidence": 5}'])
    await complete_structured(llm, ChatRequest.of("capital?"), Answer)
    assert "cut off" in llm.requests[1].messages[-1].content


async def test_complete_structured_fails_after_one_bad_repair(tmp_path) -> None:
    llm = ScriptedLLM(["garbage one", '{"answer": 3}'])
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        with pytest.raises(ParseError) as info:
            await complete_structured(llm, ChatRequest.of("q"), Answer, ledger=ledger, stage="extract")
        failures = ledger.failures()
        stats = ledger.stats()
    assert llm.calls == 2  # exactly one repair
    assert info.value.raw == '{"answer": 3}'
    assert "after one repair" in str(info.value)
    assert len(failures) == 1
    failure = failures[0]
    assert failure["stage"] == "extract" and failure["kind"] == "parse"
    assert "no JSON" in failure["detail"] and "confidence" in failure["detail"]
    assert "garbage one" in failure["raw"] and '{"answer": 3}' in failure["raw"]
    assert stats["extract"].failures == 1


async def test_complete_structured_without_repair(tmp_path) -> None:
    llm = ScriptedLLM(["garbage"])
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        with pytest.raises(ParseError):
            await complete_structured(llm, ChatRequest.of("q"), Answer, ledger=ledger, repair=False)
        failures = ledger.failures()
    assert llm.calls == 1
    assert [(f["kind"], f["raw"]) for f in failures] == [("parse", "garbage")]


async def test_complete_structured_without_ledger_still_raises() -> None:
    llm = ScriptedLLM(["bad", "worse"])
    with pytest.raises(ParseError):
        await complete_structured(llm, ChatRequest.of("q"), Answer)


async def test_complete_structured_counts_each_repair(tmp_path) -> None:
    valid = '{"answer": "a", "confidence": 1}'
    llm = ScriptedLLM(["nope", valid, valid, "nope", valid, "x", "y"])
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        for prompt in ("q1", "q2", "q3"):
            await complete_structured(llm, ChatRequest.of(prompt), Answer, ledger=ledger, stage="s")
        with pytest.raises(ParseError):
            await complete_structured(llm, ChatRequest.of("q4"), Answer, ledger=ledger, stage="s")
        kinds = [f["kind"] for f in ledger.failures("s")]
    assert llm.calls == 7
    assert kinds == ["parse_repaired", "parse_repaired", "parse"]


async def test_complete_structured_records_failed_repair_call(tmp_path) -> None:
    def handler(request: ChatRequest) -> str:
        if len(request.messages) > 1:
            raise RuntimeError("backend down")
        return "garbage"

    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        with pytest.raises(RuntimeError):
            await complete_structured(ScriptedLLM(handler), ChatRequest.of("q"), Answer, ledger=ledger)
        failures = ledger.failures()
    assert len(failures) == 1 and "repair call failed" in failures[0]["detail"]


async def test_complete_structured_rejects_many_samples() -> None:
    with pytest.raises(ValueError, match="n=2"):
        await complete_structured(ScriptedLLM([]), ChatRequest.of("q", n=2), Answer)


async def test_complete_structured_after_thinking() -> None:
    llm = ScriptedLLM(['<think>{"answer": "draft"}</think>{"answer": "final", "confidence": 2}'])
    assert (await complete_structured(llm, ChatRequest.of("q"), Answer)).answer == "final"


# -- the one repair flow (complete_structured and the UMEM Mem-Optimizer both run on it) -------------


def _digits(text: str) -> int | Rejected:
    return int(text) if text.strip().isdigit() else Rejected(f"{text!r} is not a number")


def _json_number(text: str) -> int | Rejected:
    return int(text.strip("{} ").split(":")[1]) if text.startswith("{") else Rejected("no JSON")


def _ask_json(request: ChatRequest, first: Sample, reason: str) -> ChatRequest:
    return ChatRequest.of(f"{reason}. Reply as JSON: {{\"n\": <number>}}")


async def test_repair_flow_asks_once_and_parses_the_repair_with_its_own_parser() -> None:
    llm = ScriptedLLM(["seven", '{"n": 7}'])
    out = await complete_with_repair(llm, ChatRequest.of("n?"), _digits, repair=_ask_json, parse_repair=_json_number)
    assert (out.value, out.first_failure, out.failure, out.repaired) == (7, "'seven' is not a number", None, True)
    assert llm.calls == 2 and "Reply as JSON" in llm.requests[1].messages[-1].content


async def test_repair_flow_without_repair_or_with_a_good_first_reply_calls_once() -> None:
    good = await complete_with_repair(ScriptedLLM(["7"]), ChatRequest.of("n?"), _digits, repair=_ask_json)
    assert (good.value, good.first_failure, len(good.samples)) == (7, None, 1)
    bad = await complete_with_repair(ScriptedLLM(["seven"]), ChatRequest.of("n?"), _digits)
    assert (bad.value, bad.failure, len(bad.samples)) == (None, "'seven' is not a number", 1)


async def test_repair_flow_reports_both_failures_and_a_failed_repair_call() -> None:
    out = await complete_with_repair(ScriptedLLM(["seven", "eight"]), ChatRequest.of("n?"), _digits, repair=_ask_json)
    assert (out.value, out.first_failure, out.failure) == (None, "'seven' is not a number", "'eight' is not a number")

    def first_then_down(request: ChatRequest) -> str:
        if "Reply as JSON" in request.messages[-1].content:
            raise LLMError("down", backend="scripted")
        return "seven"

    seen: list[str] = []
    with pytest.raises(LLMError, match="down"):
        await complete_with_repair(
            ScriptedLLM(first_then_down),
            ChatRequest.of("n?"),
            _digits,
            repair=_ask_json,
            on_repair_error=lambda reason, first, exc: seen.append(reason),
        )
    assert seen[-1] == "'seven' is not a number"  # the hook saw the first failure before the error went up
