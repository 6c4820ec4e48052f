"""Which API key to send to an OpenAI-compatible server, shared by the chat and embedding clients."""

from __future__ import annotations

import ipaddress
import os
from urllib.parse import urlsplit

from memwise.exceptions import ConfigError


def is_local_url(base_url: str) -> bool:
    """True for loopback, private-network and single-label hosts, where servers usually run keyless."""
    host = (urlsplit(base_url).hostname or "").lower()
    if host in ("localhost", "host.docker.internal") or host.endswith((".localhost", ".local", ".internal")):
        return True
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return bool(host) and "." not in host
    return addr.is_loopback or addr.is_private or addr.is_link_local


def resolve_api_key(base_url: str, api_key: str | None, api_key_env: str) -> str:
    """The key to send: explicit, else from the environment, else ``EMPTY`` for a local server.

    A remote server without a key would only fail later with a 401 that names no variable, so that case
    is a :class:`ConfigError` now.
    """
    key = (api_key or os.environ.get(api_key_env) or "").strip()
    if any(c in key for c in "\r\n\0"):
        raise ConfigError(f"the API key for {base_url} (from {api_key_env} or api_key) contains a line break")
    if key:
        return key
    if is_local_url(base_url):
        return "EMPTY"
    raise ConfigError(f"no API key for {base_url}: set the environment variable {api_key_env}")
