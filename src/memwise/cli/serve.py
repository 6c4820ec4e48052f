"""`memwise serve` (REST), `memwise mcp` (MCP over stdio or HTTP) and `memwise keys` (API keys).

The server code is imported inside the commands: fastapi, uvicorn and mcp are the ``server`` extra,
and ``memwise --help`` must work without them.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from memwise.cli._options import GlobalOptions, config_option
from memwise.config import Settings
from memwise.exceptions import ConfigError
from memwise.server.config import ServerConfig
from memwise.store.registry import is_dsn

keys_app = typer.Typer(help="API keys for `memwise serve` / `memwise mcp --transport http`.", no_args_is_help=True)

DataDirOption = Annotated[Path | None, typer.Option(help="where tenant memories live (default: $MEMWISE_HOME/server)")]
StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="postgresql://... : every tenant in its own schema of that database, shareable by several "
        "servers (default: the store setting if it is a DSN, else SQLite files under --data-dir)",
    ),
]
KeysOption = Annotated[
    Path | None,
    typer.Option("--keys", help="JSON keys file ($MEMWISE_KEYS_FILE); without one: no auth, loopback only"),
]


def _data_dir(value: Path | None) -> Path:
    if value is not None:
        return value
    home = Path(os.environ.get("MEMWISE_HOME") or Path.home() / ".memwise")
    return home / "server"


def _keys_file(value: Path | None) -> Path | None:
    if value is not None:
        return value
    env = os.environ.get("MEMWISE_KEYS_FILE")
    return Path(env) if env else None


def _server_store(flag: str | None, settings: Settings) -> str | None:
    """The server's Postgres DSN: the flag, else a DSN in the store setting; None keeps SQLite per tenant.

    A SQLite path in the store setting names one file, which cannot hold separate tenants, so the
    server says it is not used rather than silently sharing it.
    """
    if flag is not None:
        return flag
    if settings.store is None:
        return None
    if is_dsn(settings.store):
        return settings.store
    typer.secho(
        f"note: the store setting {settings.store!r} is a SQLite file; the server keeps one SQLite file per "
        "tenant under --data-dir instead (give --store postgresql://... to share one database)",
        err=True,
    )
    return None


def _require_server_extra(what: str, *modules: str) -> None:
    """Refuse to start ``what`` without the ``server`` extra, naming the install command."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"{what} needs the 'server' extra: pip install 'memwise[server]' ({exc})") from exc


def _server_config(
    ctx: typer.Context, *, data_dir: Path | None, store: str | None, keys_file: Path | None, mode: str, **more: Any
) -> ServerConfig:
    """The ServerConfig both commands build from their shared options (``more``: command-specific fields)."""
    from memwise.server.config import ServerConfig

    opts: GlobalOptions = ctx.obj
    settings = opts.settings()
    return ServerConfig(
        data_dir=_data_dir(data_dir),
        store=_server_store(store, settings),
        keys_file=keys_file,
        settings=settings,
        mode=mode,  # type: ignore[arg-type]
        **more,
    )


def _warn_if_exposed(host: str, config: ServerConfig) -> None:
    """Say on stderr when the bind address reaches beyond this machine without keys (the server still starts)."""
    from memwise.server.config import check_bind

    warning = check_bind(host, config)
    if warning:
        typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW, err=True)


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="address to listen on (non-loopback needs --keys)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8080,
    data_dir: DataDirOption = None,
    store: StoreOption = None,
    keys: KeysOption = None,
    mode: Annotated[str, typer.Option(help="turns (no model) or facts (model extracts facts) for adds")] = "turns",
    max_body_bytes: int = config_option(ServerConfig, "max_body_bytes"),
    ingest_dir: Annotated[
        Path | None, typer.Option(help="ingest jobs may read dataset files under this folder (default: uploads only)")
    ] = None,
    pg_pool_size: int = config_option(ServerConfig, "pg_pool_size"),
    job_stale_after: float = config_option(ServerConfig, "job_stale_after_s"),
) -> None:
    """Serve memory over REST: /v1/memories..., /v1/jobs..., /health, /ready, OpenAPI docs at /docs."""
    _require_server_extra("the server", "fastapi", "uvicorn")
    import uvicorn

    from memwise.server.app import create_app

    config = _server_config(
        ctx,
        data_dir=data_dir,
        store=store,
        keys_file=_keys_file(keys),
        mode=mode,
        max_body_bytes=max_body_bytes,
        ingest_dir=ingest_dir,
        pg_pool_size=pg_pool_size,
        job_stale_after_s=job_stale_after,
    )
    _warn_if_exposed(host, config)
    uvicorn.run(create_app(config), host=host, port=port, log_level="info")


def mcp(
    ctx: typer.Context,
    transport: Annotated[str, typer.Option(help="stdio (one local agent) or http (streamable HTTP at /mcp)")] = "stdio",
    user_id: Annotated[str, typer.Option(help="whose memory the tools read and write")] = "default",
    tenant: Annotated[str, typer.Option(help="tenant for stdio and keyless HTTP (HTTP with keys: the key's)")] = (
        "default"
    ),
    host: Annotated[str, typer.Option(help="HTTP: address to listen on (non-loopback needs --keys)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP: TCP port")] = 8081,
    data_dir: DataDirOption = None,
    store: StoreOption = None,
    keys: KeysOption = None,
    mode: Annotated[str, typer.Option(help="turns or facts, for the add tool")] = "turns",
    pg_pool_size: int = config_option(ServerConfig, "pg_pool_size"),
) -> None:
    """Serve memory tools (add, search, answer, get_all, delete) to MCP clients."""
    if transport not in ("stdio", "http"):
        raise ConfigError(f"--transport must be 'stdio' or 'http', got {transport!r}")
    _require_server_extra("the MCP server", "mcp")
    import anyio

    from memwise.server.app import create_state
    from memwise.server.auth import validate_tenant
    from memwise.server.mcp import build_mcp_server, mcp_http_app

    config = _server_config(
        ctx,
        data_dir=data_dir,
        store=store,
        keys_file=_keys_file(keys) if transport == "http" else None,
        mode=mode,
        default_tenant=validate_tenant(tenant),
        pg_pool_size=pg_pool_size,
    )
    if transport == "http":
        _warn_if_exposed(host, config)
    state = create_state(config)
    server = build_mcp_server(state, tenant=config.default_tenant, user_id=user_id)

    async def run() -> None:
        try:
            if transport == "stdio":
                await server.run_stdio_async()
            else:
                import uvicorn

                http = uvicorn.Server(uvicorn.Config(mcp_http_app(state, server, host=host), host=host, port=port))
                await http.serve()
        finally:
            await state.aclose()

    anyio.run(run)


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="the tenant this key may reach (and no other)")],
    keys: KeysOption = None,
) -> None:
    """Create an API key for a tenant: printed once, only its sha256 is stored."""
    from memwise.server.auth import create_key

    path = _keys_file(keys)
    if path is None:
        raise ConfigError("give the keys file: --keys FILE (or set MEMWISE_KEYS_FILE)")
    secret, entry = create_key(path, tenant)
    typer.secho(f"key {entry.id} for tenant {entry.tenant!r} (shown once; store it now):", err=True)
    typer.echo(secret)


@keys_app.command("list")
def keys_list(keys: KeysOption = None) -> None:
    """List key ids and tenants (secrets are never stored, so never shown)."""
    from memwise.server.auth import list_keys

    path = _keys_file(keys)
    if path is None:
        raise ConfigError("give the keys file: --keys FILE (or set MEMWISE_KEYS_FILE)")
    for entry in list_keys(path):
        typer.echo(f"{entry.id}\t{entry.tenant}")
