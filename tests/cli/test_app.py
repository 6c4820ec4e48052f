"""The command line as a newcomer meets it.

--version, --log-level, one flag per concept, tour registered, run directories that warn about a
changed model, and benchmarks that reuse their database.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from memwise import __version__
from memwise.cli import app
from memwise.cli.app import configure_logging
from memwise.testing import FakeOpenAIServer

runner = CliRunner()
LOCOMO = Path(__file__).resolve().parents[2] / "../shared/data/locomo/locomo10_dev.json"
CLI_DIR = Path(__file__).resolve().parents[2] / "src/memwise/cli"


def tiny_locomo(tmp_path: Path) -> Path:
    """The first LoCoMo dev conversation cut to its first session and the questions answered there."""
    conv = json.loads(LOCOMO.read_text())[0]
    # speaker names, session_1 and its date; session_10.. and every other session dropped
    keep = {k: v for k, v in conv["conversation"].items() if not re.match(r"session_(?!1(?:_|$))\d+", k)}
    qa = [q for q in conv["qa"] if q.get("evidence") and all(e.startswith("D1:") for e in q["evidence"])][:4]
    out = tmp_path / "tiny_locomo.json"
    out.write_text(json.dumps([{**conv, "conversation": keep, "qa": qa}]))
    return out


def test_version_prints_the_package_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"memwise {__version__}"


def test_log_level_configures_memwise_logging_once(tmp_path: Path) -> None:
    for _ in range(2):  # a second run changes the level without stacking a second handler
        result = runner.invoke(app, ["--log-level", "debug", "metamem", "show", "--run-dir", str(tmp_path)])
        assert result.exit_code != 0  # no run there; the point is the logging set-up
    logger = logging.getLogger("memwise")
    assert logger.level == logging.DEBUG
    assert sum(type(h).__name__ == "_MemwiseLogHandler" for h in logger.handlers) == 1
    bad = runner.invoke(app, ["--log-level", "loud", "doctor"])
    assert bad.exit_code == 2 and "--log-level" in bad.output
    runner.invoke(app, ["--log-level", "warning", "metamem", "show", "--run-dir", str(tmp_path)])
    assert logger.level == logging.WARNING  # back to the default for the tests that follow


def test_log_records_reach_the_current_stderr_at_the_chosen_level(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("debug")
    logging.getLogger("memwise.llm.example").debug("retrying after 429")
    configure_logging("warning")
    logging.getLogger("memwise.llm.example").info("not shown at warning")
    err = capsys.readouterr().err
    assert "DEBUG memwise.llm.example: retrying after 429" in err
    assert "not shown" not in err


def test_tour_is_a_registered_command() -> None:
    result = runner.invoke(app, ["tour", "--help"])
    assert result.exit_code == 0, result.output
    assert "--run-dir" in result.output


def test_commands_are_registered_in_app_py_not_by_import_side_effects() -> None:
    for module in CLI_DIR.glob("*.py"):
        if module.name not in ("app.py", "__init__.py"):
            assert "from memwise.cli.app import" not in module.read_text(), module.name


def test_ingest_takes_path_and_dataset_like_every_other_command(tmp_path: Path) -> None:
    data = tiny_locomo(tmp_path)
    with FakeOpenAIServer().in_thread() as srv:
        base = ["--embed-backend", "openai", "--embed-base-url", srv.base_url, "--embed-model", "e"]
        args = ["ingest", "--path", str(data), "--dataset", "locomo", "--db", str(tmp_path / "a.db")]
        new = runner.invoke(app, [*base, *args])
        assert new.exit_code == 0, new.output
        assert "units written" in new.output
        # The old spellings stay as hidden, deprecated aliases: the same file, the same result.
        old = runner.invoke(app, [*base, "ingest", str(data), "--format", "locomo", "--db", str(tmp_path / "b.db")])
        assert old.exit_code == 0, old.output
        assert new.output.splitlines()[-1] == old.output.splitlines()[-1]
    shown = runner.invoke(app, ["ingest", "--help"])
    assert "--path" in shown.output and "--dataset" in shown.output and "--format" not in shown.output


def test_bench_retrieval_json_out_and_db_reuse_skip_ingest_and_embedding(tmp_path: Path) -> None:
    data = tiny_locomo(tmp_path)
    db = tmp_path / "bench.db"
    with FakeOpenAIServer().in_thread() as srv:
        base = ["--embed-backend", "openai", "--embed-base-url", srv.base_url, "--embed-model", "e"]
        args = [*base, "bench", "retrieval", "--path", str(data), "--db", str(db)]
        first = runner.invoke(app, [*args, "--json", "--out", str(tmp_path / "recall.json")])
        assert first.exit_code == 0, first.output
        printed = json.loads(_json_line(first.stdout))
        assert printed == json.loads((tmp_path / "recall.json").read_text())
        assert "recall@10" in printed
        embedded = srv.stats().embeddings
        assert embedded > 0 and db.exists()
        again = runner.invoke(app, [*args, "--json"])
        assert again.exit_code == 0, again.output
        assert srv.stats().embeddings == embedded  # turns and questions both came from the kept database and cache
        assert json.loads(_json_line(again.stdout))["recall@10"] == printed["recall@10"]
        # The kept database holds model e's vectors: another model is refused instead of compared with them.
        other = [*base[:-1], "e2", "bench", "retrieval", "--path", str(data), "--db", str(db), "--json"]
        refused = runner.invoke(app, other)
        assert refused.exit_code != 0 and "not by the configured embedder" in str(refused.exception)


def _json_line(stdout: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith("{"))


def _manifest(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "manifest.json").read_text())


def test_reusing_a_run_dir_with_another_model_warns(tmp_path: Path) -> None:
    run_dir = tmp_path / "tour"
    with FakeOpenAIServer().in_thread() as srv:
        common = ["--base-url", srv.base_url, "--embed-backend", "openai", "--embed-base-url", srv.base_url]
        common += ["--embed-model", "e"]
        first = runner.invoke(app, [*common, "--model", "m1", "tour", "--run-dir", str(run_dir)])
        assert first.exit_code == 0, first.output
        assert "other models" not in first.output
        same = runner.invoke(app, [*common, "--model", "m1", "tour", "--run-dir", str(run_dir)])
        assert "other models" not in same.output
        changed = runner.invoke(app, [*common, "--model", "m2", "tour", "--run-dir", str(run_dir)])
        assert changed.exit_code == 0, changed.output
    assert "other models" in changed.output and "model=m1" in changed.output and "model=m2" in changed.output
    assert _manifest(run_dir)["latest"]["config"]["models"]["policy"]["model"] == "m2"


def test_an_unknown_dataset_format_names_the_flag_and_the_choices(tmp_path: Path) -> None:
    data = tiny_locomo(tmp_path)
    result = runner.invoke(app, ["ingest", "--path", str(data), "--dataset", "locomoo", "--db", str(tmp_path / "m.db")])
    assert result.exit_code != 0
    assert "--dataset must be one of auto, locomo, longmemeval, jsonl, got 'locomoo'" in str(result.exception)
    assert not (tmp_path / "m.db").exists()


def test_embed_precision_flag_shares_the_model_s_space_and_refuses_unknown_values(tmp_path: Path) -> None:
    import sqlite3

    data, db = tiny_locomo(tmp_path), tmp_path / "m.db"
    bad = runner.invoke(app, ["--embed-precision", "half", "ingest", "--path", str(data), "--db", str(db)])
    assert bad.exit_code != 0 and "precision must be one of" in str(bad.exception) + bad.output
    done = runner.invoke(app, ["--embed-precision", "bfloat16", "ingest", "--path", str(data), "--db", str(db)])
    assert done.exit_code == 0, done.output
    with sqlite3.connect(db) as conn:
        spaces = {row[0] for row in conn.execute("SELECT DISTINCT space FROM vectors")}
    assert spaces == {"all-MiniLM-L6-v2"}  # the model's space: a precision is not another model
    for precision in ("bfloat16", "float32", "auto"):  # so every precision searches it
        found = runner.invoke(
            app, ["--embed-precision", precision, "search", "support group", "--user-id", "conv-26", "--db", str(db)]
        )
        assert found.exit_code == 0 and "support group" in found.output.lower(), (precision, found.output)
