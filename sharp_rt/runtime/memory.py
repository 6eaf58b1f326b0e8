"""Keep glibc from returning and re-faulting the scratch memory of chunked numpy loops.

The chunked kernels (unprojection, writers) allocate and free a few MB of
temporaries per chunk.  glibc's malloc gives freed memory at the top of the heap
back to the OS once more than ``M_TRIM_THRESHOLD`` (128 KiB at start-up) is free,
and serves blocks above ``M_MMAP_THRESHOLD`` (128 KiB) with fresh ``mmap`` calls,
so every chunk page-faults its temporaries in again: ~1000 faults per chunk of
16384 Gaussians here, about a third of the kernel's time.  glibc raises both
thresholds by itself when a large ``mmap``-ed block is freed (its "dynamic mmap
threshold"); numpy programs trigger that all the time, and
:func:`raise_malloc_thresholds` does it on purpose, once, with an untouched
block.  Elsewhere (other allocators) it costs one allocation and does nothing.
"""

from __future__ import annotations

import numpy as np

# glibc caps its dynamic mmap threshold at 32 MiB (64-bit); the trim threshold becomes twice this.
THRESHOLD_BYTES = 16 << 20


def raise_malloc_thresholds(nbytes: int = THRESHOLD_BYTES) -> None:
    """Allocate and free one untouched block of ``nbytes`` to raise glibc's malloc thresholds."""
    block = np.empty(nbytes, dtype=np.uint8)  # mmap-ed, never touched: no page is faulted in
    del block
