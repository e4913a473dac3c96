"""client (sync and grpc.aio) and `attnserve client` against the real server (reference repository)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from cli.main import main
from client import AsyncClient, Client, ClientError
from protocol import codec
from protocol.codec import infer_request as _infer_request
from protocol.codec import response_tensors as _infer_outputs
from protocol.gen.inference import grpc_service_pb2 as pb
from tests.helpers.paths import ROOT

TRANSLATE, SORT, CLASSIFY = "dates-transformer", "sort-pointer", "debian-han"
DATES = ["Freitag, 2. September 1983", "14 de març 2003", "perjantai 7. kesäkuuta 1957"]
EXPECTED = ["1983-09-02", "2003-03-14", "1957-06-07"]
ROWS = [[42, 7, 93, 15, 61, 3], [5, 11, 2, 8, 30, 1]]
DOCS = [
    "real-time strategy game. Build an empire of seven kingdoms, trade, and fight wars. "
    "The game offers a campaign and multiplayer over the network.",
    "Command-line tool to convert audio files. It reads WAV and FLAC and writes MP3.",
]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass
class Served:
    address: str
    classify: str


@pytest.fixture(scope="module")
def served(server) -> Served:
    return Served(server.address, CLASSIFY)


@pytest.fixture(scope="module")
def client(served: Served):
    with Client(served.address) as c:
        yield c


@pytest.fixture(scope="module")
def han(served: Served) -> str:
    return served.classify


def rows_sum_to_one(weights: np.ndarray) -> None:
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)


# --- wire format, no server ----------------------------------------------------------------


def test_request_encoding_is_what_the_server_decodes():
    inputs = {
        "s": np.array(["a", "ü", ""], dtype=np.str_),
        "o": np.array([[b"x", "y"]], dtype=np.object_),
        "i": np.arange(6, dtype=np.int64).reshape(2, 3),
        "f": np.array([0.5, -1.0], dtype=np.float32),
        "b": np.array([True, False]),
        "big": np.arange(3, dtype=">i4"),
    }
    request = _infer_request("m", inputs, ["x"], {"backend": "torch", "beam_size": 3, "flag": True}, "2")
    assert [(t.name, t.datatype) for t in request.inputs] == [
        ("s", "BYTES"), ("o", "BYTES"), ("i", "INT64"), ("f", "FP32"), ("b", "BOOL"), ("big", "INT32"),
    ]  # fmt: skip
    decoded = codec.request_inputs(request)
    assert decoded["s"].tolist() == [b"a", "ü".encode(), b""]
    assert decoded["o"].shape == (1, 2) and decoded["o"].tolist() == [[b"x", b"y"]]
    for name in ("i", "f", "b", "big"):
        np.testing.assert_array_equal(decoded[name], inputs[name])
    assert codec.parameters(request.parameters) == {"backend": "torch", "beam_size": 3, "flag": True}
    assert request.model_version == "2" and [o.name for o in request.outputs] == ["x"]


def test_response_decoding_by_datatype():
    response = pb.ModelInferResponse()
    outputs = {
        "text": np.array([[b"ab", "ç".encode()]], dtype=np.object_),
        "p": np.array([[0.25, 0.75]], dtype=np.float32),
        "n": np.array([3, -1], dtype=np.int64),
        "m": np.zeros((2, 0), dtype=bool),
    }
    codec.response_outputs(response, outputs)
    decoded = _infer_outputs(response)
    assert decoded["text"].dtype == np.object_ and decoded["text"].tolist() == [[b"ab", "ç".encode()]]
    for name in ("p", "n", "m"):
        assert decoded[name].dtype == outputs[name].dtype
        np.testing.assert_array_equal(decoded[name], outputs[name])


def test_client_and_plot_do_not_import_torch():
    code = "import sys, client, client.plot; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- Open Inference Protocol ---------------------------------------------------------------


def test_models_ready_metadata(client: Client, served: Served):
    index = {m["name"]: m for m in client.models()}
    for name in (TRANSLATE, SORT):
        assert index[name]["state"] == "READY" and index[name]["version"] == "1"
    assert client.ready() and client.ready(SORT) and client.ready(SORT, "1") and not client.ready(SORT, "7")
    meta = client.metadata(TRANSLATE)
    assert meta["name"] == TRANSLATE and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert {"name": "attention", "datatype": "FP32", "shape": [-1, -1, -1]} in meta["outputs"]


def test_sync_infer_round_trip(client: Client):
    out = client.infer(TRANSLATE, {"text": np.array(DATES, dtype=np.object_)})
    assert set(out) == {"text", "attention", "output_lengths", "input_lengths"}
    assert out["text"].dtype == np.object_ and out["text"].tolist() == [e.encode() for e in EXPECTED]
    assert out["attention"].dtype == np.float32 and out["attention"].shape[:2] == (3, 11)
    rows_sum_to_one(out["attention"])
    assert out["input_lengths"].tolist() == [len(d) for d in DATES]
    # the same texts as bytes, as a numpy str array, and with only some outputs and a parameter
    as_bytes = client.infer(TRANSLATE, {"text": np.array([d.encode() for d in DATES], dtype=np.object_)})
    np.testing.assert_array_equal(as_bytes["attention"], out["attention"])
    some = client.infer(TRANSLATE, {"text": np.array(DATES)}, outputs=["text"], parameters={"beam_size": 1})
    assert list(some) == ["text"] and some["text"].tolist() == out["text"].tolist()

    values = np.array(ROWS, dtype=np.int64)
    out = client.infer(SORT, {"values": values}, version="1")
    assert out["order"].dtype == np.int64 and out["attention"].shape == (2, 6, 6)
    for row, order in zip(values, out["order"], strict=True):
        assert row[order].tolist() == sorted(row.tolist())


def test_async_infer_round_trip(client: Client, served: Served):
    values = np.array(ROWS, dtype=np.int64)

    async def run():
        async with AsyncClient(served.address) as ac:
            return await asyncio.gather(
                ac.models(),
                ac.ready(SORT),
                ac.infer(SORT, {"values": values}),
                ac.infer(TRANSLATE, {"text": np.array(DATES, dtype=np.object_)}, outputs=["text", "attention"]),
                ac.sort(SORT, ROWS, return_attention=True),
                ac.translate(TRANSLATE, DATES, return_attention=True),
                ac.metadata(SORT),
            )

    index, ready, sort_out, translate_out, sorted_, translations, meta = asyncio.run(run())
    assert index == client.models() and ready and meta == client.metadata(SORT)
    sync_sort = client.infer(SORT, {"values": values})
    for name in ("order", "attention"):
        np.testing.assert_array_equal(sort_out[name], sync_sort[name])
    assert [t.decode() for t in translate_out["text"]] == EXPECTED
    assert [s.values for s in sorted_] == [sorted(r) for r in ROWS]
    assert [t.text for t in translations] == EXPECTED
    rows_sum_to_one(translate_out["attention"])


def test_async_errors_are_client_errors(served: Served):
    async def run():
        async with AsyncClient(served.address) as ac:
            await ac.infer("no-such-model", {"values": np.array([[1, 2]])})

    with pytest.raises(ClientError) as err:
        asyncio.run(run())
    assert err.value.code == "NOT_FOUND" and "no-such-model" in err.value.message


# --- attnserve.v1.Attention, and agreement with ModelInfer ---------------------------------


def test_translate_typed_attention_matches_infer(client: Client):
    results = client.translate(TRANSLATE, DATES, return_attention=True)
    out = client.infer(TRANSLATE, {"text": np.array(DATES, dtype=np.object_)})
    assert [r.text for r in results] == EXPECTED == [t.decode() for t in out["text"]]
    for i, (r, src) in enumerate(zip(results, DATES, strict=True)):
        amap = r.attention
        assert amap.rows == [*r.text, "</s>"] and amap.cols == list(src) and amap.prediction == r.text
        assert amap.weights.dtype == np.float32 and amap.weights.shape == (len(r.text) + 1, len(src))
        rows_sum_to_one(amap.weights)
        n_out, n_in = int(out["output_lengths"][i]), int(out["input_lengths"][i])
        np.testing.assert_array_equal(amap.weights, out["attention"][i, :n_out, :n_in])
    plain = client.translate(TRANSLATE, DATES[1])
    assert plain[0].text == EXPECTED[1] and plain[0].attention is None


def test_translate_parameters(client: Client):
    beam = client.translate(TRANSLATE, DATES, return_attention=True, beam_size=3)
    out = client.infer(TRANSLATE, {"text": np.array(DATES, dtype=np.object_)}, parameters={"beam_size": 3})
    assert [b.text for b in beam] == [t.decode() for t in out["text"]]
    for i, b in enumerate(beam):
        n_out, n_in = int(out["output_lengths"][i]), int(out["input_lengths"][i])
        np.testing.assert_array_equal(b.attention.weights, out["attention"][i, :n_out, :n_in])
    short = client.translate(TRANSLATE, DATES[:1], return_attention=True, max_length=4)
    assert len(short[0].text) == 4 and short[0].attention.weights.shape == (4, len(DATES[0]))
    torch = client.translate(TRANSLATE, DATES, backend="torch")
    assert [t.text for t in torch] == EXPECTED
    with pytest.raises(ClientError) as err:
        client.translate(TRANSLATE, DATES, beam_size=99)
    assert err.value.code == "INVALID_ARGUMENT" and "beam_size" in err.value.message


def test_sort_typed_matches_infer(client: Client):
    results = client.sort(SORT, ROWS, return_attention=True)
    out = client.infer(SORT, {"values": np.array(ROWS, dtype=np.int64)})
    for i, (r, row) in enumerate(zip(results, ROWS, strict=True)):
        assert r.values == sorted(row) and r.order == out["order"][i].tolist()
        assert [row[p] for p in r.order] == r.values
        amap = r.attention
        assert amap.rows == [str(v) for v in r.values] and amap.cols == [str(v) for v in row]
        assert amap.weights.shape == (6, 6) and amap.prediction == " ".join(map(str, r.values))
        rows_sum_to_one(amap.weights)
        np.testing.assert_array_equal(amap.weights, out["attention"][i])
    one = client.sort(SORT, [9, 4, 6])  # a single flat row
    assert one[0].values == [4, 6, 9] and one[0].order == [1, 2, 0] and one[0].attention is None


def test_classify_typed_matches_infer(client: Client, han: str):
    results = client.classify(han, DOCS, return_attention=True)
    out = client.infer(han, {"text": np.array(DOCS, dtype=np.object_)})
    assert out["label"].dtype == np.object_
    for i, r in enumerate(results):
        assert r.label == out["label"][i].decode()
        probs = out["probabilities"][i]
        assert sorted(r.probabilities.values()) == sorted(probs.tolist())
        assert r.probabilities[r.label] == float(probs.max())
        assert abs(sum(r.probabilities.values()) - 1) < 1e-5
        n = len(r.sentences)
        assert n >= 2 and not out["sentence_attention"][i, n:].any()  # the shorter document is padded
        for s, sent in enumerate(r.sentences):
            assert len(sent.words) == len(sent.word_weights) and sent.words[-1] == "."
            np.testing.assert_array_equal(sent.word_weights, out["word_attention"][i, s, : len(sent.words)])
            assert sent.weight == float(out["sentence_attention"][i, s])
            assert abs(float(sent.word_weights.sum()) - 1) < 1e-5
        assert abs(sum(s.weight for s in r.sentences) - 1) < 1e-5
        amap = r.attention_map()
        width = max(len(s.words) for s in r.sentences)
        assert amap.weights.shape == (len(r.sentences), width) and amap.prediction == r.label
        assert amap.extra["words"] == [s.words for s in r.sentences]
        assert amap.extra["sentence_weights"] == [s.weight for s in r.sentences]
        rows_sum_to_one(amap.weights)  # padding cells are 0
    plain = client.classify(han, DOCS[0])
    assert plain[0].label == results[0].label and plain[0].sentences == [] and plain[0].attention_map() is None


# --- errors ----------------------------------------------------------------------------------


def test_not_found_is_a_client_error(client: Client):
    for call in (
        lambda: client.infer("no-such-model", {"values": np.array([[1, 2]])}),
        lambda: client.translate("no-such-model", ["x"]),
        lambda: client.metadata("no-such-model"),
        lambda: client.ready("no-such-model"),
    ):
        with pytest.raises(ClientError) as err:
            call()
        assert err.value.code == "NOT_FOUND" and "no-such-model" in err.value.message
        assert str(err.value).startswith("NOT_FOUND: ")


def test_unreachable_server_is_a_client_error():
    with Client("127.0.0.1:1", timeout=2) as c, pytest.raises(ClientError) as err:
        c.models()
    assert err.value.code in {"UNAVAILABLE", "DEADLINE_EXCEEDED"}


# --- attnserve client ------------------------------------------------------------------------


def test_cli_models(served: Served, capsys: pytest.CaptureFixture[str]):
    assert main(["client", "--url", served.address, "models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "version", "state", "reason"]
    table = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert table[TRANSLATE] == ["1", "READY"] and table[SORT] == ["1", "READY"]


def test_cli_translate_with_plot(served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    png = tmp_path / "translate.png"
    assert main(["client", "--url", served.address, "translate", TRANSLATE, DATES[1], "--plot", str(png)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{DATES[1]} -> {EXPECTED[1]}", f"wrote {png}"]
    assert png.read_bytes().startswith(PNG_MAGIC)
    argv = ["client", "--url", served.address, "translate", TRANSLATE, *DATES[:2], "--beam", "2"]
    assert main([*argv, "--backend", "torch", "--plot", str(png)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == [f"{d} -> {e}" for d, e in zip(DATES[:2], EXPECTED[:2], strict=True)]
    assert (tmp_path / "translate-0.png").is_file() and (tmp_path / "translate-1.png").is_file()


def test_cli_sort_with_plot(served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    png = tmp_path / "sort.png"
    assert main(["client", "--url", served.address, "sort", SORT, *map(str, ROWS[0]), "--plot", str(png)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == " ".join(map(str, sorted(ROWS[0]))) and out[1] == "order: 5 1 3 0 4 2"
    assert png.read_bytes().startswith(PNG_MAGIC)


def test_cli_classify_with_plot(
    client: Client, served: Served, han: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    png = tmp_path / "classify.png"
    assert main(["client", "--url", served.address, "classify", han, DOCS[0], "--plot", str(png)]) == 0
    out = capsys.readouterr().out.splitlines()
    (expected,) = client.classify(han, DOCS[0])
    top = max(expected.probabilities.values())
    assert out[0] == expected.label and out[1].split() == [expected.label, f"{top:.4f}"]
    assert len(out) == 1 + len(expected.probabilities) + 1 and out[-1] == f"wrote {png}"
    assert png.read_bytes().startswith(PNG_MAGIC)


def test_cli_not_found_exits_1(served: Served, capsys: pytest.CaptureFixture[str]):
    assert main(["client", "--url", served.address, "sort", "no-such-model", "3", "1", "2"]) == 1
    err = capsys.readouterr().err
    assert "NOT_FOUND" in err and "no-such-model" in err
