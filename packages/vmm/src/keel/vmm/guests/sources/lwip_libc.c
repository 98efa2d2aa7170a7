/* The few C library functions lwIP and gcc's generated code call, for a guest with no libc.
   Byte loops: the guest's hot copies are frames of at most 1514 bytes. */
#include <stddef.h>

void *memcpy(void *destination, const void *source, size_t length) {
    unsigned char *to = destination;
    const unsigned char *from = source;
    while (length--) *to++ = *from++;
    return destination;
}

void *memmove(void *destination, const void *source, size_t length) {
    unsigned char *to = destination;
    const unsigned char *from = source;
    if (to < from) {
        while (length--) *to++ = *from++;
    } else {
        while (length--) to[length] = from[length];
    }
    return destination;
}

void *memset(void *destination, int value, size_t length) {
    unsigned char *to = destination;
    while (length--) *to++ = (unsigned char)value;
    return destination;
}

int memcmp(const void *left, const void *right, size_t length) {
    const unsigned char *a = left, *b = right;
    for (size_t i = 0; i < length; i++)
        if (a[i] != b[i]) return a[i] < b[i] ? -1 : 1;
    return 0;
}

size_t strlen(const char *text) {
    size_t length = 0;
    while (text[length]) length++;
    return length;
}

int strncmp(const char *left, const char *right, size_t length) {
    for (size_t i = 0; i < length; i++) {
        unsigned char a = (unsigned char)left[i], b = (unsigned char)right[i];
        if (a != b) return a < b ? -1 : 1;
        if (!a) return 0;
    }
    return 0;
}

/* Decimal only (lwIP's netif_find parses an interface number); saturates instead of
   overflowing. */
long strtol(const char *text, char **end, int base) {
    (void)base;
    const long limit = 0x7fffffffffffffffL / 10;
    long value = 0;
    int negative = 0;
    if (*text == '-' || *text == '+') negative = *text++ == '-';
    while (*text >= '0' && *text <= '9') {
        if (value < limit) value = value * 10 + (*text - '0');
        text++;
    }
    if (end) *end = (char *)text;
    return negative ? -value : value;
}
