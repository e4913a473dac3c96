"""The gRPC server: services, health, reflection, message limits; start() returns the bound port."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from protocol.gen.attnserve.v1 import attention_pb2, attention_pb2_grpc
from protocol.gen.inference import grpc_service_pb2, grpc_service_pb2_grpc
from serving.grpc.attention_servicer import AttentionServicer
from serving.grpc.drain import DrainGate, drain
from serving.grpc.infer_body import parse_infer_request
from serving.grpc.inference_servicer import InferenceServicer
from serving.grpc.intake import IntakeInterceptor
from serving.grpc.interceptors import ErrorInterceptor
from serving.settings import INT32_MAX, GrpcSettings

INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
# the unary methods whose requests name a model: a call that ends before it is read is counted
MODEL_METHODS = (INFER_METHOD, "/attnserve.v1.Attention/Translate", "/attnserve.v1.Attention/Classify",
                 "/attnserve.v1.Attention/Sort")  # fmt: skip
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class GrpcServer:
    """Owns the grpc.aio server. `start` binds and returns the port; `stop` drains within a grace period."""

    def __init__(
        self,
        settings: GrpcSettings,
        inference: InferenceServicer,
        attention: AttentionServicer,
        health: health_aio.HealthServicer,
        access: Sequence[aio.ServerInterceptor] = (),
        credentials: grpc.ServerCredentials | None = None,
        on_unread: Callable[[str], None] = lambda code: None,
    ) -> None:
        """`access` interceptors run before the error interceptor (which caches handlers per
        method); `credentials` None serves plaintext; `on_unread` counts a model call that ended
        before its request was read (serving.grpc.intake)."""
        self.settings = settings
        self.health = health
        self.credentials = credentials
        # The intake, the gate and the error interceptor cache a handler per method, so every interceptor that
        # decides per call (access: its answer depends on the call's metadata) runs before them.
        self.gate = DrainGate()  # refuses calls once stopping, before the model does any work
        errors = ErrorInterceptor(deserializers={INFER_METHOD: parse_infer_request})
        self.server = aio.server(
            interceptors=[*access, IntakeInterceptor(MODEL_METHODS, on_unread), self.gate, errors],
            options=[
                ("grpc.max_receive_message_length", settings.max_message_bytes),
                ("grpc.max_send_message_length", INT32_MAX),  # responses: bounded by the models
                ("grpc.so_reuseport", 0),
            ],
        )
        grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(inference, self.server)
        attention_pb2_grpc.add_AttentionServicer_to_server(attention, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(health, self.server)
        if settings.reflection:
            from grpc_reflection.v1alpha import reflection, reflection_pb2

            from protocol.gen import POOL

            # Our descriptors live in a private pool (tritonclient registers the same names in
            # the default one); reflection must look there, with health and itself added.
            for fd in (health_pb2.DESCRIPTOR, reflection_pb2.DESCRIPTOR):
                POOL.AddSerializedFile(fd.serialized_pb)

            names = [
                grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
                attention_pb2.DESCRIPTOR.services_by_name["Attention"].full_name,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ]
            reflection.enable_server_reflection(names, self.server, pool=POOL)
        self.port = 0

    async def start(self) -> int:
        address = f"{self.settings.host}:{self.settings.port}"
        if self.credentials is None:
            self.port = self.server.add_insecure_port(address)
        else:
            self.port = self.server.add_secure_port(address, self.credentials)
        if self.port == 0:
            raise OSError(f"could not bind {self.settings.host}:{self.settings.port}")
        await self.server.start()
        return self.port

    async def stop(self, grace: float) -> bool:
        """Refuse new calls (UNAVAILABLE), let accepted ones finish for up to `grace` seconds, stop.

        Returns True when every accepted call finished in time (serving.grpc.drain).
        """
        await self.health.enter_graceful_shutdown()
        return await drain(self.gate, self.server, grace)

    async def wait(self) -> None:
        await self.server.wait_for_termination()
