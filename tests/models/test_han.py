"""HAN model and its family on the debian-docs fixture."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from models import checkpoint
from models.attention import own_attention_names
from models.data import debian
from models.families.base import TaskData, get_family
from models.families.classify import HanFamily
from models.han import HAN, HANConfig
from models.recipes import Recipe, TrainConfig
from runtime.text import PAD_ID

FIXTURE = Path(__file__).parents[1] / "fixtures" / "debian-docs-sample.jsonl"


@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors on a shared box: one thread is faster and steadier."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_model(attention: str = "additive", **kw: object) -> HAN:
    torch.manual_seed(0)
    cfg = HANConfig(
        vocab=40,
        num_classes=3,
        emb_dim=8,
        hidden=6,
        attention=attention,
        attn_hidden=8,
        dropout=0.0,
        **kw,
    )
    return HAN(cfg).eval()


def make_batch(lengths: list[list[int]], S: int | None = None, W: int | None = None):
    """ids [B, S, W] and masks for docs given as lists of sentence lengths."""
    gen = torch.Generator().manual_seed(1)
    S = S or max(len(doc) for doc in lengths)
    W = W or max(n for doc in lengths for n in doc)
    ids = torch.full((len(lengths), S, W), PAD_ID, dtype=torch.long)  # [B, S, W]
    for b, doc in enumerate(lengths):
        for s, n in enumerate(doc):
            ids[b, s, :n] = torch.randint(4, 40, (n,), generator=gen)
    word_mask = ids != PAD_ID  # [B, S, W]
    return ids, word_mask, word_mask.any(-1)


DOCS = [[3, 5], [4, 1, 6, 2], [2]]


@pytest.mark.parametrize("max_pool", [False, True])
@pytest.mark.parametrize("attention", own_attention_names())
def test_shapes_and_distributions(attention: str, max_pool: bool) -> None:
    model = small_model(attention, max_pool=max_pool)
    ids, word_mask, sent_mask = make_batch(DOCS)
    with torch.no_grad():
        logits, word_attn, sent_attn = model(ids, word_mask, sent_mask)
    assert logits.shape == (3, 3)
    assert word_attn.shape == (3, 4, 6)
    assert sent_attn.shape == (3, 4)
    for t in (logits, word_attn, sent_attn):
        assert torch.isfinite(t).all()
    # Word weights: a distribution over each valid sentence's words, exactly 0 elsewhere.
    assert (word_attn[~word_mask] == 0).all()
    sums = word_attn.sum(-1)  # [B, S]
    assert torch.allclose(sums[sent_mask], torch.ones(int(sent_mask.sum())), atol=1e-5)
    assert (sums[~sent_mask] == 0).all()
    # Sentence weights: a distribution over valid sentences; padding sentences get 0.
    assert (sent_attn[~sent_mask] == 0).all()
    assert torch.allclose(sent_attn.sum(-1), torch.ones(3), atol=1e-5)


def test_sentence_without_words_gets_zero_weight() -> None:
    """A sentence marked valid whose words are all masked counts as padding."""
    model = small_model()
    ids, word_mask, sent_mask = make_batch(DOCS)
    sent_mask = torch.ones_like(sent_mask)  # claim every sentence is valid
    with torch.no_grad():
        logits, word_attn, sent_attn = model(ids, word_mask, sent_mask)
    assert torch.isfinite(logits).all()
    assert sent_attn[0, 2:].eq(0).all() and sent_attn[2, 1:].eq(0).all()
    assert word_attn[2, 1:].eq(0).all()


OPTIONS = [{}, {"max_pool": True}]


@pytest.mark.parametrize("options", OPTIONS)
def test_padding_invariance(options: dict) -> None:
    model = small_model(**options)
    alone = make_batch([DOCS[0]])
    padded = make_batch([DOCS[0], [7, 2, 9, 3, 5]])  # more sentences and longer ones
    assert torch.equal(padded[0][0, :2, :5], alone[0][0])
    with torch.no_grad():
        a_logits, a_words, a_sents = model(*alone)
        p_logits, p_words, p_sents = model(*padded)
    assert torch.allclose(a_logits[0], p_logits[0], atol=1e-5)
    assert torch.allclose(a_words[0], p_words[0, :2, :5], atol=1e-5)
    assert p_words[0, 2:].eq(0).all() and p_words[0, :, 5:].eq(0).all()
    assert torch.allclose(a_sents[0], p_sents[0, :2], atol=1e-5)
    assert p_sents[0, 2:].eq(0).all()


@pytest.mark.parametrize("options", OPTIONS)
def test_gradients_reach_every_parameter(options: dict) -> None:
    model = small_model(**options).train()
    ids, word_mask, sent_mask = make_batch(DOCS)
    logits, _, _ = model(ids, word_mask, sent_mask)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2])).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
        assert torch.isfinite(p.grad).all(), name


def test_config_errors() -> None:
    with pytest.raises(ValueError):
        HAN(HANConfig(vocab=10, num_classes=1))
    with pytest.raises(ValueError):
        HAN(HANConfig(vocab=10, num_classes=3, attention="nope"))


# --- the family ----------------------------------------------------------------------


def recipe(**train: object) -> Recipe:
    return Recipe(
        name="han-test",
        task="debian-docs",
        family="han",
        attention="additive",
        model={"emb_dim": 16, "hidden": 8, "attn_hidden": 16, "dropout": 0.0, "max_words": 12},
        train=TrainConfig(steps=10, **train),
    )


@pytest.fixture(scope="module")
def data() -> TaskData:
    docs = debian.load(FIXTURE)
    return TaskData(train=[d for d in docs if d.split == "train"], test=[d for d in docs if d.split == "test"])


@pytest.fixture()
def family(data: TaskData) -> HanFamily:
    torch.manual_seed(0)
    return HanFamily(recipe(), HanFamily.build_vocabs(data))


def test_registered() -> None:
    assert get_family("han") is HanFamily


def test_load_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(debian, "ensure", lambda path=None: FIXTURE)
    loaded = HanFamily.load_data(0)
    assert {d.split for d in loaded.train} == {"train"}
    assert {d.split for d in loaded.test} == {"test"}
    assert len(loaded.train) + len(loaded.test) == len(debian.load(FIXTURE))


def test_vocabs_and_config(family: HanFamily) -> None:
    assert family.labels == list(debian.LABELS)
    assert family.label_id("games") == 0
    cfg = family.model_config()
    assert cfg["num_classes"] == len(debian.LABELS)
    assert cfg["vocab"] == len(family.vocabs["words"])
    assert cfg["attention"] == "additive" and cfg["emb_dim"] == 16
    with pytest.raises(ValueError):
        family.label_id("kernel")


def test_batches(family: HanFamily, data: TaskData) -> None:
    batches = family.batches(data, batch_size=8, seed=0)
    seen = 0
    for _ in range(len(data.train) // 8):
        batch = next(batches)
        B, S, W = batch["ids"].shape
        assert B == 8 and W <= 12 and S <= 20
        assert batch["word_mask"].shape == (B, S, W) and batch["sent_mask"].shape == (B, S)
        assert torch.equal(batch["sent_mask"], batch["word_mask"].any(-1))
        assert batch["sent_mask"].all(-1).sum() >= 1  # some doc fills the bucket
        assert batch["labels"].min() >= 0 and batch["labels"].max() < len(debian.LABELS)
        seen += B
    assert seen == len(data.train)  # one epoch covers every doc once


def test_loss_predict_attention_map(family: HanFamily, data: TaskData) -> None:
    model = family.build_model(family.model_config())
    loss, acc = family.loss(model, next(family.batches(data, 8, 0)))
    assert math.isfinite(loss.item()) and 0 <= acc <= 1
    preds = family.predict(model, [family.source(d) for d in data.test])
    assert len(preds) == len(data.test) and set(preds) <= set(debian.LABELS)
    assert family.evaluate(model, data.test)["n"] == len(data.test)

    doc = data.test[0]
    amap = family.attention_map(model, family.source(doc))
    n = len(doc.sentences)
    assert len(amap.rows) == n and amap.weights.shape == (n, len(amap.cols))
    assert amap.prediction in debian.LABELS
    assert len(amap.extra["words"]) == n
    assert all(len(w) <= 12 for w in amap.extra["words"])
    assert sum(amap.extra["sentence_weights"]) == pytest.approx(1, abs=1e-5)
    assert sum(amap.extra["probabilities"].values()) == pytest.approx(1, abs=1e-5)
    assert amap.weights.sum(1) == pytest.approx([1.0] * n, abs=1e-5)


def test_parse_and_bad_inputs(family: HanFamily) -> None:
    text = "A small game.\nIt has levels. It is fun."
    assert family.parse(text) == text  # a document is its text, split as the server splits it
    words = [["a", "small", "game", "."], ["it", "has", "levels", "."], ["it", "is", "fun", "."]]
    assert family.tokenize(text) == words
    doc = debian.load(FIXTURE)[0]
    assert family.target(doc) in debian.LABELS
    assert family.tokenize(family.source(doc)) == family.tokenize("\n\n".join(doc.sentences))
    with pytest.raises(ValueError):
        family.parse("")
    with pytest.raises(ValueError):
        family.encode([" \n\n  . "])


@pytest.mark.integration  # trains a model
def test_training_lowers_loss_and_roundtrips(family: HanFamily, data: TaskData, tmp_path) -> None:
    torch.manual_seed(0)
    model = family.build_model(family.model_config())
    fixed = next(family.batches(data, len(data.train), 0))
    with torch.no_grad():
        before = family.loss(model, fixed)[0].item()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    batches = family.batches(data, len(data.train), 0)
    for _ in range(30):
        loss, _ = family.loss(model, next(batches))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        after = family.loss(model, fixed)[0].item()
    assert after < 0.5 * before

    raws = [family.source(d) for d in data.test]
    checkpoint.save(tmp_path, family.recipe, family, model, family.model_config(), {})
    loaded = checkpoint.load(tmp_path)
    assert loaded.family.labels == family.labels
    assert loaded.family.predict(loaded.model, raws) == family.predict(model, raws)
