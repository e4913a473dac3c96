"""Tests for the pointer network and its family on the sorting task."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

import pytest
import torch

from models.data import sorting
from models.families.base import get_family
from models.families.pointer import PointerFamily
from models.pointer import PointerConfig, PointerNet
from models.recipes import Recipe, TrainConfig

LENGTHS = [5, 9, 7, 3]  # mixed lengths, so rows are padded differently


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """The box is shared: spinning extra intra-op threads only slows everyone down."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _recipe(**model: int) -> Recipe:
    return Recipe(
        name="sort-pointer-test",
        task="sorting",
        family="pointer",
        attention="additive",
        model={"emb_dim": 16, "hidden": 32, "attn_hidden": 32, **model},
        train=TrainConfig(steps=60, batch_size=32, lr=3e-3),
    )


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rng = random.Random(seed)
    examples = [sorting.sample(rng, n) for n in LENGTHS]
    values, mask = PointerFamily.encode_values([v for v, _ in examples])
    order = torch.zeros_like(values)
    for i, (_, o) in enumerate(examples):
        order[i, : len(o)] = torch.tensor(o)
    return values, mask, order


def _model(glimpse: bool = False, attention: str = "additive") -> PointerNet:
    torch.manual_seed(0)
    config = PointerConfig(emb_dim=16, hidden=32, attn_hidden=32, attention=attention, glimpse=glimpse)
    return PointerNet(config).eval()


@pytest.mark.parametrize("glimpse", [False, True])
def test_shapes(glimpse: bool) -> None:
    model = _model(glimpse)
    values, mask, order = _batch()
    B, N = values.shape
    memory, state = model.encode(values, mask)
    assert memory.shape == (B, N, 32) and state.shape == (B, 32)
    logits, attn = model(values, mask, order)
    assert logits.shape == attn.shape == (B, N, N)
    pred, gattn = model.greedy(values, mask)
    assert pred.shape == (B, N) and pred.dtype == torch.long and gattn.shape == (B, N, N)


@pytest.mark.parametrize("glimpse", [False, True])
def test_decode_steps_reproduce_forward(glimpse: bool) -> None:
    model = _model(glimpse)
    values, mask, order = _batch(1)
    logits, attn = model(values, mask, order)
    memory, state = model.encode(values, mask)
    chosen = torch.zeros_like(mask)
    prev = torch.full((values.size(0),), -1)
    positions = torch.arange(values.size(1))
    for t in range(values.size(1)):
        step_logits, state, weights = model.decode_step(prev, state, memory, mask & ~chosen)
        assert torch.equal(step_logits, logits[:, t])
        assert torch.equal(weights, attn[:, t])
        prev = order[:, t]
        chosen |= positions == prev[:, None]


def test_attention_is_distribution_over_available_positions() -> None:
    model = _model()
    values, mask, order = _batch(2)
    _, attn = model(values, mask, order)  # [B, N, N]
    lengths = mask.sum(1)
    for b, n in enumerate(lengths.tolist()):
        chosen = torch.zeros(values.size(1), dtype=torch.bool)
        for t in range(values.size(1)):
            row = attn[b, t]
            if t < n:
                avail = mask[b] & ~chosen
                assert torch.allclose(row.sum(), torch.tensor(1.0))
                assert torch.all(row[~avail] == 0)
                chosen[order[b, t]] = True
            else:
                assert torch.all(row == 0)  # nothing left to point at


def test_greedy_is_permutation_of_valid_positions() -> None:
    model = _model()
    values, mask, _ = _batch(3)
    pred, attn = model.greedy(values, mask)
    for b, n in enumerate(mask.sum(1).tolist()):
        assert sorted(pred[b, :n].tolist()) == list(range(n))
        assert torch.all(pred[b, n:] == -1)
        assert torch.all(attn[b, n:] == 0)
        # the attention puts zero weight on positions already emitted
        for t in range(1, n):
            assert torch.all(attn[b, t, pred[b, :t]] == 0)


def test_gradients_reach_every_parameter() -> None:
    family = PointerFamily(_recipe(glimpse=True), {})
    model = family.build_model(family.model_config()).train()
    values, mask, order = _batch(4)
    loss, _ = family.loss(model, {"values": values, "mask": mask, "order": order})
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_attention_without_scores_is_rejected() -> None:
    with pytest.raises(ValueError, match="no scores"):
        PointerNet(PointerConfig(hidden=32, attention="multihead"))


def test_family_registered_and_config_round_trips() -> None:
    assert get_family("pointer") is PointerFamily
    family = PointerFamily(_recipe(), {})
    config = family.model_config()
    assert config["max_value"] == sorting.MAX_VALUE and config["hidden"] == 32
    assert isinstance(family.build_model(config), PointerNet)


@pytest.mark.parametrize(
    "text",
    ["3 x 5", "3 17 3", "3 100 5", "-1 4 5", "", " ".join(map(str, range(sorting.MAX_LEN + 1)))],
)
def test_parse_errors(text: str) -> None:
    with pytest.raises(ValueError):
        PointerFamily(_recipe(), {}).parse(text)


def test_parse_and_attention_map() -> None:
    family = PointerFamily(_recipe(), {})
    raw = family.parse("3 17 5")
    assert raw == (3, 17, 5)
    model = _model()
    amap = family.attention_map(model, raw)
    assert amap.cols == ["3", "17", "5"]
    assert sorted(amap.rows, key=int) == ["3", "5", "17"]
    assert amap.weights.shape == (3, 3)
    assert amap.prediction == " ".join(amap.rows)


def test_predict_and_out_of_range_values() -> None:
    family = PointerFamily(_recipe(), {})
    preds = family.predict(_model(), [(4, 1, 9), (7, 2, 5, 0, 8)])
    assert [sorted(p) for p in preds] == [[0, 1, 2], [0, 1, 2, 3, 4]]
    with pytest.raises(ValueError):
        family.predict(_model(), [(4, 100)])


def test_batches_pad_values_and_orders() -> None:
    family = PointerFamily(_recipe(), {})
    data = PointerFamily.load_data(0)
    batch = next(family.batches(data, 8, 0))
    values, mask, order = batch["values"], batch["mask"], batch["order"]
    assert values.shape == mask.shape == order.shape
    for b in range(8):
        n = int(mask[b].sum())
        assert sorting.MIN_LEN <= n <= sorting.MAX_LEN and bool(mask[b, :n].all())
        vals = values[b, :n].tolist()
        assert [vals[i] for i in order[b, :n].tolist()] == sorted(vals)
        assert torch.all(values[b, n:] == 0) and torch.all(order[b, n:] == 0)


@pytest.mark.integration  # trains a model
def test_tiny_training_lowers_loss() -> None:
    torch.manual_seed(0)
    family = PointerFamily(_recipe(), {})
    model = family.build_model(family.model_config()).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    batches = family.batches(PointerFamily.load_data(0), 32, 0)
    losses = []
    for batch in itertools.islice(batches, 60):
        loss, _ = family.loss(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.7 * sum(losses[:10]) / 10
