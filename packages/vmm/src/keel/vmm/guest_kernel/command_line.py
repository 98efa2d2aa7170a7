"""Kernel command-line parameters that let keel's guest kernel boot under an emulating
hypervisor (PVM, see ENVIRONMENT.md).

Why on the command line and not only in CPUID: on PVM the hypervisor puts its own feature bits
into CPUID leaves 1 and 7 whatever KVM_SET_CPUID2 says (keel.vmm.cpuid measures this), so the
emulation-safe CPU template cannot hide SMAP, POPCNT, CMPXCHG16B, ... from the kernel there.
`clearcpuid=` makes the kernel itself forget them before it patches its alternatives (so no
clac/stac, popcnt or cmpxchg16b is ever executed at CPL 0); the other parameters avoid xsave,
fsgsbase, the timer check, the TSC watchdog and (with keel's patch) the int3 self-test.
"""

from __future__ import annotations

from keel.vmm.guest_kernel.patches import SKIP_INT3_SELFTEST_PARAMETER

WORD_BITS = 32
# X86_FEATURE_* numbers (word, bit) from arch/x86/include/asm/cpufeatures.h in Linux 6.1;
# clearcpuid takes them as word * 32 + bit (names need CONFIG_X86_FEATURE_NAMES, which
# tinyconfig leaves out).
CPU_FEATURES: dict[str, tuple[int, int]] = {
    "cx16": (4, 13),
    "popcnt": (4, 23),
    "xsave": (4, 26),
    "avx": (4, 28),
    "rdrand": (4, 30),
    "fsgsbase": (9, 0),
    "bmi1": (9, 3),
    "avx2": (9, 5),
    "bmi2": (9, 8),
    "erms": (9, 9),
    "rdseed": (9, 18),
    "smap": (9, 20),
    "rdpid": (16, 22),
    "fsrm": (18, 4),
}
# no-kvmclock: under PVM the kvm-clock page's version stays odd and the kernel spins for ever
# in pvclock_clocksource_read() right after "clocksource: Switched to clocksource kvm-clock"
# (seen under keel.vmm and QEMU alike); without it the kernel gets past the initcalls.
FIXED_PARAMETERS = ("no-kvmclock", "noxsave", "nofsgsbase", "no_timer_check", "tsc=reliable",
                    SKIP_INT3_SELFTEST_PARAMETER)


def feature_number(name: str) -> int:
    word, bit = CPU_FEATURES[name]
    return word * WORD_BITS + bit


def emulation_safe_parameters() -> str:
    """What to add to the command line when guest supervisor code is emulated."""
    cleared = ",".join(str(feature_number(name)) for name in CPU_FEATURES)
    return " ".join((*FIXED_PARAMETERS, f"clearcpuid={cleared}"))
