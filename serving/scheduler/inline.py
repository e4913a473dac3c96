"""When a lone request may run on the event loop instead of a worker thread.

Running a batch-1 request on the loop saves two thread hand-offs (about 0.1-0.2 ms) but blocks
the loop while it computes: under concurrent load that stops the loop from taking in the next
requests while the backends compute, and serialises the server. An inline run cannot see requests
arriving meanwhile (the loop is busy), so the gate learns the load from executions in threads:
every PROBE_EVERY lone requests, PROBE_LEN run in a thread; one that sees company (another request
arriving while it computes, or queued when it ends) closes the gate, and only QUIET_TO_INLINE
company-less executions in a row open it again.
"""

from __future__ import annotations

PROBE_EVERY = 32
PROBE_LEN = 8
QUIET_TO_INLINE = 32


class InlineGate:
    """The adaptive choice between the loop and a worker thread for lone requests (see the module)."""

    def __init__(self) -> None:
        self.open = True
        self._lone = 0  # lone requests run inline since the last probe
        self._probing = 0  # lone requests still to run in a thread in this probe
        self._quiet = 0  # company-less executions in a row while closed

    def allow(self) -> bool:
        """May this lone request (the model idle, nothing else in flight) run on the loop?"""
        if not self.open:
            return False
        if self._probing:
            self._probing -= 1
            return False
        self._lone += 1
        if self._lone < PROBE_EVERY:
            return True
        self._lone, self._probing = 0, PROBE_LEN - 1
        return False

    def observed(self, company: bool) -> None:
        """An execution in a worker thread ended; `company`: other requests arrived or waited meanwhile."""
        if company:
            self.open, self._quiet, self._probing = False, 0, 0
        elif not self.open:
            self._quiet += 1
            if self._quiet >= QUIET_TO_INLINE:
                self.open, self._lone = True, 0
