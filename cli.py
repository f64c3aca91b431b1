"""``python cli.py ...`` from a checkout: the same command line as the ``tagpipe`` console script.

The command line itself is :mod:`tagpipe.cli` (``pipeline/cli.py``). When tagpipe is not installed
(a bare checkout), the repository's folders are mapped onto the ``tagpipe`` import name here, as
``setup.cfg``'s ``package_dir`` does for an install, so nothing else needs to change.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
#: import name -> folder, as in setup.cfg's package_dir
PACKAGE_DIR = {"tagpipe": ROOT / "pipeline", "tagpipe.plugins": ROOT / "plugins", "tagpipe.corpora": ROOT / "corpora"}


class _CheckoutFinder(importlib.abc.MetaPathFinder):
    """Finds ``tagpipe``, ``tagpipe.plugins`` and ``tagpipe.corpora`` in this checkout's folders."""

    def find_spec(self, fullname, path=None, target=None):
        folder = PACKAGE_DIR.get(fullname)
        if folder is None:
            return None
        return importlib.util.spec_from_file_location(
            fullname, folder / "__init__.py", submodule_search_locations=[str(folder)]
        )


def _ensure_tagpipe_importable() -> None:
    if importlib.util.find_spec("tagpipe") is None:
        sys.meta_path.insert(0, _CheckoutFinder())


if __name__ == "__main__":
    _ensure_tagpipe_importable()
    from tagpipe.cli import main

    main()
