/*
 * neg-test: drives the protocol layer (neg_proto.c) from the unit tests.
 *
 *   neg-test request            parse stdin as a request payload, print its fields
 *   neg-test response           parse stdin as a reply payload, print its fields
 *   neg-test frames [CHUNK [MAX]]  feed stdin to the frame reader CHUNK bytes at a time
 *                               (with NEG_TEST_RAW=1 data frames "H+R\n" are read too, and each
 *                               frame is also shown as a stream frame where it is one)
 *                               (frame limit MAX, default 1 MiB), print every frame and error
 *   neg-test buffered MAX       feed stdin to a frame reader of limit MAX at once; print the
 *                               bytes of the frame in progress it holds, has reserved, and
 *                               that its length line declared
 *   neg-test parse-time SHAPE SIZE...  time proto_request_parse on a payload of SHAPE built in
 *                               memory, about SIZE bytes each; SHAPE: members ({"method": "x",
 *                               "k1": 1, ...}), nested ("x": [[],[],...]), flat ("x": [1,1,...])
 *                               or string ("x": "aaa...")
 *   neg-test feed-time SIZE [CHUNK]  feed an execute request frame of about SIZE bytes (base64
 *                               input) to the frame reader CHUNK bytes at a time; print MB/s
 *                               of the reader and of proto_request_parse
 *   neg-test write-request METHOD [ARG...]   print the request frame the CLIs send
 *   neg-test write-reply TEXT   print a success reply with a string result
 *   neg-test write-list NAME... print a success reply with a list result
 *   neg-test write-error TEXT   print a failure reply
 *   neg-test b64enc | b64dec    base64 of stdin
 *   neg-test split LINE         split LINE like the -e option does, one [word] per line
 *   neg-test builtin NAME       run a built-in command here
 *   neg-test calls SOCKET N METHOD [ARG...]   N calls one after another over one connection
 *                               to SOCKET; prints counts, calls per second and latencies
 *   neg-test echo DEVICE        the physical floor's far end: copy what DEVICE gives back to it,
 *                               full duplex (non-blocking, one poll loop, at most ECHO_BUF bytes
 *                               held, writes of at most 32 KiB); what it holds when the other side
 *                               hangs up (a virtio port's host closing) is dropped
 *   neg-test rtt SOCKET N SIZE  the physical floor: N round trips of SIZE bytes through an echo
 *                               (calls and rtt write every latency, in us, one a line, sorted,
 *                               to the file $NEG_TEST_LATENCIES when it is set: the bench's plots)
 *   neg-test qga-ping SOCKET N  QEMU's guest agent for the bench: one guest-sync, then N
 *                               guest-ping one after another on one connection; prints what
 *                               calls prints
 *   neg-test qga-exec SOCKET MS PATH [ARG...]   a command run through QEMU's guest agent as its
 *                               clients run one: connect, guest-sync, guest-exec with
 *                               capture-output, guest-exec-status at once and then every MS ms
 *                               until it exited; its output (out-data, base64) decoded on stdout,
 *                               its err-data on stderr; exits with its exit code
 *   neg-test floor SOCKET BYTES the bulk floor: through an echo at SOCKET's far end, writes BYTES
 *                               bytes (32 KiB writes, as a virtio port takes) and reads BYTES back
 *                               at the same time, one poll loop, non-blocking; checks what comes
 *                               back; prints bytes, seconds and MB/s (10^6 bytes, each way)
 *   neg-test sink SOCKET BYTES  the one-way floor: reads BYTES from SOCKET (a bare cat writing
 *                               at the far end); prints bytes, seconds from the first byte to
 *                               the last, and MB/s
 *   neg-test stamp N MS         N lines, each the time it is written (CLOCK_MONOTONIC, ns), one
 *                               every MS ms, each in one write (no buffering)
 *   neg-test latency            reads such lines on stdin and prints how long each took to arrive
 *                               (now - its time): lines, median, p99 and max in ms (the writer on
 *                               the same machine: the clock is the machine's)
 *   neg-test peer08 (--device PATH | --connect SOCKET) LOG   a stand-in for the 0.8 reference
 *                               daemon, serving the port PATH (the guest's side) or the socket
 *                               SOCKET (the host's side) forever: every frame's payload is
 *                               appended to LOG as one line, and it answers without any id as
 *                               0.8 does: execute of cat (kw.input as sent, no decoding), echo
 *                               ARG..., fail [N] (exit code N, default 1), anything else exit
 *                               code 127; list_commands; other methods "Method X not supported";
 *                               nothing at all to a frame that is no request
 *   neg-test serve              serve the frames on stdin as a daemon does (a served channel
 *                               over a socketpair, built-ins only); print each reply's success
 *                               or error, then checks=C replies=R: how many times the JSON
 *                               checker ran meanwhile, and how many replies came
 *
 * Exit status 0 on success, 1 when the input was refused (the reason on stderr).
 */
#include <sys/socket.h>
#include <sys/un.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "neg_proto.h"

/* All of stdin (the programs read --input through neg_cli_prepare, bounded by the frame). */
static void
read_stdin(struct buf *b)
{
	ssize_t n;

	for (;;) {
		buf_reserve(b, NEG_READ_CHUNK);
		n = read(0, b->p + b->len, NEG_READ_CHUNK);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			fprintf(stderr, "cannot read standard input: %s\n", strerror(errno));
			exit(2);
		}
		if (n == 0)
			break;
		b->len += (size_t)n;
	}
	b->p[b->len] = '\0';
}

static void
print_bytes(const char *label, const char *s, size_t n)
{
	size_t i;

	printf("%s=", label);
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c >= 0x20 && c < 0x7f && c != '\\')
			putchar(c);
		else
			printf("\\x%02x", c);
	}
	putchar('\n');
}

static int
do_request(void)
{
	struct proto_request r;
	struct buf in = {0};
	char err[256];
	size_t i;

	read_stdin(&in);
	if (proto_request_parse(&r, in.p, in.len, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s\n", err);
		if (r.id[0])
			fprintf(stderr, "id=%s\n", r.id);
		proto_request_free(&r);
		buf_free(&in);
		return 1;
	}
	printf("method=%s\n", r.method);
	printf("argc=%zu\n", r.argc);
	for (i = 0; i < r.argc; i++)
		print_bytes("arg", r.argv[i], strlen(r.argv[i]));
	if (r.has_input)
		print_bytes("input", r.input.p, r.input.len);
	printf("base64=%d\n", r.base64);
	if (r.timeout > 0)
		printf("timeout=%g\n", r.timeout);
	if (r.stream)
		printf("stream=%d window=%zu stdin=%d\n", r.stream, r.window, r.want_stdin);
	if (r.new_caller)
		printf("new_caller=1\n");
	if (r.id[0])
		printf("id=%s\n", r.id);
	printf("dispatch=%d\n", (int)proto_method_lookup(r.method));
	proto_request_free(&r);
	buf_free(&in);
	return 0;
}

static int
do_response(void)
{
	struct proto_response r;
	struct buf in = {0};
	char err[256];
	size_t i;

	read_stdin(&in);
	if (proto_response_parse(&r, in.p, in.len, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s\n", err);
		buf_free(&in);
		return 1;
	}
	printf("success=%d\n", r.success);
	if (r.result_kind == PROTO_J_STRING)
		print_bytes("result", r.result.p, r.result.len);
	for (i = 0; i < r.nlist; i++)
		printf("item=%s\n", r.list[i]);
	if (r.error)
		printf("error=%s\n", r.error);
	if (r.exit_code >= 0)
		printf("exit_code=%d\n", r.exit_code);
	if (r.signal)
		printf("signal=%d\n", r.signal);
	if (r.timed_out)
		printf("timed_out=1\n");
	if (r.stderr_text.len)
		print_bytes("stderr", r.stderr_text.p, r.stderr_text.len);
	if (r.id[0])
		printf("id=%s\n", r.id);
	proto_response_free(&r);
	buf_free(&in);
	return 0;
}

/* How a frame reads as a frame of a streamed call. */
static void
print_stream(const struct proto_reader *r)
{
	static const char *const kinds[] = { "", "data", "credit", "eof", "cancel" };
	struct proto_stream f;
	char err[256];
	int rc = proto_stream_parse(&f, r->body.p, r->body.len, r->json_len, err, sizeof(err));

	if (rc < 0) {
		printf("stream-error=%s\n", err);
	} else if (rc == 0) {
		printf("stream=no\n");
	} else {
		printf("stream=%s id=%s fd=%d credit=%zu kill=%d\n", kinds[f.kind], f.id, f.fd,
		    f.credit, f.kill);
		print_bytes("data", f.data, f.len);
	}
}

static int
do_frames(size_t chunk, size_t max_frame)
{
	struct proto_reader r;
	struct buf in = {0};
	size_t off = 0, end, used;
	int bad = 0;
	enum proto_event ev;

	read_stdin(&in);
	proto_reader_init(&r, max_frame);
	r.raw_ok = getenv("NEG_TEST_RAW") != NULL;
	while (off < in.len) {
		end = off + chunk < in.len ? off + chunk : in.len;
		while (off < end) {
			ev = proto_reader_feed(&r, in.p + off, end - off, &used);
			off += used;
			if (ev == PROTO_FRAME) {
				print_bytes("frame", r.body.p, r.body.len);
				if (r.raw_ok)
					print_stream(&r);
			} else if (ev == PROTO_ERROR) {
				printf("error=%s\n", r.err);
				bad = 1;
			}
		}
	}
	if (proto_reader_partial(&r))
		printf("partial\n");
	proto_reader_free(&r);
	buf_free(&in);
	return bad;
}

static int
do_buffered(size_t max_frame)
{
	struct proto_reader r;
	struct buf in = {0};
	size_t off, used;

	read_stdin(&in);
	proto_reader_init(&r, max_frame);
	for (off = 0; off < in.len; off += used)
		proto_reader_feed(&r, in.p + off, in.len - off, &used);
	printf("buffered=%zu reserved=%zu declared=%zu\n", r.body.len, r.body.cap,
	    proto_reader_declared(&r));
	proto_reader_free(&r);
	buf_free(&in);
	return 0;
}

static int64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t
now_us(void)
{
	return now_ns() / 1000;
}

/* A request payload of about size bytes whose bulk has the given shape; 0 if no such shape. */
static int
build_shape(struct buf *b, const char *shape, size_t size)
{
	size_t i;

	b->len = 0;
	buf_adds(b, "{\"method\": \"x\"");
	if (strcmp(shape, "members") == 0) {
		for (i = 1; b->len + 32 < size; i++)
			buf_addf(b, ", \"k%zu\": 1", i);
	} else if (strcmp(shape, "nested") == 0 || strcmp(shape, "flat") == 0) {
		const char *item = shape[0] == 'n' ? "[]," : "1,";

		buf_adds(b, ", \"x\": [");
		while (b->len + 8 < size)
			buf_adds(b, item);
		buf_adds(b, shape[0] == 'n' ? "[]]" : "1]");
	} else if (strcmp(shape, "string") == 0) {
		buf_adds(b, ", \"x\": \"");
		buf_reserve(b, size);
		while (b->len + 3 < size)
			b->p[b->len++] = 'a';
		buf_adds(b, "\"");
	} else {
		return 0;
	}
	buf_adds(b, "}");
	return 1;
}

/*
 * Seconds of one proto_request_parse of each size, the best of as many rounds
 * as fit in half a second (one at least), so small sizes are not mere clock
 * noise.  A round parses each size once, in turn: the sizes are measured
 * side by side, so a burst of load elsewhere on the machine falls on all of
 * them, not on whichever size was being timed.  For a ratio of sizes
 * measured in one run; at most NEG_TEST_SIZES sizes.
 */
#define NEG_TEST_SIZES 8
static int
do_parse_time(const char *shape, char **sizes, int n)
{
	struct proto_request req;
	struct buf b[NEG_TEST_SIZES];
	char err[NEG_TEST_SIZES][256];
	int64_t start, t, best[NEG_TEST_SIZES];
	int i, ok[NEG_TEST_SIZES];

	if (n > NEG_TEST_SIZES) {
		fprintf(stderr, "neg-test: at most %d sizes\n", NEG_TEST_SIZES);
		return 2;
	}
	memset(b, 0, sizeof(b));
	for (i = 0; i < n; i++) {
		if (!build_shape(&b[i], shape, (size_t)atol(sizes[i]))) {
			fprintf(stderr, "neg-test: unknown shape %s\n", shape);
			return 2;
		}
		best[i] = -1;
	}
	start = now_ns();
	do {
		for (i = 0; i < n; i++) {
			t = now_ns();
			ok[i] = proto_request_parse(&req, b[i].p, b[i].len, err[i], sizeof(err[i])) == 0;
			proto_request_free(&req);
			t = now_ns() - t;
			if (best[i] < 0 || t < best[i])
				best[i] = t;
		}
	} while (now_ns() - start < 500000000);
	for (i = 0; i < n; i++) {
		printf("%s %zu seconds=%.9f %s\n", shape, b[i].len, (double)best[i] / 1e9,
		    ok[i] ? "parsed" : err[i]);
		buf_free(&b[i]);
	}
	return 0;
}

/* Throughput of the frame reader and the request parser on one large execute request. */
static int
do_feed_time(size_t size, size_t chunk)
{
	struct proto_request kw, req;
	struct proto_reader r;
	struct buf frame = {0};
	char err[256], cmd[] = "cmd", *argv[] = { cmd, NULL };
	size_t off, used, frames = 0;
	int64_t t, feed, parse;
	enum proto_event ev;

	memset(&kw, 0, sizeof(kw));
	kw.input.len = size / 4 * 3;
	buf_reserve(&kw.input, kw.input.len);
	memset(kw.input.p, 'x', kw.input.len);
	kw.has_input = kw.base64 = 1;
	proto_request_write(&frame, "execute", argv, 1, &kw);
	proto_reader_init(&r, frame.len);
	t = now_us();
	for (off = 0; off < frame.len; off += used) {
		ev = proto_reader_feed(&r, frame.p + off, frame.len - off < chunk ? frame.len - off : chunk,
		    &used);
		if (ev == PROTO_FRAME)
			frames++;
		else if (ev == PROTO_ERROR)
			fprintf(stderr, "%s\n", r.err);
	}
	feed = now_us() - t;
	t = now_us();
	if (proto_request_parse(&req, r.body.p, r.body.len, err, sizeof(err)) < 0)
		fprintf(stderr, "%s\n", err);
	parse = now_us() - t;
	printf("bytes=%zu frames=%zu feed_seconds=%.3f feed_mb_s=%.0f parse_seconds=%.3f parse_mb_s=%.0f\n",
	    frame.len, frames, (double)feed / 1e6, (double)frame.len / (feed ? (double)feed : 1.0),
	    (double)parse / 1e6, (double)frame.len / (parse ? (double)parse : 1.0));
	proto_request_free(&req);
	proto_reader_free(&r);
	buf_free(&frame);
	buf_free(&kw.input);
	return frames == 1 ? 0 : 1;
}

static int
cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

static int
connect_unix(const char *path)
{
	struct sockaddr_un sa;
	int fd;

	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM, 0)) < 0 ||
	    connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		perror(path);
		return -1;
	}
	return fd;
}

/* lat[0..n), sorted, to $NEG_TEST_LATENCIES if set: one latency (us) a line. */
static void
dump_latencies(const int64_t *lat, int n)
{
	const char *path = getenv("NEG_TEST_LATENCIES");
	FILE *f;
	int i;

	if (path == NULL || (f = fopen(path, "w")) == NULL)
		return;
	for (i = 0; i < n; i++)
		fprintf(f, "%lld\n", (long long)lat[i]);
	fclose(f);
}

/* The stats line of calls and qga-ping: n calls, ok good ones, t us in all, lat[0..i) sorted. */
static void
print_calls(int n, int ok, int64_t t, const int64_t *lat, int i)
{
	printf("calls=%d ok=%d seconds=%.3f calls_per_second=%.0f p50_us=%lld p99_us=%lld\n", n, ok,
	    (double)t / 1e6, t ? (double)ok * 1e6 / (double)t : 0.0,
	    i ? (long long)lat[i / 2] : 0LL, i ? (long long)lat[i * 99 / 100] : 0LL);
	dump_latencies(lat, i);
}

/* The round trip of a call on a persistent connection, as a benchmark and a soak. */
static int
do_calls(const char *sock, int n, const char *method, char **args, int nargs)
{
	struct proto_request kw;
	struct neg_cli o;
	struct neg_run c, *v = &c;
	int64_t start, t, *lat = calloc((size_t)n + 1, sizeof(int64_t));
	int fd, i, ok = 0, failed;

	if ((fd = connect_unix(sock)) < 0)
		return 1;
	/* the CLIs' call machine with one request of method: one round trip, as a 0.8 caller's */
	neg_cli_init(&o, "", 1);
	o.timeout = 30;
	memset(&kw, 0, sizeof(kw));
	kw.argv = args;
	kw.argc = (size_t)nargs;
	start = now_us();
	for (i = 0; i < n; i++) {
		t = now_us();
		neg_run_start(&c, fd, 0, &o, "call", method, &kw);
		while (c.phase != NEG_RUN_DONE)
			neg_runs_turn(&v, 1, 0);
		failed = !c.have_resp;
		if (!failed && c.resp.success)
			ok++;
		else if (!failed)
			fprintf(stderr, "call %d: %s\n", i + 1, c.resp.error);
		neg_run_free(&c);
		if (failed)
			break;
		lat[i] = now_us() - t;
	}
	t = now_us() - start;
	qsort(lat, (size_t)i, sizeof(int64_t), cmp_i64);
	print_calls(n, ok, t, lat, i);
	free(lat);
	close(fd);
	return ok == n ? 0 : 1;
}

/* Writes all of s to fd, waiting as long as it takes; -1 on failure. */
static int
full_write(int fd, const char *s, size_t len)
{
	ssize_t n;

	while (len > 0) {
		n = write(fd, s, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			poll(&(struct pollfd){ .fd = fd, .events = POLLOUT }, 1, 100);
			continue;
		}
		if (n <= 0)
			return -1;
		s += n;
		len -= (size_t)n;
	}
	return 0;
}

#define ECHO_BUF (256u << 10)	/* bytes the echo holds at most */

/*
 * The far end of both floors: one poll loop on a non-blocking DEVICE, reading
 * while the buffer has room and writing while it holds bytes, so the two
 * directions flow at once (a blocking write stops the reading while the way
 * back is full: with a sender that reads as it writes that is slow, not a
 * deadlock, but it is not the floor of a full-duplex transfer).
 * A read of 0 is a virtio port whose host side is away: what is held is for
 * nobody, and the port is tried again after 1 ms (it polls as hung up; a
 * longer nap would be counted against the next floor's first bytes).
 */
static int
do_echo(const char *dev)
{
	static char b[ECHO_BUF];
	size_t off = 0, len = 0;
	struct pollfd p;
	struct termios t;
	ssize_t n;
	int fd = open(dev, O_RDWR | O_NOCTTY | O_NONBLOCK);

	if (fd < 0) {
		perror(dev);
		return 1;
	}
	if (isatty(fd) && tcgetattr(fd, &t) == 0) {
		cfmakeraw(&t);
		tcsetattr(fd, TCSANOW, &t);
	}
	for (;;) {
		p.fd = fd;
		p.events = (len < sizeof(b) ? POLLIN : 0) | (off < len ? POLLOUT : 0);
		p.revents = 0;
		if (poll(&p, 1, -1) < 0) {
			if (errno == EINTR)
				continue;
			perror("neg-test echo: poll");
			return 1;
		}
		if (len < sizeof(b) && (p.revents & (POLLIN | POLLHUP | POLLERR))) {
			n = read(fd, b + len, sizeof(b) - len);
			if (n > 0) {
				len += (size_t)n;
			} else if (n == 0) {
				off = len = 0;
				poll(NULL, 0, 1);
				continue;
			} else if (errno != EAGAIN && errno != EINTR) {
				perror("neg-test echo: read");
				return 1;
			}
		}
		if (off < len) {
			n = write(fd, b + off, len - off < NEG_WRITE_CHUNK ? len - off : NEG_WRITE_CHUNK);
			if (n > 0) {
				off += (size_t)n;
			} else if (n < 0 && errno != EAGAIN && errno != EINTR) {
				perror("neg-test echo: write");
				return 1;
			}
		}
		if (off == len) {
			off = len = 0;
		} else if (off >= sizeof(b) / 2) {
			memmove(b, b + off, len - off);
			len -= off;
			off = 0;
		}
	}
}

/* The byte at offset off of what floor sends: not periodic in any size a frame or ring has. */
static unsigned char
floor_byte(long long off)
{
	return (unsigned char)(off % 251);
}

/* The bulk floor: bytes out and the same bytes back at once through an echo. */
static int
do_floor(const char *sock, long long bytes)
{
	static char wb[NEG_WRITE_CHUNK], rb[65536];
	long long sent = 0, got = 0, bad = -1;
	int64_t start, t;
	struct pollfd p;
	ssize_t n;
	size_t i, len;
	int fd = connect_unix(sock), r;

	if (fd < 0)
		return 1;
	if (bytes <= 0) {
		fprintf(stderr, "neg-test floor: BYTES must be positive\n");
		return 2;
	}
	neg_set_nonblock(fd);
	start = now_ns();
	while (got < bytes) {
		p.fd = fd;
		p.events = POLLIN | (sent < bytes ? POLLOUT : 0);
		p.revents = 0;
		if ((r = poll(&p, 1, 30000)) < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			fprintf(stderr, "neg-test floor: %s after %lld bytes out, %lld back\n",
			    r == 0 ? "nothing moved for 30 s" : strerror(errno), sent, got);
			return 1;
		}
		if (sent < bytes && (p.revents & POLLOUT)) {
			len = bytes - sent < (long long)sizeof(wb) ? (size_t)(bytes - sent) : sizeof(wb);
			for (i = 0; i < len; i++)
				wb[i] = (char)floor_byte(sent + (long long)i);
			n = write(fd, wb, len);
			if (n > 0) {
				sent += n;
			} else if (n < 0 && errno != EAGAIN && errno != EINTR) {
				perror("neg-test floor: write");
				return 1;
			}
		}
		if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
			n = read(fd, rb, sizeof(rb));
			if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
				fprintf(stderr, "neg-test floor: %s after %lld bytes out, %lld back\n",
				    n == 0 ? "end of file" : strerror(errno), sent, got);
				return 1;
			}
			for (i = 0; n > 0 && i < (size_t)n; i++)
				if (bad < 0 && (unsigned char)rb[i] != floor_byte(got + (long long)i))
					bad = got + (long long)i;
			if (n > 0)
				got += n;
			if (got > sent) {
				fprintf(stderr, "neg-test floor: %lld bytes back, only %lld sent\n", got, sent);
				return 1;
			}
		}
	}
	t = now_ns() - start;
	close(fd);
	printf("bytes=%lld seconds=%.3f mb_s=%.1f %s\n", bytes, (double)t / 1e9,
	    (double)bytes * 1e3 / (double)(t ? t : 1), bad < 0 ? "intact" : "DIFFERENT");
	if (bad >= 0)
		fprintf(stderr, "neg-test floor: the bytes back differ from offset %lld\n", bad);
	return bad < 0 ? 0 : 1;
}

/* N lines of their own time, one every ms milliseconds, for the line latency. */
static int
do_stamp(int n, int ms)
{
	struct timespec next;
	char line[32];
	int i, len;

	clock_gettime(CLOCK_MONOTONIC, &next);
	for (i = 0; i < n; i++) {
		len = snprintf(line, sizeof(line), "%lld\n", (long long)now_ns());
		if (full_write(1, line, (size_t)len) < 0)
			return 1;
		next.tv_nsec += (long)ms * 1000000;
		next.tv_sec += next.tv_nsec / 1000000000;
		next.tv_nsec %= 1000000000;
		while (i + 1 < n && clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR)
			;
	}
	return 0;
}

/* How long stamp's lines took to get here: each line's time against the time its read returned. */
static int
do_latency(void)
{
	char b[65536], *nl, *end;
	size_t len = 0, cap = 1024, nlat = 0, i, off;
	int64_t *lat = malloc(cap * sizeof(int64_t)), t;
	long long v;
	ssize_t n;
	int other = 0;

	for (;;) {
		n = read(0, b + len, sizeof(b) - 1 - len);
		t = now_ns();
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
		for (off = 0; (nl = memchr(b + off, '\n', len - off)) != NULL; off = (size_t)(nl - b) + 1) {
			*nl = '\0';
			v = strtoll(b + off, &end, 10);
			if (end == b + off || *end != '\0') {
				other++;
				continue;
			}
			if (nlat == cap)
				lat = realloc(lat, (cap *= 2) * sizeof(int64_t));
			lat[nlat++] = t - v;
		}
		memmove(b, b + off, len - off);
		len -= off;
		if (len == sizeof(b) - 1)
			len = 0;	/* a line too long for a time: dropped */
	}
	qsort(lat, nlat, sizeof(int64_t), cmp_i64);
	i = nlat ? (nlat * 99 + 99) / 100 - 1 : 0;	/* the 99th percentile, nearest rank */
	printf("lines=%zu p50_ms=%.3f p99_ms=%.3f max_ms=%.3f", nlat,
	    nlat ? (double)lat[(nlat - 1) / 2] / 1e6 : 0.0, nlat ? (double)lat[i] / 1e6 : 0.0,
	    nlat ? (double)lat[nlat - 1] / 1e6 : 0.0);
	if (other)
		printf(" other_lines=%d", other);
	printf("\n");
	free(lat);
	return nlat ? 0 : 1;
}

static int
do_rtt(const char *sock, int n, int size)
{
	char *b = calloc(1, (size_t)size), *r = calloc(1, (size_t)size);
	int64_t start, t, *lat = calloc((size_t)n + 1, sizeof(int64_t));
	ssize_t k;
	int fd = connect_unix(sock), i, got;

	if (fd < 0)
		return 1;
	memset(b, 'x', (size_t)size);
	start = now_us();
	for (i = 0; i < n; i++) {
		t = now_us();
		if (write(fd, b, (size_t)size) != size)
			return 1;
		for (got = 0; got < size; got += (int)k)
			if ((k = read(fd, r + got, (size_t)(size - got))) <= 0)
				return 1;
		lat[i] = now_us() - t;
	}
	t = now_us() - start;
	qsort(lat, (size_t)n, sizeof(int64_t), cmp_i64);
	printf("round_trips=%d bytes=%d seconds=%.3f per_second=%.0f p50_us=%lld p99_us=%lld\n", n, size,
	    (double)t / 1e6, (double)n * 1e6 / (double)t, (long long)lat[n / 2],
	    (long long)lat[n * 99 / 100]);
	dump_latencies(lat, n);
	return 0;
}

/* The one-way floor: BYTES from whatever the far end sends (a bare cat), first byte to last. */
static int
do_sink(const char *sock, long long bytes)
{
	char b[1 << 16];
	long long got = 0;
	int64_t start = 0, t;
	ssize_t n;
	int fd = connect_unix(sock);

	if (fd < 0)
		return 1;
	while (got < bytes && (n = read(fd, b, sizeof(b))) > 0) {
		if (got == 0)
			start = now_us();
		got += n;
	}
	t = got ? now_us() - start : 0;
	printf("bytes=%lld seconds=%.3f mb_s=%.1f\n", got, (double)t / 1e6,
	    t ? (double)got / (double)t : 0.0);
	close(fd);
	return got == bytes ? 0 : 1;
}

/* ---- qga: QEMU's guest agent (a JSON value a line each way), for the bench alone ---- */

#define QGA_CALL_MS 60000	/* one answer from the agent may take this long */

/*
 * The next line from fd, without its newline, in line; in holds what was read
 * past it.  -1 on EOF, error or after QGA_CALL_MS.
 */
static int
qga_line(int fd, struct buf *in, struct buf *line)
{
	int64_t deadline = now_ns() / 1000000 + QGA_CALL_MS, left;
	size_t scanned = 0;
	char *nl;
	ssize_t n;

	while ((nl = memchr(in->p + scanned, '\n', in->len - scanned)) == NULL) {
		scanned = in->len;
		if ((left = deadline - now_ns() / 1000000) <= 0 ||
		    poll(&(struct pollfd){ .fd = fd, .events = POLLIN }, 1, (int)left) <= 0)
			return -1;
		buf_reserve(in, 1 << 16);
		if ((n = read(fd, in->p + in->len, 1 << 16)) <= 0)
			return -1;
		in->len += (size_t)n;
		in->p[in->len] = '\0';
	}
	line->len = 0;
	buf_add(line, in->p, (size_t)(nl - in->p));
	in->len -= (size_t)(nl + 1 - in->p);
	memmove(in->p, nl + 1, in->len + 1);
	return 0;
}

/* The member key of the object at tok, or -1 (tok no object, or no such member). */
static int
qga_member(const struct proto_json *j, int tok, const char *key)
{
	return proto_json_type(j, tok) == PROTO_J_OBJECT ? proto_json_get(j, tok, key) : -1;
}

/* The number member key of the object at tok; -1 if there is none. */
static double
qga_number(const struct proto_json *j, int tok, const char *key)
{
	int m = qga_member(j, tok, key);
	double v;

	return m >= 0 && proto_json_number(j, m, &v) == 0 ? v : -1;
}

/*
 * Sends req and parses the answer into j (its text in line); the token of
 * its "return", or -1 with the reason on stderr.
 */
static int
qga_call(int fd, struct buf *in, struct buf *line, const char *req, struct proto_json *j)
{
	char err[256];
	int r;

	if (full_write(fd, req, strlen(req)) < 0 || full_write(fd, "\n", 1) < 0 ||
	    qga_line(fd, in, line) < 0) {
		fprintf(stderr, "neg-test: qga: no answer to %s\n", req);
		return -1;
	}
	if (proto_json_parse(j, line->p, line->len, err, sizeof(err)) < 0) {
		fprintf(stderr, "neg-test: qga: %s\n", err);
		return -1;
	}
	if ((r = qga_member(j, 0, "return")) < 0) {
		fprintf(stderr, "neg-test: qga: %.200s\n", line->p);
		proto_json_free(j);
		return -1;
	}
	return r;
}

/*
 * Connects and syncs as the agent's clients do: a reply left over from an
 * earlier client may still be on the way, so lines are read until the one
 * that returns this sync's id.  The socket, or -1.
 */
static int
qga_connect(const char *sock, struct buf *in, struct buf *line)
{
	struct proto_json j;
	char req[128];
	double v;
	int fd, r, id = (int)(now_ns() / 1000 % 1000000000);

	if ((fd = connect_unix(sock)) < 0)
		return -1;
	snprintf(req, sizeof(req), "{\"execute\": \"guest-sync\", \"arguments\": {\"id\": %d}}", id);
	if ((r = qga_call(fd, in, line, req, &j)) < 0) {
		close(fd);
		return -1;
	}
	for (;;) {
		if (proto_json_number(&j, r, &v) == 0 && v == id) {
			proto_json_free(&j);
			return fd;
		}
		proto_json_free(&j);
		if (qga_line(fd, in, line) < 0 ||
		    proto_json_parse(&j, line->p, line->len, req, sizeof(req)) < 0 ||
		    (r = qga_member(&j, 0, "return")) < 0) {
			fprintf(stderr, "neg-test: qga: guest-sync %d: no answer\n", id);
			close(fd);
			return -1;
		}
	}
}

static int
do_qga_ping(const char *sock, int n)
{
	struct buf in = {0}, line = {0};
	struct proto_json j;
	int64_t start, t, *lat = calloc((size_t)n + 1, sizeof(int64_t));
	int fd, i, ok = 0;

	if ((fd = qga_connect(sock, &in, &line)) < 0)
		return 1;
	start = now_us();
	for (i = 0; i < n; i++) {
		t = now_us();
		if (qga_call(fd, &in, &line, "{\"execute\": \"guest-ping\"}", &j) < 0)
			break;
		lat[i] = now_us() - t;
		ok++;
		proto_json_free(&j);
	}
	t = now_us() - start;
	qsort(lat, (size_t)i, sizeof(int64_t), cmp_i64);
	print_calls(n, ok, t, lat, i);
	free(lat);
	buf_free(&in);
	buf_free(&line);
	close(fd);
	return ok == n ? 0 : 1;
}

/* A base64 string member of the object at tok, decoded onto fd; -1 if it is not base64. */
static int
qga_data(const struct proto_json *j, int tok, const char *key, int fd)
{
	struct buf s = {0}, d = {0};
	int m = qga_member(j, tok, key), rc = 0;

	if (m < 0)
		return 0;
	if (proto_json_string(j, m, &s) < 0 || proto_b64_decode(&d, s.p, s.len) < 0 ||
	    full_write(fd, d.p, d.len) < 0)
		rc = -1;
	buf_free(&s);
	buf_free(&d);
	return rc;
}

static int
do_qga_exec(const char *sock, int ms, char **argv, int argc)
{
	struct buf in = {0}, line = {0}, req = {0};
	struct proto_json j;
	double pid, code = -1;
	int fd, r, m, i, exited = 0;

	if ((fd = qga_connect(sock, &in, &line)) < 0)
		return 125;
	buf_adds(&req, "{\"execute\": \"guest-exec\", \"arguments\": {\"path\": ");
	proto_put_string(&req, argv[0], strlen(argv[0]));
	buf_adds(&req, ", \"arg\": [");
	for (i = 1; i < argc; i++) {
		if (i > 1)
			buf_adds(&req, ", ");
		proto_put_string(&req, argv[i], strlen(argv[i]));
	}
	buf_adds(&req, "], \"capture-output\": true}}");
	if ((r = qga_call(fd, &in, &line, req.p, &j)) < 0)
		return 125;
	pid = qga_number(&j, r, "pid");
	proto_json_free(&j);
	req.len = 0;
	buf_addf(&req, "{\"execute\": \"guest-exec-status\", \"arguments\": {\"pid\": %.0f}}", pid);
	for (i = 0; !exited; i++) {
		if (i > 0)
			poll(NULL, 0, ms);
		if ((r = qga_call(fd, &in, &line, req.p, &j)) < 0)
			return 125;
		m = qga_member(&j, r, "exited");
		exited = m >= 0 && proto_json_is(&j, m, "true");
		if (exited) {
			code = qga_number(&j, r, "exitcode");
			if (qga_data(&j, r, "out-data", 1) < 0 || qga_data(&j, r, "err-data", 2) < 0) {
				fprintf(stderr, "neg-test: qga: bad out-data or err-data\n");
				code = 125;
			}
		}
		proto_json_free(&j);
	}
	buf_free(&in);
	buf_free(&line);
	buf_free(&req);
	close(fd);
	return code < 0 || code > 255 ? 125 : (int)code;
}

/* ---- peer08: the Python negotiator 0.8 daemon, as far as the fallback tests need it ---- */

/*
 * One line of LOG: the payload as received, a raw newline (only JSON white
 * space can be one: strings escape theirs) written as the two characters \n.
 */
static void
peer08_log(int fd, const char *p, size_t len)
{
	struct buf line = {0};
	const char *e = p + len, *nl;

	buf_reserve(&line, len + 1);
	while ((nl = memchr(p, '\n', (size_t)(e - p))) != NULL) {
		buf_add(&line, p, (size_t)(nl - p));
		buf_adds(&line, "\\n");
		p = nl + 1;
	}
	buf_add(&line, p, (size_t)(e - p));
	buf_add(&line, "\n", 1);
	if (full_write(fd, line.p, line.len) < 0)
		fprintf(stderr, "neg-test peer08: cannot write the log: %s\n", strerror(errno));
	buf_free(&line);
}

/*
 * What the reference's execute(capture=True) makes of output: one line (no
 * line break but a final one) loses its surrounding white space, several
 * lines are kept as they are (the rule of neg.c's strip_one_line).
 */
static void
peer08_strip(const char **s, size_t *len)
{
	const char *p = *s, *e = *s + *len, *q;

	for (q = p; q < e; q++) {
		if (*q == '\r' && q + 1 < e && q[1] == '\n')
			q++;
		if ((*q == '\n' || *q == '\r') && q + 1 < e)
			return;
	}
	while (p < e && isspace((unsigned char)*p))
		p++;
	while (e > p && isspace((unsigned char)e[-1]))
		e--;
	*s = p;
	*len = (size_t)(e - p);
}

/* kw.input of the payload exactly as its JSON string says, base64 or not; 0 if there is none. */
static int
peer08_raw_input(const char *js, size_t len, struct buf *out)
{
	struct proto_json j;
	char err[256];
	int kw, tok, ok = 0;

	if (proto_json_parse(&j, js, len, err, sizeof(err)) < 0)
		return 0;
	if ((kw = proto_json_get(&j, 0, "kw")) < 0)
		kw = proto_json_get(&j, 0, "keyword-arguments");
	if (kw >= 0 && proto_json_type(&j, kw) == PROTO_J_OBJECT &&
	    (tok = proto_json_get(&j, kw, "input")) >= 0)
		ok = proto_json_string(&j, tok, out) == 0;
	proto_json_free(&j);
	return ok;
}

static void
peer08_failure(struct buf *b, int code, const char *name)
{
	struct proto_failure f;
	char text[512];

	snprintf(text, sizeof(text), "External command failed with exit code %d (command: %s)",
	    code, name);
	memset(&f, 0, sizeof(f));
	f.error = text;
	f.exit_code = -1;	/* the reference sends no exit_code */
	proto_reply_error(b, "", &f);
}

/* The reply frame the reference would write to one request payload; nothing if it is none. */
static void
peer08_answer(struct buf *b, const char *js, size_t len)
{
	static char cat[] = "cat", echo[] = "echo", fail[] = "fail";
	static char *names[] = { cat, echo, fail };
	struct proto_request req;
	struct proto_failure f;
	struct buf out = {0};
	const char *name, *s;
	char err[256], *end;
	size_t i, n;
	long code;

	if (proto_request_parse(&req, js, len, err, sizeof(err)) < 0) {
		proto_request_free(&req);
		return;
	}
	name = req.argc > 0 ? req.argv[0] : "";
	if (strcmp(req.method, "list_commands") == 0) {
		proto_reply_list(b, "", names, sizeof(names) / sizeof(names[0]));
	} else if (strcmp(req.method, "execute") != 0) {
		snprintf(err, sizeof(err), "Method %s not supported", req.method);
		memset(&f, 0, sizeof(f));
		f.error = err;
		f.exit_code = -1;
		proto_reply_error(b, "", &f);
	} else if (strcmp(name, "fail") == 0) {
		code = 1;
		if (req.argc > 1) {
			code = strtol(req.argv[1], &end, 10);
			if (end == req.argv[1] || *end != '\0')
				code = 1;
			code &= 255;	/* exit N as a shell takes it */
		}
		if (code == 0)
			proto_reply_string(b, "", "", 0, 0, NULL, 0);
		else
			peer08_failure(b, (int)code, "fail");
	} else if (strcmp(name, "cat") == 0 || strcmp(name, "echo") == 0) {
		if (name[0] == 'c') {
			peer08_raw_input(js, len, &out);
		} else {
			for (i = 1; i < req.argc; i++) {
				if (i > 1)
					buf_adds(&out, " ");
				buf_adds(&out, req.argv[i]);
			}
			buf_adds(&out, "\n");
		}
		buf_reserve(&out, 0);
		s = out.p;
		n = out.len;
		peer08_strip(&s, &n);
		proto_reply_string(b, "", s, n, 0, NULL, 0);
	} else {
		peer08_failure(b, 127, name);
	}
	buf_free(&out);
	proto_request_free(&req);
}

static int
do_peer08(const char *how, const char *path, const char *logpath)
{
	struct proto_reader r;
	struct buf reply = {0};
	struct termios t;
	char b[NEG_READ_CHUNK];
	size_t off, used;
	ssize_t n;
	int fd, logfd, device = strcmp(how, "--device") == 0;
	enum proto_event ev;

	if (!device && strcmp(how, "--connect") != 0) {
		fprintf(stderr, "usage: neg-test peer08 (--device PATH | --connect SOCKET) LOG\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	if ((logfd = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0644)) < 0) {
		perror(logpath);
		return 1;
	}
	if (device) {
		if ((fd = open(path, O_RDWR | O_NOCTTY)) < 0) {
			perror(path);
			return 1;
		}
		if (isatty(fd) && tcgetattr(fd, &t) == 0) {
			cfmakeraw(&t);
			tcsetattr(fd, TCSANOW, &t);
		}
	} else if ((fd = connect_unix(path)) < 0) {
		return 1;
	}
	proto_reader_init(&r, PROTO_MAX_FRAME_DEFAULT);
	for (;;) {
		n = read(fd, b, sizeof(b));
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0) {
			fprintf(stderr, "neg-test peer08: %s: %s\n", path, strerror(errno));
			break;
		}
		if (n == 0 && !device)
			break;
		if (n == 0) {
			/* a port whose host side is away: wait for it, as the reference does */
			poll(NULL, 0, 100);
			continue;
		}
		for (off = 0; off < (size_t)n; off += used) {
			ev = proto_reader_feed(&r, b + off, (size_t)n - off, &used);
			if (ev == PROTO_ERROR)
				fprintf(stderr, "neg-test peer08: %s\n", r.err);
			if (ev != PROTO_FRAME)
				continue;
			peer08_log(logfd, r.body.p, r.body.len);
			reply.len = 0;
			peer08_answer(&reply, r.body.p, r.body.len);
			if (reply.len && full_write(fd, reply.p, reply.len) < 0) {
				fprintf(stderr, "neg-test peer08: cannot write to %s: %s\n", path,
				    strerror(errno));
				goto out;
			}
		}
	}
out:
	proto_reader_free(&r);
	buf_free(&reply);
	close(fd);
	close(logfd);
	return n == 0 ? 0 : 1;
}

/* Each reply's outcome in out, one line each; how many replies. */
static int
serve_replies(const struct buf *out)
{
	struct proto_reader r;
	struct proto_response resp;
	char err[256];
	size_t off, used;
	int replies = 0;

	proto_reader_init(&r, PROTO_MAX_FRAME_DEFAULT);
	for (off = 0; off < out->len; off += used) {
		if (proto_reader_feed(&r, out->p + off, out->len - off, &used) != PROTO_FRAME)
			continue;
		replies++;
		if (proto_response_parse(&resp, r.body.p, r.body.len, err, sizeof(err)) < 0)
			printf("bad reply: %s\n", err);
		else if (resp.success)
			printf("success\n");
		else
			printf("error=%s\n", resp.error);
		proto_response_free(&resp);
	}
	proto_reader_free(&r);
	return replies;
}

/*
 * neg-test serve: the frames on stdin through a daemon's served channel
 * (neg_chan_io, as both daemons' loops call it), the replies read back;
 * the checker's runs counted from the first byte sent to the last reply,
 * before the replies are parsed here.
 */
static int
do_serve(void)
{
	struct neg_server srv;
	struct neg_chan c;
	struct pollfd p[NEG_CHAN_FDS];
	struct buf in = {0}, out = {0};
	unsigned long before, checks;
	char b[NEG_READ_CHUNK];
	ssize_t got;
	int sv[2], n, idle, replies;

	read_stdin(&in);
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) {
		perror("socketpair");
		return 1;
	}
	neg_set_nonblock(sv[0]);
	neg_set_nonblock(sv[1]);
	memset(&srv, 0, sizeof(srv));
	srv.env.dir = "/nonexistent";	/* the built-ins alone */
	srv.max_frame = PROTO_MAX_FRAME_DEFAULT;
	srv.max_running = 1;
	neg_chan_init(&c, sv[0], &srv, 1);
	before = proto_check_runs();
	if (full_write(sv[1], in.p, in.len) < 0) {
		perror("write");
		return 1;
	}
	/* done once a quiet turn finds every byte read and every reply out */
	for (idle = 0; idle < 2; ) {
		n = neg_chan_pollfds(&c, p, 1);
		if (poll(p, (nfds_t)n, 200) < 0 || neg_chan_io(&c, p, n) < 0)
			break;
		for (n = 0; (got = read(sv[1], b, sizeof(b))) > 0; n++)
			buf_add(&out, b, (size_t)got);
		idle = n == 0 && c.in.len == 0 && c.outoff == c.out.len && !neg_chan_busy(&c) ?
		    idle + 1 : 0;
	}
	checks = proto_check_runs() - before;
	replies = serve_replies(&out);
	printf("checks=%lu replies=%d\n", checks, replies);
	neg_chan_free(&c);
	buf_free(&in);
	buf_free(&out);
	close(sv[0]);
	close(sv[1]);
	return 0;
}

/*
 * Every row of the slot table through slot_event itself, on a channel of
 * nothing: each allowed row must land in the state the table names, each
 * other row must change nothing (and is logged).  QUEUED + start would run
 * a command: the fake tier covers it, here only the table says it.
 */
static int
slot_walk(void)
{
	struct neg_server srv;
	struct neg_chan c;
	struct neg_slot *s;
	int st, ev, want, bad = 0;

	memset(&srv, 0, sizeof(srv));
	srv.max_frame = 1 << 20;
	srv.max_running = 1;
	for (st = 0; st < SLOT_STATES; st++)
		for (ev = 0; ev < SEV_COUNT; ev++) {
			neg_chan_init(&c, -1, &srv, 1);
			s = &c.slot[0];
			s->state = st;
			c.count = st != SLOT_FREE;
			s->job.fd_in = s->job.fd_out = s->job.fd_err = -1;
			want = neg_slot_next(st, ev);
			if (st == SLOT_QUEUED && ev == SEV_START) {
				printf("%d %d -> %d (the table's word)\n", st, ev, want);
				continue;
			}
			neg_slot_event(&c, 0, ev);
			printf("%d %d -> %d%s\n", st, ev, s->state, want < 0 ? " (ignored)" : "");
			if (s->state != (want < 0 ? st : want))
				bad = 1;
			neg_chan_free(&c);
		}
	return bad;
}

int
main(int argc, char **argv)
{
	struct buf b = {0}, in = {0};
	struct proto_failure f;
	char err[256], **v;
	size_t n, i;

	neg_progname = "neg-test";
	if (argc < 2) {
		fprintf(stderr, "usage: neg-test MODE [ARG...]\n");
		return 2;
	}
	if (strcmp(argv[1], "slot-table") == 0) {
		neg_slot_table(&b);
		fwrite(b.p, 1, b.len, stdout);
		buf_free(&b);
		return 0;
	}
	if (strcmp(argv[1], "serve") == 0 && argc == 2)
		return do_serve();
	if (strcmp(argv[1], "slot-walk") == 0)
		return slot_walk();
	if (strcmp(argv[1], "request") == 0)
		return do_request();
	if (strcmp(argv[1], "response") == 0)
		return do_response();
	if (strcmp(argv[1], "echo") == 0 && argc == 3)
		return do_echo(argv[2]);
	if (strcmp(argv[1], "peer08") == 0 && argc == 5)
		return do_peer08(argv[2], argv[3], argv[4]);
	if (strcmp(argv[1], "floor") == 0 && argc == 4)
		return do_floor(argv[2], atoll(argv[3]));
	if (strcmp(argv[1], "stamp") == 0 && argc == 4)
		return do_stamp(atoi(argv[2]), atoi(argv[3]));
	if (strcmp(argv[1], "latency") == 0 && argc == 2)
		return do_latency();
	if (strcmp(argv[1], "rtt") == 0 && argc == 5)
		return do_rtt(argv[2], atoi(argv[3]), atoi(argv[4]));
	if (strcmp(argv[1], "sink") == 0 && argc == 4)
		return do_sink(argv[2], atoll(argv[3]));
	if (strcmp(argv[1], "qga-ping") == 0 && argc == 4)
		return do_qga_ping(argv[2], atoi(argv[3]));
	if (strcmp(argv[1], "qga-exec") == 0 && argc >= 5)
		return do_qga_exec(argv[2], atoi(argv[3]), argv + 4, argc - 4);
	if (strcmp(argv[1], "calls") == 0 && argc >= 5)
		return do_calls(argv[2], atoi(argv[3]), argv[4], argv + 5, argc - 5);
	if (strcmp(argv[1], "frames") == 0)
		return do_frames(argc > 2 ? (size_t)atol(argv[2]) : 1 << 20,
		    argc > 3 ? (size_t)atol(argv[3]) : 1 << 20);
	if (strcmp(argv[1], "buffered") == 0 && argc == 3)
		return do_buffered((size_t)atol(argv[2]));
	if (strcmp(argv[1], "parse-time") == 0 && argc > 3)
		return do_parse_time(argv[2], argv + 3, argc - 3);
	if (strcmp(argv[1], "feed-time") == 0 && argc > 2)
		return do_feed_time((size_t)atol(argv[2]), argc > 3 ? (size_t)atol(argv[3]) : 65536);
	if (strcmp(argv[1], "write-request") == 0 && argc > 2) {
		proto_request_write(&b, argv[2], argv + 3, (size_t)(argc - 3), NULL);
	} else if (strcmp(argv[1], "write-reply") == 0 && argc == 3) {
		proto_reply_string(&b, "", argv[2], strlen(argv[2]), 0, NULL, 0);
	} else if (strcmp(argv[1], "write-list") == 0) {
		proto_reply_list(&b, "", argv + 2, (size_t)(argc - 2));
	} else if (strcmp(argv[1], "write-error") == 0 && argc == 3) {
		memset(&f, 0, sizeof(f));
		f.error = argv[2];
		f.exit_code = -1;
		proto_reply_error(&b, "", &f);
	} else if (strcmp(argv[1], "b64enc") == 0) {
		read_stdin(&in);
		proto_b64_encode(&b, in.p, in.len);
	} else if (strcmp(argv[1], "b64dec") == 0) {
		read_stdin(&in);
		if (proto_b64_decode(&b, in.p, in.len) < 0) {
			fprintf(stderr, "invalid base64\n");
			return 1;
		}
	} else if (strcmp(argv[1], "split") == 0 && argc == 3) {
		if (neg_split(argv[2], &v, &n, err, sizeof(err)) < 0) {
			fprintf(stderr, "%s\n", err);
			return 1;
		}
		for (i = 0; i < n; i++)
			printf("[%s]\n", v[i]);
		neg_strv_free(v);
		return 0;
	} else if (strcmp(argv[1], "builtin") == 0 && argc == 3) {
		return neg_builtin_run(argv[2]);
	} else {
		fprintf(stderr, "neg-test: unknown mode %s\n", argv[1]);
		return 2;
	}
	if (b.len)
		fwrite(b.p, 1, b.len, stdout);
	buf_free(&b);
	buf_free(&in);
	return 0;
}
