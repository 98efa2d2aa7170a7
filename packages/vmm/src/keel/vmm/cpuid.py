"""CPUID for the guest: KVM's supported set, passed through a named CPU template.

Why templates: what a guest may use depends on the host. On a hypervisor that emulates guest
supervisor code (PVM, see ENVIRONMENT.md) some instructions hang the emulator, so the
"emulation-safe" template hides them (and advertises xsaveerptr so Linux skips the AMD FXSAVE
leak workaround, whose fnclex the emulator lacks). "host" passes KVM's set through unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from keel.native.kvm import CpuidEntry
from keel.vmm.errors import CpuTemplateError

LEAF_FEATURES = 0x1
LEAF_EXTENDED_FEATURES = 0x7
LEAF_EXTENDED_TOPOLOGY = 0xB
LEAF_KVM_FEATURES = 0x40000001
LEAF_ADDRESS_SIZES = 0x80000008
APIC_ID_SHIFT = 24  # leaf 1 EBX[31:24] is the initial APIC id
APIC_ID_MASK = 0xFF << APIC_ID_SHIFT
LOGICAL_COUNT_SHIFT = 16
LOGICAL_COUNT_MASK = 0xFF << LOGICAL_COUNT_SHIFT
HTT_BIT = 28  # leaf 1 EDX: "logical processor count is valid"
CPUID_GUEST_MEMORY = 16 << 20
CPUID_GUEST_ADDRESS = 0x100000
CPUID_GUEST_TIMEOUT_SECONDS = 20
CPUID_LINE_FIELDS = 7  # "cpuid" leaf subleaf eax ebx ecx edx


@dataclass(frozen=True)
class Feature:
    """Where a CPUID feature bit lives."""

    leaf: int
    subleaf: int
    register: str
    bit: int


FEATURES: dict[str, Feature] = {
    "fsgsbase": Feature(LEAF_EXTENDED_FEATURES, 0, "ebx", 0),
    "bmi1": Feature(LEAF_EXTENDED_FEATURES, 0, "ebx", 3),
    "avx2": Feature(LEAF_EXTENDED_FEATURES, 0, "ebx", 5),
    "bmi2": Feature(LEAF_EXTENDED_FEATURES, 0, "ebx", 8),
    "erms": Feature(LEAF_EXTENDED_FEATURES, 0, "ebx", 9),
    "rdseed": Feature(LEAF_EXTENDED_FEATURES, 0, "ebx", 18),
    "smap": Feature(LEAF_EXTENDED_FEATURES, 0, "ebx", 20),
    "rdpid": Feature(LEAF_EXTENDED_FEATURES, 0, "ecx", 22),
    "fsrm": Feature(LEAF_EXTENDED_FEATURES, 0, "edx", 4),
    "cx16": Feature(LEAF_FEATURES, 0, "ecx", 13),
    "x2apic": Feature(LEAF_FEATURES, 0, "ecx", 21),
    "popcnt": Feature(LEAF_FEATURES, 0, "ecx", 23),
    "xsave": Feature(LEAF_FEATURES, 0, "ecx", 26),
    "osxsave": Feature(LEAF_FEATURES, 0, "ecx", 27),
    "avx": Feature(LEAF_FEATURES, 0, "ecx", 28),
    "rdrand": Feature(LEAF_FEATURES, 0, "ecx", 30),
    "hypervisor": Feature(LEAF_FEATURES, 0, "ecx", 31),
    "xsaveerptr": Feature(LEAF_ADDRESS_SIZES, 0, "ebx", 2),
    # KVM paravirtual features whose use means a hypercall (vmcall), which PVM cannot take
    # from guest supervisor mode.
    "kvm_pv_unhalt": Feature(LEAF_KVM_FEATURES, 0, "eax", 7),
    "kvm_pv_send_ipi": Feature(LEAF_KVM_FEATURES, 0, "eax", 11),
    "kvm_pv_sched_yield": Feature(LEAF_KVM_FEATURES, 0, "eax", 13),
}


@dataclass(frozen=True)
class CpuTemplate:
    """A named edit of KVM's supported CPUID: bits to clear and bits to set."""

    name: str
    description: str
    hide: frozenset[str] = frozenset()
    advertise: frozenset[str] = frozenset()


EMULATION_SAFE_HIDDEN = frozenset({
    "cx16", "xsave", "osxsave", "smap", "popcnt", "rdrand", "rdseed", "rdpid", "avx", "avx2",
    "bmi1", "bmi2", "erms", "fsrm", "fsgsbase", "kvm_pv_unhalt", "kvm_pv_send_ipi",
    "kvm_pv_sched_yield",
})

TEMPLATES: dict[str, CpuTemplate] = {
    "host": CpuTemplate("host", "KVM's supported CPUID unchanged (hardware virtualization)"),
    "emulation-safe": CpuTemplate(
        "emulation-safe",
        "hides what an emulating hypervisor (PVM) cannot run in guest supervisor mode",
        hide=EMULATION_SAFE_HIDDEN,
        advertise=frozenset({"xsaveerptr"}),
    ),
}
DEFAULT_TEMPLATE = "emulation-safe"


def template_named(name: str) -> CpuTemplate:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise CpuTemplateError(
            f"unknown CPU template {name!r}; expected one of {sorted(TEMPLATES)}") from None


def _edit(entry: CpuidEntry, feature: Feature, value: bool) -> CpuidEntry:
    current = getattr(entry, feature.register)
    mask = 1 << feature.bit
    return replace(entry, **{feature.register: (current | mask) if value else (current & ~mask)})


def _matches(entry: CpuidEntry, feature: Feature) -> bool:
    return entry.function == feature.leaf and entry.index == feature.subleaf


def apply_template(supported: Iterable[CpuidEntry], template: CpuTemplate, *, vcpu_id: int,
                   vcpu_count: int) -> list[CpuidEntry]:
    """The CPUID entries for one vCPU: the template's edits plus this vCPU's APIC id."""
    entries = list(supported)
    for name in template.hide | template.advertise:
        if name not in FEATURES:
            raise CpuTemplateError(f"template {template.name!r} names unknown feature {name!r}")
    for index, entry in enumerate(entries):
        for name in template.hide:
            if _matches(entry, FEATURES[name]):
                entry = _edit(entry, FEATURES[name], False)
        for name in template.advertise:
            if _matches(entry, FEATURES[name]):
                entry = _edit(entry, FEATURES[name], True)
        if entry.function == LEAF_FEATURES:
            ebx = (entry.ebx & ~(APIC_ID_MASK | LOGICAL_COUNT_MASK)) | (vcpu_id << APIC_ID_SHIFT)
            ebx |= vcpu_count << LOGICAL_COUNT_SHIFT
            edx = entry.edx | (1 << HTT_BIT) if vcpu_count > 1 else entry.edx
            entry = replace(entry, ebx=ebx, edx=edx)
        elif entry.function == LEAF_EXTENDED_TOPOLOGY:
            entry = replace(entry, edx=vcpu_id)
        entries[index] = entry
    return entries


def has_feature(entries: Iterable[CpuidEntry], name: str) -> bool:
    """Whether `name` is set in `entries` (for tests and `keel vmm doctor`)."""
    feature = FEATURES.get(name)
    if feature is None:
        raise CpuTemplateError(f"unknown CPUID feature {name!r}; expected one of "
                               f"{sorted(FEATURES)}")
    for entry in entries:
        if _matches(entry, feature):
            return bool(getattr(entry, feature.register) >> feature.bit & 1)
    return False


def guest_visible_cpuid(cpuid_guest: Path, template_name: str) -> list[CpuidEntry]:
    """CPUID as a guest under `template_name` sees it (the `cpuid` test guest asks at CPL 0).

    Why measure: some hypervisors do not honour KVM_SET_CPUID2 for every leaf (PVM forces
    its own feature bits into leaves 1 and 7), and only the guest's view tells.
    """
    from keel.vmm.boot.modes import CpuMode, EntryPoint
    from keel.vmm.machine import Vm

    output = bytearray()
    with Vm(CPUID_GUEST_MEMORY, cpu_template=template_name, serial_output=output.extend) as vm:
        vm.memory.write(CPUID_GUEST_ADDRESS, cpuid_guest.read_bytes())
        outcome = vm.run(EntryPoint(CpuMode.LONG, CPUID_GUEST_ADDRESS),
                         timeout=CPUID_GUEST_TIMEOUT_SECONDS)
    if outcome.reason != "debug-exit" or outcome.status != 0:
        raise CpuTemplateError(f"the cpuid guest ended with {outcome}; output {bytes(output)!r}")
    seen = []
    for line in output.decode(errors="replace").splitlines():
        fields = line.split()
        if len(fields) != CPUID_LINE_FIELDS or fields[0] != "cpuid":
            raise CpuTemplateError(f"unexpected line from the cpuid guest: {line!r}")
        leaf, subleaf, eax, ebx, ecx, edx = (int(value, 0) for value in fields[1:])
        seen.append(CpuidEntry(leaf, subleaf, 0, eax, ebx, ecx, edx))
    return seen
