/*
 * neg_proto.c: the negotiator wire protocol, without I/O.
 *
 * A frame is the payload length as ASCII decimal, a newline, then exactly that
 * many bytes of JSON.  The reader is lenient where the 0.8 reference is (white
 * space around the length) and strict everywhere else: the payload must be
 * one JSON object, validated here byte by byte before jsmn tokenizes it,
 * because jsmn alone accepts {"a"}, {,}, [1,,3] and trailing data.
 * The writer produces exactly what Python's json.dumps() writes: ASCII only,
 * ", " and ": " separators, keys in the reference's order; our extensions
 * ("id", "exit_code", ...) come last so a 0.8 peer sees what it expects.
 *
 * Reader states:  LEN --digits\n--> BODY --want bytes--> LEN (PROTO_FRAME)
 *                 LEN --junk\n-->   LEN (PROTO_ERROR)
 *                 LEN --too long--> SYNC --\n--> LEN (PROTO_ERROR once)
 *                 LEN --N > max\n-> SKIP --N bytes--> LEN (PROTO_ERROR once)
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSMN_STATIC
#include "jsmn.h"

#include "neg_proto.h"

/* ---- buffers ---- */

void
buf_reserve(struct buf *b, size_t extra)
{
	size_t need, cap;

	if (extra > (size_t)-1 - b->len - 1)
		neg_die("out of memory");
	need = b->len + extra + 1;
	if (need <= b->cap)
		return;
	cap = b->cap ? b->cap : 256;
	while (cap < need)
		cap = cap > (size_t)-1 / 2 ? need : cap * 2;
	b->p = realloc(b->p, cap);
	if (b->p == NULL)
		neg_die("out of memory");
	b->cap = cap;
	b->p[b->len] = '\0';
}

void
buf_add(struct buf *b, const void *p, size_t n)
{
	buf_reserve(b, n);
	if (n)
		memcpy(b->p + b->len, p, n);
	b->len += n;
	b->p[b->len] = '\0';
}

void
buf_adds(struct buf *b, const char *s)
{
	buf_add(b, s, strlen(s));
}

void
buf_addf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		neg_die("cannot format a message");
	buf_reserve(b, (size_t)n);
	va_start(ap, fmt);
	vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

void
buf_free(struct buf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
}

/* ---- frames ---- */

enum { R_LEN, R_BODY, R_SKIP, R_SYNC };

void
proto_reader_init(struct proto_reader *r, size_t max_frame)
{
	memset(r, 0, sizeof(*r));
	r->max_frame = max_frame;
}

void
proto_reader_reset(struct proto_reader *r)
{
	r->state = R_LEN;
	r->linelen = 0;
	r->want = 0;
	r->body.len = 0;
}

void
proto_reader_free(struct proto_reader *r)
{
	buf_free(&r->body);
}

/* Whether bytes of an unfinished frame are buffered (for the partial-frame timer). */
int
proto_reader_partial(const struct proto_reader *r)
{
	return r->state != R_LEN || r->linelen > 0;
}

static int
is_space(int c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' ||
	    c == '\f';
}

/* Parses a complete length line (newline excluded); 1 = blank, 0 = ok, -1 = bad. */
static int
parse_length(struct proto_reader *r, size_t *n)
{
	const char *s = r->line, *e = r->line + r->linelen;
	size_t v = 0;

	while (s < e && is_space((unsigned char)*s))
		s++;
	while (e > s && is_space((unsigned char)e[-1]))
		e--;
	if (s == e)
		return 1;
	for (; s < e; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		if (v > ((size_t)-1 - 9) / 10)
			return -2;
		v = v * 10 + (size_t)(*s - '0');
	}
	*n = v;
	return 0;
}

static void
reader_error(struct proto_reader *r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(r->err, sizeof(r->err), fmt, ap);
	va_end(ap);
}

/*
 * Consumes bytes from p[0..len) and stops at the first event: a whole frame in
 * r->body, or an error (in r->err).  *used says how many bytes were taken.
 */
enum proto_event
proto_reader_feed(struct proto_reader *r, const char *p, size_t len, size_t *used)
{
	size_t i = 0, n, take;
	int rc;

	while (i < len) {
		switch (r->state) {
		case R_LEN:
			if (p[i] != '\n') {
				if (r->linelen == sizeof(r->line)) {
					r->state = R_SYNC;
					r->linelen = 0;
					*used = i;
					reader_error(r, "Protocol error: length line longer than %d bytes",
					    PROTO_MAX_LENLINE);
					return PROTO_ERROR;
				}
				r->line[r->linelen++] = p[i++];
				break;
			}
			i++;
			rc = parse_length(r, &n);
			r->linelen = 0;
			if (rc == 1)	/* a stray newline between frames is harmless */
				break;
			*used = i;
			if (rc < 0) {
				reader_error(r, "Protocol error: expected a byte count, got a line of %s",
				    rc == -1 ? "other characters" : "too many digits");
				return PROTO_ERROR;
			}
			if (n > r->max_frame) {
				r->state = R_SKIP;
				r->want = n;
				reader_error(r, "Protocol error: frame of %zu bytes exceeds the limit of %zu bytes",
				    n, r->max_frame);
				return PROTO_ERROR;
			}
			r->body.len = 0;
			buf_reserve(&r->body, n);
			r->want = n;
			r->state = R_BODY;
			if (n == 0) {
				r->state = R_LEN;
				r->body.p[0] = '\0';
				return PROTO_FRAME;
			}
			break;
		case R_BODY:
			take = len - i < r->want ? len - i : r->want;
			buf_add(&r->body, p + i, take);
			i += take;
			r->want -= take;
			if (r->want == 0) {
				r->state = R_LEN;
				*used = i;
				return PROTO_FRAME;
			}
			break;
		case R_SKIP:
			take = len - i < r->want ? len - i : r->want;
			i += take;
			r->want -= take;
			if (r->want == 0)
				r->state = R_LEN;
			break;
		case R_SYNC:
			if (p[i++] == '\n')
				r->state = R_LEN;
			break;
		}
	}
	*used = i;
	return PROTO_NEED_MORE;
}

/* Puts the length line in front of the payload that starts at b->p[start]. */
void
proto_frame_end(struct buf *b, size_t start)
{
	char head[24];
	int n;

	n = snprintf(head, sizeof(head), "%zu\n", b->len - start);
	buf_reserve(b, (size_t)n);
	memmove(b->p + start + n, b->p + start, b->len - start);
	memcpy(b->p + start, head, (size_t)n);
	b->len += (size_t)n;
	b->p[b->len] = '\0';
}

/* ---- strict JSON validation ---- */

struct vstate {
	const unsigned char *s;
	size_t len, pos;
	int ntok;
	const char *why;
};

static int v_value(struct vstate *, int depth);

static void
v_ws(struct vstate *v)
{
	while (v->pos < v->len && (v->s[v->pos] == ' ' || v->s[v->pos] == '\t' ||
	    v->s[v->pos] == '\n' || v->s[v->pos] == '\r'))
		v->pos++;
}

static int
v_fail(struct vstate *v, const char *why)
{
	if (v->why == NULL)
		v->why = why;
	return -1;
}

static int
hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static long
hex4(const unsigned char *s, size_t avail)
{
	long v = 0;
	int i, h;

	if (avail < 4)
		return -1;
	for (i = 0; i < 4; i++) {
		if ((h = hexval(s[i])) < 0)
			return -1;
		v = v * 16 + h;
	}
	return v;
}

/* Length of the valid UTF-8 sequence at s, 0 if invalid (overlong, surrogate, > U+10FFFF). */
static size_t
utf8_seq(const unsigned char *s, size_t avail)
{
	unsigned c = s[0];
	size_t n, i;
	unsigned long cp;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		n = 2;
		cp = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		n = 3;
		cp = c & 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 4;
		cp = c & 0x07;
	} else {
		return 0;
	}
	if (avail < n)
		return 0;
	for (i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

int
proto_utf8_valid(const char *p, size_t len)
{
	const unsigned char *s = (const unsigned char *)p;
	size_t i = 0, n;

	while (i < len) {
		if ((n = utf8_seq(s + i, len - i)) == 0)
			return 0;
		i += n;
	}
	return 1;
}

static int
v_string(struct vstate *v)
{
	long cp, lo;
	size_t n;
	unsigned c;

	v->pos++;	/* the opening quote */
	v->ntok++;
	while (v->pos < v->len) {
		c = v->s[v->pos];
		if (c == '"') {
			v->pos++;
			return 0;
		}
		if (c < 0x20)
			return v_fail(v, c == 0 ? "NUL byte in string" :
			    "raw control character in string");
		if (c != '\\') {
			if ((n = utf8_seq(v->s + v->pos, v->len - v->pos)) == 0)
				return v_fail(v, "invalid UTF-8 in string");
			v->pos += n;
			continue;
		}
		if (++v->pos >= v->len)
			break;
		switch (v->s[v->pos]) {
		case '"': case '\\': case '/': case 'b': case 'f': case 'n':
		case 'r': case 't':
			v->pos++;
			continue;
		case 'u':
			break;
		default:
			return v_fail(v, "invalid escape in string");
		}
		if ((cp = hex4(v->s + v->pos + 1, v->len - v->pos - 1)) < 0)
			return v_fail(v, "invalid \\u escape in string");
		v->pos += 5;
		if (cp == 0)
			return v_fail(v, "\\u0000 in string");
		if (cp >= 0xdc00 && cp <= 0xdfff)
			return v_fail(v, "lone low surrogate in string");
		if (cp >= 0xd800 && cp <= 0xdbff) {
			if (v->len - v->pos < 6 || v->s[v->pos] != '\\' ||
			    v->s[v->pos + 1] != 'u' ||
			    (lo = hex4(v->s + v->pos + 2, v->len - v->pos - 2)) < 0xdc00 ||
			    lo > 0xdfff)
				return v_fail(v, "lone high surrogate in string");
			v->pos += 6;
		}
	}
	return v_fail(v, "unterminated string");
}

static int
v_digits(struct vstate *v)
{
	size_t start = v->pos;

	while (v->pos < v->len && v->s[v->pos] >= '0' && v->s[v->pos] <= '9')
		v->pos++;
	return v->pos > start ? 0 : v_fail(v, "invalid number");
}

static int
v_number(struct vstate *v)
{
	v->ntok++;
	if (v->s[v->pos] == '-')
		v->pos++;
	if (v->pos < v->len && v->s[v->pos] == '0')
		v->pos++;
	else if (v_digits(v) < 0)
		return -1;
	if (v->pos < v->len && v->s[v->pos] == '.') {
		v->pos++;
		if (v_digits(v) < 0)
			return -1;
	}
	if (v->pos < v->len && (v->s[v->pos] == 'e' || v->s[v->pos] == 'E')) {
		v->pos++;
		if (v->pos < v->len && (v->s[v->pos] == '+' || v->s[v->pos] == '-'))
			v->pos++;
		if (v_digits(v) < 0)
			return -1;
	}
	return 0;
}

static int
v_literal(struct vstate *v, const char *lit)
{
	size_t n = strlen(lit);

	if (v->len - v->pos < n || memcmp(v->s + v->pos, lit, n) != 0)
		return v_fail(v, "invalid literal");
	v->pos += n;
	v->ntok++;
	return 0;
}

static int
v_container(struct vstate *v, int depth, int object)
{
	int close = object ? '}' : ']';

	if (depth >= PROTO_MAX_DEPTH)
		return v_fail(v, "nesting too deep");
	v->pos++;
	v->ntok++;
	v_ws(v);
	if (v->pos < v->len && v->s[v->pos] == close) {
		v->pos++;
		return 0;
	}
	for (;;) {
		if (object) {
			if (v->pos >= v->len || v->s[v->pos] != '"')
				return v_fail(v, "expected a string key");
			if (v_string(v) < 0)
				return -1;
			v_ws(v);
			if (v->pos >= v->len || v->s[v->pos] != ':')
				return v_fail(v, "expected ':' after a key");
			v->pos++;
			v_ws(v);
		}
		if (v_value(v, depth + 1) < 0)
			return -1;
		v_ws(v);
		if (v->pos >= v->len)
			return v_fail(v, "unterminated object or array");
		if (v->s[v->pos] == close) {
			v->pos++;
			return 0;
		}
		if (v->s[v->pos] != ',')
			return v_fail(v, object ? "expected ',' or '}'" : "expected ',' or ']'");
		v->pos++;
		v_ws(v);
	}
}

static int
v_value(struct vstate *v, int depth)
{
	if (v->pos >= v->len)
		return v_fail(v, "expected a value");
	switch (v->s[v->pos]) {
	case '{':
		return v_container(v, depth, 1);
	case '[':
		return v_container(v, depth, 0);
	case '"':
		return v_string(v);
	case 't':
		return v_literal(v, "true");
	case 'f':
		return v_literal(v, "false");
	case 'n':
		return v_literal(v, "null");
	default:
		if (v->s[v->pos] == '-' || (v->s[v->pos] >= '0' && v->s[v->pos] <= '9'))
			return v_number(v);
		return v_fail(v, v->s[v->pos] == 0 ? "NUL byte" : "expected a value");
	}
}

/*
 * Validates js[0..len) as exactly one JSON object and tokenizes it.
 * Bounded: depth by PROTO_MAX_DEPTH, tokens by the payload's length.
 */
int
proto_json_parse(struct proto_json *j, const char *js, size_t len, char *err,
    size_t errlen)
{
	struct vstate v;
	jsmn_parser p;
	int r;

	memset(j, 0, sizeof(*j));
	memset(&v, 0, sizeof(v));
	v.s = (const unsigned char *)js;
	v.len = len;
	if (len > PROTO_MAX_FRAME_LIMIT) {
		snprintf(err, errlen, "Protocol error: message too large");
		return -1;
	}
	v_ws(&v);
	if (v.pos >= len || js[v.pos] != '{') {
		v_fail(&v, "expected a JSON object");
	} else if (v_container(&v, 0, 1) == 0) {
		v_ws(&v);
		if (v.pos != len)
			v_fail(&v, "trailing data after the JSON object");
	}
	if (v.why) {
		snprintf(err, errlen, "Protocol error: invalid JSON at byte %zu: %s",
		    v.pos, v.why);
		return -1;
	}
	j->js = js;
	j->len = len;
	j->tok = neg_alloc(sizeof(jsmntok_t) * (size_t)v.ntok);
	jsmn_init(&p);
	r = jsmn_parse(&p, js, len, j->tok, (unsigned)v.ntok);
	if (r != v.ntok) {
		/* Cannot happen for text the validator accepted; refuse rather than trust it. */
		proto_json_free(j);
		snprintf(err, errlen, "Protocol error: JSON tokenizer disagrees (%d)", r);
		return -1;
	}
	j->ntok = r;
	return 0;
}

void
proto_json_free(struct proto_json *j)
{
	free(j->tok);
	j->tok = NULL;
	j->ntok = 0;
}

/* The index of the token after tok's whole subtree. */
int
proto_json_next(const struct proto_json *j, int tok)
{
	const jsmntok_t *t = j->tok;
	int i, n;

	switch (t[tok].type) {
	case JSMN_OBJECT:
		n = t[tok].size;
		tok++;
		for (i = 0; i < n; i++)
			tok = proto_json_next(j, proto_json_next(j, tok));
		return tok;
	case JSMN_ARRAY:
		n = t[tok].size;
		tok++;
		for (i = 0; i < n; i++)
			tok = proto_json_next(j, tok);
		return tok;
	default:
		return tok + 1;
	}
}

int
proto_json_type(const struct proto_json *j, int tok)
{
	return ((const jsmntok_t *)j->tok)[tok].type;
}

int
proto_json_size(const struct proto_json *j, int tok)
{
	return ((const jsmntok_t *)j->tok)[tok].size;
}

/* Whether tok is a primitive or a string without escapes spelling literal. */
int
proto_json_is(const struct proto_json *j, int tok, const char *literal)
{
	const jsmntok_t *t = (const jsmntok_t *)j->tok + tok;
	size_t n = strlen(literal);

	return (size_t)(t->end - t->start) == n &&
	    memcmp(j->js + t->start, literal, n) == 0;
}

/* The value token of key in object obj; the last one wins, as in Python; -1 if absent. */
int
proto_json_get(const struct proto_json *j, int obj, const char *key)
{
	const jsmntok_t *t = j->tok;
	struct buf k = {0};
	int i, n, tok, found = -1;

	n = t[obj].size;
	tok = obj + 1;
	for (i = 0; i < n; i++) {
		k.len = 0;
		proto_json_string(j, tok, &k);
		if (k.len == strlen(key) && memcmp(k.p, key, k.len) == 0)
			found = tok + 1;
		tok = proto_json_next(j, tok + 1);
	}
	buf_free(&k);
	return found;
}

static void
put_utf8(struct buf *b, unsigned long cp)
{
	unsigned char u[4];
	size_t n;

	if (cp < 0x80) {
		u[0] = (unsigned char)cp;
		n = 1;
	} else if (cp < 0x800) {
		u[0] = (unsigned char)(0xc0 | cp >> 6);
		u[1] = (unsigned char)(0x80 | (cp & 0x3f));
		n = 2;
	} else if (cp < 0x10000) {
		u[0] = (unsigned char)(0xe0 | cp >> 12);
		u[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
		u[2] = (unsigned char)(0x80 | (cp & 0x3f));
		n = 3;
	} else {
		u[0] = (unsigned char)(0xf0 | cp >> 18);
		u[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3f));
		u[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
		u[3] = (unsigned char)(0x80 | (cp & 0x3f));
		n = 4;
	}
	buf_add(b, u, n);
}

/* Appends the decoded bytes of string token tok to b; -1 if tok is not a string. */
int
proto_json_string(const struct proto_json *j, int tok, struct buf *b)
{
	const jsmntok_t *t = (const jsmntok_t *)j->tok + tok;
	const unsigned char *s = (const unsigned char *)j->js;
	size_t i, end, run;
	unsigned long cp, lo;
	char c;

	if (t->type != JSMN_STRING)
		return -1;
	end = (size_t)t->end;
	buf_reserve(b, end - (size_t)t->start);
	for (i = (size_t)t->start; i < end;) {
		for (run = i; run < end && s[run] != '\\'; run++)
			;
		buf_add(b, s + i, run - i);
		if ((i = run) >= end)
			break;
		/* The validator has checked every escape, so no bounds tests here. */
		switch (s[i + 1]) {
		case 'b': c = '\b'; break;
		case 'f': c = '\f'; break;
		case 'n': c = '\n'; break;
		case 'r': c = '\r'; break;
		case 't': c = '\t'; break;
		case 'u':
			cp = (unsigned long)hex4(s + i + 2, 4);
			i += 6;
			if (cp >= 0xd800 && cp <= 0xdbff) {
				lo = (unsigned long)hex4(s + i + 2, 4);
				cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
				i += 6;
			}
			put_utf8(b, cp);
			continue;
		default: c = (char)s[i + 1]; break;
		}
		buf_add(b, &c, 1);
		i += 2;
	}
	return 0;
}

/*
 * A number in JSON's syntax as a double, by arithmetic: strtod and its decimal
 * machinery would double the guest binary's size.  Exact for the values the
 * protocol carries (exit codes, seconds).
 */
int
proto_parse_number(const char *s, size_t n, double *d)
{
	const char *e = s + n;
	double v = 0, scale = 1;
	int neg = 0, eneg = 0, exp = 0, digits = 0;

	if (s < e && *s == '-') {
		neg = 1;
		s++;
	}
	for (; s < e && *s >= '0' && *s <= '9'; s++, digits++)
		v = v * 10 + (*s - '0');
	if (s < e && *s == '.')
		for (s++; s < e && *s >= '0' && *s <= '9'; s++, digits++)
			v += (*s - '0') * (scale /= 10);
	if (digits == 0)
		return -1;
	if (s < e && (*s == 'e' || *s == 'E')) {
		s++;
		if (s < e && (*s == '+' || *s == '-'))
			eneg = *s++ == '-';
		if (s == e)
			return -1;
		for (; s < e && *s >= '0' && *s <= '9'; s++)
			if (exp < 400)
				exp = exp * 10 + (*s - '0');
		for (; exp > 0; exp--)
			v = eneg ? v / 10 : v * 10;
	}
	if (s != e || v > 1e300)
		return -1;
	*d = neg ? -v : v;
	return 0;
}

/* Seconds as the shortest of "N", "N.N", "N.NN", "N.NNN" (milliseconds are the resolution). */
void
proto_put_seconds(struct buf *b, double secs)
{
	long long ms = (long long)(secs * 1000 + 0.5);
	int frac = (int)(ms % 1000), places = 3;

	if (frac == 0) {
		buf_addf(b, "%lld", ms / 1000);
		return;
	}
	while (frac % 10 == 0) {
		frac /= 10;
		places--;
	}
	buf_addf(b, "%lld.%0*d", ms / 1000, places, frac);
}

int
proto_json_number(const struct proto_json *j, int tok, double *d)
{
	const jsmntok_t *t = (const jsmntok_t *)j->tok + tok;

	if (t->type != JSMN_PRIMITIVE)
		return -1;
	return proto_parse_number(j->js + t->start, (size_t)(t->end - t->start), d);
}

/* Writes s as a JSON string the way json.dumps(ensure_ascii=True) does. */
void
proto_put_string(struct buf *b, const char *p, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *s = (const unsigned char *)p;
	unsigned long cp, hi, lo;
	size_t i, n, run;
	char u[12];

	buf_reserve(b, len + 2);
	buf_add(b, "\"", 1);
	for (i = 0; i < len;) {
		for (run = i; run < len && s[run] >= 0x20 && s[run] < 0x80 &&
		    s[run] != '"' && s[run] != '\\'; run++)
			;
		buf_add(b, s + i, run - i);
		if ((i = run) >= len)
			break;
		switch (s[i]) {
		case '"': buf_add(b, "\\\"", 2); i++; continue;
		case '\\': buf_add(b, "\\\\", 2); i++; continue;
		case '\n': buf_add(b, "\\n", 2); i++; continue;
		case '\r': buf_add(b, "\\r", 2); i++; continue;
		case '\t': buf_add(b, "\\t", 2); i++; continue;
		case '\b': buf_add(b, "\\b", 2); i++; continue;
		case '\f': buf_add(b, "\\f", 2); i++; continue;
		}
		if ((n = utf8_seq(s + i, len - i)) == 0) {
			cp = 0xfffd;	/* callers validate; never emit invalid JSON */
			n = 1;
		} else if (n == 1) {
			cp = s[i];
		} else {
			cp = s[i] & (n == 2 ? 0x1f : n == 3 ? 0x0f : 0x07);
			for (run = 1; run < n; run++)
				cp = cp << 6 | (s[i + run] & 0x3f);
		}
		i += n;
		if (cp >= 0x10000) {
			hi = 0xd800 + ((cp - 0x10000) >> 10);
			lo = 0xdc00 + ((cp - 0x10000) & 0x3ff);
			snprintf(u, sizeof(u), "\\u%c%c%c%c", hex[hi >> 12], hex[hi >> 8 & 15],
			    hex[hi >> 4 & 15], hex[hi & 15]);
			buf_add(b, u, 6);
			cp = lo;
		}
		snprintf(u, sizeof(u), "\\u%c%c%c%c", hex[cp >> 12], hex[cp >> 8 & 15],
		    hex[cp >> 4 & 15], hex[cp & 15]);
		buf_add(b, u, 6);
	}
	buf_add(b, "\"", 1);
}

/* ---- base64 ---- */

static const char b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void
proto_b64_encode(struct buf *b, const void *data, size_t len)
{
	const unsigned char *s = data;
	unsigned long v;
	char *o;
	size_t i;

	buf_reserve(b, (len + 2) / 3 * 4);
	o = b->p + b->len;
	for (i = 0; i + 2 < len; i += 3) {
		v = (unsigned long)s[i] << 16 | (unsigned long)s[i + 1] << 8 | s[i + 2];
		*o++ = b64[v >> 18];
		*o++ = b64[v >> 12 & 63];
		*o++ = b64[v >> 6 & 63];
		*o++ = b64[v & 63];
	}
	if (i < len) {
		v = (unsigned long)s[i] << 16 | (i + 1 < len ? (unsigned long)s[i + 1] << 8 : 0);
		*o++ = b64[v >> 18];
		*o++ = b64[v >> 12 & 63];
		*o++ = i + 1 < len ? b64[v >> 6 & 63] : '=';
		*o++ = '=';
	}
	b->len = (size_t)(o - b->p);
	b->p[b->len] = '\0';
}

static int
b64val(int c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* Decodes padded base64 (white space ignored) onto b; -1 on anything else. */
int
proto_b64_decode(struct buf *b, const char *s, size_t len)
{
	unsigned long v = 0;
	int n = 0, pad = 0, d;
	size_t i;
	unsigned char o[3];

	buf_reserve(b, len / 4 * 3 + 3);
	for (i = 0; i < len; i++) {
		if (is_space((unsigned char)s[i]))
			continue;
		if (s[i] == '=') {
			if (n < 2)
				return -1;
			pad++;
			d = 0;
		} else {
			if (pad || (d = b64val((unsigned char)s[i])) < 0)
				return -1;
		}
		v = v << 6 | (unsigned long)d;
		if (++n == 4) {
			o[0] = (unsigned char)(v >> 16);
			o[1] = (unsigned char)(v >> 8);
			o[2] = (unsigned char)v;
			buf_add(b, o, (size_t)(3 - pad));
			n = 0;
			v = 0;
			if (pad)
				pad = 3;	/* nothing may follow padding */
		}
	}
	return n == 0 ? 0 : -1;
}

/* ---- methods, requests, responses ---- */

static const struct {
	const char *name;
	enum proto_method m;
} methods[] = {
	{ "execute", PROTO_M_EXECUTE },
	{ "list_commands", PROTO_M_LIST_COMMANDS },
	{ "ping", PROTO_M_PING },
	{ "version", PROTO_M_VERSION },
};

enum proto_method
proto_method_lookup(const char *name)
{
	size_t i;

	for (i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
		if (strcmp(methods[i].name, name) == 0)
			return methods[i].m;
	return PROTO_M_UNKNOWN;
}

/* Either of two key spellings (the reference's code and its docstring). */
static int
get2(const struct proto_json *j, const char *a, const char *b)
{
	int t = proto_json_get(j, 0, a);

	return t >= 0 ? t : proto_json_get(j, 0, b);
}

static int
copy_id(const struct proto_json *j, char *id)
{
	const jsmntok_t *t;
	int tok = proto_json_get(j, 0, "id");
	size_t n;

	id[0] = '\0';
	if (tok < 0)
		return 0;
	t = (const jsmntok_t *)j->tok + tok;
	if (t->type != JSMN_STRING && t->type != JSMN_PRIMITIVE)
		return -1;
	/* jsmn's string tokens exclude the quotes; keep them, the id is echoed as JSON text. */
	n = (size_t)(t->end - t->start) + (t->type == JSMN_STRING ? 2 : 0);
	if (n > PROTO_MAX_ID)
		return -1;
	memcpy(id, j->js + t->start - (t->type == JSMN_STRING), n);
	id[n] = '\0';
	return 0;
}

static char *
tok_strdup(const struct proto_json *j, int tok)
{
	struct buf b = {0};

	if (proto_json_string(j, tok, &b) < 0 || memchr(b.p, 0, b.len) != NULL) {
		buf_free(&b);
		return NULL;
	}
	if (b.p == NULL)
		buf_reserve(&b, 0);
	return b.p;
}

#define FAIL(...) do { snprintf(err, errlen, __VA_ARGS__); goto fail; } while (0)

/* Parses a request frame's payload into req; err names what was wrong. */
int
proto_request_parse(struct proto_request *req, const char *js, size_t len,
    char *err, size_t errlen)
{
	struct proto_json j;
	int tok, args, kw, i, n;
	double d;

	memset(req, 0, sizeof(*req));
	if (proto_json_parse(&j, js, len, err, errlen) < 0)
		return -1;
	if (copy_id(&j, req->id) < 0)
		FAIL("Protocol error: the request id must be a string or number of at most %d bytes",
		    PROTO_MAX_ID);
	tok = get2(&j, "method", "command");
	if (tok < 0 || (req->method = tok_strdup(&j, tok)) == NULL)
		FAIL("Protocol error: the request has no method name");
	args = get2(&j, "args", "arguments");
	kw = get2(&j, "kw", "keyword-arguments");
	if (args >= 0 && proto_json_type(&j, args) != PROTO_J_ARRAY &&
	    !proto_json_is(&j, args, "null"))
		FAIL("Protocol error: args must be an array");
	if (kw >= 0 && proto_json_type(&j, kw) != PROTO_J_OBJECT &&
	    !proto_json_is(&j, kw, "null"))
		FAIL("Protocol error: kw must be an object");
	n = args >= 0 && proto_json_type(&j, args) == PROTO_J_ARRAY ?
	    proto_json_size(&j, args) : 0;
	if (n > PROTO_MAX_ARGS)
		FAIL("Protocol error: more than %d arguments", PROTO_MAX_ARGS);
	req->argv = neg_alloc(sizeof(char *) * ((size_t)n + 1));
	for (i = 0, tok = args + 1; i < n; i++, tok = proto_json_next(&j, tok)) {
		if ((req->argv[i] = tok_strdup(&j, tok)) == NULL)
			FAIL("Protocol error: argument %d is not a string (or holds a NUL)", i + 1);
		req->argc++;
	}
	if (kw < 0 || proto_json_type(&j, kw) != PROTO_J_OBJECT)
		goto done;
	if ((tok = proto_json_get(&j, kw, "encoding")) >= 0 && !proto_json_is(&j, tok, "null")) {
		if (proto_json_type(&j, tok) != PROTO_J_STRING || !proto_json_is(&j, tok, "base64"))
			FAIL("Protocol error: the only encoding supported is \"base64\"");
		req->base64 = 1;
	}
	if ((tok = proto_json_get(&j, kw, "input")) >= 0 && !proto_json_is(&j, tok, "null")) {
		if (proto_json_string(&j, tok, &req->input) < 0)
			FAIL("Protocol error: input must be a string");
		if (req->base64) {
			struct buf raw = {0};

			if (proto_b64_decode(&raw, req->input.p, req->input.len) < 0) {
				buf_free(&raw);
				FAIL("Protocol error: input is not valid base64");
			}
			buf_free(&req->input);
			req->input = raw;
		}
		req->has_input = 1;
	}
	if ((tok = proto_json_get(&j, kw, "timeout")) >= 0 && !proto_json_is(&j, tok, "null")) {
		if (proto_json_number(&j, tok, &d) < 0 || d < 0 || d > 1e7)
			FAIL("Protocol error: timeout must be a number of seconds");
		req->timeout = d;
	}
done:
	req->argv[req->argc] = NULL;
	proto_json_free(&j);
	return 0;
fail:
	if (req->argv)
		req->argv[req->argc] = NULL;
	proto_json_free(&j);
	return -1;
}

void
proto_request_free(struct proto_request *req)
{
	size_t i;

	free(req->method);
	for (i = 0; req->argv && i < req->argc; i++)
		free(req->argv[i]);
	free(req->argv);
	buf_free(&req->input);
	memset(req, 0, sizeof(*req));
}

/*
 * Writes a whole request frame onto b.  kw may be NULL (an empty kw), else its
 * fields become kw keys; an execute always carries "capture": true as the
 * reference's CLI sends it.
 */
void
proto_request_write(struct buf *b, const char *method, char *const *argv,
    size_t argc, const struct proto_request *kw)
{
	size_t i, start = b->len;

	buf_adds(b, "{\"method\": ");
	proto_put_string(b, method, strlen(method));
	buf_adds(b, ", \"args\": [");
	for (i = 0; i < argc; i++) {
		if (i)
			buf_adds(b, ", ");
		proto_put_string(b, argv[i], strlen(argv[i]));
	}
	buf_adds(b, "], \"kw\": {");
	if (strcmp(method, "execute") == 0) {
		buf_adds(b, "\"capture\": true");
		if (kw && kw->has_input) {
			buf_adds(b, ", \"input\": ");
			if (kw->base64) {
				struct buf enc = {0};

				proto_b64_encode(&enc, kw->input.p, kw->input.len);
				proto_put_string(b, enc.p, enc.len);
				buf_free(&enc);
			} else {
				proto_put_string(b, kw->input.p, kw->input.len);
			}
		}
		if (kw && kw->base64)
			buf_adds(b, ", \"encoding\": \"base64\"");
		if (kw && kw->timeout > 0) {
			buf_adds(b, ", \"timeout\": ");
			proto_put_seconds(b, kw->timeout);
		}
	}
	buf_adds(b, "}");
	if (kw && kw->id[0])
		buf_addf(b, ", \"id\": %s", kw->id);
	buf_adds(b, "}");
	proto_frame_end(b, start);
}

static void
end_reply(struct buf *b, const char *id, size_t start)
{
	if (id && id[0])
		buf_addf(b, ", \"id\": %s", id);
	buf_adds(b, "}");
	proto_frame_end(b, start);
}

/* An extension field: base64 when asked for, else text when it is UTF-8. */
static void
put_text(struct buf *b, const char *key, const char *s, size_t len, int base64)
{
	if (len == 0)
		return;
	buf_addf(b, ", \"%s\": ", key);
	if (base64) {
		struct buf enc = {0};

		proto_b64_encode(&enc, s, len);
		proto_put_string(b, enc.p, enc.len);
		buf_free(&enc);
	} else if (proto_utf8_valid(s, len)) {
		proto_put_string(b, s, len);
	} else {
		buf_adds(b, "\"(not UTF-8)\"");
	}
}

/*
 * A success reply with a string result.  In text mode the bytes must be UTF-8
 * (the reference decodes them so); otherwise an error reply is written instead.
 */
void
proto_reply_string(struct buf *b, const char *id, const char *s, size_t len,
    int base64, const char *stderr_text, size_t stderr_len)
{
	size_t start = b->len;

	if (!base64 && !proto_utf8_valid(s, len)) {
		struct proto_failure f = { "Command output is not valid UTF-8 (ask for base64 encoding)",
		    -1, 0, 0, NULL, 0, stderr_text, stderr_len, 0 };

		proto_reply_error(b, id, &f);
		return;
	}
	buf_adds(b, "{\"success\": true, \"result\": ");
	if (base64) {
		struct buf enc = {0};

		proto_b64_encode(&enc, s, len);
		proto_put_string(b, enc.p, enc.len);
		buf_free(&enc);
		buf_adds(b, ", \"encoding\": \"base64\"");
	} else {
		proto_put_string(b, s, len);
	}
	put_text(b, "stderr", stderr_text, stderr_len, base64);
	end_reply(b, id, start);
}

void
proto_reply_list(struct buf *b, const char *id, char *const *v, size_t n)
{
	size_t i, start = b->len;

	buf_adds(b, "{\"success\": true, \"result\": [");
	for (i = 0; i < n; i++) {
		if (i)
			buf_adds(b, ", ");
		proto_put_string(b, v[i], strlen(v[i]));
	}
	buf_adds(b, "]");
	end_reply(b, id, start);
}

void
proto_reply_error(struct buf *b, const char *id, const struct proto_failure *f)
{
	size_t start = b->len;

	buf_adds(b, "{\"success\": false, \"error\": ");
	proto_put_string(b, f->error, strlen(f->error));
	if (f->exit_code >= 0)
		buf_addf(b, ", \"exit_code\": %d", f->exit_code);
	if (f->signal > 0)
		buf_addf(b, ", \"signal\": %d", f->signal);
	if (f->timed_out)
		buf_adds(b, ", \"timed_out\": true");
	put_text(b, "result", f->stdout_text, f->stdout_len, f->base64);
	put_text(b, "stderr", f->stderr_text, f->stderr_len, f->base64);
	if (f->base64 && (f->stdout_len || f->stderr_len))
		buf_adds(b, ", \"encoding\": \"base64\"");
	end_reply(b, id, start);
}

static int
get_int(const struct proto_json *j, const char *key, int dflt)
{
	int tok = proto_json_get(j, 0, key);
	double d;

	if (tok < 0 || proto_json_number(j, tok, &d) < 0 || d < 0 || d > 1e6)
		return dflt;
	return (int)d;
}

/* Decodes a string field, base64 or not; -1 if malformed. */
static int
get_text(const struct proto_json *j, int tok, int base64, struct buf *out)
{
	struct buf raw = {0};
	int rc;

	if (!base64)
		return proto_json_string(j, tok, out);
	if (proto_json_string(j, tok, &raw) < 0)
		return -1;
	rc = proto_b64_decode(out, raw.p ? raw.p : "", raw.len);
	buf_free(&raw);
	return rc;
}

int
proto_response_parse(struct proto_response *r, const char *js, size_t len,
    char *err, size_t errlen)
{
	struct proto_json j;
	int tok, base64, i, n;
	struct buf e = {0};

	memset(r, 0, sizeof(*r));
	r->exit_code = -1;
	if (proto_json_parse(&j, js, len, err, errlen) < 0)
		return -1;
	if (copy_id(&j, r->id) < 0)
		FAIL("Protocol error: the reply's id is malformed");
	tok = proto_json_get(&j, 0, "success");
	if (tok < 0 || (!proto_json_is(&j, tok, "true") && !proto_json_is(&j, tok, "false")))
		FAIL("Protocol error: the reply has no \"success\" flag");
	r->success = proto_json_is(&j, tok, "true");
	r->base64 = base64 = (tok = proto_json_get(&j, 0, "encoding")) >= 0 &&
	    proto_json_is(&j, tok, "base64");
	if ((tok = proto_json_get(&j, 0, "stderr")) >= 0 &&
	    get_text(&j, tok, base64, &r->stderr_text) < 0)
		FAIL("Protocol error: the reply's stderr is malformed");
	if (!r->success) {
		tok = proto_json_get(&j, 0, "error");
		if (tok < 0 || proto_json_string(&j, tok, &e) < 0)
			buf_adds(&e, "the remote side reported a failure without a reason");
		if (e.p == NULL)
			buf_reserve(&e, 0);
		r->error = e.p;
		r->exit_code = get_int(&j, "exit_code", -1);
		r->signal = get_int(&j, "signal", 0);
		tok = proto_json_get(&j, 0, "timed_out");
		r->timed_out = tok >= 0 && proto_json_is(&j, tok, "true");
		if ((tok = proto_json_get(&j, 0, "result")) >= 0 &&
		    proto_json_type(&j, tok) == PROTO_J_STRING &&
		    get_text(&j, tok, base64, &r->result) < 0)
			FAIL("Protocol error: the reply's result is malformed");
		goto done;
	}
	if ((tok = proto_json_get(&j, 0, "result")) < 0)
		goto done;
	switch (proto_json_type(&j, tok)) {
	case PROTO_J_STRING:
		r->result_kind = PROTO_J_STRING;
		if (get_text(&j, tok, base64, &r->result) < 0)
			FAIL("Protocol error: the reply's base64 result is malformed");
		break;
	case PROTO_J_ARRAY:
		r->result_kind = PROTO_J_ARRAY;
		n = proto_json_size(&j, tok);
		r->list = neg_alloc(sizeof(char *) * ((size_t)n + 1));
		for (i = 0, tok++; i < n; i++, tok = proto_json_next(&j, tok)) {
			if ((r->list[i] = tok_strdup(&j, tok)) == NULL)
				FAIL("Protocol error: the reply's list holds a non-string");
			r->nlist++;
		}
		break;
	default:
		/* null, numbers: shown as their JSON text */
		r->result_kind = PROTO_J_STRING;
		{
			const jsmntok_t *t = (const jsmntok_t *)j.tok + tok;

			buf_add(&r->result, js + t->start, (size_t)(t->end - t->start));
		}
		break;
	}
done:
	if (r->result.p == NULL)
		buf_reserve(&r->result, 0);
	proto_json_free(&j);
	return 0;
fail:
	proto_json_free(&j);
	return -1;
}

void
proto_response_free(struct proto_response *r)
{
	size_t i;

	buf_free(&r->result);
	for (i = 0; r->list && i < r->nlist; i++)
		free(r->list[i]);
	free(r->list);
	free(r->error);
	buf_free(&r->stderr_text);
	memset(r, 0, sizeof(*r));
}
