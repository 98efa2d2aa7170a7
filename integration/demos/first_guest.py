"""Demo: boot a first tiny guest on this host's KVM and show what it printed.

Run it with `./dev demo` (or `python integration/demos/first_guest.py` with keel-native
installed). The guest is a handful of real-mode instructions that write a greeting to the
serial port and halt; keel.native's KVM bindings run it and collect each port write.
"""

from __future__ import annotations

import time

from keel.native.real_mode import RealModeAssembler, run_real_mode_guest

SERIAL_PORT = 0x3F8
GREETING = b"Hello from a keel guest!\n"


def main() -> None:
    print("first guest: building a real-mode guest that writes to serial port 0x3f8")
    code = RealModeAssembler().write_bytes(SERIAL_PORT, GREETING).hlt().code
    started = time.perf_counter()
    run = run_real_mode_guest(bytes(code))
    elapsed = time.perf_counter() - started
    print(f"first guest: ran {len(code)} bytes of guest code, {len(run.exit_reasons)} VM exits, "
          f"halted={run.halted}, in {elapsed * 1000:.1f} ms")
    print("first guest: the guest's serial output was:")
    print("    " + run.bytes_to(SERIAL_PORT).decode().rstrip())
    if run.bytes_to(SERIAL_PORT) != GREETING or not run.halted:
        raise SystemExit("first guest: the guest did not say what it should have")


if __name__ == "__main__":
    main()
