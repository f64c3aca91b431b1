"""What ``pip install tagpipe`` delivers: one import name, ``tagpipe``, whatever the user's own files are called.

setup.cfg maps the repository's folders under that name (``pipeline/`` -> ``tagpipe``, ``plugins/`` ->
``tagpipe.plugins``, ``corpora/`` -> ``tagpipe.corpora``) with an explicit package list, so a new subpackage or
data file that the list forgets would vanish from the wheel while every test of the editable checkout passes.
Here the list is checked against the folders, and a wheel built from a copy of the tree is installed into a
fresh venv and used from a user's project whose ``pipeline.py``, ``plugins/``, ``corpora/`` and ``cli.py``
would shadow the old top-level names. A model folder saved by release 0.1.0 must still annotate identically.
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from tagpipe.cli import cli

REPO = Path(__file__).resolve().parent.parent
#: folder -> import name, as setup.cfg's package_dir says
ROOTS = {"pipeline": "tagpipe", "plugins": "tagpipe.plugins", "corpora": "tagpipe.corpora"}
#: the top-level names of the first release, which clashed with users' own modules
USER_MODULES = ("pipeline", "plugins", "corpora", "cli")
SENTENCE = "Angela Merkel met Emmanuel Macron in Paris on Tuesday ."
V0_1_0_MODEL = REPO / "tests" / "fixtures" / "model_v0_1_0"
V0_1_0_OUTPUT = REPO / "tests" / "fixtures" / "model_v0_1_0_news.jsonl"
SKIPPED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")


def setup_cfg() -> configparser.ConfigParser:
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    return config


def lines(value: str) -> list[str]:
    """The entries of a multi-line setup.cfg value."""
    return [line.strip() for line in value.splitlines() if line.strip()]


def source_files(root: Path) -> list[Path]:
    """Files under the three package folders of ``root``, without caches, as ``setup.py build`` sees them."""
    return sorted(path for folder in ROOTS for path in (root / folder).rglob("*")
                  if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc")


def import_path(root: Path, path: Path) -> str:
    """``pipeline/annotating/engine.py`` -> ``tagpipe/annotating/engine.py``: where a file lands in the wheel."""
    folder, *rest = path.relative_to(root).parts
    return "/".join([*ROOTS[folder].split("."), *rest])


def package_folders() -> dict[str, Path]:
    """Import name -> folder, for every folder under the roots that holds an ``__init__.py``."""
    found = {}
    for folder, name in ROOTS.items():
        for init in (REPO / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(REPO / folder).parts
            found[".".join([name, *parts])] = init.parent
    return found


# --- setup.cfg ---------------------------------------------------------------------------------------------


def test_package_dir_maps_the_three_folders_under_tagpipe():
    mapping = dict(line.split("=") for line in lines(setup_cfg()["options"]["package_dir"]))
    assert {name.strip(): folder.strip() for name, folder in mapping.items()} == {v: k for k, v in ROOTS.items()}


def test_packages_list_every_folder_with_an_init_py():
    listed = lines(setup_cfg()["options"]["packages"])
    assert len(listed) == len(set(listed)), "a package is listed twice"
    on_disk = set(package_folders())
    assert set(listed) - on_disk == set(), "setup.cfg lists packages that have no folder with an __init__.py"
    assert on_disk - set(listed) == set(), "add these to setup.cfg's `packages =`, or the wheel leaves them out"


def test_package_data_covers_every_data_file():
    patterns = {name: lines(value) for name, value in setup_cfg()["options.package_data"].items()}
    folders = package_folders()
    assert set(patterns) <= set(folders)
    covered = {path for name, globs in patterns.items() for glob in globs for path in folders[name].glob(glob)}
    data = {path for path in source_files(REPO) if path.suffix != ".py"}
    expected = {REPO / "plugins" / "default_model" / "model.safetensors", REPO / "corpora" / "samples" / "news.txt",
                REPO / "plugins" / "zh_model" / "model.safetensors", REPO / "corpora" / "samples" / "news-zh.txt",
                REPO / "pipeline" / "plugin_template" / "setup.cfg.tmpl",
                REPO / "pipeline" / "plugin_template" / "__module__" / "hooks.py.tmpl"}
    assert expected <= data
    assert sorted(str(p.relative_to(REPO)) for p in data - covered) == [], "add these to [options.package_data]"


# --- the wheel, in a fresh venv -----------------------------------------------------------------------------


def run(command: list[str], cwd: Path, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    out = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{command} failed:\n--- stdout\n{out.stdout[-2000:]}\n--- stderr\n{out.stderr[-3000:]}"
    return out


def clean_env(**extra: str) -> dict[str, str]:
    """The environment minus whatever would point Python at another tree or stop cwd being on sys.path."""
    drop = {"PYTHONPATH", "PYTHONHOME", "PYTHONSAFEPATH", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTHONUSERBASE"}
    return {**{k: v for k, v in os.environ.items() if k not in drop}, "OMP_NUM_THREADS": "1", "PIP_NO_INDEX": "1",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1", **extra}


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A copy of what the wheel is built from, so the build writes no ``build/`` or ``*.egg-info`` in the repo."""
    copy = tmp_path_factory.mktemp("source") / "tagpipe"
    copy.mkdir()
    for folder in ROOTS:
        shutil.copytree(REPO / folder, copy / folder, ignore=SKIPPED)
    for name in ("setup.cfg", "pyproject.toml", "README.md", "cli.py"):
        shutil.copy2(REPO / name, copy / name)
    return copy


@pytest.fixture(scope="module")
def wheel(source, tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-w", str(dist), "-q"],
        cwd=source, env=clean_env())
    (built,) = dist.glob("tagpipe-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A venv that sees torch, spaCy and transformers from the system, and the wheel's tagpipe before the
    editable one (which system site-packages also exposes)."""
    env_dir = tmp_path_factory.mktemp("venv") / "env"
    run([sys.executable, "-m", "venv", "--system-site-packages", str(env_dir)], cwd=env_dir.parent, env=clean_env())
    run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "--no-deps", "--force-reinstall", "-q",
         str(wheel)], cwd=env_dir.parent, env=clean_env())
    return env_dir


@pytest.fixture
def project(tmp_path) -> Path:
    """A user's project with its own ``pipeline.py``, ``plugins/``, ``corpora/`` and ``cli.py``; importing one
    leaves an ``imported-NAME`` file behind, so an import by tagpipe cannot go unnoticed."""
    folder = tmp_path / "my-project"
    folder.mkdir()
    for name, file in zip(USER_MODULES, ("pipeline.py", "plugins/__init__.py", "corpora/__init__.py", "cli.py"),
                          strict=True):
        (folder / file).parent.mkdir(exist_ok=True)
        (folder / file).write_text(f'"""The user\'s own {name}."""\nimport pathlib\n\n'
                                   f'pathlib.Path({str(folder)!r}, "imported-{name}").touch()\nOWNER = "user"\n')
    return folder


def imported(project: Path) -> list[str]:
    return sorted(path.name.removeprefix("imported-") for path in project.glob("imported-*"))


def assert_user_modules_importable(python: Path, project: Path, env: dict[str, str]) -> None:
    """The user's modules are what their names find (so they did shadow), and nothing had imported them."""
    assert imported(project) == [], "tagpipe imported the user's own modules"
    check = "import importlib, sys; assert {importlib.import_module(m).OWNER for m in sys.argv[1:]} == {'user'}"
    run([str(python), "-c", check, *USER_MODULES], cwd=project, env=env)
    assert imported(project) == sorted(USER_MODULES)


def test_the_wheel_holds_tagpipe_alone_with_its_data(wheel, source):
    names = zipfile.ZipFile(wheel).namelist()
    info = f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"
    assert {name.split("/")[0] for name in names} == {"tagpipe", info}, "only tagpipe/ (no pipeline/, cli.py ...)"
    assert sorted(n for n in names if not n.startswith(info)) == sorted(import_path(source, p)
                                                                        for p in source_files(source))
    for data in ("tagpipe/plugins/default_model/model.safetensors", "tagpipe/plugins/default_model/config.json",
                 "tagpipe/plugins/zh_model/model.safetensors", "tagpipe/plugins/zh_model/vocab.json",
                 "tagpipe/plugin_template/setup.cfg.tmpl", "tagpipe/plugin_template/__module__/hooks.py.tmpl",
                 "tagpipe/corpora/samples/news.txt", "tagpipe/corpora/samples/tiny.conll"):
        assert data in names
    zf = zipfile.ZipFile(wheel)
    assert zf.read(f"{info}/top_level.txt").decode().split() == ["tagpipe"]
    entry_points = configparser.ConfigParser()
    entry_points.read_string(zf.read(f"{info}/entry_points.txt").decode())
    targets = {group: dict(entry_points[group]) for group in ("console_scripts", "tagpipe", "spacy_factories")}
    assert targets["console_scripts"] == {"tagpipe": "tagpipe.cli:main"}
    assert {"tagpipe_ner", "tagpipe_tagger"} <= set(targets["spacy_factories"])
    assert all(target.startswith("tagpipe.") for group in targets.values() for target in group.values())


def test_the_venv_imports_tagpipe_from_the_wheel_and_nothing_else(venv, tmp_path):
    neutral = tmp_path / "neutral"
    neutral.mkdir()
    python = str(venv / "bin" / "python")
    out = run([python, "-c", "import tagpipe; from tagpipe import hookimpl, load; print(tagpipe.__file__)"],
              cwd=neutral, env=clean_env())
    installed = Path(out.stdout.strip()).resolve()
    assert installed.is_relative_to(venv.resolve()) and not installed.is_relative_to(REPO), installed
    for name in USER_MODULES:
        gone = subprocess.run([python, "-c", f"import {name}"], cwd=neutral, env=clean_env(), capture_output=True,
                              text=True, timeout=60)
        assert gone.returncode == 1 and f"No module named '{name}'" in gone.stderr, (name, gone.stderr[-500:])


SPACY_SCRIPT = """
import json, sys
import spacy

nlp = spacy.blank("en")
nlp.add_pipe("tagpipe_ner")  # found through the spacy_factories entry point: tagpipe was not imported
ents = [(e.text, e.label_) for e in nlp(sys.argv[1]).ents]
nlp.to_disk("pipeline")
reloaded = [(e.text, e.label_) for e in spacy.load("pipeline")(sys.argv[1]).ents]
from tagpipe import hookimpl, load
import tagpipe
print(json.dumps({"ents": ents, "reloaded": reloaded, "tagpipe": tagpipe.__file__}))
"""


def test_spacy_in_a_users_project_with_clashing_names(venv, project):
    python = venv / "bin" / "python"
    out = run([str(python), "-c", SPACY_SCRIPT, SENTENCE], cwd=project, env=clean_env())
    result = json.loads(out.stdout.splitlines()[-1])
    assert Path(result["tagpipe"]).resolve().is_relative_to(venv.resolve())
    assert ["Angela Merkel", "PER"] in result["ents"], result["ents"]
    assert result["reloaded"] == result["ents"]
    assert (project / "pipeline" / "config.cfg").is_file() and (project / "pipeline.py").is_file()
    assert_user_modules_importable(python, project, clean_env())


def test_console_script_in_a_users_project_with_clashing_names(venv, project):
    env = clean_env(PYTHONPATH=str(project))  # the user's names come first on sys.path, even for the script
    tagpipe = str(venv / "bin" / "tagpipe")
    assert "annotate" in run([tagpipe, "--help"], cwd=project, env=env).stdout
    (project / "in.txt").write_text(SENTENCE + "\n")
    run([tagpipe, "annotate", "in.txt", "--output", "out.jsonl", "-q"], cwd=project, env=env)
    entities = json.loads((project / "out.jsonl").read_text())["entities"]
    assert ("Angela Merkel", "PER") in [(e["text"], e["label"]) for e in entities], entities
    assert_user_modules_importable(venv / "bin" / "python", project, env)


# --- a model folder saved by the previous release -------------------------------------------------------------


def test_a_model_saved_by_release_0_1_0_annotates_byte_identically(tmp_path):
    out = tmp_path / "news.jsonl"
    result = CliRunner().invoke(cli, ["annotate", str(REPO / "corpora" / "samples" / "news.txt"),
                                      "--model", str(V0_1_0_MODEL), "--output", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == V0_1_0_OUTPUT.read_bytes()
