"""A full memory barrier for the places where the virtio spec requires one.

Why this is enough, and where it matters: the guest's driver runs on another CPU and shares
the rings with us. The spec (2.7.7, 2.7.10, 2.7.13) needs three orderings on the device side:
1. read avail->idx before the ring entries and descriptors it publishes (read barrier);
2. write a used-ring entry before used->idx (write barrier);
3. write used->idx (or avail_event) before reading used_event/avail->flags (or avail->idx
   again) to decide whether to interrupt (full barrier).
On x86 (the only architecture keel.vmm runs guests on), loads are not reordered with loads and
stores are not reordered with stores, and CPython performs every memoryview/mmap access as a
plain load or store in program order, so (1) and (2) hold with no instruction. (3) is a store
followed by a load, which x86 may reorder through its store buffer; it needs a locked
instruction. Acquiring an uncontended lock is a lock-prefixed compare-and-exchange in glibc,
a full barrier on x86. (keel.native could expose `__atomic_thread_fence` to make this explicit.)
"""

from __future__ import annotations

import threading

_FENCE = threading.Lock()


def full_barrier() -> None:
    """Order every earlier store before every later load (a locked instruction on x86)."""
    with _FENCE:
        pass
