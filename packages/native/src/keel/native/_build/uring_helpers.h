#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <linux/io_uring.h>

/* Everything a loop turn touches, resolved once from the offsets io_uring_setup returned.
   The kernel shares head/tail with us, so every access to them is an acquire load or a
   release store (io_uring(7), "memory ordering"). */
struct keel_ring {
    int fd;
    unsigned setup_flags;
    unsigned features;
    unsigned sq_entries;
    unsigned cq_entries;
    void *sq_map;
    size_t sq_map_size;
    void *cq_map;
    size_t cq_map_size;
    struct io_uring_sqe *sqes;
    size_t sqes_size;
    unsigned *sq_head, *sq_tail, *sq_mask, *sq_flags, *sq_array;
    unsigned *cq_head, *cq_tail, *cq_mask, *cq_overflow;
    struct io_uring_cqe *cqes;
    unsigned sqe_tail; /* our private copy: only we write the SQ tail */
};

static int keel_uring_setup(unsigned entries, struct io_uring_params *params)
{
    long result = syscall(__NR_io_uring_setup, entries, params);
    return result < 0 ? -errno : (int)result;
}

static int keel_uring_enter(int fd, unsigned to_submit, unsigned min_complete, unsigned flags,
                            void *argument, size_t argument_size)
{
    long result = syscall(__NR_io_uring_enter, fd, to_submit, min_complete, flags, argument,
                          argument_size);
    return result < 0 ? -errno : (int)result;
}

static int keel_uring_register(int fd, unsigned opcode, void *argument, unsigned count)
{
    long result = syscall(__NR_io_uring_register, fd, opcode, argument, count);
    return result < 0 ? -errno : (int)result;
}

static void keel_ring_unmap(struct keel_ring *ring)
{
    if (ring->sqes && ring->sqes != MAP_FAILED)
        munmap(ring->sqes, ring->sqes_size);
    if (ring->cq_map && ring->cq_map != MAP_FAILED && ring->cq_map != ring->sq_map)
        munmap(ring->cq_map, ring->cq_map_size);
    if (ring->sq_map && ring->sq_map != MAP_FAILED)
        munmap(ring->sq_map, ring->sq_map_size);
    ring->sqes = NULL;
    ring->cq_map = NULL;
    ring->sq_map = NULL;
}

static int keel_ring_map(struct keel_ring *ring, int fd, const struct io_uring_params *params)
{
    memset(ring, 0, sizeof(*ring));
    ring->fd = fd;
    ring->setup_flags = params->flags;
    ring->features = params->features;
    ring->sq_entries = params->sq_entries;
    ring->cq_entries = params->cq_entries;
    ring->sq_map_size = params->sq_off.array + params->sq_entries * sizeof(unsigned);
    ring->cq_map_size = params->cq_off.cqes + params->cq_entries * sizeof(struct io_uring_cqe);
    if (params->features & IORING_FEAT_SINGLE_MMAP) {
        if (ring->cq_map_size > ring->sq_map_size)
            ring->sq_map_size = ring->cq_map_size;
        ring->cq_map_size = ring->sq_map_size;
    }
    ring->sq_map = mmap(NULL, ring->sq_map_size, PROT_READ | PROT_WRITE,
                        MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
    if (ring->sq_map == MAP_FAILED) {
        int error = errno;
        ring->sq_map = NULL;
        return -error;
    }
    if (params->features & IORING_FEAT_SINGLE_MMAP) {
        ring->cq_map = ring->sq_map;
    } else {
        ring->cq_map = mmap(NULL, ring->cq_map_size, PROT_READ | PROT_WRITE,
                            MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_CQ_RING);
        if (ring->cq_map == MAP_FAILED) {
            int error = errno;
            ring->cq_map = NULL;
            keel_ring_unmap(ring);
            return -error;
        }
    }
    ring->sqes_size = params->sq_entries * sizeof(struct io_uring_sqe);
    ring->sqes = mmap(NULL, ring->sqes_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                      fd, IORING_OFF_SQES);
    if (ring->sqes == MAP_FAILED) {
        int error = errno;
        ring->sqes = NULL;
        keel_ring_unmap(ring);
        return -error;
    }
    char *sq = ring->sq_map, *cq = ring->cq_map;
    ring->sq_head = (unsigned *)(sq + params->sq_off.head);
    ring->sq_tail = (unsigned *)(sq + params->sq_off.tail);
    ring->sq_mask = (unsigned *)(sq + params->sq_off.ring_mask);
    ring->sq_flags = (unsigned *)(sq + params->sq_off.flags);
    ring->sq_array = (unsigned *)(sq + params->sq_off.array);
    ring->cq_head = (unsigned *)(cq + params->cq_off.head);
    ring->cq_tail = (unsigned *)(cq + params->cq_off.tail);
    ring->cq_mask = (unsigned *)(cq + params->cq_off.ring_mask);
    ring->cq_overflow = (unsigned *)(cq + params->cq_off.overflow);
    ring->cqes = (struct io_uring_cqe *)(cq + params->cq_off.cqes);
    ring->sqe_tail = *ring->sq_tail;
    return 0;
}

static unsigned keel_ring_sq_space(const struct keel_ring *ring)
{
    unsigned head = __atomic_load_n(ring->sq_head, __ATOMIC_ACQUIRE);
    return ring->sq_entries - (ring->sqe_tail - head);
}

static unsigned keel_ring_cq_ready(const struct keel_ring *ring)
{
    return __atomic_load_n(ring->cq_tail, __ATOMIC_ACQUIRE) - *ring->cq_head;
}

static unsigned keel_ring_sq_flags(const struct keel_ring *ring)
{
    return __atomic_load_n(ring->sq_flags, __ATOMIC_RELAXED);
}

static unsigned keel_ring_cq_overflow(const struct keel_ring *ring)
{
    return __atomic_load_n(ring->cq_overflow, __ATOMIC_RELAXED);
}

static void keel_sqe_prep(struct io_uring_sqe *sqe, unsigned opcode, unsigned sqe_flags, int fd,
                          uint64_t addr, unsigned length, uint64_t offset, unsigned op_flags,
                          uint64_t user_data)
{
    memset(sqe, 0, sizeof(*sqe));
    sqe->opcode = (__u8)opcode;
    sqe->flags = (__u8)sqe_flags;
    sqe->fd = fd;
    sqe->addr = addr;
    sqe->len = length;
    sqe->off = offset;
    sqe->rw_flags = op_flags;
    sqe->user_data = user_data;
}

static unsigned keel_enter_flags(const struct keel_ring *ring, unsigned wait_for, unsigned flags)
{
    if (wait_for)
        flags |= IORING_ENTER_GETEVENTS;
    if ((ring->setup_flags & IORING_SETUP_SQPOLL) &&
        (keel_ring_sq_flags(ring) & IORING_SQ_NEED_WAKEUP))
        flags |= IORING_ENTER_SQ_WAKEUP;
    return flags;
}

/* Copy `count` prepared SQEs into the ring (as many as fit) and make one io_uring_enter.
   Returns how many the kernel consumed, or -errno. With SQPOLL the enter is skipped
   unless the poller sleeps or the caller waits. */
static int keel_ring_submit_batch(struct keel_ring *ring, const struct io_uring_sqe *sqes,
                                  unsigned count, unsigned wait_for, unsigned enter_flags)
{
    unsigned space = keel_ring_sq_space(ring);
    unsigned queued = count < space ? count : space;
    unsigned mask = *ring->sq_mask;
    for (unsigned i = 0; i < queued; i++) {
        unsigned slot = (ring->sqe_tail + i) & mask;
        ring->sqes[slot] = sqes[i];
        ring->sq_array[slot] = slot;
    }
    ring->sqe_tail += queued;
    __atomic_store_n(ring->sq_tail, ring->sqe_tail, __ATOMIC_RELEASE);
    unsigned flags = keel_enter_flags(ring, wait_for, enter_flags);
    if ((ring->setup_flags & IORING_SETUP_SQPOLL) && !(flags & (IORING_ENTER_SQ_WAKEUP |
                                                                 IORING_ENTER_GETEVENTS)))
        return (int)queued;
    int result;
    do {
        result = keel_uring_enter(ring->fd, queued, wait_for, flags, NULL, 0);
    } while (result == -EINTR && wait_for == 0);
    return result;
}

/* Wait until `wait_for` completions are ready or `timeout_ns` passes (negative: no limit).
   Returns 0, -ETIME on timeout, -EINTR on a signal, or another -errno. */
static int keel_ring_wait(struct keel_ring *ring, unsigned wait_for, int64_t timeout_ns)
{
    if (keel_ring_cq_ready(ring) >= wait_for)
        return 0;
    unsigned flags = keel_enter_flags(ring, wait_for, IORING_ENTER_GETEVENTS);
    if (timeout_ns < 0) {
        int result = keel_uring_enter(ring->fd, 0, wait_for, flags, NULL, 0);
        return result < 0 ? result : 0;
    }
    struct __kernel_timespec timeout = {
        .tv_sec = timeout_ns / 1000000000LL, .tv_nsec = timeout_ns % 1000000000LL};
    struct io_uring_getevents_arg argument = {
        .sigmask = 0, .sigmask_sz = 0, .ts = (uint64_t)(uintptr_t)&timeout};
    int result = keel_uring_enter(ring->fd, 0, wait_for, flags | IORING_ENTER_EXT_ARG, &argument,
                                  sizeof(argument));
    return result < 0 ? result : 0;
}

/* Copy up to `capacity` completions out and release their slots in one store. */
static unsigned keel_ring_reap(struct keel_ring *ring, struct io_uring_cqe *out, unsigned capacity)
{
    unsigned head = *ring->cq_head;
    unsigned tail = __atomic_load_n(ring->cq_tail, __ATOMIC_ACQUIRE);
    unsigned mask = *ring->cq_mask;
    unsigned taken = 0;
    while (head != tail && taken < capacity) {
        out[taken++] = ring->cqes[head & mask];
        head++;
    }
    __atomic_store_n(ring->cq_head, head, __ATOMIC_RELEASE);
    return taken;
}

/* One SQE for a buffer operation (recv, send, read, write) at sqes[index], in one call from
   Python: the runtime's hottest path, so no cast of the buffer address and no separate
   offset/flags arguments are needed on the Python side. */
static void keel_sqe_prep_buffer(struct io_uring_sqe *sqes, unsigned index, unsigned opcode,
                                 int fd, void *buffer, unsigned length, unsigned op_flags,
                                 uint64_t user_data)
{
    struct io_uring_sqe *sqe = sqes + index;
    memset(sqe, 0, sizeof(*sqe));
    sqe->opcode = (__u8)opcode;
    sqe->fd = fd;
    sqe->addr = (uint64_t)(uintptr_t)buffer;
    sqe->len = length;
    sqe->rw_flags = op_flags;
    sqe->user_data = user_data;
}

/* Like keel_ring_reap, but into three parallel arrays: Python turns each into a list of
   ints with one memoryview.tolist() call instead of reading three struct fields per CQE. */
static unsigned keel_ring_reap_split(struct keel_ring *ring, uint64_t *user_data,
                                     int32_t *results, uint32_t *flags, unsigned capacity)
{
    unsigned head = *ring->cq_head;
    unsigned tail = __atomic_load_n(ring->cq_tail, __ATOMIC_ACQUIRE);
    unsigned mask = *ring->cq_mask;
    unsigned taken = 0;
    while (head != tail && taken < capacity) {
        const struct io_uring_cqe *cqe = &ring->cqes[head & mask];
        user_data[taken] = cqe->user_data;
        results[taken] = cqe->res;
        flags[taken] = cqe->flags;
        taken++;
        head++;
    }
    __atomic_store_n(ring->cq_head, head, __ATOMIC_RELEASE);
    return taken;
}

/* Hand buffer `bid` (at `address`, `length` bytes) to the kernel through a provided-buffer
   ring of `entries` slots (a power of two): one slot write, then a release store of the
   tail so the kernel never sees the new tail before the slot. Only this thread writes the
   tail; bufs[0].resv overlays the tail, so the slot's resv field is left alone. */
static void keel_buf_ring_push(void *memory, unsigned entries, uint64_t address,
                               unsigned length, unsigned bid)
{
    struct io_uring_buf_ring *ring = memory;
    unsigned short tail = ring->tail;
    struct io_uring_buf *slot = &ring->bufs[tail & (entries - 1)];
    slot->addr = address;
    slot->len = length;
    slot->bid = (__u16)bid;
    __atomic_store_n(&ring->tail, (unsigned short)(tail + 1), __ATOMIC_RELEASE);
}

/* IORING_CQE_BUFFER_SHIFT is an anonymous enum member, which the header scan does not see. */
#define KEEL_CQE_BUFFER_SHIFT IORING_CQE_BUFFER_SHIFT

/* A multishot recv's completion in one call: copy `count` bytes of provided buffer `bid`
   (in the pool at `pool`, `buffer_size` bytes each) into `destination`, then hand the
   buffer back to the kernel. The caller guarantees count <= both sizes. */
static void keel_buf_ring_take(void *memory, unsigned entries, char *pool, unsigned buffer_size,
                               unsigned bid, void *destination, unsigned count)
{
    char *source = pool + (size_t)bid * buffer_size;
    memcpy(destination, source, count);
    keel_buf_ring_push(memory, entries, (uint64_t)(uintptr_t)source, buffer_size, bid);
}
