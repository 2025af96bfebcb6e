"""Process-wide tuning for running the proxy as its own process (the CLI).

glibc returns freed heap memory to the kernel eagerly and serves large
blocks with mmap: a proxy that allocates a ~1 MiB buffer per read then pays
a brk/mmap, page faults and zeroing for every megabyte it relays. Raising the
two thresholds keeps a few MiB of buffers in the heap for reuse. This is a
process-global setting, so the library never does it behind a user's back;
the CLI opts in.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_allocator(*, keep_free: int = 8 * 1024 * 1024, mmap_above: int = 4 * 1024 * 1024) -> bool:
    """Ask glibc to keep ``keep_free`` bytes of freed heap and mmap only blocks over ``mmap_above``.

    Returns False (and changes nothing) where there is no glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_above)) and bool(mallopt(_M_TRIM_THRESHOLD, keep_free))
