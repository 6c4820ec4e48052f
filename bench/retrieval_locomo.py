"""Turn retrieval on LoCoMo: recall@k of the hybrid recipe against same-run baselines.

    .venv/bin/python bench/retrieval_locomo.py --path ../shared/data/locomo/locomo10_dev.json [--loo]

The same as ``memwise bench retrieval --dataset locomo --path FILE``; see
:mod:`memwise.facts.retrieval_eval` for what is measured.
"""

from __future__ import annotations

from memwise.facts.retrieval_eval import main

if __name__ == "__main__":
    raise SystemExit(main())
