"""Issue 17, models and devices: a damaged or hostile model folder, a bad ``--device``, an unexpected exception
and small bad inputs each end in one line on stderr and exit 1, never a traceback, before any output is written.

Every model case starts from a valid tiny model (tests/fixtures/model_v0_1_0) copied to a temporary folder and
damaged there; ``annotate`` and ``evaluate`` run through the real command line (click in this process for the
tables, plus a real ``python cli.py`` process for a few), and ``annotate``'s existing output stays byte-identical.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from tagpipe.cli import cli

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "model_v0_1_0"
TINY = REPO / "corpora" / "samples" / "tiny.conll"
OLD_OUTPUT = b'{"id": 1, "text": "an earlier run", "tokens": [], "entities": []}\n'


def invoke(*args: str | Path):
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_one_line_error(result, *fragments: str) -> str:
    """Exit 1, exactly one line of output, no traceback, every fragment in it; returns the line."""
    text = result.output.strip()
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # nothing escaped the CLI
    assert "\n" not in text and "Traceback" not in text, text
    for fragment in fragments:
        assert fragment in text, text
    return text


# -- damaging a copy of a valid model ---------------------------------------------------------------------
def edit_config(change: Callable[[dict], object]) -> Callable[[Path], None]:
    def setup(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        change(config)
        (folder / "config.json").write_text(json.dumps(config))

    return setup


def encoder_config(**values) -> Callable[[Path], None]:
    return edit_config(lambda c: c["encoder"]["config"].update(values))


def write(name: str, data: bytes | str) -> Callable[[Path], None]:
    def setup(folder: Path) -> None:
        if isinstance(data, str):
            (folder / name).write_text(data)
        else:
            (folder / name).write_bytes(data)

    return setup


def cut(name: str, keep: Callable[[int], int]) -> Callable[[Path], None]:
    def setup(folder: Path) -> None:
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[: keep(len(data))])

    return setup


def remove(name: str) -> Callable[[Path], None]:
    return lambda folder: (folder / name).unlink()


def more_words(folder: Path) -> None:
    vocab = json.loads((folder / "vocab.json").read_text())
    vocab["words"] += ["extra1", "extra2"]
    vocab["counts"] += [1, 1]
    (folder / "vocab.json").write_text(json.dumps(vocab))


def fewer_counts(folder: Path) -> None:
    vocab = json.loads((folder / "vocab.json").read_text())
    vocab["counts"] = vocab["counts"][:-1]
    (folder / "vocab.json").write_text(json.dumps(vocab))


def random_bytes(n: int) -> bytes:
    return bytes((i * 7919 + 13) % 256 for i in range(n))  # deterministic "random" content


#: (case, setup on a copy of the valid model, the file the message names, a fragment of the message)
MODEL_CASES = [
    ("weights empty", write("model.safetensors", b""), "model.safetensors", "(empty)"),
    ("weights truncated in the header", cut("model.safetensors", lambda n: 100), "model.safetensors", "truncated"),
    ("weights truncated in the data", cut("model.safetensors", lambda n: n - 100), "model.safetensors",
     "truncated or damaged weights file"),
    ("weights random bytes", write("model.safetensors", random_bytes(4096)), "model.safetensors",
     "not a safetensors weights file"),
    ("weights missing", remove("model.safetensors"), "model_v0_1_0", "missing model.safetensors"),
    ("vocab missing", remove("vocab.json"), "vocab.json", "missing"),
    ("vocab not JSON", write("vocab.json", "{not json"), "vocab.json", "not valid JSON"),
    ("vocab truncated", cut("vocab.json", lambda n: n // 2), "vocab.json", "not valid JSON"),
    ("vocab random bytes", write("vocab.json", random_bytes(512)), "vocab.json", "not valid JSON"),
    ("vocab of wrong types", write("vocab.json", '{"words": 3, "counts": [], "chars": []}'), "vocab.json",
     "'words' must be a list of strings"),
    ("vocab counts do not match", fewer_counts, "vocab.json", "words but"),
    ("vocab larger than the weights", more_words, "model.safetensors", "tensor 'encoder.word_embed.weight'"),
    ("config not JSON", write("config.json", "{"), "config.json", "not valid JSON"),
    ("config a list", write("config.json", "[]"), "config.json", "expected a JSON object"),
    ("config random bytes", write("config.json", random_bytes(256)), "config.json", "not valid JSON"),
    ("format version unknown", edit_config(lambda c: c.update(format_version=99)), "model_v0_1_0",
     "format version 99 is not supported"),
    ("format version a string", edit_config(lambda c: c.update(format_version="1")), "config.json",
     "'format_version' must be an integer"),
    ("task not a string", edit_config(lambda c: c.update(task=["ner"])), "config.json", "'task' must be a string"),
    ("labels a string", edit_config(lambda c: c.update(labels="x")), "config.json",
     "'labels' must be a list of strings, not 'x'"),
    ("labels repeated", edit_config(lambda c: c.update(labels=["O", "O"])), "config.json", "distinct tags"),
    ("labels fewer than the weights'", edit_config(lambda c: c.update(labels=c["labels"][:5])), "model.safetensors",
     "tensor 'decoder.crf.transitions' is [17, 17] but config.json"),
    ("labels outside the scheme", edit_config(lambda c: c.update(labels=["O", "X-FOO"])), "config.json",
     "do not fit scheme 'bioes'"),
    ("scheme unknown", edit_config(lambda c: c.update(scheme="xyz")), "config.json",
     "'scheme' must be one of iob1, iob2, bioes, bmes or null, not 'xyz'"),
    ("encoder missing", edit_config(lambda c: c.pop("encoder")), "config.json", "'encoder' is missing"),
    ("encoder config not an object", edit_config(lambda c: c["encoder"].update(config=[1])), "config.json",
     "'config' must be an object"),
    ("encoder name unknown", edit_config(lambda c: c["encoder"].update(name="nope.v1")), "config.json",
     "no encoder named 'nope.v1'"),
    ("decoder name unknown", edit_config(lambda c: c["decoder"].update(name="nope.v1")), "config.json",
     "no decoder named 'nope.v1'"),
    ("decoder option unknown", edit_config(lambda c: c["decoder"].update(config={"rank": 3})), "config.json",
     "unknown crf decoder config key(s): 'rank'"),
    ("encoder key misspelt", encoder_config(hiden=16), "config.json", "did you mean 'hidden'"),
    ("hidden a string", encoder_config(hidden="big"), "config.json", "'hidden' must be an integer in [1, 16384]"),
    ("hidden negative", encoder_config(hidden=-5), "config.json", "not -5"),
    ("hidden huge", encoder_config(hidden=10**9), "config.json", "not 1000000000"),
    ("dropout out of range", encoder_config(dropout=1.5), "config.json", "'dropout' must be a number in [0, 0.99]"),
    ("char encoder unknown", encoder_config(char_encoder="gru"), "config.json", "one of cnn, lstm"),
    ("hidden other than the weights'", encoder_config(hidden=17), "model.safetensors", "tensor 'encoder."),
    # each size in range, together ~550 GB: refused from the shapes alone (torch's meta device), nothing allocated
    ("sizes in range but huge together", encoder_config(hidden=16_384, layers=64), "model.safetensors",
     "tensor 'encoder.lstm"),
]


@pytest.fixture
def damaged(tmp_path):
    """A function: copy the valid model into tmp_path, apply ``setup``, return the folder."""

    def make(setup: Callable[[Path], None]) -> Path:
        folder = tmp_path / "model_v0_1_0"
        shutil.copytree(FIXTURE, folder)
        setup(folder)
        return folder

    return make


@pytest.fixture
def inputs(tmp_path):
    text = tmp_path / "x.txt"
    text.write_text("Angela Merkel visited Paris .\n")
    out = tmp_path / "out.jsonl"
    out.write_bytes(OLD_OUTPUT)
    return text, out


def test_the_undamaged_copy_annotates_and_evaluates(damaged, inputs):
    model = damaged(lambda folder: None)
    text, out = inputs
    result = invoke("annotate", text, "--model", model, "-o", out, "-q")
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["entities"][0]["text"] == "Angela Merkel"
    result = invoke("evaluate", TINY, "--model", model, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["f1"] > 0.5


@pytest.mark.parametrize(("case", "setup", "file", "fragment"), MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_a_damaged_model_is_one_line_naming_the_file(case, setup, file, fragment, damaged, inputs):
    model = damaged(setup)
    text, out = inputs
    started = time.perf_counter()
    line = assert_one_line_error(invoke("annotate", text, "--model", model, "-o", out, "-q"), file, fragment)
    assert line.startswith(f"Error: {model}"), line  # the message starts with the folder or the file in it
    assert out.read_bytes() == OLD_OUTPUT  # refused before any output is written
    assert_one_line_error(invoke("evaluate", TINY, "--model", model), file, fragment)
    assert time.perf_counter() - started < 60  # huge sizes are refused, never allocated


@pytest.mark.parametrize("case", ["weights random bytes", "hidden huge", "labels fewer than the weights'"])
def test_a_damaged_model_in_a_real_process_prints_no_traceback(case, damaged, inputs):
    _, setup, file, fragment = next(c for c in MODEL_CASES if c[0] == case)
    model = damaged(setup)
    text, out = inputs
    run = subprocess.run([sys.executable, "cli.py", "annotate", str(text), "--model", str(model), "-o", str(out),
                          "-q"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1
    assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr, run.stderr
    assert file in run.stderr and fragment in run.stderr
    assert out.read_bytes() == OLD_OUTPUT


def test_a_huggingface_folder_given_as_model_says_how_to_use_it(tiny_bert_dir, inputs):
    text, out = inputs
    hint = "looks like a HuggingFace model folder, not a tagpipe model: use --pretrained with `train --encoder bert`"
    assert_one_line_error(invoke("annotate", text, "--model", tiny_bert_dir, "-o", out, "-q"), str(tiny_bert_dir),
                          hint)
    assert_one_line_error(invoke("evaluate", TINY, "--model", tiny_bert_dir), hint)
    assert out.read_bytes() == OLD_OUTPUT


# -- a BERT tagger's transformer config -------------------------------------------------------------------
@pytest.fixture(scope="module")
def bert_tagger(tiny_bert_dir, tmp_path_factory) -> Path:
    """An untrained BERT + softmax tagger saved by ``Tagger.save`` (loading is what is tested)."""
    from tagpipe.model import Tagger

    folder = tmp_path_factory.mktemp("bert-tagger") / "model"
    tagger = Tagger.build([["the", "cat"]], ["O", "B-X", "I-X"], encoder="tagpipe.bert.v1",
                          decoder="tagpipe.softmax.v1", encoder_config={"pretrained": str(tiny_bert_dir)},
                          scheme=None, task="tag")
    tagger.save(folder)
    return folder


def _hf_config(change: Callable[[dict], object]) -> Callable[[Path], None]:
    def setup(folder: Path) -> None:
        path = folder / "encoder" / "config.json"
        config = json.loads(path.read_text())
        change(config)
        path.write_text(json.dumps(config))

    return setup


BERT_CASES = [
    ("transformer config not JSON", write("encoder/config.json", "{"), "encoder/config.json",
     "not a transformer config"),
    ("transformer config missing", remove("encoder/config.json"), "model", "missing encoder/config.json"),
    ("transformer 2**20 wide", _hf_config(lambda c: c.update(hidden_size=2**20, intermediate_size=2**20)),
     "model.safetensors", "tensor 'encoder.model."),
    ("pooling unknown", edit_config(lambda c: c["encoder"]["config"].update(pooling="sum")), "config.json",
     "'pooling' must be one of first, mean, max"),
    ("window a string", edit_config(lambda c: c["encoder"]["config"].update(window="wide")), "config.json",
     "'window' must be an integer"),
]


@pytest.mark.parametrize(("case", "setup", "file", "fragment"), BERT_CASES, ids=[c[0] for c in BERT_CASES])
def test_a_damaged_bert_tagger_is_one_line(case, setup, file, fragment, bert_tagger, tmp_path, inputs):
    model = tmp_path / "model"
    shutil.copytree(bert_tagger, model)
    setup(model)
    text, out = inputs
    assert_one_line_error(invoke("annotate", text, "--model", model, "-o", out, "-q"), file, fragment)
    assert out.read_bytes() == OLD_OUTPUT


def test_the_undamaged_bert_tagger_loads(bert_tagger):
    from tagpipe.model import Tagger

    assert len(Tagger.load(bert_tagger).tag([["the", "cat"]])[0]) == 2


FEATURES = {"word_dim": 8, "char_dim": 4, "char_hidden": 4, "casing_dim": 2}
SMALL = {**FEATURES, "hidden": 8}
BERT = {"pretrained": "TINY_BERT"}
ENCODERS = {
    "bilstm": ("tagpipe.bilstm.v1", SMALL),
    "bilstm, char lstm, bigrams, 2 layers": ("tagpipe.bilstm.v1", {**SMALL, "char_encoder": "lstm", "bigram_dim": 4,
                                                                   "bigram_min_count": 1, "layers": 2}),
    "idcnn": ("tagpipe.idcnn.v1", {**FEATURES, "filters": 8}),
    "transformer, gau, deepnorm": ("tagpipe.transformer.v1", {**FEATURES, "width": 8, "layers": 2, "heads": 2,
                                                              "attention": "gau_relu2", "norm": "deepnorm"}),
    "bert": ("tagpipe.bert.v1", BERT),
    "bert + bilstm stack": ("tagpipe.stack.v1", {"encoders": [{"name": "tagpipe.bert.v1", "config": BERT},
                                                              {"name": "tagpipe.bilstm.v1", "config": {"hidden": 8}}]}),
}


@pytest.mark.parametrize("encoder", list(ENCODERS))
def test_every_builtin_encoder_and_decoder_builds_on_the_meta_device(encoder, tiny_bert_dir, tmp_path):
    """``Tagger.load`` sizes a model on torch's meta device before allocating it; a builtin component that
    could not build there would quietly skip that guard, so each one is built there and compared."""
    from tagpipe.host import get_registry
    from tagpipe.model import Tagger, sized_only

    name, encoder_config = ENCODERS[encoder]
    encoder_config = json.loads(json.dumps(encoder_config).replace("TINY_BERT", str(tiny_bert_dir)))
    Tagger.build([["the", "cat", "sat"]], ["O", "B-X", "I-X", "E-X", "S-X"], encoder=name, decoder="tagpipe.crf.v1",
                 encoder_config=encoder_config).save(tmp_path / "model")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    registry = get_registry()
    decoders = [n for n in registry.names("decoder") if registry.entry("decoder", n).plugin == "builtin_decoders"]
    assert len(decoders) == 4
    for decoder in decoders:
        config["decoder"] = {"name": decoder, "config": {}}
        with sized_only():
            skeleton = Tagger.from_config(tmp_path / "model", config)
        real = Tagger.from_config(tmp_path / "model", config)
        assert {k: v.shape for k, v in skeleton.state_dict().items()} == \
            {k: v.shape for k, v in real.state_dict().items()}
        assert all(p.is_meta for p in skeleton.parameters()), decoder


def test_loading_a_model_does_not_import_torch_compile_machinery():
    """Initialising a meta tensor would import torch._dynamo (~1.5 s of every annotate process);
    the sizes-only build skips those initialisers, so loading both embedded models imports none of it."""
    code = ("import sys; from tagpipe.model import Tagger; from tagpipe.defaults import model_path; "
            "[Tagger.load(model_path(name)) for name in ('en', 'zh')]; print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"]


def test_sizing_any_builtin_word_encoder_and_decoder_imports_no_torch_compile_machinery():
    """Tensor maths on meta tensors imports torch._dynamo too, so the builtin components compute their
    constant buffers (constraint penalties) on the CPU: none of them pays that start-up in ``Tagger.load``."""
    code = """
import json, sys
from tagpipe.model import Tagger, sized_only
labels = ["O", "B-X", "I-X", "E-X", "S-X"]
for name, config in json.loads(sys.argv[1]):
    for decoder in ("tagpipe.softmax.v1", "tagpipe.crf.v1", "tagpipe.memm.v1", "tagpipe.bimemm.v1"):
        with sized_only():
            Tagger.build([["a", "b"]], labels, encoder=name, decoder=decoder, encoder_config=config)
print("torch._dynamo" in sys.modules)
"""
    encoders = json.dumps([spec for label, spec in ENCODERS.items() if "bert" not in label])
    out = subprocess.run([sys.executable, "-c", code, encoders], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"]


def test_no_pickle_loader_outside_training_checkpoints():
    """Model weights load with safetensors; a ``torch.load`` anywhere else must be data-only."""
    offenders = []
    for folder in (REPO / "pipeline", REPO / "plugins"):
        for path in folder.rglob("*.py"):
            if path.parent.name == "training":
                continue  # trainer checkpoints: tests/test_faults_training.py
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if "torch.load(" in line and "weights_only=True" not in line:
                    offenders.append(f"{path.relative_to(REPO)}:{number}")
    assert not offenders, offenders


# -- devices ----------------------------------------------------------------------------------------------
GPUS = torch.cuda.device_count() if torch.cuda.is_available() else 0
NO_CUDA = "torch sees no CUDA device"
SEEN = NO_CUDA if GPUS == 0 else f"torch sees {GPUS} CUDA device"
#: (case, command line with DEVICE standing for the device, device, fragment); the inputs do not exist, so a
#: message about the device shows it was checked before anything was read
DEVICE_COMMANDS = {
    "train": ["train", "--train", "missing.conll", "--output", "NEW", "--device"],
    "evaluate": ["evaluate", "missing.conll", "--model", str(FIXTURE), "--device"],
    "annotate": ["annotate", "TEXT", "--model", str(FIXTURE), "-o", "OUT", "--device"],
    "parse": ["parse", "EMPTY", "--pretrained", "missing-folder", "--device"],
    "segment": ["segment", "EMPTY", "--pretrained", "missing-folder", "--device"],
}
FORMS = "not a device; use one of auto, cpu, cuda, cuda:N, mps"
DEVICE_CASES = [(command, "banana", f"--device 'banana': {FORMS}") for command in DEVICE_COMMANDS]
DEVICE_CASES += [(command, "cuda:-1", FORMS) for command in ("train", "annotate")]
DEVICE_CASES += [(command, "cuda:7", f"--device cuda:7: {SEEN}") for command in DEVICE_COMMANDS if GPUS < 8]
DEVICE_CASES += [(command, "cuda", f"--device cuda: {NO_CUDA}") for command in DEVICE_COMMANDS if GPUS == 0]
if not torch.backends.mps.is_available():
    DEVICE_CASES += [("evaluate", "mps", "--device mps: torch sees no MPS")]


@pytest.mark.parametrize(("command", "device", "fragment"), DEVICE_CASES,
                         ids=[f"{c}-{d}" for c, d, _ in DEVICE_CASES])
def test_a_bad_device_is_one_line_before_any_work(command, device, fragment, tmp_path, inputs):
    text, out = inputs
    (tmp_path / "empty.conllu").write_text("")
    places = {"TEXT": str(text), "OUT": str(out), "NEW": str(tmp_path / "model"),
              "EMPTY": str(tmp_path / "empty.conllu")}
    args = [places.get(a, a) for a in DEVICE_COMMANDS[command]] + [device]
    assert_one_line_error(invoke(*args), fragment)
    assert out.read_bytes() == OLD_OUTPUT and not (tmp_path / "model").exists()


def test_resolve_device_reads_every_form():
    from tagpipe.devices import resolve_device
    from tagpipe.errors import ConfigValueError

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if GPUS else "cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    if GPUS:
        assert resolve_device(f"cuda:{GPUS - 1}") == torch.device("cuda", GPUS - 1)
    with pytest.raises(ConfigValueError, match="not a device"):  # a ValueError to the API
        resolve_device("gpu")


# -- no traceback from the CLI ----------------------------------------------------------------------------
BOOM = '''
import click
from tagpipe import hookimpl, host

@click.command()
def boom():
    raise RuntimeError("kaboom\\nsecond line")

class Boom:
    @hookimpl
    def register_commands(self, cli):
        cli.add_command(boom)

def install():
    pm = host.make_plugin_manager()
    pm.register_module("boom_plugin", Boom(), "tests")
    host.reset(pm)
'''
UNEXPECTED = "error: RuntimeError: kaboom second line (set TAGPIPE_TRACEBACK=1 for the traceback)"


@pytest.fixture
def boom_plugin(tmp_path, monkeypatch):
    """A plugin whose command raises a RuntimeError (no user error: a bug)."""
    (tmp_path / "boom_plugin.py").write_text(BOOM)
    monkeypatch.syspath_prepend(str(tmp_path))
    import boom_plugin

    boom_plugin.install()
    yield tmp_path
    sys.modules.pop("boom_plugin", None)


def test_an_unexpected_exception_is_one_line_and_exit_1(boom_plugin, monkeypatch):
    monkeypatch.delenv("TAGPIPE_TRACEBACK", raising=False)
    result = invoke("boom")
    assert assert_one_line_error(result) == UNEXPECTED


def test_tagpipe_traceback_1_reraises(boom_plugin, monkeypatch):
    monkeypatch.setenv("TAGPIPE_TRACEBACK", "1")
    result = invoke("boom")
    assert result.exit_code == 1
    assert isinstance(result.exception, RuntimeError) and str(result.exception) == "kaboom\nsecond line"


@pytest.mark.parametrize(("traceback", "expected"), [(None, 1), ("1", 1)])
def test_an_unexpected_exception_in_a_real_process(boom_plugin, traceback, expected):
    env = {k: v for k, v in os.environ.items() if k != "TAGPIPE_TRACEBACK"}
    if traceback:
        env["TAGPIPE_TRACEBACK"] = traceback
    env["PYTHONPATH"] = os.pathsep.join([str(boom_plugin), env.get("PYTHONPATH", "")])
    script = "import boom_plugin; boom_plugin.install(); from tagpipe.cli import main; main()"
    run = subprocess.run([sys.executable, "-c", script, "boom"], cwd=REPO, capture_output=True, text=True,
                         env=env, timeout=120)
    assert run.returncode == expected
    if traceback:
        assert "Traceback" in run.stderr and "RuntimeError: kaboom" in run.stderr
    else:
        assert run.stderr.strip() == UNEXPECTED


# -- small ones -------------------------------------------------------------------------------------------
ONE_SENTENCE = "1\tHello\t_\tINTJ\t_\t_\t0\troot\t_\t_\n\n"
#: (case, setup(tmp_path) -> command line, expected exit code, fragment)
SMALL_CASES = [
    ("plugin name of 300 characters", lambda tmp: ["plugins", "new", "a" * 300, "-d", str(tmp / "p")], 1,
     "300 characters, at most 64"),
    ("plugin name with spaces and !", lambda tmp: ["plugins", "new", "my plugin!", "-d", str(tmp / "p")], 1,
     "plugin name 'my plugin!': use lower-case letters, digits, '_' and '-'"),
    ("plugin name starting with a digit", lambda tmp: ["plugins", "new", "1abc", "-d", str(tmp / "p")], 1,
     "starting with a letter"),
    ("plugin directory is a file", lambda tmp: ["plugins", "new", "ok", "-d", str(_file(tmp / "p"))], 1,
     "exists and is not a directory"),
    ("parse an empty corpus", lambda tmp: ["parse", str(_file(tmp / "e.conllu")), "--pretrained", "missing",
                                           "--device", "cpu"], 1, "no sentences, nothing to parse"),
    ("segment an empty corpus", lambda tmp: ["segment", str(_file(tmp / "e.conllu")), "--pretrained", "missing",
                                             "--device", "cpu"], 1, "no sentences, nothing to segment"),
    ("parse a corpus of blank lines", lambda tmp: ["parse", str(_file(tmp / "c.conllu", "\n\n\n")),
                                                   "--pretrained", "missing", "--device", "cpu"], 1, "no sentences"),
    ("parse --limit 0", lambda tmp: ["parse", str(_file(tmp / "s.conllu", ONE_SENTENCE)), "--limit", "0",
                                     "--pretrained", "missing", "--device", "cpu"], 1, "--limit 0"),
]


def _file(path: Path, text: str = "") -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(("case", "setup", "code", "fragment"), SMALL_CASES, ids=[c[0] for c in SMALL_CASES])
def test_small_bad_inputs_are_one_line(case, setup, code, fragment, tmp_path):
    result = invoke(*setup(tmp_path))
    assert result.exit_code == code
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "p").is_dir()  # no plugin skeleton written
