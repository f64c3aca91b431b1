"""Shared fixtures: a fresh plugin manager per test, paths to the real corpora."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_CORPORA = REPO.parent / "shared" / "corpora"
DATA_DIR = Path(os.environ.get("TAGPIPE_DATA", Path.home() / ".cache" / "tagpipe-data"))


@pytest.fixture(autouse=True)
def fresh_plugins():
    """Each test starts with a freshly built plugin manager and registry."""
    from pipeline import plugins

    plugins.reset()
    yield
    plugins.reset()


def data_path(*parts: str) -> Path:
    """A file fetched by ../shared/corpora/get-pypi-data.sh; skips the test when absent."""
    path = DATA_DIR.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not found: run ../shared/corpora/get-pypi-data.sh (or set TAGPIPE_DATA)")
    return path


def shared_path(*parts: str) -> Path:
    """A file committed in ../shared/corpora; skips the test when the folder is absent."""
    path = SHARED_CORPORA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not found: ../shared/corpora is expected beside the checkout")
    return path
