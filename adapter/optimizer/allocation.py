"""A candidate allocation: one server on one accelerator with a replica count.

Numbers are float32 as in the reference, so the log strings and the solver's
comparisons (values, regrets) match it exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from adapter.model.system import AllocationData

F32 = np.float32
# Changing accelerator costs a tenth of the old and new allocations' cost on top.
ACCELERATOR_CHANGE_PENALTY = F32(0.1)


@dataclass(frozen=True, slots=True)
class Allocation:
    accelerator: str
    num_replicas: int
    max_batch: int
    cost: np.float32
    value: np.float32
    serv_time: np.float32  # predicted mean ITL, ms/token
    wait_time: np.float32  # predicted mean queueing wait, ms
    rho: np.float32  # probability a replica is busy
    max_rate_per_replica: np.float32  # req/ms a replica can take within its SLOs

    @property
    def max_rpm(self) -> np.float32:
        return self.max_rate_per_replica * F32(1000) * F32(60)

    def scaled_to(self, replicas: int) -> Allocation:
        """A partial allocation (saturation policies): cost and value scale, statistics don't.

        The reference keeps the statistics computed for the full replica count.
        """
        factor = F32(replicas) / F32(self.num_replicas)
        return replace(
            self, num_replicas=replicas, cost=self.cost * factor, value=self.value * factor
        )


def transition_value(current: AllocationData, candidate: Allocation) -> np.float32:
    """The cost of moving from the current allocation to the candidate (the solver's value)."""
    current_cost = F32(current.cost)
    if current.accelerator == candidate.accelerator:
        if current.num_replicas == candidate.num_replicas:
            return F32(0)
        return candidate.cost - current_cost
    return ACCELERATOR_CHANGE_PENALTY * (current_cost + candidate.cost) + (
        candidate.cost - current_cost
    )
