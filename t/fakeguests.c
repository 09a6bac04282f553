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
 *
 * usage: fakeguests --flood DIR N BYTES
 *
 * For the benchmark's memory figure: N guests as above, each sending pings
 * to the daemon as fast as it takes them and never reading a reply, until
 * BYTES are sent or none could be for 2 s; prints the bytes sent, then holds
 * the connections, unread, until SIGTERM.
 *
 * usage: fakeguests --serve DIR N [PROCS]
 *
 * The other way round, for the host CLI's fan-out: N guests' host-to-guest
 * sockets in the same layouts (DIR/domain-ID-NAME/negotiator-host-to-guest.0,
 * every third DIR/NAME.negotiator-host-to-guest.0), each served as a guest
 * daemon serves its port, by the daemons' own served channel (neg_chan: the
 * version handshake, streaming, built-ins run as jobs), all from this one
 * process and poll loop.  One client per socket at a time, as QEMU's.  Runs
 * until SIGTERM.  PROCS (default 1) processes share the sockets, guest i
 * served by process i % PROCS: a command's child closes every descriptor
 * but its own, so in one process holding 1,000 sockets each built-in costs
 * a thousand close() calls that a real guest's daemon never pays.
 */
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

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

/* Guest i's listening socket for channel under dir, in one of libvirt's layouts; exits on failure. */
static int
guest_socket(const char *dir, int i, const char *name, const char *channel)
{
	struct sockaddr_un sa;
	char path[4096];
	int fd;

	if (i % 3 == 2) {
		snprintf(path, sizeof(path), "%s/%s.%s", dir, name, channel);
	} else {
		snprintf(path, sizeof(path), "%s/domain-%d-%s", dir, i + 1, name);
		mkdir(path, 0755);
		snprintf(path, sizeof(path), "%s/domain-%d-%s/%s", dir, i + 1, name, channel);
	}
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "fakeguests: %s: path too long for a socket\n", path);
		exit(1);
	}
	memcpy(sa.sun_path, path, strlen(path));
	unlink(path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 1) < 0) {
		fprintf(stderr, "fakeguests: %s: %s\n", path, strerror(errno));
		exit(1);
	}
	return fd;
}

/*
 * The soft limit on descriptors raised to the hard one, as the host daemon
 * raises its own: one process may hold a thousand guests' sockets.
 */
static void
raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/*
 * --serve's poll slots: the self-pipe, then per guest its listener and its
 * channel as neg_chan_pollfds fills it.
 */
enum { SV_PFD_SIG, SV_PFD_GUESTS };
enum { SV_PFD_LISTEN, SV_PFD_CHAN, SV_PFD_PER_GUEST = SV_PFD_CHAN + NEG_CHAN_FDS };

/*
 * --serve: guests w, w + procs, ... below n in one loop, the daemons' turn:
 * pollfds, poll, io, reap, tick.
 */
static int
serve(const char *dir, int n, int w, int procs)
{
	struct neg_server srv;
	struct sg {
		int lsock;
		int up;
		struct neg_chan chan;
	} *g;
	struct pollfd *p;
	int *first, i, k, fd, chld;
	unsigned sigs;
	int64_t now, wake;
	char name[64];

	n = (n - w + procs - 1) / procs;
	memset(&srv, 0, sizeof(srv));
	srv.env.dir = "/nonexistent";	/* the built-ins alone */
	srv.max_frame = PROTO_MAX_FRAME_DEFAULT;
	srv.max_running = HOST_TOTAL_JOBS;
	raise_fd_limit();
	if (neg_signals_init() < 0)
		return 1;
	g = calloc((size_t)n, sizeof(*g));
	p = calloc(SV_PFD_GUESTS + (size_t)n * SV_PFD_PER_GUEST, sizeof(*p));
	first = calloc((size_t)n + 1, sizeof(*first));
	if (g == NULL || p == NULL || first == NULL)
		return 1;
	for (i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "fake-guest.%d", w + i * procs);
		g[i].lsock = guest_socket(dir, w + i * procs, name, H2G_NAME);
		neg_chan_init(&g[i].chan, -1, &srv, NEG_CHAN_MAXJOBS);
	}
	for (sigs = 0; !(sigs & (NEG_SIG(SIGTERM) | NEG_SIG(SIGINT))); ) {
		now = neg_now();
		wake = 0;
		p[SV_PFD_SIG].fd = neg_sigpipe_fd();
		p[SV_PFD_SIG].events = POLLIN;
		for (i = 0, k = SV_PFD_GUESTS; i < n; i++) {
			first[i] = k;
			/* the listener only while no client is served: one at a time, as QEMU's socket */
			p[k + SV_PFD_LISTEN].fd = g[i].up ? -1 : g[i].lsock;
			p[k + SV_PFD_LISTEN].events = POLLIN;
			k += SV_PFD_CHAN + neg_chan_pollfds(&g[i].chan, p + k + SV_PFD_CHAN, g[i].up);
			wake = neg_min_deadline(wake, neg_chan_wake(&g[i].chan));
		}
		first[n] = k;
		for (i = 0; i < k; i++)
			p[i].revents = 0;
		if (poll(p, (nfds_t)k, neg_poll_timeout(wake, now)) < 0 && errno != EINTR)
			return 1;
		sigs = (p[SV_PFD_SIG].revents & POLLIN) ? neg_signal_drain() : 0;
		chld = (sigs & NEG_SIG(SIGCHLD)) != 0;
		now = neg_now();
		for (i = 0; i < n; i++) {
			if ((p[first[i] + SV_PFD_LISTEN].revents & POLLIN) && !g[i].up &&
			    (fd = accept4(g[i].lsock, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
				g[i].chan.fd = fd;
				g[i].up = 1;
			}
			if (neg_chan_io(&g[i].chan, p + first[i] + SV_PFD_CHAN,
			    first[i + 1] - first[i] - SV_PFD_CHAN) < 0 &&
			    g[i].up) {
				neg_chan_reset(&g[i].chan);
				close(g[i].chan.fd);
				g[i].chan.fd = -1;
				g[i].up = 0;
			}
			if (chld)
				neg_chan_reap(&g[i].chan);
			neg_chan_tick(&g[i].chan, now);
		}
	}
	return 0;
}

static volatile sig_atomic_t stop_all;

static void
on_term(int sig)
{
	(void)sig;
	stop_all = 1;
}

/* --serve with procs processes: each serves its share; SIGTERM to us ends them all. */
static int
serve_all(const char *dir, int n, int procs)
{
	sigset_t term, old;
	pid_t *pid;
	int w;

	if (procs <= 1)
		return serve(dir, n, 0, 1);
	if ((pid = calloc((size_t)procs, sizeof(*pid))) == NULL)
		return 1;
	/* blocked outside sigsuspend: a TERM between the test and the wait is not lost (pause's race) */
	sigemptyset(&term);
	sigaddset(&term, SIGTERM);
	sigprocmask(SIG_BLOCK, &term, &old);
	signal(SIGTERM, on_term);
	for (w = 0; w < procs; w++)
		if ((pid[w] = fork()) == 0) {
			signal(SIGTERM, SIG_DFL);
			sigprocmask(SIG_SETMASK, &old, NULL);
			_exit(serve(dir, n, w, procs));
		}
	while (!stop_all)
		sigsuspend(&old);
	sigprocmask(SIG_SETMASK, &old, NULL);
	for (w = 0; w < procs; w++)
		if (pid[w] > 0)
			kill(pid[w], SIGTERM);
	while (wait(NULL) > 0)
		;
	return 0;
}

/* Waits (60 s at most) until the daemon has connected to the n guests; returns how many it did. */
static int
accept_all(struct fg *g, struct pollfd *p, int n)
{
	int64_t deadline = now_us() + 60 * 1000000LL;
	int i, connected = 0;

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
	return connected;
}

/*
 * --flood: every guest writes pings until bytes are sent or none could be for
 * 2 s, reading nothing; then the connections are held until SIGTERM.
 */
static int
flood_all(const char *dir, int n, long long bytes)
{
	struct fg *g = calloc((size_t)n, sizeof(*g));
	struct pollfd *p = calloc((size_t)n, sizeof(*p));
	long long *sent = calloc((size_t)n, sizeof(*sent)), total = 0;
	size_t *off = calloc((size_t)n, sizeof(*off));	/* where in frames each guest is: none cut */
	struct proto_request kw;
	struct buf ping = {0}, frames = {0};
	int64_t idle_since;
	sigset_t term, old;
	ssize_t w;
	int i, connected, moved;

	if (g == NULL || p == NULL || sent == NULL || off == NULL)
		return 1;
	/* the pings as a 0.8 caller writes them, 16 to a write */
	memset(&kw, 0, sizeof(kw));
	proto_request_write(&ping, "ping", NULL, 0, &kw);
	for (i = 0; i < 16; i++)
		buf_add(&frames, ping.p, ping.len);
	sigemptyset(&term);
	sigaddset(&term, SIGTERM);
	sigprocmask(SIG_BLOCK, &term, &old);
	signal(SIGTERM, on_term);
	for (i = 0; i < n; i++) {
		snprintf(g[i].name, sizeof(g[i].name), "fake-guest.%d", i);
		g[i].lsock = guest_socket(dir, i, g[i].name, G2H_NAME);
		g[i].conn = -1;
	}
	connected = accept_all(g, p, n);
	for (idle_since = now_us(); now_us() - idle_since < 2000000; ) {
		for (i = 0, moved = 0; i < n; i++) {
			if (g[i].conn < 0 || sent[i] >= bytes)
				continue;
			if ((w = write(g[i].conn, frames.p + off[i], frames.len - off[i])) > 0) {
				off[i] = (off[i] + (size_t)w) % frames.len;
				sent[i] += w;
				total += w;
				moved = 1;
			}
		}
		for (i = 0; i < n && (g[i].conn < 0 || sent[i] >= bytes); i++)
			;
		if (i == n)
			break;
		if (moved)
			idle_since = now_us();
		else
			poll(NULL, 0, 10);
	}
	printf("connected=%d/%d flooded_bytes=%lld\n", connected, n, total);
	fflush(stdout);
	while (!stop_all)
		sigsuspend(&old);
	return connected == n ? 0 : 1;
}

int
main(int argc, char **argv)
{
	struct fg *g;
	struct pollfd *p;
	int n, calls, i, connected = 0, finished = 0, good = 0, bad = 0, nargs;
	int64_t start, deadline, *lat;
	size_t nlat = 0, used, off;
	char tmp[65536], expect[80], err[256];
	const char *dir, *method;
	char **args;

	if ((argc == 4 || argc == 5) && strcmp(argv[1], "--serve") == 0)
		return serve_all(argv[2], atoi(argv[3]), argc == 5 ? atoi(argv[4]) : 1);
	if (argc == 5 && strcmp(argv[1], "--flood") == 0) {
		signal(SIGPIPE, SIG_IGN);
		return flood_all(argv[2], atoi(argv[3]), atoll(argv[4]));
	}
	if (argc < 5) {
		fprintf(stderr, "usage: fakeguests DIR N CALLS METHOD [ARG...] | --flood DIR N BYTES | "
		    "--serve DIR N [PROCS]\n");
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
		g[i].lsock = guest_socket(dir, i, g[i].name, G2H_NAME);
		g[i].conn = -1;
		proto_reader_init(&g[i].rd, 1 << 20);
	}
	/* phase 1: the daemon finds and connects to every guest */
	start = now_us();
	connected = accept_all(g, p, n);
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
