"""MetaMem: a learned meta-memory E of natural-language rules on how to use retrieved facts.

Answers are produced as ``LLM(prompt(q, M, E))``; E is compiled from self-reflection on rollouts, never by
touching model weights. ``rules`` holds E itself: stable rule ids, checked edits, bounded size, versions
with provenance, and the fallback used when the consolidation call fails.
"""
