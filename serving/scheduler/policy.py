"""A scheduler's policy, read from the model's config.yaml (Triton's `dynamic_batching` names)."""

from __future__ import annotations

from dataclasses import dataclass

from runtime.config import ModelConfig


@dataclass(frozen=True)
class Policy:
    """How one scheduler admits, batches and times out requests.

    Without `dynamic_batching` every request runs alone and up to `concurrency` run at once (the
    worker threads), as Triton's default scheduler runs one request per model instance.
    """

    max_batch_size: int  # items per executed batch
    batching: bool  # merge queued requests of one key
    concurrency: int  # batches executing at once
    max_queue_delay_s: float = 0.0
    preferred: tuple[int, ...] = ()
    max_queue_size: int = 0  # 0: unbounded
    default_timeout_s: float = 0.0  # 0: none

    @classmethod
    def of(cls, config: ModelConfig, workers: int) -> Policy:
        batching = config.dynamic_batching
        if batching is None:
            return cls(max_batch_size=config.max_batch_size, batching=False, concurrency=workers)
        return cls(
            max_batch_size=config.max_batch_size,
            batching=True,
            # One batch at a time: the requests that arrive while it runs form the next batch.
            concurrency=1,
            max_queue_delay_s=batching.max_queue_delay_microseconds / 1e6,
            preferred=tuple(batching.preferred_batch_size),
            max_queue_size=batching.max_queue_size,
            default_timeout_s=batching.default_timeout_microseconds / 1e6,
        )
