#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <net/if.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <linux/if_tun.h>
#include <linux/virtio_net.h>

/* struct ifreq is a union of unions reached through macros; setting it up in C keeps that
   layout out of Python. The name is copied with a bound: it comes from the caller. */
static int keel_tun_set_iff(int fd, const char *name, int flags, char *name_out,
                            size_t name_out_size)
{
    struct ifreq request;
    memset(&request, 0, sizeof(request));
    strncpy(request.ifr_name, name, IFNAMSIZ - 1);
    request.ifr_flags = (short)flags;
    if (ioctl(fd, TUNSETIFF, &request) < 0)
        return -errno;
    if (name_out && name_out_size) {
        strncpy(name_out, request.ifr_name, name_out_size - 1);
        name_out[name_out_size - 1] = 0;
    }
    return 0;
}

static int keel_tun_get_iff(int fd, char *name_out, size_t name_out_size, int *flags_out)
{
    struct ifreq request;
    memset(&request, 0, sizeof(request));
    if (ioctl(fd, TUNGETIFF, &request) < 0)
        return -errno;
    if (name_out && name_out_size) {
        strncpy(name_out, request.ifr_name, name_out_size - 1);
        name_out[name_out_size - 1] = 0;
    }
    if (flags_out)
        *flags_out = request.ifr_flags;
    return 0;
}

static int keel_eventfd(unsigned initial_value, int flags)
{
    int fd = eventfd(initial_value, flags);
    return fd < 0 ? -errno : fd;
}

static int keel_epoll_create(int flags)
{
    int fd = epoll_create1(flags);
    return fd < 0 ? -errno : fd;
}

static int keel_epoll_ctl(int epoll_fd, int operation, int fd, uint32_t events, uint64_t data)
{
    struct epoll_event event = {.events = events, .data.u64 = data};
    return epoll_ctl(epoll_fd, operation, fd, &event) < 0 ? -errno : 0;
}

/* epoll_event is packed on x86-64; flattening it here keeps cffi away from that layout. */
static int keel_epoll_wait(int epoll_fd, uint64_t *datas, uint32_t *events, int capacity,
                           int timeout_ms)
{
    enum { CHUNK = 256 };
    struct epoll_event ready[CHUNK];
    int wanted = capacity < CHUNK ? capacity : CHUNK;
    int count = epoll_wait(epoll_fd, ready, wanted, timeout_ms);
    if (count < 0)
        return -errno;
    for (int i = 0; i < count; i++) {
        datas[i] = ready[i].data.u64;
        events[i] = ready[i].events;
    }
    return count;
}

static int keel_setns(int fd, int namespace_type)
{
    return setns(fd, namespace_type) < 0 ? -errno : 0;
}

static int keel_unshare(int flags)
{
    return unshare(flags) < 0 ? -errno : 0;
}

static int keel_signal_realtime_min(void) { return SIGRTMIN; }
static int keel_signal_realtime_max(void) { return SIGRTMAX; }

static void keel_interrupting_handler(int signal_number) { (void)signal_number; }

/* A handler that does nothing, installed without SA_RESTART: delivering the signal to a
   thread makes its blocking call (KVM_RUN, epoll_wait, io_uring_enter) return EINTR. Python's
   signal module can only install handlers from the main thread, and its handlers restart. */
static int keel_install_interrupting_handler(int signal_number)
{
    struct sigaction action;
    memset(&action, 0, sizeof(action));
    action.sa_handler = keel_interrupting_handler;
    sigemptyset(&action.sa_mask);
    return sigaction(signal_number, &action, NULL) < 0 ? -errno : 0;
}
