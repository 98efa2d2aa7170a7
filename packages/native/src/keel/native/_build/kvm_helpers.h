#include <stddef.h>
#include <stdint.h>

/* Each exit reason fills one member of kvm_run's anonymous union. These layout-compatible
   views let cffi type the member without declaring the whole union, and static asserts keep
   them honest against the header. */
struct keel_kvm_io { __u8 direction; __u8 size; __u16 port; __u32 count; __u64 data_offset; };
struct keel_kvm_mmio { __u64 phys_addr; __u8 data[8]; __u32 len; __u8 is_write; };
struct keel_kvm_fail_entry { __u64 hardware_entry_failure_reason; __u32 cpu; };
struct keel_kvm_internal { __u32 suberror; __u32 ndata; __u64 data[16]; };
struct keel_kvm_system_event { __u32 type; __u32 ndata; __u64 data[16]; };
struct keel_kvm_hw { __u64 hardware_exit_reason; };
struct keel_kvm_ex { __u32 exception; __u32 error_code; };

#define KEEL_SAME_OFFSET(view, member, real) \
    _Static_assert(offsetof(struct view, member) + offsetof(struct kvm_run, real) == \
                   offsetof(struct kvm_run, real.member), #view "." #member)

KEEL_SAME_OFFSET(keel_kvm_io, data_offset, io);
KEEL_SAME_OFFSET(keel_kvm_io, port, io);
KEEL_SAME_OFFSET(keel_kvm_mmio, is_write, mmio);
KEEL_SAME_OFFSET(keel_kvm_mmio, len, mmio);
KEEL_SAME_OFFSET(keel_kvm_fail_entry, cpu, fail_entry);
KEEL_SAME_OFFSET(keel_kvm_internal, data, internal);
KEEL_SAME_OFFSET(keel_kvm_system_event, data, system_event);
KEEL_SAME_OFFSET(keel_kvm_ex, error_code, ex);

static struct keel_kvm_io *keel_kvm_run_io(struct kvm_run *run)
{ return (struct keel_kvm_io *)&run->io; }
static struct keel_kvm_mmio *keel_kvm_run_mmio(struct kvm_run *run)
{ return (struct keel_kvm_mmio *)&run->mmio; }
static struct keel_kvm_fail_entry *keel_kvm_run_fail_entry(struct kvm_run *run)
{ return (struct keel_kvm_fail_entry *)&run->fail_entry; }
static struct keel_kvm_internal *keel_kvm_run_internal(struct kvm_run *run)
{ return (struct keel_kvm_internal *)&run->internal; }
static struct keel_kvm_system_event *keel_kvm_run_system_event(struct kvm_run *run)
{ return (struct keel_kvm_system_event *)&run->system_event; }
static struct keel_kvm_hw *keel_kvm_run_hw(struct kvm_run *run)
{ return (struct keel_kvm_hw *)&run->hw; }
static struct keel_kvm_ex *keel_kvm_run_ex(struct kvm_run *run)
{ return (struct keel_kvm_ex *)&run->ex; }
