"""Default plugin ``routes``: direct paths before relayed ones, then by smoothed RTT.

Paths whose kind either end's route policy forbids are dropped. Unmeasured paths (RTT None,
or NaN) come after measured ones of the same kind. The sort is stable, so equal paths keep
the order the engine gave them.
"""

from __future__ import annotations

import math
from typing import Sequence

from connet_core import hookimpl
from connet_core.model import PathCandidate, PathKind, RoutePolicy

__all__ = ["connet_select_routes", "order_routes"]


def _sort_key(candidate: PathCandidate) -> tuple[bool, bool, float]:
    rtt = candidate.rtt
    if rtt is None or math.isnan(rtt):
        return (candidate.kind is not PathKind.DIRECT, True, 0.0)
    return (candidate.kind is not PathKind.DIRECT, False, rtt)


def order_routes(
    local_policy: RoutePolicy, remote_policy: RoutePolicy, candidates: Sequence[PathCandidate]
) -> list[PathCandidate]:
    """The allowed ``candidates``, best first."""
    allowed = [c for c in candidates if local_policy.allows(c.kind) and remote_policy.allows(c.kind)]
    return sorted(allowed, key=_sort_key)


@hookimpl(trylast=True)
def connet_select_routes(
    name: str,
    local_policy: RoutePolicy,
    remote_policy: RoutePolicy,
    candidates: Sequence[PathCandidate],
) -> list[PathCandidate]:
    return order_routes(local_policy, remote_policy, candidates)
