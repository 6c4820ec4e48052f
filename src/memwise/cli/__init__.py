"""The `memwise` command line: one Typer app, one module per command group."""

from __future__ import annotations

from memwise.cli.app import app, main

__all__ = ["app", "main"]
