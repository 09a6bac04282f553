/*
 * fakeguests: many fake guests calling one negotiator-host daemon, for the scale
 * test and the benchmark.
 *
 * usage: fakeguests DIR N CALLS METHOD [ARG...]
 *
 * Creates N listening UNIX sockets under DIR the way libvirt lays them out
 * (DIR/domain-ID-NAME/negotiator-guest-to-host.0, every third one as
 * DIR/NAME.negotiator-guest-to-host.0), waits until the daemon has connected
 * to all of them, then has every guest make CALLS calls of METHOD with ARGs
 * at once, one call in flight per guest, as a guest's port allows.  A reply
 * counts as good when it succeeds and, for execute, its result is the guest's
 * name (the test's command prints NEGOTIATOR_GUEST; one line comes back stripped).
 * Prints one line of numbers; exits 1 if any call failed or timed out.
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "neg_proto.h"

struct fg {
	char name[64];
	int lsock, conn;
	int done_calls, good, bad;
	int64_t sent_at;
	struct proto_reader rd;
};

static int64_t
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int
cmp64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

static void
send_call(struct fg *g, const char *method, char **args, int nargs)
{
	struct proto_request kw;
	struct buf b = {0};
	ssize_t w;
	size_t off = 0;

	memset(&kw, 0, sizeof(kw));
	snprintf(kw.id, sizeof(kw.id), "%d", g->done_calls + 1);
	proto_request_write(&b, method, args, (size_t)nargs, &kw);
	while (off < b.len) {
		w = write(g->conn, b.p + off, b.len - off);
		if (w > 0)
			off += (size_t)w;
		else if (w < 0 && errno != EAGAIN && errno != EINTR)
			break;
	}
	buf_free(&b);
	g->sent_at = now_us();
}

int
main(int argc, char **argv)
{
	struct sockaddr_un sa;
	struct fg *g;
	struct pollfd *p;
	int n, calls, i, connected = 0, finished = 0, good = 0, bad = 0, nargs;
	int64_t start, deadline, *lat;
	size_t nlat = 0, used, off;
	char path[4096], tmp[65536], expect[80], err[256];
	const char *dir, *method;
	char **args;

	if (argc < 5) {
		fprintf(stderr, "usage: fakeguests DIR N CALLS METHOD [ARG...]\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	dir = argv[1];
	n = atoi(argv[2]);
	calls = atoi(argv[3]);
	method = argv[4];
	args = argv + 5;
	nargs = argc - 5;
	g = calloc((size_t)n, sizeof(*g));
	p = calloc((size_t)n, sizeof(*p));
	lat = calloc((size_t)n * (size_t)calls + 1, sizeof(*lat));
	for (i = 0; i < n; i++) {
		snprintf(g[i].name, sizeof(g[i].name), "fake-guest.%d", i);
		if (i % 3 == 2) {
			snprintf(path, sizeof(path), "%s/%s.negotiator-guest-to-host.0", dir, g[i].name);
		} else {
			snprintf(path, sizeof(path), "%s/domain-%d-%s", dir, i + 1, g[i].name);
			mkdir(path, 0755);
			snprintf(path, sizeof(path), "%s/domain-%d-%s/negotiator-guest-to-host.0", dir,
			    i + 1, g[i].name);
		}
		memset(&sa, 0, sizeof(sa));
		sa.sun_family = AF_UNIX;
		if (strlen(path) >= sizeof(sa.sun_path)) {
			fprintf(stderr, "fakeguests: %s: path too long for a socket\n", path);
			return 1;
		}
		memcpy(sa.sun_path, path, strlen(path));
		unlink(path);
		g[i].lsock = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
		if (g[i].lsock < 0 || bind(g[i].lsock, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
		    listen(g[i].lsock, 1) < 0) {
			fprintf(stderr, "fakeguests: %s: %s\n", path, strerror(errno));
			return 1;
		}
		g[i].conn = -1;
		proto_reader_init(&g[i].rd, 1 << 20);
	}
	/* phase 1: the daemon finds and connects to every guest */
	start = now_us();
	deadline = start + 60 * 1000000LL;
	while (connected < n && now_us() < deadline) {
		for (i = 0; i < n; i++) {
			p[i].fd = g[i].conn < 0 ? g[i].lsock : -1;
			p[i].events = POLLIN;
			p[i].revents = 0;
		}
		poll(p, (nfds_t)n, 100);
		for (i = 0; i < n; i++) {
			if (!(p[i].revents & POLLIN))
				continue;
			g[i].conn = accept(g[i].lsock, NULL, NULL);
			if (g[i].conn >= 0) {
				fcntl(g[i].conn, F_SETFL, O_NONBLOCK);
				connected++;
			}
		}
	}
	printf("connected=%d/%d connect_seconds=%.3f", connected, n,
	    (double)(now_us() - start) / 1e6);
	fflush(stdout);
	/* phase 2: every guest calls at once */
	start = now_us();
	deadline = start + 300 * 1000000LL;
	for (i = 0; i < n; i++)
		if (g[i].conn >= 0 && calls > 0)
			send_call(&g[i], method, args, nargs);
		else
			finished++;
	while (finished < n && now_us() < deadline) {
		for (i = 0; i < n; i++) {
			p[i].fd = g[i].conn >= 0 && g[i].done_calls < calls ? g[i].conn : -1;
			p[i].events = POLLIN;
			p[i].revents = 0;
		}
		poll(p, (nfds_t)n, 100);
		for (i = 0; i < n; i++) {
			ssize_t r;
			struct proto_response resp;

			if (!(p[i].revents & (POLLIN | POLLHUP)))
				continue;
			r = read(g[i].conn, tmp, sizeof(tmp));
			if (r <= 0) {
				if (r < 0 && errno == EAGAIN)
					continue;
				g[i].bad += calls - g[i].done_calls;
				g[i].done_calls = calls;
				close(g[i].conn);
				g[i].conn = -1;
				finished++;
				continue;
			}
			for (off = 0; off < (size_t)r; off += used) {
				if (proto_reader_feed(&g[i].rd, tmp + off, (size_t)r - off, &used) != PROTO_FRAME)
					continue;
				lat[nlat++] = now_us() - g[i].sent_at;
				snprintf(expect, sizeof(expect), "%s", g[i].name);
				if (proto_response_parse(&resp, g[i].rd.body.p, g[i].rd.body.len, err,
				    sizeof(err)) == 0 && resp.success &&
				    (strcmp(method, "execute") != 0 || strcmp(resp.result.p, expect) == 0))
					g[i].good++;
				else
					g[i].bad++;
				proto_response_free(&resp);
				if (++g[i].done_calls < calls)
					send_call(&g[i], method, args, nargs);
				else
					finished++;
			}
		}
	}
	for (i = 0; i < n; i++) {
		good += g[i].good;
		bad += g[i].bad + (calls - g[i].done_calls);
	}
	qsort(lat, nlat, sizeof(*lat), cmp64);
	printf(" calls=%d good=%d bad=%d seconds=%.3f calls_per_second=%.0f p50_ms=%.2f p99_ms=%.2f\n",
	    n * calls, good, bad, (double)(now_us() - start) / 1e6,
	    (double)good / ((double)(now_us() - start) / 1e6),
	    nlat ? (double)lat[nlat / 2] / 1000 : 0.0, nlat ? (double)lat[nlat * 99 / 100] / 1000 : 0.0);
	return bad == 0 && connected == n ? 0 : 1;
}
