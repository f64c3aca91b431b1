"""``tagpipe info``: versions, devices, plugins and embedded models: what a bug report needs."""

from __future__ import annotations

import json
import platform
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import click

#: the distributions whose versions decide how tagpipe behaves
PACKAGES = ("tagpipe", "torch", "spacy", "transformers", "pluggy", "safetensors", "click")


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _devices() -> list[str]:
    import torch

    found = [f"cpu ({torch.get_num_threads()} threads)"]
    if torch.cuda.is_available():
        found += [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    return found


def _plugins() -> tuple[list[dict[str, str]], list[str]]:
    from tagpipe.host import get_plugin_manager, get_registry

    pm = get_plugin_manager()
    loaded = [{"name": name, "distribution": pm.distributions.get(name, "?")} for name, _ in pm.list_name_plugin()]
    return sorted(loaded, key=lambda p: p["name"]), list(get_registry().errors)


def _embedded_models() -> list[dict[str, Any]]:
    from tagpipe.defaults import EMBEDDED_MODELS, embedded_model_path
    from tagpipe.errors import ModelError

    rows = []
    for name, model in EMBEDDED_MODELS.items():
        try:
            path: str | None = str(embedded_model_path(name))
        except ModelError:
            path = None
        rows.append({"name": name, "path": path, "description": model.description, "test": model.test_score})
    return rows


def gather() -> dict[str, Any]:
    """Everything ``tagpipe info`` reports, as JSON values."""
    plugins, problems = _plugins()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {name: _version(name) for name in PACKAGES},
        "devices": _devices(),
        "plugins": plugins,
        "plugin_problems": problems,
        "embedded_models": _embedded_models(),
    }


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def info(as_json: bool) -> None:
    """Print versions, the devices torch sees, the loaded plugins and the embedded models."""
    report = gather()
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    versions = report["versions"]
    click.echo(f"tagpipe {versions['tagpipe'] or 'not installed (source checkout)'} on Python {report['python']} "
               f"({report['platform']})")
    click.echo("versions: " + ", ".join(f"{k} {v or 'missing'}" for k, v in versions.items() if k != "tagpipe"))
    click.echo("devices: " + ", ".join(report["devices"]))
    click.echo("plugins: " + ", ".join(f"{p['name']} ({p['distribution']})" for p in report["plugins"]))
    for problem in report["plugin_problems"]:
        click.echo(f"plugin problem: {problem}")
    for model in report["embedded_models"]:
        where = model["path"] or "missing"
        click.echo(f"embedded model {model['name']!r}: {model['description']}; {model['test']}; {where}")
