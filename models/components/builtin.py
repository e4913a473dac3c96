"""Built-in export specs: seq2seq, transformer, pointer (encoder + decoder_step), han (classify)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from models.components.spec import (
    Component,
    ComponentSpec,
    Dims,
    ExportSpec,
    TensorSpec,
    lengths_mask,
)
from runtime.decode import DecodeLoop
from runtime.text import BOS_ID, EOS_ID

F32, I64, BOOL = "float32", "int64", "bool"


class Method(nn.Module):
    """Export-only module whose forward is one method of the wrapped model."""

    def __init__(self, model: nn.Module, method: str) -> None:
        super().__init__()
        self.model = model
        self.method = method

    def forward(self, *args: Tensor) -> Any:
        return getattr(self.model, self.method)(*args)


def _ids(gen: torch.Generator, shape: tuple[int, ...], vocab: int, mask: Tensor | None = None) -> Tensor:
    ids = torch.randint(4, vocab, shape, generator=gen)  # never a special token
    return ids if mask is None else ids.masked_fill(~mask, 0)


class _EncoderDecoder(ExportSpec):
    """Shared helpers for the encoder + decoder_step split."""

    decode: DecodeLoop

    def encoded(self, dims: Dims, gen: torch.Generator) -> tuple[dict[str, Tensor], tuple[Tensor, ...]]:
        enc = self.components()[0]
        feeds = enc.make_inputs(dims, gen)
        with torch.no_grad():
            outs = enc.module(*feeds.values())
        return feeds, outs


def gru_signatures(source: str, hidden: int, logits: int | str) -> tuple[ComponentSpec, ComponentSpec]:
    """encoder(source, src_mask) -> (memory, state) and the GRU decoder_step, shared by seq2seq and pointer."""
    enc = ComponentSpec(
        "encoder",
        inputs=(TensorSpec.of(source, I64, "batch", "src_len"), TensorSpec.of("src_mask", BOOL, "batch", "src_len")),
        outputs=(
            TensorSpec.of("memory", F32, "batch", "src_len", hidden),
            TensorSpec.of("state", F32, "batch", hidden),
        ),
    )
    dec = ComponentSpec(
        "decoder_step",
        inputs=(
            TensorSpec.of("prev_ids", I64, "batch"),
            TensorSpec.of("state", F32, "batch", hidden),
            TensorSpec.of("memory", F32, "batch", "src_len", hidden),
            TensorSpec.of("src_mask", BOOL, "batch", "src_len"),
        ),
        outputs=(
            TensorSpec.of("logits", F32, "batch", logits),
            TensorSpec.of("new_state", F32, "batch", hidden),
            TensorSpec.of("attention", F32, "batch", "src_len"),
        ),
    )
    return enc, dec


class Seq2SeqSpec(_EncoderDecoder):
    family = "seq2seq"
    task = "translate"
    example: ClassVar[Dims] = {"batch": 2, "src_len": 7}
    check_shapes = [
        {"batch": 1, "src_len": 1},
        {"batch": 2, "src_len": 7},
        {"batch": 3, "src_len": 19},
        {"batch": 16, "src_len": 40},
        {"batch": 5, "src_len": 64},
    ]
    decode = DecodeLoop(
        start_id=BOS_ID,
        end_id=EOS_ID,
        from_encoder={"memory": "memory", "state": "state"},
        recurrent={"new_state": "state"},
    )

    def max_input_length(self) -> int:
        return int(self.config["max_src_len"])

    def components(self) -> list[Component]:
        H, V, Vs = self.config["hidden"], self.config["tgt_vocab"], self.config["src_vocab"]
        enc, dec = gru_signatures("src_ids", H, V)

        def enc_inputs(d: Dims, g: torch.Generator) -> dict[str, Tensor]:
            mask = lengths_mask(d["batch"], d["src_len"], g)
            return {"src_ids": _ids(g, (d["batch"], d["src_len"]), Vs, mask), "src_mask": mask}

        def dec_inputs(d: Dims, g: torch.Generator) -> dict[str, Tensor]:
            feeds, (memory, state) = self.encoded(d, g)
            prev = torch.randint(0, V, (d["batch"],), generator=g)
            return {
                "prev_ids": prev,
                "state": state,
                "memory": memory,
                "src_mask": feeds["src_mask"],
            }

        return [
            Component(enc, Method(self.model, "encode"), enc_inputs),
            Component(dec, Method(self.model, "decode_step"), dec_inputs),
        ]


class PointerSpec(_EncoderDecoder):
    family = "pointer"
    task = "sort"
    example: ClassVar[Dims] = {"batch": 2, "src_len": 7}
    check_shapes = [
        {"batch": 1, "src_len": 1},
        {"batch": 2, "src_len": 7},
        {"batch": 3, "src_len": 10},
        {"batch": 16, "src_len": 15},
        {"batch": 4, "src_len": 30},
    ]
    decode = DecodeLoop(
        start_id=-1,
        end_id=None,
        from_encoder={"memory": "memory", "state": "state"},
        recurrent={"new_state": "state"},
        pointer=True,
    )

    def max_input_length(self) -> int:
        from models.data import sorting

        return 2 * sorting.MAX_LEN  # twice the trained length: it generalises (docs/data.md)

    def serving_facts(self, family: Any) -> dict[str, Any]:
        return {**super().serving_facts(family), "value_range": (0, int(self.config["max_value"]))}

    def components(self) -> list[Component]:
        H, max_value = self.config["hidden"], self.config["max_value"]
        enc, dec = gru_signatures("values", H, "src_len")  # pointer logits are over the inputs

        def enc_inputs(d: Dims, g: torch.Generator) -> dict[str, Tensor]:
            mask = lengths_mask(d["batch"], d["src_len"], g)
            # distinct values per row, as the task has
            values = torch.stack([torch.randperm(max_value, generator=g)[: d["src_len"]] for _ in range(d["batch"])])
            return {"values": values.masked_fill(~mask, 0), "src_mask": mask}

        def dec_inputs(d: Dims, g: torch.Generator) -> dict[str, Tensor]:
            feeds, (memory, state) = self.encoded(d, g)
            mask = feeds["src_mask"]
            lengths = mask.sum(1)
            prev = torch.stack([torch.randint(-1, int(n), (1,), generator=g)[0] for n in lengths])
            avail = mask & (torch.arange(d["src_len"])[None, :] != prev[:, None])  # [B, S]
            avail = torch.where(avail.any(1, keepdim=True), avail, mask)  # never an empty row
            return {"prev_ids": prev, "state": state, "memory": memory, "src_mask": avail}

        return [
            Component(enc, Method(self.model, "encode"), enc_inputs),
            Component(dec, Method(self.model, "decode_step"), dec_inputs),
        ]


class TransformerSpec(_EncoderDecoder):
    family = "transformer"
    task = "translate"
    example: ClassVar[Dims] = {"batch": 2, "src_len": 7, "past_len": 3}
    check_shapes = [
        {"batch": 1, "src_len": 1, "past_len": 0},
        {"batch": 2, "src_len": 7, "past_len": 3},
        {"batch": 3, "src_len": 19, "past_len": 1},
        {"batch": 16, "src_len": 40, "past_len": 10},
        {"batch": 4, "src_len": 64, "past_len": 15},
    ]

    @property
    def decode(self) -> DecodeLoop:  # type: ignore[override]
        c = self.config
        dh = c["d_model"] // c["num_heads"]
        return DecodeLoop(
            start_id=BOS_ID,
            end_id=EOS_ID,
            from_encoder={"cross_k": "cross_k", "cross_v": "cross_v"},
            recurrent={"present_k": "past_k", "present_v": "past_v"},
            batch_axes={"past_k": 1, "past_v": 1, "cross_k": 1, "cross_v": 1},
            empty={
                "past_k": [c["dec_layers"], -1, c["num_heads"], 0, dh],
                "past_v": [c["dec_layers"], -1, c["num_heads"], 0, dh],
            },
            positions_input="positions",
            cache_mask_input="cache_mask",
        )

    def max_input_length(self) -> int:
        return int(self.config["max_len"])

    def components(self) -> list[Component]:
        c = self.config
        L, Hh, V, Vs = c["dec_layers"], c["num_heads"], c["tgt_vocab"], c["src_vocab"]
        dh = c["d_model"] // Hh
        kv = ("batch", Hh)
        enc = ComponentSpec(
            "encoder",
            inputs=(
                TensorSpec.of("src_ids", I64, "batch", "src_len"),
                TensorSpec.of("src_mask", BOOL, "batch", "src_len"),
            ),
            outputs=(
                TensorSpec.of("cross_k", F32, L, *kv, "src_len", dh),
                TensorSpec.of("cross_v", F32, L, *kv, "src_len", dh),
            ),
        )
        dec = ComponentSpec(
            "decoder_step",
            inputs=(
                TensorSpec.of("prev_ids", I64, "batch"),
                TensorSpec.of("past_k", F32, L, *kv, "past_len", dh),
                TensorSpec.of("past_v", F32, L, *kv, "past_len", dh),
                TensorSpec.of("cross_k", F32, L, *kv, "src_len", dh),
                TensorSpec.of("cross_v", F32, L, *kv, "src_len", dh),
                TensorSpec.of("src_mask", BOOL, "batch", "src_len"),
                TensorSpec.of("positions", I64, "batch"),  # each row's step: its positional encoding
                TensorSpec.of("cache_mask", BOOL, "batch", "past_len"),  # the row's real cached steps
            ),
            outputs=(
                TensorSpec.of("logits", F32, "batch", V),
                TensorSpec.of("present_k", F32, L, *kv, "present_len", dh),
                TensorSpec.of("present_v", F32, L, *kv, "present_len", dh),
                TensorSpec.of("attention", F32, "batch", "src_len"),
            ),
            derived={"present_len": "past_len + 1"},
        )

        def enc_inputs(d: Dims, g: torch.Generator) -> dict[str, Tensor]:
            mask = lengths_mask(d["batch"], d["src_len"], g)
            return {"src_ids": _ids(g, (d["batch"], d["src_len"]), Vs, mask), "src_mask": mask}

        def dec_inputs(d: Dims, g: torch.Generator) -> dict[str, Tensor]:
            feeds, (cross_k, cross_v) = self.encoded(d, g)
            past = (L, d["batch"], Hh, d["past_len"], dh)
            # rows at different steps in one batch: row 0's cache is full, the others shorter and
            # left-padded with noise (masked keys must not count), as runtime.stepwise pads them
            steps = lengths_mask(d["batch"], d["past_len"], g, min_len=0).sum(1)  # [B]
            cache_mask = torch.arange(d["past_len"])[None, :] >= (d["past_len"] - steps)[:, None]  # [B, P]
            return {
                "prev_ids": torch.randint(0, V, (d["batch"],), generator=g),
                "past_k": torch.randn(past, generator=g),
                "past_v": torch.randn(past, generator=g),
                "cross_k": cross_k,
                "cross_v": cross_v,
                "src_mask": feeds["src_mask"],
                "positions": steps,
                "cache_mask": cache_mask,
            }

        return [
            Component(enc, _TransformerEncoder(self.model), enc_inputs),
            Component(dec, Method(self.model, "decode_step"), dec_inputs),
        ]


class _TransformerEncoder(nn.Module):
    """encode + cross_kv: the cross-attention keys/values are computed once per source."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, src_ids: Tensor, src_mask: Tensor) -> tuple[Tensor, Tensor]:
        return self.model.cross_kv(self.model.encode(src_ids, src_mask))  # type: ignore[operator]  # nn.Module attributes are typed Tensor | Module


class HanSpec(ExportSpec):
    family = "han"
    task = "classify"
    example: ClassVar[Dims] = {"batch": 2, "sentences": 3, "words": 5}
    check_shapes = [
        {"batch": 1, "sentences": 1, "words": 1},
        {"batch": 2, "sentences": 3, "words": 5},
        {"batch": 3, "sentences": 8, "words": 20},
        {"batch": 16, "sentences": 12, "words": 40},
        {"batch": 4, "sentences": 20, "words": 60},
    ]

    def max_input_length(self) -> int:
        return int(self.config["max_words"])  # words per sentence

    def serving_facts(self, family: Any) -> dict[str, Any]:
        return {
            **super().serving_facts(family),
            "max_sentences": int(self.config["max_sents"]),
            "labels": list(family.labels),
        }

    def components(self) -> list[Component]:
        C, V = self.config["num_classes"], self.config["vocab"]
        spec = ComponentSpec(
            "classify",
            inputs=(
                TensorSpec.of("ids", I64, "batch", "sentences", "words"),
                TensorSpec.of("word_mask", BOOL, "batch", "sentences", "words"),
                TensorSpec.of("sent_mask", BOOL, "batch", "sentences"),
            ),
            outputs=(
                TensorSpec.of("logits", F32, "batch", C),
                TensorSpec.of("word_attention", F32, "batch", "sentences", "words"),
                TensorSpec.of("sentence_attention", F32, "batch", "sentences"),
            ),
        )

        def inputs(d: Dims, g: torch.Generator) -> dict[str, Tensor]:
            B, S, W = d["batch"], d["sentences"], d["words"]
            sent_mask = lengths_mask(B, S, g)  # [B, S]
            word_mask = lengths_mask(B * S, W, g).view(B, S, W) & sent_mask[..., None]  # [B, S, W]
            return {
                "ids": _ids(g, (B, S, W), V, word_mask),
                "word_mask": word_mask,
                "sent_mask": sent_mask,
            }

        return [Component(spec, self.model, inputs)]
