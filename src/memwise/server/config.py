"""What a server is told: where memory lives, who may call it, and how much one request may ask for."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from memwise.config import Settings
from memwise.exceptions import ConfigError
from memwise.facts.memory import Mode
from memwise.store.registry import is_dsn

DEFAULT_MAX_BODY_BYTES = 1_000_000
"""1 MB: larger requests get 413. Big datasets go through an ingest job reading a file on the server."""


@dataclass(frozen=True)
class ServerConfig:
    """Settings of one REST or MCP server process.

    Example:
        >>> ServerConfig(data_dir=Path("/tmp/mw")).max_top_k
        100
    """

    data_dir: Path = field(metadata={"help": "tenant stores live in <data_dir>/tenants/<tenant>.sqlite3"})
    store: str | None = field(
        default=None,
        metadata={"help": "a postgresql:// DSN: every tenant in its own schema there; None: SQLite under data_dir"},
    )
    keys_file: Path | None = field(default=None, metadata={"help": "JSON keys file; None: no auth, loopback only"})
    settings: Settings = field(default_factory=Settings, metadata={"help": "models and embedder"})
    mode: Mode = field(default="turns", metadata={"help": "ingest mode for add and ingest jobs"})
    default_tenant: str = field(default="default", metadata={"help": "the tenant of every call when no keys file"})
    max_body_bytes: int = field(default=DEFAULT_MAX_BODY_BYTES, metadata={"help": "413 past this request size"})
    max_messages: int = field(default=200, metadata={"help": "messages one add may carry"})
    max_top_k: int = field(default=100, metadata={"help": "largest top_k of search and answer"})
    max_limit: int = field(default=1000, metadata={"help": "largest limit of get_all"})
    ingest_dir: Path | None = field(
        default=None, metadata={"help": "ingest jobs may read dataset files under this folder only; None: uploads only"}
    )
    max_jobs_kept: int = field(
        default=1000, metadata={"help": "finished jobs remembered per tenant for GET /v1/jobs/{id}"}
    )
    pg_pool_size: int = field(
        default=10,
        metadata={"help": "with a postgresql:// store: connections this process opens at most, for all tenants"},
    )
    job_stale_after_s: float = field(
        default=60.0,
        metadata={
            "help": "seconds without a save (a live server saves every 2 s) before a job reads failed (server gone)"
        },
    )

    def __post_init__(self) -> None:
        if self.store is not None and not is_dsn(self.store):
            raise ConfigError(
                f"server store {self.store!r} is not a postgresql:// DSN: the server keeps one store per tenant, "
                "so give a PostgreSQL database (postgresql://user@host/dbname) or leave it unset for SQLite "
                "files under the data folder"
            )
        if self.mode not in ("turns", "facts"):
            raise ConfigError(f"server mode must be 'turns' or 'facts', got {self.mode!r}")
        for name in ("max_body_bytes", "max_messages", "max_top_k", "max_limit", "max_jobs_kept", "pg_pool_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"server setting {name} must be >= 1, got {getattr(self, name)}")
        if not self.job_stale_after_s > 10.0:
            # Shorter than a few missed 2 s saves would call a busy server's jobs dead.
            raise ConfigError(f"server setting job_stale_after_s must be > 10 seconds, got {self.job_stale_after_s}")

    @property
    def auth_enabled(self) -> bool:
        """Whether callers must present an API key (a keys file is configured)."""
        return self.keys_file is not None


def is_loopback(host: str) -> bool:
    """True for hosts only this machine can reach: ``localhost``, 127.0.0.0/8, ``::1``.

    Example:
        >>> is_loopback("127.0.0.1"), is_loopback("0.0.0.0"), is_loopback("localhost")
        (True, False, True)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, config: ServerConfig) -> str | None:
    """Refuse to expose an unauthenticated server; returns the warning to print, if any.

    Without keys, anyone who can reach the port can read every memory, so only loopback is allowed.

    Raises:
        ConfigError: no keys file and a host other machines could reach.
    """
    if config.auth_enabled:
        return None
    if not is_loopback(host):
        raise ConfigError(
            f"refusing to listen on {host} without API keys: anyone on the network could read every memory. "
            "Create a key with `memwise keys create --tenant NAME --keys FILE` and pass --keys FILE, "
            "or listen on 127.0.0.1"
        )
    return (
        f"no API keys configured: listening on {host} (loopback only), every call uses tenant "
        f"{config.default_tenant!r}. Pass --keys FILE to require keys."
    )
