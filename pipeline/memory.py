"""Memory a step has freed, given back to the system before the next heavy step of the same process."""

from __future__ import annotations

import ctypes
import gc


def release_memory() -> None:
    """Give freed memory back to the system: Arrow's allocator and glibc's keep freed pages for reuse, so without
    this one step's garbage stays in the process's RSS beside the next step's working set."""
    import pyarrow as pa

    gc.collect()
    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
