"""The VM on real KVM: modes, CPL 3 test guests, devices, exits, stopping, errors."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from keel.native._kvm import ffi
from keel.native.testing.skips import requires_kvm
from keel.vmm import x86
from keel.vmm.boot.modes import CpuMode, EntryPoint
from keel.vmm.errors import GuestCrashError, VmStateError
from keel.vmm.machine import BOOT_MSRS, Vm

pytestmark = [requires_kvm, pytest.mark.kvm]
MEMORY = 32 << 20
LOAD = 0x100000
REAL_LOAD = 0x8000
# `mov al, 'K'; mov dx, 0x3f8; out dx, al; mov al, 7; out 0xf4, al` (32/64-bit: 0x66 on dx)
REPORT_AND_EXIT = bytes([0xB0, 0x4B, 0x66, 0xBA, 0xF8, 0x03, 0xEE, 0xB0, 0x07, 0xE6, 0xF4])
REPORT_AND_EXIT_16 = bytes([0xB0, 0x4B, 0xBA, 0xF8, 0x03, 0xEE, 0xB0, 0x07, 0xE6, 0xF4])
SPIN = bytes([0xEB, 0xFE])  # jmp .
UD2 = bytes([0x0F, 0x0B])


def run_code(code: bytes, mode: CpuMode, address: int = LOAD,
             timeout: float = 20) -> tuple[Vm, bytes]:
    output = bytearray()
    vm = Vm(MEMORY, serial_output=output.extend)
    vm.memory.write(address, code)
    vm.run(EntryPoint(mode, address), timeout=timeout)
    return vm, bytes(output)


@pytest.mark.parametrize(("mode", "code", "address"), [
    (CpuMode.REAL, REPORT_AND_EXIT_16, REAL_LOAD),
    (CpuMode.PROTECTED, REPORT_AND_EXIT, LOAD),
    (CpuMode.LONG, REPORT_AND_EXIT, LOAD),
])
def test_the_vmm_starts_a_guest_in_each_mode(mode: CpuMode, code: bytes, address: int) -> None:
    vm, output = run_code(code, mode, address)
    with vm:
        assert output == b"K"
        assert vm.exit is not None and (vm.exit.reason, vm.exit.status) == ("debug-exit", 7)
        sregs = vm.vcpus[0].get_sregs()
        if mode is CpuMode.LONG:
            assert sregs.efer & x86.EFER_LMA and sregs.cr0 & x86.CR0_PG and sregs.cs.l == 1
        elif mode is CpuMode.PROTECTED:
            assert sregs.cr0 & x86.CR0_PE and not sregs.cr0 & x86.CR0_PG and sregs.cs.db == 1
        else:
            assert not sregs.cr0 & x86.CR0_PE


def test_the_mode_switching_guest_reports_every_step(guests: dict[str, Path]) -> None:
    vm, output = run_code(guests["modes"].read_bytes(), CpuMode.REAL, REAL_LOAD)
    with vm:
        assert output.decode().splitlines() == [
            "mode: real", "mode: protected", "mode: long (CPL 0)", "mode: user (CPL 3)"]
        assert vm.exit is not None and vm.exit.status == 0


def test_cpl3_guest_talks_over_serial_and_reports_boot_time(guests: dict[str, Path]) -> None:
    output = bytearray()
    arrived = threading.Event()

    def capture(data: bytes) -> None:
        output.extend(data)
        if output.endswith(b"type a line:\n"):
            arrived.set()

    with Vm(MEMORY, serial_output=capture) as vm:
        vm.memory.write(LOAD, guests["hello"].read_bytes())
        vm.load(EntryPoint(CpuMode.LONG, LOAD))
        vm.start()
        assert arrived.wait(20), bytes(output)
        vm.serial.feed_input(b"over the wire\n")
        outcome = vm.wait(20)
    assert (outcome.reason, outcome.status) == ("debug-exit", 42)
    assert output.decode().splitlines() == [
        "hello from keel guest at CPL 3", "type a line:", "echo: over the wire"]
    assert vm.boot_timer.boot_seconds is not None and vm.boot_timer.boot_seconds > 0


def test_triple_fault_is_a_crash_with_the_registers_in_the_message() -> None:
    vm, _ = run_code(UD2, CpuMode.LONG)
    with vm:
        assert vm.exit is not None and vm.exit.reason == "crash"
        error = vm.exit.error
        assert isinstance(error, GuestCrashError) and error.reason == "shutdown"
        assert "triple fault" in str(error)
        assert f"rip={LOAD:#x}" in str(error) and "cr0=" in str(error) and "efer=" in str(error)


def test_i8042_reset_ends_the_vm_cleanly() -> None:
    reset = bytes([0xB0, 0xFE, 0xE6, 0x64])  # mov al, 0xfe; out 0x64, al
    vm, _ = run_code(reset + SPIN, CpuMode.REAL, REAL_LOAD)
    with vm:
        assert vm.exit is not None and (vm.exit.reason, vm.exit.error) == ("reset", None)


def test_stop_from_another_thread_ends_a_spinning_guest() -> None:
    with Vm(MEMORY, vcpu_count=2) as vm:
        vm.memory.write(LOAD, SPIN)
        vm.load(EntryPoint(CpuMode.LONG, LOAD))
        vm.start()
        with pytest.raises(TimeoutError):
            vm.wait(0.2)
        stopper = threading.Thread(target=vm.stop)
        started = time.monotonic()
        stopper.start()
        outcome = vm.wait(10)
        stopper.join()
        assert outcome.reason == "stopped" and time.monotonic() - started < 10
        with pytest.raises(VmStateError):
            vm.start()


def test_timeout_in_run_stops_the_guest_and_says_so() -> None:
    with Vm(MEMORY) as vm:
        vm.memory.write(LOAD, SPIN)
        with pytest.raises(TimeoutError, match=r"0\.3 s"):
            vm.run(EntryPoint(CpuMode.LONG, LOAD), timeout=0.3)
        assert vm.exit is not None and vm.exit.reason == "stopped"


def test_vcpus_get_boot_msrs_fpu_defaults_and_pc_local_interrupt_wiring() -> None:
    with Vm(MEMORY, vcpu_count=2) as vm:
        for vcpu in vm.vcpus:
            values = vcpu.get_msrs([x86.MSR_IA32_MISC_ENABLE, x86.MSR_IA32_SYSENTER_CS])
            assert values[x86.MSR_IA32_MISC_ENABLE] & x86.MSR_IA32_MISC_ENABLE_FAST_STRING
            assert values[x86.MSR_IA32_SYSENTER_CS] == BOOT_MSRS[x86.MSR_IA32_SYSENTER_CS]
            fpu = vcpu.get_fpu()
            assert fpu.fcw == x86.FPU_CONTROL_WORD_DEFAULT  # (KVM_GET_FPU omits mxcsr)
            registers = ffi.buffer(vcpu.get_lapic().regs)
            lint0 = int.from_bytes(registers[x86.APIC_LVT_LINT0 : x86.APIC_LVT_LINT0 + 4],
                                   "little")
            lint1 = int.from_bytes(registers[x86.APIC_LVT_LINT1 : x86.APIC_LVT_LINT1 + 4],
                                   "little")
            assert (lint0 >> 8) & 7 == x86.APIC_DELIVERY_MODE_EXTINT
            assert (lint1 >> 8) & 7 == x86.APIC_DELIVERY_MODE_NMI


def test_guest_writes_to_memory_are_visible_through_guest_memory() -> None:
    # mov dword [0x2000], 0x6c65656b ("keel"); then report and exit
    store = bytes([0xC7, 0x04, 0x25, 0x00, 0x20, 0x00, 0x00]) + b"keel"
    vm, _ = run_code(store + REPORT_AND_EXIT, CpuMode.LONG)
    with vm:
        assert vm.memory.read(0x2000, 4) == b"keel"


@pytest.fixture(scope="module")
def supervisor_code_is_emulated() -> bool:
    from keel.native.guest_speed import measure_supervisor_speed

    return not measure_supervisor_speed().native


def test_an_instruction_the_hypervisor_cannot_emulate_is_an_internal_error(
        supervisor_code_is_emulated: bool) -> None:
    if not supervisor_code_is_emulated:
        pytest.skip("needs a hypervisor that emulates CPL 0 code (PVM) to provoke an emulation "
                    "failure; this host runs supervisor code natively")
    popcnt_rax_rax = bytes.fromhex("f3480fb8c0")
    vm, _ = run_code(popcnt_rax_rax + REPORT_AND_EXIT, CpuMode.LONG)
    with vm:
        assert vm.exit is not None and vm.exit.reason == "crash"
        error = vm.exit.error
        assert isinstance(error, GuestCrashError) and error.reason == "internal-error"
        assert "could not emulate" in str(error) and f"rip={LOAD:#x}" in str(error)


def test_serial_input_interrupt_reaches_the_guest_through_pic_and_lint0(
        guests: dict[str, Path]) -> None:
    output = bytearray()
    waiting = threading.Event()

    def capture(data: bytes) -> None:
        output.extend(data)
        if output.endswith(b"waiting for input\n"):
            waiting.set()

    with Vm(MEMORY, serial_output=capture) as vm:
        vm.memory.write(LOAD, guests["interrupts"].read_bytes())
        vm.load(EntryPoint(CpuMode.LONG, LOAD))
        vm.start()
        assert waiting.wait(20), bytes(output)
        vm.serial.feed_input(b"ring")
        outcome = vm.wait(20)
    assert outcome.reason == "debug-exit" and outcome.status >= 1  # interrupts taken
    assert output.decode().splitlines()[-1] == "interrupts: got ring"


def test_a_vm_that_cannot_be_built_releases_what_it_had(tmp_path: Path) -> None:
    import os

    before = sorted(os.listdir("/proc/self/fd"))
    with pytest.raises(VmStateError, match="vcpu_count"):
        Vm(MEMORY, vcpu_count=0)
    from keel.vmm.errors import CpuTemplateError

    with pytest.raises(CpuTemplateError, match="'nonesuch'"):
        Vm(MEMORY, cpu_template="nonesuch")
    from keel.vmm.errors import GuestMemoryError

    with pytest.raises(GuestMemoryError, match="multiple of"):
        Vm(MEMORY + 1)
    assert sorted(os.listdir("/proc/self/fd")) == before
