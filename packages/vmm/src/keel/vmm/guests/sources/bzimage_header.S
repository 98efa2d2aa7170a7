/* A Linux boot-protocol (2.15) header, so that this guest is a bzImage any Linux loader
   accepts: 1 setup sector, a 64-bit entry 0x200 bytes into the protected-mode part. */
#define SETUP_SECTORS 1
#define LOADED_HIGH 0x01
#define XLF_KERNEL_64 0x01
#define XLF_CAN_BE_LOADED_ABOVE_4G 0x02

    .section .setup, "a"
    .code16
    .org 0x1f1
    .byte SETUP_SECTORS            /* setup_sects */
    .word 0                        /* root_flags */
    .long kernel_syssize           /* syssize (16-byte units) */
    .word 0, 0xffff, 0             /* ram_size, vid_mode, root_dev */
    .word 0xaa55                   /* boot_flag */
    .byte 0xeb, header_end - 1f    /* jump over the header */
1:  .ascii "HdrS"
    .word 0x020f                   /* version 2.15 */
    .long 0                        /* realmode_swtch */
    .word 0, 0                     /* start_sys_seg, kernel_version */
    .byte 0, LOADED_HIGH           /* type_of_loader, loadflags */
    .word 0                        /* setup_move_size */
    .long 0x100000                 /* code32_start */
    .long 0, 0                     /* ramdisk_image, ramdisk_size */
    .long 0                        /* bootsect_kludge */
    .word 0                        /* heap_end_ptr */
    .byte 0, 0                     /* ext_loader_ver, ext_loader_type */
    .long 0                        /* cmd_line_ptr */
    .long 0x7fffffff               /* initrd_addr_max */
    .long 0x200000                 /* kernel_alignment */
    .byte 0, 0                     /* relocatable_kernel, min_alignment */
    .word XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G
    .long 2047                     /* cmdline_size */
    .long 0                        /* hardware_subarch */
    .quad 0                        /* hardware_subarch_data */
    .long 0, 0                     /* payload_offset, payload_length */
    .quad 0                        /* setup_data */
    .quad 0x100000                 /* pref_address */
    .long kernel_memory_size       /* init_size */
    .long 0                        /* handover_offset */
    .long 0                        /* kernel_info_offset */
header_end:
    .org 0x400

    .section .text.head, "ax"
    .code32
startup_32:
    ud2                            /* the 32-bit entry is not supported by this guest */
    .org 0x200
    .code64
startup_64:
    jmp _start64
