/* Round-trip latency through a TAP: send one Ethernet frame to the guest, wait for its echo
   (virtio-test's mode=echo swaps the MACs), repeat. Built by bench/virtio_net.py with gcc and
   run inside the benchmark's network namespace, pinned to its own CPU.

     frame_pingpong IFNAME GUEST_MAC COUNT WARMUP SIZE

   Prints one line: "rtt_ns <median> <p99> <min> <max> <measured> <lost>", then sends the stop
   frame that ends the guest. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define TEST_ETHERTYPE 0x88b5
#define STOP_ETHERTYPE 0x88b6
#define MAC_SIZE 6
#define HEADER_SIZE 14
#define FRAME_LIMIT 1514
#define MINIMUM_SIZE (HEADER_SIZE + 8)
#define COUNT_LIMIT 10000000
#define REPLY_TIMEOUT_MS 2000
#define PERCENTILE_99 99

static const unsigned char host_mac[MAC_SIZE] = {0x02, 0, 0, 0, 0, 0x99};

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static int compare(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int parse_mac(const char *text, unsigned char mac[MAC_SIZE]) {
    unsigned int parts[MAC_SIZE];
    if (sscanf(text, "%x:%x:%x:%x:%x:%x", &parts[0], &parts[1], &parts[2], &parts[3],
               &parts[4], &parts[5]) != MAC_SIZE)
        return -1;
    for (int i = 0; i < MAC_SIZE; i++) {
        if (parts[i] > 0xff) return -1;
        mac[i] = (unsigned char)parts[i];
    }
    return 0;
}

static void build(unsigned char *frame, const unsigned char *guest_mac, uint16_t type,
                  uint64_t sequence, long size) {
    memcpy(frame, guest_mac, MAC_SIZE);
    memcpy(frame + MAC_SIZE, host_mac, MAC_SIZE);
    frame[12] = (unsigned char)(type >> 8);
    frame[13] = (unsigned char)type;
    memcpy(frame + HEADER_SIZE, &sequence, sizeof sequence);
    for (long i = MINIMUM_SIZE; i < size; i++) frame[i] = (unsigned char)i;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s IFNAME GUEST_MAC COUNT WARMUP SIZE\n", argv[0]);
        return 2;
    }
    unsigned char guest_mac[MAC_SIZE];
    long count = strtol(argv[3], NULL, 10), warmup = strtol(argv[4], NULL, 10);
    long size = strtol(argv[5], NULL, 10);
    if (parse_mac(argv[2], guest_mac) || count < 1 || count > COUNT_LIMIT || warmup < 0 ||
        warmup > COUNT_LIMIT || size < MINIMUM_SIZE || size > FRAME_LIMIT) {
        fprintf(stderr, "bad arguments: MAC aa:bb:cc:dd:ee:ff, 1 <= COUNT <= %d, "
                "%d <= SIZE <= %d\n", COUNT_LIMIT, MINIMUM_SIZE, FRAME_LIMIT);
        return 2;
    }
    /* A protocol-specific packet socket sees only incoming frames of that type. */
    int fd = socket(AF_PACKET, SOCK_RAW, htons(TEST_ETHERTYPE));
    if (fd < 0) { perror("socket"); return 1; }
    struct sockaddr_ll address = {0};
    address.sll_family = AF_PACKET;
    address.sll_protocol = htons(TEST_ETHERTYPE);
    address.sll_ifindex = (int)if_nametoindex(argv[1]);
    if (!address.sll_ifindex) { perror("if_nametoindex"); return 1; }
    if (bind(fd, (struct sockaddr *)&address, sizeof address)) { perror("bind"); return 1; }
    int64_t *samples = calloc((size_t)count, sizeof *samples);
    if (!samples) { perror("calloc"); return 1; }
    unsigned char frame[FRAME_LIMIT], reply[FRAME_LIMIT + 64];
    long measured = 0, lost = 0;
    for (long i = 0; i < warmup + count; i++) {
        uint64_t sequence = (uint64_t)i;
        build(frame, guest_mac, TEST_ETHERTYPE, sequence, size);
        int64_t start = now_ns();
        if (send(fd, frame, (size_t)size, 0) != size) { perror("send"); return 1; }
        int answered = 0;
        while (!answered) {
            int64_t waited_ms = (now_ns() - start) / 1000000;
            if (waited_ms >= REPLY_TIMEOUT_MS) break;
            struct pollfd ready = {fd, POLLIN, 0};
            int events = poll(&ready, 1, (int)(REPLY_TIMEOUT_MS - waited_ms));
            if (events < 0 && errno != EINTR) { perror("poll"); return 1; }
            if (events <= 0) continue;
            ssize_t length = recv(fd, reply, sizeof reply, 0);
            uint64_t echoed;
            if (length < MINIMUM_SIZE || memcmp(reply, host_mac, MAC_SIZE)) continue;
            memcpy(&echoed, reply + HEADER_SIZE, sizeof echoed);
            if (echoed == sequence) answered = 1;
        }
        int64_t elapsed = now_ns() - start;
        if (!answered) { lost++; continue; }
        if (i >= warmup) samples[measured++] = elapsed;
    }
    build(frame, guest_mac, STOP_ETHERTYPE, 0, MINIMUM_SIZE + 40);
    if (send(fd, frame, MINIMUM_SIZE + 40, 0) < 0) perror("send stop");
    if (measured == 0) { fprintf(stderr, "no replies\n"); return 1; }
    qsort(samples, (size_t)measured, sizeof *samples, compare);
    long p99 = (measured * PERCENTILE_99 + 99) / 100 - 1;
    printf("rtt_ns %lld %lld %lld %lld %ld %ld\n", (long long)samples[measured / 2],
           (long long)samples[p99], (long long)samples[0], (long long)samples[measured - 1],
           measured, lost);
    free(samples);
    close(fd);
    return 0;
}
