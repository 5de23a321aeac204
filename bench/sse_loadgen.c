/*
 * SSE load generator in C: the same measurement as bench/sse_loadgen.py, at a fraction of
 * its CPU per event, so the gateway under test is the only thing that saturates.
 *
 * One process, one thread, epoll, libc only. It opens N HTTP/1.1 connections in batches,
 * waits for each client's first event, then measures one window: per update it records
 * receive time - update["timestamp"] in a 0.1 ms histogram and counts updates whose
 * timestamp falls in the window, per client. A direct Redis subscriber (RESP, SUBSCRIBE)
 * counts what was offered on the channel in the same window, and its own latency.
 *
 * Parsing is complete rather than tuned to one server: the response head, chunked transfer
 * coding split anywhere, and SSE as the HTML standard defines it (CR, LF or CRLF line ends,
 * comments, several data: lines joined by LF, an optional space after the colon). Each event's
 * data is scanned as JSON; every top-level member's "timestamp" is one update.
 *
 * Progress goes to stdout as JSON lines ({"event": "ramped" | "window_start" | "window_end" |
 * "result", ...}), the same lines and the same result fields as the Python generator, so
 * bench/gateway_bench.py reads either. Logs go to stderr. Built by bench/cloadgen.py:
 *
 *     gcc -O2 -o sse_loadgen bench/sse_loadgen.c -lm
 *     ./sse_loadgen --url http://127.0.0.1:8000/api/stream/prices --clients 3000 \
 *         --window 10 --redis-url redis://127.0.0.1:6379/0
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUCKETS_PER_S 10000                /* latency histogram resolution: 0.1 ms */
#define MAX_BUCKET (60 * BUCKETS_PER_S)    /* latencies above 60 s land in the last bucket */
#define READ_BYTES (256 * 1024)            /* one recv() per ready socket per loop */
#define MAX_HEAD_BYTES (64 * 1024)
#define MAX_EVENT_BYTES (16 * 1024 * 1024) /* a client buffering more is broken: dropped */
#define MAX_UPDATES 65536                  /* per event */
#define ERR_LEN 61                         /* the Python summary keys errors by [:60] */

/* ---------------------------------------------------------------- options, clock, log */

typedef struct {
    const char *url, *redis_url, *channel;
    long clients, batch, stall_batches, tickers;
    double batch_pause, batch_timeout, ramp_timeout, settle, window, grace, rate, coalesce_ms;
} Options;

static Options opt = {
    .channel = "pricefeed:prices", .clients = 100, .batch = 250, .stall_batches = 3,
    .tickers = 10, .batch_timeout = 15.0, .ramp_timeout = 180.0, .settle = 2.0,
    .window = 10.0, .grace = 2.0, .rate = 2.0, .coalesce_ms = 1.0,
};

static volatile sig_atomic_t stop_signal = 0;

static double wall_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static double mono_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void logmsg(const char *level, const char *fmt, ...) {
    char stamp[32];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    localtime_r(&ts.tv_sec, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S", &tm);
    fprintf(stderr, "%s,%03ld loadgen %s ", stamp, ts.tv_nsec / 1000000, level);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static void die(const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    logmsg("ERROR", "%s", msg);
    exit(1);
}

/* ---------------------------------------------------------------- latency window */

typedef struct {
    double start, end;
    uint64_t *hist; /* MAX_BUCKET + 1 buckets */
} Window;

static Window *window_new(void) {
    Window *w = calloc(1, sizeof *w);
    if (!w || !(w->hist = calloc(MAX_BUCKET + 1, sizeof *w->hist)))
        die("out of memory");
    w->start = w->end = INFINITY;
    return w;
}

/* Histogram each update inside the window; how many were inside. */
static long window_record(Window *w, const double *ts, int n, double now) {
    long inside = 0;
    for (int i = 0; i < n; i++) {
        if (w->start <= ts[i] && ts[i] < w->end) {
            inside++;
            double b = (now - ts[i]) * BUCKETS_PER_S; /* early clocks count as 0 */
            w->hist[b < 0 ? 0 : b >= MAX_BUCKET ? MAX_BUCKET : (long)b]++;
        }
    }
    return inside;
}

/* The q-quantile (0..1) in ms, as bench/sse_client.py's percentile_ms; NAN when empty. */
static double percentile_ms(const uint64_t *hist, double q) {
    uint64_t total = 0, seen = 0;
    for (long b = 0; b <= MAX_BUCKET; b++)
        total += hist[b];
    if (total == 0)
        return NAN;
    double rank = q * (double)(total - 1);
    for (long b = 0; b <= MAX_BUCKET; b++) {
        seen += hist[b];
        if ((double)seen > rank)
            return (b + 0.5) * 1000.0 / BUCKETS_PER_S;
    }
    return NAN;
}

/* ---------------------------------------------------------------- JSON: the timestamps */

static const char *skip_ws(const char *p, const char *e) {
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* p at '"': just past the closing quote, or NULL. */
static const char *skip_string(const char *p, const char *e) {
    for (p++; p < e; p++) {
        const char *q = memchr(p, '"', (size_t)(e - p));
        if (!q)
            return NULL;
        const char *b = q; /* an odd run of backslashes escapes the quote */
        while (b > p && b[-1] == '\\')
            b--;
        if ((q - b) % 2 == 0)
            return q + 1;
        p = q;
    }
    return NULL;
}

/* One JSON number into *out; just past it, or NULL. */
static const char *parse_number(const char *p, const char *e, double *out) {
    char tmp[64];
    size_t n = 0;
    while (p + n < e && n < sizeof tmp - 1 &&
           ((p[n] >= '0' && p[n] <= '9') || p[n] == '.' || p[n] == '-' || p[n] == '+' ||
            p[n] == 'e' || p[n] == 'E'))
        n++;
    if (n == 0 || n == sizeof tmp - 1)
        return NULL;
    memcpy(tmp, p, n);
    tmp[n] = 0;
    char *end;
    *out = strtod(tmp, &end);
    if (end != tmp + n || !isfinite(*out))
        return NULL;
    return p + n;
}

/* Any JSON value; just past it, or NULL. Nesting is counted, strings skipped whole. */
static const char *skip_value(const char *p, const char *e) {
    if (p >= e)
        return NULL;
    if (*p == '"')
        return skip_string(p, e);
    if (*p != '{' && *p != '[') {
        const char *s = p;
        while (p < e && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\t' &&
               *p != '\r' && *p != '\n')
            p++;
        return p > s ? p : NULL;
    }
    int depth = 0;
    while (p < e) {
        char c = *p;
        if (c == '"') {
            if (!(p = skip_string(p, e)))
                return NULL;
            continue;
        }
        if (c == '{' || c == '[')
            depth++;
        else if ((c == '}' || c == ']') && --depth == 0)
            return p + 1;
        p++;
    }
    return NULL;
}

/* The "timestamp" of one PriceUpdate object at p ('{'); just past the object, or NULL. */
static const char *update_timestamp(const char *p, const char *e, double *ts) {
    int found = 0;
    p = skip_ws(p + 1, e);
    if (p < e && *p == '}')
        return NULL; /* no timestamp */
    while (p < e) {
        if (*p != '"')
            return NULL;
        const char *k = p + 1, *ke = skip_string(p, e);
        if (!ke)
            return NULL;
        p = skip_ws(ke, e);
        if (p >= e || *p != ':')
            return NULL;
        p = skip_ws(p + 1, e);
        if (ke - 1 - k == 9 && memcmp(k, "timestamp", 9) == 0) {
            if (!(p = parse_number(p, e, ts)))
                return NULL;
            found = 1;
        } else if (!(p = skip_value(p, e))) {
            return NULL;
        }
        p = skip_ws(p, e);
        if (p < e && *p == ',') {
            p = skip_ws(p + 1, e);
        } else if (p < e && *p == '}') {
            return found ? p + 1 : NULL;
        } else {
            return NULL;
        }
    }
    return NULL;
}

/* Timestamps of every update in one event's {TICKER: PriceUpdate} object; -1 on junk. */
static int extract_timestamps(const char *p, size_t len, double *out, int max) {
    const char *e = p + len;
    int n = 0;
    p = skip_ws(p, e);
    if (p >= e || *p != '{')
        return -1;
    p = skip_ws(p + 1, e);
    if (p < e && *p == '}')
        return skip_ws(p + 1, e) == e ? 0 : -1;
    while (p < e) {
        if (*p != '"' || !(p = skip_string(p, e)))
            return -1;
        p = skip_ws(p, e);
        if (p >= e || *p != ':')
            return -1;
        p = skip_ws(p + 1, e);
        if (p >= e || *p != '{' || n >= max || !(p = update_timestamp(p, e, &out[n])))
            return -1;
        n++;
        p = skip_ws(p, e);
        if (p < e && *p == ',') {
            p = skip_ws(p + 1, e);
        } else if (p < e && *p == '}') {
            return skip_ws(p + 1, e) == e ? n : -1;
        } else {
            return -1;
        }
    }
    return -1;
}

static double timestamps[MAX_UPDATES];
static long unparsable = 0;

/* Parsing is memoized on the exact data bytes, as in bench/sse_client.py: a fan-out
 * gateway sends the same bytes to every client, so each distinct payload is scanned once.
 * A direct-mapped table of recent payloads; a hit is verified byte for byte (memcmp), so
 * the result is the parse's. Profiled (perf, 1,000 clients x 10 Hz): strtod and the scan
 * were over a third of this process's CPU before. */
#define MEMO_SLOTS 256
typedef struct {
    char *data;
    size_t len;
    int n; /* timestamps, or -1: unparsable */
    double *ts;
} Memo;
static Memo memo[MEMO_SLOTS];

/* A cheap hash of length and up to 16 words spread over the payload (memcmp decides). */
static size_t memo_slot(const char *p, size_t len) {
    uint64_t h = len * 0x9E3779B97F4A7C15ull, w;
    size_t step = len >= 128 ? (len - 8) / 15 : 8;
    for (size_t i = 0; i + 8 <= len && i < 16 * step; i += step) {
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdull;
        h ^= h >> 32;
    }
    return (size_t)(h % MEMO_SLOTS);
}

/* How many timestamps one payload holds (*out: them); -1 on junk, warned about. */
static int parse_or_warn(const char *what, const char *data, size_t len, const double **out) {
    Memo *m = &memo[memo_slot(data, len)];
    if (m->data && m->len == len && memcmp(m->data, data, len) == 0) {
        unparsable += m->n < 0;
        *out = m->ts;
        return m->n;
    }
    int n = extract_timestamps(data, len, timestamps, MAX_UPDATES);
    if (n < 0 && unparsable++ < 20)
        logmsg("WARNING", "unparsable %s: %.*s", what, (int)(len < 80 ? len : 80), data);
    char *copy = realloc(m->data, len ? len : 1);
    double *ts = realloc(m->ts, (size_t)(n > 0 ? n : 1) * sizeof *ts);
    if (!copy || !ts)
        die("out of memory");
    memcpy(copy, data, len);
    if (n > 0)
        memcpy(ts, timestamps, (size_t)n * sizeof *ts);
    *m = (Memo){copy, len, n, ts};
    *out = ts;
    return n;
}

/* ---------------------------------------------------------------- growable buffer */

typedef struct {
    char *p;
    size_t len, cap;
} Buf;

static int buf_append(Buf *b, const char *data, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return -1;
        b->p = p, b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
    return 0;
}

static void buf_consume(Buf *b, size_t n) {
    memmove(b->p, b->p + n, b->len - n);
    b->len -= n;
}

static void buf_free(Buf *b) {
    free(b->p);
    b->p = NULL, b->len = b->cap = 0;
}

/* ---------------------------------------------------------------- one SSE client */

enum { C_IDLE, C_CONNECTING, C_HEAD, C_BODY, C_CLOSED };
enum { CH_SIZE, CH_EXT, CH_SIZE_LF, CH_DATA, CH_DATA_CR, CH_DATA_LF, CH_TRAILER, CH_END };

typedef struct {
    int fd, state;
    int first_event; /* the Python generator's first_event future: done */
    int closed;      /* the connection ended (dropped if after the first event) */
    int chunked, ch_state, ch_digits, skip_lf, trailer_empty;
    uint64_t chunk_left;
    size_t sent;
    long in_window, events;
    char error[ERR_LEN]; /* empty: none */
    Buf buf;             /* the response head, then SSE bytes of an unfinished event */
} Client;

static Client *clients;
static long n_clients = 0;
static int epfd;
static char request[2048];
static size_t request_len;
static struct sockaddr_storage server_addr;
static socklen_t server_addr_len;
static Window *window;
static Buf data_lines; /* the data: lines of the event being dispatched */

static void set_error(Client *c, const char *fmt, ...) {
    if (c->error[0] || c->first_event)
        return; /* the first reason wins; after the first event a close is a drop */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->error, sizeof c->error, fmt, ap);
    va_end(ap);
}

static void client_close(Client *c, const char *reason) {
    if (c->state == C_CLOSED || c->state == C_IDLE)
        return;
    if (reason)
        set_error(c, "%s", reason);
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    c->state = C_CLOSED;
    c->closed = 1;
    buf_free(&c->buf);
}

static void client_open(Client *c) {
    memset(c, 0, sizeof *c);
    c->fd = socket(server_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        snprintf(c->error, sizeof c->error, "OSError: %s", strerror(errno));
        c->state = C_CLOSED;
        return;
    }
    c->state = C_CONNECTING;
    int on = 1;
    setsockopt(c->fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on);
    if (connect(c->fd, (struct sockaddr *)&server_addr, server_addr_len) < 0 &&
        errno != EINPROGRESS) {
        snprintf(c->error, sizeof c->error, "OSError: %s", strerror(errno));
        close(c->fd);
        c->fd = -1;
        c->state = C_CLOSED;
        return;
    }
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0)
        die("epoll_ctl: %s", strerror(errno));
}

/* The SSE event whose data: lines are in data_lines has ended. */
static void dispatch(Client *c, double now) {
    data_lines.len--; /* the LF after the last data line */
    c->events++;
    const double *ts;
    int n = parse_or_warn("event", data_lines.p, data_lines.len, &ts);
    if (n < 0)
        return;
    c->in_window += window_record(window, ts, n, now);
    c->first_event = 1;
}

/* Find the end of the line at p: *next is where the line after it starts. NULL if the line
 * is not complete. A CR as the last byte ends the line; a LF after it is skipped later. */
static const char *line_end(const char *p, const char *e, const char **next, int *cr_last) {
    const char *lf = memchr(p, '\n', (size_t)(e - p));
    const char *stop = lf ? lf : e;
    const char *cr = memchr(p, '\r', (size_t)(stop - p));
    *cr_last = 0;
    if (cr) {
        if (cr + 1 < e) {
            *next = cr[1] == '\n' ? cr + 2 : cr + 1;
        } else {
            *next = e, *cr_last = 1;
        }
        return cr;
    }
    if (!lf)
        return NULL;
    *next = lf + 1;
    return lf;
}

/* Parse SSE lines in p[0:n); dispatch each complete event. Returns the bytes consumed: up
 * to the end of the last complete event (an unfinished one is parsed again when more
 * bytes arrive). */
static size_t sse_parse(Client *c, const char *p, size_t n, double now) {
    const char *s = p, *e = p + n, *done = p;
    if (c->skip_lf && s < e) {
        if (*s == '\n')
            done = ++s;
        c->skip_lf = 0;
    }
    data_lines.len = 0;
    while (s < e) {
        const char *next;
        int cr_last;
        const char *le = line_end(s, e, &next, &cr_last);
        if (!le)
            break;
        if (le == s) { /* a blank line ends the event */
            if (data_lines.len)
                dispatch(c, now);
            data_lines.len = 0;
            done = next;
            c->skip_lf = cr_last;
        } else if (*s != ':') { /* not a comment: a field */
            const char *colon = memchr(s, ':', (size_t)(le - s));
            const char *v = colon ? colon + 1 : le;
            if (colon && v < le && *v == ' ')
                v++;
            if ((colon ? colon : le) - s == 4 && memcmp(s, "data", 4) == 0 &&
                (buf_append(&data_lines, v, (size_t)(le - v)) < 0 ||
                 buf_append(&data_lines, "\n", 1) < 0))
                die("out of memory");
            /* id, event, retry and unknown fields do not change what is measured */
        }
        s = next;
    }
    data_lines.len = 0;
    return (size_t)(done - p);
}

static void sse_feed(Client *c, const char *p, size_t n, double now) {
    if (c->buf.len == 0) {
        size_t used = sse_parse(c, p, n, now);
        if (used < n && buf_append(&c->buf, p + used, n - used) < 0)
            die("out of memory");
    } else {
        if (buf_append(&c->buf, p, n) < 0)
            die("out of memory");
        buf_consume(&c->buf, sse_parse(c, c->buf.p, c->buf.len, now));
    }
    if (c->buf.len > MAX_EVENT_BYTES)
        client_close(c, "event too large");
}

/* Remove the chunked transfer coding from p[0:n) in place; the payload's length, or -1 on
 * a framing error. Sets CH_END at the last chunk. */
static long dechunk(Client *c, char *p, size_t n) {
    char *out = p;
    for (size_t i = 0; i < n;) {
        char ch = p[i];
        switch (c->ch_state) {
        case CH_SIZE: {
            int d = ch >= '0' && ch <= '9' ? ch - '0'
                    : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                    : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;
            if (d >= 0) {
                if (++c->ch_digits > 15)
                    return -1;
                c->chunk_left = c->chunk_left * 16 + (uint64_t)d;
            } else if (c->ch_digits && (ch == ';' || ch == ' ' || ch == '\t')) {
                c->ch_state = CH_EXT;
            } else if (c->ch_digits && ch == '\r') {
                c->ch_state = CH_SIZE_LF;
            } else {
                return -1;
            }
            i++;
            break;
        }
        case CH_EXT: /* chunk extensions: ignored */
            if (ch == '\r')
                c->ch_state = CH_SIZE_LF;
            i++;
            break;
        case CH_SIZE_LF:
            if (ch != '\n')
                return -1;
            i++;
            c->ch_digits = 0;
            c->ch_state = c->chunk_left ? CH_DATA : CH_TRAILER;
            c->trailer_empty = 1;
            break;
        case CH_DATA: {
            size_t take = n - i < c->chunk_left ? n - i : (size_t)c->chunk_left;
            memmove(out, p + i, take);
            out += take, i += take;
            if ((c->chunk_left -= take) == 0)
                c->ch_state = CH_DATA_CR;
            break;
        }
        case CH_DATA_CR:
            if (ch != '\r')
                return -1;
            c->ch_state = CH_DATA_LF, i++;
            break;
        case CH_DATA_LF:
            if (ch != '\n')
                return -1;
            c->ch_state = CH_SIZE, i++;
            break;
        case CH_TRAILER: /* trailer lines until an empty one */
            if (ch == '\n') {
                if (c->trailer_empty) {
                    c->ch_state = CH_END;
                    return out - p;
                }
                c->trailer_empty = 1;
            } else if (ch != '\r') {
                c->trailer_empty = 0;
            }
            i++;
            break;
        default: /* CH_END: nothing may follow */
            return out - p;
        }
    }
    return out - p;
}

static void body(Client *c, char *p, size_t n, double now) {
    if (c->chunked) {
        long m = dechunk(c, p, n);
        if (m < 0) {
            client_close(c, "bad chunked encoding");
            return;
        }
        n = (size_t)m;
    }
    if (n)
        sse_feed(c, p, n, now);
    if (c->chunked && c->ch_state == CH_END && c->state != C_CLOSED)
        client_close(c, "closed by server");
}

/* Bytes before the head is complete: buffer; then the status and the transfer coding. */
static void head(Client *c, char *p, size_t n, double now) {
    if (buf_append(&c->buf, p, n) < 0)
        die("out of memory");
    char *end = memmem(c->buf.p, c->buf.len, "\r\n\r\n", 4);
    if (!end) {
        if (c->buf.len > MAX_HEAD_BYTES)
            client_close(c, "response head too large");
        return;
    }
    *end = 0; /* the head as one string; its first CR ends it */
    int status = 0;
    if (strncmp(c->buf.p, "HTTP/1.", 7) != 0 || sscanf(c->buf.p, "%*s %d", &status) != 1)
        status = 0;
    if (status != 200) {
        char reason[32];
        snprintf(reason, sizeof reason, "HTTP %d", status);
        client_close(c, reason);
        return;
    }
    for (char *line = strstr(c->buf.p, "\r\n"); line; line = strstr(line, "\r\n")) {
        line += 2;
        if (strncasecmp(line, "transfer-encoding:", 18) == 0) {
            char *eol = strstr(line, "\r\n");
            size_t len = eol ? (size_t)(eol - line) : strlen(line);
            c->chunked = memmem(line, len, "chunked", 7) != NULL;
        }
    }
    c->state = C_BODY;
    size_t rest_at = (size_t)(end + 4 - c->buf.p), rest = c->buf.len - rest_at;
    Buf b = c->buf; /* the body starts with a fresh buffer */
    c->buf = (Buf){0};
    if (rest)
        body(c, b.p + rest_at, rest, now);
    buf_free(&b);
}

static char readbuf[READ_BYTES];

/* recv() into readbuf; *now = when the kernel received the last bytes read (SO_TIMESTAMPNS),
 * so that the loop may wake up less often (see run_until) without adding to the latency
 * measured; the wall clock now if the kernel gave no timestamp. */
static ssize_t recv_stamped(int fd, double *now) {
    char control[CMSG_SPACE(sizeof(struct timespec))];
    struct iovec iov = {.iov_base = readbuf, .iov_len = sizeof readbuf};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
                         .msg_controllen = sizeof control};
    ssize_t r = recvmsg(fd, &msg, 0);
    *now = 0;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); r > 0 && cm; cm = CMSG_NXTHDR(&msg, cm)) {
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_TIMESTAMPNS) {
            struct timespec ts;
            memcpy(&ts, CMSG_DATA(cm), sizeof ts);
            *now = (double)ts.tv_sec + ts.tv_nsec / 1e9;
        }
    }
    if (*now == 0)
        *now = wall_now();
    return r;
}

static void client_event(Client *c, uint32_t events) {
    if (c->state == C_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            char reason[ERR_LEN];
            snprintf(reason, sizeof reason, "OSError: %s", strerror(err));
            client_close(c, reason);
            return;
        }
        if (!(events & (EPOLLOUT | EPOLLIN)))
            return;
        c->state = C_HEAD;
    }
    if (c->sent < request_len) {
        ssize_t w = send(c->fd, request + c->sent, request_len - c->sent, MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN) {
            char reason[ERR_LEN];
            snprintf(reason, sizeof reason, "closed: %s", strerror(errno));
            client_close(c, reason);
            return;
        }
        if (w > 0 && (c->sent += (size_t)w) == request_len) {
            struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.ptr = c};
            epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
        }
    }
    if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
        return;
    /* Edge-triggered once streaming: read until a read comes back short (all that had
     * arrived; what arrives later is a new edge). Level-triggered, epoll polled every
     * socket twice per event (perf: ep_item_poll, tcp_poll, sock_poll, 14 % of this
     * process at 3,000 clients x 10 Hz). */
    for (;;) {
        double now;
        ssize_t r = recv_stamped(c->fd, &now);
        if (r == 0) {
            client_close(c, "closed by server");
            return;
        }
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN) {
                char reason[ERR_LEN];
                snprintf(reason, sizeof reason, "closed: %s", strerror(errno));
                client_close(c, reason);
            }
            return;
        }
        if (c->state == C_HEAD)
            head(c, readbuf, (size_t)r, now);
        else
            body(c, readbuf, (size_t)r, now);
        if (c->state == C_CLOSED || (size_t)r < sizeof readbuf)
            return;
    }
}

/* ---------------------------------------------------------------- the Redis reference */

typedef struct {
    int fd;
    Buf buf;
    Window *latency; /* its own histogram: the floor this process adds */
    long offered;
    char failed[256];
} Reference;

static Reference ref = {.fd = -1};

static int resp_bulk(Buf *out, const char *s) {
    char head[32];
    snprintf(head, sizeof head, "$%zu\r\n", strlen(s));
    return buf_append(out, head, strlen(head)) | buf_append(out, s, strlen(s)) |
           buf_append(out, "\r\n", 2);
}

/* Decode a %XX-escaped URL part in place. */
static void url_unquote(char *s) {
    char *o = s;
    for (; *s; s++) {
        if (s[0] == '%' && s[1] && s[2]) {
            char hex[3] = {s[1], s[2], 0};
            *o++ = (char)strtol(hex, NULL, 16);
            s += 2;
        } else {
            *o++ = *s;
        }
    }
    *o = 0;
}

static int tcp_connect(const char *host, const char *port, int flags,
                       struct sockaddr_storage *addr, socklen_t *addr_len) {
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc)
        die("cannot resolve %s: %s", host, gai_strerror(rc));
    memcpy(addr, res->ai_addr, res->ai_addrlen);
    *addr_len = res->ai_addrlen;
    freeaddrinfo(res);
    if (!flags)
        return -1;
    int fd = socket(addr->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)addr, *addr_len) < 0)
        die("cannot connect to %s:%s: %s", host, port, strerror(errno));
    return fd;
}

/* redis://[[user]:password@]host[:port][/db]: connect, AUTH, SUBSCRIBE. */
static void reference_start(const char *url) {
    if (strncmp(url, "redis://", 8) != 0)
        die("--redis-url must be redis://host:port/db, not %s", url);
    char rest[1024], *user = NULL, *password = NULL, *host = rest, port[16] = "6379";
    snprintf(rest, sizeof rest, "%s", url + 8);
    char *slash = strchr(rest, '/');
    if (slash)
        *slash = 0;
    char *at = strrchr(rest, '@');
    if (at) {
        *at = 0;
        host = at + 1;
        char *colon = strchr(rest, ':');
        if (colon)
            *colon = 0, password = colon + 1, user = rest[0] ? rest : NULL;
        else
            password = rest;
        url_unquote(password);
        if (user)
            url_unquote(user);
    }
    char *colon = strrchr(host, ':');
    if (colon)
        *colon = 0, snprintf(port, sizeof port, "%s", colon + 1);
    struct sockaddr_storage addr;
    socklen_t addr_len;
    ref.fd = tcp_connect(host[0] ? host : "127.0.0.1", port, 1, &addr, &addr_len);
    Buf cmd = {0};
    int bad = 0;
    if (password && password[0]) {
        bad |= buf_append(&cmd, user ? "*3\r\n" : "*2\r\n", 4) | resp_bulk(&cmd, "AUTH");
        if (user)
            bad |= resp_bulk(&cmd, user);
        bad |= resp_bulk(&cmd, password);
    }
    bad |= buf_append(&cmd, "*2\r\n", 4) | resp_bulk(&cmd, "SUBSCRIBE") |
           resp_bulk(&cmd, opt.channel);
    if (bad)
        die("out of memory");
    for (size_t off = 0; off < cmd.len;) {
        ssize_t w = send(ref.fd, cmd.p + off, cmd.len - off, MSG_NOSIGNAL);
        if (w <= 0)
            die("cannot subscribe to %s: %s", opt.channel, strerror(errno));
        off += (size_t)w;
    }
    buf_free(&cmd);
    fcntl(ref.fd, F_SETFL, fcntl(ref.fd, F_GETFL) | O_NONBLOCK);
    int on = 1;
    setsockopt(ref.fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on);
    ref.latency = window_new();
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &ref};
    epoll_ctl(epfd, EPOLL_CTL_ADD, ref.fd, &ev);
}

/* One RESP line at p (up to CRLF): its length, or -1 if not complete. */
static long resp_line(const char *p, const char *e) {
    const char *cr = memmem(p, (size_t)(e - p), "\r\n", 2);
    return cr ? cr - p : -1;
}

/* One complete reply from p: bytes used (0 = incomplete). A "message" push is counted. */
static size_t reference_reply(const char *p, const char *e, double now) {
    const char *s = p;
    long len = resp_line(s, e);
    if (len < 0)
        return 0;
    if (*s == '+' || *s == ':')
        return (size_t)len + 2;
    if (*s == '-') {
        snprintf(ref.failed, sizeof ref.failed, "Redis: %.*s", (int)len - 1, s + 1);
        return (size_t)len + 2;
    }
    if (*s != '*') {
        snprintf(ref.failed, sizeof ref.failed, "unexpected reply from Redis");
        return (size_t)(e - p);
    }
    long items = strtol(s + 1, NULL, 10);
    const char *item[3] = {0};
    long item_len[3] = {0};
    s += len + 2;
    for (long i = 0; i < items; i++) {
        if ((len = resp_line(s, e)) < 0)
            return 0;
        if (*s == '$') {
            long n = strtol(s + 1, NULL, 10);
            if (n < 0 || e - (s + len + 2) < n + 2)
                return 0;
            if (i < 3)
                item[i] = s + len + 2, item_len[i] = n;
            s += len + 2 + n + 2;
        } else {
            s += len + 2; /* an integer: the subscription count */
        }
    }
    if (items == 3 && item_len[0] == 7 && memcmp(item[0], "message", 7) == 0) {
        ref.latency->start = window->start, ref.latency->end = window->end;
        const double *ts;
        int n = parse_or_warn("message", item[2], (size_t)item_len[2], &ts);
        if (n >= 0)
            ref.offered += window_record(ref.latency, ts, n, now);
    }
    return (size_t)(s - p);
}

static void reference_event(void) {
    double now;
    ssize_t r = recv_stamped(ref.fd, &now);
    if (r <= 0) {
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        snprintf(ref.failed, sizeof ref.failed, "connection to Redis lost: %s",
                 r ? strerror(errno) : "closed");
        epoll_ctl(epfd, EPOLL_CTL_DEL, ref.fd, NULL);
        return;
    }
    if (buf_append(&ref.buf, readbuf, (size_t)r) < 0)
        die("out of memory");
    size_t used = 0, n;
    while ((n = reference_reply(ref.buf.p + used, ref.buf.p + ref.buf.len, now)) > 0)
        used += n;
    buf_consume(&ref.buf, used);
}

/* ---------------------------------------------------------------- the run */

static void emit_head(const char *event) { printf("{\"event\": \"%s\", \"t\": %.6f", event, wall_now()); }
static void emit_end(void) {
    printf("}\n");
    fflush(stdout);
}

static long sum_events(void) {
    long n = 0;
    for (long i = 0; i < n_clients; i++)
        n += clients[i].events;
    return n;
}

/* Serve every socket until the monotonic deadline (or, with `batch_from` >= 0, until each
 * client from there on got its first event or an error). */
static void run_until(double deadline, long batch_from) {
    struct epoll_event evs[1024];
    for (;;) {
        if (stop_signal) {
            logmsg("WARNING", "signal %d: stopping", (int)stop_signal);
            exit(128 + stop_signal);
        }
        if (batch_from >= 0) {
            long pending = 0;
            for (long i = batch_from; i < n_clients; i++)
                pending += !clients[i].first_event && !clients[i].error[0];
            if (!pending)
                return;
        }
        double left = deadline - mono_now();
        if (left <= 0)
            return;
        int n = epoll_wait(epfd, evs, 1024, (int)ceil(left * 1000));
        if (n < 0 && errno != EINTR)
            die("epoll_wait: %s", strerror(errno));
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == &ref)
                reference_event();
            else
                client_event(evs[i].data.ptr, evs[i].events);
        }
        /* A fan-out round reaches the clients one socket at a time: waking up for each
         * costs a context switch and an epoll_wait per event. Receive times come from the
         * kernel, so waiting a little lets a round's events pile up at no cost to what is
         * measured (a client's events are a tick apart: one per read all the same). */
        if (n > 0 && n < 64 && opt.coalesce_ms > 0) {
            struct timespec pause = {0, (long)(opt.coalesce_ms * 1e6)};
            nanosleep(&pause, NULL);
        }
    }
}

static long count_ok(long from) {
    long ok = 0;
    for (long i = from; i < n_clients; i++)
        ok += !clients[i].error[0];
    return ok;
}

/* All clients, opened in batches; stop early past the deadline or when stalled (as
 * bench/sse_loadgen.py's ramp: a batch in which under 10 % of the new clients got their
 * first event counts as stalled). */
static double ramp(void) {
    double started = mono_now();
    long stalled = 0;
    while (n_clients < opt.clients && stalled < opt.stall_batches) {
        if (mono_now() - started > opt.ramp_timeout) {
            logmsg("WARNING", "ramp deadline passed with %ld of %ld clients", n_clients,
                   opt.clients);
            break;
        }
        long from = n_clients, n = opt.clients - n_clients < opt.batch ? opt.clients - n_clients
                                                                      : opt.batch;
        for (long i = 0; i < n; i++)
            client_open(&clients[n_clients++]);
        run_until(mono_now() + opt.batch_timeout, from);
        for (long i = from; i < n_clients; i++) /* kept open, as the Python generator does */
            if (!clients[i].first_event)
                set_error(&clients[i], "TimeoutError: ");
        stalled = count_ok(from) < 0.1 * n ? stalled + 1 : 0;
        logmsg("INFO", "ramp: %ld opened, %ld connected", n_clients, count_ok(0));
        if (opt.batch_pause > 0)
            run_until(mono_now() + opt.batch_pause, -1);
    }
    if (stalled >= opt.stall_batches)
        logmsg("WARNING", "ramp stalled: %ld batches in a row mostly failed", stalled);
    return mono_now() - started;
}

static void json_string(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch < 0x20)
            printf("\\u%04x", ch);
        else
            putchar(ch);
    }
    putchar('"');
}

static void json_num(const char *key, double v, int digits) {
    if (isnan(v))
        printf(", \"%s\": null", key);
    else
        printf(", \"%s\": %.*f", key, digits, v);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The result, field for field as bench/sse_loadgen.py's summarize(). */
static void summarize(double ramp_s) {
    long connected = 0, dropped = 0, delivered = 0, events = 0, ge95 = 0, ge99 = 0;
    long offered = ref.latency ? ref.offered : (long)nearbyint(opt.tickers * opt.rate * opt.window);
    double *fractions = calloc((size_t)opt.clients + 1, sizeof *fractions);
    if (!fractions)
        die("out of memory");
    for (long i = 0; i < n_clients; i++) {
        Client *c = &clients[i];
        if (!c->first_event || c->error[0])
            continue;
        if (offered)
            fractions[connected] = (double)c->in_window / (double)offered;
        connected++;
        dropped += c->closed;
        delivered += c->in_window;
        events += c->events;
    }
    long nf = offered ? connected : 0;
    qsort(fractions, (size_t)nf, sizeof *fractions, cmp_double);
    for (long i = 0; i < nf; i++)
        ge95 += fractions[i] >= 0.95, ge99 += fractions[i] >= 0.99;
#define FRAC(q) (nf ? fractions[(long)((q) * (double)(nf - 1))] : NAN)
    emit_head("result");
    printf(", \"clients\": %ld, \"connected\": %ld, \"failed\": %ld, \"dropped\": %ld",
           opt.clients, connected, opt.clients - connected + dropped, dropped);
    printf(", \"not_opened\": %ld, \"errors\": {", opt.clients - n_clients);
    /* errors: reason -> count, in first-seen order */
    int first = 1;
    for (long i = 0; i < n_clients; i++) {
        if (!clients[i].error[0])
            continue;
        long j = 0;
        while (j < i && strcmp(clients[j].error, clients[i].error) != 0)
            j++;
        if (j < i)
            continue;
        long count = 0;
        for (long k = i; k < n_clients; k++)
            count += strcmp(clients[k].error, clients[i].error) == 0;
        printf("%s", first ? "" : ", ");
        json_string(clients[i].error);
        printf(": %ld", count);
        first = 0;
    }
    printf("}");
    json_num("window_s", opt.window, 3);
    printf(", \"offered_per_client\": %ld, \"offered_source\": \"%s\"", offered,
           ref.latency ? "redis" : "nominal");
    printf(", \"delivered\": %ld", delivered);
    json_num("delivered_per_s", delivered / opt.window, 1);
    json_num("pct_of_offered", offered ? 100.0 * delivered / ((double)offered * opt.clients) : NAN, 2);
    json_num("client_fraction_min", FRAC(0), 4);
    json_num("client_fraction_p1", FRAC(0.01), 4);
    json_num("client_fraction_p50", FRAC(0.5), 4);
    printf(", \"clients_ge_95pct\": %ld, \"clients_ge_99pct\": %ld, \"events\": %ld", ge95, ge99,
           events);
    json_num("p50_ms", percentile_ms(window->hist, 0.5), 2);
    json_num("p90_ms", percentile_ms(window->hist, 0.9), 2);
    json_num("p99_ms", percentile_ms(window->hist, 0.99), 2);
    json_num("max_ms", percentile_ms(window->hist, 1.0), 2);
    json_num("ref_p50_ms", ref.latency ? percentile_ms(ref.latency->hist, 0.5) : NAN, 2);
    json_num("ref_p99_ms", ref.latency ? percentile_ms(ref.latency->hist, 0.99) : NAN, 2);
    printf(", \"unparsable\": %ld", unparsable);
    json_num("ramp_s", ramp_s, 2);
    emit_end();
    free(fractions);
}

/* ---------------------------------------------------------------- arguments */

static void usage(const char *why) {
    fprintf(stderr,
            "usage: sse_loadgen --url URL [--clients N] [--batch N] [--batch-pause S]\n"
            "  [--batch-timeout S] [--ramp-timeout S] [--stall-batches N] [--settle S]\n"
            "  [--window S] [--grace S] [--redis-url URL] [--channel NAME] [--tickers N]\n"
            "  [--rate HZ] [--coalesce-ms MS]\n%s%s", why ? "error: " : "", why ? why : "");
    exit(2);
}

static double num_arg(const char *name, const char *v, int integer) {
    char *end;
    double x = strtod(v, &end);
    if (end == v || *end || !isfinite(x) || (integer && x != floor(x))) {
        fprintf(stderr, "error: %s: not a number: %s\n", name, v);
        usage(NULL);
    }
    return x;
}

static void parse_args(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help"))
            usage(NULL);
        if (!v)
            usage("every option takes a value\n");
        i++;
        if (!strcmp(a, "--url")) opt.url = v;
        else if (!strcmp(a, "--redis-url")) opt.redis_url = v;
        else if (!strcmp(a, "--channel")) opt.channel = v;
        else if (!strcmp(a, "--clients")) opt.clients = (long)num_arg(a, v, 1);
        else if (!strcmp(a, "--batch")) opt.batch = (long)num_arg(a, v, 1);
        else if (!strcmp(a, "--stall-batches")) opt.stall_batches = (long)num_arg(a, v, 1);
        else if (!strcmp(a, "--tickers")) opt.tickers = (long)num_arg(a, v, 1);
        else if (!strcmp(a, "--batch-pause")) opt.batch_pause = num_arg(a, v, 0);
        else if (!strcmp(a, "--batch-timeout")) opt.batch_timeout = num_arg(a, v, 0);
        else if (!strcmp(a, "--ramp-timeout")) opt.ramp_timeout = num_arg(a, v, 0);
        else if (!strcmp(a, "--settle")) opt.settle = num_arg(a, v, 0);
        else if (!strcmp(a, "--window")) opt.window = num_arg(a, v, 0);
        else if (!strcmp(a, "--grace")) opt.grace = num_arg(a, v, 0);
        else if (!strcmp(a, "--rate")) opt.rate = num_arg(a, v, 0);
        else if (!strcmp(a, "--coalesce-ms")) opt.coalesce_ms = num_arg(a, v, 0);
        else {
            fprintf(stderr, "error: unknown option %s\n", a);
            usage(NULL);
        }
    }
    if (!opt.url)
        usage("--url is required\n");
    if (opt.clients < 1 || opt.batch < 1 || opt.window <= 0)
        usage("--clients and --batch must be >= 1, --window > 0\n");
}

/* http://host[:port]/path[?query] -> the address and the request every client sends. */
static void prepare_request(void) {
    if (strncmp(opt.url, "http://", 7) != 0)
        die("--url must be http://..., not %s", opt.url);
    char hostport[256], host[256], port[16] = "80";
    const char *rest = opt.url + 7, *path = strchr(rest, '/');
    size_t hp_len = path ? (size_t)(path - rest) : strlen(rest);
    if (hp_len == 0 || hp_len >= sizeof hostport)
        die("bad --url %s", opt.url);
    memcpy(hostport, rest, hp_len);
    hostport[hp_len] = 0;
    snprintf(host, sizeof host, "%s", hostport);
    char *colon = strrchr(host, ':');
    if (colon)
        *colon = 0, snprintf(port, sizeof port, "%s", colon + 1);
    tcp_connect(host, port, 0, &server_addr, &server_addr_len);
    int n = snprintf(request, sizeof request,
                     "GET %s HTTP/1.1\r\nHost: %s:%s\r\nAccept: text/event-stream\r\n"
                     "Cache-Control: no-cache\r\n\r\n",
                     path ? path : "/", host, port);
    if (n < 0 || (size_t)n >= sizeof request)
        die("--url too long");
    request_len = (size_t)n;
}

/* Lift the soft open-files limit towards `wanted` (up to the hard limit). */
static void raise_nofile(rlim_t wanted) {
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rlim_t target = rl.rlim_max == RLIM_INFINITY || wanted < rl.rlim_max ? wanted : rl.rlim_max;
    if (target > rl.rlim_cur) {
        rl.rlim_cur = target;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (target < wanted)
        logmsg("WARNING", "open-files limit %lu is below the %lu this run needs",
               (unsigned long)rl.rlim_max, (unsigned long)wanted);
}

static void on_signal(int sig) { stop_signal = sig; }

int main(int argc, char **argv) {
    parse_args(argc, argv);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    raise_nofile((rlim_t)opt.clients + 256);
    prepare_request();
    if ((epfd = epoll_create1(EPOLL_CLOEXEC)) < 0)
        die("epoll_create1: %s", strerror(errno));
    clients = calloc((size_t)opt.clients, sizeof *clients);
    window = window_new();
    if (!clients)
        die("out of memory");
    if (opt.redis_url)
        reference_start(opt.redis_url);

    double ramp_s = ramp();
    emit_head("ramped");
    printf(", \"connected\": %ld, \"ramp_s\": %.2f", count_ok(0), ramp_s);
    emit_end();
    run_until(mono_now() + opt.settle, -1);
    window->start = wall_now();
    window->end = window->start + opt.window;
    /* t is the window's start to the last bit (17 digits): a test can recount the window */
    printf("{\"event\": \"window_start\", \"t\": %.17g, \"events\": %ld}\n", window->start,
           sum_events());
    fflush(stdout);
    run_until(mono_now() + opt.window, -1);
    emit_head("window_end");
    printf(", \"events\": %ld", sum_events());
    emit_end();
    run_until(mono_now() + opt.grace, -1); /* updates stamped inside the window, in flight */
    if (ref.failed[0])
        die("reference subscriber failed: %s", ref.failed);
    summarize(ramp_s);
    for (long i = 0; i < n_clients; i++)
        client_close(&clients[i], NULL);
    return 0;
}
