"""virtio for keel.vmm: the split virtqueue, the virtio-mmio transport and the devices.

Sans-IO cores (virtqueue.py, mmio.py, the device classes) with thin I/O edges (a TAP backend
for net, a file backend for block, os.urandom for rng). See the package README for the
security model: guest rings are hostile, faults become NEEDS_RESET, never a VMM crash.
"""

from keel.vmm.virtio.chain import DescriptorChain, Segment
from keel.vmm.virtio.device import VirtioDevice
from keel.vmm.virtio.errors import VirtioConfigError, VirtioError, VirtqueueError
from keel.vmm.virtio.mmio import MmioTransport, kernel_command_line_fragment, notify_address
from keel.vmm.virtio.virtqueue import Virtqueue

__all__ = [
    "DescriptorChain",
    "MmioTransport",
    "Segment",
    "VirtioConfigError",
    "VirtioDevice",
    "VirtioError",
    "Virtqueue",
    "VirtqueueError",
    "kernel_command_line_fragment",
    "notify_address",
]
