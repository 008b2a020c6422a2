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
    # float32 values held exactly in Python floats (cheap to compare and hash)
    cost: float
    value: float
    serv_time: float  # predicted mean ITL, ms/token
    wait_time: float  # predicted mean queueing wait, ms
    rho: float  # probability a replica is busy
    max_rate_per_replica: float  # req/ms a replica can take within its SLOs

    @property
    def max_rpm(self) -> float:
        return float(F32(self.max_rate_per_replica) * F32(1000) * F32(60))

    def scaled_to(self, replicas: int) -> Allocation:
        """A partial allocation (saturation policies): cost and value scale, statistics don't.

        The reference keeps the statistics computed for the full replica count.
        """
        factor = F32(replicas) / F32(self.num_replicas)
        return replace(
            self,
            num_replicas=replicas,
            cost=float(F32(self.cost) * factor),
            value=float(F32(self.value) * factor),
        )


def transition_value(
    current: AllocationData, accelerator: str, replicas: int, cost: float
) -> float:
    """The cost of moving from the current allocation to a candidate (the solver's value)."""
    current_cost = F32(current.cost)
    new_cost = F32(cost)
    if current.accelerator == accelerator:
        if current.num_replicas == replicas:
            return 0.0
        return float(new_cost - current_cost)
    return float(ACCELERATOR_CHANGE_PENALTY * (current_cost + new_cost) + (new_cost - current_cost))
