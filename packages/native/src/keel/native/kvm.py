"""KVM: the system, VM and vCPU file descriptors and their ioctls.

Why this shape: each level of the KVM API (system, VM, vCPU) is one owned descriptor with the
ioctls that belong to it, every argument is checked before the ioctl, and structures are the
real kernel layouts from <linux/kvm.h> (cffi compiled them), exposed as cffi objects.
`Vcpu.run()` calls KVM_RUN with the GIL released, so vCPU threads run in parallel with Python.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from keel.native._kvm import ffi, lib
from keel.native.checks import (
    UINT16_MAX,
    UINT32_MAX,
    require_aligned,
    require_fd,
    require_int,
    require_writable_buffer,
)
from keel.native.errors import check_result, syscall_error
from keel.native.fd import FdResource, OwnedFd

KVM_DEVICE_PATH = "/dev/kvm"
PAGE_SIZE = mmap.PAGESIZE
# KVM caps the entries KVM_GET_SUPPORTED_CPUID returns at KVM_MAX_CPUID_ENTRIES (256 in 6.x,
# kernel-internal, so not in the uapi header); asking for more is harmless, fewer is E2BIG.
CPUID_ENTRIES_CAPACITY = 512
# The same bound for the MSR index list (the kernel has about 100 to 200 of them).
MSR_INDEX_CAPACITY = 1024
IOEVENTFD_LENGTHS = (0, 1, 2, 4, 8)
MMIO_DATA_CAPACITY = 8

CData = Any  # cffi objects have no precise static type


def _ioctl_ptr(fd: int, request: int, argument: CData, call: str, **details: Any) -> int:
    return check_result(lib.keel_ioctl_ptr(fd, request, argument), call, fd=fd, **details)


def _ioctl_int(fd: int, request: int, argument: int, call: str, **details: Any) -> int:
    return check_result(lib.keel_ioctl_int(fd, request, argument), call, fd=fd, **details)


def flexible_struct(struct_type: str, entry_type: str, count: int) -> tuple[CData, CData]:
    """Zeroed memory for a struct ending in a flexible array of `count` entries.

    Returns (owner, typed pointer): keep the owner alive while the pointer is used.
    """
    raw = ffi.new("char[]", ffi.sizeof(struct_type) + count * ffi.sizeof(entry_type))
    return raw, ffi.cast(f"{struct_type} *", raw)


@dataclass(frozen=True)
class CpuidEntry:
    """One CPUID leaf as KVM describes it (function/index in, registers out)."""

    function: int
    index: int
    flags: int
    eax: int
    ebx: int
    ecx: int
    edx: int


class Kvm(FdResource):
    """The KVM system descriptor (/dev/kvm)."""

    def __init__(self, path: str = KVM_DEVICE_PATH) -> None:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as error:
            raise syscall_error(error.errno or 0, "open", path=path) from None
        super().__init__(OwnedFd(fd, f"KVM system fd ({path})"))
        try:
            version = self.api_version()
            if version != lib.KVM_API_VERSION:
                raise RuntimeError(
                    f"{path} speaks KVM API {version}, keel was built for {lib.KVM_API_VERSION}"
                )
        except BaseException:
            self.close()
            raise

    def api_version(self) -> int:
        return _ioctl_int(self.fileno(), lib.KVM_GET_API_VERSION, 0, "KVM_GET_API_VERSION")

    def check_extension(self, capability: int) -> int:
        """KVM_CHECK_EXTENSION: 0 when the capability is missing, else a positive value."""
        capability = require_int("capability", capability, 0, UINT32_MAX)
        return _ioctl_int(
            self.fileno(), lib.KVM_CHECK_EXTENSION, capability, "KVM_CHECK_EXTENSION",
            capability=capability,
        )

    def vcpu_mmap_size(self) -> int:
        return _ioctl_int(self.fileno(), lib.KVM_GET_VCPU_MMAP_SIZE, 0, "KVM_GET_VCPU_MMAP_SIZE")

    def supported_cpuid(self) -> list[CpuidEntry]:
        """KVM_GET_SUPPORTED_CPUID: what this host's KVM can offer a guest."""
        _keepalive, cpuid = flexible_struct("struct kvm_cpuid2", "struct kvm_cpuid_entry2",
                                     CPUID_ENTRIES_CAPACITY)
        cpuid.nent = CPUID_ENTRIES_CAPACITY
        _ioctl_ptr(self.fileno(), lib.KVM_GET_SUPPORTED_CPUID, cpuid, "KVM_GET_SUPPORTED_CPUID",
                   nent=CPUID_ENTRIES_CAPACITY)
        return [
            CpuidEntry(e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx)
            for e in (cpuid.entries[i] for i in range(cpuid.nent))
        ]

    def msr_index_list(self) -> list[int]:
        """KVM_GET_MSR_INDEX_LIST: the MSRs a VMM may save and restore."""
        _keepalive, listing = flexible_struct("struct kvm_msr_list", "__u32", MSR_INDEX_CAPACITY)
        listing.nmsrs = MSR_INDEX_CAPACITY
        _ioctl_ptr(self.fileno(), lib.KVM_GET_MSR_INDEX_LIST, listing, "KVM_GET_MSR_INDEX_LIST")
        return [listing.indices[i] for i in range(listing.nmsrs)]

    def create_vm(self, machine_type: int = 0) -> Vm:
        machine_type = require_int("machine_type", machine_type, 0, UINT32_MAX)
        fd = _ioctl_int(self.fileno(), lib.KVM_CREATE_VM, machine_type, "KVM_CREATE_VM",
                        machine_type=machine_type)
        return Vm(OwnedFd(fd, "KVM VM fd"), self.vcpu_mmap_size())


class Vm(FdResource):
    """A VM descriptor: memory slots, vCPUs, the in-kernel irqchip and PIT, eventfd wiring."""

    def __init__(self, owned: OwnedFd, vcpu_mmap_size: int) -> None:
        super().__init__(owned)
        self._vcpu_mmap_size = vcpu_mmap_size

    def check_extension(self, capability: int) -> int:
        capability = require_int("capability", capability, 0, UINT32_MAX)
        return _ioctl_int(self.fileno(), lib.KVM_CHECK_EXTENSION, capability,
                          "KVM_CHECK_EXTENSION", capability=capability)

    def set_user_memory_region(
        self, slot: int, guest_phys_addr: int, memory: Any, flags: int = 0
    ) -> None:
        """Map `memory` (a writable buffer, page aligned, e.g. an mmap) at `guest_phys_addr`.

        The caller keeps `memory` alive and unchanged in size while the slot exists.
        An empty buffer deletes the slot.
        """
        slot = require_int("slot", slot, 0, UINT16_MAX)
        require_aligned("guest_phys_addr", require_int("guest_phys_addr", guest_phys_addr),
                        PAGE_SIZE)
        flags = require_int("flags", flags, 0, UINT32_MAX)
        view = require_writable_buffer("memory", memory)
        size = view.nbytes
        require_aligned("memory size", size, PAGE_SIZE)
        host_address = int(ffi.cast("uintptr_t", ffi.from_buffer(view))) if size else 0
        require_aligned("memory host address", host_address, PAGE_SIZE)
        region = ffi.new("struct kvm_userspace_memory_region *", {
            "slot": slot, "flags": flags, "guest_phys_addr": guest_phys_addr,
            "memory_size": size, "userspace_addr": host_address,
        })
        _ioctl_ptr(self.fileno(), lib.KVM_SET_USER_MEMORY_REGION, region,
                   "KVM_SET_USER_MEMORY_REGION", slot=slot,
                   guest_phys_addr=hex(guest_phys_addr), size=hex(size))

    def set_tss_addr(self, address: int) -> None:
        address = require_int("address", address, 0, UINT32_MAX)
        _ioctl_int(self.fileno(), lib.KVM_SET_TSS_ADDR, address, "KVM_SET_TSS_ADDR",
                   address=hex(address))

    def set_identity_map_addr(self, address: int) -> None:
        address = require_aligned("address", require_int("address", address, 0, UINT32_MAX),
                                  PAGE_SIZE)
        value = ffi.new("__u64 *", address)
        _ioctl_ptr(self.fileno(), lib.KVM_SET_IDENTITY_MAP_ADDR, value,
                   "KVM_SET_IDENTITY_MAP_ADDR", address=hex(address))

    def create_irqchip(self) -> None:
        _ioctl_int(self.fileno(), lib.KVM_CREATE_IRQCHIP, 0, "KVM_CREATE_IRQCHIP")

    def get_irqchip(self, chip_id: int) -> CData:
        chip_id = require_int("chip_id", chip_id, 0, lib.KVM_IRQCHIP_IOAPIC)
        chip = ffi.new("struct kvm_irqchip *", {"chip_id": chip_id})
        _ioctl_ptr(self.fileno(), lib.KVM_GET_IRQCHIP, chip, "KVM_GET_IRQCHIP", chip_id=chip_id)
        return chip

    def set_irqchip(self, chip: CData) -> None:
        _ioctl_ptr(self.fileno(), lib.KVM_SET_IRQCHIP, chip, "KVM_SET_IRQCHIP",
                   chip_id=chip.chip_id)

    def create_pit2(self, flags: int = 0) -> None:
        flags = require_int("flags", flags, 0, UINT32_MAX)
        config = ffi.new("struct kvm_pit_config *", {"flags": flags})
        _ioctl_ptr(self.fileno(), lib.KVM_CREATE_PIT2, config, "KVM_CREATE_PIT2", flags=flags)

    def set_pit_reinject(self, enabled: bool) -> None:
        """KVM_REINJECT_CONTROL: whether PIT ticks the guest has not taken yet pile up and are
        delivered back to back later (KVM's default, for guests that count ticks), or are
        merged into the one already pending."""
        control = ffi.new("struct kvm_reinject_control *", {"pit_reinject": int(bool(enabled))})
        _ioctl_ptr(self.fileno(), lib.KVM_REINJECT_CONTROL, control, "KVM_REINJECT_CONTROL",
                   pit_reinject=enabled)

    def get_pit2(self) -> CData:
        state = ffi.new("struct kvm_pit_state2 *")
        _ioctl_ptr(self.fileno(), lib.KVM_GET_PIT2, state, "KVM_GET_PIT2")
        return state

    def set_pit2(self, state: CData) -> None:
        _ioctl_ptr(self.fileno(), lib.KVM_SET_PIT2, state, "KVM_SET_PIT2")

    def irq_line(self, irq: int, level: bool) -> None:
        irq = require_int("irq", irq, 0, UINT32_MAX)
        line = ffi.new("struct kvm_irq_level *", {"irq": irq, "level": 1 if level else 0})
        _ioctl_ptr(self.fileno(), lib.KVM_IRQ_LINE, line, "KVM_IRQ_LINE", irq=irq, level=level)

    def irqfd(self, eventfd: Any, gsi: int, deassign: bool = False) -> None:
        """Route writes to `eventfd` into interrupt line `gsi` (needs the in-kernel irqchip)."""
        fd = require_fd("eventfd", eventfd)
        gsi = require_int("gsi", gsi, 0, UINT32_MAX)
        flags = lib.KVM_IRQFD_FLAG_DEASSIGN if deassign else 0
        request = ffi.new("struct kvm_irqfd *", {"fd": fd, "gsi": gsi, "flags": flags})
        _ioctl_ptr(self.fileno(), lib.KVM_IRQFD, request, "KVM_IRQFD", eventfd=fd, gsi=gsi,
                   deassign=deassign)

    def ioeventfd(
        self,
        eventfd: Any,
        address: int,
        length: int,
        *,
        datamatch: int | None = None,
        port_io: bool = False,
        deassign: bool = False,
    ) -> None:
        """Signal `eventfd` instead of exiting when the guest writes `address` (MMIO or port)."""
        fd = require_fd("eventfd", eventfd)
        address = require_int("address", address, 0, UINT16_MAX if port_io else (1 << 64) - 1)
        if length not in IOEVENTFD_LENGTHS:
            raise ValueError(f"length must be one of {IOEVENTFD_LENGTHS}, got {length!r}")
        flags = 0
        if datamatch is not None:
            require_int("datamatch", datamatch)
            flags |= lib.KVM_IOEVENTFD_FLAG_DATAMATCH
        if port_io:
            flags |= lib.KVM_IOEVENTFD_FLAG_PIO
        if deassign:
            flags |= lib.KVM_IOEVENTFD_FLAG_DEASSIGN
        request = ffi.new("struct kvm_ioeventfd *", {
            "datamatch": datamatch or 0, "addr": address, "len": length, "fd": fd,
            "flags": flags,
        })
        _ioctl_ptr(self.fileno(), lib.KVM_IOEVENTFD, request, "KVM_IOEVENTFD", eventfd=fd,
                   address=hex(address), length=length, port_io=port_io, deassign=deassign)

    def enable_capability(self, capability: int, *arguments: int) -> None:
        capability = require_int("capability", capability, 0, UINT32_MAX)
        if len(arguments) > 4:
            raise ValueError(f"KVM_ENABLE_CAP takes at most 4 arguments, got {len(arguments)}")
        values = [require_int(f"arguments[{i}]", a) for i, a in enumerate(arguments)]
        request = ffi.new("struct kvm_enable_cap *", {"cap": capability, "args": values})
        _ioctl_ptr(self.fileno(), lib.KVM_ENABLE_CAP, request, "KVM_ENABLE_CAP",
                   capability=capability, arguments=values)

    def create_vcpu(self, vcpu_id: int) -> Vcpu:
        vcpu_id = require_int("vcpu_id", vcpu_id, 0, UINT32_MAX)
        fd = _ioctl_int(self.fileno(), lib.KVM_CREATE_VCPU, vcpu_id, "KVM_CREATE_VCPU",
                        vcpu_id=vcpu_id)
        return Vcpu(OwnedFd(fd, f"KVM vCPU {vcpu_id} fd"), vcpu_id, self._vcpu_mmap_size)


class Vcpu(FdResource):
    """A vCPU descriptor and its shared kvm_run page."""

    def __init__(self, owned: OwnedFd, vcpu_id: int, mmap_size: int) -> None:
        super().__init__(owned)
        self.vcpu_id = vcpu_id
        try:
            self._run_map = mmap.mmap(owned.fileno(), mmap_size, mmap.MAP_SHARED,
                                      mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as error:
            owned.close()
            raise syscall_error(error.errno or 0, "mmap", what="kvm_run", vcpu_id=vcpu_id,
                                size=mmap_size) from None
        self._run_view: CData = ffi.from_buffer(self._run_map)
        self.run_state: CData = ffi.cast("struct kvm_run *", self._run_view)

    def close(self) -> None:
        if not self.closed:
            self.run_state = None
            self._run_view = None
            self._run_map.close()
        super().close()

    def run(self) -> int:
        """KVM_RUN (GIL released). Returns the exit reason; EINTR surfaces as InterruptedError."""
        _ioctl_int(self.fileno(), lib.KVM_RUN, 0, "KVM_RUN", vcpu_id=self.vcpu_id)
        return int(self.run_state.exit_reason)

    # Exit details -------------------------------------------------------------------------
    def io_exit(self) -> CData:
        return lib.keel_kvm_run_io(self.run_state)

    def io_data(self) -> memoryview:
        """The bytes of the current port I/O exit (size * count, inside the kvm_run page)."""
        io = lib.keel_kvm_run_io(self.run_state)
        length = io.size * io.count
        if io.data_offset + length > len(self._run_map):
            raise RuntimeError(f"KVM reported I/O data outside kvm_run: offset {io.data_offset}")
        return memoryview(self._run_map)[io.data_offset : io.data_offset + length]

    def mmio_exit(self) -> CData:
        return lib.keel_kvm_run_mmio(self.run_state)

    def fail_entry_exit(self) -> CData:
        return lib.keel_kvm_run_fail_entry(self.run_state)

    def internal_error_exit(self) -> CData:
        return lib.keel_kvm_run_internal(self.run_state)

    def system_event_exit(self) -> CData:
        return lib.keel_kvm_run_system_event(self.run_state)

    def hardware_exit(self) -> CData:
        return lib.keel_kvm_run_hw(self.run_state)

    def set_immediate_exit(self, value: bool) -> None:
        """Make the next (or current, after a signal) KVM_RUN return EINTR at once."""
        self.run_state.immediate_exit = 1 if value else 0

    # Register state -----------------------------------------------------------------------
    def _get(self, ctype: str, request: int, call: str) -> CData:
        value = ffi.new(ctype)
        _ioctl_ptr(self.fileno(), request, value, call, vcpu_id=self.vcpu_id)
        return value

    def _set(self, value: CData, ctype: str, request: int, call: str) -> None:
        if ffi.typeof(value) is not ffi.typeof(ctype):
            raise TypeError(f"{call} needs a {ctype}, got {ffi.typeof(value).cname}")
        _ioctl_ptr(self.fileno(), request, value, call, vcpu_id=self.vcpu_id)

    def get_regs(self) -> CData:
        return self._get("struct kvm_regs *", lib.KVM_GET_REGS, "KVM_GET_REGS")

    def set_regs(self, regs: CData) -> None:
        self._set(regs, "struct kvm_regs *", lib.KVM_SET_REGS, "KVM_SET_REGS")

    def get_sregs(self) -> CData:
        return self._get("struct kvm_sregs *", lib.KVM_GET_SREGS, "KVM_GET_SREGS")

    def set_sregs(self, sregs: CData) -> None:
        self._set(sregs, "struct kvm_sregs *", lib.KVM_SET_SREGS, "KVM_SET_SREGS")

    def get_fpu(self) -> CData:
        return self._get("struct kvm_fpu *", lib.KVM_GET_FPU, "KVM_GET_FPU")

    def set_fpu(self, fpu: CData) -> None:
        self._set(fpu, "struct kvm_fpu *", lib.KVM_SET_FPU, "KVM_SET_FPU")

    def get_lapic(self) -> CData:
        return self._get("struct kvm_lapic_state *", lib.KVM_GET_LAPIC, "KVM_GET_LAPIC")

    def set_lapic(self, lapic: CData) -> None:
        self._set(lapic, "struct kvm_lapic_state *", lib.KVM_SET_LAPIC, "KVM_SET_LAPIC")

    def get_msrs(self, indices: Iterable[int]) -> dict[int, int]:
        wanted = [require_int("msr index", i, 0, UINT32_MAX) for i in indices]
        _keepalive, msrs = self._msrs_buffer([(index, 0) for index in wanted])
        read = _ioctl_ptr(self.fileno(), lib.KVM_GET_MSRS, msrs, "KVM_GET_MSRS",
                          vcpu_id=self.vcpu_id, indices=[hex(i) for i in wanted])
        if read != len(wanted):
            raise syscall_error(0, "KVM_GET_MSRS", vcpu_id=self.vcpu_id,
                                unreadable=hex(wanted[read]))
        return {msrs.entries[i].index: msrs.entries[i].data for i in range(read)}

    def set_msrs(self, values: dict[int, int]) -> None:
        pairs = [(require_int("msr index", i, 0, UINT32_MAX), require_int("msr value", v))
                 for i, v in values.items()]
        _keepalive, msrs = self._msrs_buffer(pairs)
        written = _ioctl_ptr(self.fileno(), lib.KVM_SET_MSRS, msrs, "KVM_SET_MSRS",
                             vcpu_id=self.vcpu_id)
        if written != len(pairs):
            index = pairs[written][0]
            raise ValueError(f"KVM_SET_MSRS: KVM refused MSR {index:#x} (wrote {written} of "
                             f"{len(pairs)})")

    @staticmethod
    def _msrs_buffer(pairs: list[tuple[int, int]]) -> tuple[CData, CData]:
        owner, msrs = flexible_struct("struct kvm_msrs", "struct kvm_msr_entry", len(pairs))
        msrs.nmsrs = len(pairs)
        for i, (index, value) in enumerate(pairs):
            msrs.entries[i].index = index
            msrs.entries[i].data = value
        return owner, msrs

    def set_cpuid2(self, entries: Iterable[CpuidEntry]) -> None:
        chosen = list(entries)
        _keepalive, cpuid = flexible_struct("struct kvm_cpuid2", "struct kvm_cpuid_entry2",
                                            len(chosen))
        cpuid.nent = len(chosen)
        for i, entry in enumerate(chosen):
            target = cpuid.entries[i]
            for field in ("function", "index", "flags", "eax", "ebx", "ecx", "edx"):
                setattr(target, field, require_int(f"cpuid.{field}", getattr(entry, field), 0,
                                                   UINT32_MAX))
        _ioctl_ptr(self.fileno(), lib.KVM_SET_CPUID2, cpuid, "KVM_SET_CPUID2",
                   vcpu_id=self.vcpu_id, entries=len(chosen))
