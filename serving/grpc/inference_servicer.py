"""`inference.GRPCInferenceService` (Open Inference Protocol, Triton's field numbers): thin servicer.

Each RPC converts protobuf, calls the repository or the data plane, and converts back; errors
are ServingError subclasses mapped to status codes by serving.grpc.interceptors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

from google.protobuf import json_format
from grpc import StatusCode, aio

from protocol import codec
from protocol.gen.inference import grpc_service_pb2 as pb
from protocol.gen.inference import grpc_service_pb2_grpc as pb_grpc
from protocol.gen.inference import model_config_pb2 as mc
from serving.dataplane import DataPlane
from serving.describe import (
    EXTENSIONS,
    SERVER_NAME,
    model_config,
    model_metadata,
    model_ready,
    model_statistics,
    repository_index,
)
from serving.grpc.deadline import deadline_of
from serving.grpc.infer_body import SplitRequest
from serving.grpc.interceptors import end_call, status_of
from serving.model_control import ModelControl
from serving.repository import ModelRepository
from serving.stats import StatsRegistry

log = logging.getLogger(__name__)

STREAM_METHOD = "/inference.GRPCInferenceService/ModelStreamInfer"
FINAL = "triton_final_response"  # response parameter: the request's last response (Triton's decoupled models)
EMPTY_FINAL = "triton_enable_empty_final_response"  # request parameter (tritonclient): flags-only final responses


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """The Open Inference Protocol over the model repository and data plane."""

    def __init__(
        self,
        repository: ModelRepository,
        dataplane: DataPlane,
        stats: StatsRegistry,
        version: str,
        is_ready: Callable[[], bool],
        control: ModelControl,
        is_draining: Callable[[], bool] = lambda: False,
    ) -> None:
        self.repository = repository
        self.dataplane = dataplane
        self.stats = stats
        self.version = version
        self.is_ready = is_ready
        self.control = control  # load / unload
        self.is_draining = is_draining  # shutting down: no model reports ready

    # --- health and metadata ---------------------------------------------------------

    async def ServerLive(self, request: pb.ServerLiveRequest, context: aio.ServicerContext) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: aio.ServicerContext) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.is_ready())

    async def ModelReady(self, request: pb.ModelReadyRequest, context: aio.ServicerContext) -> pb.ModelReadyResponse:
        ready = model_ready(self.repository, request.name, request.version, self.is_draining())
        return pb.ModelReadyResponse(ready=ready)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=self.version, extensions=EXTENSIONS)

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        md = model_metadata(self.repository, request.name, request.version)

        def meta(t: Any) -> pb.ModelMetadataResponse.TensorMetadata:
            return pb.ModelMetadataResponse.TensorMetadata(name=t.name, datatype=t.datatype, shape=list(t.shape))

        return pb.ModelMetadataResponse(
            name=md.name,
            versions=list(md.versions),
            platform=md.platform,
            inputs=[meta(t) for t in md.inputs],
            outputs=[meta(t) for t in md.outputs],
        )

    async def ModelConfig(self, request: pb.ModelConfigRequest, context: aio.ServicerContext) -> pb.ModelConfigResponse:
        model = self.repository.get(request.name, request.version)
        return pb.ModelConfigResponse(config=json_format.ParseDict(model_config(model), mc.ModelConfig()))

    # --- inference -------------------------------------------------------------------

    async def ModelInfer(
        self, body: pb.ModelInferRequest | SplitRequest, context: aio.ServicerContext
    ) -> pb.ModelInferResponse:
        # a large body arrives split (serving.grpc.infer_body): its raw tensors are views of it
        request, raw = (body.message, body.raw) if isinstance(body, SplitRequest) else (body, None)
        with self.dataplane.track(request.model_name) as record:  # counts every outcome, rejections too
            # the serving model checks the tensors' headers before any data is read, and bounds
            # each BYTES element before it is copied: a hostile request costs its headers
            pipeline = self.dataplane.pipeline(request.model_name, request.model_version)
            inputs = codec.request_inputs(request, pipeline.check_headers, pipeline.max_item_bytes, raw)
            params = codec.parameters(request.parameters)
            requested = [o.name for o in request.outputs]
            result = await self.dataplane.infer(
                request.model_name, request.model_version, inputs, params, requested,
                record=record, deadline=deadline_of(context),
            )  # fmt: skip
            response = pb.ModelInferResponse(
                model_name=result.model.config.name, model_version=str(result.model.version), id=request.id
            )
            response.parameters["backend"].string_param = result.backend
            codec.response_outputs(response, result.outputs)
            return response

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[pb.ModelInferRequest], context: aio.ServicerContext
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Triton's streaming inference, as its decoupled models answer: the requests of a stream
        run concurrently, each answered by one response per decoded token for a greedy translation
        (else by its whole answer), its last one with `triton_final_response` true. A request that
        fails is answered by an `error_message` (its id in `infer_response`); the stream stays open
        for the others. A client that closes the stream, or whose deadline passes, stops the work."""
        deadline = deadline_of(context)
        responses: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()
        reader = asyncio.create_task(self._read_stream(request_iterator, responses.put_nowait, deadline))
        try:
            while (response := await responses.get()) is not None:
                yield response
        finally:
            reader.cancel()  # the client left: its requests leave their queues and batches
        await reader  # a failure to read the stream ends it with that failure

    async def _read_stream(
        self,
        requests: AsyncIterator[pb.ModelInferRequest],
        send: Callable[[pb.ModelStreamInferResponse | None], None],
        deadline: float | None,
    ) -> None:
        """Start each request of a stream as it arrives; None once the stream and all its requests ended."""
        running: set[asyncio.Task[None]] = set()
        try:
            async for request in requests:
                task = asyncio.create_task(self._stream_request(request, send, deadline))
                running.add(task)
                task.add_done_callback(running.discard)
            if running:
                await asyncio.gather(*running)
        finally:
            for task in running:
                task.cancel()
            send(None)

    async def _stream_request(
        self,
        request: pb.ModelInferRequest,
        send: Callable[[pb.ModelStreamInferResponse | None], None],
        deadline: float | None,
    ) -> None:
        """Answer one request of a stream (see ModelStreamInfer)."""
        final = False
        try:
            with self.dataplane.track(request.model_name) as record:  # one request, however many parts
                pipeline = self.dataplane.pipeline(request.model_name, request.model_version)
                inputs = codec.request_inputs(request, pipeline.check_headers, pipeline.max_item_bytes)
                params = codec.parameters(request.parameters)
                params.pop(EMPTY_FINAL, None)  # our last response always has outputs: never an empty one
                requested = [o.name for o in request.outputs]
                parts = self.dataplane.infer_stream(
                    request.model_name, request.model_version, inputs, params, requested,
                    record=record, deadline=deadline,
                )  # fmt: skip
                async with contextlib.aclosing(parts):
                    async for part in parts:
                        response = pb.ModelInferResponse(
                            model_name=part.model.config.name, model_version=str(part.model.version), id=request.id
                        )
                        response.parameters["backend"].string_param = part.backend
                        response.parameters[FINAL].bool_param = part.final
                        codec.response_outputs(response, part.outputs)
                        send(pb.ModelStreamInferResponse(infer_response=response))
                        final = part.final
        except Exception as exc:  # counted by the record; answered in the stream, which goes on
            if final:  # nothing may follow a final response: the failure is only logged
                log.warning("stream request %r failed after its final response: %s", request.id, exc)
                return
            _, message = status_of(STREAM_METHOD, request, exc)
            failed = pb.ModelInferResponse(model_name=request.model_name, model_version=request.model_version)
            failed.id = request.id
            send(pb.ModelStreamInferResponse(error_message=message, infer_response=failed))

    # --- statistics ---------------------------------------------------------------

    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: aio.ServicerContext
    ) -> pb.ModelStatisticsResponse:
        stats = model_statistics(self.repository, self.stats, request.name, request.version)
        return cast(
            pb.ModelStatisticsResponse, json_format.ParseDict({"model_stats": stats}, pb.ModelStatisticsResponse())
        )

    # --- repository ------------------------------------------------------------------

    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: aio.ServicerContext
    ) -> pb.RepositoryIndexResponse:
        index = {"models": repository_index(self.repository, request.ready)}
        return cast(pb.RepositoryIndexResponse, json_format.ParseDict(index, pb.RepositoryIndexResponse()))

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: aio.ServicerContext
    ) -> pb.RepositoryModelLoadResponse:
        config = request.parameters["config"].string_param if "config" in request.parameters else None
        await self.control.load(request.model_name, config)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: aio.ServicerContext
    ) -> pb.RepositoryModelUnloadResponse:
        self.control.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    # --- not offered -----------------------------------------------------------------

    async def _unimplemented(self, request: Any, context: aio.ServicerContext) -> None:
        message = "attnserve does not offer shared memory, trace or log settings"
        await end_call(context, StatusCode.UNIMPLEMENTED, message)

    SystemSharedMemoryStatus = _unimplemented
    SystemSharedMemoryRegister = _unimplemented
    SystemSharedMemoryUnregister = _unimplemented
    CudaSharedMemoryStatus = _unimplemented
    CudaSharedMemoryRegister = _unimplemented
    CudaSharedMemoryUnregister = _unimplemented
    TraceSetting = _unimplemented
    LogSettings = _unimplemented
