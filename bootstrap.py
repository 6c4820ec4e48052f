#!/usr/bin/env python3
"""Set up memwise in ./.venv with only python3, pip and a C compiler, then run the demo or the tests.

    python3 bootstrap.py demo    # create the environment, install everything, run the main job
    python3 bootstrap.py test    # the same environment plus test tools, then ruff, pyright and pytest

Why a script and not a bare `pip install`: two packages need care on CPU machines.
- torch: only torch==2.13.0 is taken from the local CPU wheel; any other request pulls CUDA wheels,
  so it is installed first and pinned.
- llama-cpp-python: a native (-march=native) build crashes on some CPUs, so it is built portable once,
  kept as a wheel in ~/.cache/memwise/wheels, and reused by later environments.
- ALFWorld's engine (jericho and fast-downward-textworld) exists only as source and takes about ten
  minutes to compile, so those wheels are built once into the same cache too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"
WHEELS = Path(os.environ.get("MEMWISE_WHEEL_CACHE", Path.home() / ".cache" / "memwise" / "wheels"))
TORCH = "torch==2.13.0"
LLAMA = "llama-cpp-python==0.3.36"
LLAMA_CMAKE_ARGS = "-DGGML_NATIVE=OFF -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF"
# Source-only dependencies of the alfworld extra: compiled once per machine, then installed from the cache.
SOURCE_ONLY = ("jericho==3.3.1", "fast-downward-textworld==20.6.4")
STAMP = VENV / ".memwise-installed"


def run(*cmd: str | Path, env: dict[str, str] | None = None) -> None:
    """Echo and run ``cmd`` in the repository; a failure ends the script with the command's status."""
    print("+", " ".join(map(str, cmd)), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, env=env, cwd=ROOT)


def pip(*args: str | Path, env: dict[str, str] | None = None) -> None:
    """Install into .venv with its own pip, never the interpreter that runs this script."""
    run(BIN / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args, env=env)


def llama_wheel() -> Path:
    """The portable llama-cpp-python wheel, built once per machine."""
    name = LLAMA.split("==")[1]
    found = sorted(WHEELS.glob(f"llama_cpp_python-{name}-*.whl"))
    if found:
        return found[-1]
    WHEELS.mkdir(parents=True, exist_ok=True)
    print(f"building {LLAMA} (portable CPU build, about 5-10 minutes, once per machine)", flush=True)
    env = {**os.environ, "CMAKE_ARGS": LLAMA_CMAKE_ARGS, "FORCE_CMAKE": "1"}
    run(BIN / "python", "-m", "pip", "wheel", "--no-cache-dir", "--no-deps", "--quiet", LLAMA, "-w", WHEELS, env=env)
    return sorted(WHEELS.glob(f"llama_cpp_python-{name}-*.whl"))[-1]


def source_wheels() -> None:
    """Build the wheels of SOURCE_ONLY packages that the cache lacks (pip finds them via --find-links)."""
    WHEELS.mkdir(parents=True, exist_ok=True)
    for spec in SOURCE_ONLY:
        name, version = spec.split("==")
        if sorted(WHEELS.glob(f"{name.replace('-', '_')}-{version}-*.whl")):
            continue
        print(f"building {spec} (compiled from source, once per machine)", flush=True)
        run(BIN / "python", "-m", "pip", "wheel", "--no-deps", "--quiet", spec, "-w", WHEELS)


def install(extras: str) -> None:
    """Install memwise with ``extras``; skipped when neither the extras nor pyproject.toml changed since."""
    signature = f"{extras}\n{(ROOT / 'pyproject.toml').read_text()}"
    if STAMP.exists() and STAMP.read_text() == signature:
        return
    if not (BIN / "python").exists():
        print(f"creating {VENV}", flush=True)
        venv.create(VENV, with_pip=True)
    pip("--upgrade", "pip")
    pip(TORCH)
    pip("--no-deps", llama_wheel())
    source_wheels()
    pip("--find-links", WHEELS, TORCH, "-e", f".[{extras}]")
    STAMP.write_text(signature)


def main(argv: list[str]) -> int:
    """Run ``demo`` or ``test``; anything else prints the usage and returns 2."""
    if len(argv) != 1 or argv[0] not in ("demo", "test"):
        print(__doc__)
        return 2
    if argv[0] == "demo":
        install("all")
        run(BIN / "memwise", "demo")
        return 0
    install("all,test")
    run(BIN / "ruff", "check", "src", "tests", "bench", "bootstrap.py")
    # Settings (src/, standard mode, this venv) in pyproject's [tool.pyright], named explicitly: pyright
    # would otherwise take the first pyrightconfig.json it finds in a parent folder.
    run(BIN / "pyright", "--project", ROOT / "pyproject.toml")
    run(BIN / "python", "-m", "pytest", "-q")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except subprocess.CalledProcessError as exc:
        sys.exit(exc.returncode or 1)
