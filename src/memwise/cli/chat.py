"""`memwise chat`: one call through the configured model, printing the reply and its usage."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from memwise.cli._options import GlobalOptions
from memwise.cli._rundirs import open_run
from memwise.exceptions import ConfigError
from memwise.llm.base import ChatRequest, ChatResponse
from memwise.llm.registry import ModelSet


def _load_schema(path: Path) -> dict[str, Any]:
    try:
        schema = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"schema file not found: {path}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"schema file {path} is not valid JSON: {exc}") from exc
    if not isinstance(schema, dict):
        raise ConfigError(f"schema file {path} must hold a JSON object (a JSON schema)")
    return schema


async def _chat(opts: GlobalOptions, role: str, request: ChatRequest, run_dir: Path | None) -> ChatResponse:
    settings = opts.settings()
    warn = Console(stderr=True).print
    run = open_run(run_dir, "memwise chat", {"role": role}, settings, warn=warn) if run_dir else None
    try:
        models = ModelSet(settings)
        try:
            model = models.get(role)
            llm = run.record(model, stage="chat") if run else model
            return await llm.complete(request)
        finally:
            await models.aclose()
    finally:
        if run:
            run.close()


def chat(
    ctx: typer.Context,
    prompt: Annotated[str, typer.Argument(help="the user message")],
    system: Annotated[str | None, typer.Option(help="system prompt")] = None,
    schema: Annotated[Path | None, typer.Option(help="JSON-schema file: ask for output that conforms")] = None,
    role: Annotated[str, typer.Option(help="which configured model: policy, judge or optimizer")] = "policy",
    n: Annotated[int, typer.Option(help="samples")] = 1,
    temperature: Annotated[float, typer.Option()] = 0.0,
    top_p: Annotated[float, typer.Option()] = 1.0,
    max_tokens: Annotated[int, typer.Option()] = 256,
    seed: Annotated[int | None, typer.Option()] = None,
    stop: Annotated[list[str] | None, typer.Option(help="stop sequence (repeatable)")] = None,
    run_dir: Annotated[Path | None, typer.Option(help="record (and replay) the call in this run's ledger")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the response as JSON")] = False,
) -> None:
    """Send one message to the configured model and print the reply with its token usage."""
    request = ChatRequest.of(
        prompt,
        system=system,
        n=n,
        temperature=temperature,
        top_p=top_p,
        max_tokens=max_tokens,
        seed=seed,
        stop=tuple(stop or ()),
        json_schema=_load_schema(schema) if schema else None,
    )
    response = asyncio.run(_chat(ctx.obj, role, request, run_dir))
    if as_json:
        samples = [
            {
                "text": s.text,
                "finish_reason": s.finish_reason,
                "prompt_tokens": s.usage.prompt_tokens,
                "completion_tokens": s.usage.completion_tokens,
                "latency_s": round(s.latency_s, 4),
                "cached": s.cached,
            }
            for s in response.samples
        ]
        typer.echo(json.dumps({"model": response.model, "samples": samples}, ensure_ascii=False))
        return
    for i, s in enumerate(response.samples):
        if len(response.samples) > 1:
            typer.secho(f"--- sample {i}", dim=True)
        typer.echo(s.text)
        cached = ", replayed from ledger" if s.cached else ""
        typer.secho(
            f"[{response.model}: {s.usage.prompt_tokens} prompt + {s.usage.completion_tokens} completion tokens, "
            f"finish={s.finish_reason}, {s.latency_s:.2f}s{cached}]",
            dim=True,
            err=True,
        )
