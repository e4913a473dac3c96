"""Tiny deterministic numpy models for fast tests: component runners shaped like the exported
graphs, a numpy `Backend` that serves them, and a writer of a model repository that names them.

No training, torch or ONNX: each "graph" is a few lines of numpy whose outputs are a known function
of its inputs, so a test can state the exact answer. The translate models upper-case their input
(character by character, then EOS), the pointer network returns the positions in value order, and
the HAN classifier counts keywords. The decoders take their logits from a `Policy` of the tokens fed
so far, read back from the recurrent state (GRU-style, batch axis 0) or from the KV cache
(Transformer-style, batch axis 1), so a beam search that mixes up hypotheses gets other logits.
"""

from __future__ import annotations

import json
import threading
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from backends.base import Backend, BackendOptions, Device, artifact_file
from runtime.config import Component, ModelConfig
from runtime.decode import DecodeLoop, Runner
from runtime.errors import BackendFailure, InvalidInput, ModelLoadError
from runtime.pipelines.base import Pipeline
from runtime.tensors import Signature, TensorSpec
from runtime.text import BOS_ID, EOS_ID, SPECIALS, UNK_ID, Vocab

T = TensorSpec.of
F32, I64, BOOL = "float32", "int64", "bool"
NEG = float(np.finfo(np.float32).min)  # what the real graphs fill masked scores with

Policy = Callable[[tuple[int, ...], tuple[int, ...]], np.ndarray]
"""(tokens fed so far, the start token first; the row's source ids) -> logits [V] of the next token."""

# --- policies: what a decoder emits next, given the tokens so far ---------------------------


def copy_policy(table: Sequence[int], vocab_size: int, margin: float = 8.0) -> Policy:
    """Step t emits `table[src[t]]`, then EOS once the source is used up (probability ~0.99)."""

    def policy(history: tuple[int, ...], src: tuple[int, ...]) -> np.ndarray:
        t = len(history) - 1
        logits = np.zeros(vocab_size, dtype=np.float32)  # [V]
        logits[table[src[t]] if t < len(src) else EOS_ID] = margin
        return logits

    return policy


def table_policy(table: Mapping[tuple[int, ...], Mapping[int, float]], vocab_size: int) -> Policy:
    """Next-token probabilities looked up by prefix (the tokens after the start token); a token a
    row does not list gets 1e-6, a prefix the table does not list is uniform."""

    def policy(history: tuple[int, ...], src: tuple[int, ...]) -> np.ndarray:
        probs = np.full(vocab_size, 1e-6)
        row = table.get(history[1:])
        if row is None:
            probs[:] = 1.0
        for token, p in (row or {}).items():
            probs[token] = p
        return np.log(probs / probs.sum()).astype(np.float32)

    return policy


def random_policy(vocab_size: int, seed: int) -> Policy:
    """Logits drawn from a generator seeded by the whole prefix and the source: any mix-up of
    hypotheses, or of rows, changes them."""

    def policy(history: tuple[int, ...], src: tuple[int, ...]) -> np.ndarray:
        key = np.array([seed, *history, -7, *src], dtype=np.int64).tobytes()
        return np.random.default_rng(zlib.crc32(key)).normal(0.0, 2.0, vocab_size).astype(np.float32)

    return policy


def sequence_score(policy: Policy, tokens: Sequence[int], src: tuple[int, ...] = ()) -> float:
    """Beam search's ranking of an output: total log-probability over length, up to and including
    the first EOS."""
    history, total = [BOS_ID], 0.0
    for token in tokens:
        logits = policy(tuple(history), src).astype(np.float64)
        logp = logits - logits.max()
        logp -= np.log(np.exp(logp).sum())
        total += float(logp[token])
        history.append(int(token))
        if token == EOS_ID:
            break
    return total / (len(history) - 1)


# --- shared decoder arithmetic ---------------------------------------------------------------


def _check_batch(batch: int, feeds: Mapping[str, np.ndarray], axes: Mapping[str, int]) -> None:
    """Every input holds `batch` rows on its batch axis (a graph would fail otherwise)."""
    for name, axis in axes.items():
        if feeds[name].shape[axis] != batch:
            raise ValueError(f"{name} has {feeds[name].shape[axis]} rows on axis {axis}, prev_ids has {batch}")


def _check_rows(mask: np.ndarray) -> None:
    if not mask.any(axis=-1).all():
        raise ValueError("a decoder step got a row with no valid source position")


def attention_row(history: tuple[int, ...], mask: np.ndarray) -> np.ndarray:
    """Attention [S] peaked on the t-th valid position at step t (the last one past the end), zero on
    padding, and rippled by the tokens so far: a hypothesis's attention is its own."""
    valid = np.flatnonzero(mask)
    center = valid[min(len(history) - 1, len(valid) - 1)]
    positions = np.arange(mask.shape[0])
    weights = np.exp(-2.0 * np.abs(positions - center)) * (1.0 + 0.05 * np.cos(positions + sum(history))) * mask
    return (weights / weights.sum()).astype(np.float32)


def _text_step(
    policy: Policy, histories: list[tuple[int, ...]], sources: list[tuple[int, ...]], mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    logits = np.stack([policy(h, s) for h, s in zip(histories, sources, strict=True)])  # [B, V]
    attention = np.stack([attention_row(h, m) for h, m in zip(histories, mask, strict=True)])  # [B, S]
    return logits.astype(np.float32), attention


# --- GRU-style encoder + decoder_step (seq2seq; the pointer network below) ----------------------

HIDDEN = 32  # the state holds a count and up to HIDDEN - 1 tokens


def gru_signatures(source: str, logits: int | str) -> dict[str, Signature]:
    """encoder(source, src_mask) -> memory, state; decoder_step(prev_ids, state, memory, src_mask)."""
    return {
        "encoder": Signature(
            inputs=(T(source, I64, "batch", "src_len"), T("src_mask", BOOL, "batch", "src_len")),
            outputs=(T("memory", F32, "batch", "src_len", HIDDEN), T("state", F32, "batch", HIDDEN)),
        ),
        "decoder_step": Signature(
            inputs=(
                T("prev_ids", I64, "batch"),
                T("state", F32, "batch", HIDDEN),
                T("memory", F32, "batch", "src_len", HIDDEN),
                T("src_mask", BOOL, "batch", "src_len"),
            ),
            outputs=(
                T("logits", F32, "batch", logits),
                T("new_state", F32, "batch", HIDDEN),
                T("attention", F32, "batch", "src_len"),
            ),
        ),
    }


def gru_loop(pointer: bool = False) -> DecodeLoop:
    return DecodeLoop(
        start_id=-1 if pointer else BOS_ID,
        end_id=None if pointer else EOS_ID,
        from_encoder={"memory": "memory", "state": "state"},
        recurrent={"new_state": "state"},
        pointer=pointer,
    )


def _gru_encoder(source: str) -> Runner:
    def encoder(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids, mask = feeds[source], feeds["src_mask"]  # [B, S], [B, S]
        memory = np.zeros((*ids.shape, HIDDEN), dtype=np.float32)  # [B, S, H]: (id, valid, 0, ...)
        memory[..., 0], memory[..., 1] = ids, mask
        return {"memory": memory, "state": np.zeros((ids.shape[0], HIDDEN), dtype=np.float32)}

    return encoder


def _push(state: np.ndarray, prev: np.ndarray) -> np.ndarray:
    """The state with `prev` appended to each row's history: [count, token_1, ..., token_count, 0...]."""
    count = state[:, 0].astype(np.int64)  # [B]
    if (count + 1 >= HIDDEN).any():
        raise ValueError(f"the fake GRU state holds at most {HIDDEN - 1} tokens")
    new = state.copy()
    new[np.arange(len(prev)), count + 1] = prev
    new[:, 0] = count + 1
    return new


def seq2seq_runners(policy: Policy) -> dict[str, Runner]:
    """GRU-style encoder + decoder_step; the state carries the tokens fed so far."""

    def decoder_step(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        prev, mask, memory = feeds["prev_ids"], feeds["src_mask"], feeds["memory"]
        _check_batch(len(prev), feeds, {"state": 0, "memory": 0, "src_mask": 0})
        _check_rows(mask)
        state = _push(feeds["state"], prev)  # [B, H]
        histories = [tuple(int(x) for x in row[1 : 1 + int(row[0])]) for row in state]
        sources = [tuple(int(x) for x in m[m[:, 1] > 0, 0]) for m in memory]
        logits, attention = _text_step(policy, histories, sources, mask)
        return {"logits": logits, "new_state": state, "attention": attention}

    return {"encoder": _gru_encoder("src_ids"), "decoder_step": decoder_step}


def pointer_runners() -> dict[str, Runner]:
    """A pointer network whose logits over positions are minus the values: greedy decoding with
    the chosen positions masked out picks the smallest remaining value, i.e. sorts."""

    def decoder_step(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        prev, mask, memory = feeds["prev_ids"], feeds["src_mask"], feeds["memory"]
        _check_batch(len(prev), feeds, {"state": 0, "memory": 0, "src_mask": 0})
        _check_rows(mask)
        logits = np.where(mask, -memory[..., 0], NEG).astype(np.float32)  # [B, S]
        weights = np.exp(logits - logits.max(-1, keepdims=True)) * mask
        state = feeds["state"].copy()
        state[:, 0] += 1  # a step counter, fed back through `recurrent`
        return {"logits": logits, "new_state": state, "attention": (weights / weights.sum(-1, keepdims=True))}

    return {"encoder": _gru_encoder("values"), "decoder_step": decoder_step}


# --- Transformer-style: cross keys/values from the encoder, a KV cache that grows per step -----

LAYERS, HEADS, HEAD_DIM = 2, 2, 4


def transformer_signatures(vocab_size: int) -> dict[str, Signature]:
    kv = (LAYERS, "batch", HEADS)
    return {
        "encoder": Signature(
            inputs=(T("src_ids", I64, "batch", "src_len"), T("src_mask", BOOL, "batch", "src_len")),
            outputs=(T("cross_k", F32, *kv, "src_len", HEAD_DIM), T("cross_v", F32, *kv, "src_len", HEAD_DIM)),
        ),
        "decoder_step": Signature(
            inputs=(
                T("prev_ids", I64, "batch"),
                T("past_k", F32, *kv, "past_len", HEAD_DIM),
                T("past_v", F32, *kv, "past_len", HEAD_DIM),
                T("cross_k", F32, *kv, "src_len", HEAD_DIM),
                T("cross_v", F32, *kv, "src_len", HEAD_DIM),
                T("src_mask", BOOL, "batch", "src_len"),
                T("positions", I64, "batch"),
                T("cache_mask", BOOL, "batch", "past_len"),
            ),
            outputs=(
                T("logits", F32, "batch", vocab_size),
                T("present_k", F32, *kv, "present_len", HEAD_DIM),
                T("present_v", F32, *kv, "present_len", HEAD_DIM),
                T("attention", F32, "batch", "src_len"),
            ),
        ),
    }


def transformer_loop() -> DecodeLoop:
    return DecodeLoop(
        start_id=BOS_ID,
        end_id=EOS_ID,
        from_encoder={"cross_k": "cross_k", "cross_v": "cross_v"},
        recurrent={"present_k": "past_k", "present_v": "past_v"},
        batch_axes={"past_k": 1, "past_v": 1, "cross_k": 1, "cross_v": 1},
        empty={"past_k": [LAYERS, -1, HEADS, 0, HEAD_DIM], "past_v": [LAYERS, -1, HEADS, 0, HEAD_DIM]},
        positions_input="positions",
        cache_mask_input="cache_mask",
    )


def transformer_runners(policy: Policy) -> dict[str, Runner]:
    """Encoder -> cross_k (source ids) and cross_v (source mask), [L, B, H, S, Dh]; decoder_step
    appends prev_ids (keys) and the row's position (values) to the cache [L, B, H, P, Dh] and reads
    the tokens so far back from the steps `cache_mask` marks real. It refuses a cache whose real
    steps are not the row's positions 0 .. positions - 1 in order (rows at different steps share
    a call only with each row's own step and mask)."""

    def encoder(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids, mask = feeds["src_ids"], feeds["src_mask"]  # [B, S]
        shape = (LAYERS, ids.shape[0], HEADS, ids.shape[1], HEAD_DIM)
        cross_k, cross_v = np.zeros(shape, dtype=np.float32), np.zeros(shape, dtype=np.float32)
        cross_k[..., 0] = ids[None, :, None, :]
        cross_v[..., 0] = mask[None, :, None, :]
        return {"cross_k": cross_k, "cross_v": cross_v}

    def decoder_step(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        prev, mask = feeds["prev_ids"], feeds["src_mask"]  # [B], [B, S]
        positions, cache_mask = feeds["positions"], feeds["cache_mask"]  # [B], [B, P]
        axes = {"past_k": 1, "past_v": 1, "cross_k": 1, "cross_v": 1, "src_mask": 0, "positions": 0, "cache_mask": 0}
        _check_batch(len(prev), feeds, axes)
        _check_rows(mask)
        past_k, past_v = feeds["past_k"], feeds["past_v"]  # [L, B, H, P, Dh]
        if past_k.shape != past_v.shape or cache_mask.shape != (len(prev), past_k.shape[3]):
            raise ValueError(f"past_k {past_k.shape}, past_v {past_v.shape} and cache_mask {cache_mask.shape} differ")
        for row, real in enumerate(cache_mask):
            if list(past_v[0, row, 0, real, 1]) != list(range(int(positions[row]))):
                raise ValueError(f"row {row} at step {positions[row]} has cached steps {past_v[0, row, 0, real, 1]}")
        new = np.zeros((LAYERS, len(prev), HEADS, 1, HEAD_DIM), dtype=np.float32)
        new[..., 0] = prev[None, :, None, None]
        new_v = new.copy()
        new_v[..., 1] = positions[None, :, None, None]  # the position, so keys and values are told apart
        present_k = np.concatenate([past_k, new], axis=3)  # [L, B, H, P+1, Dh]
        present_v = np.concatenate([past_v, new_v], axis=3)
        if not (present_k[..., 0] == present_v[..., 0]).all():
            raise ValueError("keys and values of the KV cache disagree: the cache was mixed up")
        real = np.concatenate([cache_mask, np.ones((len(prev), 1), dtype=bool)], axis=1)  # [B, P+1]
        histories = [tuple(int(x) for x in row[r]) for row, r in zip(present_k[0, :, 0, :, 0], real, strict=True)]
        ids, valid = feeds["cross_k"][0, :, 0, :, 0], feeds["cross_v"][0, :, 0, :, 0] > 0  # [B, S]
        sources = [tuple(int(x) for x in row[v]) for row, v in zip(ids, valid, strict=True)]
        logits, attention = _text_step(policy, histories, sources, mask)
        return {"logits": logits, "present_k": present_k, "present_v": present_v, "attention": attention}

    return {"encoder": encoder, "decoder_step": decoder_step}


# --- HAN-style classify graph ---------------------------------------------------------------


def han_signatures(num_classes: int) -> dict[str, Signature]:
    return {
        "classify": Signature(
            inputs=(
                T("ids", I64, "batch", "sentences", "words"),
                T("word_mask", BOOL, "batch", "sentences", "words"),
                T("sent_mask", BOOL, "batch", "sentences"),
            ),
            outputs=(
                T("logits", F32, "batch", num_classes),
                T("word_attention", F32, "batch", "sentences", "words"),
                T("sentence_attention", F32, "batch", "sentences"),
            ),
        )
    }


def _masked_softmax(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, zero on padding and on rows with no valid entry."""
    scores = np.where(mask, scores, 0.0)
    weights = np.exp(scores - scores.max(-1, keepdims=True)) * mask
    total = weights.sum(-1, keepdims=True)
    return np.divide(weights, total, out=np.zeros_like(weights), where=total > 0).astype(np.float32)


def han_runners(keywords: Mapping[int, int], num_classes: int) -> dict[str, Runner]:
    """logits[c] = how many words are class c's keywords; attention weighs keywords e^2 higher."""

    def classify(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids, word_mask, sent_mask = feeds["ids"], feeds["word_mask"], feeds["sent_mask"]  # [B, S, W], [B, S]
        classes = np.full(ids.shape, -1)
        for word, c in keywords.items():
            classes[ids == word] = c
        classes[~word_mask] = -1
        logits = np.stack([(classes == c).sum(axis=(1, 2)) for c in range(num_classes)], axis=-1)  # [B, C]
        hits = (classes >= 0).astype(np.float64)  # [B, S, W]
        return {
            "logits": logits.astype(np.float32),
            "word_attention": _masked_softmax(2.0 * hits, word_mask),
            "sentence_attention": _masked_softmax(hits.sum(-1), sent_mask),
        }

    return {"classify": classify}


# --- the fake models: config.yaml, vocabularies, runners --------------------------------------

SRC_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789 ,.-"
WORDS = ("game", "library", "network", "a", "the", "fun", "fast", "small", "for", "and", "play", "c")
LABELS = ["games", "libs", "net"]
KEYWORDS = {"game": 0, "library": 1, "network": 2}


@dataclass(frozen=True)
class FakeModel:
    """A tiny model: its config.yaml, its vocabularies (file name -> vocabulary) and its runners;
    `kind` is its key in FAKES, which the backend reads from the artifact files."""

    kind: str
    config: ModelConfig
    vocabs: dict[str, Vocab]
    runners: dict[str, Runner]
    signatures: dict[str, Signature]

    @property
    def name(self) -> str:
        return self.config.name


def _config(kind: str, signatures: Mapping[str, Signature], **fields: Any) -> ModelConfig:
    components = {
        name: {"file": f"{name}.fake.json", "inputs": sig.inputs, "outputs": sig.outputs}
        for name, sig in signatures.items()
    }
    fields = {"name": kind, "attention": "fake", "backends": [{"name": "numpy"}], "max_batch_size": 8, **fields}
    return ModelConfig.model_validate({"components": components, **fields})


def translate_vocabs() -> tuple[Vocab, Vocab]:
    src = Vocab([*SPECIALS, *SRC_CHARS])
    return src, Vocab([*SPECIALS, *SRC_CHARS.upper()])


def upper_table(src: Vocab, tgt: Vocab) -> list[int]:
    """Source id -> target id of the upper-cased character (specials map to UNK)."""
    return [tgt.index.get(tok.upper(), UNK_ID) if i >= len(SPECIALS) else UNK_ID for i, tok in enumerate(src.tokens)]


def copy_gru() -> FakeModel:
    """translate, GRU-style: upper-cases its input."""
    src, tgt = translate_vocabs()
    sigs = gru_signatures("src_ids", len(tgt))
    config = _config(
        "copy-gru", sigs, task="translate", family="seq2seq", decode=gru_loop(),
        vocabs={"src": "src.json", "tgt": "tgt.json"}, max_input_length=20, max_output_length=24,
    )  # fmt: skip
    runners = seq2seq_runners(copy_policy(upper_table(src, tgt), len(tgt)))
    return FakeModel("copy-gru", config, {"src.json": src, "tgt.json": tgt}, runners, sigs)


def copy_transformer() -> FakeModel:
    """translate, Transformer-style with a KV cache: upper-cases its input."""
    src, tgt = translate_vocabs()
    sigs = transformer_signatures(len(tgt))
    config = _config(
        "copy-transformer", sigs, task="translate", family="transformer", attention="multihead",
        decode=transformer_loop(), vocabs={"src": "src.json", "tgt": "tgt.json"},
        max_input_length=20, max_output_length=24,
    )  # fmt: skip
    runners = transformer_runners(copy_policy(upper_table(src, tgt), len(tgt)))
    return FakeModel("copy-transformer", config, {"src.json": src, "tgt.json": tgt}, runners, sigs)


def sorter() -> FakeModel:
    """sort, pointer network: positions in increasing value order."""
    sigs = gru_signatures("values", "src_len")
    config = _config(
        "sorter", sigs, task="sort", family="pointer", decode=gru_loop(pointer=True),
        max_input_length=12, value_range=(0, 100),
    )  # fmt: skip
    return FakeModel("sorter", config, {}, pointer_runners(), sigs)


def keywords() -> FakeModel:
    """classify, HAN-style: the label of the most frequent keyword (game, library, network)."""
    words = Vocab([*SPECIALS, *WORDS], kind="word")
    sigs = han_signatures(len(LABELS))
    config = _config(
        "keywords", sigs, task="classify", family="han", vocabs={"words": "words.json"},
        labels=LABELS, max_input_length=6, max_sentences=4,
    )  # fmt: skip
    runners = han_runners({words.index[w]: c for w, c in KEYWORDS.items()}, len(LABELS))
    return FakeModel("keywords", config, {"words.json": words}, runners, sigs)


FAKES: dict[str, Callable[[], FakeModel]] = {
    "copy-gru": copy_gru,
    "copy-transformer": copy_transformer,
    "sorter": sorter,
    "keywords": keywords,
}


# --- the numpy backend -------------------------------------------------------------------------


class NumpyOptions(BackendOptions):
    fail: bool = False  # every call raises BackendFailure


class NumpyBackend(Backend):
    """Serves a fake model's component: the artifact file config.yaml names is a JSON that says
    which fake, which component, and the "graph's" signature (checked against config.yaml)."""

    name = "numpy"
    Options = NumpyOptions
    pool: ClassVar[list[NumpyBackend] | None] = None  # set on the classes a BackendPool hands out

    def __init__(self, component: str, runner: Runner, signature: Signature, fail: bool) -> None:
        self.component = component
        self.runner = runner
        self._signature = signature
        self.fail = fail
        self.closed = False
        self.threads: list[str] = []  # the thread of each call
        self.before: Callable[[Mapping[str, np.ndarray]], None] | None = None  # a test's hook, run first

    @classmethod
    def load(cls, artifact_dir: Path, component: Component, device: Device, options: BackendOptions) -> Self:
        if device != "cpu":
            raise ModelLoadError(f"the numpy backend runs on cpu only, not {device}")
        data = json.loads(artifact_file(artifact_dir, component.file).read_text())
        fake = FAKES[data["model"]]()
        backend = cls(
            data["component"],
            fake.runners[data["component"]],
            Signature.model_validate(data["signature"]),
            cls.Options.model_validate(options.model_dump()).fail,
        )
        if cls.pool is not None:
            cls.pool.append(backend)
        return backend

    @property
    def signature(self) -> Signature:
        return self._signature

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.threads.append(threading.current_thread().name)
        if self.before is not None:
            self.before(inputs)
        if self.fail:
            raise BackendFailure(f"numpy backend: component '{self.component}' told to fail")
        return self.runner(dict(inputs))

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "component": self.component}

    def close(self) -> None:
        self.closed = True


class TwinBackend(NumpyBackend):
    """The same fakes under another name, for per-request backend choice."""

    name = "numpy-twin"


@dataclass
class BackendPool:
    """A `backend_loader` for ModelRepository (numpy, numpy-twin) that keeps every backend it loads."""

    loaded: list[NumpyBackend] = field(default_factory=list)

    def __call__(self, name: str) -> type[Backend]:
        classes: dict[str, type[NumpyBackend]] = {NumpyBackend.name: NumpyBackend, TwinBackend.name: TwinBackend}
        if name not in classes:
            raise InvalidInput(f"unknown backend {name!r}; installed: {', '.join(sorted(classes))}")
        return type(classes[name].__name__, (classes[name],), {"pool": self.loaded})


@dataclass
class Served:
    """A fake model's pipeline with its runners, called as the server calls it."""

    pipeline: Pipeline
    runners: dict[str, Runner]

    def run(self, inputs: Mapping[str, np.ndarray], **params: Any) -> dict[str, np.ndarray]:
        return self.pipeline.run(inputs, params, self.runners)


# --- the repository writer -------------------------------------------------------------------


def write_model(root: Path, fake: FakeModel, versions: Sequence[int] = (1,), **changes: Any) -> Path:
    """`<root>/<name>/config.yaml` (the fake's config with `changes`) and one folder per version
    holding the vocabularies and a `<component>.fake.json` per component. Returns the model folder."""
    config = ModelConfig.model_validate({**fake.config.model_dump(), **changes})
    folder = root / config.name
    folder.mkdir(parents=True, exist_ok=True)
    config.save(folder / "config.yaml")
    for version in versions:
        vdir = folder / str(version)
        vdir.mkdir(exist_ok=True)
        for file, vocab in fake.vocabs.items():
            vocab.save(vdir / file)
        for component, sig in fake.signatures.items():
            artifact = {"model": fake.kind, "component": component, "signature": sig.model_dump(mode="json")}
            (vdir / f"{component}.fake.json").write_text(json.dumps(artifact))
    return folder


def write_repository(root: Path, names: Sequence[str] = tuple(FAKES)) -> Path:
    """A model repository holding the named fakes (all four by default), version 1 each."""
    for name in names:
        write_model(root, FAKES[name]())
    return root
