"""Loading and unloading models through the API (Triton's repository extension), for both transports.

The control mode (`model_control_mode`) and the `control` scope are checked before these run:
by serving.grpc.auth for gRPC, by serving.http.api for REST.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor

from serving.overrides import parse_override
from serving.repository import ModelRepository

CONTROL_DISABLED = (
    "model control is disabled on this server (model_control_mode: none): "
    "start it with --model-control-mode explicit (or ATTNSERVE_MODEL_CONTROL_MODE=explicit) "
    "to load and unload models through the API"
)


class ModelControl:
    """Load (with a client's config override) and unload models; `on_change(name)` after each."""

    def __init__(self, repository: ModelRepository, executor: Executor, on_change: Callable[[str], None]) -> None:
        self.repository = repository
        self.executor = executor
        self.on_change = on_change

    async def load(self, name: str, config: str | None = None) -> None:
        """Load (or reload) `name`; `config`: a JSON override of config.yaml fields, checked
        against the operator's limits before the model's state changes."""
        override = None
        if config is not None:
            override = parse_override(config)
            self.repository.check_client_override(override)
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self.executor, self.repository.load, name, override)
        finally:
            self.on_change(name)

    def unload(self, name: str) -> None:
        self.repository.unload(name)
        self.on_change(name)
