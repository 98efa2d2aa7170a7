#include "guest.h"

void serial_putc(char c) {
    while (!(inb(SERIAL_LINE_STATUS) & SERIAL_LINE_STATUS_THR_EMPTY)) {}
    outb(SERIAL_PORT, (u8)c);
}

void serial_puts(const char *text) { while (*text) serial_putc(*text++); }

void serial_write(const char *data, u64 length) { for (u64 i = 0; i < length; i++) serial_putc(data[i]); }

void serial_put_hex(u64 value) {
    static const char digits[] = "0123456789abcdef";
    char buffer[18];
    int length = 0;
    do { buffer[length++] = digits[value & 0xf]; value >>= 4; } while (value);
    serial_puts("0x");
    while (length) serial_putc(buffer[--length]);
}

void serial_put_decimal(u64 value) {
    char buffer[21];
    int length = 0;
    do { buffer[length++] = (char)('0' + value % 10); value /= 10; } while (value);
    while (length) serial_putc(buffer[--length]);
}

int serial_getc(void) {
    while (!(inb(SERIAL_LINE_STATUS) & SERIAL_LINE_STATUS_DATA_READY)) {}
    return inb(SERIAL_PORT);
}

u64 parse_decimal(const char *text) {
    u64 value = 0;
    while (*text >= '0' && *text <= '9') value = value * 10 + (u64)(*text++ - '0');
    return value;
}

/* The text right after `prefix` where `prefix` starts a word of `text`, or 0. */
const char *find_word(const char *text, const char *prefix) {
    for (const char *word = text; *word; word++) {
        if (word != text && word[-1] != ' ') continue;
        const char *a = word, *b = prefix;
        while (*b && *a == *b) { a++; b++; }
        if (!*b) return a;
    }
    return 0;
}

void debug_exit(u32 status) {
    for (;;) outl(DEBUG_EXIT_PORT, status);
}
