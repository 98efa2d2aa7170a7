/* The little runtime every keel test guest shares: port I/O, MMIO, serial output, exit.
   All of it runs at CPL 3 (IOPL 3 lets user mode do port I/O), where PVM runs natively. */
#ifndef KEEL_GUEST_H
#define KEEL_GUEST_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

#define SERIAL_PORT 0x3f8
#define SERIAL_LINE_STATUS (SERIAL_PORT + 5)
#define SERIAL_LINE_STATUS_DATA_READY 0x01
#define SERIAL_LINE_STATUS_THR_EMPTY 0x20
#define DEBUG_EXIT_PORT 0xf4
#define BOOT_TIMER_ADDRESS 0xd0000000ULL
#define BOOT_TIMER_MAGIC 123

static inline void outb(u16 port, u8 value) { __asm__ volatile("outb %0, %1" :: "a"(value), "Nd"(port)); }
static inline void outl(u16 port, u32 value) { __asm__ volatile("outl %0, %1" :: "a"(value), "Nd"(port)); }
static inline u8 inb(u16 port) { u8 value; __asm__ volatile("inb %1, %0" : "=a"(value) : "Nd"(port)); return value; }
static inline void mmio_write32(u64 address, u32 value) { *(volatile u32 *)address = value; }
static inline u32 mmio_read32(u64 address) { return *(volatile u32 *)address; }
static inline unsigned current_privilege_level(void) {
    u16 cs; __asm__ volatile("mov %%cs, %0" : "=r"(cs)); return cs & 3;
}

void serial_putc(char c);
void serial_puts(const char *text);
void serial_put_hex(u64 value);
void serial_put_decimal(u64 value);
void serial_write(const char *data, u64 length);
int serial_getc(void);
u64 parse_decimal(const char *text);
const char *find_word(const char *text, const char *prefix);
__attribute__((noreturn)) void debug_exit(u32 status);

/* Each guest defines this; `info` and `magic` are what its entry received (see entry64.S). */
void guest_main(u64 info, u64 magic);
#endif
