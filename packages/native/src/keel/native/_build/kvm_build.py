"""cffi out-of-line API build of the KVM bindings (`keel.native._kvm`).

Structures are declared partially (`...;`) so the compiler supplies sizes and offsets from
<linux/kvm.h>; every KVM_* number comes from the header through `header_macros`.
"""

from __future__ import annotations

import os
import sys

from cffi import FFI

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from header_macros import cdef_defines, integer_macros, read_helper  # type: ignore[import-not-found]  # noqa: E402

HEADERS = ["linux/kvm.h"]
PREFIXES = (
    "KVM_API_VERSION",
    "KVM_EXIT_",
    "KVM_CAP_",
    "KVM_SYSTEM_EVENT_",
    "KVM_INTERNAL_ERROR_",
    "KVM_MEM_",
    "KVM_IOEVENTFD_FLAG_",
    "KVM_IRQFD_FLAG_",
    "KVM_PIT_",
    "KVM_IRQCHIP_",
    "KVM_CPUID_FLAG_",
    "KVM_APIC_REG_SIZE",
    "KVM_NR_INTERRUPTS",
    "KVM_GUESTDBG_",
    "KVM_MAX_CPUID_ENTRIES",
)
IOCTLS = [
    "KVM_GET_API_VERSION",
    "KVM_CREATE_VM",
    "KVM_CHECK_EXTENSION",
    "KVM_GET_VCPU_MMAP_SIZE",
    "KVM_GET_SUPPORTED_CPUID",
    "KVM_GET_MSR_INDEX_LIST",
    "KVM_GET_MSR_FEATURE_INDEX_LIST",
    "KVM_CREATE_VCPU",
    "KVM_SET_USER_MEMORY_REGION",
    "KVM_SET_TSS_ADDR",
    "KVM_SET_IDENTITY_MAP_ADDR",
    "KVM_CREATE_IRQCHIP",
    "KVM_GET_IRQCHIP",
    "KVM_SET_IRQCHIP",
    "KVM_CREATE_PIT2",
    "KVM_GET_PIT2",
    "KVM_SET_PIT2",
    "KVM_REINJECT_CONTROL",
    "KVM_IRQ_LINE",
    "KVM_IRQFD",
    "KVM_IOEVENTFD",
    "KVM_ENABLE_CAP",
    "KVM_RUN",
    "KVM_GET_REGS",
    "KVM_SET_REGS",
    "KVM_GET_SREGS",
    "KVM_SET_SREGS",
    "KVM_GET_FPU",
    "KVM_SET_FPU",
    "KVM_GET_MSRS",
    "KVM_SET_MSRS",
    "KVM_SET_CPUID2",
    "KVM_GET_CPUID2",
    "KVM_GET_LAPIC",
    "KVM_SET_LAPIC",
    "KVM_SET_GUEST_DEBUG",
]
# Macros that expand to something cffi cannot evaluate as an integer.
EXCLUDE = frozenset({"KVM_CAP_S390_PSW"})

STRUCTS = """
typedef int... __u8;
typedef int... __u16;
typedef int... __u32;
typedef int... __s32;
typedef int... __u64;

struct kvm_regs {
    __u64 rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp;
    __u64 r8, r9, r10, r11, r12, r13, r14, r15;
    __u64 rip, rflags;
};
struct kvm_segment {
    __u64 base; __u32 limit; __u16 selector; __u8 type;
    __u8 present, dpl, db, s, l, g, avl; __u8 unusable;
    ...;
};
struct kvm_dtable { __u64 base; __u16 limit; ...; };
struct kvm_sregs {
    struct kvm_segment cs, ds, es, fs, gs, ss, tr, ldt;
    struct kvm_dtable gdt, idt;
    __u64 cr0, cr2, cr3, cr4, cr8, efer, apic_base;
    __u64 interrupt_bitmap[...];
};
struct kvm_fpu {
    __u8 fpr[8][16]; __u16 fcw; __u16 fsw; __u8 ftwx; __u16 last_opcode;
    __u64 last_ip; __u64 last_dp; __u8 xmm[16][16]; __u32 mxcsr;
    ...;
};
struct kvm_msr_entry { __u32 index; __u64 data; ...; };
struct kvm_msrs { __u32 nmsrs; struct kvm_msr_entry entries[]; ...; };
struct kvm_msr_list { __u32 nmsrs; __u32 indices[]; };
struct kvm_cpuid_entry2 {
    __u32 function; __u32 index; __u32 flags;
    __u32 eax; __u32 ebx; __u32 ecx; __u32 edx;
    ...;
};
struct kvm_cpuid2 { __u32 nent; struct kvm_cpuid_entry2 entries[]; ...; };
struct kvm_lapic_state { char regs[...]; };
struct kvm_irqchip { __u32 chip_id; ...; };
struct kvm_pit_config { __u32 flags; ...; };
struct kvm_pit_state2 { __u32 flags; ...; };
struct kvm_reinject_control { __u8 pit_reinject; ...; };
struct kvm_irq_level { __u32 irq; __u32 level; };
struct kvm_irqfd { __u32 fd; __u32 gsi; __u32 flags; __u32 resamplefd; ...; };
struct kvm_ioeventfd { __u64 datamatch; __u64 addr; __u32 len; __s32 fd; __u32 flags; ...; };
struct kvm_userspace_memory_region {
    __u32 slot; __u32 flags; __u64 guest_phys_addr; __u64 memory_size; __u64 userspace_addr;
};
struct kvm_enable_cap { __u32 cap; __u32 flags; __u64 args[4]; ...; };

struct keel_kvm_io { __u8 direction; __u8 size; __u16 port; __u32 count; __u64 data_offset; };
struct keel_kvm_mmio { __u64 phys_addr; __u8 data[8]; __u32 len; __u8 is_write; };
struct keel_kvm_fail_entry { __u64 hardware_entry_failure_reason; __u32 cpu; };
struct keel_kvm_internal { __u32 suberror; __u32 ndata; __u64 data[16]; };
struct keel_kvm_system_event { __u32 type; __u32 ndata; __u64 data[16]; };
struct keel_kvm_hw { __u64 hardware_exit_reason; };
struct keel_kvm_ex { __u32 exception; __u32 error_code; };

struct kvm_run {
    __u8 request_interrupt_window;
    __u8 immediate_exit;
    __u32 exit_reason;
    __u8 ready_for_interrupt_injection;
    __u8 if_flag;
    __u16 flags;
    __u64 cr8;
    __u64 apic_base;
    ...;
};

/* Views of the kvm_run exit union, typed by the reason that fills it. */
struct keel_kvm_io *keel_kvm_run_io(struct kvm_run *run);
struct keel_kvm_mmio *keel_kvm_run_mmio(struct kvm_run *run);
struct keel_kvm_fail_entry *keel_kvm_run_fail_entry(struct kvm_run *run);
struct keel_kvm_internal *keel_kvm_run_internal(struct kvm_run *run);
struct keel_kvm_system_event *keel_kvm_run_system_event(struct kvm_run *run);
struct keel_kvm_hw *keel_kvm_run_hw(struct kvm_run *run);
struct keel_kvm_ex *keel_kvm_run_ex(struct kvm_run *run);

/* ioctl wrappers: return the result, or -errno on failure (no errno race across threads). */
long keel_ioctl_ptr(int fd, unsigned long request, void *argument);
long keel_ioctl_int(int fd, unsigned long request, unsigned long argument);
"""


def _ffibuilder() -> FFI:
    builder = FFI()
    macros = integer_macros(HEADERS, PREFIXES, EXCLUDE)
    builder.cdef(STRUCTS + cdef_defines(sorted(set(macros) | set(IOCTLS))))
    builder.set_source(
        "keel.native._kvm",
        "#include <linux/kvm.h>\n" + read_helper("ioctl_helpers.h") + read_helper("kvm_helpers.h"),
    )
    return builder


ffibuilder = _ffibuilder()

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
