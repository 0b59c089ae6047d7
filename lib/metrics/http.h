/* SPDX-License-Identifier: Apache-2.0 */
/* The HTTP side of metrics: the metrics.listen address and a small server
 * (libmicrohttpd, one internal thread) that hands each GET to a handler.
 * Kept apart from the registry so that the rest of the metrics layer never
 * sees the HTTP library. */
#ifndef SL_METRICS_HTTP_H
#define SL_METRICS_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

typedef struct sl__listen_addr {
  struct sockaddr_storage ss;
  socklen_t len;
  char text[128]; /* as configured, for messages */
} sl__listen_addr;

/* Parses metrics.listen: "off" (returns 0), or host:port where host is an
 * IPv4 address, a bracketed IPv6 address or "localhost" and port 0..65535
 * (0 = any free port) (returns 1, *out filled). Non-loopback hosts are
 * refused unless allow_remote. SL_ERR_CONF with a message otherwise. */
int sl__http_parse_listen(const char *value, bool allow_remote,
                          sl__listen_addr *out, char *err, size_t errlen);

/* What a handler answers: body is malloc'ed (the server frees it); len 0
 * means strlen(body). */
typedef struct sl__http_reply {
  int status;
  char *body;
  size_t len;
  const char *content_type;
  /* Set with status 401: the WWW-Authenticate challenge ("Bearer"). */
  const char *challenge;
  /* Set with a redirect (3xx): the Location header, malloc'ed (the
   * server frees it). */
  char *location;
  /* Set with 503: the Retry-After header (seconds). */
  const char *retry_after;
} sl__http_reply;

/* A request as the handler sees it: the URL path (percent-decoded) and,
 * through the functions below, its query arguments and headers. */
typedef struct sl__http_req {
  const char *path;
  void *conn; /* the server's connection */
} sl__http_req;

/* The decoded value of query argument name, or NULL when absent; *len
 * (which may be NULL) is its length (a value may hold NUL bytes). */
const char *sl__http_arg(const sl__http_req *req, const char *name,
                         size_t *len);
/* The value of header name (case-insensitive), or NULL. */
const char *sl__http_header(const sl__http_req *req, const char *name);

/* Called on the server thread for every GET/HEAD. */
typedef void (*sl__http_handler)(const sl__http_req *req, sl__http_reply *r,
                                 void *opaque);

typedef struct sl__http sl__http;

/* Binds addr and starts serving. SL_ERR_IO with a message (e.g. "Address
 * already in use") or SL_ERR_NOMEM on failure. */
int sl__http_start(const sl__listen_addr *addr, sl__http_handler fn,
                   void *opaque, sl__http **out, char *err, size_t errlen);
/* The bound port (the real one when 0 was asked for). */
int sl__http_port(const sl__http *h);
/* Stops serving and waits for the server thread. NULL is a no-op. */
void sl__http_stop(sl__http *h);

#endif
