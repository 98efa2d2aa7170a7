/* A minimal virtio-mmio (version 2) driver for keel's CPL 3 test guests: virtio-net and
   virtio-blk over split virtqueues, polled (no interrupts reach CPL 3 here).

   Why it looks like this: the guest runs with paging identity-mapping 4 GiB, so a pointer is
   its guest-physical address and rings and buffers can live in static, page-aligned storage
   (the structs below, defined here so callers can make them static). Devices are found the way
   Linux finds them: `virtio_mmio.device=<size>@<base>:<irq>` words on the command line, so the
   same guest runs under keel (which writes those words) and QEMU's microvm (which appends
   them itself).

   Everything the device writes (used index, used ids and lengths, config space) is hostile
   input: every loop over it is bounded and every value checked before use; a device that
   breaks the rules makes the calls return VIRTIO_ERROR_DEVICE and the driver stops using it. */
#ifndef KEEL_VIRTIO_GUEST_H
#define KEEL_VIRTIO_GUEST_H

#include "guest.h"

/* Errors (negative returns). */
#define VIRTIO_ERROR_NOT_FOUND   (-1)   /* no device / wrong magic / wrong version / wrong id */
#define VIRTIO_ERROR_FEATURES    (-2)   /* VERSION_1 missing or FEATURES_OK refused */
#define VIRTIO_ERROR_QUEUE       (-3)   /* queue missing, too small, or already in use */
#define VIRTIO_ERROR_DEVICE      (-4)   /* the device broke the protocol or asked for a reset */
#define VIRTIO_ERROR_BUSY        (-5)   /* no free descriptor after the bounded wait */
#define VIRTIO_ERROR_TOO_LARGE   (-6)   /* frame longer than a buffer / the caller's capacity */
#define VIRTIO_ERROR_RANGE       (-7)   /* sectors outside the disk */
#define VIRTIO_ERROR_IO          (-8)   /* the device answered VIRTIO_BLK_S_IOERR / UNSUPP */
#define VIRTIO_ERROR_READ_ONLY   (-9)   /* write to a disk offered read-only */
#define VIRTIO_ERROR_ARGUMENT    (-10)  /* bad length or null buffer */

/* Ring sizes and buffers. */
#define VIRTQ_SIZE_LIMIT 256          /* the largest queue these structs hold */
#define VNET_BUFFER_SIZE 2048         /* one vnet header + an untagged or 802.1Q frame */
#define VNET_HEADER_SIZE 12           /* struct virtio_net_hdr_v1 (num_buffers included) */
#define VNET_FRAME_LIMIT (VNET_BUFFER_SIZE - VNET_HEADER_SIZE)
#define VNET_MINIMUM_FRAME 14         /* an Ethernet header */
#define VBLK_SECTOR_SIZE 512
#define VBLK_QUEUE_SIZE 4             /* one request in flight: header, data, status */
#define VBLK_REQUEST_SECTORS 128      /* 64 KiB per request: within any device's size_max */
#define PAGE_SIZE 4096
/* RX buffers go back to the device at once but are announced with one kick per this many
   (as Linux refills after a NAPI poll): with a whole ring posted the device never waits on it. */
#define VNET_RECEIVE_KICK_BATCH 32

/* virtio 1.2 split-ring layout (section 2.7), little-endian like x86. */
struct virtq_desc { u64 addr; u32 len; u16 flags; u16 next; };
struct virtq_used_elem { u32 id; u32 len; };
struct virtq_avail { u16 flags; u16 idx; u16 ring[VIRTQ_SIZE_LIMIT]; u16 used_event; };
struct virtq_used {
    u16 flags; u16 idx; struct virtq_used_elem ring[VIRTQ_SIZE_LIMIT]; u16 avail_event;
};

/* One split queue with its driver-side state. The three parts each start on their own
   page (far stricter than the spec's 16/2/4-byte alignment). */
struct virtq {
    struct virtq_desc desc[VIRTQ_SIZE_LIMIT] __attribute__((aligned(PAGE_SIZE)));
    struct virtq_avail avail __attribute__((aligned(PAGE_SIZE)));
    struct virtq_used used __attribute__((aligned(PAGE_SIZE)));
    u64 base;                          /* the device's MMIO window */
    u32 index;                         /* queue number */
    u16 size;                          /* negotiated size, a power of two */
    u16 next_avail;                    /* our shadow of avail.idx */
    u16 last_used;                     /* used entries consumed so far */
    u16 outstanding;                   /* descriptors (chains' heads) the device holds */
    u8 in_flight[VIRTQ_SIZE_LIMIT];    /* 1 while that head is the device's */
    u64 notifications;                 /* QueueNotify writes (for the benchmark's report) */
};

struct virtio_mmio_window { u64 base; u32 irq; };

/* `virtio_mmio.device=<size>@<base>:<irq>[:<id>]` words of `command_line` (Linux's syntax:
   size with K/M/G suffixes, base and irq in C notation); at most `max` of them into `out`.
   Returns how many were found; malformed words are skipped. */
int virtio_mmio_windows(const char *command_line, struct virtio_mmio_window *out, int max);

/* The device id in the window (1 net, 2 block, ...), or 0 if no virtio-mmio v2 device. */
u32 virtio_mmio_device_id(u64 base);

/* The kernel command line the loader passed (multiboot info or PVH hvm_start_info), or "". */
const char *boot_command_line(u64 info, u64 magic);

struct vnet {
    struct virtq receive_queue;
    struct virtq transmit_queue;
    u8 mac[6];
    int broken;                        /* the device broke the protocol: every call fails */
    u16 transmit_free[VIRTQ_SIZE_LIMIT];   /* stack of free TX descriptors */
    u16 transmit_free_count;
    u16 transmit_unkicked;             /* frames queued since the last TX kick */
    u16 receive_unkicked;              /* buffers re-posted since the last RX kick */
    u64 frames_sent, frames_received, frames_dropped;
    u8 receive_buffers[VIRTQ_SIZE_LIMIT][VNET_BUFFER_SIZE] __attribute__((aligned(PAGE_SIZE)));
    u8 transmit_buffers[VIRTQ_SIZE_LIMIT][VNET_BUFFER_SIZE] __attribute__((aligned(PAGE_SIZE)));
};

int vnet_open(struct vnet *net, u64 base);               /* 0 or negative error */
void vnet_mac(const struct vnet *net, u8 mac[6]);
/* Queue one Ethernet frame (no vnet header) for sending: 0 or <0. Waits (bounded) for a free
   descriptor when the ring is full. */
int vnet_send(struct vnet *net, const void *frame, u32 length);
/* Like vnet_send without the notification: frames queue up until vnet_kick (batching, as
   Linux's xmit_more does). A full ring kicks before it waits. */
int vnet_queue(struct vnet *net, const void *frame, u32 length);
void vnet_kick(struct vnet *net);
/* Copy one received frame into `buffer`: its length, 0 if none is waiting, <0 on error
   (VIRTIO_ERROR_TOO_LARGE drops a frame longer than `capacity`). Never waits. */
int vnet_receive(struct vnet *net, void *buffer, u32 capacity);
/* Reclaim sent frames' descriptors; returns how many are still the device's (or <0). */
int vnet_transmit_pending(struct vnet *net);

struct vblk {
    struct virtq queue;
    u64 capacity_sectors;
    int read_only;
    int can_flush;
    int broken;
    struct { u32 type; u32 reserved; u64 sector; } header __attribute__((aligned(16)));
    volatile u8 status;
};

int vblk_open(struct vblk *disk, u64 base);
u64 vblk_capacity_sectors(const struct vblk *disk);
int vblk_read(struct vblk *disk, u64 sector, void *buffer, u32 sectors);
int vblk_write(struct vblk *disk, u64 sector, const void *buffer, u32 sectors);
/* VIRTIO_BLK_T_FLUSH when the device offers it (else 0: writes are already durable). */
int vblk_flush(struct vblk *disk);

#endif
