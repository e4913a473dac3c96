"""The scheduler between the data plane and the backends: admission, deadlines, dynamic batching,
iteration-level decode batching.

One scheduler per loaded model version and backend (`Schedulers` builds them on first use and
drops them with their version): a `Scheduler` (request-level) or, for `decode_batching: iteration`,
an `IterationScheduler`. Both keep one contract, `BaseScheduler` (submit, expire, leave, drain; see
serving.scheduler.base), which also holds the skeleton they share. The data plane hands a scheduler
one prepared request at a time; the scheduler queues it, merges compatible requests into one padded
batch (`Pipeline.execute`) or admits them into the running decode batch between decoder steps,
drops requests whose deadline passed or whose client left before they are computed, and refuses
new ones at once when the queue is full.
"""

from serving.scheduler.base import BaseScheduler, Calls, Done, Execution, Job
from serving.scheduler.batcher import Scheduler
from serving.scheduler.iteration import IterationScheduler, StepCallback
from serving.scheduler.policy import Policy
from serving.scheduler.registry import Schedulers

__all__ = [
    "BaseScheduler", "Calls", "Done", "Execution", "IterationScheduler", "Job", "Policy", "Scheduler", "Schedulers",
    "StepCallback",
]  # fmt: skip
