/* 32-bit entry for the multiboot v1 and PVH boot protocols (both enter in flat protected
   mode with paging off): a multiboot header (a.out kludge, so any loader can place us without
   reading ELF) and a Xen PVH entry note point here. eax = 0x2badb002 and ebx = multiboot info
   (multiboot), or ebx = hvm_start_info (PVH). We switch to long mode and then to CPL 3. */
#define MULTIBOOT_MAGIC 0x1badb002
#define MULTIBOOT_FLAGS ((1 << 16) | (1 << 1))  /* a.out kludge, memory info */
#define XEN_ELFNOTE_PHYS32_ENTRY 18

    .section .multiboot, "a"
    .align 4
multiboot_header:
    .long MULTIBOOT_MAGIC
    .long MULTIBOOT_FLAGS
    .long -(MULTIBOOT_MAGIC + MULTIBOOT_FLAGS)
    .long multiboot_header     /* header_addr */
    .long image_start          /* load_addr */
    .long image_data_end       /* load_end_addr */
    .long image_end            /* bss_end_addr */
    .long _start32             /* entry_addr */

    .section .note.pvh, "a"
    .align 4
    .long 4                    /* namesz: "Xen\0" */
    .long 4                    /* descsz */
    .long XEN_ELFNOTE_PHYS32_ENTRY
    .asciz "Xen"
    .long _start32

    .section .text.boot32, "ax"
    .code32
    .global _start32
_start32:
    cli
    mov %ebx, %esi             /* info */
    mov %eax, %edi             /* magic (meaningless under PVH: the guest checks *info) */
    jmp enable_long_mode32

    .code64
    .global long_mode_entry
long_mode_entry:
    mov %esi, %r12d
    mov %edi, %r13d
    jmp enter_user
