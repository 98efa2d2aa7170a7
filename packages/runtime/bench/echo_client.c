/* TCP echo ping-pong load client for keel.runtime's benchmark.
 *
 * usage: echo_client HOST PORT CONNECTIONS MESSAGE_BYTES SECONDS
 * Each connection sends one message, waits for the whole echo, and repeats (ping-pong).
 * Prints one JSON object: messages, seconds, messages_per_second, p50_us, p99_us.
 * Single-threaded epoll, so it fits on one core (taskset -c 1).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNECTIONS 1024
#define MAX_MESSAGE (1 << 20)
#define LATENCY_SAMPLES (1 << 22)
/* A server silent this long has failed (5 s: on a shared 2-core machine a server can be
   starved for over a second without being broken). */
#define SILENCE_LIMIT_MS 5000

struct connection {
    int fd;
    size_t received;
    uint64_t sent_at_ns;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int compare_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static int send_all(int fd, const char *data, size_t length)
{
    size_t done = 0;
    while (done < length) {
        ssize_t n = send(fd, data + done, length - done, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        done += (size_t)n;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: %s HOST PORT CONNECTIONS MESSAGE_BYTES SECONDS\n", argv[0]);
        return 2;
    }
    const char *host = argv[1];
    int port = atoi(argv[2]);
    int count = atoi(argv[3]);
    size_t size = (size_t)atol(argv[4]);
    double seconds = atof(argv[5]);
    if (count < 1 || count > MAX_CONNECTIONS || size < 1 || size > MAX_MESSAGE ||
        seconds <= 0 || port <= 0 || port > 65535) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    char *message = malloc(size), *buffer = malloc(size);
    uint32_t *latencies = malloc(sizeof(uint32_t) * LATENCY_SAMPLES);
    struct connection *connections = calloc((size_t)count, sizeof(*connections));
    if (!message || !buffer || !latencies || !connections)
        return 3;
    memset(message, 'k', size);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &address.sin_addr) != 1)
        return 2;
    int epoll_fd = epoll_create1(0);
    for (int i = 0; i < count; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (connect(fd, (struct sockaddr *)&address, sizeof(address)) < 0) {
            perror("connect");
            return 4;
        }
        connections[i].fd = fd;
        struct epoll_event event = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &event);
    }
    uint64_t start = now_ns();
    uint64_t end = start + (uint64_t)(seconds * 1e9);
    for (int i = 0; i < count; i++) {
        connections[i].sent_at_ns = now_ns();
        if (send_all(connections[i].fd, message, size) < 0) {
            perror("send");
            return 5;
        }
    }
    uint64_t messages = 0;
    size_t samples = 0;
    struct epoll_event events[MAX_CONNECTIONS];
    int running = 1;
    while (running) {
        int ready = epoll_wait(epoll_fd, events, MAX_CONNECTIONS, SILENCE_LIMIT_MS);
        if (ready < 0 && errno == EINTR)
            continue;
        if (ready <= 0) {
            fprintf(stderr, "server stopped answering\n");
            return 6;
        }
        for (int e = 0; e < ready; e++) {
            struct connection *c = &connections[events[e].data.u32];
            ssize_t n = recv(c->fd, buffer, size - c->received, 0);
            if (n <= 0) {
                if (n < 0 && errno == EINTR)
                    continue;
                fprintf(stderr, "connection closed by server\n");
                return 7;
            }
            c->received += (size_t)n;
            if (c->received < size)
                continue;
            c->received = 0;
            uint64_t now = now_ns();
            messages++;
            if (samples < LATENCY_SAMPLES)
                latencies[samples++] = (uint32_t)((now - c->sent_at_ns) / 1000);
            if (now >= end) {
                running = 0;
                continue;
            }
            c->sent_at_ns = now;
            if (send_all(c->fd, message, size) < 0)
                return 5;
        }
    }
    double elapsed = (double)(now_ns() - start) / 1e9;
    qsort(latencies, samples, sizeof(uint32_t), compare_u32);
    uint32_t p50 = samples ? latencies[samples / 2] : 0;
    uint32_t p99 = samples ? latencies[(size_t)(samples * 0.99)] : 0;
    printf("{\"messages\": %llu, \"seconds\": %.3f, \"messages_per_second\": %.1f, "
           "\"p50_us\": %u, \"p99_us\": %u}\n",
           (unsigned long long)messages, elapsed, (double)messages / elapsed, p50, p99);
    for (int i = 0; i < count; i++)
        close(connections[i].fd);
    close(epoll_fd);
    return 0;
}
