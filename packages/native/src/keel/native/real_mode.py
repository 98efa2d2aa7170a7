"""Tiny real-mode guests: enough x86 to prove a KVM host works and to time it.

Why here: `keel doctor` and keel.native's own tests need a real guest without the VMM package
(which sits above us). The handful of instructions they use is encoded by name below; a real
VMM builds its guests with gcc (keel.vmm.guests).
"""

from __future__ import annotations

import mmap
import struct
import threading
import time
from dataclasses import dataclass, field

from keel.native._kvm import lib
from keel.native.checks import UINT16_MAX, UINT32_MAX, require_int
from keel.native.kvm import Kvm
from keel.native.signals import kick, kick_signal

# Opcodes (Intel SDM vol. 2), in 16-bit code.
OPCODE_MOV_AL_IMM8 = 0xB0
OPCODE_MOV_DX_IMM16 = 0xBA
OPCODE_MOV_CX_IMM16 = 0xB9
OPCODE_OUT_DX_AL = 0xEE
OPCODE_HLT = 0xF4
OPCODE_DEC_CX = 0x49
OPCODE_JNZ_REL8 = 0x75
PREFIX_OPERAND_SIZE = 0x66  # makes the next instruction use 32-bit registers
RFLAGS_RESERVED_ONE = 1 << 1  # bit 1 of RFLAGS always reads as 1
GUEST_LOAD_ADDRESS = 0x1000
GUEST_MEMORY_SIZE = 0x10000
MEMORY_SLOT = 0
JNZ_LENGTH = 2


class RealModeAssembler:
    """Emits the few real-mode instructions keel's probe guests need."""

    def __init__(self) -> None:
        self.code = bytearray()

    def mov_al(self, value: int) -> RealModeAssembler:
        self.code += bytes([OPCODE_MOV_AL_IMM8, require_int("value", value, 0, 0xFF)])
        return self

    def mov_dx(self, value: int) -> RealModeAssembler:
        immediate = struct.pack("<H", require_int("value", value, 0, UINT16_MAX))
        self.code += bytes([OPCODE_MOV_DX_IMM16]) + immediate
        return self

    def mov_ecx(self, value: int) -> RealModeAssembler:
        self.code += bytes([PREFIX_OPERAND_SIZE, OPCODE_MOV_CX_IMM16])
        self.code += struct.pack("<I", require_int("value", value, 0, UINT32_MAX))
        return self

    def out_dx_al(self) -> RealModeAssembler:
        self.code.append(OPCODE_OUT_DX_AL)
        return self

    def hlt(self) -> RealModeAssembler:
        self.code.append(OPCODE_HLT)
        return self

    def countdown_ecx(self) -> RealModeAssembler:
        """`loop: dec ecx; jnz loop` (ecx set beforehand)."""
        start = len(self.code)
        self.code += bytes([PREFIX_OPERAND_SIZE, OPCODE_DEC_CX])
        displacement = start - (len(self.code) + JNZ_LENGTH)
        self.code += bytes([OPCODE_JNZ_REL8]) + struct.pack("<b", displacement)
        return self

    def write_bytes(self, port: int, data: bytes) -> RealModeAssembler:
        """`out` each byte of `data` to `port`."""
        self.mov_dx(port)
        for byte in data:
            self.mov_al(byte).out_dx_al()
        return self


@dataclass
class GuestRun:
    """What a real-mode guest did: its port writes, in order, and when each happened."""

    writes: list[tuple[int, bytes]] = field(default_factory=list)
    write_times: list[float] = field(default_factory=list)
    halted: bool = False
    exit_reasons: list[int] = field(default_factory=list)

    def bytes_to(self, port: int) -> bytes:
        return b"".join(data for written_port, data in self.writes if written_port == port)


def run_real_mode_guest(code: bytes, *, deadline_seconds: float = 10.0,
                        max_exits: int = 10_000) -> GuestRun:
    """Run `code` at 0000:1000 in real mode on a fresh VM until it halts.

    No irqchip is created, so `hlt` comes back as KVM_EXIT_HLT. The run is bounded both in
    exits and in time: at the deadline the vCPU is kicked out of KVM_RUN and TimeoutError
    is raised.
    """
    if len(code) > GUEST_MEMORY_SIZE - GUEST_LOAD_ADDRESS:
        raise ValueError(f"guest code of {len(code)} bytes does not fit in the probe VM")
    outcome = GuestRun()
    kick_signal()
    with Kvm() as kvm, kvm.create_vm() as vm:
        memory = mmap.mmap(-1, GUEST_MEMORY_SIZE)
        try:
            memory[GUEST_LOAD_ADDRESS : GUEST_LOAD_ADDRESS + len(code)] = code
            vm.set_user_memory_region(MEMORY_SLOT, 0, memory)
            with vm.create_vcpu(0) as vcpu:
                sregs = vcpu.get_sregs()
                sregs.cs.base = 0
                sregs.cs.selector = 0
                vcpu.set_sregs(sregs)
                regs = vcpu.get_regs()
                regs.rip = GUEST_LOAD_ADDRESS
                regs.rflags = RFLAGS_RESERVED_ONE
                vcpu.set_regs(regs)
                _run_until_halt(vcpu, outcome, deadline_seconds, max_exits)
            vm.set_user_memory_region(MEMORY_SLOT, 0, bytearray())
        finally:
            memory.close()
    return outcome


def _run_until_halt(vcpu: object, outcome: GuestRun, deadline_seconds: float,
                    max_exits: int) -> None:
    from keel.native.kvm import Vcpu

    assert isinstance(vcpu, Vcpu)
    timed_out = threading.Event()
    runner = threading.get_ident()

    def expire() -> None:
        timed_out.set()
        vcpu.set_immediate_exit(True)
        kick(runner)

    timer = threading.Timer(deadline_seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        for _ in range(max_exits):
            try:
                reason = vcpu.run()
            except InterruptedError:
                if timed_out.is_set():
                    raise TimeoutError(
                        f"real-mode guest still running after {deadline_seconds} s"
                    ) from None
                continue
            outcome.exit_reasons.append(reason)
            if reason == lib.KVM_EXIT_IO:
                io = vcpu.io_exit()
                if io.direction == lib.KVM_EXIT_IO_OUT:
                    outcome.writes.append((int(io.port), bytes(vcpu.io_data())))
                    outcome.write_times.append(time.perf_counter())
                continue
            if reason == lib.KVM_EXIT_HLT:
                outcome.halted = True
                return
            raise RuntimeError(f"real-mode guest stopped with KVM exit reason {reason}")
        raise RuntimeError(f"real-mode guest made more than {max_exits} exits")
    finally:
        timer.cancel()
