"""API keys: each bound to one tenant, stored only as a sha256 hash in a JSON keys file.

A key is 32 random bytes (``secrets.token_urlsafe``), so a plain sha256 is enough: there is nothing to
guess that a slow hash would protect. The key is printed once at creation and never written down by
memwise. Comparison uses :func:`hmac.compare_digest` over every stored hash, so timing does not tell
how many characters matched.

Keys file layout::

    {"keys": [{"id": "k_3f2a...", "tenant": "acme", "sha256": "<hex>", "created_at": 1733200000.0}]}

The file is re-read when it changes on disk, so ``memwise keys create`` takes effect on a running
server without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from memwise.exceptions import ConfigError

KEY_PREFIX = "mwk_"
_TENANT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def validate_tenant(name: str) -> str:
    """A tenant name safe as a file name and a Postgres schema suffix: ``[a-z0-9][a-z0-9_-]{0,62}``.

    Example:
        >>> validate_tenant("acme-2")
        'acme-2'
    """
    if not isinstance(name, str) or not _TENANT.match(name):
        raise ConfigError(
            f"tenant name {name!r} is not allowed: use 1-63 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return name


def hash_key(key: str) -> str:
    """The hex sha256 stored for a key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class KeyEntry:
    """One stored key: its public id, its tenant and the hash of the secret."""

    id: str
    tenant: str
    sha256: str
    created_at: float


def _read_entries(path: Path) -> list[KeyEntry]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"keys file {path} does not exist; create a key with `memwise keys create`") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"keys file {path} cannot be read as JSON: {exc}") from exc
    items = raw.get("keys") if isinstance(raw, dict) else None
    if not isinstance(items, list):
        raise ConfigError(f"keys file {path}: expected an object with a 'keys' list")
    entries = []
    for i, item in enumerate(items):
        try:
            entry = KeyEntry(
                id=str(item["id"]),
                tenant=validate_tenant(item["tenant"]),
                sha256=str(item["sha256"]),
                created_at=float(item.get("created_at", 0.0)),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"keys file {path}, key {i}: needs 'id', 'tenant' and 'sha256' ({exc})") from exc
        if not re.fullmatch(r"[0-9a-f]{64}", entry.sha256):
            raise ConfigError(f"keys file {path}, key {i}: 'sha256' must be 64 hex digits")
        entries.append(entry)
    return entries


def create_key(path: Path, tenant: str) -> tuple[str, KeyEntry]:
    """Add a new key for ``tenant`` to the keys file (created if missing); returns the secret, once.

    The file is replaced atomically and made readable by its owner only.
    """
    validate_tenant(tenant)
    entries = _read_entries(path) if path.exists() else []
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    entry = KeyEntry(id="k_" + secrets.token_hex(6), tenant=tenant, sha256=hash_key(secret), created_at=time.time())
    entries.append(entry)
    payload = {"keys": [entry.__dict__ for entry in entries]}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return secret, entry


def list_keys(path: Path) -> list[KeyEntry]:
    """The keys in a keys file (hashes only; secrets are never stored)."""
    return _read_entries(path)


class KeyRing:
    """The keys of a keys file, reloaded when the file changes; maps a presented key to its tenant.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "keys.json"
        >>> secret, _ = create_key(path, "acme")
        >>> ring = KeyRing(path)
        >>> ring.tenant_for(secret), ring.tenant_for("mwk_wrong")
        ('acme', None)
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[float, int] | None = None
        self._entries: list[KeyEntry] = []
        self._reload()

    def _reload(self) -> None:
        try:
            st = self.path.stat()
        except FileNotFoundError as exc:
            raise ConfigError(f"keys file {self.path} does not exist; create a key with `memwise keys create`") from exc
        stamp = (st.st_mtime, st.st_size)
        with self._lock:
            if stamp != self._stamp:
                self._entries = _read_entries(self.path)
                self._stamp = stamp

    def tenant_for(self, key: str | None) -> str | None:
        """The tenant a key belongs to, or None for a missing or unknown key."""
        if not key:
            return None
        self._reload()
        digest = hash_key(key)
        found: str | None = None
        for entry in self._entries:  # no early exit: the time taken does not depend on which entry matched
            if hmac.compare_digest(digest, entry.sha256):
                found = entry.tenant
        return found


def key_from_headers(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key a request presents: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.

    Example:
        >>> key_from_headers("Bearer mwk_abc", None), key_from_headers(None, "mwk_def")
        ('mwk_abc', 'mwk_def')
    """
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    if x_api_key and x_api_key.strip():
        return x_api_key.strip()
    return None
