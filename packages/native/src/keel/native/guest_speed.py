"""Does this host run guest supervisor code natively, or emulate it?

Why a timed guest: CPU flags cannot tell. On a KVM host backed by a software hypervisor (PVM)
every CPL 0 instruction is emulated at one to two million per second, while hardware
virtualization runs them at full speed. A countdown loop between two port writes tells the
two apart by three orders of magnitude.
"""

from __future__ import annotations

from dataclasses import dataclass

from keel.native.real_mode import RealModeAssembler, run_real_mode_guest

PROBE_PORT = 0x80  # the POST diagnostic port: harmless to write anywhere
PROBE_ITERATIONS = 200_000
# Hardware runs dec/jnz at about one iteration a cycle (billions a second); the emulator at
# about a million. Anything above this line is native by a wide margin.
NATIVE_ITERATIONS_PER_SECOND = 50_000_000
MARK_START = 1
MARK_END = 2


@dataclass(frozen=True)
class GuestSpeed:
    iterations: int
    seconds: float

    @property
    def iterations_per_second(self) -> float:
        return self.iterations / self.seconds if self.seconds > 0 else float("inf")

    @property
    def native(self) -> bool:
        return self.iterations_per_second >= NATIVE_ITERATIONS_PER_SECOND


def measure_supervisor_speed(iterations: int = PROBE_ITERATIONS,
                             deadline_seconds: float = 20.0) -> GuestSpeed:
    """Time a real-mode (CPL 0) countdown loop between two port writes."""
    code = (
        RealModeAssembler()
        .mov_ecx(iterations)
        .write_bytes(PROBE_PORT, bytes([MARK_START]))
        .countdown_ecx()
        .write_bytes(PROBE_PORT, bytes([MARK_END]))
        .hlt()
        .code
    )
    run = run_real_mode_guest(bytes(code), deadline_seconds=deadline_seconds)
    marks = [data for port, data in run.writes if port == PROBE_PORT]
    if marks != [bytes([MARK_START]), bytes([MARK_END])] or not run.halted:
        raise RuntimeError(f"probe guest misbehaved: writes {run.writes}, halted={run.halted}")
    return GuestSpeed(iterations, run.write_times[1] - run.write_times[0])
