"""Patches keel applies to the guest kernel's source before building it.

Why a patch at all: under an emulating hypervisor (PVM, see ENVIRONMENT.md) an int3 at CPL 0
is never delivered, and the kernel's int3 self-test in alternative_instructions() loops for
ever. The patch adds the boot parameter `no_int3_selftest` that skips it; without the
parameter the kernel behaves exactly as upstream.
"""

from __future__ import annotations

from dataclasses import dataclass

# The boot parameter the patch below adds.
SKIP_INT3_SELFTEST_PARAMETER = "no_int3_selftest"


@dataclass(frozen=True)
class Patch:
    name: str
    text: str  # a unified diff, applied with `patch -p1` at the source tree's root


# Kept as escaped lines (the diff has tabs and context lines with a leading space).
INT3_SELFTEST = Patch("skip-int3-selftest", "\n".join((
    '--- a/arch/x86/kernel/alternative.c',
    '+++ b/arch/x86/kernel/alternative.c',
    '@@ -1116,6 +1116,20 @@',
    ' \treturn NOTIFY_STOP;',
    ' }',
    ' ',
    '+/*',
    '+ * "no_int3_selftest" skips the self-test below: hypervisors that emulate CPL 0 code',
    '+ * one instruction at a time (PVM) cannot deliver an int3 raised at CPL 0, and the',
    '+ * self-test then never returns.',
    '+ */',
    '+static bool int3_selftest_disabled __initdata;',
    '+',
    '+static int __init parse_no_int3_selftest(char *arg)',
    '+{',
    '+\tint3_selftest_disabled = true;',
    '+\treturn 0;',
    '+}',
    '+early_param("no_int3_selftest", parse_no_int3_selftest);',
    '+',
    ' /* Must be noinline to ensure uniqueness of int3_selftest_ip. */',
    ' static noinline void __init int3_selftest(void)',
    ' {',
    '@@ -1125,6 +1139,11 @@',
    ' \t};',
    ' \tunsigned int val = 0;',
    ' ',
    '+\tif (int3_selftest_disabled) {',
    '+\t\tpr_info("int3 self-test skipped (no_int3_selftest)\\n");',
    '+\t\treturn;',
    '+\t}',
    '+',
    ' \tBUG_ON(register_die_notifier(&int3_exception_nb));',
    ' ',
    ' \t/*',
)) + "\n")

PATCHES = (INT3_SELFTEST,)
