/* SPDX-License-Identifier: Apache-2.0 */
/* A minimal blocking HTTP/1.0 GET over loopback for tests of the metrics
 * endpoint and of a Prometheus server: status code and body, nothing more.
 * Header-only like testutil.h. */
#ifndef SL_TEST_HTTPGET_H
#define SL_TEST_HTTPGET_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* GETs path from 127.0.0.1:port. Returns the status code (and the body in
 * *body, malloc'ed, when body is not NULL), or -1 when the connection
 * fails. */
static inline int hg_get_hdr(int port, const char *path, const char *header,
                             char **body);
static inline int hg_get_head(int port, const char *path, const char *header,
                              char **head, char **body);
static inline int hg_get(int port, const char *path, char **body) {
  return hg_get_hdr(port, path, NULL, body);
}

/* hg_get with one more request header line (e.g. "Authorization: Bearer
 * x"), or none when header is NULL. */
static inline int hg_get_hdr(int port, const char *path, const char *header,
                             char **body) {
  return hg_get_head(port, path, header, NULL, body);
}

/* hg_get_hdr that also returns the status line and header lines in *head
 * (malloc'ed) when head is not NULL. */
static inline int hg_get_head(int port, const char *path, const char *header,
                              char **head, char **body) {
  if (head)
    *head = NULL;
  if (body)
    *body = NULL;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0)
    return -1;
  struct timeval tv = {10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&a, sizeof(a))) {
    close(fd);
    return -1;
  }
  char req[2048];
  int n = snprintf(req, sizeof(req),
                   "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n%s%s\r\n", path,
                   header ? header : "", header ? "\r\n" : "");
  if (write(fd, req, (size_t)n) != n) {
    close(fd);
    return -1;
  }
  size_t cap = 1 << 16, len = 0;
  char *buf = malloc(cap);
  ssize_t r;
  while ((r = read(fd, buf + len, cap - len - 1)) > 0) {
    len += (size_t)r;
    if (cap - len < 2) {
      cap *= 2;
      buf = realloc(buf, cap);
    }
  }
  close(fd);
  buf[len] = '\0';
  int status = -1;
  if (sscanf(buf, "HTTP/%*s %d", &status) != 1) {
    free(buf);
    return -1;
  }
  char *sep = strstr(buf, "\r\n\r\n");
  if (head)
    *head = strndup(buf, sep ? (size_t)(sep - buf) : len);
  if (body)
    *body = strdup(sep ? sep + 4 : "");
  free(buf);
  return status;
}

static inline double hg_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline void hg_nap(void) {
  struct timespec ts = {0, 5 * 1000 * 1000};
  nanosleep(&ts, NULL);
}

/* A loopback port that was free a moment ago (bind to port 0). */
static inline int hg_free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  if (bind(fd, (struct sockaddr *)&a, sizeof(a)) ||
      getsockname(fd, (struct sockaddr *)&a, &len)) {
    close(fd);
    return -1;
  }
  close(fd);
  return ntohs(a.sin_port);
}

#endif
