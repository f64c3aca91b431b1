"""docs/writing-plugins.md works: its shell and Python blocks run in order in a temporary folder,
and the listings it quotes (```python file=PATH) are what ``tagpipe plugins new`` writes.

The folder is not the repository and already holds a ``pipeline/`` saved by spaCy (the name of
tagpipe's core folder, and of the tutorial's own ``nlp.to_disk("pipeline")``): the tutorial must work
wherever a user runs it, with only the installed ``tagpipe`` on the path.

``pip`` is redirected to a temporary ``--target`` folder on ``PYTHONPATH`` (no network, no build
isolation, no dependencies), so the tutorial's plugin never reaches the real environment.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tagpipe.cli import cli

REPO = Path(__file__).resolve().parent.parent
TUTORIAL = REPO / "docs" / "writing-plugins.md"
BLOCK = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```\s*$", re.S | re.M)


def blocks() -> list[tuple[str, str, str]]:
    """``(language, info, body)`` of each fenced block, in document order."""
    return [(m.group(1), m.group(2).strip(), m.group(3)) for m in BLOCK.finditer(TUTORIAL.read_text())]


def test_the_tutorial_has_commands_and_listings():
    kinds = [(lang, info.startswith("file=")) for lang, info, _ in blocks()]
    assert ("bash", False) in kinds and ("python", False) in kinds and ("python", True) in kinds


def save_a_spacy_pipeline(folder: Path) -> None:
    """What a user's earlier ``nlp.to_disk("pipeline")`` left in the working directory."""
    import spacy

    nlp = spacy.blank("en")
    nlp.add_pipe("tagpipe_ner")
    nlp.to_disk(folder)
    assert (folder / "config.cfg").is_file()


def test_every_tutorial_block_runs(tmp_path):
    if not any(Path(p, "tagpipe").exists() for p in os.environ.get("PATH", "").split(os.pathsep)):
        pytest.skip("the `tagpipe` console script is not installed (pip install -e .)")
    save_a_spacy_pipeline(tmp_path / "pipeline")
    site = tmp_path / "site"
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    pip = (f'pip() {{ command python -m pip "$@" --quiet --no-deps --no-build-isolation --no-index '
           f'--target "{site}"; }}\n')
    ran = 0
    for lang, info, body in blocks():
        if info.startswith("file="):
            path = tmp_path / info.removeprefix("file=")
            assert body in path.read_text(), f"the tutorial's listing of {path.name} differs from the skeleton"
            continue
        if lang == "bash":
            command = ["bash", "-euo", "pipefail", "-c", pip + body]
        elif lang == "python":
            command = [sys.executable, "-c", body]
        else:
            continue
        out = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, f"block failed:\n{body}\n--- stdout\n{out.stdout[-2000:]}\n--- stderr\n" \
                                    f"{out.stderr[-3000:]}"
        ran += 1
    assert ran >= 6
    assert "greedy.argmax.v1" in (tmp_path / "model" / "config.json").read_text()
    assert (tmp_path / "pipeline" / "tagpipe_ner" / "window_vocab.json").is_file()
    assert "greedy.window.v1" in (tmp_path / "pipeline" / "tagpipe_ner" / "config.json").read_text()  # replaced


def test_plugins_new_refuses_a_bad_name_or_a_non_empty_folder(tmp_path):
    runner = CliRunner()
    bad = runner.invoke(cli, ["plugins", "new", "9lives"])
    assert bad.exit_code == 1 and "plugin name '9lives'" in bad.output
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    busy = runner.invoke(cli, ["plugins", "new", "greedy", "--directory", str(tmp_path / "x")])
    assert busy.exit_code == 1 and "is not empty" in busy.output
    made = runner.invoke(cli, ["plugins", "new", "tagpipe-my-tags", "--directory", str(tmp_path / "y")])
    assert made.exit_code == 0, made.output
    setup = (tmp_path / "y" / "setup.cfg").read_text()
    assert "name = tagpipe-my-tags" in setup and "my-tags = tagpipe_my_tags.hooks" in setup
    assert (tmp_path / "y" / "tagpipe_my_tags" / "hooks.py").is_file()
