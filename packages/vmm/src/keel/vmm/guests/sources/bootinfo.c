/* Echo the boot information exactly as the guest received it, whichever protocol loaded it:
   Linux zero page (bzImage, rdi = boot_params), PVH hvm_start_info or multiboot v1 info.
   Every value goes out over serial as `key=value` lines the host test compares. */
#include "guest.h"

#define MULTIBOOT_INFO_MAGIC 0x2badb002
#define PVH_START_INFO_MAGIC 0x336ec578
#define MAX_ENTRIES 128
#define MAX_STRING 4096

static void put_key_hex(const char *key, u64 value) {
    serial_puts(key); serial_putc('='); serial_put_hex(value); serial_putc('\n');
}

static void put_string(const char *key, u64 address) {
    serial_puts(key); serial_putc('=');
    const char *text = (const char *)address;
    for (int i = 0; address && i < MAX_STRING && text[i]; i++) serial_putc(text[i]);
    serial_putc('\n');
}

static void put_memory_entry(u64 address, u64 size, u64 type) {
    serial_puts("memory="); serial_put_hex(address); serial_putc(',');
    serial_put_hex(size); serial_putc(','); serial_put_decimal(type); serial_putc('\n');
}

static u64 read_u(const u8 *base, u64 offset, int size) {
    u64 value = 0;
    for (int i = size - 1; i >= 0; i--) value = value << 8 | base[offset + (u64)i];
    return value;
}

static void linux_zero_page(const u8 *zero_page) {
    serial_puts("protocol=linux\n");
    put_key_hex("boot_flag", read_u(zero_page, 0x1fe, 2));
    put_key_hex("header", read_u(zero_page, 0x202, 4));
    put_key_hex("version", read_u(zero_page, 0x206, 2));
    put_key_hex("type_of_loader", read_u(zero_page, 0x210, 1));
    put_key_hex("loadflags", read_u(zero_page, 0x211, 1));
    put_key_hex("code32_start", read_u(zero_page, 0x214, 4));
    put_key_hex("ramdisk_image", read_u(zero_page, 0x218, 4) | read_u(zero_page, 0xc0, 4) << 32);
    put_key_hex("ramdisk_size", read_u(zero_page, 0x21c, 4) | read_u(zero_page, 0xc4, 4) << 32);
    u64 cmdline = read_u(zero_page, 0x228, 4) | read_u(zero_page, 0xc8, 4) << 32;
    put_key_hex("cmd_line_ptr", cmdline);
    put_string("cmdline", cmdline);
    u64 entries = read_u(zero_page, 0x1e8, 1);
    put_key_hex("e820_entries", entries);
    for (u64 i = 0; i < entries && i < MAX_ENTRIES; i++) {
        const u8 *entry = zero_page + 0x2d0 + 20 * i;
        put_memory_entry(read_u(entry, 0, 8), read_u(entry, 8, 8), read_u(entry, 16, 4));
    }
}

struct hvm_start_info {
    u32 magic, version, flags, nr_modules;
    u64 modlist_paddr, cmdline_paddr, rsdp_paddr, memmap_paddr;
    u32 memmap_entries, reserved;
};
struct hvm_modlist_entry { u64 paddr, size, cmdline_paddr, reserved; };
struct hvm_memmap_table_entry { u64 addr, size; u32 type, reserved; };

static void pvh(const struct hvm_start_info *info) {
    serial_puts("protocol=pvh\n");
    put_key_hex("version", info->version);
    put_key_hex("nr_modules", info->nr_modules);
    if (info->nr_modules) {
        const struct hvm_modlist_entry *module = (const void *)info->modlist_paddr;
        put_key_hex("module_paddr", module->paddr);
        put_key_hex("module_size", module->size);
    }
    put_string("cmdline", info->cmdline_paddr);
    put_key_hex("memmap_entries", info->memmap_entries);
    const struct hvm_memmap_table_entry *map = (const void *)info->memmap_paddr;
    for (u32 i = 0; i < info->memmap_entries && i < MAX_ENTRIES; i++)
        put_memory_entry(map[i].addr, map[i].size, map[i].type);
}

struct multiboot_info {
    u32 flags, mem_lower, mem_upper, boot_device, cmdline, mods_count, mods_addr;
    u32 syms[4];
    u32 mmap_length, mmap_addr;
};
struct multiboot_module { u32 mod_start, mod_end, string, reserved; };

static void multiboot(const struct multiboot_info *info) {
    serial_puts("protocol=multiboot\n");
    put_key_hex("flags", info->flags);
    put_key_hex("mem_lower", info->mem_lower);
    put_key_hex("mem_upper", info->mem_upper);
    put_string("cmdline", info->cmdline);
    put_key_hex("mods_count", info->mods_count);
    if (info->mods_count) {
        const struct multiboot_module *module = (const void *)(u64)info->mods_addr;
        put_key_hex("module_start", module->mod_start);
        put_key_hex("module_end", module->mod_end);
    }
    u64 address = info->mmap_addr, end = address + info->mmap_length;
    for (int i = 0; address < end && i < MAX_ENTRIES; i++) {
        const u8 *entry = (const u8 *)address;
        put_memory_entry(read_u(entry, 4, 8), read_u(entry, 12, 8), read_u(entry, 20, 4));
        address += read_u(entry, 0, 4) + 4;
    }
}

void guest_main(u64 info, u64 magic) {
    if (magic == MULTIBOOT_INFO_MAGIC) multiboot((const void *)info);
    else if (info && *(const u32 *)info == PVH_START_INFO_MAGIC) pvh((const void *)info);
    else if (info) linux_zero_page((const u8 *)info);
    else serial_puts("protocol=none\n");
    serial_puts("end\n");
    debug_exit(0);
}
