"""Which vector space of a store a memory uses: the one named after its embedder.

Vectors of two models must never be compared, and two models can share a dimension (MiniLM in float32
and bfloat16, or any two 384-d models), so the dimension check alone cannot keep them apart. A memory
therefore writes and searches the space named after its embedder. Stores written before spaces were
named keep their vectors in the unnamed space ``default``; those are used as they are (nothing is
re-embedded or lost). A store whose vectors all belong to other models is refused: searching it with
this embedder would find no memory by meaning, silently. :mod:`memwise.facts.reembed` (``memwise
reembed``) gives such a store the configured embedder's vectors.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from memwise.exceptions import StoreError
from memwise.store.base import Store

LEGACY_SPACE = "default"
"""The space every vector went to before spaces were named after models (and a store's default)."""

logger = logging.getLogger(__name__)


def choose_space(held: Mapping[str, int], embedder_name: str) -> str:
    """The space an embedder named ``embedder_name`` uses in a store holding ``held`` vectors per space.

    Raises:
        StoreError: the store's vectors were all made by other models.

    Example:
        >>> choose_space({}, "all-MiniLM-L6-v2"), choose_space({"default": 12}, "all-MiniLM-L6-v2")
        ('all-MiniLM-L6-v2', 'default')
    """
    filled = {space for space, n in held.items() if n > 0}
    if not filled or embedder_name in filled:
        return embedder_name
    if filled == {LEGACY_SPACE}:
        return LEGACY_SPACE
    others = ", ".join(sorted(filled - {LEGACY_SPACE}))
    raise StoreError(
        f"this store's memories were embedded by {others}, not by the configured embedder {embedder_name!r}; "
        f"searching them with it would find nothing by meaning. Configure the embedder the store was built "
        f"with, use a new store, or re-embed this one for {embedder_name!r} with `memwise reembed` "
        f"(memwise.facts.reembed.reembed_store in Python; the old vectors are kept)"
    )


def bind_space(store: Store, embedder_name: str) -> None:
    """Point ``store``'s default space at the embedder's, unless the caller chose a space already."""
    if store.space != LEGACY_SPACE:
        return
    chosen = choose_space(store.vector_spaces(), embedder_name)
    if chosen == LEGACY_SPACE and embedder_name != LEGACY_SPACE:
        logger.info("store vectors predate named spaces; taking them as %s's", embedder_name)
    store.space = chosen
