"""The usage examples in the scoring modules' docstrings run and hold."""

from __future__ import annotations

import doctest
from types import ModuleType

import pytest

from memwise.tasks import judge, metrics, question_types, rubrics


@pytest.mark.parametrize("module", [metrics, question_types, judge, rubrics])
def test_doctests(module: ModuleType) -> None:
    result = doctest.testmod(module, raise_on_error=False)
    assert result.attempted > 0
    assert result.failed == 0
