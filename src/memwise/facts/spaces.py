"""Which vector space of a store a memory uses: the one named after its embedder.

Vectors of two models must never be compared, and two models can share a dimension (any two 384-d
models), so the dimension check alone cannot keep them apart. A memory therefore writes and searches the
space named after its embedder. Stores written before spaces were named keep their vectors in the
unnamed space ``default``; those are used as they are (nothing is re-embedded or lost). A store whose
vectors all belong to other models is refused: searching it with this embedder would find no memory by
meaning, silently. :mod:`memwise.facts.reembed` (``memwise reembed``) gives such a store the configured
embedder's vectors.

A space name is a model, not a way of computing it. MiniLM in bfloat16 once had a space of its own
(``all-MiniLM-L6-v2-bf16``); its vectors are float32's to a cosine of 0.9999, so both precisions now
share ``all-MiniLM-L6-v2``, and the precision chosen per machine cannot split or lock out a store.
:data:`SPACE_ALIASES` lists such retired names: a store whose vectors sit under one is searched there as
it is, without re-embedding.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import MappingProxyType

from memwise.exceptions import StoreError
from memwise.store.base import Store

LEGACY_SPACE = "default"
"""The space every vector went to before spaces were named after models (and a store's default)."""

SPACE_ALIASES: Mapping[str, tuple[str, ...]] = MappingProxyType({"all-MiniLM-L6-v2": ("all-MiniLM-L6-v2-bf16",)})
"""Embedder name -> older space names holding the same model's vectors, which a memory may keep using.

``all-MiniLM-L6-v2-bf16``: MiniLM's bfloat16 vectors, named apart until both precisions took one name.
"""

logger = logging.getLogger(__name__)


def choose_space(held: Mapping[str, int], embedder_name: str) -> str:
    """The space an embedder named ``embedder_name`` uses in a store holding ``held`` vectors per space.

    Its own space, or one of its :data:`SPACE_ALIASES`, whichever holds the most vectors (its own on a
    tie). Both can be filled after ``memwise reembed`` moved a store between the old names with the old
    vectors kept; memories added since went only to the new space, so the fuller one is the one that
    finds them (``memwise reembed`` fills in what the chosen space lacks).

    Raises:
        StoreError: the store's vectors were all made by other models.

    Example:
        >>> choose_space({}, "all-MiniLM-L6-v2"), choose_space({"default": 12}, "all-MiniLM-L6-v2")
        ('all-MiniLM-L6-v2', 'default')
        >>> choose_space({"all-MiniLM-L6-v2-bf16": 12}, "all-MiniLM-L6-v2")
        'all-MiniLM-L6-v2-bf16'
    """
    filled = {space for space, n in held.items() if n > 0}
    if not filled:
        return embedder_name
    own = [space for space in (embedder_name, *SPACE_ALIASES.get(embedder_name, ())) if space in filled]
    if own:
        return max(own, key=lambda space: held[space])  # max keeps the first, the embedder's own, on a tie
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
    elif chosen != embedder_name:
        logger.info("store vectors sit under %s, an older name of %s; using them there", chosen, embedder_name)
    store.space = chosen
