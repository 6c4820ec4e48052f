"""Ways to run all-MiniLM-L6-v2 on CPU, timed against each other in one run, with their agreement.

Variants (each on the same texts, after a warm-up pass, in interleaved rounds so load from other
processes on a shared machine falls on all of them alike; compare the ratios to ``st``, not the
absolute rates between runs):

- ``st``: the path before issue 13, sentence-transformers ``encode`` per planned pass (it tokenises
  every text a second time and pads through its own collate).
- ``f32``: :class:`MiniLMEmbedder` with ``precision="float32"``: one tokenisation, the ids padded per pass, the
  transformer called under ``torch.inference_mode``, mean pooling in float32.
- ``bf16``: :class:`MiniLMEmbedder` with ``precision="bfloat16"``.
- ``direct``: the same computation as ``f32`` written out here, on the float32 weights.
- ``int8``: ``direct`` on a copy whose Linear layers are dynamically quantised to int8
  (``torch.ao.quantization.quantize_dynamic``); measured, not shipped: its vectors agree with
  float32 only to a cosine of about 0.93 (min 0.86-0.89) on LoCoMo turns.

Measured on the 2-core CPU (AVX512-BF16), all 2,760 LoCoMo dev turns, 3 rounds, passive waiting,
medians in texts/s: st 163, f32 164, bf16 454 (cosine to st 0.99995 mean, 0.99988 min), int8 494
(cosine 0.93 mean, 0.86 min). Under heavy load from other processes bf16 stayed 2.5-3x f32.

Agreement is the cosine between each variant's vector and the first variant's for the same text
(mean, min). Every variant runs in a worker thread, as the embedder does under ``embed``. OpenMP's
wait policy is read once, when torch is imported, so run with ``OMP_WAIT_POLICY=PASSIVE`` to see the
embedder as it loads itself (it sets that policy before importing torch) and without it to see
torch's default spinning wait.

    .venv/bin/python bench/embed_variants.py --path ../shared/data/locomo/locomo10_dev.json
    .venv/bin/python bench/embed_variants.py --texts 300 --rounds 3 --variants st,f32,bf16 --out /tmp/v.json
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from memwise.embed.minilm import TOKEN_BUDGET, MiniLMEmbedder, plan_batches
from memwise.facts.readers import read_locomo
from memwise.facts.retrieval_eval import index_texts

Encode = Callable[[list[str]], np.ndarray]


def st_encode(embedder: MiniLMEmbedder) -> Encode:
    """The pre-issue-13 path: sentence-transformers ``encode`` on each planned pass."""
    model = embedder.model

    def run(texts: list[str]) -> np.ndarray:
        out = np.empty((len(texts), 384), dtype=np.float32)
        ids = model.tokenizer(texts, truncation=True, max_length=model.max_seq_length)["input_ids"]
        for rows in plan_batches([len(x) for x in ids], embedder.batch_size, TOKEN_BUDGET):
            out[rows] = model.encode(
                [texts[i] for i in rows],
                batch_size=len(rows),
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return out

    return run


def direct_encode(embedder: MiniLMEmbedder, transformer: Any) -> Encode:
    """Tokenise once, pad each planned pass with numpy, call ``transformer`` and mean-pool here."""
    tokenizer = embedder.model.tokenizer
    limit = embedder.model.max_seq_length
    pad = tokenizer.pad_token_id or 0

    def run(texts: list[str]) -> np.ndarray:
        out = np.empty((len(texts), 384), dtype=np.float32)
        ids = tokenizer(texts, truncation=True, max_length=limit)["input_ids"]
        for rows in plan_batches([len(x) for x in ids], embedder.batch_size, TOKEN_BUDGET):
            width = len(ids[rows[0]])
            tokens = np.full((len(rows), width), pad, dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for j, i in enumerate(rows):
                tokens[j, : len(ids[i])] = ids[i]
                mask[j, : len(ids[i])] = 1
            attention = torch.from_numpy(mask)
            with torch.inference_mode():
                hidden = transformer(
                    input_ids=torch.from_numpy(tokens),
                    attention_mask=attention,
                    token_type_ids=torch.zeros_like(attention),
                ).last_hidden_state.float()
                weights = attention.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, dim=1)
            out[rows] = pooled.numpy()
        return out

    return run


def embedder_encode(embedder: MiniLMEmbedder) -> Encode:
    """The embedder's own ``embed`` (which encodes in a worker thread), called synchronously."""
    return lambda texts: asyncio.run(embedder.embed(texts))


def in_worker(encode: Encode) -> Encode:
    """``encode`` run in a worker thread, as ``embed`` runs the model: OpenMP keeps a team per calling thread."""
    return lambda texts: asyncio.run(asyncio.to_thread(encode, texts))


def variants(embedder: MiniLMEmbedder, names: Sequence[str]) -> dict[str, Encode]:
    base = embedder.model[0].auto_model
    made: dict[str, Encode] = {}
    for name in names:
        if name == "st":
            made[name] = in_worker(st_encode(embedder))
        elif name == "f32":
            made[name] = embedder_encode(embedder)
        elif name == "direct":
            made[name] = in_worker(direct_encode(embedder, base))
        elif name == "int8":
            quantised = torch.ao.quantization.quantize_dynamic(
                copy.deepcopy(base), {torch.nn.Linear}, dtype=torch.qint8
            )
            made[name] = in_worker(direct_encode(embedder, quantised))
        elif name == "bf16":
            made[name] = embedder_encode(MiniLMEmbedder(precision="bfloat16"))
        else:
            raise SystemExit(f"unknown variant {name!r}")
    return made


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", default="../shared/data/locomo/locomo10_dev.json", help="LoCoMo file")
    parser.add_argument("--texts", type=int, default=0, help="use the first N index texts (0: all)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default="st,f32,bf16,int8")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    wait_policy = os.environ.get("OMP_WAIT_POLICY", "unset (torch's default: spin)")  # before the embedder sets it
    texts = index_texts(read_locomo(args.path))
    if args.texts:
        texts = texts[: args.texts]
    embedder = MiniLMEmbedder(precision="float32")  # the float32 baseline, whatever ``auto`` would pick here
    encoders = variants(embedder, args.variants.split(","))
    vectors = {name: encode(texts[:64]) for name, encode in encoders.items()}  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in encoders}
    for _ in range(args.rounds):
        for name, encode in encoders.items():
            start = time.perf_counter()
            vectors[name] = encode(texts)
            rates[name].append(len(texts) / (time.perf_counter() - start))
            print(f"{name:8s} {rates[name][-1]:7.1f} texts/s", file=sys.stderr)
    reference = next(iter(encoders))
    result: dict[str, Any] = {
        "texts": len(texts),
        "rounds": args.rounds,
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": wait_policy,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "reference": reference,
        "variants": {},
    }
    ref_median = statistics.median(rates[reference])
    for name in encoders:
        cosine = np.sum(vectors[name] * vectors[reference], axis=1)
        result["variants"][name] = {
            "texts_per_s": [round(r, 1) for r in rates[name]],
            "median_texts_per_s": round(statistics.median(rates[name]), 1),
            "speedup_vs_reference": round(statistics.median(rates[name]) / ref_median, 3),
            "cosine_mean": round(float(cosine.mean()), 6),
            "cosine_min": round(float(cosine.min()), 6),
        }
    print(json.dumps(result, indent=2))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
