"""``tagpipe plugins new NAME``: write a plugin package skeleton from ``plugin_template/``.

The templates are package data (``*.tmpl`` files, so neither ruff nor pytest mistakes them for
our own code); ``{{name}}``-style placeholders are replaced and the ``__module__`` folder and file
names renamed. The skeleton is a working plugin: an encoder, a decoder, the ``tagpipe`` entry
point and a test, so ``pip install -e . && pytest`` passes before the author changes anything.
"""

from __future__ import annotations

import re
from pathlib import Path

from tagpipe.errors import TagpipeError

TEMPLATE_DIR = Path(__file__).resolve().parent / "plugin_template"
NAME_RE = re.compile(r"^[a-z][a-z0-9_]*(-[a-z0-9_]+)*$")
#: characters in a plugin name: the folder ``tagpipe-NAME`` and module ``tagpipe_NAME`` stay far below
#: the file systems' 255-byte name limit, and the name stays something a user types
MAX_NAME_LENGTH = 64


def plugin_names(name: str) -> dict[str, str]:
    """``NAME`` -> the placeholders: plugin ``name``, distribution ``dist``, import ``module``."""
    name = name.strip().lower()
    name = name.removeprefix("tagpipe-").removeprefix("tagpipe_")
    if len(name) > MAX_NAME_LENGTH:
        raise TagpipeError(f"plugin name {name[:20]!r}...: {len(name)} characters, at most {MAX_NAME_LENGTH}")
    if not NAME_RE.match(name):
        shown = repr(name) if len(name) <= 40 else repr(name[:37] + "...")
        raise TagpipeError(f"plugin name {shown}: use lower-case letters, digits, '_' and '-', starting with a "
                           "letter")
    return {"name": name, "dist": f"tagpipe-{name}", "module": "tagpipe_" + name.replace("-", "_"),
            "tagpipe_version": _tagpipe_version()}


def new_plugin(name: str, directory: str | Path | None = None, *, force: bool = False) -> tuple[Path, list[Path]]:
    """Write the skeleton into ``directory`` (default ``./tagpipe-NAME``); return it and the files written."""
    values = plugin_names(name)
    target = Path(directory) if directory is not None else Path(values["dist"])
    if target.exists() and not target.is_dir():
        raise TagpipeError(f"{target} exists and is not a directory; choose another --directory")
    if target.exists() and any(target.iterdir()) and not force:
        raise TagpipeError(f"{target} exists and is not empty; choose another --directory or pass --force")
    written = []
    for template in sorted(TEMPLATE_DIR.rglob("*.tmpl")):
        relative = template.relative_to(TEMPLATE_DIR).with_suffix("")  # drop ".tmpl"
        out = target / str(relative).replace("__module__", values["module"])
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(_fill(template.read_text(), values))
        except OSError as exc:
            where = exc.filename or out
            raise TagpipeError(f"{where}: cannot write the plugin skeleton ({exc.strerror or exc})") from None
        written.append(out)
    return target, written


def _fill(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    return text


def _tagpipe_version() -> str:
    from tagpipe import __version__

    return __version__
