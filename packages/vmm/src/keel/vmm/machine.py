"""The virtual machine: KVM VM, guest memory, legacy devices, vCPU threads.

Why this shape: one object owns every resource of a guest and releases them in order (vCPU
threads joined, then vCPU fds, the VM fd, KVM, guest memory). Each vCPU runs KVM_RUN on its
own thread (the GIL is released inside), and handles its exits there: port I/O and MMIO go
to the Bus, anything that ends the guest (isa-debug-exit, i8042 reset, a crash) is recorded
once as the VM's exit and stops the other vCPUs with a signal plus `immediate_exit`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from keel.native._kvm import ffi, lib
from keel.native.kvm import Kvm, Vcpu
from keel.native.signals import kick, kick_signal
from keel.vmm import x86
from keel.vmm.boot import layout
from keel.vmm.boot.modes import EntryPoint, enter
from keel.vmm.boot.mptable import MP_TABLE_LIMIT, write_mptable
from keel.vmm.cpuid import DEFAULT_TEMPLATE, apply_template, template_named
from keel.vmm.devices.boot_timer import BOOT_TIMER_LENGTH, BootTimer
from keel.vmm.devices.bus import Bus
from keel.vmm.devices.debug_exit import DEBUG_EXIT_LENGTH, DEBUG_EXIT_PORT, DebugExit
from keel.vmm.devices.i8042 import I8042, I8042_PORT_BASE, I8042_PORT_LENGTH
from keel.vmm.devices.serial import COM1_IRQ, COM1_PORT, SERIAL_PORT_LENGTH, Serial16550
from keel.vmm.errors import GuestCrashError, VmmError, VmStateError
from keel.vmm.memory import GuestMemory
from keel.vmm.registers import describe_registers
from keel.vmm.virtio.block import BlockDevice
from keel.vmm.virtio.machine_devices import MachineDevices
from keel.vmm.virtio.net import NetDevice
from keel.vmm.virtio.net_tap import TapBackend
from keel.vmm.virtio.rng import RngDevice

logger = logging.getLogger("keel.vmm")

MEBIBYTE = 1 << 20
DEFAULT_MEMORY_SIZE = 128 * MEBIBYTE
MAX_VCPUS = 32
# MSR values a VMM sets before the first instruction (those Firecracker sets); the fast-string
# bit lets `rep movs` run at full speed.
BOOT_MSRS = {
    x86.MSR_IA32_SYSENTER_CS: 0,
    x86.MSR_IA32_SYSENTER_ESP: 0,
    x86.MSR_IA32_SYSENTER_EIP: 0,
    x86.MSR_STAR: 0,
    x86.MSR_CSTAR: 0,
    x86.MSR_KERNEL_GS_BASE: 0,
    x86.MSR_SYSCALL_MASK: 0,
    x86.MSR_LSTAR: 0,
    x86.MSR_IA32_TSC: 0,
    x86.MSR_IA32_MISC_ENABLE: x86.MSR_IA32_MISC_ENABLE_FAST_STRING,
}
APIC_REGISTER_SIZE = 4
INTERNAL_ERROR_DATA_WORDS = 16  # kvm_run.internal.data[16]
INTERNAL_ERRORS = {
    lib.KVM_INTERNAL_ERROR_EMULATION: "the hypervisor could not emulate an instruction",
    lib.KVM_INTERNAL_ERROR_SIMUL_EX: "exception while delivering an exception",
    lib.KVM_INTERNAL_ERROR_DELIVERY_EV: "event delivery failed",
    lib.KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON: "unexpected hardware exit",
}


@dataclass(frozen=True)
class VmExit:
    """Why a VM ended. `status` is the isa-debug-exit value (0 otherwise)."""

    reason: str  # "debug-exit", "reset", "shutdown", "stopped" or "crash"
    status: int = 0
    error: VmmError | None = None

    @property
    def crashed(self) -> bool:
        return self.error is not None


class _VcpuRunner:
    """One vCPU and the thread running it; `kick` is safe however far the thread has got."""

    def __init__(self, vcpu: Vcpu) -> None:
        self.vcpu = vcpu
        self.thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._running_ident: int | None = None

    def mark_running(self) -> None:
        with self._lock:
            self._running_ident = threading.get_ident()

    def mark_finished(self) -> None:
        with self._lock:
            self._running_ident = None

    def kick(self) -> None:
        """Make KVM_RUN return now (signal) and on every later call (immediate_exit)."""
        self.vcpu.set_immediate_exit(True)
        with self._lock:  # the thread cannot finish while we signal it
            if self._running_ident is not None:
                kick(self._running_ident)


class Vm:
    """A KVM guest with its memory, irqchip, PIT, legacy devices and vCPUs (context manager)."""

    def __init__(self, memory_size: int = DEFAULT_MEMORY_SIZE, vcpu_count: int = 1,
                 cpu_template: str = DEFAULT_TEMPLATE,
                 serial_output: Callable[[bytes], None] | None = None) -> None:
        if not 1 <= vcpu_count <= MAX_VCPUS:
            raise VmStateError(f"vcpu_count must be in [1, {MAX_VCPUS}], got {vcpu_count}")
        template = template_named(cpu_template)
        kick_signal()  # install the interrupting handler before any vCPU thread exists
        self._exit: VmExit | None = None
        self._exit_lock = threading.Lock()
        self._finished = threading.Event()
        self._started = False
        self._closed = False
        self._serial_listeners: list[Callable[[bytes], None]] = []
        if serial_output is not None:
            self._serial_listeners.append(serial_output)
        self._runners: list[_VcpuRunner] = []
        self._kvm = Kvm()
        try:
            self._vm = self._kvm.create_vm()
            self._vm.set_tss_addr(layout.KVM_TSS_ADDRESS)
            self._vm.set_identity_map_addr(layout.KVM_IDENTITY_MAP_ADDRESS)
            self._vm.create_irqchip()
            self._vm.create_pit2(lib.KVM_PIT_SPEAKER_DUMMY)
            # Missed PIT ticks are merged, not queued. KVM's default queues every tick the
            # guest has not taken yet and delivers them back to back. A guest that falls
            # behind the tick (here: Linux with its supervisor code emulated, and any badly
            # overcommitted host) then always has a timer vector pending. That vector outranks
            # the virtio lines, so virtio-net's interrupts starved, and the Linux-boot pings got
            # 0 replies in 4 of 10 boots. Ticks the guest could not take are lost either way;
            # a guest that keeps time by the TSC (Linux on real hardware) does not notice.
            self._vm.set_pit_reinject(False)
            self.memory = GuestMemory(memory_size)
            for slot, region in enumerate(self.memory):
                self._vm.set_user_memory_region(slot, region.guest_address, region.mapping)
            if self.memory.contains(0, MP_TABLE_LIMIT):
                write_mptable(self.memory, vcpu_count)
            self.bus = Bus()
            self._add_legacy_devices()
            self.virtio = MachineDevices(self._vm, self.bus.mmio, self.memory)
            supported = self._kvm.supported_cpuid()
            for vcpu_id in range(vcpu_count):
                vcpu = self._vm.create_vcpu(vcpu_id)
                self._runners.append(_VcpuRunner(vcpu))
                vcpu.set_cpuid2(apply_template(supported, template, vcpu_id=vcpu_id,
                                               vcpu_count=vcpu_count))
                vcpu.set_msrs(BOOT_MSRS)
                self._reset_fpu(vcpu)
                self._wire_local_interrupts(vcpu)
        except BaseException:
            self.close()
            raise

    # Set-up ---------------------------------------------------------------------------------
    def _add_legacy_devices(self) -> None:
        self.serial = Serial16550(self._serial_output, self._pulse_serial_interrupt)
        self.bus.ports.register(COM1_PORT, SERIAL_PORT_LENGTH, self.serial, "serial (COM1)")
        self.bus.ports.register(I8042_PORT_BASE, I8042_PORT_LENGTH,
                                I8042(lambda: self._finish(VmExit("reset"))), "i8042")
        self.bus.ports.register(DEBUG_EXIT_PORT, DEBUG_EXIT_LENGTH,
                                DebugExit(lambda value: self._finish(VmExit("debug-exit", value))),
                                "isa-debug-exit")
        self.boot_timer = BootTimer()
        self.bus.mmio.register(layout.BOOT_TIMER_ADDRESS, BOOT_TIMER_LENGTH, self.boot_timer,
                               "boot timer")

    @staticmethod
    def _reset_fpu(vcpu: Vcpu) -> None:
        """x87 and SSE control words as after FNINIT (KVM_SET_FPU ignores mxcsr; KVM's own
        vCPU reset already sets it, so it is written only for completeness)."""
        fpu = vcpu.get_fpu()
        fpu.fcw = x86.FPU_CONTROL_WORD_DEFAULT
        fpu.mxcsr = x86.MXCSR_DEFAULT
        vcpu.set_fpu(fpu)

    @staticmethod
    def _wire_local_interrupts(vcpu: Vcpu) -> None:
        """LINT0 delivers the 8259's interrupts (ExtINT), LINT1 the NMI line, as on a PC."""
        lapic = vcpu.get_lapic()
        registers = ffi.buffer(lapic.regs)
        for offset, mode in ((x86.APIC_LVT_LINT0, x86.APIC_DELIVERY_MODE_EXTINT),
                             (x86.APIC_LVT_LINT1, x86.APIC_DELIVERY_MODE_NMI)):
            value = int.from_bytes(registers[offset : offset + APIC_REGISTER_SIZE], "little")
            value = (value & ~x86.APIC_DELIVERY_MODE_MASK) | mode << x86.APIC_DELIVERY_MODE_SHIFT
            registers[offset : offset + APIC_REGISTER_SIZE] = value.to_bytes(
                APIC_REGISTER_SIZE, "little")
        vcpu.set_lapic(lapic)

    @property
    def vcpus(self) -> list[Vcpu]:
        return [runner.vcpu for runner in self._runners]

    def add_serial_listener(self, listener: Callable[[bytes], None]) -> None:
        self._serial_listeners.append(listener)

    def _serial_output(self, data: bytes) -> None:
        for listener in self._serial_listeners:
            listener(data)

    def _pulse_serial_interrupt(self) -> None:
        self._vm.irq_line(COM1_IRQ, True)
        self._vm.irq_line(COM1_IRQ, False)

    def irq_line(self, irq: int, level: bool) -> None:
        self._vm.irq_line(irq, level)

    # virtio devices (before start; their I/O runs on keel.runtime, see virtio/event_loop.py)
    def add_virtio_net(self, tap: str | TapBackend, mac: str | bytes | None = None) -> NetDevice:
        """virtio-net on the TAP `tap` (a name opens or creates it in this thread's netns)."""
        return self.virtio.add_net(tap, mac)

    def add_virtio_block(self, path: str | os.PathLike[str], *, read_only: bool = False,
                         serial: str = "keel") -> BlockDevice:
        """virtio-blk on a disk image file; `read_only` refuses the guest's writes."""
        return self.virtio.add_block(path, read_only=read_only, serial=serial)

    def add_virtio_rng(self) -> RngDevice:
        return self.virtio.add_rng()

    def virtio_command_line(self) -> str:
        """`virtio_mmio.device=...` for every virtio device: append it to a Linux command line."""
        return self.virtio.command_line()

    # Running --------------------------------------------------------------------------------
    def load(self, entry: EntryPoint) -> None:
        """Put the boot vCPU at `entry` (the others wait for the guest's INIT/SIPI)."""
        if self._started:
            raise VmStateError("the VM is already running; load before start()")
        enter(self._runners[0].vcpu, self.memory, entry)

    def start(self) -> None:
        if self._closed or self._started:
            raise VmStateError("a VM starts once, before close()")
        self._started = True
        self.virtio.start()
        self.boot_timer.restart()
        for runner in self._runners:
            runner.thread = threading.Thread(target=self._run_vcpu, args=(runner,),
                                             name=f"keel-vcpu-{runner.vcpu.vcpu_id}")
            runner.thread.start()

    def stop(self) -> None:
        """Stop every vCPU (from any thread); the exit is "stopped" unless one came first."""
        self._finish(VmExit("stopped"))

    def wait(self, timeout: float | None = None) -> VmExit:
        """Block until the VM ends; TimeoutError after `timeout` seconds (the VM keeps going)."""
        if not self._finished.wait(timeout):
            raise TimeoutError(f"the VM is still running after {timeout} s")
        for runner in self._runners:
            if runner.thread is not None:
                runner.thread.join()
        assert self._exit is not None
        return self._exit

    def run(self, entry: EntryPoint, timeout: float) -> VmExit:
        """Load, start, wait at most `timeout` seconds (then stop and raise TimeoutError)."""
        self.load(entry)
        self.start()
        try:
            return self.wait(timeout)
        except TimeoutError:
            self.stop()
            self.wait()
            raise

    @property
    def exit(self) -> VmExit | None:
        return self._exit

    def _finish(self, outcome: VmExit) -> None:
        with self._exit_lock:
            if self._exit is not None:
                return
            self._exit = outcome
        if outcome.error is not None:
            logger.error("guest crashed: %s", outcome.error)
        else:
            logger.info("VM ended: %s (status %d)", outcome.reason, outcome.status)
        for runner in self._runners:
            runner.kick()
        self._finished.set()

    def _run_vcpu(self, runner: _VcpuRunner) -> None:
        runner.mark_running()
        try:
            self._vcpu_loop(runner.vcpu)
        except BaseException as error:  # a VMM bug must still end the VM, not hang it
            logger.exception("vCPU %d thread failed", runner.vcpu.vcpu_id)
            crash = GuestCrashError(f"vCPU {runner.vcpu.vcpu_id}: VMM error: {error!r}",
                                    reason="vmm-error", vcpu_id=runner.vcpu.vcpu_id)
            self._finish(VmExit("crash", error=crash))
        finally:
            runner.mark_finished()

    def _vcpu_loop(self, vcpu: Vcpu) -> None:
        ports = self.bus.ports
        mmio = self.bus.mmio
        exit_io, exit_mmio = lib.KVM_EXIT_IO, lib.KVM_EXIT_MMIO
        direction_out = lib.KVM_EXIT_IO_OUT
        while self._exit is None:
            try:
                reason = vcpu.run()
            except InterruptedError:
                continue
            if reason == exit_io:
                io = vcpu.io_exit()
                size, port, count = io.size, io.port, io.count
                data = vcpu.io_data()
                try:
                    if io.direction == direction_out:
                        for index in range(count):
                            chunk = data[index * size : (index + 1) * size]
                            ports.write(port, size, int.from_bytes(chunk, "little"))
                    else:
                        for index in range(count):
                            value = ports.read(port, size)
                            data[index * size : (index + 1) * size] = value.to_bytes(
                                size, "little")
                except VmmError as error:
                    logger.error("vCPU %d: refused port access: %s", vcpu.vcpu_id, error)
            elif reason == exit_mmio:
                access = vcpu.mmio_exit()
                length = access.len
                try:
                    if access.is_write:
                        value = int.from_bytes(bytes(access.data[0:length]), "little")
                        mmio.write(access.phys_addr, length, value)
                    else:
                        value = mmio.read(access.phys_addr, length)
                        access.data[0:length] = list(value.to_bytes(length, "little"))
                except VmmError as error:
                    logger.error("vCPU %d: refused MMIO access: %s", vcpu.vcpu_id, error)
            else:
                self._handle_stop_exit(vcpu, reason)

    def _handle_stop_exit(self, vcpu: Vcpu, reason: int) -> None:
        if reason == lib.KVM_EXIT_INTR:
            return
        if reason == lib.KVM_EXIT_SYSTEM_EVENT:
            event = vcpu.system_event_exit().type
            if event == lib.KVM_SYSTEM_EVENT_SHUTDOWN:
                self._finish(VmExit("shutdown"))
                return
            if event == lib.KVM_SYSTEM_EVENT_RESET:
                self._finish(VmExit("reset"))
                return
            self._crash(vcpu, "system-event", f"system event {event}")
            return
        if reason == lib.KVM_EXIT_SHUTDOWN:
            self._crash(vcpu, "shutdown", "shutdown exit (triple fault)")
        elif reason == lib.KVM_EXIT_FAIL_ENTRY:
            failure = vcpu.fail_entry_exit()
            self._crash(vcpu, "fail-entry", "VM entry failed, hardware reason "
                        f"{failure.hardware_entry_failure_reason:#x} on CPU {failure.cpu}")
        elif reason == lib.KVM_EXIT_INTERNAL_ERROR:
            internal = vcpu.internal_error_exit()
            words = min(internal.ndata, INTERNAL_ERROR_DATA_WORDS)
            details = [hex(internal.data[i]) for i in range(words)]
            what = INTERNAL_ERRORS.get(internal.suberror, "unknown suberror")
            self._crash(vcpu, "internal-error", f"KVM internal error {internal.suberror} "
                        f"({what}), data {details}")
        elif reason == lib.KVM_EXIT_HLT:
            self._finish(VmExit("shutdown"))
        else:
            self._crash(vcpu, "unexpected-exit", f"unexpected KVM exit reason {reason}")

    def _crash(self, vcpu: Vcpu, reason: str, what: str) -> None:
        message = f"vCPU {vcpu.vcpu_id}: {what}; {describe_registers(vcpu)}"
        self._finish(VmExit("crash", error=GuestCrashError(message, reason=reason,
                                                           vcpu_id=vcpu.vcpu_id)))

    # Shutdown -------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the vCPUs, join their threads, release fds and memory (in that order)."""
        if self._closed:
            return
        self._closed = True
        if self._started:
            self._finish(VmExit("stopped"))
            for runner in self._runners:
                if runner.thread is not None:
                    runner.thread.join()
        if hasattr(self, "virtio"):
            self.virtio.close()
        for runner in self._runners:
            runner.vcpu.close()
        if hasattr(self, "_vm"):
            self._vm.close()
        if hasattr(self, "_kvm"):
            self._kvm.close()
        if hasattr(self, "memory"):
            self.memory.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
