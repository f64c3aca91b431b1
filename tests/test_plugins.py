"""The plugin system: builtins and third-party plugins through the same hooks and entry points."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from tagpipe import hookimpl
from tagpipe import host as plugins
from tagpipe.components import Decoder
from tagpipe.errors import UnknownComponentError
from tagpipe.registry import Registry

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "corpora" / "samples" / "tiny.conll"
SMALL_BILSTM = {"word_dim": 16, "char_dim": 8, "char_hidden": 8, "hidden": 16}


class ArgmaxDecoder(Decoder):
    """A throwaway decoder: independent per-token softmax, argmax decoding, no constraints."""

    def __init__(self, input_dim, num_tags, constraints=None, **config):
        super().__init__(input_dim, num_tags, constraints)
        self.project = torch.nn.Linear(input_dim, num_tags)

    def loss(self, features, tags, mask):
        logits = self.project(features)
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), tags, reduction="none")
        return (nll * mask).sum(-1)

    def decode(self, features, mask):
        return self.project(features).argmax(-1).masked_fill(~mask, -1)

    def marginals(self, features, mask):
        return self.project(features).softmax(-1)


class ThrowawayPlugin:
    @hookimpl
    def register_decoders(self, register):
        register("throwaway.argmax.v1", ArgmaxDecoder)


def install(plugin: object, name: str) -> plugins.PluginManager:
    pm = plugins.make_plugin_manager()
    pm.register_module(name, plugin, "tests")
    plugins.reset(pm)
    return pm


def test_builtins_registered_through_the_hooks():
    registry = plugins.get_registry()
    assert registry.errors == []
    assert {"tagpipe.crf.v1", "tagpipe.softmax.v1"} <= set(registry.names("decoder"))
    assert "tagpipe.bilstm.v1" in registry.names("encoder")
    assert {"conll", "conllu", "jsonl", "text"} <= set(registry.names("format"))
    assert registry.entry("decoder", "tagpipe.crf.v1").plugin == "builtin_decoders"


def test_registration_does_not_import_torch():
    import subprocess

    code = ("import sys; from tagpipe.host import get_registry; get_registry(); "
            "print('torch' in sys.modules, 'spacy' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "False"]


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(UnknownComponentError, match="available: .*tagpipe.crf.v1"):
        plugins.get_registry().get("decoder", "tagpipe.nope.v1")


def test_duplicate_name_refused_naming_both_plugins():
    class Clash:
        @hookimpl
        def register_decoders(self, register):
            register("tagpipe.crf.v1", ArgmaxDecoder)

    install(Clash(), "clashing")
    registry = plugins.get_registry()
    assert registry.errors == [
        "decoder 'tagpipe.crf.v1' from plugin 'clashing' refused: already registered by plugin 'builtin_decoders'"
    ]
    assert registry.get("decoder", "tagpipe.crf.v1").__name__ == "CRFDecoder"


def test_a_raising_hook_is_reported_and_the_rest_keep_working():
    class Broken:
        @hookimpl
        def register_decoders(self, register):
            raise RuntimeError("boom")

    install(Broken(), "broken")
    registry = plugins.get_registry()
    assert any("'broken'" in e and "boom" in e for e in registry.errors)
    assert "tagpipe.crf.v1" in registry.names("decoder")


def test_bad_import_string_names_the_plugin():
    registry = Registry()
    registry.add("decoder", "x.v1", "no_such_module:Thing", "someplugin")
    with pytest.raises(Exception, match="plugin 'someplugin': cannot import decoder 'x.v1'"):
        registry.get("decoder", "x.v1")


def _write_dist(root: Path, dist: str, module: str, body: str) -> None:
    """A real (minimal) installed distribution: a module plus dist-info with a tagpipe entry point."""
    (root / f"{module}.py").write_text(textwrap.dedent(body))
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[tagpipe]\n{module} = {module}\n")


def test_entry_point_plugins_discovered_and_broken_ones_reported(tmp_path, monkeypatch):
    _write_dist(tmp_path, "tagpipe-broken", "broken_plugin", "raise ImportError('missing dependency xyz')\n")
    _write_dist(tmp_path, "tagpipe-argmax", "argmax_plugin", """
        from tagpipe import hookimpl

        @hookimpl
        def register_decoders(register):
            register("argmax.v1", "tests.test_plugins:ArgmaxDecoder")
    """)
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = plugins.get_registry()
    assert registry.entry("decoder", "argmax.v1").plugin == "argmax_plugin"
    assert any("'broken_plugin' from 'tagpipe-broken' failed to import" in e and "xyz" in e for e in registry.errors)
    result = CliRunner().invoke(__import__("tagpipe.cli", fromlist=["cli"]).cli, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    assert '"argmax.v1"' in result.output and "tagpipe-argmax" in result.output


def test_throwaway_plugin_decoder_trains_a_model(tmp_path):
    install(ThrowawayPlugin(), "throwaway")
    from tagpipe.model import Tagger
    from tagpipe.training.loop import Trainer
    from tagpipe.training.settings import TrainSettings

    settings = TrainSettings(train=str(TINY), dev=str(TINY), output=str(tmp_path / "m"), decoder="throwaway.argmax.v1",
                             encoder_config=SMALL_BILSTM, epochs=3, batch_size=8, lr=1e-2, device="cpu")
    result = Trainer(settings, log=lambda _: None, progress=False).run()
    assert result["best"]["epoch"] >= 1
    model = Tagger.load(tmp_path / "m")
    assert model.decoder_name == "throwaway.argmax.v1"
    assert len(model.tag([["Peter", "lives", "in", "Berlin", "."]])[0]) == 5


def test_a_raising_register_commands_hook_is_named_and_the_cli_keeps_working():
    class BrokenCommands:
        @hookimpl
        def register_commands(self, cli):
            raise RuntimeError("no commands today")

    install(BrokenCommands(), "broken_commands")
    import tagpipe.cli as cli_module
    from tagpipe.commands import COMMANDS

    group = cli_module.TagpipeGroup(name="tagpipe")  # builtins only: plugin commands load on demand
    for command in COMMANDS:
        group.add_command(command)
    result = CliRunner().invoke(group, ["parse", "--help"])
    assert result.exit_code == 0, result.output
    assert "plugin 'broken_commands': register_commands failed: RuntimeError: no commands today" in result.output
