/* virtio-mmio v2 driver side for keel's CPL 3 test guests: discovery from the command line,
   the status handshake, feature negotiation, split queues, virtio-net and virtio-blk.
   See virtio_guest.h for why it is built this way.

   Memory ordering (virtio 1.2, 2.7.13 and 2.7.14): the driver must (a) write ring entries
   before avail->idx, (b) write avail->idx before notifying, (c) read used->idx before the used
   entries it covers, and (d) write avail->idx before reading used->flags to decide whether to
   notify. On x86 stores are not reordered with stores (a) and loads not with loads (c), and a
   port or MMIO access (the notification, an uncached access that traps) is ordered after
   earlier stores (b): for those a compiler barrier is enough. (d) is a store followed by a
   load, which x86 may reorder, so it takes a real fence (mfence). */
#include "virtio_guest.h"

/* virtio-mmio registers (virtio 1.2, 4.2.2) */
#define MMIO_MAGIC_VALUE 0x000
#define MMIO_VERSION 0x004
#define MMIO_DEVICE_ID 0x008
#define MMIO_DEVICE_FEATURES 0x010
#define MMIO_DEVICE_FEATURES_SEL 0x014
#define MMIO_DRIVER_FEATURES 0x020
#define MMIO_DRIVER_FEATURES_SEL 0x024
#define MMIO_QUEUE_SEL 0x030
#define MMIO_QUEUE_NUM_MAX 0x034
#define MMIO_QUEUE_NUM 0x038
#define MMIO_QUEUE_READY 0x044
#define MMIO_QUEUE_NOTIFY 0x050
#define MMIO_INTERRUPT_STATUS 0x060
#define MMIO_INTERRUPT_ACK 0x064
#define MMIO_STATUS 0x070
#define MMIO_QUEUE_DESC_LOW 0x080
#define MMIO_QUEUE_DESC_HIGH 0x084
#define MMIO_QUEUE_DRIVER_LOW 0x090
#define MMIO_QUEUE_DRIVER_HIGH 0x094
#define MMIO_QUEUE_DEVICE_LOW 0x0a0
#define MMIO_QUEUE_DEVICE_HIGH 0x0a4
#define MMIO_CONFIG_GENERATION 0x0fc
#define MMIO_CONFIG 0x100
#define MMIO_MAGIC 0x74726976          /* "virt" */
#define MMIO_SUPPORTED_VERSION 2

#define STATUS_ACKNOWLEDGE 1
#define STATUS_DRIVER 2
#define STATUS_DRIVER_OK 4
#define STATUS_FEATURES_OK 8
#define STATUS_NEEDS_RESET 64
#define STATUS_FAILED 128

#define FEATURE_VERSION_1_WORD 1        /* bit 32: in the second 32-bit feature word */
#define FEATURE_VERSION_1_BIT (1u << 0)

#define DEVICE_ID_NET 1
#define DEVICE_ID_BLOCK 2

#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1
#define VIRTQ_USED_F_NO_NOTIFY 1
#define VIRTQ_MINIMUM_SIZE 2

#define NET_FEATURE_MAC (1u << 5)
#define NET_CONFIG_MAC 0
#define NET_RECEIVE_QUEUE 0
#define NET_TRANSMIT_QUEUE 1
#define DEFAULT_MAC_FIRST_BYTE 0x02     /* locally administered, unicast */

#define BLK_FEATURE_READ_ONLY (1u << 5)
#define BLK_FEATURE_FLUSH (1u << 9)
#define BLK_CONFIG_CAPACITY 0
#define BLK_TYPE_IN 0
#define BLK_TYPE_OUT 1
#define BLK_TYPE_FLUSH 4
#define BLK_STATUS_OK 0
#define BLK_STATUS_PENDING 0xff         /* what we store before submitting; never a real status */
#define BLK_REQUEST_QUEUE 0
#define BLK_HEADER_DESCRIPTOR 0
#define BLK_DATA_DESCRIPTOR 1
#define BLK_STATUS_DESCRIPTOR 2

#define CONFIG_GENERATION_ATTEMPTS 16
/* Polls of the used ring before a request is given up (the host may be slow and busy: at
   native speed this is seconds). */
#define WAIT_POLL_LIMIT (1ull << 32)
#define COMMAND_LINE_LIMIT 4096
#define MULTIBOOT_INFO_MAGIC 0x2badb002
#define MULTIBOOT_FLAG_CMDLINE (1 << 2)
#define PVH_START_INFO_MAGIC 0x336ec578
#define PVH_CMDLINE_OFFSET 24
#define MULTIBOOT_CMDLINE_OFFSET 16

static inline void compiler_barrier(void) { __asm__ volatile("" ::: "memory"); }
static inline void full_barrier(void) { __asm__ volatile("mfence" ::: "memory"); }
static inline void cpu_relax(void) { __asm__ volatile("pause" ::: "memory"); }

static inline u32 reg_read(u64 base, u32 offset) { return mmio_read32(base + offset); }
static inline void reg_write(u64 base, u32 offset, u32 value) { mmio_write32(base + offset, value); }

static void copy_bytes(void *to, const void *from, u64 length) {
    u8 *t = to;
    const u8 *f = from;
    for (u64 i = 0; i < length; i++) t[i] = f[i];
}

static void zero_bytes(void *to, u64 length) {
    u8 *t = to;
    for (u64 i = 0; i < length; i++) t[i] = 0;
}

/* -- the command line ----------------------------------------------------------------- */

/* PVH first: QEMU's qboot firmware enters PVH kernels with eax = 0x2badb002 (the multiboot
   magic) and ebx = hvm_start_info, so the magic alone does not tell the protocols apart. */
const char *boot_command_line(u64 info, u64 magic) {
    if (info && *(const u32 *)info == PVH_START_INFO_MAGIC) {
        const char *line = (const char *)*(const u64 *)(info + PVH_CMDLINE_OFFSET);
        return line ? line : "";
    }
    if (magic == MULTIBOOT_INFO_MAGIC && info) {
        u32 flags = *(const u32 *)info;
        if (flags & MULTIBOOT_FLAG_CMDLINE)
            return (const char *)(u64)*(const u32 *)(info + MULTIBOOT_CMDLINE_OFFSET);
    }
    return "";
}

/* Linux's simple_strtoull with base 0: 0x.. hex, 0.. octal, else decimal. Returns the end. */
static const char *parse_number(const char *text, u64 *value) {
    u64 radix = 10, result = 0;
    if (text[0] == '0' && (text[1] == 'x' || text[1] == 'X')) { radix = 16; text += 2; }
    else if (text[0] == '0') radix = 8;
    const char *start = text;
    for (int digits = 0; digits < 32; digits++, text++) {
        u64 digit;
        char c = *text;
        if (c >= '0' && c <= '9') digit = (u64)(c - '0');
        else if (c >= 'a' && c <= 'f') digit = (u64)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') digit = (u64)(c - 'A' + 10);
        else break;
        if (digit >= radix) break;
        result = result * radix + digit;
    }
    *value = result;
    return text == start && radix != 8 ? 0 : text;
}

/* Linux's memparse: a number with an optional K/M/G/T suffix. */
static const char *parse_size(const char *text, u64 *value) {
    const char *end = parse_number(text, value);
    if (!end) return 0;
    switch (*end) {
    case 'T': case 't': *value <<= 10; /* fall through */
    case 'G': case 'g': *value <<= 10; /* fall through */
    case 'M': case 'm': *value <<= 10; /* fall through */
    case 'K': case 'k': *value <<= 10; end++; break;
    default: break;
    }
    return end;
}

int virtio_mmio_windows(const char *command_line, struct virtio_mmio_window *out, int max) {
    static const char prefix[] = "virtio_mmio.device=";
    int found = 0;
    if (!command_line) return 0;
    const char *word = command_line;
    for (int scanned = 0; found < max && scanned < COMMAND_LINE_LIMIT; scanned++) {
        const char *value = find_word(word, prefix);
        if (!value) break;
        u64 size, base, irq;
        const char *end = parse_size(value, &size);
        if (end && *end == '@') end = parse_number(end + 1, &base); else end = 0;
        if (end && *end == ':') end = parse_number(end + 1, &irq); else end = 0;
        if (end && *end == ':') {               /* optional platform-device id */
            u64 ignored;
            end = parse_number(end + 1, &ignored);
        }
        if (end && (*end == ' ' || *end == 0) && size && base) {
            out[found].base = base;
            out[found].irq = (u32)irq;
            found++;
        }
        word = value;
    }
    return found;
}

/* -- the transport ---------------------------------------------------------------------- */

u32 virtio_mmio_device_id(u64 base) {
    if (reg_read(base, MMIO_MAGIC_VALUE) != MMIO_MAGIC) return 0;
    if (reg_read(base, MMIO_VERSION) != MMIO_SUPPORTED_VERSION) return 0;
    return reg_read(base, MMIO_DEVICE_ID);
}

static void set_status(u64 base, u32 bits) {
    reg_write(base, MMIO_STATUS, reg_read(base, MMIO_STATUS) | bits);
}

/* Reset, ACKNOWLEDGE, DRIVER, then features: VERSION_1 and `wanted` (low word) where offered.
   Returns the accepted low feature word, or a negative error (device marked FAILED). */
static long long negotiate(u64 base, u32 expected_id, u32 wanted) {
    if (virtio_mmio_device_id(base) != expected_id) return VIRTIO_ERROR_NOT_FOUND;
    reg_write(base, MMIO_STATUS, 0);
    set_status(base, STATUS_ACKNOWLEDGE);
    set_status(base, STATUS_DRIVER);
    reg_write(base, MMIO_DEVICE_FEATURES_SEL, 0);
    u32 low = reg_read(base, MMIO_DEVICE_FEATURES);
    reg_write(base, MMIO_DEVICE_FEATURES_SEL, FEATURE_VERSION_1_WORD);
    u32 high = reg_read(base, MMIO_DEVICE_FEATURES);
    if (!(high & FEATURE_VERSION_1_BIT)) {
        set_status(base, STATUS_FAILED);
        return VIRTIO_ERROR_FEATURES;
    }
    u32 accepted = low & wanted;
    reg_write(base, MMIO_DRIVER_FEATURES_SEL, 0);
    reg_write(base, MMIO_DRIVER_FEATURES, accepted);
    reg_write(base, MMIO_DRIVER_FEATURES_SEL, FEATURE_VERSION_1_WORD);
    reg_write(base, MMIO_DRIVER_FEATURES, FEATURE_VERSION_1_BIT);
    set_status(base, STATUS_FEATURES_OK);
    if (!(reg_read(base, MMIO_STATUS) & STATUS_FEATURES_OK)) {
        set_status(base, STATUS_FAILED);
        return VIRTIO_ERROR_FEATURES;
    }
    return accepted;
}

static int driver_ok(u64 base) {
    set_status(base, STATUS_DRIVER_OK);
    u32 status = reg_read(base, MMIO_STATUS);
    return status & (STATUS_NEEDS_RESET | STATUS_FAILED) ? VIRTIO_ERROR_DEVICE : 0;
}

static void fail(u64 base) { set_status(base, STATUS_FAILED); }

/* Read config space bytes consistently (ConfigGeneration unchanged across the read). */
static int read_config(u64 base, u32 offset, u8 *out, u32 length) {
    for (int attempt = 0; attempt < CONFIG_GENERATION_ATTEMPTS; attempt++) {
        u32 before = reg_read(base, MMIO_CONFIG_GENERATION);
        for (u32 i = 0; i < length; i++)
            out[i] = *(volatile const u8 *)(base + MMIO_CONFIG + offset + i);
        if (reg_read(base, MMIO_CONFIG_GENERATION) == before) return 0;
    }
    return VIRTIO_ERROR_DEVICE;
}

/* Size the queue (the largest power of two up to `wanted` the device allows), hand the
   device the three rings and set it ready. No interrupts: we poll. */
static int queue_setup(struct virtq *q, u64 base, u32 index, u32 wanted) {
    zero_bytes(&q->avail, sizeof q->avail);
    zero_bytes(&q->used, sizeof q->used);
    reg_write(base, MMIO_QUEUE_SEL, index);
    if (reg_read(base, MMIO_QUEUE_READY)) return VIRTIO_ERROR_QUEUE;
    u32 maximum = reg_read(base, MMIO_QUEUE_NUM_MAX);
    u32 size = VIRTQ_SIZE_LIMIT;
    while (size > wanted || size > maximum) size >>= 1;
    if (size < VIRTQ_MINIMUM_SIZE) return VIRTIO_ERROR_QUEUE;
    q->base = base;
    q->index = index;
    q->size = (u16)size;
    q->next_avail = 0;
    q->last_used = 0;
    q->outstanding = 0;
    q->notifications = 0;
    for (u32 i = 0; i < VIRTQ_SIZE_LIMIT; i++) q->in_flight[i] = 0;
    q->avail.flags = VIRTQ_AVAIL_F_NO_INTERRUPT;
    reg_write(base, MMIO_QUEUE_NUM, size);
    u64 desc = (u64)q->desc, avail = (u64)&q->avail, used = (u64)&q->used;
    reg_write(base, MMIO_QUEUE_DESC_LOW, (u32)desc);
    reg_write(base, MMIO_QUEUE_DESC_HIGH, (u32)(desc >> 32));
    reg_write(base, MMIO_QUEUE_DRIVER_LOW, (u32)avail);
    reg_write(base, MMIO_QUEUE_DRIVER_HIGH, (u32)(avail >> 32));
    reg_write(base, MMIO_QUEUE_DEVICE_LOW, (u32)used);
    reg_write(base, MMIO_QUEUE_DEVICE_HIGH, (u32)(used >> 32));
    compiler_barrier();
    reg_write(base, MMIO_QUEUE_READY, 1);
    return 0;
}

/* Make the chain starting at `head` available (not yet notified). */
static void queue_add(struct virtq *q, u16 head) {
    q->avail.ring[q->next_avail & (q->size - 1)] = head;
    q->in_flight[head] = 1;
    q->outstanding++;
    compiler_barrier();                 /* (a): the entry before the index */
    q->next_avail++;
    *(volatile u16 *)&q->avail.idx = q->next_avail;
}

/* Notify unless the device said it needs no kick (VIRTQ_USED_F_NO_NOTIFY). */
static void queue_kick(struct virtq *q) {
    full_barrier();                     /* (d): avail->idx stored before used->flags is read */
    if (*(volatile u16 *)&q->used.flags & VIRTQ_USED_F_NO_NOTIFY) return;
    reg_write(q->base, MMIO_QUEUE_NOTIFY, q->index);   /* (b): ordered after the stores */
    q->notifications++;
}

/* Take one used entry: 1 with *head and *length set, 0 if none, <0 if the device lied. */
static int queue_take(struct virtq *q, u16 *head, u32 *length) {
    u16 used_index = *(volatile u16 *)&q->used.idx;
    u16 waiting = (u16)(used_index - q->last_used);
    if (waiting == 0) return 0;
    if (waiting > q->outstanding) return VIRTIO_ERROR_DEVICE;   /* more than we gave it */
    compiler_barrier();                 /* (c): the index before the entries it covers */
    volatile struct virtq_used_elem *element = &q->used.ring[q->last_used & (q->size - 1)];
    u32 id = element->id, written = element->len;
    if (id >= q->size || !q->in_flight[id]) return VIRTIO_ERROR_DEVICE;
    q->in_flight[id] = 0;
    q->outstanding--;
    q->last_used++;
    *head = (u16)id;
    *length = written;
    return 1;
}

/* -- virtio-net ------------------------------------------------------------------------- */

static void post_receive_buffer(struct vnet *net, u16 id) {
    struct virtq *q = &net->receive_queue;
    q->desc[id].addr = (u64)net->receive_buffers[id];
    q->desc[id].len = VNET_BUFFER_SIZE;
    q->desc[id].flags = VIRTQ_DESC_F_WRITE;
    q->desc[id].next = 0;
    queue_add(q, id);
}

int vnet_open(struct vnet *net, u64 base) {
    net->broken = 1;
    long long features = negotiate(base, DEVICE_ID_NET, NET_FEATURE_MAC);
    if (features < 0) return (int)features;
    int error = queue_setup(&net->receive_queue, base, NET_RECEIVE_QUEUE, VIRTQ_SIZE_LIMIT);
    if (!error) error = queue_setup(&net->transmit_queue, base, NET_TRANSMIT_QUEUE,
                                    VIRTQ_SIZE_LIMIT);
    if (!error && (features & NET_FEATURE_MAC))
        error = read_config(base, NET_CONFIG_MAC, net->mac, sizeof net->mac);
    if (error) { fail(base); return error; }
    if (!(features & NET_FEATURE_MAC)) {
        static const u8 fallback[6] = {DEFAULT_MAC_FIRST_BYTE, 0, 0, 0, 0, 0x10};
        copy_bytes(net->mac, fallback, sizeof fallback);
    }
    struct virtq *tx = &net->transmit_queue;
    net->transmit_free_count = 0;
    for (u16 id = 0; id < tx->size; id++) {
        tx->desc[id].addr = (u64)net->transmit_buffers[id];
        tx->desc[id].flags = 0;
        tx->desc[id].next = 0;
        net->transmit_free[net->transmit_free_count++] = (u16)(tx->size - 1 - id);
    }
    for (u16 id = 0; id < net->receive_queue.size; id++) post_receive_buffer(net, id);
    net->frames_sent = net->frames_received = net->frames_dropped = 0;
    net->transmit_unkicked = net->receive_unkicked = 0;
    error = driver_ok(base);
    if (error) { fail(base); return error; }
    net->broken = 0;
    queue_kick(&net->receive_queue);
    return 0;
}

void vnet_mac(const struct vnet *net, u8 mac[6]) { copy_bytes(mac, net->mac, 6); }

static int device_broke(struct vnet *net) {
    net->broken = 1;
    fail(net->receive_queue.base);
    return VIRTIO_ERROR_DEVICE;
}

int vnet_transmit_pending(struct vnet *net) {
    if (net->broken) return VIRTIO_ERROR_DEVICE;
    struct virtq *tx = &net->transmit_queue;
    for (u32 i = 0; i < tx->size; i++) {        /* at most every descriptor once */
        u16 id;
        u32 ignored;
        int taken = queue_take(tx, &id, &ignored);
        if (taken < 0) return device_broke(net);
        if (!taken) break;
        net->transmit_free[net->transmit_free_count++] = id;
    }
    return tx->outstanding;
}

void vnet_kick(struct vnet *net) {
    if (net->broken || !net->transmit_unkicked) return;
    net->transmit_unkicked = 0;
    queue_kick(&net->transmit_queue);
}

int vnet_queue(struct vnet *net, const void *frame, u32 length) {
    if (net->broken) return VIRTIO_ERROR_DEVICE;
    if (!frame || length < VNET_MINIMUM_FRAME) return VIRTIO_ERROR_ARGUMENT;
    if (length > VNET_FRAME_LIMIT) return VIRTIO_ERROR_TOO_LARGE;
    for (u64 poll = 0; net->transmit_free_count == 0; poll++) {
        if (poll >= WAIT_POLL_LIMIT) return VIRTIO_ERROR_BUSY;
        vnet_kick(net);                         /* the device may be waiting for us */
        if (vnet_transmit_pending(net) < 0) return VIRTIO_ERROR_DEVICE;
        if (net->transmit_free_count == 0) cpu_relax();
    }
    struct virtq *tx = &net->transmit_queue;
    u16 id = net->transmit_free[--net->transmit_free_count];
    u8 *buffer = net->transmit_buffers[id];
    zero_bytes(buffer, VNET_HEADER_SIZE);       /* no offloads: flags 0, gso_type NONE */
    copy_bytes(buffer + VNET_HEADER_SIZE, frame, length);
    tx->desc[id].len = VNET_HEADER_SIZE + length;
    queue_add(tx, id);
    net->transmit_unkicked++;
    net->frames_sent++;
    return 0;
}

int vnet_send(struct vnet *net, const void *frame, u32 length) {
    int error = vnet_queue(net, frame, length);
    if (!error) vnet_kick(net);
    return error;
}

int vnet_receive(struct vnet *net, void *buffer, u32 capacity) {
    if (net->broken) return VIRTIO_ERROR_DEVICE;
    struct virtq *rx = &net->receive_queue;
    u16 id;
    u32 written;
    int taken = queue_take(rx, &id, &written);
    if (taken < 0) return device_broke(net);
    if (!taken) return 0;
    int result;
    if (written < VNET_HEADER_SIZE + VNET_MINIMUM_FRAME || written > VNET_BUFFER_SIZE) {
        if (written > VNET_BUFFER_SIZE) return device_broke(net);
        net->frames_dropped++;                  /* a runt: nothing to deliver */
        result = 0;
    } else if (written - VNET_HEADER_SIZE > capacity || !buffer) {
        net->frames_dropped++;
        result = VIRTIO_ERROR_TOO_LARGE;
    } else {
        result = (int)(written - VNET_HEADER_SIZE);
        copy_bytes(buffer, net->receive_buffers[id] + VNET_HEADER_SIZE, (u64)result);
        net->frames_received++;
    }
    post_receive_buffer(net, id);
    u16 threshold = rx->size / 2 < VNET_RECEIVE_KICK_BATCH ? rx->size / 2
                                                          : VNET_RECEIVE_KICK_BATCH;
    if (++net->receive_unkicked >= threshold) {
        net->receive_unkicked = 0;
        queue_kick(rx);
    }
    return result;
}

/* -- virtio-blk ------------------------------------------------------------------------- */

int vblk_open(struct vblk *disk, u64 base) {
    disk->broken = 1;
    long long features = negotiate(base, DEVICE_ID_BLOCK,
                                   BLK_FEATURE_READ_ONLY | BLK_FEATURE_FLUSH);
    if (features < 0) return (int)features;
    disk->read_only = (features & BLK_FEATURE_READ_ONLY) != 0;
    disk->can_flush = (features & BLK_FEATURE_FLUSH) != 0;
    int error = queue_setup(&disk->queue, base, BLK_REQUEST_QUEUE, VBLK_QUEUE_SIZE);
    if (!error && disk->queue.size < VBLK_QUEUE_SIZE) error = VIRTIO_ERROR_QUEUE;
    u64 capacity = 0;
    if (!error) error = read_config(base, BLK_CONFIG_CAPACITY, (u8 *)&capacity, sizeof capacity);
    if (!error) error = driver_ok(base);
    if (error) { fail(base); return error; }
    disk->capacity_sectors = capacity;
    disk->broken = 0;
    return 0;
}

u64 vblk_capacity_sectors(const struct vblk *disk) { return disk->capacity_sectors; }

/* One request (header, optional data, status), submitted and waited for. */
static int block_request(struct vblk *disk, u32 type, u64 sector, void *data, u32 bytes,
                         int device_writes_data) {
    struct virtq *q = &disk->queue;
    disk->header.type = type;
    disk->header.reserved = 0;
    disk->header.sector = sector;
    disk->status = BLK_STATUS_PENDING;
    u16 status_descriptor = bytes ? BLK_STATUS_DESCRIPTOR : BLK_DATA_DESCRIPTOR;
    q->desc[BLK_HEADER_DESCRIPTOR] = (struct virtq_desc){
        (u64)&disk->header, sizeof disk->header, VIRTQ_DESC_F_NEXT, BLK_DATA_DESCRIPTOR};
    if (bytes)
        q->desc[BLK_DATA_DESCRIPTOR] = (struct virtq_desc){
            (u64)data, bytes,
            (u16)(VIRTQ_DESC_F_NEXT | (device_writes_data ? VIRTQ_DESC_F_WRITE : 0)),
            BLK_STATUS_DESCRIPTOR};
    q->desc[status_descriptor] = (struct virtq_desc){
        (u64)&disk->status, 1, VIRTQ_DESC_F_WRITE, 0};
    queue_add(q, BLK_HEADER_DESCRIPTOR);
    queue_kick(q);
    for (u64 poll = 0; poll < WAIT_POLL_LIMIT; poll++) {
        u16 head;
        u32 written;
        int taken = queue_take(q, &head, &written);
        if (taken < 0) break;
        if (taken) {
            compiler_barrier();         /* the used entry before the status it covers */
            u8 status = disk->status;
            if (status == BLK_STATUS_OK) return 0;
            if (status == BLK_STATUS_PENDING) break;    /* "done" without a status */
            return VIRTIO_ERROR_IO;
        }
        cpu_relax();
    }
    disk->broken = 1;
    fail(q->base);
    return VIRTIO_ERROR_DEVICE;
}

static int block_transfer(struct vblk *disk, u64 sector, u8 *buffer, u32 sectors, int write) {
    if (disk->broken) return VIRTIO_ERROR_DEVICE;
    if (!buffer) return VIRTIO_ERROR_ARGUMENT;
    if (write && disk->read_only) return VIRTIO_ERROR_READ_ONLY;
    if (sector > disk->capacity_sectors || sectors > disk->capacity_sectors - sector)
        return VIRTIO_ERROR_RANGE;
    while (sectors) {
        u32 count = sectors < VBLK_REQUEST_SECTORS ? sectors : VBLK_REQUEST_SECTORS;
        int error = block_request(disk, write ? BLK_TYPE_OUT : BLK_TYPE_IN, sector, buffer,
                                  count * VBLK_SECTOR_SIZE, !write);
        if (error) return error;
        sector += count;
        buffer += (u64)count * VBLK_SECTOR_SIZE;
        sectors -= count;
    }
    return 0;
}

int vblk_read(struct vblk *disk, u64 sector, void *buffer, u32 sectors) {
    return block_transfer(disk, sector, buffer, sectors, 0);
}

int vblk_write(struct vblk *disk, u64 sector, const void *buffer, u32 sectors) {
    return block_transfer(disk, sector, (u8 *)buffer, sectors, 1);
}

int vblk_flush(struct vblk *disk) {
    if (disk->broken) return VIRTIO_ERROR_DEVICE;
    if (!disk->can_flush) return 0;
    return block_request(disk, BLK_TYPE_FLUSH, 0, 0, 0, 0);
}
