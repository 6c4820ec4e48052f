"""A tiny random Llama built locally, for GRPO tests and benches that must not touch the hub.

Random weights make it useless as a model and ideal as a fixture: it trains in seconds on a CPU,
and a test can tell whether training moved its weights. Needs the ``train`` extra (torch, transformers).
"""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from memwise.exceptions import ConfigError


def _single_id(tokenizer: PreTrainedTokenizerBase, attribute: str) -> int | None:
    """A special token's id as the model config wants it; the tokenizer's stubs also allow strings and lists."""
    value = getattr(tokenizer, attribute)
    if value is not None and not isinstance(value, int):
        raise ConfigError(f"tokenizer {attribute} is {value!r}; tiny_llama needs one integer id (or None)")
    return value


def tiny_llama(
    tokenizer: PreTrainedTokenizerBase,
    *,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    max_positions: int = 2048,
    seed: int = 0,
) -> LlamaForCausalLM:
    """A randomly initialised causal LM sized to ``tokenizer``'s vocabulary and special tokens (seeded)."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        pad_token_id=_single_id(tokenizer, "pad_token_id"),
        bos_token_id=_single_id(tokenizer, "bos_token_id"),
        eos_token_id=_single_id(tokenizer, "eos_token_id"),
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)
