"""UniLM-style sequence-to-sequence on one BERT (``BertForMaskedLM``), by attention mask.

Source and target are packed into one row with segment ids (``token_type_ids``)::

    columns  0 .. S-1                          S .. S+T-1
    tokens   [CLS] source [SEP] [PAD]...       [BOS] t1 t2 ... tn [PAD]...
    segment  0 ...                             1 ...

The source region is padded to the batch's longest source, so every row's target starts at
column ``S``; position ids skip the padding (a row's target positions follow its own source).
The additive mask (:func:`~tagpipe.plugins.seq2seq.attention.unilm_mask`) lets source tokens see
the whole source and target tokens see the source plus the target tokens up to themselves. The
masked-LM head (its decoder tied to the word embeddings) reads the state at target column ``k``
and predicts target token ``k + 1`` (``[BOS]`` predicts ``t1``; ``tn`` predicts ``[SEP]``, the end of the output).

The layers run through :meth:`Seq2SeqModel.run_layers` on the HF modules' own weights, because
transformers' ``BertModel`` caches keys/values only with ``is_decoder=True``, which makes the
whole row causal (source included); running them ourselves gives one code path for training,
uncached and cached decoding (see :mod:`tagpipe.plugins.seq2seq.generation`).

A saved model folder is self-contained: ``config.json`` (``format_version``, ``task``: seq2seq,
length limits), ``encoder/`` (HF config and tokenizer; ``transformer/`` in older folders) and ``model.safetensors``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tagpipe.corpora.io import replacing, write_atomically
from tagpipe.errors import ModelError, TagpipeError
from tagpipe.model_folder import read_model_config
from tagpipe.names import CONFIG_FILE, WEIGHTS_FILE
from tagpipe.plugins.encoders.bert import (  # ASSETS_DIR: every task's folder keeps its transformer there
    ASSETS_DIR,
    check_pretrained_folder,
    load_pretrained,
    load_tokenizer,
    quiet_transformers,
)
from tagpipe.plugins.seq2seq.attention import KeyValues, Packed, unilm_mask

FORMAT_VERSION = 1
TASK = "seq2seq"
LEGACY_ASSETS_DIR = "transformer"  # what seq2seq folders saved before 0.2 hold: still read


@dataclass
class Seq2SeqConfig:
    """Length limits, in subwords: the source with ``[CLS]``/``[SEP]``, the target without ``[BOS]``."""

    max_source_length: int = 128
    max_target_length: int = 64

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> Seq2SeqConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in config.items() if k in known})


class Seq2SeqModel(nn.Module):
    """A ``BertForMaskedLM`` and its tokenizer, trained and decoded as a UniLM seq2seq model."""

    def __init__(self, mlm: nn.Module, tokenizer: Any, cfg: Seq2SeqConfig | None = None) -> None:
        super().__init__()
        self.mlm = mlm
        self.tokenizer = tokenizer
        self.cfg = cfg or Seq2SeqConfig()
        self.meta: dict[str, Any] = {}  # training settings and history, saved in config.json
        config = mlm.config
        limit = int(config.max_position_embeddings)
        if self.cfg.max_source_length + self.cfg.max_target_length + 1 > limit:
            raise ModelError(f"max_source_length ({self.cfg.max_source_length}) + max_target_length "
                             f"({self.cfg.max_target_length}) + 1 exceeds the model's {limit} positions")
        if int(getattr(config, "type_vocab_size", 0)) < 2:
            raise ModelError("the model needs two token types (segment ids) for source and target")
        self.heads = int(config.num_attention_heads)
        self.head_dim = int(config.hidden_size) // self.heads
        self.cls_id, self.sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
        self.pad_id = tokenizer.pad_token_id or 0
        self.bos_id = self.cls_id  # first target input; its state predicts t1
        self.eos_id = self.sep_id

    # -- building and saving ---------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | Path, **config: Any) -> Seq2SeqModel:
        """A fresh model from a local HF folder; a missing MLM head (MiniLM) is initialised."""
        from transformers import BertForMaskedLM

        folder = check_pretrained_folder(str(path))
        tokenizer = load_tokenizer(folder)
        mlm = load_pretrained(BertForMaskedLM, folder, "a BERT masked LM")
        if mlm.get_output_embeddings().weight is not mlm.get_input_embeddings().weight:
            mlm.tie_weights()
        return cls(mlm, tokenizer, Seq2SeqConfig.from_dict(config))

    def save(self, path: str | Path) -> None:
        """Write the self-contained model folder; config.json last, so a crash keeps the old one."""
        from safetensors.torch import save_model

        folder = Path(path)
        (folder / ASSETS_DIR).mkdir(parents=True, exist_ok=True)
        self.mlm.config.save_pretrained(folder / ASSETS_DIR)
        self.tokenizer.save_pretrained(folder / ASSETS_DIR)
        with replacing(folder / WEIGHTS_FILE) as tmp:
            save_model(self.mlm, str(tmp))  # drops the tied decoder copy
        config = {"format_version": FORMAT_VERSION, "task": TASK, **asdict(self.cfg), "meta": self.meta}
        write_atomically(folder / CONFIG_FILE, json.dumps(config, indent=2))

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> Seq2SeqModel:
        """A model saved by :meth:`save`, or a clear ``ModelError``."""
        from safetensors.torch import load_model
        from transformers import AutoConfig, BertForMaskedLM

        folder = Path(path)
        assets = ASSETS_DIR if (folder / ASSETS_DIR).is_dir() or not (folder / LEGACY_ASSETS_DIR).is_dir() \
            else LEGACY_ASSETS_DIR
        config = read_model_config(folder, task=TASK, format_version=FORMAT_VERSION,
                                   required=(WEIGHTS_FILE, f"{assets}/{CONFIG_FILE}"))
        with quiet_transformers():
            mlm = BertForMaskedLM(AutoConfig.from_pretrained(folder / assets, local_files_only=True))
        load_model(mlm, str(folder / WEIGHTS_FILE), device="cpu")
        mlm.tie_weights()
        model = cls(mlm, load_tokenizer(folder / assets), Seq2SeqConfig.from_dict(config))
        model.meta = dict(config.get("meta") or {})
        return model.to(device).eval()

    # -- batches ---------------------------------------------------------------------------
    def encode_sources(self, sources: Sequence[str]) -> list[list[int]]:
        """``[CLS] source [SEP]`` ids, truncated to ``max_source_length``."""
        enc = self.tokenizer(list(sources), truncation=True, max_length=self.cfg.max_source_length)
        return [list(ids) for ids in enc["input_ids"]]

    def encode_targets(self, targets: Sequence[str]) -> list[list[int]]:
        """Target ids without specials, truncated to ``max_target_length - 1`` (room for ``[SEP]``)."""
        enc = self.tokenizer(list(targets), add_special_tokens=False, truncation=True,
                             max_length=self.cfg.max_target_length - 1)
        return [list(ids) for ids in enc["input_ids"]]

    def pack(self, sources: Sequence[list[int]], targets: Sequence[list[int]]) -> Packed:
        """Pack source ids and target *input* ids (``[BOS] t1 .. tk``) into ``[N, S + T]`` rows."""
        width = max(len(s) for s in sources)
        tlen = max(len(t) for t in targets)
        n = len(sources)
        ids = torch.full((n, width + tlen), self.pad_id, dtype=torch.long)
        segment = torch.zeros((n, width + tlen), dtype=torch.long)
        segment[:, width:] = 1
        positions = torch.zeros_like(ids)
        valid = torch.zeros((n, width + tlen), dtype=torch.bool)
        for b, (src, tgt) in enumerate(zip(sources, targets, strict=True)):
            ids[b, : len(src)] = torch.tensor(src)
            ids[b, width : width + len(tgt)] = torch.tensor(tgt, dtype=torch.long)
            positions[b, : len(src)] = torch.arange(len(src))
            positions[b, width : width + len(tgt)] = torch.arange(len(src), len(src) + len(tgt))
            valid[b, : len(src)] = True
            valid[b, width : width + len(tgt)] = True
        return Packed(ids, segment, positions, valid, width)

    # -- the network -------------------------------------------------------------------------
    def embed(self, input_ids: Tensor, segment_ids: Tensor, position_ids: Tensor) -> Tensor:
        """``[N, L, H]`` BERT embeddings (word + segment + position, LayerNorm, dropout)."""
        return self.mlm.bert.embeddings(input_ids=input_ids, token_type_ids=segment_ids, position_ids=position_ids)

    def run_layers(self, hidden: Tensor, mask: Tensor, past: KeyValues | None = None) -> tuple[Tensor, KeyValues]:
        """The encoder layers over ``hidden`` ``[N, Lq, H]``; returns ``[N, Lq, H]`` and the keys/values.

        ``mask`` ``[N, 1, Lq, Lp + Lq]`` is additive over the ``Lp`` cached positions of ``past``
        (each ``[N, heads, Lp, head_dim]``) followed by the ``Lq`` new ones.
        """
        present: KeyValues = []
        n, length, _ = hidden.shape
        for i, layer in enumerate(self.mlm.bert.encoder.layer):
            attn = layer.attention.self
            q = attn.query(hidden).view(n, length, self.heads, self.head_dim).transpose(1, 2)  # shape: [N, h, Lq, d]
            k = attn.key(hidden).view(n, length, self.heads, self.head_dim).transpose(1, 2)
            v = attn.value(hidden).view(n, length, self.heads, self.head_dim).transpose(1, 2)
            if past is not None:
                k = torch.cat([past[i][0], k], dim=2)  # shape: [N, h, Lp + Lq, d]
                v = torch.cat([past[i][1], v], dim=2)
            present.append((k, v))
            scores = torch.matmul(q, k.transpose(2, 3)) * self.head_dim**-0.5 + mask  # shape: [N, h, Lq, Lk]
            probs = attn.dropout(torch.softmax(scores, dim=-1))
            context = torch.matmul(probs, v).transpose(1, 2).reshape(n, length, -1)  # shape: [N, Lq, H]
            hidden = layer.attention.output(context, hidden)
            hidden = layer.output(layer.intermediate(hidden), hidden)
        return hidden, present

    def lm_logits(self, hidden: Tensor) -> Tensor:
        """``[..., H]`` states -> ``[..., V]`` logits of the (tied) masked-LM head."""
        return self.mlm.cls(hidden)

    def forward_packed(self, packed: Packed) -> tuple[Tensor, KeyValues]:
        """Target-column logits ``[N, T, V]`` of a packed batch, and every layer's keys/values."""
        hidden = self.embed(packed.input_ids, packed.segment_ids, packed.position_ids)
        mask = unilm_mask(packed.segment_ids, packed.valid, hidden.dtype)
        hidden, present = self.run_layers(hidden, mask)
        return self.lm_logits(hidden[:, packed.source_width :]), present

    def loss(self, sources: Sequence[str], targets: Sequence[str]) -> Tensor:
        """Mean cross-entropy of each next target token (``[SEP]`` ends the output); a scalar."""
        src = self.encode_sources(sources)
        tgt = self.encode_targets(targets)
        packed = self.pack(src, [[self.bos_id, *t] for t in tgt])
        labels = torch.full(packed.input_ids[:, packed.source_width :].shape, -100, dtype=torch.long)
        for b, t in enumerate(tgt):
            labels[b, : len(t) + 1] = torch.tensor([*t, self.eos_id])
        device = self.device
        packed = Packed(packed.input_ids.to(device), packed.segment_ids.to(device), packed.position_ids.to(device),
                        packed.valid.to(device), packed.source_width)
        logits, _ = self.forward_packed(packed)  # shape: [N, T, V]
        return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.to(device).reshape(-1))

    @property
    def device(self) -> torch.device:
        return next(self.mlm.parameters()).device

    def decode_ids(self, ids: Sequence[int]) -> str:
        """Generated ids (without ``[SEP]``) as text."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=True)

    def generate(self, sources: Sequence[str], **options: Any) -> list[str]:
        """Texts generated for ``sources`` (options: :func:`tagpipe.plugins.seq2seq.generation.generate`)."""
        from tagpipe.plugins.seq2seq.generation import generate

        return [self.decode_ids(ids) for ids in generate(self, sources, **options)]


# -- data and training -----------------------------------------------------------------------
def read_pairs(path: str | Path, *, need_target: bool = True) -> list[dict[str, Any]]:
    """JSON Lines records with a string ``source`` (and ``target``); a ``CorpusError`` names the line."""
    from tagpipe.errors import CorpusError

    records = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CorpusError(str(path), number, f"not JSON: {exc.msg}") from None
            keys = ("source", "target") if need_target else ("source",)
            if not isinstance(record, dict) or not all(isinstance(record.get(k), str) for k in keys):
                raise CorpusError(str(path), number, f"expected an object with string {' and '.join(keys)}")
            records.append(record)
    return records


#: what ``load_pairs`` reads: JSONL pairs, or a WebNLG file turned into pairs one way or the other
PAIR_FORMATS = ("jsonl", "webnlg-text2triples", "webnlg-triples2text")


def load_pairs(path: str | Path, format: str = "jsonl") -> list[dict[str, Any]]:
    """Source/target pairs of ``path``: JSONL (:func:`read_pairs`), or a WebNLG JSON file as
    ``webnlg-text2triples`` (text -> linearised triples) / ``webnlg-triples2text`` pairs."""
    if format == "jsonl":
        return read_pairs(path)
    if format not in PAIR_FORMATS:
        raise TagpipeError(f"seq2seq pairs are read as --format {', '.join(PAIR_FORMATS)}, not {format!r}")
    from tagpipe.corpora.webnlg import webnlg_pairs

    return webnlg_pairs(path, format.removeprefix("webnlg-"))


def train_seq2seq(*, train: str | Path, output: str | Path, pretrained: str | Path, dev: str | Path | None = None,
                  epochs: int = 3, batch_size: int = 16, lr: float = 5e-5, max_source_length: int = 128,
                  max_target_length: int = 64, seed: int = 0, device: str = "cpu", format: str = "jsonl",
                  log: Any = print) -> dict[str, Any]:
    """Fine-tune ``pretrained`` on source/target pairs (``format``: :data:`PAIR_FORMATS`) and save to
    ``output``.

    AdamW with linear decay and gradient clipping at 1.0; with ``dev``, the model with the
    lowest dev loss is kept, else the last one. Returns the loss history.
    """
    pairs = load_pairs(train, format)
    dev_pairs = load_pairs(dev, format) if dev is not None else []
    if not pairs:
        raise ModelError(f"{train}: no training pairs")
    torch.manual_seed(seed)
    model = Seq2SeqModel.from_pretrained(pretrained, max_source_length=max_source_length,
                                         max_target_length=max_target_length).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    steps = epochs * ((len(pairs) + batch_size - 1) // batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: max(0.0, 1.0 - s / max(steps, 1)))
    order = torch.Generator().manual_seed(seed)
    history: dict[str, Any] = {"train_loss": [], "dev_loss": []}
    best = float("inf")
    for epoch in range(1, epochs + 1):
        model.train()
        total = 0.0
        perm = torch.randperm(len(pairs), generator=order).tolist()
        for start in range(0, len(perm), batch_size):
            batch = [pairs[i] for i in perm[start : start + batch_size]]
            loss = model.loss([p["source"] for p in batch], [p["target"] for p in batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            total += loss.item() * len(batch)
        history["train_loss"].append(total / len(pairs))
        message = f"epoch {epoch}: train loss {history['train_loss'][-1]:.4f}"
        if dev_pairs:
            history["dev_loss"].append(evaluate_loss(model, dev_pairs, batch_size))
            message += f", dev loss {history['dev_loss'][-1]:.4f}"
        log(message)
        if not dev_pairs or history["dev_loss"][-1] < best:
            best = history["dev_loss"][-1] if dev_pairs else best
            model.meta = {"trained_from": Path(pretrained).name, "format": format, "epochs": epoch, "lr": lr,
                          "batch_size": batch_size, "seed": seed, **history}
            model.save(output)
    return history


def evaluate_loss(model: Seq2SeqModel, pairs: Sequence[dict[str, Any]], batch_size: int = 16) -> float:
    """Mean per-pair loss over ``pairs`` (no gradients, eval mode)."""
    model.eval()
    total = 0.0
    with torch.inference_mode():
        for start in range(0, len(pairs), batch_size):
            batch = pairs[start : start + batch_size]
            total += float(model.loss([p["source"] for p in batch], [p["target"] for p in batch])) * len(batch)
    return total / max(len(pairs), 1)
