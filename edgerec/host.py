"""Host-process settings for training and evaluation on CPU.

Full-softmax training and full-ranking evaluation allocate and free a few (positions,
items) float matrices per batch, tens of MB each (900 x 12,101 floats is 44 MB). glibc's
malloc serves blocks that large with a fresh ``mmap`` and returns them with ``munmap``, so
every such tensor is paid for again in page faults on first touch: on the 2-core
development host a 44 MB ``clone`` took about 11 ms that way and about 1-4 ms from a heap
that keeps its memory. :func:`tune_malloc` raises glibc's mmap and trim thresholds so
these blocks are reused from the heap; the process keeps its peak heap instead of giving
memory back between batches. Measured effects are in ``benchmarks/RESULTS.md`` ("Host
allocator").

The ``edgerec`` commands that train or evaluate call it; a Python user calls it once at
the start of a program. It is process-wide, so the library never calls it on import.
Set ``EDGEREC_TUNE_MALLOC=0`` to leave malloc alone; it is also left alone when the
process already tunes malloc (``MALLOC_*_`` variables or ``glibc.malloc`` tunables) and
on platforms without glibc.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

logger = logging.getLogger(__name__)

__all__ = ["tune_malloc", "MMAP_THRESHOLD", "TRIM_THRESHOLD"]

# mallopt parameter numbers from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 1 << 30  # blocks below 1 GiB come from the heap
TRIM_THRESHOLD = (1 << 31) - 1  # keep up to 2 GiB of free heap instead of returning it
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)  # the symbols already loaded: the libc whose malloc this process uses
        libc.gnu_get_libc_version  # present in glibc only (not musl)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def tune_malloc(environ: dict[str, str] | None = None) -> bool:
    """Keep large freed blocks in glibc's heap (see the module docstring). Returns True if applied."""
    env = os.environ if environ is None else environ
    if env.get("EDGEREC_TUNE_MALLOC", "1").strip().lower() in ("0", "false", "no", "off"):
        logger.debug("malloc left as it is: EDGEREC_TUNE_MALLOC=%s", env["EDGEREC_TUNE_MALLOC"])
        return False
    if any(k in env for k in _USER_SETTINGS) or "glibc.malloc" in env.get("GLIBC_TUNABLES", ""):
        logger.debug("malloc left as it is: the environment already sets it")
        return False
    libc = _glibc()
    if libc is None:
        logger.debug("malloc left as it is: not glibc")
        return False
    ok = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if ok:
        logger.debug("glibc malloc: mmap threshold %d, trim threshold %d", MMAP_THRESHOLD, TRIM_THRESHOLD)
    else:
        logger.warning("glibc mallopt refused the thresholds; large tensors stay mmap-allocated")
    return ok
