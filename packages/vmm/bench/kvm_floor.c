/* The floor of the exit round-trip benchmark: the smallest KVM loop that runs the same guest.
   argv: memory image (prepared by keel's multiboot loader), entry, eax, ebx. The guest's
   serial bytes go to stdout; its isa-debug-exit value becomes our exit status. */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define MEMORY_SIZE (64ul << 20)
#define SERIAL_DATA 0x3f8
#define SERIAL_LINE_STATUS 0x3fd
#define LINE_STATUS_TRANSMITTER_EMPTY 0x20
#define DEBUG_EXIT 0xf4
#define CPUID_CAPACITY 256
#define CHECK(call) do { if ((call) < 0) { perror(#call); exit(2); } } while (0)

int main(int argc, char **argv) {
    if (argc != 5) { fprintf(stderr, "usage: %s IMAGE ENTRY EAX EBX\n", argv[0]); return 2; }
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC), vm, vcpu, image;
    CHECK(kvm);
    CHECK(vm = ioctl(kvm, KVM_CREATE_VM, 0));
    CHECK(ioctl(vm, KVM_SET_TSS_ADDR, 0xfffbd000ul));
    CHECK(ioctl(vm, KVM_CREATE_IRQCHIP, 0));
    unsigned char *memory = mmap(NULL, MEMORY_SIZE, PROT_READ | PROT_WRITE,
                                 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(image = open(argv[1], O_RDONLY));
    for (size_t done = 0;;) { ssize_t n = read(image, memory + done, MEMORY_SIZE - done);
                              CHECK(n); if (!n) break; done += (size_t)n; }
    struct kvm_userspace_memory_region region = {
        .slot = 0, .guest_phys_addr = 0, .memory_size = MEMORY_SIZE,
        .userspace_addr = (unsigned long)memory };
    CHECK(ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region));
    CHECK(vcpu = ioctl(vm, KVM_CREATE_VCPU, 0));
    struct kvm_cpuid2 *cpuid = calloc(1, sizeof *cpuid + CPUID_CAPACITY * sizeof cpuid->entries[0]);
    cpuid->nent = CPUID_CAPACITY;
    CHECK(ioctl(kvm, KVM_GET_SUPPORTED_CPUID, cpuid));
    CHECK(ioctl(vcpu, KVM_SET_CPUID2, cpuid));
    int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    struct kvm_run *run = mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    struct kvm_sregs sregs;
    CHECK(ioctl(vcpu, KVM_GET_SREGS, &sregs));
    struct kvm_segment code = { .base = 0, .limit = 0xffffffff, .selector = 0x08, .type = 11,
                                .present = 1, .db = 1, .s = 1, .g = 1 };
    struct kvm_segment data = code;
    data.selector = 0x10; data.type = 3;
    sregs.cs = code; sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data;
    sregs.cr0 |= 1;
    CHECK(ioctl(vcpu, KVM_SET_SREGS, &sregs));
    struct kvm_regs regs = { .rip = strtoul(argv[2], 0, 0), .rax = strtoul(argv[3], 0, 0),
                             .rbx = strtoul(argv[4], 0, 0), .rflags = 2 };
    CHECK(ioctl(vcpu, KVM_SET_REGS, &regs));
    for (;;) {
        CHECK(ioctl(vcpu, KVM_RUN, 0));
        if (run->exit_reason == KVM_EXIT_IO) {
            unsigned char *bytes = (unsigned char *)run + run->io.data_offset;
            if (run->io.direction == KVM_EXIT_IO_OUT) {
                if (run->io.port == SERIAL_DATA) { putchar(bytes[0]); if (bytes[0] == '\n') fflush(stdout); }
                else if (run->io.port == DEBUG_EXIT) { fflush(stdout); return bytes[0]; }
            } else {
                memset(bytes, 0xff, (size_t)run->io.size * run->io.count);
                if (run->io.port == SERIAL_LINE_STATUS) bytes[0] = LINE_STATUS_TRANSMITTER_EMPTY;
            }
        } else if (run->exit_reason == KVM_EXIT_MMIO) {
            if (!run->mmio.is_write) memset(run->mmio.data, 0xff, run->mmio.len);
        } else {
            fprintf(stderr, "unexpected exit reason %u\n", run->exit_reason);
            return 3;
        }
    }
}
