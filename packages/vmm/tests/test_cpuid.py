"""CPU templates applied to this host's real supported CPUID."""

from __future__ import annotations

from pathlib import Path

import pytest

from keel.native.kvm import CpuidEntry, Kvm
from keel.native.testing.skips import requires_kvm
from keel.vmm.cpuid import (
    EMULATION_SAFE_HIDDEN,
    FEATURES,
    LEAF_ADDRESS_SIZES,
    apply_template,
    has_feature,
    template_named,
)
from keel.vmm.errors import CpuTemplateError

SUPPORTED_SAMPLE = [
    CpuidEntry(0x1, 0, 0, 0x000806EC, 0x00000800, 0xFFFFFFFF, 0x178BFBFF),
    CpuidEntry(0x7, 0, 1, 0, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF),
    CpuidEntry(0x40000001, 0, 0, 0xFFFFFFFF, 0, 0, 0),
    CpuidEntry(LEAF_ADDRESS_SIZES, 0, 0, 0x3030, 0, 0, 0),
]


def test_emulation_safe_hides_every_listed_feature_and_advertises_xsaveerptr() -> None:
    entries = apply_template(SUPPORTED_SAMPLE, template_named("emulation-safe"), vcpu_id=0,
                             vcpu_count=1)
    for name in EMULATION_SAFE_HIDDEN:
        assert not has_feature(entries, name), name
    assert has_feature(entries, "xsaveerptr")
    assert has_feature(entries, "hypervisor")  # untouched bits stay


def test_the_brief_list_is_covered() -> None:
    wanted = {"cx16", "xsave", "smap", "popcnt", "rdrand", "rdseed", "rdpid", "avx", "avx2",
              "bmi1", "bmi2", "erms", "fsrm", "fsgsbase"}
    assert wanted <= EMULATION_SAFE_HIDDEN


def test_host_template_changes_only_the_apic_id() -> None:
    entries = apply_template(SUPPORTED_SAMPLE, template_named("host"), vcpu_id=3, vcpu_count=4)
    leaf1 = entries[0]
    assert leaf1.ebx >> 24 == 3 and (leaf1.ebx >> 16) & 0xFF == 4
    assert leaf1.ecx == SUPPORTED_SAMPLE[0].ecx
    assert entries[1:] == SUPPORTED_SAMPLE[1:]


def test_unknown_names_are_refused() -> None:
    with pytest.raises(CpuTemplateError, match=r"'fast'.*emulation-safe"):
        template_named("fast")
    with pytest.raises(CpuTemplateError, match="'sse9'"):
        has_feature([], "sse9")


@requires_kvm
def test_applied_to_this_hosts_cpuid_kvm_accepts_it() -> None:
    from keel.vmm.machine import Vm

    with Kvm() as kvm:
        supported = kvm.supported_cpuid()
    entries = apply_template(supported, template_named("emulation-safe"), vcpu_id=0,
                             vcpu_count=1)
    assert all(not has_feature(entries, name) for name in EMULATION_SAFE_HIDDEN)
    assert set(FEATURES) >= EMULATION_SAFE_HIDDEN
    with Vm(1 << 20, cpu_template="emulation-safe") as vm:  # KVM_SET_CPUID2 takes it
        assert len(vm.vcpus) == 1


@pytest.fixture(scope="module")
def supervisor_code_is_native() -> bool:
    from keel.native.guest_speed import measure_supervisor_speed

    return measure_supervisor_speed().native


@requires_kvm
@pytest.mark.kvm
@pytest.mark.parametrize("template_name", ["emulation-safe", "host"])
def test_the_guest_sees_the_template_through_cpuid(guests: dict[str, Path], template_name: str,
                                                   supervisor_code_is_native: bool) -> None:
    from keel.vmm.cpuid import guest_visible_cpuid

    with Kvm() as kvm:
        supported = kvm.supported_cpuid()
    configured = {(e.function, e.index): e for e in apply_template(
        supported, template_named(template_name), vcpu_id=0, vcpu_count=1)}
    seen = guest_visible_cpuid(guests["cpuid"], template_name)
    assert [(e.function, e.index) for e in seen] == [(0x1, 0), (0x7, 0), (0xB, 0),
                                                      (0x40000001, 0), (0x80000008, 0)]
    for entry in seen:
        expected = configured.get((entry.function, entry.index))
        if expected is None:
            continue
        if entry.function in (0x1, 0x7) and not supervisor_code_is_native:
            # PVM ORs its own feature bits into leaves 1 and 7 (measured: hidden bits stay
            # visible); everything the VMM set must still be there, and the APIC id is ours.
            for register in ("ecx", "edx") if entry.function == 0x1 else ("ebx", "ecx", "edx"):
                ours = getattr(expected, register)
                assert getattr(entry, register) & ours == ours, (hex(entry.function), register)
            if entry.function == 0x1:
                assert entry.ebx == expected.ebx
            continue
        assert (entry.eax, entry.ebx, entry.ecx, entry.edx) == (
            expected.eax, expected.ebx, expected.ecx, expected.edx), hex(entry.function)
    if template_name == "emulation-safe":
        assert has_feature(seen, "xsaveerptr")
        for name in ("kvm_pv_unhalt", "kvm_pv_send_ipi", "kvm_pv_sched_yield"):
            assert not has_feature(seen, name), name
        if supervisor_code_is_native:
            for name in EMULATION_SAFE_HIDDEN:
                assert not has_feature(seen, name), name
