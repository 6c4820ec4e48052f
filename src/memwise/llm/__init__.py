"""Chat model backends behind one protocol, :class:`memwise.llm.base.ChatModel`.

Empty on purpose: a backend module is imported only when chosen (see :mod:`memwise.llm.registry`), so the
OpenAI-compatible client works without llama.cpp installed.
"""
