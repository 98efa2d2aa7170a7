/* The http-lwip test guest: lwIP (Debian's source package, NO_SYS=1) on keel's virtio-net
   driver, serving HTTP at CPL 3, where an emulating hypervisor such as PVM runs it natively.

   Command line: `ip=A.B.C.D mask=A.B.C.D gw=A.B.C.D [port=N] [tsc_khz=N]` plus the
   `virtio_mmio.device=` words the VMM adds; the first virtio-net device is used. Prints
   "http: listening on <ip>:<port>" when ready, then polls forever: frames in, lwIP timers.

   Time: lwIP needs milliseconds (sys_now) for its TCP timers. The guest reads the TSC, which
   runs at native speed at CPL 3, and learns its rate from `tsc_khz=` or, by default, by
   counting TSC ticks across a 50 ms countdown of PIT channel 2 (as Linux's
   pit_calibrate_tsc does; port 0x61 shows when the count ran out). A bounded wait protects
   against a PIT that never counts: then a fixed rate is assumed and said so on serial. */
#include "guest.h"
#include "lwip_http_server.h"
#include "lwip_vnet_netif.h"
#include "virtio_guest.h"

#include "lwip/init.h"
#include "lwip/ip4_addr.h"
#include "lwip/netif.h"
#include "lwip/timeouts.h"
#include "netif/ethernet.h"

#define VIRTIO_DEVICE_NET 1
#define WINDOW_LIMIT 8
#define ADDRESS_TEXT_LIMIT 16
#define DEFAULT_PORT 80
#define FRAMES_PER_POLL 64
#define PIT_FREQUENCY_HZ 1193182
#define PIT_CALIBRATION_MS 50
#define PIT_CHANNEL2_PORT 0x42
#define PIT_COMMAND_PORT 0x43
#define PIT_COMMAND_CHANNEL2_MODE0 0xb0   /* channel 2, lobyte/hibyte, mode 0, binary */
#define SPEAKER_PORT 0x61
#define SPEAKER_GATE2 0x01
#define SPEAKER_DATA 0x02
#define SPEAKER_OUT2 0x20
#define CALIBRATION_POLL_LIMIT 10000000
#define FALLBACK_TSC_KHZ 2000000
#define EXIT_NO_DEVICE 2
#define EXIT_DEVICE_FAILED 3
#define EXIT_BAD_ADDRESS 4
#define EXIT_LWIP_FAILED 5
#define EXIT_ASSERTION 6

static struct vnet net;
static struct netif interface;
static u64 tsc_per_millisecond = 1;
static u64 tsc_start;
static u64 random_state;

static inline u64 read_tsc(void) {
    u32 low, high;
    __asm__ volatile("rdtsc" : "=a"(low), "=d"(high));
    return (u64)high << 32 | low;
}

u32_t sys_now(void) { return (u32_t)((read_tsc() - tsc_start) / tsc_per_millisecond); }

unsigned int lwip_port_random(void) {   /* xorshift64: lwIP wants ports and ISNs, not secrets */
    random_state ^= random_state << 13;
    random_state ^= random_state >> 7;
    random_state ^= random_state << 17;
    return (unsigned int)random_state;
}

void lwip_port_assert(const char *message, const char *file, int line) {
    serial_puts("lwip assertion failed: ");
    serial_puts(message);
    serial_puts(" at ");
    serial_puts(file);
    serial_putc(':');
    serial_put_decimal((u64)line);
    serial_putc('\n');
    debug_exit(EXIT_ASSERTION);
}

static u64 calibrate_tsc_khz(void) {
    const u32 latch = PIT_FREQUENCY_HZ / (1000 / PIT_CALIBRATION_MS);
    outb(SPEAKER_PORT, (u8)((inb(SPEAKER_PORT) & ~SPEAKER_DATA) | SPEAKER_GATE2));
    outb(PIT_COMMAND_PORT, PIT_COMMAND_CHANNEL2_MODE0);
    outb(PIT_CHANNEL2_PORT, (u8)(latch & 0xff));
    outb(PIT_CHANNEL2_PORT, (u8)(latch >> 8));
    u64 start = read_tsc();
    for (u32 polls = 0; polls < CALIBRATION_POLL_LIMIT; polls++) {
        if (inb(SPEAKER_PORT) & SPEAKER_OUT2) {
            u64 khz = (read_tsc() - start) / PIT_CALIBRATION_MS;
            if (khz) return khz;
            break;
        }
    }
    serial_puts("http: PIT calibration failed; assuming a 2 GHz TSC\n");
    return FALLBACK_TSC_KHZ;
}

/* The value of `name` (e.g. "ip=") on the command line, copied into `out` (NUL-ended). */
static int word_value(const char *command_line, const char *name, char *out, u32 capacity) {
    const char *value = find_word(command_line, name);
    if (value == 0) return 0;
    u32 length = 0;
    while (value[length] && value[length] != ' ' && length + 1 < capacity) {
        out[length] = value[length];
        length++;
    }
    out[length] = 0;
    return 1;
}

static int address_from(const char *command_line, const char *name, ip4_addr_t *address) {
    char text[ADDRESS_TEXT_LIMIT];
    if (!word_value(command_line, name, text, sizeof text) || !ip4addr_aton(text, address)) {
        serial_puts("http: missing or bad ");
        serial_puts(name);
        serial_puts(" on the command line\n");
        return 0;
    }
    return 1;
}

static void put_address(const ip4_addr_t *address) {
    u32 value = ip4_addr_get_u32(address);   /* network order in memory: first octet low */
    for (int octet = 0; octet < 4; octet++) {
        if (octet) serial_putc('.');
        serial_put_decimal((value >> (8 * octet)) & 0xff);
    }
}

void guest_main(u64 info, u64 magic) {
    const char *command_line = boot_command_line(info, magic);
    tsc_start = read_tsc();
    random_state = tsc_start | 1;
    char number[ADDRESS_TEXT_LIMIT];
    u64 khz = word_value(command_line, "tsc_khz=", number, sizeof number)
        ? parse_decimal(number) : calibrate_tsc_khz();
    tsc_per_millisecond = khz ? khz : FALLBACK_TSC_KHZ;
    serial_puts("http: tsc ");
    serial_put_decimal(tsc_per_millisecond);
    serial_puts(" kHz\n");

    struct virtio_mmio_window windows[WINDOW_LIMIT];
    int count = virtio_mmio_windows(command_line, windows, WINDOW_LIMIT);
    int found = -1;
    for (int i = 0; i < count; i++) {
        if (virtio_mmio_device_id(windows[i].base) == VIRTIO_DEVICE_NET) { found = i; break; }
    }
    if (found < 0) {
        serial_puts("http: no virtio-net device on the command line\n");
        debug_exit(EXIT_NO_DEVICE);
    }
    int opened = vnet_open(&net, windows[found].base);
    if (opened < 0) {
        serial_puts("http: virtio-net failed to open: ");
        serial_put_decimal((u64)-opened);
        serial_putc('\n');
        debug_exit(EXIT_DEVICE_FAILED);
    }

    ip4_addr_t address, mask, gateway;
    if (!address_from(command_line, "ip=", &address) ||
        !address_from(command_line, "mask=", &mask) ||
        !address_from(command_line, "gw=", &gateway)) debug_exit(EXIT_BAD_ADDRESS);
    u64 port = DEFAULT_PORT;
    if (word_value(command_line, "port=", number, sizeof number)) port = parse_decimal(number);
    if (port == 0 || port > 0xffff) debug_exit(EXIT_BAD_ADDRESS);

    lwip_init();
    if (netif_add(&interface, &address, &mask, &gateway, &net, vnet_netif_init,
                  ethernet_input) == NULL) debug_exit(EXIT_LWIP_FAILED);
    netif_set_default(&interface);
    netif_set_up(&interface);
    netif_set_link_up(&interface);
    int started = http_server_start((u16)port);
    if (started < 0) {
        serial_puts("http: could not listen\n");
        debug_exit(EXIT_LWIP_FAILED);
    }
    serial_puts("http: listening on ");
    put_address(&address);
    serial_putc(':');
    serial_put_decimal(port);
    serial_putc('\n');

    for (;;) {
        int handed = vnet_netif_poll(&interface, FRAMES_PER_POLL);
        if (handed < 0) {
            serial_puts("http: virtio-net device failed\n");
            debug_exit(EXIT_DEVICE_FAILED);
        }
        sys_check_timeouts();
        if (handed == 0) __asm__ volatile("pause");
    }
}
