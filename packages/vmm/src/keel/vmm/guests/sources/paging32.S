/* From 32-bit protected mode to 64-bit long mode: identity-map 4 GiB with 2 MiB user pages
   (filled by a loop: the tables live in .bss), enable PAE, EFER.LME and paging, far-jump to
   the 64-bit code segment. Called with a jmp; continues at long_mode_entry (defined by the
   guest) with edi/esi preserved. */
#define PAGE_FLAGS 0x7            /* present, writable, user */
#define LARGE_PAGE_FLAGS 0x87     /* + 2 MiB page */
#define CR4_PAE 0x20
#define MSR_EFER 0xc0000080
#define EFER_LME 0x100
#define CR0_PG_PE 0x80000001

    .section .text.paging32, "ax"
    .code32
    .global enable_long_mode32
enable_long_mode32:
    /* PML4[0] -> PDPT; PDPT[0..3] -> four page directories */
    movl $pdpt + PAGE_FLAGS, pml4
    xor %ecx, %ecx
1:  mov %ecx, %eax
    shl $12, %eax
    add $page_directories + PAGE_FLAGS, %eax
    mov %eax, pdpt(,%ecx,8)
    inc %ecx
    cmp $4, %ecx
    jne 1b
    /* 2048 entries of 2 MiB: entry i maps i * 2 MiB; high dword = 0 (from .bss) */
    xor %ecx, %ecx
2:  mov %ecx, %eax
    shl $21, %eax
    or $LARGE_PAGE_FLAGS, %eax
    mov %eax, page_directories(,%ecx,8)
    inc %ecx
    cmp $2048, %ecx
    jne 2b
    mov $pml4, %eax
    mov %eax, %cr3
    mov %cr4, %eax
    or $CR4_PAE, %eax
    mov %eax, %cr4
    mov $MSR_EFER, %ecx
    rdmsr
    or $EFER_LME, %eax
    wrmsr
    mov %cr0, %eax
    or $CR0_PG_PE, %eax
    mov %eax, %cr0
    lgdt gdt_pointer
    ljmp $0x08, $long_mode_entry

    .section .bss.paging, "aw", @nobits
    .align 4096
pml4: .space 4096
pdpt: .space 4096
page_directories: .space 4 * 4096
