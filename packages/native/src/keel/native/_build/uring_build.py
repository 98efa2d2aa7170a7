"""cffi out-of-line API build of the io_uring bindings (`keel.native._uring`).

Layouts and numbers come from <linux/io_uring.h>; the ring itself is mapped and driven by
the small C helpers in uring_helpers.h, which are the hot path of keel.runtime.
"""

from __future__ import annotations

import os
import sys

from cffi import FFI

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from header_macros import (  # type: ignore[import-not-found]  # noqa: E402
    cdef_defines,
    cdef_enum_constants,
    enum_constants,
    integer_macros,
    read_helper,
)

HEADERS = ["linux/io_uring.h"]
MACRO_PREFIXES = (
    "IORING_",
    "IOSQE_",
    "IO_URING_OP_",
    "IOU_",
    "SPLICE_F_FD_IN_FIXED",
)
ENUM_PREFIXES = ("IORING_OP_", "IORING_REGISTER_", "IORING_UNREGISTER_", "IORING_RESTRICTION_", "IOSQE_")
# Macros that are not integer constant expressions cffi can evaluate.
EXCLUDE = frozenset({"IORING_FILE_INDEX_ALLOC"})

DECLARATIONS = """
typedef int... __u8;
typedef int... __u16;
typedef int... __u32;
typedef int... __s32;
typedef int... __u64;

struct io_sqring_offsets {
    __u32 head; __u32 tail; __u32 ring_mask; __u32 ring_entries; __u32 flags;
    __u32 dropped; __u32 array; ...;
};
struct io_cqring_offsets {
    __u32 head; __u32 tail; __u32 ring_mask; __u32 ring_entries; __u32 overflow;
    __u32 cqes; __u32 flags; ...;
};
struct io_uring_params {
    __u32 sq_entries; __u32 cq_entries; __u32 flags; __u32 sq_thread_cpu;
    __u32 sq_thread_idle; __u32 features; __u32 wq_fd;
    struct io_sqring_offsets sq_off; struct io_cqring_offsets cq_off;
    ...;
};
struct io_uring_sqe {
    __u8 opcode; __u8 flags; __u16 ioprio; __s32 fd;
    __u64 off; __u64 addr; __u32 len; __u32 rw_flags; __u64 user_data;
    __u16 buf_index; __u16 personality; __s32 splice_fd_in; __u64 addr3;
    ...;
};
struct io_uring_cqe { __u64 user_data; __s32 res; __u32 flags; ...; };
struct io_uring_probe_op { __u8 op; __u16 flags; ...; };
struct io_uring_probe { __u8 last_op; __u8 ops_len; struct io_uring_probe_op ops[]; ...; };
struct io_uring_getevents_arg { __u64 sigmask; __u32 sigmask_sz; __u64 ts; ...; };
struct __kernel_timespec { int64_t tv_sec; long long tv_nsec; };
struct io_uring_buf_reg { __u64 ring_addr; __u32 ring_entries; __u16 bgid; ...; };

struct keel_ring {
    int fd;
    unsigned setup_flags;
    unsigned features;
    unsigned sq_entries;
    unsigned cq_entries;
    struct io_uring_sqe *sqes;
    unsigned *sq_head, *sq_tail, *sq_mask, *sq_flags, *sq_array;
    unsigned *cq_head, *cq_tail, *cq_mask, *cq_overflow;
    struct io_uring_cqe *cqes;
    unsigned sqe_tail;
    ...;
};

/* All return a non-negative result, or -errno. */
int keel_uring_setup(unsigned entries, struct io_uring_params *params);
int keel_uring_enter(int fd, unsigned to_submit, unsigned min_complete, unsigned flags,
                     void *argument, size_t argument_size);
int keel_uring_register(int fd, unsigned opcode, void *argument, unsigned count);

int keel_ring_map(struct keel_ring *ring, int fd, const struct io_uring_params *params);
void keel_ring_unmap(struct keel_ring *ring);
unsigned keel_ring_sq_space(const struct keel_ring *ring);
unsigned keel_ring_cq_ready(const struct keel_ring *ring);
unsigned keel_ring_sq_flags(const struct keel_ring *ring);
unsigned keel_ring_cq_overflow(const struct keel_ring *ring);

void keel_sqe_prep(struct io_uring_sqe *sqe, unsigned opcode, unsigned sqe_flags, int fd,
                   uint64_t addr, unsigned length, uint64_t offset, unsigned op_flags,
                   uint64_t user_data);
int keel_ring_submit_batch(struct keel_ring *ring, const struct io_uring_sqe *sqes,
                           unsigned count, unsigned wait_for, unsigned enter_flags);
int keel_ring_wait(struct keel_ring *ring, unsigned wait_for, int64_t timeout_ns);
unsigned keel_ring_reap(struct keel_ring *ring, struct io_uring_cqe *out, unsigned capacity);
void keel_sqe_prep_buffer(struct io_uring_sqe *sqes, unsigned index, unsigned opcode, int fd,
                          void *buffer, unsigned length, unsigned op_flags, uint64_t user_data);
unsigned keel_ring_reap_split(struct keel_ring *ring, uint64_t *user_data, int32_t *results,
                              uint32_t *flags, unsigned capacity);
void keel_buf_ring_push(void *memory, unsigned entries, uint64_t address, unsigned length,
                        unsigned bid);
void keel_buf_ring_take(void *memory, unsigned entries, char *pool, unsigned buffer_size,
                        unsigned bid, void *destination, unsigned count);
#define KEEL_CQE_BUFFER_SHIFT ...
"""


def _ffibuilder() -> FFI:
    builder = FFI()
    macros = integer_macros(HEADERS, MACRO_PREFIXES, EXCLUDE)
    enums = [name for name in enum_constants(HEADERS, ENUM_PREFIXES) if name not in macros]
    builder.cdef(DECLARATIONS + cdef_defines(macros) + cdef_enum_constants(enums))
    builder.set_source("keel.native._uring", read_helper("uring_helpers.h"))
    return builder


ffibuilder = _ffibuilder()

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
