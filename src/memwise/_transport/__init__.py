"""The HTTP transport both OpenAI-compatible clients (chat in ``llm``, embeddings in ``embed``) share.

It sits below both so that neither client reaches into the other's private modules: ``http`` is the
keep-alive client and request plumbing, ``retry`` the retry policy and failure classification, ``keys``
the API-key lookup.
"""
