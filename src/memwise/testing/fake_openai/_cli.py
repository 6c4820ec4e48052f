"""The command line: ``python -m memwise.testing.fake_openai --port 8000 --latency 0.05``.

It prints ``fake-openai listening on <base URL>`` once serving (what :class:`ProcessServer` waits for)
and serves until SIGTERM or Ctrl-C. It lives here rather than in ``__main__`` so that the package can
re-export it without ``python -m`` finding ``__main__`` already imported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from typing import Any

from memwise.testing.fake_openai._failures import FAILURE_KINDS, FailurePlan
from memwise.testing.fake_openai._server import FakeOpenAIServer

DESCRIPTION = "A fast, fault-injecting fake of an OpenAI-compatible server, for tests and benches."


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m memwise.testing.fake_openai", description=DESCRIPTION)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 = a free one)")
    parser.add_argument("--latency", type=float, default=None, help="seconds before each reply")
    parser.add_argument("--dim", type=int, default=None, help="embedding dimension")
    parser.add_argument("--model", default=None, help="model name to report")
    parser.add_argument("--fail-first", type=int, default=None, help="fail the first K attempts of each request")
    parser.add_argument("--fail-rate", type=float, default=None, help="fail later attempts with this probability")
    parser.add_argument("--fail-kinds", default=None, help=f"comma-separated subset of {','.join(FAILURE_KINDS)}")
    parser.add_argument("--seed", type=int, default=None, help="seed of the failure draw")
    parser.add_argument("--reject-response-format", action="store_true", help="answer 400 to response_format")
    parser.add_argument("--ignore-n", action="store_true", help="answer one choice whatever n asks")
    parser.add_argument("--config", default=None, help="settings as JSON (FakeOpenAIServer.settings())")
    return parser.parse_args(argv)


def _server_from_args(args: argparse.Namespace) -> FakeOpenAIServer:
    settings: dict[str, Any] = json.loads(args.config) if args.config else {}
    failures = dict(settings.pop("failures", {}))
    if args.fail_first is not None:
        failures["first_attempts"] = args.fail_first
    if args.fail_rate is not None:
        failures["rate"] = args.fail_rate
    if args.fail_kinds:
        failures["kinds"] = [k.strip() for k in args.fail_kinds.split(",") if k.strip()]
    if args.seed is not None:
        failures["seed"] = args.seed
    for flag, name in (("latency", "latency_s"), ("dim", "dim"), ("model", "model")):
        if getattr(args, flag) is not None:
            settings[name] = getattr(args, flag)
    if args.reject_response_format:
        settings["reject_response_format"] = True
    if args.ignore_n:
        settings["ignore_n"] = True
    return FakeOpenAIServer(port=args.port, failures=FailurePlan.from_dict(failures), **settings)


async def _serve(server: FakeOpenAIServer) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        print(f"fake-openai listening on {server.base_url}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    """Serve until SIGTERM or Ctrl-C."""
    asyncio.run(_serve(_server_from_args(_parse_args(argv))))
