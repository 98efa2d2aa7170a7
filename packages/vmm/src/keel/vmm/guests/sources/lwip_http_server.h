/* The http-lwip guest's HTTP/1.1 server on lwIP's raw TCP API (see lwip_http_server.c). */
#ifndef KEEL_LWIP_HTTP_SERVER_H
#define KEEL_LWIP_HTTP_SERVER_H

#include "guest.h"

struct http_server_counters { u64 connections, requests, responses, refused; };

/* Listen on `port` of every address: 0, or <0 if lwIP had no memory or the port is taken. */
int http_server_start(u16 port);
const struct http_server_counters *http_server_counters(void);

#endif
