"""Shared fixtures. The tests run against the installed package (scripts/setup-ml.sh
installs it, non-editable): a copy older than ml-worker/src stops the run at once."""

from __future__ import annotations

import filecmp
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import unhidra_ml
from wire import WorkerProcess

SOURCE = Path(__file__).resolve().parent.parent / "src" / "unhidra_ml"


def _stale_files() -> list[str]:
    installed = Path(unhidra_ml.__file__).resolve().parent
    if installed == SOURCE:
        return []
    sources = sorted(p.name for p in SOURCE.iterdir() if p.is_file() and not p.name.endswith(".pyc"))
    installed_names = sorted(p.name for p in installed.iterdir() if p.is_file() and not p.name.endswith(".pyc"))
    if sources != installed_names:
        return sorted(set(sources) ^ set(installed_names))
    _, mismatch, errors = filecmp.cmpfiles(SOURCE, installed, sources, shallow=False)
    return mismatch + errors


def pytest_configure(config: pytest.Config) -> None:
    stale = _stale_files()
    if stale:
        pytest.exit(
            f"the installed unhidra_ml differs from ml-worker/src ({', '.join(stale)}): "
            "run `bash scripts/setup-ml.sh` first",
            returncode=2,
        )


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A short 0700 directory (Unix socket paths are limited to about 100 bytes)."""
    with tempfile.TemporaryDirectory(prefix="uml-") as name:
        path = Path(name)
        path.chmod(0o700)
        yield path


@pytest.fixture
def worker(socket_dir: Path) -> Iterator[WorkerProcess]:
    """A worker process connected to a socket the test bound, as the server would."""
    proc = WorkerProcess.start(socket_dir)
    try:
        yield proc
    finally:
        proc.kill()
