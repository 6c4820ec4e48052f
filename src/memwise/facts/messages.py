"""Chat messages as the memory API takes them, turned into the conversation records ingest stores.

A string or one message mapping is one message (iterating a string would store one memory per
character); a session with no id of its own is named after its content, so the same messages added
twice are one session while new ones under a known conversation id are another.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from memwise.exceptions import ConfigError
from memwise.facts.types import Conversation, Session, Turn
from memwise.facts.units import unit_id

MessageLike = Mapping[str, Any] | str
Messages = MessageLike | Sequence[MessageLike]
"""What ``add`` takes: one message (a string or a ``{"role", "content"}`` mapping) or a list of them."""


def _said(messages: Messages) -> list[tuple[str, str]]:
    """``(speaker, content)`` per message, system prompts left out.

    A string, or a single mapping, is one message: iterating it would store one memory per
    character (or per key). A ``"system"`` message is an agent's instructions; stored, it would be a
    memory again with every chat the agent adds, and found by every search near its words.
    """
    if isinstance(messages, str | Mapping):
        messages = [messages]
    elif isinstance(messages, bytes | bytearray) or not isinstance(messages, Sequence):
        raise ConfigError(
            f"messages must be a string, a message mapping or a list of them, got {type(messages).__name__}"
        )
    said = []
    for i, msg in enumerate(messages):
        if isinstance(msg, str):
            speaker, content = "user", msg
        elif isinstance(msg, Mapping):
            content = msg.get("content")
            if not isinstance(content, str):
                raise ConfigError(f"message {i}: 'content' must be a string, got {type(content).__name__}")
            if msg.get("role") == "system":  # the agent's instructions, not something said: mem0 leaves it out too
                continue
            speaker = str(msg.get("speaker") or msg.get("name") or msg.get("role") or "user")
        else:
            raise ConfigError(f"message {i} must be a string or a mapping with 'content', got {type(msg).__name__}")
        if not content.strip():  # stored, it would be a memory that says nothing ("user: ") and is found anyway
            raise ConfigError(f"message {i}: 'content' is empty; leave the message out")
        said.append((speaker, content))
    return said


def to_conversation(
    messages: Messages,
    *,
    conversation_id: str | None = None,
    session_id: str | None = None,
    session_time: datetime | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Conversation:
    """Chat messages (``{"role"|"speaker", "content"}`` or plain strings) as a one-session conversation.

    Without ``session_id``, the session is named after its content (messages, time and metadata):
    adding the same messages twice is then recognised as the same session and stored once, while
    different messages (or the same ones with other metadata) under the same ``conversation_id`` are a
    new session and are stored. ``conversation_id`` defaults to the session id.
    """
    said = _said(messages)
    if session_id is None:
        when = session_time.isoformat() if session_time is not None else None
        labels = json.dumps(dict(metadata or {}), sort_keys=True, ensure_ascii=True, default=str)
        parts = (part for pair in said for part in pair)
        session_id = "s-" + unit_id("session", conversation_id, when, labels, *parts)[:16]
    turns = []
    for i, (speaker, content) in enumerate(said):
        turns.append(
            Turn(
                id=f"{session_id}:{i}",
                speaker=speaker,
                text=content,
                session_id=session_id,
                index=i,
                timestamp=session_time,
            )
        )
    session = Session(id=session_id, turns=tuple(turns), timestamp=session_time)
    return Conversation(id=conversation_id or session_id, sessions=(session,))
