"""The scheduler between the data plane and the backends: admission, deadlines, dynamic batching.

One `Scheduler` per loaded model version and backend (`Schedulers` builds them on first use and
drops them with their version). The data plane hands it one prepared request at a time; the
scheduler queues it, merges compatible requests into one padded batch (`Pipeline.execute`),
drops requests whose deadline passed or whose client left before they are computed, and refuses
new ones at once when the queue is full.
"""

from serving.scheduler.batcher import Done, Execution, Scheduler
from serving.scheduler.policy import Policy
from serving.scheduler.registry import Schedulers

__all__ = ["Done", "Execution", "Policy", "Scheduler", "Schedulers"]
