/* virtio-test: a CPL 3 guest that drives virtio-net and virtio-blk with its own driver
   (virtio_mmio_driver.c), found through `virtio_mmio.device=` words on its command line, so
   keel and QEMU's microvm run it alike. The command line picks the work:

     mode=echo [count=N]            every TEST_ETHERTYPE frame back with source and destination
                                    MAC swapped (others are ignored); ends after N frames
                                    (0: no limit) or at a stop frame (STOP_ETHERTYPE)
     mode=blk [sector=S] [count=C]  reports sector 0, writes a pattern to C sectors from S,
                                    reads them back and compares, flushes
     mode=bench-tx [frames=N] [size=B] [batch=K]   sends N frames of B bytes as fast as the
                                    ring allows, one notification per K frames (default 1)

   Progress and results go to the serial port; the exit status (isa-debug-exit) is 0 on
   success, else one of the EXIT_* codes below. */
#include "virtio_guest.h"

#define WINDOW_LIMIT 8
#define EXIT_OK 0
#define EXIT_NO_DEVICE 2
#define EXIT_DRIVER_ERROR 3
#define EXIT_MISMATCH 4
#define EXIT_BAD_MODE 5
#define DEVICE_ID_NET 1
#define DEVICE_ID_BLOCK 2
#define ETHERNET_ADDRESS_SIZE 6
#define ETHERTYPE_OFFSET 12
#define ETHERNET_HEADER_SIZE 14
#define TEST_ETHERTYPE 0x88b5          /* IEEE 802 local experimental 1 */
#define STOP_ETHERTYPE 0x88b6          /* local experimental 2: ends mode=echo */
#define FRAME_CAPACITY 2048
#define DEFAULT_BLOCK_SECTOR 8
#define DEFAULT_BLOCK_COUNT 16
#define BLOCK_SECTOR_LIMIT 256         /* the static buffers below */
#define SECTOR_ZERO_REPORT_BYTES 16
#define DEFAULT_BENCH_FRAMES 10000
#define DEFAULT_BENCH_SIZE 64
#define SEQUENCE_OFFSET ETHERNET_HEADER_SIZE
#define DRAIN_POLL_LIMIT (1ull << 32)

static struct vnet net;
static struct vblk disk;
static u8 frame[FRAME_CAPACITY];
static u8 block_out[BLOCK_SECTOR_LIMIT * VBLK_SECTOR_SIZE] __attribute__((aligned(PAGE_SIZE)));
static u8 block_in[BLOCK_SECTOR_LIMIT * VBLK_SECTOR_SIZE] __attribute__((aligned(PAGE_SIZE)));

static u64 word_value(const char *command_line, const char *prefix, u64 fallback) {
    const char *value = find_word(command_line, prefix);
    return value && *value >= '0' && *value <= '9' ? parse_decimal(value) : fallback;
}

static void put_mac(const u8 mac[ETHERNET_ADDRESS_SIZE]) {
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < ETHERNET_ADDRESS_SIZE; i++) {
        if (i) serial_putc(':');
        serial_putc(digits[mac[i] >> 4]);
        serial_putc(digits[mac[i] & 0xf]);
    }
}

static void put_hex_bytes(const u8 *bytes, u32 length) {
    static const char digits[] = "0123456789abcdef";
    for (u32 i = 0; i < length; i++) {
        serial_putc(digits[bytes[i] >> 4]);
        serial_putc(digits[bytes[i] & 0xf]);
    }
}

__attribute__((noreturn)) static void fail(const char *what, long long error, u32 status) {
    serial_puts("virtio-test: ");
    serial_puts(what);
    serial_puts(" failed: ");
    if (error < 0) { serial_putc('-'); serial_put_decimal((u64)-error); }
    else serial_put_decimal((u64)error);
    serial_puts("\n");
    debug_exit(status);
}

/* The first device of `device_id` among the command line's windows, or 0. */
static u64 find_device(const char *command_line, u32 device_id) {
    struct virtio_mmio_window windows[WINDOW_LIMIT];
    int count = virtio_mmio_windows(command_line, windows, WINDOW_LIMIT);
    for (int i = 0; i < count; i++)
        if (virtio_mmio_device_id(windows[i].base) == device_id) return windows[i].base;
    return 0;
}

static void open_net(const char *command_line) {
    u64 base = find_device(command_line, DEVICE_ID_NET);
    if (!base) fail("finding a virtio-net device", 0, EXIT_NO_DEVICE);
    int error = vnet_open(&net, base);
    if (error) fail("vnet_open", error, EXIT_DRIVER_ERROR);
    u8 mac[ETHERNET_ADDRESS_SIZE];
    vnet_mac(&net, mac);
    serial_puts("net: ready at ");
    serial_put_hex(base);
    serial_puts(" mac ");
    put_mac(mac);
    serial_puts(" queues ");
    serial_put_decimal(net.receive_queue.size);
    serial_puts("\n");
}

/* Until every sent frame is back from the device (bounded). */
static void drain_transmit(void) {
    for (u64 poll = 0; poll < DRAIN_POLL_LIMIT; poll++) {
        int pending = vnet_transmit_pending(&net);
        if (pending < 0) fail("vnet_transmit_pending", pending, EXIT_DRIVER_ERROR);
        if (pending == 0) return;
        __asm__ volatile("pause");
    }
    fail("draining the transmit queue", 0, EXIT_DRIVER_ERROR);
}

static u16 ethertype(const u8 *data) {
    return (u16)(data[ETHERTYPE_OFFSET] << 8 | data[ETHERTYPE_OFFSET + 1]);
}

static void run_echo(const char *command_line) {
    u64 limit = word_value(command_line, "count=", 0);
    open_net(command_line);
    u64 echoed = 0;
    while (!limit || echoed < limit) {
        int length = vnet_receive(&net, frame, sizeof frame);
        if (length == VIRTIO_ERROR_TOO_LARGE) continue;
        if (length < 0) fail("vnet_receive", length, EXIT_DRIVER_ERROR);
        if (length == 0) { __asm__ volatile("pause"); continue; }
        if (ethertype(frame) == STOP_ETHERTYPE) break;
        if (ethertype(frame) != TEST_ETHERTYPE) continue;   /* the host's own chatter */
        for (int i = 0; i < ETHERNET_ADDRESS_SIZE; i++) {
            u8 destination = frame[i];
            frame[i] = frame[ETHERNET_ADDRESS_SIZE + i];
            frame[ETHERNET_ADDRESS_SIZE + i] = destination;
        }
        int error = vnet_send(&net, frame, (u32)length);
        if (error) fail("vnet_send", error, EXIT_DRIVER_ERROR);
        echoed++;
    }
    drain_transmit();
    serial_puts("echo: done ");
    serial_put_decimal(echoed);
    serial_puts(" dropped ");
    serial_put_decimal(net.frames_dropped);
    serial_puts("\n");
}

static u8 pattern_byte(u64 sector, u32 offset) {
    return (u8)(sector * 31 + offset * 7 + 0x5a);
}

static void run_block(const char *command_line) {
    u64 first = word_value(command_line, "sector=", DEFAULT_BLOCK_SECTOR);
    u64 count = word_value(command_line, "count=", DEFAULT_BLOCK_COUNT);
    if (count == 0 || count > BLOCK_SECTOR_LIMIT) fail("count= (1-256 sectors)", (long long)count,
                                                       EXIT_BAD_MODE);
    u64 base = find_device(command_line, DEVICE_ID_BLOCK);
    if (!base) fail("finding a virtio-blk device", 0, EXIT_NO_DEVICE);
    int error = vblk_open(&disk, base);
    if (error) fail("vblk_open", error, EXIT_DRIVER_ERROR);
    u64 capacity = vblk_capacity_sectors(&disk);
    serial_puts("blk: ready at ");
    serial_put_hex(base);
    serial_puts(" capacity ");
    serial_put_decimal(capacity);
    serial_puts(disk.read_only ? " read-only\n" : " read-write\n");
    error = vblk_read(&disk, 0, block_in, 1);
    if (error) fail("vblk_read of sector 0", error, EXIT_DRIVER_ERROR);
    serial_puts("blk: sector 0 ");
    put_hex_bytes(block_in, SECTOR_ZERO_REPORT_BYTES);
    serial_puts("\n");
    error = vblk_read(&disk, capacity, block_in, 1);
    serial_puts(error == VIRTIO_ERROR_RANGE ? "blk: beyond the end refused\n"
                                            : "blk: beyond the end NOT refused\n");
    for (u64 sector = 0; sector < count; sector++)
        for (u32 offset = 0; offset < VBLK_SECTOR_SIZE; offset++)
            block_out[sector * VBLK_SECTOR_SIZE + offset] = pattern_byte(first + sector, offset);
    error = vblk_write(&disk, first, block_out, (u32)count);
    if (disk.read_only) {
        if (error != VIRTIO_ERROR_READ_ONLY) fail("refusing a read-only write", error,
                                                  EXIT_MISMATCH);
        serial_puts("blk: write refused (read-only)\n");
        return;
    }
    if (error) fail("vblk_write", error, EXIT_DRIVER_ERROR);
    error = vblk_read(&disk, first, block_in, (u32)count);
    if (error) fail("vblk_read", error, EXIT_DRIVER_ERROR);
    for (u64 i = 0; i < count * VBLK_SECTOR_SIZE; i++)
        if (block_in[i] != block_out[i]) fail("comparing what was read back", (long long)i,
                                              EXIT_MISMATCH);
    error = vblk_flush(&disk);
    if (error) fail("vblk_flush", error, EXIT_DRIVER_ERROR);
    serial_puts("blk: wrote and verified ");
    serial_put_decimal(count);
    serial_puts(" sectors from ");
    serial_put_decimal(first);
    serial_puts("\n");
}

static void run_bench_transmit(const char *command_line) {
    u64 frames = word_value(command_line, "frames=", DEFAULT_BENCH_FRAMES);
    u64 size = word_value(command_line, "size=", DEFAULT_BENCH_SIZE);
    u64 batch = word_value(command_line, "batch=", 1);
    if (batch == 0) batch = 1;
    if (size < ETHERNET_HEADER_SIZE + sizeof(u64) || size > VNET_FRAME_LIMIT)
        fail("size= (22-2036 bytes)", (long long)size, EXIT_BAD_MODE);
    open_net(command_line);
    for (int i = 0; i < ETHERNET_ADDRESS_SIZE; i++) frame[i] = 0xff;
    vnet_mac(&net, frame + ETHERNET_ADDRESS_SIZE);
    frame[ETHERTYPE_OFFSET] = TEST_ETHERTYPE >> 8;
    frame[ETHERTYPE_OFFSET + 1] = TEST_ETHERTYPE & 0xff;
    for (u64 i = ETHERNET_HEADER_SIZE; i < size; i++) frame[i] = (u8)i;
    serial_puts("bench: start ");
    serial_put_decimal(frames);
    serial_puts("\n");
    for (u64 sequence = 0; sequence < frames; sequence++) {
        *(u64 *)(frame + SEQUENCE_OFFSET) = sequence;
        int error = vnet_queue(&net, frame, (u32)size);
        if (error) fail("vnet_queue", error, EXIT_DRIVER_ERROR);
        if ((sequence + 1) % batch == 0) vnet_kick(&net);
    }
    vnet_kick(&net);
    drain_transmit();
    serial_puts("bench: end ");
    serial_put_decimal(frames);
    serial_puts(" notifications ");
    serial_put_decimal(net.transmit_queue.notifications);
    serial_puts("\n");
}

void guest_main(u64 info, u64 magic) {
    const char *command_line = boot_command_line(info, magic);
    serial_puts("virtio-test: command line: ");
    serial_puts(command_line);
    serial_puts("\n");
    if (find_word(command_line, "mode=echo")) run_echo(command_line);
    else if (find_word(command_line, "mode=blk")) run_block(command_line);
    else if (find_word(command_line, "mode=bench-tx")) run_bench_transmit(command_line);
    else fail("mode= (echo, blk or bench-tx)", 0, EXIT_BAD_MODE);
    debug_exit(EXIT_OK);
}
