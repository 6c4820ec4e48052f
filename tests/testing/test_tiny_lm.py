"""tiny_llama takes its special token ids from the tokenizer and refuses ids that are not one integer."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("transformers")

from memwise.exceptions import ConfigError  # noqa: E402
from memwise.testing.tiny_lm import tiny_llama  # noqa: E402


class _Tokenizer:
    """Just what tiny_llama reads from a tokenizer: its size and three special token ids."""

    def __init__(self, **ids: Any) -> None:
        self.pad_token_id, self.bos_token_id, self.eos_token_id = 0, 1, 2
        self.__dict__.update(ids)

    def __len__(self) -> int:
        return 16


def test_special_ids_reach_the_model_config() -> None:
    model = tiny_llama(_Tokenizer(pad_token_id=None), hidden=8, layers=1, heads=1, max_positions=16)
    assert (model.config.pad_token_id, model.config.bos_token_id, model.config.eos_token_id) == (None, 1, 2)
    assert model.config.vocab_size == 16


def test_a_token_string_instead_of_an_id_is_refused_with_its_name() -> None:
    with pytest.raises(ConfigError, match=r"eos_token_id is '</s>'"):
        tiny_llama(_Tokenizer(eos_token_id="</s>"))
