/* SPDX-License-Identifier: Apache-2.0 */
/* The metrics endpoint: parsing metrics.listen, binding the socket ourselves
 * (so "address in use" reaches the user as a message, not a log line of
 * the HTTP library), and a libmicrohttpd daemon with one internal thread
 * that answers GET /metrics and /healthz through a handler table. */
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/util.h"
#include "metrics/http.h"
#include "sluice/common.h"

struct sl__http {
  struct MHD_Daemon *d;
  int port;
  sl__http_handler fn;
  void *opaque;
};

static bool is_loopback(const struct sockaddr_storage *ss) {
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
    return (ntohl(a->sin_addr.s_addr) >> 24) == 127;
  }
  const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
  if (IN6_IS_ADDR_LOOPBACK(&a->sin6_addr))
    return true;
  return IN6_IS_ADDR_V4MAPPED(&a->sin6_addr) && a->sin6_addr.s6_addr[12] == 127;
}

int sl__http_parse_listen(const char *value, bool allow_remote,
                          sl__listen_addr *out, char *err, size_t errlen) {
  memset(out, 0, sizeof(*out));
  if (!value || strcmp(value, "off") == 0)
    return 0;
  const char *example = "expected host:port, e.g. 127.0.0.1:9249, "
                        "[::1]:9249 or localhost:9249, or off";
  char host[128];
  const char *colon;
  if (value[0] == '[') {
    const char *close = strchr(value, ']');
    if (!close || close[1] != ':' ||
        (size_t)(close - value - 1) >= sizeof(host))
      goto bad;
    snprintf(host, sizeof(host), "%.*s", (int)(close - value - 1), value + 1);
    colon = close + 1;
  } else {
    colon = strrchr(value, ':');
    if (!colon || colon == value || (size_t)(colon - value) >= sizeof(host) ||
        memchr(value, ':', (size_t)(colon - value)))
      goto bad;
    snprintf(host, sizeof(host), "%.*s", (int)(colon - value), value);
  }
  const char *p = colon + 1;
  long port = 0;
  if (!*p)
    goto bad;
  for (; *p; p++) {
    if (*p < '0' || *p > '9' || (port = port * 10 + (*p - '0')) > 65535) {
      sl__errf(err, errlen,
               "metrics.listen: \"%s\" has an invalid port (0..65535; 0 picks "
               "a free port)",
               value);
      return SL_ERR_CONF;
    }
  }
  struct sockaddr_in *a4 = (struct sockaddr_in *)&out->ss;
  struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&out->ss;
  if (strcmp(host, "localhost") == 0) {
    a4->sin_family = AF_INET;
    a4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a4->sin_port = htons((uint16_t)port);
    out->len = sizeof(*a4);
  } else if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)port);
    out->len = sizeof(*a4);
  } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons((uint16_t)port);
    out->len = sizeof(*a6);
  } else {
    sl__errf(err, errlen,
             "metrics.listen: \"%s\": \"%s\" is not an IP address or "
             "localhost (%s)",
             value, host, example);
    return SL_ERR_CONF;
  }
  if (!allow_remote && !is_loopback(&out->ss)) {
    sl__errf(err, errlen,
             "metrics.listen: \"%s\" is not a loopback address; the endpoint "
             "has no authentication, so serving it beyond this host needs "
             "metrics.listen.allow.remote = true",
             value);
    return SL_ERR_CONF;
  }
  snprintf(out->text, sizeof(out->text), "%s", value);
  return 1;
bad:
  sl__errf(err, errlen, "metrics.listen: \"%s\" is not an address (%s)", value,
           example);
  return SL_ERR_CONF;
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
  (void)cls;
  (void)fmt;
  (void)ap; /* errors reach the user through return values */
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn,
                                  const char *url, const char *method,
                                  const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls) {
  (void)version;
  (void)upload;
  (void)con_cls;
  sl__http *h = cls;
  sl__http_reply r = {.status = 200,
                      .content_type = "text/plain; charset=utf-8"};
  if (*upload_size) {
    *upload_size = 0; /* ignore request bodies */
    return MHD_YES;
  }
  if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
    r.status = 405;
    r.body = sl__strdup("method not allowed\n");
  } else {
    sl__http_req req = {url, conn};
    h->fn(&req, &r, h->opaque);
  }
  if (!r.body)
    r.len = 0;
  else if (!r.len)
    r.len = strlen(r.body);
  struct MHD_Response *resp = MHD_create_response_from_buffer(
      r.len, r.body ? r.body : (void *)"",
      r.body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
  if (!resp) {
    free(r.body);
    free(r.location);
    return MHD_NO;
  }
  MHD_add_response_header(resp, "Content-Type", r.content_type);
  MHD_add_response_header(resp, "Cache-Control", "no-store");
  if (r.challenge)
    MHD_add_response_header(resp, "WWW-Authenticate", r.challenge);
  if (r.location)
    MHD_add_response_header(resp, "Location", r.location);
  if (r.retry_after)
    MHD_add_response_header(resp, "Retry-After", r.retry_after);
  free(r.location);
  enum MHD_Result rc = MHD_queue_response(conn, (unsigned)r.status, resp);
  MHD_destroy_response(resp);
  return rc;
}

const char *sl__http_arg(const sl__http_req *req, const char *name,
                         size_t *len) {
  const char *v = NULL;
  size_t n = 0;
  if (MHD_lookup_connection_value_n(req->conn, MHD_GET_ARGUMENT_KIND, name,
                                    strlen(name), &v, &n) != MHD_YES)
    return NULL;
  if (len)
    *len = v ? n : 0;
  return v ? v : "";
}

const char *sl__http_header(const sl__http_req *req, const char *name) {
  return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

int sl__http_start(const sl__listen_addr *addr, sl__http_handler fn,
                   void *opaque, sl__http **out, char *err, size_t errlen) {
  *out = NULL;
  int fd = socket(addr->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    sl__errf(err, errlen, "metrics.listen: cannot create a socket: %s",
             strerror(errno));
    return SL_ERR_IO;
  }
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(fd, (const struct sockaddr *)&addr->ss, addr->len) ||
      listen(fd, 64)) {
    int e = errno;
    close(fd);
    sl__errf(err, errlen, "metrics.listen: cannot listen on %s: %s", addr->text,
             strerror(e));
    return SL_ERR_IO;
  }
  struct sockaddr_storage bound;
  socklen_t blen = sizeof(bound);
  getsockname(fd, (struct sockaddr *)&bound, &blen);
  sl__http *h = calloc(1, sizeof(*h));
  if (!h) {
    close(fd);
    sl__errf(err, errlen, "out of memory");
    return SL_ERR_NOMEM;
  }
  h->fn = fn;
  h->opaque = opaque;
  h->port = ntohs(bound.ss_family == AF_INET
                      ? ((struct sockaddr_in *)&bound)->sin_port
                      : ((struct sockaddr_in6 *)&bound)->sin6_port);
  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO;
  if (addr->ss.ss_family == AF_INET6)
    flags |= MHD_USE_IPv6;
  h->d = MHD_start_daemon(
      flags, 0, NULL, NULL, on_request, h, MHD_OPTION_EXTERNAL_LOGGER, mhd_log,
      NULL, MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_LIMIT,
      (unsigned)32, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
      MHD_OPTION_END);
  if (!h->d) {
    close(fd);
    free(h);
    sl__errf(err, errlen, "metrics.listen: cannot start the HTTP server on %s",
             addr->text);
    return SL_ERR_IO;
  }
  *out = h;
  return SL_OK;
}

int sl__http_port(const sl__http *h) {
  return h ? h->port : SL_ERR_STATE;
}

void sl__http_stop(sl__http *h) {
  if (!h)
    return;
  MHD_stop_daemon(h->d); /* also closes the listening socket */
  free(h);
}
