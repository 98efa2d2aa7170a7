#include <errno.h>
#include <sys/ioctl.h>

/* ioctl returning -errno instead of setting errno: the caller runs with the GIL released
   and other threads may touch errno before Python reads it. */
static long keel_ioctl_ptr(int fd, unsigned long request, void *argument)
{
    long result = ioctl(fd, request, argument);
    return result < 0 ? -(long)errno : result;
}

static long keel_ioctl_int(int fd, unsigned long request, unsigned long argument)
{
    long result = ioctl(fd, request, argument);
    return result < 0 ? -(long)errno : result;
}
