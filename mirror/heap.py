"""glibc's allocator, bounded for a process of many threads and large pages. Pure, no logging.

Worker threads allocate pages, texts and parse trees; glibc keeps what they free for reuse,
in an arena per busy thread and as fragments of its heaps, so a process's resident memory
is the high-water mark of its arenas, not what it holds. `bound_malloc_arenas` caps the
arenas and sends large blocks to mappings of their own (returned when freed); `give_back`
returns the free pages inside the heaps after a large page was weighed, whose parse trees
are thousands of small blocks: resiliparse's tree of a 2.5 MB page takes ~33 MiB of them,
which stay resident once freed (measured: 52 -> 85 -> 80 MiB; 52 after `malloc_trim`).
Elsewhere than on glibc both do nothing.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

MALLOC_ARENAS = 2  # glibc's default is 8 per core: a heap per busy thread
_M_ARENA_MAX = -8  # glibc's mallopt parameter numbers
_M_MMAP_THRESHOLD = -3
# Blocks from this size up get their own mapping, returned to the system when freed. glibc's
# default starts at 128 KiB and rises with each large block freed (up to 32 MiB), after which
# pages, texts and parse trees land in the arenas and stay there as fragments: measured on the
# mutated round of 2,000 pages, peak RSS 132-142 MiB with the default, 119-121 MiB at 64 KiB.
MMAP_THRESHOLD = 64 * 1024
# Input (both sides of a change, in bytes) from which weighing it is followed by `give_back`:
# a trim costs ~0.05 ms on an idle heap and ~5 ms after a 2.5 MB page (the pages it returns),
# against ~10 ms to weigh a 100 KB change and ~400 ms a 2.5 MB one.
GIVE_BACK_FROM = 256 * 1024
P = ParamSpec("P")
R = TypeVar("R")


@functools.cache
def _libc() -> Any:
    """Return the process's own symbols, libc's among them, or None where they cannot be loaded.

    Not `ctypes.util.find_library`, which starts `/sbin/ldconfig` in a child process.
    """
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


def bound_malloc_arenas() -> bool:
    """Cap glibc's malloc arenas at `MALLOC_ARENAS` and fix its mmap threshold at `MMAP_THRESHOLD`;
    return whether both took (glibc only).

    Each worker thread that allocates a page gets an arena of its own, and freed pages stay
    in it: measured on a round of 2,000 pages with 200 changes, 16 threads, peak RSS 255 MB
    with the default and 135 MB with 2 arenas, and the round no slower (the interpreter lock
    serialises most allocations anyway). As `MALLOC_ARENA_MAX=2` and `MALLOC_MMAP_THRESHOLD_`
    would, before the threads start.
    """
    libc = _libc()
    try:
        arenas = bool(libc.mallopt(_M_ARENA_MAX, MALLOC_ARENAS))
        return arenas and bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except AttributeError:  # not glibc (or no libc at all): its allocator has no such knob
        return False


def give_back() -> bool:
    """Return the free pages of the allocator's heaps to the system; return whether it could (glibc only).

    ctypes lets go of the interpreter lock for the call: other threads go on meanwhile.
    """
    try:
        return bool(_libc().malloc_trim(0))
    except AttributeError:
        return False


def given_back(fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """Return `fn(*args, **kwargs)`, then give back the heaps' free pages: a text helper's job.

    A helper (`mirror.textpool`) only ever gets large changes: without this, each keeps the
    high-water mark of its parse trees (~30 MiB of a 2.5 MB page's) between them. It lives
    here, not in `mirror.textpool`, because a helper imports the module of the function it is
    sent: this one imports nothing of the daemon's (structlog alone is ~8 MiB in a helper).
    """
    try:
        return fn(*args, **kwargs)
    finally:
        give_back()
