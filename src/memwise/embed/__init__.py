"""Embedding backends behind one protocol, :class:`memwise.embed.base.Embedder`.

Empty on purpose: a backend module is imported only when chosen (see :mod:`memwise.embed.registry`), so the
OpenAI-compatible client works without torch installed.
"""
