"""The BiLSTM encoder: vocabularies, batches, shapes, determinism, saving, vectors, learning."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from tagpipe.errors import CorpusError
from tagpipe.plugins.encoders.bilstm import BiLSTMEncoder
from tagpipe.plugins.encoders.token_features import CASINGS, PAD, UNK, casing
from tagpipe.plugins.encoders.vectors import read_word_vectors

CORPUS = [
    ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."],
    ["Peter", "Blackburn"],
    ["BRUSSELS", "1996-08-22"],
    ["The", "European", "Commission", "said", "on", "Thursday", "it", "disagreed", "."],
]
TINY = {"word_dim": 8, "char_dim": 6, "char_hidden": 5, "casing_dim": 3, "hidden": 7}


def build(**config) -> BiLSTMEncoder:
    torch.manual_seed(0)
    return BiLSTMEncoder.from_corpus(CORPUS, **{**TINY, **config})


def token_chars(feats, b: int, t: int):
    """The char ids of token ``t`` of sentence ``b`` (one row per distinct token)."""
    return feats["char_ids"][feats["char_index"][b, t]]


def test_repeated_tokens_share_one_char_row_with_the_same_features_as_per_token():
    enc = build(dropout=0.0, word_dropout=0)  # training mode then differs only in the char path
    sentences = [["the", "cat", "saw", "the", "Cat"], ["the", "end"]]
    feats = enc.featurize(sentences)
    assert feats["char_ids"].shape[0] == 5  # the, cat, saw, Cat, end
    assert feats["char_index"][0, 0] == feats["char_index"][0, 3] == feats["char_index"][1, 0]
    with torch.no_grad():
        torch.testing.assert_close(enc.eval()(feats), enc.train()(feats))  # distinct-word vs per-token path


def test_registered_without_importing_torch_eagerly():
    from tagpipe.host import get_registry

    entry = get_registry().entry("encoder", "tagpipe.bilstm.v1")
    assert entry.factory == "tagpipe.plugins.encoders.bilstm:BiLSTMEncoder"
    assert entry.load() is BiLSTMEncoder


def test_unknown_or_bad_config_is_refused():
    with pytest.raises(ValueError, match="hiden"):
        BiLSTMEncoder.from_corpus(CORPUS, hiden=3)
    with pytest.raises(ValueError, match="char_encoder"):
        BiLSTMEncoder.from_corpus(CORPUS, char_encoder="gru")


def test_featurize_shapes_and_padding():
    enc = build()
    feats = enc.featurize([CORPUS[1], CORPUS[0]])
    assert feats["word_ids"].shape == feats["casing"].shape == (2, 9)
    # one row per distinct token, as wide as the longest word + BOW/EOW
    assert feats["char_ids"].shape == (11, len("Blackburn") + 2)
    assert feats["char_index"].shape == (2, 9) and (feats["char_index"][0, 2:] == 0).all()
    assert feats["lengths"].tolist() == [2, 9]
    assert all(t.dtype == torch.long for t in feats.values())
    assert (feats["word_ids"][0, 2:] == PAD).all()
    assert (feats["word_ids"][1] != PAD).all()
    peter = token_chars(feats, 0, 0)
    assert [enc.chars[i] for i in peter[1:6]] == list("Peter") and (peter[7:] == PAD).all()


def test_words_are_lowercased_and_digits_zeroed_but_chars_keep_case():
    enc = build()
    feats = enc.featurize([["german", "GERMAN", "1997-01-01"]])
    word_ids = feats["word_ids"][0].tolist()
    assert word_ids[0] == word_ids[1] == enc.word_index["german"]
    assert word_ids[2] == enc.word_index["0000-00-00"]
    assert [CASINGS[i] for i in feats["casing"][0]] == ["lower", "upper", "has_digit"]
    assert casing("Peter") == CASINGS.index("title") and casing("McDonald") == CASINGS.index("mixed")
    assert casing(".") == CASINGS.index("no_letters") and casing("1996") == CASINGS.index("numeric")


def test_unknown_words_and_chars_map_to_unk():
    enc = build()
    feats = enc.featurize([["zebra", "Ωmega"]])
    assert feats["word_ids"][0].tolist() == [UNK, UNK]
    assert token_chars(feats, 0, 1)[1].item() == UNK  # "Ω" never seen
    assert token_chars(feats, 0, 1)[2].item() == enc.char_index["m"]


def test_long_words_keep_both_ends():
    enc = build(max_word_len=6)
    chars = token_chars(enc.featurize([["boycotting"]]), 0, 0)
    assert chars.shape == (8,)
    assert "".join(enc.chars[i] for i in chars[1:-1]) == "boying"


@pytest.mark.parametrize("char_encoder", ["cnn", "lstm"])
@pytest.mark.parametrize("layers", [1, 2])
def test_forward_shapes_with_an_empty_sentence(char_encoder, layers):
    enc = build(char_encoder=char_encoder, layers=layers).eval()
    out = enc(enc.featurize([CORPUS[0], [], CORPUS[2]]))
    assert out.shape == (3, 9, enc.output_dim) and enc.output_dim == 14
    assert (out[1] == 0).all() and (out[2, 2:] == 0).all()
    assert torch.isfinite(out).all()
    assert enc(enc.featurize([[], []])).shape == (2, 0, 14)
    assert enc(enc.featurize([])).shape == (0, 0, 14)


def test_char_cnn_over_words_laid_end_to_end_equals_each_word_convolved_alone():
    from tagpipe.plugins.encoders.token_features import CharCNN

    torch.manual_seed(0)
    cnn = CharCNN(20, 6, 5, dropout=0.0)
    lengths = [2, 7, 3, 12, 2]  # BOW/EOW included; the longest word sets the padding of the others
    chars = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for row, n in enumerate(lengths):
        chars[row, :n] = torch.randint(4, 20, (n,))
    for row, n in enumerate(lengths):
        alone = cnn.conv(cnn.embed(chars[row : row + 1, :n]).transpose(1, 2)).amax(dim=2)[0]
        torch.testing.assert_close(cnn(chars)[row], alone)
    assert cnn(chars[:0]).shape == (0, 5)


def test_char_cnn_gradients_are_the_same_every_time():
    """amax's backward counts ties with the output buffer's own values, so that buffer must not be
    uninitialised memory (a recycled one held the last pass's maxima and halved gradients at random;
    the transformer's gradient-checkpointing test caught it about one run in three)."""
    enc = build().train()
    features = enc.featurize(CORPUS)

    def grads() -> list[torch.Tensor]:
        enc.zero_grad()
        torch.manual_seed(5)
        enc(features).square().sum().backward()
        return [p.grad.clone() for p in enc.char_encoder.parameters()]

    first = grads()
    for _ in range(30):
        for a, b in zip(grads(), first, strict=True):
            assert torch.equal(a, b)


def test_a_sentence_gives_the_same_features_alone_or_padded():
    enc = build().eval()
    alone = enc(enc.featurize([CORPUS[1]]))[0]
    padded = enc(enc.featurize([CORPUS[0], CORPUS[1]]))[1, :2]
    torch.testing.assert_close(alone, padded)


def test_word_dropout_only_in_training():
    enc = build(word_dropout=1e9, dropout=0.0)  # P(unk) = 1 in float32 for every training word
    feats = enc.featurize([CORPUS[0]])
    unk_only = enc.featurize([["qqq"] * 9])
    for name in ("char_ids", "char_index", "casing"):
        unk_only[name] = feats[name]
    torch.testing.assert_close(enc.train()(feats), enc(unk_only))
    enc.eval()
    first = enc(feats)
    torch.testing.assert_close(first, enc(feats))
    assert not torch.allclose(first, enc(unk_only))


def test_save_and_load_round_trip(tmp_path):
    enc = build(char_encoder="lstm").eval()
    enc.save_assets(tmp_path)
    loaded = BiLSTMEncoder.from_assets(tmp_path, enc.config())
    loaded.load_state_dict(enc.state_dict())
    loaded.eval()
    batch = [CORPUS[3], ["unseen", "Words"], []]
    for key, value in enc.featurize(batch).items():
        assert torch.equal(value, loaded.featurize(batch)[key]), key
    torch.testing.assert_close(enc(enc.featurize(batch)), loaded(loaded.featurize(batch)))
    assert "unk_prob" not in enc.state_dict()


def test_bigrams_pair_each_token_with_its_right_neighbour():
    chars = [list("北京大学"), list("北京"), list("大学生")]
    enc = BiLSTMEncoder.from_corpus(chars, **TINY, bigram_dim=4, bigram_min_count=2).eval()
    assert enc.bigrams[2:] == ["北\t京", "大\t学"]  # seen twice; "京\t</s>" once, "京\t大" once: UNK
    ids = enc.featurize([list("北京大"), list("学")])["bigram_ids"]
    g = enc.bigram_index
    assert ids.tolist() == [[g["北\t京"], UNK, UNK], [UNK, PAD, PAD]]
    assert enc(enc.featurize(chars)).shape == (3, 4, 14)
    assert enc.lstm.input_size == 8 + 5 + 3 + 4


def test_bigrams_survive_save_and_load(tmp_path):
    enc = build(bigram_dim=3, bigram_min_count=1).eval()
    enc.save_assets(tmp_path)
    loaded = BiLSTMEncoder.from_assets(tmp_path, enc.config())
    loaded.load_state_dict(enc.state_dict())
    batch = [CORPUS[0], ["unseen", "call", "to"]]
    assert torch.equal(enc.featurize(batch)["bigram_ids"], loaded.featurize(batch)["bigram_ids"])
    torch.testing.assert_close(enc(enc.featurize(batch)), loaded.eval()(loaded.featurize(batch)))
    with pytest.raises(ValueError, match="bigram_dim"):
        build(bigram_dim=-1)


def test_pretrained_vectors_end_up_in_the_embeddings(tmp_path):
    path = tmp_path / "vectors.txt"
    path.write_text("4 3\nGerman 1 2 3\ngerman 9 9 9\nzebra 0.5 0.5 0.5\nlamb -1 0 1\n", encoding="utf-8")
    enc = BiLSTMEncoder.from_corpus(CORPUS, pretrained_vectors=str(path), pretrained_limit=1, hidden=4,
                                    lowercase=True)  # a cased file would otherwise be looked up cased
    assert enc.config()["word_dim"] == 3
    weight = enc.word_embed.weight
    # "German" normalises to "german" first, so its vector wins; "lamb" is a training word.
    assert weight[enc.word_index["german"]].tolist() == [1, 2, 3]
    assert weight[enc.word_index["lamb"]].tolist() == [-1, 0, 1]
    assert "zebra" not in enc.word_index  # neither a training word nor within pretrained_limit
    assert enc.word_index.keys() >= {w.lower() for s in CORPUS for w in s if not w[0].isdigit()}
    with pytest.raises(ValueError, match="word_dim"):
        BiLSTMEncoder.from_corpus(CORPUS, pretrained_vectors=str(path), word_dim=5)


def test_vectors_reader(tmp_path):
    path = tmp_path / "glove.txt"
    path.write_text("the 0.1 0.2\nof 0.3 0.4\n\nNew York 1 2\n", encoding="utf-8")
    words, vectors = read_word_vectors(path)
    assert words == ["the", "of", "New York"] and vectors.shape == (3, 2)
    words, vectors = read_word_vectors(path, {"of"}, limit=1)
    assert words == ["the", "of"]


@pytest.mark.parametrize(
    "text, line, reason",
    [
        ("a 1 2\nb 1\nc 1 2\n", 2, "expected a word and 2 values"),
        ("2 2\na 1 2\nb 1 x\n", 3, "bad vector value"),
        ("a 1 2\nb \xff 2\n", 2, "not UTF-8"),
    ],
)
def test_malformed_vectors_file_names_the_line(tmp_path, text, line, reason):
    path = tmp_path / "bad.txt"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(CorpusError, match=reason) as info:
        read_word_vectors(path)
    assert info.value.line == line and str(path) in str(info.value)


def test_learns_to_tag_capitalised_words_it_never_saw():
    """Tag 1 = capitalised. Test words are unseen, so only chars/casing can tell."""
    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = ["".join(rng.choices(letters, k=rng.randint(2, 7))) for _ in range(300)]

    def sample(words, n):
        sentences = []
        for _ in range(n):
            tokens = [rng.choice(words) for _ in range(rng.randint(1, 8))]
            sentences.append([w.capitalize() if rng.random() < 0.3 else w for w in tokens])
        return sentences

    train, test = sample(vocab[:200], 400), sample(vocab[200:], 100)
    torch.manual_seed(0)
    enc = BiLSTMEncoder.from_corpus(train, **{**TINY, "hidden": 16, "char_hidden": 16})
    head = nn.Linear(enc.output_dim, 2)
    params = [*enc.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=0.01)

    def gold(batch, seq):
        tags = torch.full((len(batch), seq), -100)
        for i, s in enumerate(batch):
            tags[i, : len(s)] = torch.tensor([w[0].isupper() for w in s], dtype=torch.long)
        return tags

    for step in range(150):
        batch = train[(step * 16) % 400 :][:16]
        feats = enc.featurize(batch)
        logits = head(enc(feats))
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), gold(batch, logits.size(1)).flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    enc.eval()
    with torch.no_grad():
        feats = enc.featurize(test)
        pred = head(enc(feats)).argmax(-1)
    tags = gold(test, pred.size(1))
    accuracy = (pred == tags)[tags != -100].float().mean().item()
    assert accuracy > 0.95
