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
            register("argmax.v1", "tests.test_host:ArgmaxDecoder")
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


def _clash_plugin(name: str, **opts: bool) -> object:
    """A plugin registering ``name`` as a decoder, with the given ``@hookimpl`` options."""

    class Clash:
        @hookimpl(**opts)
        def register_decoders(self, register):
            register(name, ArgmaxDecoder)

    return Clash()


@pytest.mark.parametrize("opts", [{}, {"tryfirst": True}, {"trylast": True}])
def test_builtins_win_a_clash_whatever_tryfirst_or_trylast(opts):
    install(_clash_plugin("tagpipe.crf.v1", **opts), "clashing")
    registry = plugins.get_registry()
    assert registry.errors == [
        "decoder 'tagpipe.crf.v1' from plugin 'clashing' refused: already registered by plugin 'builtin_decoders'"
    ]
    assert registry.entry("decoder", "tagpipe.crf.v1").plugin == "builtin_decoders"


def test_builtins_are_called_first_even_when_registered_last():
    import importlib

    pm = plugins.make_plugin_manager(builtins=False, entry_point_group=None)
    pm.register_module("early", _clash_plugin("tagpipe.crf.v1", tryfirst=True), "tests")
    for name, module in plugins.BUILTIN_PLUGINS.items():
        pm.register_module(name, importlib.import_module(module))
    registry = plugins.build_registry(pm)
    assert registry.entry("decoder", "tagpipe.crf.v1").plugin == "builtin_decoders"
    assert registry.errors == [
        "decoder 'tagpipe.crf.v1' from plugin 'early' refused: already registered by plugin 'builtin_decoders'"
    ]


def test_a_namesake_of_a_builtin_is_not_treated_as_one():
    pm = plugins.make_plugin_manager(builtins=False, entry_point_group=None)
    pm.register_module("first", _clash_plugin("x.v1"), "tests")
    pm.register_module("builtin_decoders", _clash_plugin("x.v1", tryfirst=True), "impostor")
    assert not plugins.is_builtin(pm, "builtin_decoders")
    assert plugins.build_registry(pm).entry("decoder", "x.v1").plugin == "first"


def test_third_party_plugins_clash_in_load_order():
    pm = plugins.make_plugin_manager()
    pm.register_module("loaded_first", _clash_plugin("clash.v1", trylast=True), "tests")
    pm.register_module("loaded_second", _clash_plugin("clash.v1", tryfirst=True), "tests")
    registry = plugins.build_registry(pm)
    assert registry.entry("decoder", "clash.v1").plugin == "loaded_first"
    assert registry.errors == [
        "decoder 'clash.v1' from plugin 'loaded_second' refused: already registered by plugin 'loaded_first'"
    ]


def _fresh_group():
    """A ``tagpipe`` group with the builtin commands only: plugin commands load on demand."""
    import tagpipe.cli as cli_module
    from tagpipe.commands import COMMANDS

    group = cli_module.TagpipeGroup(name="tagpipe")
    for command in COMMANDS:
        group.add_command(command)
    return group


def test_a_plugin_cannot_replace_a_builtin_command():
    import click

    from tagpipe.commands import train

    @click.command(name="train")
    def fake_train():
        click.echo("hijacked")

    @click.command(name="parse")
    def fake_parse():
        click.echo("hijacked")

    @click.command()
    def hello():
        click.echo("hello from a plugin")

    class Hijack:
        @hookimpl(tryfirst=True)
        def register_commands(self, cli):
            cli.add_command(fake_train)
            cli.add_command(fake_parse)
            cli.add_command(hello)

    install(Hijack(), "hijack")
    group = _fresh_group()
    result = CliRunner().invoke(group, ["hello"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "hello from a plugin\n"
    assert result.stderr.splitlines() == [
        "warning: command 'train' from plugin 'hijack' refused: already registered by tagpipe",
        "warning: command 'parse' from plugin 'hijack' refused: already registered by plugin 'perturbed_masking'",
    ]
    assert group.commands["train"] is train
    assert "hijacked" not in CliRunner().invoke(group, ["parse", "--help"]).output


def test_plugin_commands_follow_a_reset_of_the_host():
    import click

    @click.command()
    def hello():
        click.echo("hello")

    class Hello:
        @hookimpl
        def register_commands(self, cli):
            cli.add_command(hello)

    install(Hello(), "hello_plugin")
    group = _fresh_group()
    assert CliRunner().invoke(group, ["hello"]).exit_code == 0
    plugins.reset()
    result = CliRunner().invoke(group, ["hello"])
    assert result.exit_code == 2 and "No such command 'hello'" in result.output
    assert "parse" in group.list_commands(None)  # the builtin plugins' commands came back


def test_a_misspelt_hook_refuses_the_plugin_in_one_line(tmp_path, monkeypatch):
    _write_dist(tmp_path, "tagpipe-misspelt", "misspelt_plugin", """
        from tagpipe import hookimpl

        @hookimpl
        def register_decoder(register):
            register("misspelt.v1", "tests.test_host:ArgmaxDecoder")

        @hookimpl
        def register_encoders(register):
            register("misspelt.enc.v1", "tests.test_host:ArgmaxDecoder")
    """)
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = plugins.get_registry()
    assert registry.errors == ["plugin 'misspelt_plugin' from 'tagpipe-misspelt' refused: "
                               "unknown hook 'register_decoder' (did you mean 'register_decoders'?)"]
    pm = plugins.get_plugin_manager()
    assert pm.get_plugin("misspelt_plugin") is None and "misspelt_plugin" not in pm.distributions
    assert "misspelt.enc.v1" not in registry.names("encoder")  # left out whole, not half
    assert "tagpipe.crf.v1" in registry.names("decoder")
    pm.check_pending()  # what is left passes pluggy's own check


def test_an_unknown_hook_lists_the_hooks_and_optional_hooks_pass():
    class Unknown:
        @hookimpl
        def frobnicate(self):
            pass

    class Optional:
        @hookimpl(optionalhook=True)
        def register_widgets(self, register):
            pass

    pm = plugins.make_plugin_manager()
    pm.register_module("unknown", Unknown(), "tests")
    pm.register_module("optional", Optional(), "tests")
    assert pm.load_errors == ["plugin 'unknown' from 'tests' refused: unknown hook 'frobnicate' (hooks: "
                              "register_commands, register_decoders, register_encoders, register_formats, "
                              "register_optimizers, register_tasks)"]
    assert pm.get_plugin("optional") is not None


def test_an_argument_the_hookspec_lacks_refuses_the_whole_plugin_by_name():
    class ExtraArgument:
        @hookimpl
        def register_commands(self, cli):
            raise AssertionError("a refused plugin's hooks must not run")

        @hookimpl
        def register_decoders(self, register, extra):
            pass

    pm = plugins.make_plugin_manager()
    pm.register_module("extra_arg", ExtraArgument(), "tests")
    [error] = pm.load_errors
    assert error.startswith("plugin 'extra_arg' from 'tests' refused: PluginValidationError: ")
    assert "'register_decoders'" in error and "extra" in error and "\n" not in error
    assert pm.get_plugin("extra_arg") is None
    assert "extra_arg" not in {impl.plugin_name for impl in pm.hook.register_commands.get_hookimpls()}


def test_a_plugin_calling_sys_exit_at_import_is_named_and_the_cli_keeps_working(tmp_path, monkeypatch):
    _write_dist(tmp_path, "tagpipe-exiter", "exiter_plugin", "import sys\n\nsys.exit('goodbye')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from tagpipe.cli import cli

    expected = "plugin 'exiter_plugin' from 'tagpipe-exiter' called sys.exit() at import"
    result = CliRunner().invoke(cli, ["info"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("tagpipe ")
    assert result.stderr.splitlines() == [f"warning: 1 plugin problem(s), see `tagpipe plugins`: {expected}"]
    listing = CliRunner().invoke(cli, ["plugins"])
    assert listing.exit_code == 0 and listing.stderr.splitlines() == [f"warning: {expected}"]


def test_keyboard_interrupt_at_import_still_propagates(tmp_path, monkeypatch):
    _write_dist(tmp_path, "tagpipe-ctrlc", "ctrlc_plugin", "raise KeyboardInterrupt\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        plugins.make_plugin_manager()


def test_sys_exit_in_a_hook_is_named_and_the_rest_keep_working():
    class Exits:
        @hookimpl
        def register_decoders(self, register):
            register("exits.v1", ArgmaxDecoder)
            sys.exit(3)

        @hookimpl
        def register_commands(self, cli):
            sys.exit(4)

    install(Exits(), "exits")
    registry = plugins.get_registry()
    assert registry.errors == ["plugin 'exits': register_decoders called sys.exit()"]
    assert "tagpipe.crf.v1" in registry.names("decoder")
    result = CliRunner().invoke(_fresh_group(), ["parse", "--help"])
    assert result.exit_code == 0, result.output
    assert "warning: plugin 'exits': register_commands called sys.exit()" in result.stderr
