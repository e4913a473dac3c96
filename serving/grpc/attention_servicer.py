"""`attnserve.v1.Attention`: a typed facade (Translate, TranslateStream, Classify, Sort) over the same pipelines."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import numpy as np
from grpc import aio

from protocol.gen.attnserve.v1 import attention_pb2 as pb
from protocol.gen.attnserve.v1 import attention_pb2_grpc as pb_grpc
from runtime.errors import InvalidInput
from runtime.text import EOS
from serving.dataplane import DataPlane
from serving.grpc.deadline import deadline_of
from serving.record import RequestRecord


def _params(backend: str, **ints: int) -> dict[str, Any]:
    params: dict[str, Any] = {k: v for k, v in ints.items() if v}
    if backend:
        params["backend"] = backend
    return params


def _texts(texts: Any) -> np.ndarray:
    if not texts:
        raise InvalidInput("send at least one text")
    return np.array([t.encode("utf-8") for t in texts], dtype=np.object_)


def _translations(into: Any, request: pb.TranslateRequest, out: Mapping[str, np.ndarray], step: int) -> None:
    """Add one Translation per text from translate outputs whose attention rows start at decoding
    `step`: a whole answer (step 0), or one streamed step (its piece, its attention row)."""
    for i, text in enumerate(out["text"]):
        piece = text.decode("utf-8")
        item = into.add(text=piece)
        if request.return_attention:
            attention = out["attention"][i]  # [steps here, S]
            rows = min(max(int(out["output_lengths"][i]) - step, 0), attention.shape[0])  # the text's rows here
            n_in = int(out["input_lengths"][i])
            item.attention.rows.extend([*piece, EOS][:rows])
            item.attention.cols.extend(list(request.texts[i])[:n_in])
            item.attention.weights.extend(attention[:rows, :n_in].reshape(-1).tolist())


class AttentionServicer(pb_grpc.AttentionServicer):
    """Each RPC is one data-plane request, so it returns what ModelInfer returns."""

    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane

    def _admit(self, model: str, name: str, datatype: str, shape: tuple[int, ...]) -> None:
        """The model's header check before a request's items are converted: a hostile item count
        is refused before millions of strings are built (counted by the request's record)."""
        self.dataplane.pipeline(model, "").check_headers([(name, datatype, shape)])

    async def Translate(self, request: pb.TranslateRequest, context: aio.ServicerContext) -> pb.TranslateResponse:
        with self.dataplane.track(request.model) as record:  # counts every outcome, rejections too
            return await self._translate(request, record, deadline_of(context))

    async def _translate(
        self, request: pb.TranslateRequest, record: RequestRecord, deadline: float | None
    ) -> pb.TranslateResponse:
        params, wanted = self._translate_args(request)
        result = await self.dataplane.infer(
            request.model, "", {"text": _texts(request.texts)}, params, wanted, record=record, deadline=deadline
        )
        response = pb.TranslateResponse()
        _translations(response.translations, request, result.outputs, 0)
        return response

    async def TranslateStream(
        self, request: pb.TranslateRequest, context: aio.ServicerContext
    ) -> AsyncIterator[pb.TranslateStreamResponse]:
        """Translate, one message per decoded token (DataPlane.infer_stream); beam search in one."""
        with self.dataplane.track(request.model) as record:  # one request, however many messages
            params, wanted = self._translate_args(request)
            parts = self.dataplane.infer_stream(
                request.model, "", {"text": _texts(request.texts)}, params, wanted,
                record=record, deadline=deadline_of(context),
            )  # fmt: skip
            async with contextlib.aclosing(parts):
                step = 0
                async for part in parts:
                    message = pb.TranslateStreamResponse(step=step, final=part.final)
                    _translations(message.translations, request, part.outputs, step)
                    yield message
                    step += 1

    def _translate_args(self, request: pb.TranslateRequest) -> tuple[dict[str, Any], list[str]]:
        """A TranslateRequest's parameters and the outputs it needs, once its header is admitted."""
        params = _params(request.backend, beam_size=request.beam_size, max_length=request.max_length)
        wanted = ["text", "output_lengths", "input_lengths"] + (["attention"] if request.return_attention else [])
        self._admit(request.model, "text", "BYTES", (len(request.texts),))
        return params, wanted

    async def Classify(self, request: pb.ClassifyRequest, context: aio.ServicerContext) -> pb.ClassifyResponse:
        with self.dataplane.track(request.model) as record:  # counts every outcome, rejections too
            return await self._classify(request, record, deadline_of(context))

    async def _classify(
        self, request: pb.ClassifyRequest, record: RequestRecord, deadline: float | None
    ) -> pb.ClassifyResponse:
        maps = ["word_attention", "sentence_attention"] if request.return_attention else []
        wanted = ["label", "probabilities", *maps]
        self._admit(request.model, "text", "BYTES", (len(request.texts),))
        result = await self.dataplane.infer(
            request.model,
            "",
            {"text": _texts(request.texts)},
            _params(request.backend),
            wanted,
            record=record,
            deadline=deadline,
        )
        out, labels = result.outputs, result.model.config.labels
        words_of = getattr(result.model.pipeline, "words_of", None)
        response = pb.ClassifyResponse()
        for i, label in enumerate(out["label"]):
            item = response.results.add(label=label.decode("utf-8"))
            for j, name in enumerate(labels):
                item.probabilities[name] = float(out["probabilities"][i, j])
            if request.return_attention and words_of is not None:
                for s, words in enumerate(words_of(request.texts[i])):
                    sent = item.sentences.add(words=words, weight=float(out["sentence_attention"][i, s]))
                    sent.word_weights.extend(out["word_attention"][i, s, : len(words)].tolist())
        return response

    async def Sort(self, request: pb.SortRequest, context: aio.ServicerContext) -> pb.SortResponse:
        with self.dataplane.track(request.model) as record:  # counts every outcome, rejections too
            return await self._sort(request, record, deadline_of(context))

    async def _sort(self, request: pb.SortRequest, record: RequestRecord, deadline: float | None) -> pb.SortResponse:
        lengths = {len(r.values) for r in request.values}
        if len(lengths) != 1:
            raise InvalidInput("send one or more value lists, all of the same length")
        self._admit(request.model, "values", "INT64", (len(request.values), *lengths))
        rows = [list(r.values) for r in request.values]
        values = np.array(rows, dtype=np.int64)
        wanted = ["order"] + (["attention"] if request.return_attention else [])
        result = await self.dataplane.infer(
            request.model, "", {"values": values}, _params(request.backend), wanted, record=record, deadline=deadline
        )
        response = pb.SortResponse()
        for i, order in enumerate(result.outputs["order"]):
            order = [int(p) for p in order if p >= 0]
            item = response.results.add(order=order, values=[rows[i][p] for p in order])
            if request.return_attention:
                item.attention.rows.extend(str(rows[i][p]) for p in order)
                item.attention.cols.extend(str(v) for v in rows[i])
                item.attention.weights.extend(result.outputs["attention"][i].reshape(-1).tolist())
        return response
