"""Tiny random BERT folders for tests, saved and loaded through the real ``from_pretrained`` path.

:func:`build_tiny_bert` writes a WordPiece ``vocab.txt`` (special tokens, :data:`WORDS`,
:data:`PIECES`, :data:`CHINESE`), a random ``BertForMaskedLM`` (hidden 32, 2 layers, 2 heads)
and a fast tokenizer (``tokenizer.json``, ``BertTokenizerFast``) into one folder, so the folder loads with
``AutoModel``/``AutoModelForMaskedLM``/``AutoTokenizer.from_pretrained``. The conftest
fixture ``tiny_bert_dir`` builds one per test session; build your own with other words
or sizes when a test needs them (``build_tiny_bert(tmp_path, words=[...], num_hidden_layers=3)``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
#: whole words the tests use (lower-case: the tokenizer lower-cases)
WORDS = [
    "the", "a", "cat", "dog", "sat", "on", "mat", "ran", "home", "is", "was", "and", "of", "in",
    "to", "it", "big", "small", "house", "green", "un", "walk", "play", "happy",
    ".", ",", "!", "?", "'", "\"", "-", ":", ";", "(", ")",
]  # fmt: skip
#: continuation pieces, so words like "unhappy" or "walking" split into several subwords
PIECES = ["##happy", "##ing", "##ed", "##s", "##ly", "##er"]
#: Chinese characters (BERT tokenizers split CJK characters into single-character words)
CHINESE = list("我们的中国人他是在有这个大学生今天天气很好北京上海和了不")


def write_vocab(path: Path, words: Iterable[str] = ()) -> list[str]:
    """Write a WordPiece ``vocab.txt`` with the defaults plus ``words``; return the vocabulary."""
    vocab: list[str] = []
    for token in [*SPECIALS, *WORDS, *PIECES, *CHINESE, *words]:
        if token not in vocab:
            vocab.append(token)
    path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return vocab


def build_tiny_bert(
    folder: Path,
    *,
    words: Iterable[str] = (),
    seed: int = 0,
    num_hidden_layers: int = 2,
    hidden_size: int = 32,
    **config,
) -> Path:
    """Save a random tiny ``BertForMaskedLM`` and its fast tokenizer into ``folder``."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = write_vocab(folder / "vocab.txt", words)
    settings = dict(
        vocab_size=len(vocab),
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=128,
        type_vocab_size=2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    settings.update(config)
    torch.manual_seed(seed)
    model = BertForMaskedLM(BertConfig(**settings))
    model.save_pretrained(folder)
    # from the folder's vocab.txt: transformers 5 ignores BertTokenizerFast(vocab_file=...)
    tokenizer = BertTokenizerFast.from_pretrained(folder, do_lower_case=True)
    if len(tokenizer) != len(vocab):
        raise RuntimeError(f"tokenizer has {len(tokenizer)} tokens, vocab.txt {len(vocab)}")
    tokenizer.save_pretrained(folder)
    return folder


def build_tiny_roformer(folder: Path, *, seed: int = 0, hidden_size: int = 32, **config) -> Path:
    """Save a random tiny ``RoFormerModel`` (rotary positions) with a WordPiece fast tokenizer into ``folder``.

    RoFormer's own tokenizer pre-segments Chinese with rjieba, which is not installed here; the folder's
    ``tokenizer_config.json`` names ``BertTokenizer`` instead (RoFormer checkpoints use a BERT WordPiece
    vocabulary), so ``AutoTokenizer`` loads a fast WordPiece tokenizer over the same ``vocab.txt``.
    """
    import torch
    from transformers import BertTokenizerFast, RoFormerConfig, RoFormerModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = write_vocab(folder / "vocab.txt")
    settings = dict(vocab_size=len(vocab), embedding_size=hidden_size, hidden_size=hidden_size, num_hidden_layers=2,
                    num_attention_heads=2, intermediate_size=37, max_position_embeddings=128,
                    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    settings.update(config)
    torch.manual_seed(seed)
    RoFormerModel(RoFormerConfig(**settings)).save_pretrained(folder)
    BertTokenizerFast.from_pretrained(folder, do_lower_case=True).save_pretrained(folder)
    return folder
