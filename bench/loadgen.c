/*
 * loadgen: a closed-loop load generator for servers that echo 4-byte big-endian
 * length-prefixed frames. Single-threaded epoll; written in C so that it is never
 * the bottleneck of a Python server on the other core.
 *
 * usage: loadgen TARGET CONNS DEPTH SIZE SECONDS [WARMUP]
 *   TARGET  host:port (IPv4) or unix:/path
 *   CONNS   connections
 *   DEPTH   requests kept in flight per connection (pipelined)
 *   SIZE    payload bytes per request
 *   SECONDS measured duration; WARMUP seconds before it (default 0.5) are not recorded
 *
 * Prints one JSON line: {"completed", "seconds", "qps", "mb_per_s", "p50_us", "p99_us",
 * "p999_us", "max_us", "errors"}. Every response is checked to be exactly the request
 * that was sent (same length, same bytes).
 *
 * With LOADGEN_REQUEST=file (and LOADGEN_REPLY=file) in the environment, the request is
 * that file's bytes (one complete frame whose first 4 bytes are a big-endian length of the
 * rest, such as a TTHeader frame) and every response must equal LOADGEN_REPLY's bytes; SIZE
 * is then ignored. With LOADGEN_SEQ_OFFSET=N as well, every request carries its own
 * sequence number (big-endian u32 at byte N of the frame, as in a TTHeader frame where N is
 * 8), and each reply must carry the sequence number of the request it answers (replies come
 * in order on a connection) and otherwise equal LOADGEN_REPLY's bytes.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    int fd;
    unsigned char *rbuf;
    size_t rlen, rcap;
    unsigned char *wbuf;
    size_t wlen, woff, wcap;
    uint64_t *sent; /* ring of send timestamps, one per request in flight */
    uint32_t *seqs; /* ring of their sequence numbers (LOADGEN_SEQ_OFFSET) */
    uint32_t next_seq;
    int head, count, depth;
    int want_out;
} conn_t;

static unsigned char *frame;
static size_t frame_len;
static unsigned char *expect; /* the reply every request must get */
static size_t expect_len;
static uint32_t *lat;
static size_t nlat, latcap;
static uint64_t completed, errors;
static int recording;
static long seq_offset = -1; /* LOADGEN_SEQ_OFFSET, or -1 */

static void put_u32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static uint32_t get_u32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

/* Whether a reply frame is the expected one, for the request with sequence number seq. */
static int reply_ok(const unsigned char *reply, size_t len, uint32_t seq) {
    if (len != expect_len) return 0;
    if (seq_offset < 0) return memcmp(reply, expect, expect_len) == 0;
    size_t at = (size_t)seq_offset;
    return memcmp(reply, expect, at) == 0 && get_u32(reply + at) == seq &&
           memcmp(reply + at + 4, expect + at + 4, expect_len - at - 4) == 0;
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

static int dial(const char *target) {
    int fd;
    if (strncmp(target, "unix:", 5) == 0) {
        struct sockaddr_un sa;
        memset(&sa, 0, sizeof sa);
        sa.sun_family = AF_UNIX;
        strncpy(sa.sun_path, target + 5, sizeof sa.sun_path - 1);
        fd = socket(AF_UNIX, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) die("connect unix");
    } else {
        char host[256];
        const char *colon = strrchr(target, ':');
        if (!colon || (size_t)(colon - target) >= sizeof host) {
            fprintf(stderr, "bad target %s\n", target);
            exit(2);
        }
        memcpy(host, target, colon - target);
        host[colon - target] = 0;
        struct sockaddr_in sa;
        memset(&sa, 0, sizeof sa);
        sa.sin_family = AF_INET;
        sa.sin_port = htons((uint16_t)atoi(colon + 1));
        if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) die("inet_pton");
        fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) die("connect tcp");
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

static void queue_requests(conn_t *c, int n) {
    uint64_t t = now_ns();
    for (int i = 0; i < n; i++) {
        if (c->wlen + frame_len > c->wcap) {
            if (c->woff > 0) {
                memmove(c->wbuf, c->wbuf + c->woff, c->wlen - c->woff);
                c->wlen -= c->woff;
                c->woff = 0;
            }
            while (c->wlen + frame_len > c->wcap) c->wcap *= 2;
            c->wbuf = realloc(c->wbuf, c->wcap);
            if (!c->wbuf) die("realloc");
        }
        memcpy(c->wbuf + c->wlen, frame, frame_len);
        int slot = (c->head + c->count) % c->depth;
        if (seq_offset >= 0) {
            c->seqs[slot] = ++c->next_seq;
            put_u32(c->wbuf + c->wlen + seq_offset, c->seqs[slot]);
        }
        c->wlen += frame_len;
        c->sent[slot] = t;
        c->count++;
    }
}

/* Returns 0 if everything was written, 1 if the socket is full. */
static int flush_out(conn_t *c) {
    while (c->woff < c->wlen) {
        ssize_t k = write(c->fd, c->wbuf + c->woff, c->wlen - c->woff);
        if (k < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return 1;
            if (errno == EINTR) continue;
            die("write");
        }
        c->woff += (size_t)k;
    }
    c->woff = c->wlen = 0;
    return 0;
}

static void on_readable(conn_t *c) {
    for (;;) {
        if (c->rcap - c->rlen < 65536) {
            c->rcap *= 2;
            c->rbuf = realloc(c->rbuf, c->rcap);
            if (!c->rbuf) die("realloc");
        }
        ssize_t k = read(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen);
        if (k < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            if (errno == EINTR) continue;
            die("read");
        }
        if (k == 0) {
            fprintf(stderr, "server closed the connection\n");
            exit(3);
        }
        c->rlen += (size_t)k;
        if ((size_t)k < c->rcap - c->rlen) break;
    }
    size_t off = 0;
    int done = 0;
    uint64_t t = now_ns();
    while (c->rlen - off >= 4) {
        uint32_t n = get_u32(c->rbuf + off);
        if (c->rlen - off < 4 + (size_t)n) break;
        if (c->count == 0) {
            errors++;
            off += 4 + (size_t)n;
            continue;
        }
        if (!reply_ok(c->rbuf + off, 4 + (size_t)n, c->seqs ? c->seqs[c->head] : 0)) errors++;
        off += 4 + (size_t)n;
        uint64_t sent = c->sent[c->head];
        c->head = (c->head + 1) % c->depth;
        c->count--;
        done++;
        if (recording) {
            completed++;
            if (nlat < latcap) lat[nlat++] = (uint32_t)((t - sent) > 0xffffffffull ? 0xffffffffull : (t - sent));
        }
    }
    if (off > 0) {
        memmove(c->rbuf, c->rbuf + off, c->rlen - off);
        c->rlen -= off;
    }
    if (done > 0) queue_requests(c, done);
}

static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) die(path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *data = malloc(n > 0 ? (size_t)n : 1);
    if (!data || fread(data, 1, (size_t)n, f) != (size_t)n) die("read");
    fclose(f);
    *len = (size_t)n;
    return data;
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(double p) {
    if (nlat == 0) return 0;
    size_t i = (size_t)(p * (double)(nlat - 1));
    return lat[i] / 1000.0;
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: %s TARGET CONNS DEPTH SIZE SECONDS [WARMUP]\n", argv[0]);
        return 2;
    }
    const char *target = argv[1];
    int nconn = atoi(argv[2]), depth = atoi(argv[3]);
    size_t size = (size_t)atol(argv[4]);
    double seconds = atof(argv[5]), warmup = argc > 6 ? atof(argv[6]) : 0.5;
    if (nconn < 1 || depth < 1) return 2;

    const char *request_file = getenv("LOADGEN_REQUEST");
    const char *seq_env = getenv("LOADGEN_SEQ_OFFSET");
    if (request_file) {
        frame = read_file(request_file, &frame_len);
        const char *reply_file = getenv("LOADGEN_REPLY");
        expect = reply_file ? read_file(reply_file, &expect_len) : frame;
        if (!reply_file) expect_len = frame_len;
        if (seq_env) {
            seq_offset = atol(seq_env);
            if (seq_offset < 4 || (size_t)seq_offset + 4 > frame_len ||
                (size_t)seq_offset + 4 > expect_len) {
                fprintf(stderr, "LOADGEN_SEQ_OFFSET %ld is outside the frames\n", seq_offset);
                return 2;
            }
        }
    } else {
        frame_len = 4 + size;
        frame = malloc(frame_len);
        frame[0] = (unsigned char)(size >> 24);
        frame[1] = (unsigned char)(size >> 16);
        frame[2] = (unsigned char)(size >> 8);
        frame[3] = (unsigned char)size;
        for (size_t i = 0; i < size; i++) frame[4 + i] = (unsigned char)(i * 131 + 7);
        expect = frame;
        expect_len = frame_len;
    }
    latcap = 50u * 1000u * 1000u;
    lat = malloc(latcap * sizeof *lat);
    if (!lat) die("malloc");

    int ep = epoll_create1(0);
    conn_t *conns = calloc((size_t)nconn, sizeof *conns);
    for (int i = 0; i < nconn; i++) {
        conn_t *c = &conns[i];
        c->fd = dial(target);
        c->rcap = 131072 + frame_len + expect_len;
        c->rbuf = malloc(c->rcap);
        c->wcap = frame_len * (size_t)depth + 4096;
        c->wbuf = malloc(c->wcap);
        c->depth = depth;
        c->sent = calloc((size_t)depth, sizeof *c->sent);
        if (seq_offset >= 0) c->seqs = calloc((size_t)depth, sizeof *c->seqs);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl");
        queue_requests(c, depth);
    }

    uint64_t start = now_ns();
    uint64_t measure_from = start + (uint64_t)(warmup * 1e9);
    uint64_t end = measure_from + (uint64_t)(seconds * 1e9);
    struct epoll_event events[256];
    for (;;) {
        uint64_t t = now_ns();
        if (!recording && t >= measure_from) recording = 1;
        if (t >= end) break;
        for (int i = 0; i < nconn; i++) {
            conn_t *c = &conns[i];
            if (c->wlen > c->woff) {
                int full = flush_out(c);
                if (full != c->want_out) {
                    struct epoll_event ev = {.events = EPOLLIN | (full ? EPOLLOUT : 0), .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                    c->want_out = full;
                }
            }
        }
        int n = epoll_wait(ep, events, 256, 50);
        for (int i = 0; i < n; i++) {
            conn_t *c = events[i].data.ptr;
            if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(c);
        }
    }
    double measured = (double)(end - measure_from) / 1e9;
    qsort(lat, nlat, sizeof *lat, cmp_u32);
    printf("{\"completed\": %llu, \"seconds\": %.3f, \"qps\": %.1f, \"mb_per_s\": %.2f, "
           "\"p50_us\": %.1f, \"p99_us\": %.1f, \"p999_us\": %.1f, \"max_us\": %.1f, \"errors\": %llu}\n",
           (unsigned long long)completed, measured, completed / measured,
           completed * (double)frame_len / measured / 1e6, pct(0.5), pct(0.99), pct(0.999),
           nlat ? lat[nlat - 1] / 1000.0 : 0.0, (unsigned long long)errors);
    return errors ? 1 : 0;
}
