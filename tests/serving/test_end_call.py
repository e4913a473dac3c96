"""`end_call`: a call that gRPC has already ended is ended quietly (cancelled), any other failure
to send the status is raised. (The race itself, a deadline passing while the server answers, is
hit by tests/serving/test_admission.py, whose server log must carry no traceback.)"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc import aio

from serving.grpc.interceptors import end_call


class Context:
    """The three questions `end_call` asks of a grpc.aio ServicerContext, and an abort that fails
    as gRPC's does when the call has ended (ExecuteBatchError is an Exception)."""

    def __init__(self, *, ended: bool, remaining: float | None = 1.0, abort_fails: bool = True) -> None:
        self.ended, self.remaining, self.abort_fails = ended, remaining, abort_fails
        self.aborted: list[tuple[grpc.StatusCode, str]] = []

    async def abort(self, code: grpc.StatusCode, message: str) -> None:
        self.aborted.append((code, message))
        if self.abort_fails:
            raise RuntimeError('Failed "execute_batch"')
        raise aio.AbortError

    def done(self) -> bool:
        return self.ended

    def cancelled(self) -> bool:
        return False

    def time_remaining(self) -> float | None:
        return self.remaining


def end(context: Context) -> None:
    asyncio.run(end_call(context, grpc.StatusCode.DEADLINE_EXCEEDED, "late"))  # type: ignore[arg-type]


def test_a_live_call_is_aborted_with_its_status():
    context = Context(ended=False, abort_fails=False)
    with pytest.raises(aio.AbortError):
        end(context)
    assert context.aborted == [(grpc.StatusCode.DEADLINE_EXCEEDED, "late")]


@pytest.mark.parametrize(("ended", "remaining"), [(True, 1.0), (False, 0.0), (False, -0.01)])
def test_a_call_gRPC_already_ended_ends_cancelled(ended, remaining):
    with pytest.raises(asyncio.CancelledError):
        end(Context(ended=ended, remaining=remaining))


@pytest.mark.parametrize("remaining", [None, 5.0])
def test_any_other_failure_to_answer_is_raised(remaining):
    with pytest.raises(RuntimeError, match="execute_batch"):
        end(Context(ended=False, remaining=remaining))
