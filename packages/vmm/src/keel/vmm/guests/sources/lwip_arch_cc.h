/* lwIP's compiler/platform header for keel's CPL 3 test guests (staged as arch/cc.h).
   gcc on x86-64, little-endian, no libc: lwIP's own ctype replacements, no printf
   (diagnostics off; an assertion reports over serial and exits through isa-debug-exit). */
#ifndef KEEL_LWIP_ARCH_CC_H
#define KEEL_LWIP_ARCH_CC_H

#define LWIP_NO_CTYPE_H 1
#define BYTE_ORDER LITTLE_ENDIAN
#define LWIP_PLATFORM_DIAG(message) do { } while (0)
#define LWIP_PLATFORM_ASSERT(message) lwip_port_assert((message), __FILE__, __LINE__)
#define LWIP_RAND() lwip_port_random()

void lwip_port_assert(const char *message, const char *file, int line) __attribute__((noreturn));
unsigned int lwip_port_random(void);

#endif
