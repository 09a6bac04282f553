/*
 * fuzz: libFuzzer harnesses for what a peer (or a user's -e line) feeds the
 * programs.  One file, one target per build, picked by -DFUZZ_<TARGET>:
 *
 *   FUZZ_READER    the frame reader, fed the input in chunk sizes the input picks,
 *                  then every frame it returns parsed as a request and as a reply,
 *                  and as a daemon serves it (proto_served_parse, the reader's
 *                  check reused), which must say what the parsers say alone
 *   FUZZ_REQUEST   a request payload; an accepted one is written back and must
 *                  parse to the same method, arguments, input, encoding and id
 *   FUZZ_RESPONSE  a reply payload
 *   FUZZ_BASE64    decoding, and encode-then-decode giving the bytes back
 *   FUZZ_SPLIT     neg_split, and splitting the words again once quoted
 *   FUZZ_NUMBERS   neg_parse_size, neg_parse_seconds, proto_parse_number against
 *                  plain reference implementations
 *
 * Only the interface in neg_proto.h is used, so the harnesses keep working as
 * neg_proto.c's insides change.  A broken invariant aborts: libFuzzer saves the
 * input as a crash like any sanitizer report.  `make fuzz` builds them into
 * t/fuzz-bin/, `make fuzz-run` (and t/fuzz.bats) runs each on a copy of its
 * seed corpus in t/fuzz/TARGET/.
 */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sanitizer/asan_interface.h>

#include "neg_proto.h"

#define FUZZ_ERRLEN 512       /* what the programs give their parsers for a reason */
#define FUZZ_MAX_CHUNKS 8     /* chunk sizes the reader's input may pick, cycled */
#define FUZZ_ROUND_SECONDS 0.0005 /* timeouts travel in whole milliseconds */

/* The helpers below serve several targets; a build has one, so some go unused in it. */
#define FUZZ_HELPER static __attribute__((unused))

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static void
fuzz_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void
fuzz_fail(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "fuzz: invariant broken: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

/* A reason was given, and it is a string within its buffer. */
FUZZ_HELPER void
check_err(const char *what, const char *err, size_t errlen)
{
	if (memchr(err, '\0', errlen) == NULL || err[0] == '\0')
		fuzz_fail("%s failed without a reason", what);
}

/* An exact-size copy: ASan then sees a read one byte past what the callee was given. */
FUZZ_HELPER char *
copy(const uint8_t *data, size_t size, int nul)
{
	char *p = malloc(size + (size_t)nul);

	if (p == NULL)
		fuzz_fail("out of memory");
	if (size)
		memcpy(p, data, size);
	if (nul)
		p[size] = '\0';
	return p;
}

FUZZ_HELPER int
same_bytes(const char *a, size_t alen, const char *b, size_t blen)
{
	return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

#if defined(FUZZ_READER) || defined(FUZZ_REQUEST)
/* What every accepted request promises the daemons. */
static void
check_request(const struct proto_request *r)
{
	size_t i;

	if (r->method == NULL || r->argv == NULL || r->argv[r->argc] != NULL)
		fuzz_fail("request without method or terminated argv");
	if (r->argc > PROTO_MAX_ARGS)
		fuzz_fail("request with %zu arguments", r->argc);
	for (i = 0; i < r->argc; i++)
		if (r->argv[i] == NULL)
			fuzz_fail("argument %zu is NULL", i);
	if (memchr(r->id, '\0', sizeof(r->id)) == NULL)
		fuzz_fail("request id not terminated");
	if (!(r->timeout >= 0 && r->timeout <= 1e7))
		fuzz_fail("request timeout %g out of range", r->timeout);
	if (!r->has_input && r->input.len)
		fuzz_fail("input without has_input");
}
#endif

#if defined(FUZZ_READER) || defined(FUZZ_RESPONSE)
static void
check_response(const struct proto_response *r)
{
	size_t i;

	if (r->success != 0 && r->success != 1)
		fuzz_fail("success is %d", r->success);
	if (r->result.p == NULL || r->result.p[r->result.len] != '\0')
		fuzz_fail("result not a terminated buffer");
	if (r->stderr_text.p && r->stderr_text.p[r->stderr_text.len] != '\0')
		fuzz_fail("stderr not terminated");
	if (r->result_kind == PROTO_J_ARRAY) {
		if (r->list == NULL || r->list[r->nlist] != NULL)
			fuzz_fail("list result not terminated");
		for (i = 0; i < r->nlist; i++)
			if (r->list[i] == NULL)
				fuzz_fail("list item %zu is NULL", i);
	} else if (r->list || r->nlist) {
		fuzz_fail("a list beside a result of kind %d", r->result_kind);
	}
	if (!r->success && r->error == NULL)
		fuzz_fail("failure without an error text");
	if (r->exit_code < -1 || r->signal < 0)
		fuzz_fail("exit_code %d, signal %d", r->exit_code, r->signal);
	if (memchr(r->id, '\0', sizeof(r->id)) == NULL)
		fuzz_fail("reply id not terminated");
}
#endif

#ifdef FUZZ_READER
/* The reader's limit, picked by the input: tiny ones make oversize frames cheap to reach. */
static const size_t max_frames[8] = {
	1, 8, 32, 100, 1024, 4096, 65536, PROTO_MAX_FRAME_DEFAULT
};

/* Both parsers on a frame's payload, as the daemons and the clients run them. */
static void
parse_frame(const char *p, size_t len)
{
	struct proto_request req;
	struct proto_response resp;
	char err[FUZZ_ERRLEN];

	if (proto_request_parse(&req, p, len, err, sizeof(err)) == 0)
		check_request(&req);
	else
		check_err("proto_request_parse", err, sizeof(err));
	proto_request_free(&req);
	if (proto_response_parse(&resp, p, len, err, sizeof(err)) == 0)
		check_response(&resp);
	else
		check_err("proto_response_parse", err, sizeof(err));
	/* freeing after a refusal too: the response target checks that it leaves nothing */
	proto_response_free(&resp);
}

static int
json_valid(const char *p, size_t len)
{
	struct proto_json j;
	char err[FUZZ_ERRLEN];

	if (proto_json_parse(&j, p ? p : "", len, err, sizeof(err)) < 0)
		return 0;
	proto_json_free(&j);
	return 1;
}

static int
is_space(int c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

/*
 * A frame ending at s[end] must be the bytes just read, after a newline and a
 * length line that says its length.  The line starts at the previous event or
 * newline.  After an error the reader may have resynchronized anywhere since
 * (inside a skipped body, inside a line), so then a tail of the line's last
 * digits must say the length.
 */
static void
check_frame(const char *s, size_t end, size_t last, int resync, const struct buf *body,
    size_t max_frame)
{
	size_t start, line, e, d, v = 0, place = 1;
	int said = 0;

	if (body->len > max_frame)
		fuzz_fail("frame of %zu bytes over the limit of %zu", body->len, max_frame);
	if (body->len && (body->p == NULL || body->p[body->len] != '\0'))
		fuzz_fail("frame body not a terminated buffer");
	if (end < last + body->len + 2)
		fuzz_fail("frame of %zu bytes from %zu bytes", body->len, end - last);
	start = end - body->len;
	if (!same_bytes(body->p, body->len, s + start, body->len))
		fuzz_fail("frame body is not the bytes read");
	if (s[start - 1] != '\n')
		fuzz_fail("frame body not after a newline");
	e = start - 1;
	for (line = e; line > last && s[line - 1] != '\n'; line--)
		;
	while (e > line && is_space((unsigned char)s[e - 1]))
		e--;
	if (!resync && start - 1 - line > PROTO_MAX_LENLINE)
		fuzz_fail("frame after a length line of %zu bytes", start - 1 - line);
	/* right to left; place is capped past the length, so nothing overflows */
	for (d = e; d > line && s[d - 1] >= '0' && s[d - 1] <= '9'; d--) {
		v += (size_t)(s[d - 1] - '0') * place;
		place = place > body->len ? body->len + 1 : place * 10;
		if (v > body->len)
			break;
		said |= v == body->len;
	}
	if (d == e)
		fuzz_fail("frame after a length line without digits");
	if (resync ? !said : v != body->len)
		fuzz_fail("frame of %zu bytes after a length line that says otherwise", body->len);
	for (; !resync && line < d; line++)
		if (!is_space((unsigned char)s[line]))
			fuzz_fail("frame after a length line with other characters");
}

/*
 * A data frame ("H+R\n", H bytes of JSON, R raw) ending at s[end]: its length
 * line, right before it, ends in "H+R" for its two parts, and its header is
 * one JSON object.  The line is all of that (and blanks) unless an error came
 * since the last frame: then the reader may have been skipping the line's start.
 */
static void
check_data_frame(const char *s, size_t end, size_t last, int resync, const struct proto_reader *r)
{
	size_t start = end - r->body.len, line, e, h = 0, raw = 0, place;
	struct proto_stream f;
	char err[FUZZ_ERRLEN];

	if (r->json_len > r->body.len || r->json_len < 2 || r->json_len > PROTO_MAX_RAW_HEAD)
		fuzz_fail("data frame with a header of %zu bytes", r->json_len);
	for (line = start - 1; line > last && s[line - 1] != '\n'; line--)
		;
	e = start - 1;
	while (e > line && is_space((unsigned char)s[e - 1]))
		e--;
	for (place = 1; e > line && s[e - 1] >= '0' && s[e - 1] <= '9' && place < 1000000000000;
	    e--, place *= 10)
		raw += (size_t)(s[e - 1] - '0') * place;
	if (e == line || s[e - 1] != '+')
		fuzz_fail("data frame after a length line without H+R");
	/* after an error the line may begin inside skipped bytes: a tail of its digits says H */
	for (e--, place = 1; e > line && s[e - 1] >= '0' && s[e - 1] <= '9' && place < 1000000000000;
	    e--, place *= 10) {
		h += (size_t)(s[e - 1] - '0') * place;
		if (resync && h == r->json_len)
			break;
	}
	if (h != r->json_len || h + raw != r->body.len)
		fuzz_fail("data frame of %zu+%zu bytes after a line that says otherwise",
		    r->json_len, r->body.len - r->json_len);
	for (; !resync && line < e; line++)
		if (!is_space((unsigned char)s[line]))
			fuzz_fail("data frame after a length line with other characters");
	if (!r->raw_ok || !json_valid(r->body.p, r->json_len))
		fuzz_fail("data frame whose header is not JSON");
	if (proto_stream_parse(&f, r->body.p, r->body.len, r->json_len, err, sizeof(err)) < 0)
		check_err("proto_stream_parse", err, sizeof(err));
	else if (f.len > r->body.len || (f.len && f.data != r->body.p + r->json_len))
		fuzz_fail("stream frame data outside the frame");
}

/*
 * A daemon's parse of the frame r returned (proto_served_parse: the reader's
 * check stands for a second one, the JSON tokenised once) must reach what
 * proto_stream_parse and then proto_request_parse reach: the same outcome,
 * the same error, the same fields.
 */
static void
check_served(const struct proto_reader *r)
{
	struct proto_stream s1, s2;
	struct proto_request q1, q2;
	char e1[256] = "", e2[256] = "";
	int rc1, rc2;
	size_t i;

	rc1 = proto_served_parse(r, &s1, &q1, e1, sizeof(e1));
	memset(&q2, 0, sizeof(q2));
	rc2 = proto_stream_parse(&s2, r->body.p, r->body.len, r->json_len, e2, sizeof(e2));
	if (rc2 == 0) {
		rc2 = proto_request_parse(&q2, r->body.p, r->body.len, e2, sizeof(e2));
		s2.id[0] = '\0';	/* a daemon looks at a stream frame's id before this */
	}
	if (rc1 != rc2 || (rc1 < 0 && (strcmp(e1, e2) != 0 || strcmp(s1.id, s2.id) != 0)))
		fuzz_fail("served parse %d (%s, id %s), the parsers %d (%s, id %s)", rc1, e1, s1.id,
		    rc2, e2, s2.id);
	if (rc1 == 1 && (s1.kind != s2.kind || s1.fd != s2.fd || s1.credit != s2.credit ||
	    s1.kill != s2.kill || s1.data != s2.data || s1.len != s2.len || strcmp(s1.id, s2.id) != 0))
		fuzz_fail("served parse reads another stream frame");
	if (rc1 == 0 && (strcmp(q1.method, q2.method) != 0 || q1.argc != q2.argc ||
	    strcmp(q1.id, q2.id) != 0 || q1.has_input != q2.has_input || q1.base64 != q2.base64 ||
	    !same_bytes(q1.input.p, q1.input.len, q2.input.p, q2.input.len) ||
	    q1.timeout != q2.timeout || q1.stream != q2.stream || q1.window != q2.window ||
	    q1.want_stdin != q2.want_stdin || q1.new_caller != q2.new_caller))
		fuzz_fail("served parse reads another request");
	for (i = 0; rc1 == 0 && i < q1.argc; i++)
		if (strcmp(q1.argv[i], q2.argv[i]) != 0)
			fuzz_fail("served parse reads another argument %zu", i);
	proto_request_free(&q1);
	proto_request_free(&q2);
}

/*
 * Input: byte 0 picks the number of chunk sizes (low 3 bits, plus one), the
 * limit (next 3 bits) and whether data frames are read (bit 6); then one byte
 * per chunk size (0: the rest); then the stream.
 */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proto_reader r;
	size_t sizes[FUZZ_MAX_CHUNKS], nsizes, max_frame, len, off, n, c, used, k;
	size_t last = 0;
	char *s;
	int stalled = 0, resync = 0, ended_frame = 0;
	enum proto_event ev;

	if (size < 1)
		return 0;
	nsizes = (data[0] & 7) + 1;
	max_frame = max_frames[data[0] >> 3 & 7];
	if (size < 1 + nsizes)
		return 0;
	for (k = 0; k < nsizes; k++)
		sizes[k] = data[1 + k];
	len = size - 1 - nsizes;
	/*
	 * The stream poisoned but for the chunk being fed: ASan then sees a read
	 * past a chunk's end or before its start (a copy per chunk would cost a
	 * malloc per byte at chunk size 1).  The checks read the input itself.
	 */
	s = copy(data + 1 + nsizes, len, 0);
	ASAN_POISON_MEMORY_REGION(s, len);
	proto_reader_init(&r, max_frame);
	r.raw_ok = data[0] >> 6 & 1;
	if (proto_reader_partial(&r))
		fuzz_fail("a new reader holds a partial frame");
	for (off = 0, k = 0; off < len; off += n, k++) {
		n = sizes[k % nsizes];
		if (n == 0 || n > len - off)
			n = len - off;
		ASAN_UNPOISON_MEMORY_REGION(s + off, n);
		for (c = 0; c < n; c += used) {
			used = (size_t)-1;
			ev = proto_reader_feed(&r, s + off + c, n - c, &used);
			if (used > n - c)
				fuzz_fail("used %zu of %zu bytes", used, n - c);
			/* an error may be reported before its byte is taken, but only once */
			if (used == 0 && (ev != PROTO_ERROR || stalled))
				fuzz_fail("no progress (event %d)", (int)ev);
			stalled = used == 0;
			ended_frame = 0;
			switch (ev) {
			case PROTO_NEED_MORE:
				if (used != n - c)
					fuzz_fail("asked for more with %zu bytes left", n - c - used);
				break;
			case PROTO_FRAME:
				if (r.json_len > r.body.len)
					fuzz_fail("a frame of %zu bytes with %zu of JSON", r.body.len,
					    r.json_len);
				/* a data frame: raw bytes follow the JSON (the reader reads no "H+0") */
				check_served(&r);
				if (r.json_len < r.body.len) {
					check_data_frame((const char *)data + 1 + nsizes, off + c + used,
					    last, resync, &r);
					resync = !json_valid(r.body.p, r.json_len);
					if (!resync)
						last = off + c + used;
					ended_frame = 1;
					break;
				}
				check_frame((const char *)data + 1 + nsizes, off + c + used, last,
				    resync, &r.body, max_frame);
				parse_frame(r.body.p, r.body.len);
				/*
				 * A whole frame that is not valid JSON is one problem, reported
				 * by its parse; the reader then looks for the next frame's start
				 * as after an error, without a second one, and that start may lie
				 * inside the invalid frame (its declared length ran into it).
				 */
				resync = !json_valid(r.body.p, r.body.len);
				if (!resync)
					last = off + c + used;
				ended_frame = 1;
				break;
			case PROTO_ERROR:
				/*
				 * last stays at the previous frame: the frame a resync
				 * finds may have begun before the error was reported
				 * (a length line that ran into a cut frame's bytes)
				 */
				check_err("proto_reader_feed", r.err, sizeof(r.err));
				resync = 1;
				break;
			default:
				fuzz_fail("unknown event %d", (int)ev);
			}
		}
		ASAN_POISON_MEMORY_REGION(s + off, n);
	}
	ASAN_UNPOISON_MEMORY_REGION(s, len);
	free(s);
	if (ended_frame && last == len && proto_reader_partial(&r))
		fuzz_fail("partial after a whole frame");
	proto_reader_free(&r);
	return 0;
}
#endif

#ifdef FUZZ_REQUEST
/* The payload of the one frame in b, through the reader as a peer would read it. */
static void
unframe(const struct buf *b, struct proto_reader *r)
{
	size_t used;

	proto_reader_init(r, PROTO_MAX_FRAME_LIMIT);
	if (proto_reader_feed(r, b->p, b->len, &used) != PROTO_FRAME || used != b->len)
		fuzz_fail("the written request is not one frame: %s", r->err);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proto_request a, b;
	struct proto_reader rd;
	struct buf w = {0};
	char err[FUZZ_ERRLEN];
	size_t i;
	int exec;

	if (proto_request_parse(&a, (const char *)data, size, err, sizeof(err)) < 0) {
		check_err("proto_request_parse", err, sizeof(err));
		/* the daemon frees a refused request too: it may hold the id and a method */
		proto_request_free(&a);
		return 0;
	}
	check_request(&a);
	proto_request_write(&w, a.method, a.argv, a.argc, &a);
	for (i = 0; i < w.len; i++)
		if ((unsigned char)w.p[i] >= 0x80)
			fuzz_fail("written request not ASCII at byte %zu", i);
	unframe(&w, &rd);
	if (proto_request_parse(&b, rd.body.p, rd.body.len, err, sizeof(err)) < 0)
		fuzz_fail("the written request is refused: %s", err);
	check_request(&b);
	if (strcmp(a.method, b.method) != 0 || a.argc != b.argc || strcmp(a.id, b.id) != 0)
		fuzz_fail("method, argument count or id changed");
	for (i = 0; i < a.argc; i++)
		if (strcmp(a.argv[i], b.argv[i]) != 0)
			fuzz_fail("argument %zu changed", i);
	/* kw is written for execute alone */
	exec = strcmp(a.method, "execute") == 0;
	if (b.has_input != (exec && a.has_input) || b.base64 != (exec && a.base64))
		fuzz_fail("input or encoding flags changed");
	if (b.has_input && !same_bytes(a.input.p, a.input.len, b.input.p, b.input.len))
		fuzz_fail("input changed (%zu -> %zu bytes)", a.input.len, b.input.len);
	/* milliseconds on the wire, and a timeout under half of one is sent as one, not 0 */
	if (exec ? (a.timeout > 0 && a.timeout < FUZZ_ROUND_SECONDS ? fabs(b.timeout - 0.001) > 1e-9 :
	    fabs(a.timeout - b.timeout) > FUZZ_ROUND_SECONDS + a.timeout * 1e-9) : b.timeout != 0)
		fuzz_fail("timeout %g came back as %g", a.timeout, b.timeout);
	proto_request_free(&b);
	proto_reader_free(&rd);
	proto_request_free(&a);
	buf_free(&w);
	return 0;
}
#endif

#ifdef FUZZ_RESPONSE
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proto_response r;
	char err[FUZZ_ERRLEN];

	/* as a CLI's call (neg_run) runs it: a refused reply is not freed, so it must hold nothing */
	if (proto_response_parse(&r, (const char *)data, size, err, sizeof(err)) < 0) {
		check_err("proto_response_parse", err, sizeof(err));
		return 0;
	}
	check_response(&r);
	proto_response_free(&r);
	return 0;
}
#endif

#ifdef FUZZ_BASE64
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct buf dec = {0}, enc = {0}, back = {0};
	size_t i;

	if (proto_b64_decode(&dec, (const char *)data, size) == 0) {
		if (dec.len > size / 4 * 3)
			fuzz_fail("%zu bytes decoded from %zu", dec.len, size);
		/* what decodes must encode to text that decodes to the same bytes */
		proto_b64_encode(&enc, dec.p, dec.len);
		if (proto_b64_decode(&back, enc.p, enc.len) < 0 ||
		    !same_bytes(dec.p, dec.len, back.p, back.len))
			fuzz_fail("re-encoded bytes decode differently");
		enc.len = back.len = 0;
	}
	proto_b64_encode(&enc, data, size);
	if (enc.len != (size + 2) / 3 * 4)
		fuzz_fail("%zu bytes encoded as %zu", size, enc.len);
	for (i = 0; i < enc.len; i++)
		if (!(enc.p[i] >= 'A' && enc.p[i] <= 'Z') && !(enc.p[i] >= 'a' && enc.p[i] <= 'z') &&
		    !(enc.p[i] >= '0' && enc.p[i] <= '9') && enc.p[i] != '+' && enc.p[i] != '/' &&
		    !(enc.p[i] == '=' && i + 2 >= enc.len))
			fuzz_fail("encoded byte %zu is %#x", i, (unsigned char)enc.p[i]);
	if (proto_b64_decode(&back, enc.p, enc.len) < 0 ||
	    !same_bytes((const char *)data, size, back.p, back.len))
		fuzz_fail("encode then decode changed %zu bytes", size);
	buf_free(&dec);
	buf_free(&enc);
	buf_free(&back);
	return 0;
}
#endif

#ifdef FUZZ_SPLIT
/* Each word in single quotes, a quote inside as '\'' the way sh reads it back. */
static char *
quote_words(char **v, size_t n)
{
	struct buf b = {0};
	size_t i;
	const char *p;

	for (i = 0; i < n; i++) {
		buf_adds(&b, i ? " '" : "'");
		for (p = v[i]; *p; p++) {
			if (*p == '\'')
				buf_adds(&b, "'\\''");
			else
				buf_add(&b, p, 1);
		}
		buf_adds(&b, "'");
	}
	return b.p;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = copy(data, size, 1), *q, **v, **v2, err[FUZZ_ERRLEN];
	size_t n, n2, i, total = 0;

	if (neg_split(s, &v, &n, err, sizeof(err)) < 0) {
		check_err("neg_split", err, sizeof(err));
		free(s);
		return 0;
	}
	if (n < 1 || v[n] != NULL)
		fuzz_fail("split into %zu words, unterminated or none", n);
	for (i = 0; i < n; i++) {
		if (v[i] == NULL)
			fuzz_fail("word %zu is NULL", i);
		total += strlen(v[i]);
	}
	if (total > strlen(s))
		fuzz_fail("%zu bytes of words from a line of %zu", total, strlen(s));
	q = quote_words(v, n);
	if (neg_split(q, &v2, &n2, err, sizeof(err)) < 0)
		fuzz_fail("the quoted words are refused: %s", err);
	if (n2 != n)
		fuzz_fail("%zu words quoted split into %zu", n, n2);
	for (i = 0; i < n; i++)
		if (strcmp(v[i], v2[i]) != 0)
			fuzz_fail("word %zu changed when quoted", i);
	neg_strv_free(v2);
	neg_strv_free(v);
	free(q);
	free(s);
	return 0;
}
#endif

#ifdef FUZZ_NUMBERS
/* neg_parse_size as documented: digits, one optional binary suffix, 1K to the frame limit. */
static int
ref_size(const char *s, size_t *out)
{
	unsigned long long v = 0;
	int shift = 0;

	if (*s < '0' || *s > '9')
		return -1;
	for (; *s >= '0' && *s <= '9'; s++)
		if ((v = v * 10 + (unsigned long long)(*s - '0')) > PROTO_MAX_FRAME_LIMIT)
			return -1;
	if (*s && strchr("kK", *s))
		shift = 10;
	else if (*s && strchr("mM", *s))
		shift = 20;
	else if (*s && strchr("gG", *s))
		shift = 30;
	if (shift)
		s++;
	v <<= shift;
	if (*s || v < 1024 || v > PROTO_MAX_FRAME_LIMIT)
		return -1;
	*out = (size_t)v;
	return 0;
}

/* Close to strtod's correctly rounded value (the parser is arithmetic, not exact). */
static void
check_number(const char *what, const char *s, double d)
{
	char *end;
	double ref = strtod(s, &end);

	if (*end != '\0')
		fuzz_fail("%s accepted what strtod stops in at byte %zu", what, (size_t)(end - s));
	if (!isfinite(d) || fabs(d - ref) > 1e-9 * (fabs(ref) > 1 ? fabs(ref) : 1))
		fuzz_fail("%s read %.17g, strtod %.17g", what, d, ref);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = copy(data, size, 1), *raw = copy(data, size, 0);
	size_t n, ref;
	double d;
	int rc;

	rc = neg_parse_size(s, &n);
	if (rc != ref_size(s, &ref) || (rc == 0 && n != ref))
		fuzz_fail("neg_parse_size: %d (%zu), the reference: %d (%zu)", rc,
		    rc == 0 ? n : 0, ref_size(s, &ref), ref);
	if (neg_parse_seconds(s, &d) == 0) {
		if (!(d >= 0 && d <= 1e7) || strspn(s, "0123456789.") != strlen(s))
			fuzz_fail("neg_parse_seconds accepted %g", d);
		check_number("neg_parse_seconds", s, d);
	}
	if (proto_parse_number(raw, size, &d) == 0) {
		if (fabs(d) > 1e300 || memchr(raw, '\0', size))
			fuzz_fail("proto_parse_number accepted %g", d);
		check_number("proto_parse_number", s, d);
	}
	free(raw);
	free(s);
	return 0;
}
#endif
