"""One place that turns a store setting (a path or a DSN) into a store.

``store = "postgresql://..."`` in the config (or ``MEMWISE_STORE``) selects :class:`PostgresStore`;
anything else is a SQLite file. The Postgres driver is imported only when asked for, so a SQLite
user needs none of it installed.
"""

from __future__ import annotations

from pathlib import Path

from memwise.exceptions import ConfigError
from memwise.store.base import Store

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_dsn(spec: str | Path) -> bool:
    """True when ``spec`` names a PostgreSQL database rather than a SQLite file."""
    return isinstance(spec, str) and spec.startswith(POSTGRES_SCHEMES)


def build_store(spec: str | Path, *, space: str = "default") -> Store:
    """A store for ``spec``: ``postgresql://`` (or ``postgres://``) -> PostgresStore, a path -> SQLiteStore.

    ``sqlite:///path`` is accepted as an explicit spelling of a path. Any other URL scheme is a
    ConfigError rather than a file with a strange name.
    """
    if is_dsn(spec):
        from memwise.store.postgres import PostgresStore

        return PostgresStore(str(spec), space=space)
    text = str(spec)
    if text.startswith("sqlite:///"):
        text = text[len("sqlite:///") - 1 :] if text.startswith("sqlite:////") else text[len("sqlite:///") :]
    elif "://" in text:
        scheme = text.split("://", 1)[0]
        raise ConfigError(
            f"store {text!r}: unknown scheme {scheme!r}; use a file path (SQLite) or postgresql://user@host/dbname"
        )
    if not text.strip():
        raise ConfigError("store setting is empty: give a SQLite file path or a postgresql:// DSN")
    from memwise.store.sqlite import SQLiteStore

    return SQLiteStore(text, space=space)
