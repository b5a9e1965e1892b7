"""A memory ceiling for tests: a reader that allocates what a header claims fails fast."""

from __future__ import annotations

import resource
from contextlib import contextmanager

HEADROOM = 1 << 30  # bytes of address space a reader may add: far below any blow-up


@contextmanager
def memory_limit(headroom: int = HEADROOM):
    """Lower the soft address-space limit to what is in use + `headroom`, then restore it
    (Linux: /proc/self/statm)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as statm:
        in_use = int(statm.read().split()[0]) * resource.getpagesize()
    limit = in_use + headroom if hard == resource.RLIM_INFINITY else min(in_use + headroom, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
