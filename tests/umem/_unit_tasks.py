"""Unit-conversion tasks shared by the GRPO and verl-export tests: neighbours of each other by topic."""

from __future__ import annotations

from memwise.tasks.types import Task

UNIT_TASKS = [
    Task("u1", "mmlu", "Convert 3 metres to centimetres. A) 30 B) 300", "B", text="convert metres to centimetres"),
    Task("u2", "mmlu", "Convert 5 kilograms to grams. A) 500 B) 5000", "B", text="convert kilograms to grams"),
    Task("u3", "mmlu", "Convert 2 hours to minutes. A) 20 B) 120", "B", text="convert hours to minutes"),
    Task("u4", "mmlu", "Convert 7 litres to millilitres. A) 70 B) 7000", "B", text="convert litres to millilitres"),
]
