"""Training loop, checkpoints (no pickle) and the train/evaluate/plot commands, on tiny runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from cli import main as cli
from models import checkpoint
from models.families.base import get_family
from models.recipes import Recipe, TrainConfig
from models.train import seed_everything, train

ROOT = Path(__file__).resolve().parents[2]

TINY = Recipe(
    name="dates-tiny",
    task="dates",
    family="seq2seq",
    attention="additive",
    model={"emb_dim": 16, "hidden": 32, "attn_hidden": 16},
    train=TrainConfig(steps=40, batch_size=32, lr=3e-3, warmup=5, threads=1),
)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ck") / "dates-tiny"
    train(TINY, out, progress=False, evaluate=False)
    return out


@pytest.mark.integration  # trains a model
def test_training_lowers_the_loss():
    seed_everything(0)
    torch.set_num_threads(1)
    fam_cls = get_family("seq2seq")
    data = fam_cls.load_data(0)
    fam = fam_cls(TINY, fam_cls.build_vocabs(data))
    model = fam.build_model(fam.model_config())
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    batches = fam.batches(data, 32, 0)
    fixed = next(batches)
    before = fam.loss(model, fixed)[0].item()
    for _ in range(30):
        loss, _ = fam.loss(model, next(batches))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = fam.loss(model, fixed)[0].item()
    assert after < 0.8 * before


def test_checkpoint_layout_and_round_trip(tiny_checkpoint: Path):
    names = {p.name for p in tiny_checkpoint.iterdir()}
    assert names == {
        "weights.safetensors",
        "config.json",
        "metrics.json",
        "vocab_src.json",
        "vocab_tgt.json",
    }
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    assert config["family"] == "seq2seq" and config["attention"] == "additive"
    assert config["recipe"]["train"]["seed"] == 0 and "versions" in config
    # safetensors: an 8-byte little-endian header length, then a JSON header.
    raw = (tiny_checkpoint / "weights.safetensors").read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    assert json.loads(raw[8 : 8 + header_len])
    ck = checkpoint.load(tiny_checkpoint)
    again = checkpoint.load(tiny_checkpoint)
    texts = ["Freitag, 2. September 1983", "14 de març 2003"]
    assert ck.family.predict(ck.model, texts) == again.family.predict(again.model, texts)


def test_training_records_its_compute(tiny_checkpoint: Path):
    metrics = json.loads((tiny_checkpoint / "metrics.json").read_text())
    compute = metrics["training_compute"]
    assert compute["steps"] == TINY.train.steps and compute["batch_size"] == TINY.train.batch_size
    assert compute["flops"] == compute["flops_per_step"] * TINY.train.steps > 0
    # each example uses every weight but the embeddings' (a few percent here) in at least one product,
    # at 2 FLOPs per multiply-add
    assert compute["forward_flops_per_step"] > metrics["parameters"] * TINY.train.batch_size


def test_no_pickle_in_the_code():
    pattern = re.compile(r"torch\.save\(|import pickle|pickle\.load|torch\.load\((?![^)]*weights_only=True)")
    offenders = [
        str(p.relative_to(ROOT))
        for pkg in ("models", "exporters", "backends", "serving")
        for p in (ROOT / pkg).rglob("*.py")
        if pattern.search(p.read_text())
    ]
    assert offenders == []


def test_evaluate_json_contract(tiny_checkpoint: Path, capsys):
    assert cli.main(["evaluate", str(tiny_checkpoint), "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert len(records) == 1
    rec = records[0]
    assert set(rec) == {"model", "task", "attention", "metric", "value", "n"}
    assert rec["model"] == "dates-tiny" and rec["metric"] == "exact_match" and rec["n"] == 2000
    assert 0.0 <= rec["value"] <= 1.0


def test_plot_writes_a_png(tiny_checkpoint: Path, tmp_path: Path, capsys):
    out = tmp_path / "a.png"
    assert cli.main(["plot", str(tiny_checkpoint), "Freitag, 2. September 1983", "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_reports_user_errors(tmp_path: Path, capsys):
    assert cli.main(["evaluate", str(tmp_path)]) == 2
    assert "not a checkpoint" in capsys.readouterr().err
    assert cli.main(["train", "no-such-recipe"]) == 2
    assert "unknown recipe" in capsys.readouterr().err
