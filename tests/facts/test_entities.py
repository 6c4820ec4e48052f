"""Entity keys found by rule: proper nouns, quoted titles and numbers, never sentence starters."""

from __future__ import annotations

from memwise.facts.entities import extract_entities


def test_proper_nouns_titles_and_numbers_lower_cased() -> None:
    keys = extract_entities('Wow! I read "Becoming Nicole" on the train to Paris, all 300 pages.')
    assert {"becoming nicole", "paris", "300"} <= set(keys)
    assert "wow" not in keys and "i" not in keys


def test_multi_word_names_give_the_phrase_and_its_words() -> None:
    keys = set(extract_entities("I lost my job at Door Dash and moved to the Pacific Northwest."))
    assert {"door dash", "door", "dash", "pacific northwest", "pacific", "northwest"} <= keys


def test_index_prefix_and_possessive_are_skipped() -> None:
    keys = extract_entities("[8 May 2023] Caroline: Thanks! Max's bone is under the couch.")
    assert keys == ("max",)  # not the day label, not the speaker, not "Thanks"


def test_question_and_unit_meet_on_the_same_key() -> None:
    question = set(extract_entities('When did Jon start reading "The Lean Startup"?'))
    unit = set(extract_entities("[1 May 2023] Jon: Just started The Lean Startup, so good."))
    assert "lean startup" in question & unit  # quoted or not, with or without "The"
