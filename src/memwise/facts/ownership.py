"""Which user owns an ingested conversation: one rule for the CLI, the benchmarks, MetaMem and the server.

Before this module the CLI's ``memwise ingest`` honoured a JSONL group's ``user_id`` while
``bench qa`` and ``metamem prepare`` always used the conversation id, so the same file landed under
different users depending on the command, and a question prepared from one could not find the
memories ingested by the other.
"""

from __future__ import annotations

from memwise.facts.types import Conversation


def owner_of(conv: Conversation, user_id: str | None = None) -> str:
    """The user a conversation's memories belong to.

    An explicit ``user_id`` wins (everything for one user); otherwise the dataset's own ``user_id``
    (JSONL sessions carry one); otherwise the conversation id, so LoCoMo and LongMemEval, which name
    no user, get one user per conversation.

    Example:
        >>> from memwise.facts.types import Conversation
        >>> owner_of(Conversation(id="conv-26", sessions=()))
        'conv-26'
        >>> owner_of(Conversation(id="c1", sessions=(), metadata={"user_id": "u1"}))
        'u1'
        >>> owner_of(Conversation(id="c1", sessions=(), metadata={"user_id": "u1"}), "alice")
        'alice'
    """
    if user_id:
        return user_id
    named = conv.metadata.get("user_id")
    return str(named) if named else conv.id
