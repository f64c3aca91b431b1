"""The code blocks of README.md and docs/*.md run, or say why not (issue 18).

Every fenced block carries a language (``text`` for diagrams, ``console`` for transcripts), and every
``bash``/``sh``/``shell``/``console``/``python``/``py``/``ini``/``toml`` block is preceded by a marker line:

- ``<!-- docs-test: run -->``: run by :func:`test_doc_blocks_run`, block after block in document order, in
  one temporary folder per page. ``run prelude=NAME`` puts :data:`PRELUDES` ``[NAME]`` before a Python block
  (a page's fragment that continues an ``nlp`` the page made earlier); ``run needs=MODULE`` skips the block
  (and says so) where MODULE is not installed.
- ``<!-- docs-test: run-in TEST -->``: a test of this module runs the block itself (the ``spacy train`` recipe).
- ``<!-- docs-test: illustrative: REASON -->``: not run, for the reason given (a synopsis with ``[...]``,
  4 GPUs, the full corpora). ``<!-- docs-test: illustrative-page: REASON -->`` anywhere marks a whole page.

:func:`test_every_block_is_run_or_marked` fails, naming file:line, on a block that is neither, so a new block
cannot be forgotten; :func:`test_documented_tagpipe_options_exist` checks every ``--option`` of every
``tagpipe``/``cli.py`` command in any shell block (run or not) against the command's own options.

The folder a page runs in holds tiny stand-ins for the paths the docs use (:func:`assets`):
``conll2003/{train,valid,test}.txt`` and ``train.txt`` are ``corpora/samples/tiny.conll``; ``webnlg/`` the
tests' three-sentence WebNLG corpus; ``input.txt``, ``news.txt``, ``corpus/`` a few sentences; ``corpus.conllu``
three UD sentences; ``benchmarks/configs`` the repository's; ``glove.6B.100d.txt``, ``glove.6B.50d.txt.gz``
four vectors, ``en_core_web_md`` a spaCy pipeline holding four (300-d); ``models/x``
(also ``models/conll``, ``models/products``) a tiny BiLSTM-CRF; ``my_spacy_pipeline`` a blank spaCy pipeline
with a sentencizer.
Substitutions, applied to run blocks only:

- every pretrained-model path of the docs (``MINILM_DIR``, ``MLM_DIR``, ``~/.cache/tagpipe-data/minilm``,
  ``/models/bert-base-*``, ``models/all-MiniLM-L6-v2``) becomes a tiny random BERT (:mod:`tests.tiny_models`,
  256 positions);
- an optional option in brackets, ``[--json]``, is given (the brackets dropped), so it is exercised too;
- shell blocks run under ``bash -euo pipefail`` with ``tagpipe`` a function that appends
  ``--epochs 1 --device cpu --threads 1 -q`` to ``train`` (and ``--seeds 1`` to ``compare``): the commands are
  the docs', the trainings one epoch long;
- :data:`SETUP` trains the models a page uses without training them itself (one epoch, tiny data).

``docs/writing-plugins.md`` is run by ``tests/test_scaffold.py``.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy
import pytest

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
RUN_ELSEWHERE = {"docs/writing-plugins.md": "tests/test_scaffold.py runs it block by block"}
#: pages whose blocks are not marked yet, with the reason (empty when every page is done)
PENDING: dict[str, str] = {}
CODE = {"bash", "sh", "shell", "console", "python", "py", "ini", "toml"}
SHELL = {"bash", "sh", "shell", "console"}
FENCE = re.compile(r"^( *)```(\S*)([^\n]*)\n(.*?)^\1```[ \t]*$", re.S | re.M)
MARKER = re.compile(r"^<!-- docs-test: (.*?) -->\s*$")
PAGE_MARKER = re.compile(r"^<!-- docs-test: illustrative-page: (\S.*?) -->\s*$", re.M)
TINY_BERT_PATHS = ("~/.cache/tagpipe-data/minilm", "/models/bert-base-uncased", "/models/bert-base-chinese",
                   "models/all-MiniLM-L6-v2", "MINILM_DIR", "MLM_DIR")
PRELUDES = {
    "import-spacy": "import spacy\n",
    "nlp-with-ner": 'import spacy\nnlp = spacy.blank("en")\nnlp.add_pipe("ner")\n',
}
TAGPIPE_FUNCTION = """set -euo pipefail
tagpipe() {
  case "$1" in
    train) command tagpipe "$@" --epochs 1 --device cpu --threads 1 -q ;;
    compare) command tagpipe "$@" --epochs 1 --seeds 1 --device cpu --threads 1 -q ;;
    *) command tagpipe "$@" ;;
  esac
}
"""
#: what a page uses without making it: models trained for one epoch on the tiny stand-ins
SETUP = {
    "docs/seq2seq.md": "tagpipe train --task seq2seq --format webnlg-triples2text --train webnlg/train.json "
                       "--dev webnlg/val.json --pretrained MINILM_DIR -o models/d2t",
    "docs/triples.md": "tagpipe train --task triples --format webnlg --train webnlg/train.json --dev webnlg/val.json "
                       "--relations webnlg/rel2id.json --pretrained MINILM_DIR -o models/webnlg-pointer",
    "docs/spacy.md": "tagpipe train --task tag --tag-column 1 --train train.txt --dev train.txt -o models/upos",
}


@dataclass
class Block:
    page: str  # relative to the repository
    line: int  # of the opening fence
    lang: str
    info: str
    body: str
    marker: str | None

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def blocks(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    found = []
    for m in FENCE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        marker = MARKER.match(before)
        found.append(Block(str(page.relative_to(REPO)), line, m.group(2), m.group(3).strip(), m.group(4),
                           marker.group(1).strip() if marker else None))
    return found


def problems_of(block: Block, page_reason: str | None) -> str | None:
    if not block.lang:
        return "a fence without a language (text, console, bash, python, ...)"
    if block.marker is None:
        if block.lang in CODE and not page_reason:
            return f"a {block.lang} block neither run nor marked (<!-- docs-test: run|illustrative: REASON -->)"
        return None
    word, _, rest = block.marker.partition(" ")
    if word == "illustrative:":
        return None if rest.strip() else "illustrative without a reason"
    if word == "run":
        for option in rest.split():
            key, _, value = option.partition("=")
            if key not in ("prelude", "needs") or (key == "prelude" and value not in PRELUDES):
                return f"unknown run option {option!r}"
        return None
    if word == "run-in":
        return None if rest.strip() in globals() else f"run-in names no test of tests/test_docs.py: {rest!r}"
    return f"unknown marker {block.marker!r}"


def test_every_block_is_run_or_marked():
    problems = []
    for page in PAGES:
        name = str(page.relative_to(REPO))
        if name in RUN_ELSEWHERE or name in PENDING:
            continue
        page_reason = PAGE_MARKER.search(page.read_text(encoding="utf-8"))
        for block in blocks(page):
            problem = problems_of(block, page_reason and page_reason.group(1))
            if problem:
                problems.append(f"{block.where}: {problem}")
    assert not problems, "\n".join(problems)


def test_the_marker_check_catches_an_unmarked_block():
    text_blocks = [Block("x.md", 3, "bash", "", "tagpipe info\n", None),
                   Block("x.md", 8, "python", "", "1\n", "illustrative:"),
                   Block("x.md", 12, "", "", "bare\n", None)]
    assert [problems_of(b, None) for b in text_blocks] == [
        "a bash block neither run nor marked (<!-- docs-test: run|illustrative: REASON -->)",
        "illustrative without a reason", "a fence without a language (text, console, bash, python, ...)"]
    assert problems_of(text_blocks[0], "the full corpora") is None


# -- options ------------------------------------------------------------------------------------------------------
def commands_in(body: str) -> list[list[str]]:
    """The ``tagpipe``/``cli.py`` command lines of a shell block, each as words after the program name."""
    joined = re.sub(r"\\\n\s*", " ", body)
    found = []
    for line in joined.splitlines():
        line = line.split("  #", 1)[0].removeprefix("$ ").split(" | ", 1)[0].strip()
        if line.startswith("#"):
            continue
        words = line.replace("[", " ").replace("]", " ").replace("|", " ").split()
        for i, word in enumerate(words):
            if word in ("tagpipe", "cli.py") and i + 1 < len(words) and not words[i + 1].startswith("-"):
                found.append(words[i + 1:])
                break
    return found


def options_of(words: list[str]) -> tuple[str, set[str], set[str]]:
    """``(command path, long options its --help lists, long options the words give)``; the help, so that
    options a plugin adds at start-up count."""
    from click.testing import CliRunner

    from tagpipe.cli import cli

    path = []
    for word in words:
        if word.startswith("-") or not re.fullmatch(r"[a-z][a-z-]*", word):
            break
        path.append(word)
    helped = CliRunner().invoke(cli, [*path, "--help"])
    while helped.exit_code != 0 and path:  # `plugins new NAME`: NAME is an argument
        path.pop()
        helped = CliRunner().invoke(cli, [*path, "--help"])
    known = set(re.findall(r"(?<![\w-])--[a-z][\w-]*", helped.output)) if path else set()
    given = {word.split("=", 1)[0] for word in words[len(path):] if word.startswith("--") and len(word) > 2}
    return " ".join(path), known, given


def test_documented_tagpipe_options_exist():
    wrong = []
    for page in PAGES:
        for block in blocks(page):
            if block.lang not in SHELL:
                continue
            for words in commands_in(block.body):
                path, known, given = options_of(words)
                if not known:
                    wrong.append(f"{block.where}: no command `tagpipe {path}`")
                for option in sorted(given - known):
                    wrong.append(f"{block.where}: `tagpipe {path}` has no option {option}")
    assert not wrong, "\n".join(wrong)


def test_the_option_check_sees_a_made_up_option():
    (words,) = commands_in("tagpipe train --encoder bert \\\n    --warmup 0.1 --train x  # a comment --nope\n")
    path, known, given = options_of(words)
    assert path == "train" and given - known == {"--warmup"}


# -- running --------------------------------------------------------------------------------------------------------
UD = REPO.parent / "shared" / "corpora" / "ud" / "en_pud-ud-test.conllu"
TINY_CONLLU = """# text = The cat sat .
1\tThe\tthe\tDET\tDT\t_\t2\tdet\t_\t_
2\tcat\tcat\tNOUN\tNN\t_\t3\tnsubj\t_\t_
3\tsat\tsit\tVERB\tVBD\t_\t0\troot\t_\t_
4\t.\t.\tPUNCT\t.\t_\t3\tpunct\t_\t_

"""


@pytest.fixture(scope="session")
def assets(tmp_path_factory, tiny_ner_model) -> Path:
    """The tiny stand-ins every page's folder starts from (see the module docstring)."""
    import spacy

    from tests.conftest import TINY_CONLL, TINY_WEBNLG
    from tests.tiny_models import build_tiny_bert

    folder = tmp_path_factory.mktemp("doc-assets")
    for name in ("conll2003/train.txt", "conll2003/valid.txt", "conll2003/test.txt", "train.txt"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(TINY_CONLL, folder / name)
    (folder / "webnlg").mkdir()
    for name in ("train.json", "val.json", "test.json"):
        (folder / "webnlg" / name).write_text(json.dumps(TINY_WEBNLG))
    relations = sorted({t[1] for record in TINY_WEBNLG for t in record["triple_list"]})
    (folder / "webnlg" / "rel2id.json").write_text(json.dumps({r: i for i, r in enumerate(relations)}))
    text = "Angela Merkel visited Paris.\nThe cat sat on the mat.\n"
    for name in ("input.txt", "news.txt", "corpus/a.txt", "corpus/b.txt"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    if UD.is_file():
        sentences = UD.read_text(encoding="utf-8").split("\n\n")[:3]
        (folder / "corpus.conllu").write_text("\n\n".join(sentences) + "\n\n", encoding="utf-8")
    else:
        (folder / "corpus.conllu").write_text(TINY_CONLLU, encoding="utf-8")
    (folder / "glove.6B.100d.txt").write_text("".join(f"{w} {' '.join(['0.5'] * 100)}\n"
                                                      for w in ("the", "of", "cat", "sat")))
    with gzip.open(folder / "glove.6B.50d.txt.gz", "wt", encoding="utf-8") as f:
        f.write("".join(f"{w} {' '.join(['0.5'] * 50)}\n" for w in ("the", "of", "paris", "merkel")))
    vectors = spacy.blank("en")  # a spaCy pipeline with a vectors table, as en_core_web_md is
    for word in ("The", "the", "Paris", "Merkel"):
        vectors.vocab.set_vector(word, numpy.full(300, 0.5, dtype=numpy.float32))
    vectors.to_disk(folder / "en_core_web_md")
    shutil.copytree(REPO / "benchmarks" / "configs", folder / "benchmarks" / "configs")
    for name in ("x", "conll", "products"):
        shutil.copytree(tiny_ner_model, folder / "models" / name)
    build_tiny_bert(folder / "tiny-bert", max_position_embeddings=256)  # seq2seq packs 128 + 64 + 1
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.to_disk(folder / "my_spacy_pipeline")
    return folder


def substitute(body: str, assets: Path) -> str:
    for path in TINY_BERT_PATHS:
        body = body.replace(path, str(assets / "tiny-bert"))
    return re.sub(r"\[(--[^\[\]]*)\]", r"\1", body)


def run_in(folder: Path, lang: str, body: str, what: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    if lang in SHELL:
        command = ["bash", "-c", TAGPIPE_FUNCTION + body]
    else:
        command = [sys.executable, "-c", body]
    out = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, (f"{what} failed:\n{body}\n--- stdout\n{out.stdout[-2000:]}\n--- stderr\n"
                                 f"{out.stderr[-3000:]}")
    return out


def pages_that_run() -> list[str]:
    return [str(page.relative_to(REPO)) for page in PAGES
            if any(b.marker and b.marker.split()[0] == "run" for b in blocks(page))]


@pytest.mark.parametrize("page", pages_that_run())
def test_doc_blocks_run(page, assets, tmp_path):
    folder = tmp_path / "work"
    shutil.copytree(assets, folder)
    if page in SETUP:
        run_in(folder, "bash", substitute(SETUP[page], assets), f"the setup of {page}")
    ran, skipped = 0, []
    for block in blocks(REPO / page):
        if not block.marker or block.marker.split()[0] != "run":
            continue
        options = dict(option.partition("=")[::2] for option in block.marker.split()[1:])
        needs = options.get("needs")
        if needs and importlib.util.find_spec(needs) is None:
            skipped.append(f"{block.where} (needs {needs})")
            continue
        body = PRELUDES.get(options.get("prelude", ""), "") + substitute(block.body, assets)
        run_in(folder, block.lang, body, block.where)
        ran += 1
    if skipped and not ran:
        pytest.skip(f"not installed: {', '.join(skipped)}")
    assert ran


# -- spaCy: train, evaluate, package (docs/spacy.md) ------------------------------------------------------------------
def test_spacy_train_evaluate_package(tmp_path):
    """docs/spacy.md's config trains with ``spacy train``, scores with ``spacy evaluate``, packages with
    ``spacy package``: the ``ini`` block and the commands the page gives, on tiny.conll."""
    from tests.conftest import TINY_CONLL

    page = REPO / "docs" / "spacy.md"
    mine = [b for b in blocks(page) if b.marker == "run-in test_spacy_train_evaluate_package"]
    (config,) = [b for b in mine if b.lang == "ini"]
    (package,) = [b for b in mine if b.lang == "bash"]
    commands = re.findall(r"`(python -m spacy (?:init fill-config|train) [^`]+)`", page.read_text(encoding="utf-8"))
    assert len(commands) == 2, commands
    (tmp_path / "base.cfg").write_text(config.body)
    shutil.copyfile(TINY_CONLL, tmp_path / "tiny.conll")
    convert = [sys.executable, "-m", "spacy", "convert", "tiny.conll", ".", "--converter", "ner", "-n", "4"]
    subprocess.run(convert, cwd=tmp_path, check=True, capture_output=True)
    for name in ("train.spacy", "dev.spacy"):
        shutil.copyfile(tmp_path / "tiny.spacy", tmp_path / name)
    fill, train = commands
    run_in(tmp_path, "bash", fill, "spacy init fill-config")
    trained = run_in(tmp_path, "bash", train + " --output trained --training.max_steps 30 --training.eval_frequency 10"
                     " --training.patience 0 --nlp.batch_size 16", "spacy train")
    assert "tagpipe_ner" in trained.stdout + trained.stderr
    best = tmp_path / "trained" / "model-best"
    assert (best / "tagpipe_ner" / "config.json").is_file()
    run_in(tmp_path, "bash", f"python -m spacy evaluate {best} dev.spacy --output metrics.json", "spacy evaluate")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 0.0 <= metrics["ents_f"] <= 1.0 and "ents_per_type" in metrics
    shutil.copytree(best, tmp_path / "my_pipeline")
    run_in(tmp_path, "bash", package.body, "spacy package")
    made = tmp_path / "packages" / "en_my_ner-0.1.0"
    assert made.is_dir(), sorted(p.name for p in (tmp_path / "packages").iterdir())
    meta = json.loads((made / "meta.json").read_text())
    assert any(r.startswith("tagpipe") for r in meta["requirements"]), meta["requirements"]
    assert "python -m spacy package my_pipeline packages" in package.body
