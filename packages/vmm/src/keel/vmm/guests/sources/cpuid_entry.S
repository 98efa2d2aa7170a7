/* Execute CPUID at CPL 0 before dropping to user mode: under PVM, CPUID at CPL 3 runs natively
   and shows the host's values, while at CPL 0 the hypervisor answers with the vCPU's CPUID
   (what KVM_SET_CPUID2 set, i.e. the CPU template). Linked first, so the flat image starts
   here; continues at _start64. */
#define CPUID_LEAVES 5

    .section .text.entry64, "ax"
    .code64
    .global _start_cpuid
_start_cpuid:
    lea cpuid_requests(%rip), %r8
    lea cpuid_results(%rip), %r9
    mov $CPUID_LEAVES, %r10d
1:  mov (%r8), %eax
    mov 4(%r8), %ecx
    cpuid
    mov %eax, (%r9)
    mov %ebx, 4(%r9)
    mov %ecx, 8(%r9)
    mov %edx, 12(%r9)
    add $8, %r8
    add $16, %r9
    dec %r10d
    jnz 1b
    jmp _start64

    .section .data.cpuid, "aw"
    .global cpuid_requests, cpuid_leaf_count
cpuid_leaf_count: .long CPUID_LEAVES
cpuid_requests:
    .long 0x1, 0
    .long 0x7, 0
    .long 0xb, 0
    .long 0x40000001, 0
    .long 0x80000008, 0

    .section .bss.cpuid, "aw", @nobits
    .global cpuid_results
    .align 16
cpuid_results: .space 16 * CPUID_LEAVES
