"""Store a trained model folder as an embedded model: float16 weights, machine paths reduced to file names.

    python benchmarks/ship_model.py MODEL_DIR plugins/default_model
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    source, target = sys.argv[1], sys.argv[2]
    sys.path.insert(0, str(REPO))
    import torch

    from tagpipe.model import Tagger

    model = Tagger.load(source)
    settings = model.meta.get("settings", {})
    for key in ("train", "dev", "output", "vectors"):  # machine-specific paths: keep only the file names
        if settings.get(key):
            settings[key] = Path(settings[key]).name
    for config in (settings.get("encoder_config") or {}, model.encoder.cfg.__dict__):
        if config.get("pretrained_vectors"):
            config["pretrained_vectors"] = Path(config["pretrained_vectors"]).name
    if model.meta.get("invalid_tags"):  # {corpus path: counts of repaired / dropped tags}
        model.meta["invalid_tags"] = {Path(p).name: c for p, c in model.meta["invalid_tags"].items()}
    model.save(target, dtype=torch.float16)
    print(f"saved {target}")


if __name__ == "__main__":
    main()
