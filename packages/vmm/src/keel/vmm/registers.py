"""A vCPU's register state as one line of text, for error messages about a crashed guest."""

from __future__ import annotations

from keel.native.kvm import Vcpu

GENERAL_REGISTERS = ("rip", "rsp", "rflags", "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp")
CONTROL_REGISTERS = ("cr0", "cr2", "cr3", "cr4", "efer")


def describe_registers(vcpu: Vcpu) -> str:
    """`rip=0x... rsp=0x... ... cs=0x8/dpl0` (or why the state could not be read)."""
    try:
        regs = vcpu.get_regs()
        sregs = vcpu.get_sregs()
    except OSError as error:
        return f"(registers unreadable: {error})"
    parts = [f"{name}={getattr(regs, name):#x}" for name in GENERAL_REGISTERS]
    parts += [f"{name}={getattr(sregs, name):#x}" for name in CONTROL_REGISTERS]
    parts.append(f"cs={sregs.cs.selector:#x}/dpl{sregs.cs.dpl}/l{sregs.cs.l}")
    return " ".join(parts)
