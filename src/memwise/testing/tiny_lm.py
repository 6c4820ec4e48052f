"""A tiny random Llama built locally, for GRPO tests and benches that must not touch the hub.

Random weights make it useless as a model and ideal as a fixture: it trains in seconds on a CPU,
and a test can tell whether training moved its weights. Needs the ``train`` extra (torch, transformers).
"""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase


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
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)
