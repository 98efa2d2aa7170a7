/* A small HTTP/1.1 server on lwIP's raw TCP API (NO_SYS: every callback runs from the one
   polling loop). Routes: `GET /` (a short page), `GET /bytes/<n>` (n deterministic bytes,
   byte i = i * 31 mod 251, n up to 1 MiB), 404 for any other path, 405 for other methods.
   Keep-alive (HTTP/1.1 default, `Connection: close` honoured; HTTP/1.0 closes), pipelined
   requests answered in order.

   Every byte from the network is hostile: the request head is bounded (REQUEST_HEAD_LIMIT;
   431 and close when a head does not fit), request bodies are refused (400 and close), the
   number of connections is bounded (a connection past the limit is reset), and an idle
   connection is closed after IDLE_TIMEOUT_TICKS poll intervals. Responses stream from the
   `sent` callback as send-buffer space frees up, so a 1 MiB body never needs 1 MiB of RAM. */
#include "lwip_http_server.h"

#include "lwip/tcp.h"

#define CONNECTION_LIMIT 32
#define REQUEST_HEAD_LIMIT 4096
#define RESPONSE_HEAD_LIMIT 256
#define BYTES_LIMIT (1u << 20)
#define BYTES_DIGITS_LIMIT 7
#define PATTERN_MULTIPLIER 31
#define PATTERN_MODULUS 251
#define BODY_CHUNK 8192
#define POLL_INTERVAL 4               /* in TCP coarse ticks (500 ms): every 2 s */
#define IDLE_TIMEOUT_TICKS 15         /* 30 s without a request or progress */
#define DRAIN_TIMEOUT_TICKS 3         /* a lingering close waits 4-6 s for the peer's FIN */

enum body_kind { BODY_NONE, BODY_TEXT, BODY_PATTERN };

struct connection {
    struct tcp_pcb *pcb;
    int in_use;
    int close_after;                  /* close once the response is queued */
    int closing;                      /* tcp_close failed for lack of memory: retry in poll */
    int idle_ticks;
    int peer_closed;                  /* the peer sent FIN: answer what is buffered, close */
    int draining;                     /* our FIN is queued; input is read and dropped */
    int drain_ticks;
    struct pbuf *pending;             /* received, not yet copied into `request` */
    u32 pending_offset;
    u32 request_length;
    char request[REQUEST_HEAD_LIMIT];
    int responding;
    char head[RESPONSE_HEAD_LIMIT];
    u32 head_length, head_sent;
    enum body_kind body_kind;
    const char *text;
    u32 body_length, body_sent;
};

static struct connection connections[CONNECTION_LIMIT];
/* The pattern from offset 0 with a chunk's slack: pattern + (i mod 251) starts at byte i. */
static u8 pattern[PATTERN_MODULUS + BODY_CHUNK];
static const char index_page[] =
    "<!doctype html>\n<title>keel guest</title>\n"
    "<h1>Hello from lwIP</h1>\n"
    "<p>Served by lwIP " "2.1" " (Debian's source package) at CPL 3 inside a keel.vmm guest, "
    "over keel's virtio-net driver.</p>\n";
static const char not_found_page[] = "not found\n";
static const char method_page[] = "only GET is served here\n";
static const char bad_request_page[] = "bad request\n";
static const char too_large_page[] = "request head too large\n";
static const char range_page[] = "at most 1048576 bytes\n";

static struct http_server_counters counters;

const struct http_server_counters *http_server_counters(void) { return &counters; }

static u32 append(char *buffer, u32 at, u32 limit, const char *text) {
    while (*text && at < limit) buffer[at++] = *text++;
    return at;
}

static u32 append_decimal(char *buffer, u32 at, u32 limit, u32 value) {
    char digits[10];
    int count = 0;
    do { digits[count++] = (char)('0' + value % 10); value /= 10; } while (value);
    while (count && at < limit) buffer[at++] = digits[--count];
    return at;
}

static char lower(char c) { return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c; }

/* Does the header line [line, end) have the name `name` (lower case, with the colon)? The
   value (after optional spaces) goes to *value. */
static int header_is(const char *line, const char *end, const char *name, const char **value) {
    const char *at = line;
    while (*name) {
        if (at >= end || lower(*at) != *name) return 0;
        at++; name++;
    }
    while (at < end && (*at == ' ' || *at == '\t')) at++;
    *value = at;
    return 1;
}

static int value_is(const char *value, const char *end, const char *expected) {
    while (*expected) {
        if (value >= end || lower(*value) != *expected) return 0;
        value++; expected++;
    }
    while (value < end && (*value == ' ' || *value == '\t')) value++;
    return value == end;
}

static void start_response(struct connection *connection, u32 status, const char *reason,
                           enum body_kind kind, const char *text, u32 length,
                           const char *content_type) {
    char *head = connection->head;
    u32 at = 0;
    at = append(head, at, RESPONSE_HEAD_LIMIT, "HTTP/1.1 ");
    at = append_decimal(head, at, RESPONSE_HEAD_LIMIT, status);
    at = append(head, at, RESPONSE_HEAD_LIMIT, " ");
    at = append(head, at, RESPONSE_HEAD_LIMIT, reason);
    at = append(head, at, RESPONSE_HEAD_LIMIT, "\r\nServer: keel-guest-lwip\r\nContent-Type: ");
    at = append(head, at, RESPONSE_HEAD_LIMIT, content_type);
    at = append(head, at, RESPONSE_HEAD_LIMIT, "\r\nContent-Length: ");
    at = append_decimal(head, at, RESPONSE_HEAD_LIMIT, length);
    at = append(head, at, RESPONSE_HEAD_LIMIT, connection->close_after
                ? "\r\nConnection: close\r\n\r\n" : "\r\nConnection: keep-alive\r\n\r\n");
    connection->head_length = at;
    connection->head_sent = 0;
    connection->body_kind = kind;
    connection->text = text;
    connection->body_length = length;
    connection->body_sent = 0;
    connection->responding = 1;
    counters.responses++;
}

static void start_text(struct connection *connection, u32 status, const char *reason,
                       const char *text, u32 length) {
    start_response(connection, status, reason, BODY_TEXT, text, length,
                   "text/plain; charset=utf-8");
}

/* Parse `/bytes/<n>`: 1 and n on success, 0 if the path is something else, -1 if n is out
   of range. */
static int parse_bytes_path(const char *path, const char *end, u32 *count) {
    static const char prefix[] = "/bytes/";
    const char *at = path;
    for (const char *p = prefix; *p; p++, at++)
        if (at >= end || *at != *p) return 0;
    if (at == end) return 0;
    u32 value = 0;
    int digits = 0;
    for (; at < end; at++, digits++) {
        if (*at < '0' || *at > '9') return 0;
        if (digits >= BYTES_DIGITS_LIMIT) return -1;
        value = value * 10 + (u32)(*at - '0');
    }
    if (value > BYTES_LIMIT) return -1;
    *count = value;
    return 1;
}

/* One complete request head of `length` bytes (ending in CRLF CRLF) at the buffer's start:
   choose the response. */
static void answer(struct connection *connection, u32 length) {
    const char *head = connection->request, *end = head + length;
    const char *line_end = head;
    while (line_end + 1 < end && !(line_end[0] == '\r' && line_end[1] == '\n')) line_end++;
    /* request line: METHOD SP TARGET SP HTTP/1.x */
    const char *method_end = head;
    while (method_end < line_end && *method_end != ' ') method_end++;
    const char *target = method_end + 1;
    const char *target_end = target;
    while (target_end < line_end && *target_end != ' ') target_end++;
    const char *version = target_end + 1;
    counters.requests++;
    int version_ok = version + 8 == line_end && version[0] == 'H' && version[1] == 'T' &&
                     version[2] == 'T' && version[3] == 'P' && version[4] == '/' &&
                     version[5] == '1' && version[6] == '.' &&
                     (version[7] == '0' || version[7] == '1');
    if (method_end == head || target >= line_end || target == target_end || *target != '/' ||
        !version_ok) {
        connection->close_after = 1;
        start_text(connection, 400, "Bad Request", bad_request_page, sizeof bad_request_page - 1);
        return;
    }
    connection->close_after = version[7] == '0' || connection->peer_closed;
    /* header lines */
    const char *line = line_end + 2;
    while (line + 2 <= end) {
        const char *next = line;
        while (next + 1 < end && !(next[0] == '\r' && next[1] == '\n')) next++;
        if (next == line) break;                       /* the empty line */
        const char *value;
        if (header_is(line, next, "connection:", &value)) {
            if (value_is(value, next, "close")) connection->close_after = 1;
            else if (value_is(value, next, "keep-alive")) connection->close_after = 0;
        } else if (header_is(line, next, "content-length:", &value)) {
            if (!value_is(value, next, "0")) {
                connection->close_after = 1;           /* bodies are not accepted */
                start_text(connection, 400, "Bad Request", bad_request_page,
                           sizeof bad_request_page - 1);
                return;
            }
        } else if (header_is(line, next, "transfer-encoding:", &value)) {
            connection->close_after = 1;
            start_text(connection, 400, "Bad Request", bad_request_page,
                       sizeof bad_request_page - 1);
            return;
        }
        line = next + 2;
    }
    u32 method_length = (u32)(method_end - head);
    if (!(method_length == 3 && head[0] == 'G' && head[1] == 'E' && head[2] == 'T')) {
        start_text(connection, 405, "Method Not Allowed", method_page, sizeof method_page - 1);
        return;
    }
    u32 count = 0;
    int bytes = parse_bytes_path(target, target_end, &count);
    if (target_end - target == 1) {
        start_response(connection, 200, "OK", BODY_TEXT, index_page, sizeof index_page - 1,
                       "text/html; charset=utf-8");
    } else if (bytes == 1) {
        start_response(connection, 200, "OK", BODY_PATTERN, 0, count,
                       "application/octet-stream");
    } else if (bytes < 0) {
        start_text(connection, 400, "Bad Request", range_page, sizeof range_page - 1);
    } else {
        start_text(connection, 404, "Not Found", not_found_page, sizeof not_found_page - 1);
    }
}

static void drop_pending(struct connection *connection) {
    if (connection->pending) pbuf_free(connection->pending);
    connection->pending = NULL;
    connection->pending_offset = 0;
}

/* Move received bytes into the request buffer as far as it has room; the window reopens
   (tcp_recved) only for bytes taken, so what waits here is bounded by the TCP window. */
static void take_pending(struct connection *connection) {
    while (connection->pending && connection->request_length < REQUEST_HEAD_LIMIT) {
        u32 available = connection->pending->tot_len - connection->pending_offset;
        u32 room = REQUEST_HEAD_LIMIT - connection->request_length;
        u32 count = available < room ? available : room;
        pbuf_copy_partial(connection->pending, connection->request + connection->request_length,
                          (u16_t)count, (u16_t)connection->pending_offset);
        connection->request_length += count;
        connection->pending_offset += count;
        tcp_recved(connection->pcb, (u16_t)count);
        if (connection->pending_offset == connection->pending->tot_len) drop_pending(connection);
    }
}

static void release(struct connection *connection) {
    struct tcp_pcb *pcb = connection->pcb;
    drop_pending(connection);
    if (pcb) {
        tcp_arg(pcb, NULL);
        tcp_recv(pcb, NULL);
        tcp_sent(pcb, NULL);
        tcp_err(pcb, NULL);
        tcp_poll(pcb, NULL, 0);
    }
    connection->pcb = NULL;
    connection->in_use = 0;
}

static void close_connection(struct connection *connection) {
    struct tcp_pcb *pcb = connection->pcb;
    tcp_recv(pcb, NULL);
    if (tcp_close(pcb) != ERR_OK) {
        connection->closing = 1;                       /* out of memory: poll retries */
        return;
    }
    release(connection);
}

/* Close after a response without losing it: a close with unread input makes TCP send a
   reset, which can overtake the response (the peer then sees "connection reset" instead of
   our 4xx). So shut down our side only (FIN after the queued data), read and drop whatever
   still arrives, and close for good at the peer's FIN or after DRAIN_TIMEOUT_TICKS. */
static void finish_connection(struct connection *connection) {
    struct tcp_pcb *pcb = connection->pcb;
    if (connection->pending) {
        tcp_recved(pcb, (u16_t)(connection->pending->tot_len - connection->pending_offset));
        drop_pending(connection);
    }
    connection->request_length = 0;
    if (connection->peer_closed || tcp_shutdown(pcb, 0, 1) != ERR_OK) {
        close_connection(connection);
        return;
    }
    connection->draining = 1;
    connection->drain_ticks = 0;
}

/* Queue as much of the response as the send buffer takes. Returns 1 when all of it is
   queued. */
static int send_response(struct connection *connection) {
    struct tcp_pcb *pcb = connection->pcb;
    while (connection->head_sent < connection->head_length) {
        u32 room = tcp_sndbuf(pcb);
        u32 left = connection->head_length - connection->head_sent;
        if (room < left) return 0;                      /* the head goes in one piece */
        if (tcp_write(pcb, connection->head, (u16_t)left, TCP_WRITE_FLAG_COPY |
                      (connection->body_length ? TCP_WRITE_FLAG_MORE : 0)) != ERR_OK) return 0;
        connection->head_sent = connection->head_length;
    }
    while (connection->body_sent < connection->body_length) {
        u32 room = tcp_sndbuf(pcb);
        u32 left = connection->body_length - connection->body_sent;
        u32 chunk = left < BODY_CHUNK ? left : BODY_CHUNK;
        if (chunk > room) chunk = room;
        if (chunk == 0 || tcp_sndqueuelen(pcb) >= TCP_SND_QUEUELEN) return 0;
        const void *data = connection->body_kind == BODY_PATTERN
            ? (const void *)(pattern + connection->body_sent % PATTERN_MODULUS)
            : (const void *)(connection->text + connection->body_sent);
        u8_t flags = chunk < left ? TCP_WRITE_FLAG_MORE : 0;
        /* no copy: the page texts are constant and the pattern never changes */
        if (tcp_write(pcb, data, (u16_t)chunk, flags) != ERR_OK) return 0;
        connection->body_sent += chunk;
    }
    return 1;
}

/* Answer every complete request in the buffer while the send buffer has room. */
static void progress(struct connection *connection) {
    for (int rounds = 0; rounds < CONNECTION_LIMIT && !connection->closing &&
                         !connection->draining; rounds++) {
        if (connection->responding) {
            int done = send_response(connection);
            tcp_output(connection->pcb);
            if (!done) return;
            connection->responding = 0;
            if (connection->close_after) {
                finish_connection(connection);
                return;
            }
        }
        take_pending(connection);
        /* the next request head, if complete */
        u32 length = 0;
        for (u32 i = 3; i < connection->request_length; i++) {
            const char *at = connection->request + i - 3;
            if (at[0] == '\r' && at[1] == '\n' && at[2] == '\r' && at[3] == '\n') {
                length = i + 1;
                break;
            }
        }
        if (length == 0) {
            if (connection->request_length >= REQUEST_HEAD_LIMIT) {
                connection->close_after = 1;
                connection->request_length = 0;
                start_text(connection, 431, "Request Header Fields Too Large", too_large_page,
                           sizeof too_large_page - 1);
                continue;
            }
            if (connection->peer_closed) close_connection(connection);
            return;
        }
        answer(connection, length);
        u32 rest = connection->request_length - length;
        for (u32 i = 0; i < rest; i++) connection->request[i] = connection->request[length + i];
        connection->request_length = rest;
    }
}

static err_t on_sent(void *argument, struct tcp_pcb *pcb, u16_t length) {
    (void)pcb; (void)length;
    struct connection *connection = argument;
    if (connection == NULL) return ERR_OK;
    connection->idle_ticks = 0;
    progress(connection);
    return ERR_OK;
}

static err_t on_receive(void *argument, struct tcp_pcb *pcb, struct pbuf *data, err_t error) {
    struct connection *connection = argument;
    if (connection == NULL) {
        if (data) pbuf_free(data);
        return ERR_OK;
    }
    if (connection->draining) {
        if (data == NULL) {
            close_connection(connection);
        } else {
            tcp_recved(pcb, data->tot_len);
            pbuf_free(data);
        }
        return ERR_OK;
    }
    if (error != ERR_OK) {
        if (data) pbuf_free(data);
        close_connection(connection);
        return ERR_OK;
    }
    if (data == NULL) {
        connection->peer_closed = 1;                    /* answer what is complete, then close */
    } else if (connection->pending) {
        pbuf_cat(connection->pending, data);
    } else {
        connection->pending = data;
        connection->pending_offset = 0;
    }
    connection->idle_ticks = 0;
    progress(connection);
    return ERR_OK;
}

static void on_error(void *argument, err_t error) {
    (void)error;
    struct connection *connection = argument;
    if (connection == NULL) return;
    connection->pcb = NULL;                             /* lwIP has freed it already */
    drop_pending(connection);
    connection->in_use = 0;
}

static err_t on_poll(void *argument, struct tcp_pcb *pcb) {
    struct connection *connection = argument;
    if (connection == NULL) {
        tcp_abort(pcb);
        return ERR_ABRT;
    }
    if (connection->closing) {
        if (tcp_close(pcb) == ERR_OK) release(connection);
        return ERR_OK;
    }
    if ((connection->draining && ++connection->drain_ticks > DRAIN_TIMEOUT_TICKS) ||
        ++connection->idle_ticks > IDLE_TIMEOUT_TICKS) {
        release(connection);
        tcp_abort(pcb);
        return ERR_ABRT;
    }
    progress(connection);
    return ERR_OK;
}

static err_t on_accept(void *argument, struct tcp_pcb *pcb, err_t error) {
    (void)argument;
    if (error != ERR_OK || pcb == NULL) return ERR_VAL;
    struct connection *connection = NULL;
    for (int i = 0; i < CONNECTION_LIMIT; i++) {
        if (!connections[i].in_use) { connection = &connections[i]; break; }
    }
    if (connection == NULL) {
        counters.refused++;
        tcp_abort(pcb);
        return ERR_ABRT;
    }
    connection->in_use = 1;
    connection->pcb = pcb;
    connection->close_after = 0;
    connection->closing = 0;
    connection->idle_ticks = 0;
    connection->request_length = 0;
    connection->responding = 0;
    connection->peer_closed = 0;
    connection->draining = 0;
    connection->drain_ticks = 0;
    connection->pending = NULL;
    connection->pending_offset = 0;
    counters.connections++;
    tcp_arg(pcb, connection);
    tcp_recv(pcb, on_receive);
    tcp_sent(pcb, on_sent);
    tcp_err(pcb, on_error);
    tcp_poll(pcb, on_poll, POLL_INTERVAL);
    tcp_nagle_disable(pcb);
    return ERR_OK;
}

int http_server_start(u16 port) {
    for (u32 i = 0; i < sizeof pattern; i++)
        pattern[i] = (u8)((i * PATTERN_MULTIPLIER) % PATTERN_MODULUS);
    struct tcp_pcb *pcb = tcp_new_ip_type(IPADDR_TYPE_V4);
    if (pcb == NULL) return -1;
    if (tcp_bind(pcb, IP4_ADDR_ANY, port) != ERR_OK) {
        tcp_close(pcb);
        return -2;
    }
    struct tcp_pcb *listener = tcp_listen_with_backlog(pcb, CONNECTION_LIMIT);
    if (listener == NULL) {
        tcp_close(pcb);
        return -3;
    }
    tcp_accept(listener, on_accept);
    return 0;
}
