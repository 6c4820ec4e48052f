"""Every `memwise` command in README.md's ```bash blocks parses, and the ones that can run here do.

A README that drifts from the CLI is the first thing a newcomer trips on (the tour once named a
schema file that did not exist and a `--json` flag that meant a file). Two checks:

* every command line is parsed by the real Typer/click parser (global options, command, sub-command,
  options, arguments), so a flag the README shows and the CLI no longer has fails here;
* each command is run in a temporary folder, in README order, unless the table below says why not.
  Commands that call a model run against the embedded model when they finish in seconds with a
  small ``--max-tokens``; the rest get ``--base-url`` of a fake OpenAI-compatible server on loopback
  (the README's own server URLs are rewritten to it), and embeddings from that server instead of
  MiniLM, so the data flow runs for real and quickly. Options that size the work (``--limit``,
  ``--epochs``, ...) are shrunk where the command has them. The folder mirrors a checkout: the
  project (with ``examples/``) beside ``../shared/data``.

Every command in the README must be classified below: a new one fails until someone decides how
it is checked.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from memwise.cli import app
from memwise.testing import FakeOpenAIServer

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SHARED_DATA = (ROOT / "../shared/data").resolve()

# How each command (by its command path) is checked.
RUN_EMBEDDED = {("chat",)}  # the embedded model answers in a few seconds with --max-tokens 8
RUN_ON_FAKE_SERVER = {
    ("doctor",),
    ("tour",),
    ("demo",),
    ("ingest",),
    ("search",),
    ("answer",),
    ("consolidate",),
    ("bench", "retrieval"),
    ("bench", "qa"),
    ("metamem", "prepare"),
    ("metamem", "train"),
    ("metamem", "show"),
    ("metamem", "diff"),
    ("metamem", "eval"),
    ("metamem", "report"),
    ("metamem", "answer"),
    ("reproduce", "metamem"),
    ("umem", "evolve"),
    ("umem", "export-verl"),
    ("keys", "create"),
}
# Commands that call a chat model: on the fake server each must reach it, which shows that the global
# server flags (--base-url, --model, --judge-*, --optimizer-*) are honoured rather than silently
# falling back to the embedded model.
CALLS_A_MODEL = {
    ("doctor",),
    ("tour",),
    ("demo",),
    ("answer",),
    # not consolidate: it asks the model only about pairs over a cosine threshold, and the fake
    # server's hashed embeddings make none (it builds its model exactly as `answer` does)
    ("bench", "qa"),
    ("metamem", "train"),
    ("metamem", "eval"),
    ("metamem", "answer"),
    ("umem", "evolve"),
}
# Parsed but not run: (command path, a fragment of the line or "" for every line of it, why).
NOT_RUN = (
    (("serve",), "", "a server runs until stopped (the REST server has its own tests over real uvicorn)"),
    (("umem", "train"), "", "GRPO on a 1B model takes hours; tests/cli/test_umem_train_cli.py runs a tiny one"),
    (
        ("reembed",),
        "",
        "needs a memory built by another embedder; tests/cli/test_reembed.py runs it end to end on the fake server",
    ),
    (
        ("reproduce", "metamem"),
        "longmemeval_s_cleaned.json",
        "LongMemEval-S is not shipped; tests/cli/test_reproduce_metamem.py runs all folds on the fake server",
    ),
    (
        ("reproduce", "umem"),
        "aime24_25.jsonl",
        "GPQA, HLE and HotpotQA are not shipped; tests/cli/test_reproduce_umem_cli.py runs every method on the fake "
        "server",
    ),
    (
        ("bench", "retrieval"),
        "",
        "ranks 762 questions under every ablation (about a minute on 2 cores) and has no size option; "
        "tests/cli/test_app.py runs it on a one-session cut of the same file",
    ),
    (
        ("umem", "evolve"),
        "--suite alfworld",
        "starting the ALFWorld text engine and playing a game takes ~20 s; tests/umem and tests/tasks cover ALFWorld",
    ),
)
# Work-sizing options, shrunk for the run wherever the command has them (value used here).
SMALL = {
    "--max-tokens": "8",
    "--limit": "3",
    "--epochs": "1",
    "--samples": "2",
    "--batch-size": "4",
    "--conversations": "1",
}
# metamem train after `prepare --conversations 1`: enough questions for 5 folds and several steps.
SMALL_BY_COMMAND = {
    # --conversations 1 leaves one conversation: no fold can keep it whole, so the shrunk run splits by question.
    ("metamem", "train"): {"--limit": "40", "--group-by": "question"},
    ("reproduce", "metamem"): {"--conversations": "5"},
    ("umem", "export-verl"): {"--limit": "5"},
    ("demo",): {"--questions": "2"},
}
FAKE_URL = re.compile(r"https?://(localhost|127\.0\.0\.1):\d+/v1")


@dataclass(frozen=True)
class ReadmeCommand:
    line: int
    argv: tuple[str, ...]  # after `memwise`

    def __str__(self) -> str:
        return f"README.md:{self.line}: memwise {shlex.join(self.argv)}"


def readme_commands() -> list[ReadmeCommand]:
    """The memwise command lines of every ```bash block, continuation lines joined, comments dropped."""
    commands: list[ReadmeCommand] = []
    in_bash = False
    pending, start = "", 0
    for number, raw in enumerate(README.read_text(encoding="utf-8").splitlines(), start=1):
        if raw.startswith("```"):
            in_bash = raw.strip() == "```bash"
            continue
        if not in_bash:
            continue
        if not pending:
            start = number
        pending += raw.rstrip().removesuffix("\\") + " "
        if raw.rstrip().endswith("\\"):
            continue
        words = shlex.split(pending, comments=True)
        pending = ""
        substituted = re.fullmatch(r"\w+=\$\((memwise .*)\)", " ".join(words))  # KEY=$(memwise keys create ...)
        if substituted:
            words = shlex.split(substituted.group(1))
        if words and words[0] == "memwise":
            commands.append(ReadmeCommand(start, tuple(words[1:])))
    return commands


def _parse(argv: list[str]) -> tuple[tuple[str, ...], Any]:
    """Run click's parser over ``argv`` the way `memwise` would, without invoking anything.

    Returns the command path and the innermost context; raises click's usage error for an unknown
    option, a missing required one, or a value of the wrong type.
    """
    command: Any = typer.main.get_command(app)
    ctx = command.make_context("memwise", list(argv))
    path: list[str] = []
    while hasattr(command, "commands"):
        # Typer vendors click; a group keeps the sub-command and its arguments for the next context.
        rest = [*(getattr(ctx, "protected_args", None) or getattr(ctx, "_protected_args", [])), *ctx.args]
        name, command, args = command.resolve_command(ctx, rest)
        path.append(name)
        ctx = command.make_context(name, args, parent=ctx)
    return tuple(path), ctx


COMMANDS = readme_commands()


def test_the_readme_shows_commands_from_every_part() -> None:
    paths = {_parse(list(c.argv))[0] for c in COMMANDS}
    assert {("ingest",), ("metamem", "train"), ("umem", "evolve"), ("tour",)} <= paths


@pytest.mark.parametrize("command", COMMANDS, ids=str)
def test_every_readme_command_parses_with_the_flags_it_shows(command: ReadmeCommand) -> None:
    path, _ = _parse(list(command.argv))
    assert path in RUN_EMBEDDED | RUN_ON_FAKE_SERVER | {p for p, _, _ in NOT_RUN}, f"{command}: classify {path}"


def test_a_flag_the_cli_does_not_have_fails_the_parse() -> None:
    with pytest.raises(Exception, match="No such option"):
        _parse(["bench", "retrieval", "--path", "x.json", "--recall-file", "r.json"])


def _options_of(argv: list[str]) -> set[str]:
    _, ctx = _parse(argv)
    return {opt for param in ctx.command.params for opt in (*param.opts, *param.secondary_opts)}


def _shrunk(path: tuple[str, ...], argv: list[str]) -> list[str]:
    """``argv`` with the work-sizing options the command has set to small values."""
    wanted = {**SMALL, **SMALL_BY_COMMAND.get(path, {})}
    has = _options_of(argv)
    out = list(argv)
    for flag, value in wanted.items():
        if flag not in has:
            continue
        if flag in out:
            out[out.index(flag) + 1] = value
        else:
            out += [flag, value]
    return out


def _localised(argv: tuple[str, ...], fake_url: str | None) -> list[str]:
    return [arg if fake_url is None else FAKE_URL.sub(fake_url, arg) for arg in argv]


def _on_fake_server(argv: list[str], url: str) -> list[str]:
    """Point every model role and the embedder at the fake server, unless the README line names its own."""
    flags = ["--base-url", url, "--model", "m", "--embed-backend", "openai", "--embed-base-url", url]
    flags += ["--embed-model", "e"]
    out = list(argv)
    for flag, value in zip(flags[::2], flags[1::2], strict=True):
        if flag not in out:
            out = [flag, value, *out]
    return out


def _not_run(path: tuple[str, ...], command: ReadmeCommand) -> str | None:
    line = shlex.join(command.argv)
    return next((why for p, fragment, why in NOT_RUN if p == path and fragment in line), None)


def _groups() -> dict[str, list[ReadmeCommand]]:
    """README commands grouped by their ``## `` section, in order (a section's commands build on each other).

    Commands on the embedded model form a group of their own per section: they share nothing with
    the rest, and keeping them apart keeps each test to seconds.
    """
    heading_at = [
        (number, line.removeprefix("## ").strip())
        for number, line in enumerate(README.read_text(encoding="utf-8").splitlines(), start=1)
        if line.startswith("## ")
    ]
    groups: dict[str, list[ReadmeCommand]] = {}
    for command in COMMANDS:
        title = [title for number, title in heading_at if number < command.line][-1]
        if _parse(list(command.argv))[0] in RUN_EMBEDDED:
            title += " (embedded model)"
        groups.setdefault(title, []).append(command)
    return groups


GROUPS = _groups()


@pytest.mark.parametrize("group", list(GROUPS))
def test_readme_commands_run_as_written(group: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A fresh checkout's layout: the project folder (with its examples/) beside ../shared/data, so the
    # README's relative paths and the commands' own defaults resolve exactly as they do for a user.
    project = tmp_path / "project"
    project.mkdir()
    (project / "examples").symlink_to(ROOT / "examples")
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(SHARED_DATA)
    monkeypatch.chdir(project)
    monkeypatch.setenv("MEMWISE_HOME", str(tmp_path / "home"))
    runner = CliRunner()
    with FakeOpenAIServer().in_thread() as srv:
        for command in GROUPS[group]:
            path, _ = _parse(list(command.argv))
            if _not_run(path, command) is not None:
                continue
            embedded = path in RUN_EMBEDDED
            argv = _shrunk(path, _localised(command.argv, None if embedded else srv.base_url))
            if not embedded:
                argv = _on_fake_server(argv, srv.base_url)
            before = srv.stats().completions
            result = runner.invoke(app, argv)
            assert result.exit_code == 0, f"{command}\n  ran: memwise {shlex.join(argv)}\n{result.output}"
            if path in CALLS_A_MODEL:
                assert srv.stats().completions > before, f"{command}: no call reached --base-url"


def test_every_command_left_unrun_says_why() -> None:
    unrun = [(c, _not_run(_parse(list(c.argv))[0], c)) for c in COMMANDS]
    assert all(why for _, why in unrun if why is not None)
    assert sum(why is None for _, why in unrun) >= len(COMMANDS) // 2  # most of the README does run
