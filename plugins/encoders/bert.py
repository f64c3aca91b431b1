"""A HuggingFace transformer as a tagpipe encoder (``tagpipe.bert.v1``), fine-tuned end to end.

Any encoder model saved in a local folder works (BERT, RoBERTa, MiniLM, ...): it is read with
``AutoModel``/``AutoTokenizer.from_pretrained(path, local_files_only=True)``, never from the hub.
Words are split into subwords by the fast tokenizer (``word_ids()``) and pooled back to one
vector per word (``first``, ``mean`` or ``max``; :mod:`tagpipe.plugins.encoders.subwords`).

Long documents are split into overlapping windows of ``window`` positions (specials included)
whose starts are ``stride`` subwords apart; each word takes its features from the window where
it has the most context on both sides, so no token is dropped and the decoder runs once over the
stitched sentence (constraints hold across window seams).

The model folder keeps the HF config and tokenizer in ``encoder/``; the weights travel in the
tagger's ``model.safetensors``. Loading rebuilds the architecture with ``AutoModel.from_config``,
so a saved tagger never refers back to the folder it was fine-tuned from.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tagpipe.components import Encoder
from tagpipe.errors import ModelError, check_config_keys
from tagpipe.model_folder import Field, check_fields
from tagpipe.plugins.encoders.names import POOLINGS
from tagpipe.plugins.encoders.subwords import check_fast, encode_words, pad_rows, pool_words

ASSETS_DIR = "encoder"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer.model")
#: kinds and ranges of the config's values; the model's own limit on ``window`` is checked when it is built
CONFIG_FIELDS = {
    "pretrained": Field((str, None)),
    "pooling": Field((str,), choices=POOLINGS),
    "window": Field((int, None), low=1, high=1_000_000),
    "stride": Field((int, None), low=1, high=1_000_000),
    "dropout": Field((float,), low=0, high=0.99),
}


@dataclass
class BertEncoderConfig:
    """Hyper-parameters (docs/encoders.md). ``pretrained`` is only read by ``from_corpus``."""

    pretrained: str | None = None  # local folder of a HF encoder model + fast tokenizer
    pooling: str = "first"  # first | mean | max over a word's subwords
    window: int | None = None  # positions per window, specials included; None: the model's maximum
    stride: int | None = None  # subwords between window starts; None: half a window's content
    dropout: float = 0.1  # on the word features handed to the decoder (or the next stage)

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> BertEncoderConfig:
        """A config from its dict, each key known and each value of its kind and range (:data:`CONFIG_FIELDS`),
        else a ``ValueError`` (``ConfigKeyError`` / ``ConfigValueError``) naming the key."""
        check_config_keys("bert encoder config", config, (f.name for f in fields(cls)))
        check_fields("bert encoder config", config, CONFIG_FIELDS)
        return cls(**config)


class BertEncoder(Encoder):
    """Transformer over windows of subwords -> pooled word features ``[B, W, hidden_size]``."""

    def __init__(self, cfg: BertEncoderConfig, model: nn.Module, tokenizer: Any) -> None:
        super().__init__()
        check_fast(tokenizer)
        if getattr(model, "pooler", None) is not None:
            model.pooler = None  # the [CLS] pooler is unused: no dead weights, no missing-key noise
        self.model = model
        self.tokenizer = tokenizer
        self.output_dim = int(model.config.hidden_size)
        limit = max_positions(model.config, tokenizer)
        self._prefix, self._suffix = special_tokens(tokenizer)
        specials = len(self._prefix) + len(self._suffix)
        window = cfg.window or limit
        if not specials < window <= limit:
            raise ValueError(f"window must be in ({specials}, {limit}] for this model, got {window}")
        capacity = window - specials
        stride = cfg.stride or max(1, capacity // 2)
        if not 1 <= stride <= capacity:
            raise ValueError(f"stride must be in [1, {capacity}] (window {window} - {specials} specials), got {stride}")
        cfg.window, cfg.stride = window, stride
        self.cfg = cfg
        self.capacity = capacity
        self.dropout = nn.Dropout(cfg.dropout)
        self._pad = tokenizer.pad_token_id or 0

    # -- building and saving -------------------------------------------------------------
    @classmethod
    def from_corpus(cls, sentences: Sequence[Sequence[str]], **config: Any) -> BertEncoder:
        """Load the pretrained weights and tokenizer of ``pretrained`` (the corpus is not needed)."""
        from transformers import AutoModel

        cfg = BertEncoderConfig.from_dict(config)
        path = check_pretrained_folder(cfg.pretrained)
        tokenizer = load_tokenizer(path)
        model = load_pretrained(AutoModel, path, "the model weights")
        cfg.pretrained = None  # the tagger is self-contained: never refer back to the folder
        return cls(cfg, model, tokenizer)

    @classmethod
    def from_assets(cls, path: Path, config: dict[str, Any]) -> BertEncoder:
        """The architecture from ``encoder/config.json`` (random weights: the tagger loads them)."""
        from transformers import AutoConfig, AutoModel

        cfg = BertEncoderConfig.from_dict(config)
        folder = Path(path) / ASSETS_DIR
        if not (folder / "config.json").is_file():
            raise ModelError(f"{path}: missing {ASSETS_DIR}/config.json (the transformer's config)")
        with quiet_transformers():
            try:
                hf_config = AutoConfig.from_pretrained(folder, local_files_only=True)
                model = AutoModel.from_config(hf_config)
            except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
                message = " ".join(str(exc).split())
                raise ModelError(f"{folder / 'config.json'}: not a transformer config tagpipe can build "
                                 f"({type(exc).__name__}: {message})") from None
        return cls(cfg, model, load_tokenizer(folder))

    def config(self) -> dict[str, Any]:
        return asdict(self.cfg)

    def save_assets(self, path: Path) -> None:
        folder = Path(path) / ASSETS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        self.model.config.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)

    # -- training hooks --------------------------------------------------------------------
    def parameter_groups(self, lr: float, pretrained_lr: float | None = None) -> list[dict[str, Any]]:
        """The transformer at ``pretrained_lr`` (default ``lr``); it is all this encoder has."""
        return [{"params": list(self.model.parameters()), "lr": pretrained_lr or lr}]

    def enable_grad_checkpointing(self) -> bool:
        if not getattr(self.model, "supports_gradient_checkpointing", False):
            return False
        kwargs = {"use_reentrant": False}  # reentrant checkpoints give no gradients when inputs need none
        if hasattr(self.model, "activation_checkpointing_enable"):  # transformers >= 5.x name
            self.model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        return True

    # -- batches ---------------------------------------------------------------------------
    def featurize(self, sentences: Sequence[Sequence[str]]) -> dict[str, Tensor]:
        """Windows of subwords for a batch of pre-split sentences.

        ``input_ids``/``attention_mask``/``word_slot`` are ``[N, L]`` (``N`` windows of the whole
        batch, ``L`` the longest); ``word_slot`` is ``b * W + w`` at the subwords of word ``w`` of
        sentence ``b`` inside the window chosen for that word, else -1; ``lengths`` ``[B]`` words.
        """
        width = max((len(s) for s in sentences), default=0)
        rows: list[list[int]] = []
        slots: list[list[int]] = []
        for b, sentence in enumerate(sentences):
            if not sentence:
                continue
            enc = encode_words(self.tokenizer, sentence, special_tokens=False)
            pieces = list(enc["input_ids"])
            word_of = torch.tensor(enc.word_ids(), dtype=torch.long)  # shape: [P]
            bounds = window_bounds(len(pieces), self.capacity, self.cfg.stride)
            choice = best_windows(word_of, len(sentence), bounds)  # shape: [n_words]
            for j, (start, stop) in enumerate(bounds):
                words = word_of[start:stop]
                slot = torch.where(choice[words] == j, b * width + words, -1).tolist()
                rows.append(self._prefix + pieces[start:stop] + self._suffix)
                slots.append([-1] * len(self._prefix) + slot + [-1] * len(self._suffix))
        input_ids, mask, word_slot = pad_rows(rows, slots, self._pad)
        lengths = torch.tensor([len(s) for s in sentences], dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": mask, "word_slot": word_slot, "lengths": lengths}

    # -- the network -------------------------------------------------------------------------
    def forward(self, features: dict[str, Tensor]) -> Tensor:
        """``[B, W, hidden_size]`` word features stitched from the windows; zeros at padding."""
        lengths = features["lengths"]
        batch, width = lengths.numel(), int(lengths.max()) if lengths.numel() else 0
        input_ids = features["input_ids"]
        if input_ids.numel() == 0 or width == 0:
            return self.dropout(self._zeros(batch, width))
        states = self.model(input_ids=input_ids, attention_mask=features["attention_mask"]).last_hidden_state
        flat = states.reshape(1, -1, states.shape[-1])  # shape: [1, N * L, H]
        slots = features["word_slot"].reshape(1, -1)  # shape: [1, N * L]
        words = pool_words(flat, slots, batch * width, self.cfg.pooling)  # shape: [1, B * W, H]
        return self.dropout(words.view(batch, width, -1))

    def _zeros(self, batch: int, width: int) -> Tensor:
        weight = next(self.model.parameters())
        return weight.new_zeros(batch, width, self.output_dim)


# -- windows ----------------------------------------------------------------------------------
def window_bounds(n_pieces: int, capacity: int, stride: int) -> list[tuple[int, int]]:
    """``(start, stop)`` subword ranges of the windows covering ``n_pieces`` subwords.

    Starts are ``0, stride, 2 * stride, ...``; the last window ends exactly at ``n_pieces``.
    """
    if n_pieces <= capacity:
        return [(0, n_pieces)]
    starts = list(range(0, n_pieces - capacity, stride)) + [n_pieces - capacity]
    return [(s, s + capacity) for s in starts]


def best_windows(word_of: Tensor, n_words: int, bounds: Sequence[tuple[int, int]]) -> Tensor:
    """For each word, the window (index into ``bounds``) where it has the most context.

    Context is the smaller of the subwords before the word's first piece and after its last
    piece inside the window (negative when the window cuts the word); ties go to the earlier
    window. ``word_of`` ``[P]`` is each subword's word; returns ``[n_words]``.
    """
    pos = torch.arange(len(word_of))
    first = torch.full((n_words,), len(word_of), dtype=torch.long).scatter_reduce(0, word_of, pos, reduce="amin")
    last = torch.full((n_words,), -1, dtype=torch.long).scatter_reduce(0, word_of, pos, reduce="amax")
    starts = torch.tensor([s for s, _ in bounds])[:, None]  # shape: [J, 1]
    stops = torch.tensor([e for _, e in bounds])[:, None]
    context = torch.minimum(first[None, :] - starts, stops - 1 - last[None, :])  # shape: [J, n_words]
    return context.argmax(0)


# -- loading ----------------------------------------------------------------------------------
def max_positions(config: Any, tokenizer: Any) -> int:
    """Subword positions the model takes (RoBERTa-style models reserve ``pad_token_id + 1``)."""
    limit = int(getattr(config, "max_position_embeddings", 0) or 512)
    if "roberta" in str(getattr(config, "model_type", "")) or config.model_type in {"camembert", "longformer"}:
        limit -= int(getattr(config, "pad_token_id", 1) or 0) + 1
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < limit:
        limit = tokenizer_limit
    return limit


def special_tokens(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after a single sentence (``[CLS]``, ``[SEP]``)."""
    enc = encode_words(tokenizer, ["a"], special_tokens=True)
    ids, words = list(enc["input_ids"]), enc.word_ids()
    inside = [i for i, w in enumerate(words) if w is not None]
    return ids[: inside[0]], ids[inside[-1] + 1 :]


def check_pretrained_folder(path: str | None) -> Path:
    """``path`` as a folder holding a config, weights and tokenizer files, or a clear ModelError."""
    if not path:
        raise ModelError("the bert encoder needs a pretrained model folder: --pretrained PATH "
                         "(or encoder_config pretrained)")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ModelError(f"--pretrained {path}: not a folder (models load from local folders only, never the hub)")
    if not (folder / "config.json").is_file():
        raise ModelError(f"{folder}: no config.json; expected a folder written by save_pretrained")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise ModelError(f"{folder}: no weights ({' or '.join(WEIGHT_FILES[::2])})")
    return folder


def load_tokenizer(folder: Path) -> Any:
    """The fast tokenizer of ``folder`` (ModelError when there is none)."""
    from transformers import AutoTokenizer

    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ModelError(f"{folder}: no tokenizer files; a fast tokenizer (tokenizer.json) is needed "
                         "to align subwords with words")
    with quiet_transformers():
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, use_fast=True)
        except (OSError, ValueError) as exc:
            raise ModelError(f"{folder}: cannot load a fast tokenizer: {exc}") from None
    check_fast(tokenizer)
    return tokenizer


def load_pretrained(model_class: Any, folder: Path, what: str) -> Any:
    """``model_class.from_pretrained(folder)`` from local files only, a load failure as one ``ModelError``."""
    with quiet_transformers():
        try:
            return model_class.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelError(f"{folder}: cannot load {what}: {exc}") from None


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports (the dropped MLM head and pooler are expected)."""
    from transformers.utils import logging

    level, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        if bars:
            logging.enable_progress_bar()
