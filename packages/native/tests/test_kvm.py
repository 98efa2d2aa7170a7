"""KVM bindings against the real /dev/kvm: real guests, real exits."""

from __future__ import annotations

import mmap

import pytest

from keel.native._kvm import lib
from keel.native.errors import ClosedResourceError
from keel.native.eventfd import EventFd
from keel.native.kvm import PAGE_SIZE, CpuidEntry, Kvm
from keel.native.real_mode import RealModeAssembler, run_real_mode_guest
from keel.native.testing.skips import requires_kvm

pytestmark = [requires_kvm, pytest.mark.kvm]

SERIAL_PORT = 0x3F8
DOORBELL_PORT = 0x510
MSR_IA32_TSC = 0x10
MSR_IA32_SYSENTER_CS = 0x174


def test_api_version_and_capabilities() -> None:
    with Kvm() as kvm:
        assert kvm.api_version() == lib.KVM_API_VERSION
        assert kvm.check_extension(lib.KVM_CAP_USER_MEMORY) > 0
        assert kvm.check_extension(lib.KVM_CAP_IRQCHIP) > 0
        assert kvm.vcpu_mmap_size() >= PAGE_SIZE


def test_real_mode_guest_writes_bytes_to_a_port_and_halts() -> None:
    code = RealModeAssembler().write_bytes(SERIAL_PORT, b"keel\n").hlt().code
    run = run_real_mode_guest(bytes(code))
    assert run.bytes_to(SERIAL_PORT) == b"keel\n"
    assert run.halted
    assert run.exit_reasons == [lib.KVM_EXIT_IO] * 5 + [lib.KVM_EXIT_HLT]


def test_ioeventfd_turns_a_port_write_into_an_eventfd_signal() -> None:
    """The doorbell write never reaches userspace as an exit: KVM signals the eventfd."""
    code = (RealModeAssembler().write_bytes(DOORBELL_PORT, b"\x01")
            .write_bytes(SERIAL_PORT, b"!").hlt().code)
    with Kvm() as kvm, kvm.create_vm() as vm, EventFd(nonblocking=True) as doorbell:
        vm.ioeventfd(doorbell, DOORBELL_PORT, 1, port_io=True)
        memory = mmap.mmap(-1, 0x10000)
        try:
            memory[0x1000 : 0x1000 + len(code)] = code
            vm.set_user_memory_region(0, 0, memory)
            with vm.create_vcpu(0) as vcpu:
                sregs = vcpu.get_sregs()
                sregs.cs.base = 0
                sregs.cs.selector = 0
                vcpu.set_sregs(sregs)
                regs = vcpu.get_regs()
                regs.rip = 0x1000
                regs.rflags = 2
                vcpu.set_regs(regs)
                assert vcpu.run() == lib.KVM_EXIT_IO
                assert vcpu.io_exit().port == SERIAL_PORT
                assert bytes(vcpu.io_data()) == b"!"
                assert doorbell.read() == 1
                assert vcpu.run() == lib.KVM_EXIT_HLT
            vm.ioeventfd(doorbell, DOORBELL_PORT, 1, port_io=True, deassign=True)
            vm.set_user_memory_region(0, 0, bytearray())
        finally:
            memory.close()


def test_register_state_round_trips() -> None:
    with Kvm() as kvm, kvm.create_vm() as vm, vm.create_vcpu(0) as vcpu:
        regs = vcpu.get_regs()
        regs.rax, regs.rbx, regs.rip = 0x1234, 0xDEADBEEF, 0x7000
        vcpu.set_regs(regs)
        again = vcpu.get_regs()
        assert (again.rax, again.rbx, again.rip) == (0x1234, 0xDEADBEEF, 0x7000)
        sregs = vcpu.get_sregs()
        sregs.cs.base, sregs.cs.selector = 0, 0
        vcpu.set_sregs(sregs)
        assert vcpu.get_sregs().cs.selector == 0
        fpu = vcpu.get_fpu()
        fpu.fcw = 0x37F
        vcpu.set_fpu(fpu)
        assert vcpu.get_fpu().fcw == 0x37F
        vcpu.set_msrs({MSR_IA32_SYSENTER_CS: 0x10})
        assert vcpu.get_msrs([MSR_IA32_SYSENTER_CS]) == {MSR_IA32_SYSENTER_CS: 0x10}


def test_supported_cpuid_can_be_set_on_a_vcpu() -> None:
    with Kvm() as kvm:
        entries = kvm.supported_cpuid()
        assert any(entry.function == 0 for entry in entries)
        assert len(kvm.msr_index_list()) > 0
        with kvm.create_vm() as vm, vm.create_vcpu(0) as vcpu:
            vcpu.set_cpuid2(entries)


def test_irqchip_pit_lapic_and_irqfd() -> None:
    with Kvm() as kvm, kvm.create_vm() as vm:
        vm.set_tss_addr(0xFFFBD000)
        vm.set_identity_map_addr(0xFFFBC000)
        vm.create_irqchip()
        vm.create_pit2(lib.KVM_PIT_SPEAKER_DUMMY)
        pit = vm.get_pit2()
        vm.set_pit2(pit)
        pic = vm.get_irqchip(lib.KVM_IRQCHIP_PIC_MASTER)
        vm.set_irqchip(pic)
        vm.irq_line(4, True)
        vm.irq_line(4, False)
        with EventFd() as interrupt:
            vm.irqfd(interrupt, 5)
            vm.irqfd(interrupt, 5, deassign=True)
        with vm.create_vcpu(0) as vcpu:
            lapic = vcpu.get_lapic()
            vcpu.set_lapic(lapic)


def test_pit_reinjection_can_be_switched_off_and_on() -> None:
    with Kvm() as kvm, kvm.create_vm() as vm:
        with pytest.raises(OSError, match=r"KVM_REINJECT_CONTROL\(fd=\d+, pit_reinject=False\)"):
            vm.set_pit_reinject(False)  # no PIT yet: KVM refuses
        vm.set_tss_addr(0xFFFBD000)
        vm.create_irqchip()
        vm.create_pit2(lib.KVM_PIT_SPEAKER_DUMMY)
        vm.set_pit_reinject(False)
        vm.set_pit_reinject(True)


def test_bad_arguments_are_refused_before_the_ioctl() -> None:
    with Kvm() as kvm, kvm.create_vm() as vm:
        with pytest.raises(ValueError, match="slot must be in"):
            vm.set_user_memory_region(-1, 0, bytearray(PAGE_SIZE))
        with pytest.raises(ValueError, match="guest_phys_addr must be a multiple"):
            vm.set_user_memory_region(0, 0x123, bytearray(PAGE_SIZE))
        with pytest.raises(TypeError, match="memory must be writable"):
            vm.set_user_memory_region(0, 0, bytes(PAGE_SIZE))
        with pytest.raises(ValueError, match="length must be one of"):
            vm.ioeventfd(0, 0x510, 3, port_io=True)
        with pytest.raises(TypeError, match="vcpu_id must be an int"):
            vm.create_vcpu("0")  # type: ignore[arg-type]
        with vm.create_vcpu(0) as vcpu:
            with pytest.raises(TypeError, match=r"KVM_SET_REGS needs"):
                vcpu.set_regs(vcpu.get_sregs())
            with pytest.raises(ValueError, match=r"cpuid\.eax must be in"):
                vcpu.set_cpuid2([CpuidEntry(0, 0, 0, -1, 0, 0, 0)])


def test_kernel_errors_name_the_ioctl() -> None:
    with Kvm() as kvm, kvm.create_vm() as vm:
        vm.create_vcpu(0).close()
        # KVM never frees a vCPU id, so asking for id 0 again is refused with EEXIST.
        with pytest.raises(FileExistsError, match=r"KVM_CREATE_VCPU\(fd=\d+, vcpu_id=0\)"):
            vm.create_vcpu(0)


def test_closed_and_missing_devices() -> None:
    kvm = Kvm()
    kvm.close()
    with pytest.raises(ClosedResourceError, match="KVM system fd"):
        kvm.api_version()
    with pytest.raises(FileNotFoundError, match="/dev/kvm-missing"):
        Kvm("/dev/kvm-missing")
