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
 * The reader runs the JSON checker over every body byte as it arrives, so it
 * sees at once when the bytes cannot be the frame they claim to be, and
 * resynchronises on the next frame's start, "DIGITS[blanks]\n{": where a
 * cut frame runs into the next one, that start makes the body impossible
 * within a byte or two (a raw newline in a string; digits or '{' where they
 * cannot be).  The digits before the newline may end with the cut frame's
 * bytes (base64 has digits), so an object read from there is taken as a frame
 * when its length is a decimal suffix of them.  Reader states:
 *
 *   LEN  --digits\n---------------> BODY (kept, checked) or SKIP (over
 *                                   max_frame: checked, not kept; PROTO_ERROR)
 *   LEN  --junk\n------------------> LEN, or HUNT if digits end it (PROTO_ERROR)
 *   LEN  --33 bytes, no \n---------> HUNT (PROTO_ERROR)
 *   BODY --want bytes--------------> LEN (PROTO_FRAME; one that is not JSON
 *                                   too, for the parser to say why; HUNT if
 *                                   it ends in digits)
 *   BODY --object ends early, at a decimal suffix of the length line
 *          (a cut length line ran into the next)--> BODY of that size (PROTO_ERROR)
 *   BODY --impossible byte---------> BODY, watching for DIGITS\n{
 *   BODY --DIGITS\n{ after that----> CAND (PROTO_ERROR: cut short)
 *   SKIP --want bytes--------------> LEN (HUNT if it was junk ending in digits)
 *   SKIP --impossible, DIGITS\n{---> CAND (its error was given)
 *   HUNT --DIGITS\n{---------------> CAND
 *   HUNT --\n without digits, or DIGITS\n then not '{'--> LEN
 *   CAND --object of a suffix's length--> LEN (PROTO_FRAME)
 *   CAND --impossible, or longer than the digits allow--> HUNT (from its last bytes)
 *
 * Data frames, read only where raw_ok says the peer streams: the length line
 * is "H+R", H bytes of JSON header (checked as a body) and R raw bytes:
 *
 *   LEN  --H+R\n------------------> BODY of H, then RAW of R (PROTO_FRAME;
 *                                   json_len = H) or, the header refused,
 *                                   DROP of R (PROTO_ERROR)
 *
 * Raw bytes are not looked into, so a data frame cut short swallows what
 * follows up to its length: a writer sends each data frame in one write(),
 * which a virtio port takes whole or not at all.
 *
 * A payload whose object ends before its declared length at a decimal suffix
 * of it, padded with blanks to that length, is taken for a cut length line
 * (one error, then the object as the frame): no peer pads. *
 * Each state has its step function (reader_length, reader_body, reader_raw,
 * and reader_resync for HUNT and CAND); reader_feed only dispatches.
 */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* parent links: jsmn 1.1.0 without them rescans all tokens at each , ] } */
#define JSMN_PARENT_LINKS
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

/* ---- the JSON checker ---- */

enum {
	CK_START,	/* before the object: blanks, then '{' */
	CK_OBJ_FIRST,	/* after '{': a key or '}' */
	CK_OBJ_KEY,	/* after ',' in an object: a key */
	CK_COLON,	/* after a key */
	CK_VALUE,	/* after ':', or ',' in an array */
	CK_ARR_FIRST,	/* after '[': a value or ']' */
	CK_AFTER,	/* after a value in an array or object: ',' or the close */
	CK_DONE,	/* after the object: blanks only */
	CK_STR,		/* in a string */
	CK_ESC,		/* after a backslash */
	CK_HEX,		/* in the four hex digits of \u */
	CK_LOW_BS,	/* after a high surrogate's escape: the low one's backslash */
	CK_LOW_U,	/* ... and its 'u' */
	CK_UTF8,	/* in a UTF-8 sequence */
	CK_NUM_MINUS,	/* after a number's '-' */
	CK_NUM_ZERO,	/* after its leading 0 */
	CK_NUM_INT,	/* in its integer digits */
	CK_NUM_DOT,	/* after its '.' */
	CK_NUM_FRAC,	/* in its fraction */
	CK_NUM_E,	/* after its 'e' */
	CK_NUM_ESIGN,	/* after the exponent's sign */
	CK_NUM_EXP,	/* in the exponent */
	CK_LIT,		/* in true, false or null */
	CK_FAILED
};

/* the one reason that is not about the text's syntax (proto_json_parse words it apart) */
static const char ck_too_many[] = "too many values";

typedef char ck_depth_fits[PROTO_MAX_DEPTH <= 32 ? 1 : -1]; /* struct proto_check's objects */

static unsigned long ck_begun;	/* checks started: proto_check_runs */

static void
ck_init(struct proto_check *ck)
{
	ck_begun++;
	memset(ck, 0, sizeof(*ck));
	ck->state = CK_START;
}

static int
is_blank_json(unsigned c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
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

/* A byte that stands for itself in a string: printable ASCII but '"' and '\\'. */
static int
is_plain(unsigned c)
{
	return c >= 0x20 && c < 0x80 && c != '"' && c != '\\';
}

/* Whether the 8 bytes at p are all plain, tested at once (bit tricks on one word). */
static int
plain8(const unsigned char *p)
{
	const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
	uint64_t x, q, b;

	memcpy(&x, p, sizeof(x));
	q = x ^ (ones * '"');
	b = x ^ (ones * '\\');
	/* a high bit survives for a byte below 0x20, equal to '"' or '\\', or above 0x7f */
	return ((((x - ones * 0x20) & ~x) | ((q - ones) & ~q) | ((b - ones) & ~b) | x) & high) == 0;
}

#define CK_FAIL(w) do { why = (w); goto fail; } while (0)

/*
 * Runs the checker over s[0..n) and returns the bytes it took: n, or fewer
 * when s[ret] is impossible (ck->why says why, ck->pos is its offset), or
 * when s[ret] closes the object before byte `early` of the text (ck->why
 * NULL: the caller looks, then ck_close takes it).  Strings are scanned a
 * word at a time: they are the bulk of every large frame.
 */
static size_t
ck_run(struct proto_check *ck, const unsigned char *s, size_t n, size_t early)
{
	const unsigned char *p = s, *e = s + n;
	const char *why;
	unsigned c, obj;
	int h;

	while (p < e) {
		c = *p;
		switch (ck->state) {
		case CK_STR:
			while (e - p >= 8 && plain8(p))
				p += 8;
			while (p < e && is_plain(*p))
				p++;
			if (p == e)
				goto out;
			c = *p;
			if (c == '"') {
				ck->state = ck->key ? CK_COLON : CK_AFTER;
			} else if (c == '\\') {
				ck->state = CK_ESC;
			} else if (c < 0x20) {
				CK_FAIL(c == 0 ? "NUL byte in string" : "raw control character in string");
			} else if (c >= 0xc2 && c <= 0xdf) {
				ck->need = 1;
				ck->lo = 0x80;
				ck->hi = 0xbf;
				ck->state = CK_UTF8;
			} else if (c >= 0xe0 && c <= 0xef) {
				/* no overlong forms, no surrogates */
				ck->need = 2;
				ck->lo = c == 0xe0 ? 0xa0 : 0x80;
				ck->hi = c == 0xed ? 0x9f : 0xbf;
				ck->state = CK_UTF8;
			} else if (c >= 0xf0 && c <= 0xf4) {
				/* no overlong forms, nothing past U+10FFFF */
				ck->need = 3;
				ck->lo = c == 0xf0 ? 0x90 : 0x80;
				ck->hi = c == 0xf4 ? 0x8f : 0xbf;
				ck->state = CK_UTF8;
			} else {
				CK_FAIL("invalid UTF-8 in string");
			}
			p++;
			continue;
		case CK_UTF8:
			if (c < ck->lo || c > ck->hi)
				CK_FAIL("invalid UTF-8 in string");
			ck->lo = 0x80;
			ck->hi = 0xbf;
			if (--ck->need == 0)
				ck->state = CK_STR;
			p++;
			continue;
		case CK_ESC:
			switch (c) {
			case '"': case '\\': case '/': case 'b': case 'f': case 'n':
			case 'r': case 't':
				ck->state = CK_STR;
				break;
			case 'u':
				ck->state = CK_HEX;
				ck->need = 0;
				ck->cp = 0;
				break;
			default:
				CK_FAIL("invalid escape in string");
			}
			p++;
			continue;
		case CK_HEX:
			if ((h = hexval((int)c)) < 0)
				CK_FAIL("invalid \\u escape in string");
			ck->cp = ck->cp << 4 | (unsigned long)h;
			if (++ck->need == 4) {
				if (ck->high && (ck->cp < 0xdc00 || ck->cp > 0xdfff))
					CK_FAIL("lone high surrogate in string");
				if (ck->cp == 0)
					CK_FAIL("\\u0000 in string");
				/*
				 * Python's surrogateescape writes a byte that is not
				 * UTF-8 (a file name, an argument) as \udc80-\udcff:
				 * those stand for the byte itself, other lone low
				 * surrogates for nothing.
				 */
				if (!ck->high && ck->cp >= 0xdc00 && ck->cp <= 0xdfff &&
				    !PROTO_RAW_BYTE_ESCAPE(ck->cp))
					CK_FAIL("lone low surrogate in string");
				ck->high = !ck->high && ck->cp >= 0xd800 && ck->cp <= 0xdbff;
				ck->state = ck->high ? CK_LOW_BS : CK_STR;
			}
			p++;
			continue;
		case CK_LOW_BS:
		case CK_LOW_U:
			if (c != (ck->state == CK_LOW_BS ? '\\' : 'u'))
				CK_FAIL("lone high surrogate in string");
			ck->state = ck->state == CK_LOW_BS ? CK_LOW_U : CK_HEX;
			ck->need = 0;
			ck->cp = 0;
			p++;
			continue;
		case CK_NUM_MINUS:
			if (c < '0' || c > '9')
				CK_FAIL("invalid number");
			ck->state = c == '0' ? CK_NUM_ZERO : CK_NUM_INT;
			p++;
			continue;
		case CK_NUM_INT:
		case CK_NUM_FRAC:
		case CK_NUM_EXP:
			while (p < e && *p >= '0' && *p <= '9')
				p++;
			if (p == e)
				goto out;
			c = *p;
			/* FALLTHROUGH */
		case CK_NUM_ZERO:
			if (c == '.' && ck->state != CK_NUM_FRAC && ck->state != CK_NUM_EXP) {
				ck->state = CK_NUM_DOT;
			} else if ((c == 'e' || c == 'E') && ck->state != CK_NUM_EXP) {
				ck->state = CK_NUM_E;
			} else {
				/* the number ended; c is looked at again */
				ck->state = CK_AFTER;
				continue;
			}
			p++;
			continue;
		case CK_NUM_E:
			if (c == '+' || c == '-') {
				ck->state = CK_NUM_ESIGN;
				p++;
				continue;
			}
			/* FALLTHROUGH */
		case CK_NUM_DOT:
		case CK_NUM_ESIGN:
			if (c < '0' || c > '9')
				CK_FAIL("invalid number");
			ck->state = ck->state == CK_NUM_DOT ? CK_NUM_FRAC : CK_NUM_EXP;
			p++;
			continue;
		case CK_LIT:
			if (c != (unsigned char)*ck->lit)
				CK_FAIL("invalid literal");
			if (*++ck->lit == '\0')
				ck->state = CK_AFTER;
			p++;
			continue;
		case CK_FAILED:
			goto out;
		}
		/* the structural states */
		if (is_blank_json(c)) {
			p++;
			continue;
		}
		switch (ck->state) {
		case CK_START:
			if (c != '{')
				CK_FAIL("expected a JSON object");
			goto value;
		case CK_OBJ_FIRST:
			if (c == '}')
				goto close;
			/* FALLTHROUGH */
		case CK_OBJ_KEY:
			if (c != '"')
				CK_FAIL("expected a string key");
			if (++ck->ntok > PROTO_MAX_TOKENS)
				CK_FAIL(ck_too_many);
			ck->key = 1;
			ck->state = CK_STR;
			p++;
			continue;
		case CK_COLON:
			if (c != ':')
				CK_FAIL("expected ':' after a key");
			ck->state = CK_VALUE;
			p++;
			continue;
		case CK_ARR_FIRST:
			if (c == ']')
				goto close;
			goto value;
		case CK_VALUE:
			goto value;
		case CK_AFTER:
			obj = ck->objects >> (ck->depth - 1) & 1;
			if (c == ',') {
				ck->state = obj ? CK_OBJ_KEY : CK_VALUE;
				p++;
				continue;
			}
			if (c == (obj ? '}' : ']'))
				goto close;
			CK_FAIL(obj ? "expected ',' or '}'" : "expected ',' or ']'");
		default:	/* CK_DONE */
			CK_FAIL("trailing data after the JSON object");
		}
value:
		if (++ck->ntok > PROTO_MAX_TOKENS)
			CK_FAIL(ck_too_many);
		switch (c) {
		case '{':
		case '[':
			if (ck->depth >= PROTO_MAX_DEPTH)
				CK_FAIL("nesting too deep");
			ck->objects = (ck->objects & ~((uint32_t)1 << ck->depth)) |
			    (uint32_t)(c == '{') << ck->depth;
			ck->depth++;
			ck->state = c == '{' ? CK_OBJ_FIRST : CK_ARR_FIRST;
			break;
		case '"':
			ck->key = 0;
			ck->state = CK_STR;
			break;
		case 't':
			ck->lit = "rue";
			ck->state = CK_LIT;
			break;
		case 'f':
			ck->lit = "alse";
			ck->state = CK_LIT;
			break;
		case 'n':
			ck->lit = "ull";
			ck->state = CK_LIT;
			break;
		case '-':
			ck->state = CK_NUM_MINUS;
			break;
		case '0':
			ck->state = CK_NUM_ZERO;
			break;
		default:
			if (c < '1' || c > '9')
				CK_FAIL(c == 0 ? "NUL byte" : "expected a value");
			ck->state = CK_NUM_INT;
			break;
		}
		p++;
		continue;
close:
		if (ck->depth == 1 && ck->pos + (size_t)(p - s) + 1 < early)
			goto out;
		ck->depth--;
		ck->state = ck->depth ? CK_AFTER : CK_DONE;
		p++;
	}
out:
	ck->pos += (size_t)(p - s);
	return (size_t)(p - s);
fail:
	ck->why = why;
	ck->state = CK_FAILED;
	ck->pos += (size_t)(p - s);
	return (size_t)(p - s);
}

/* Takes the closing '}' that ck_run stopped at. */
static void
ck_close(struct proto_check *ck)
{
	ck->depth = 0;
	ck->state = CK_DONE;
	ck->pos++;
}

/* Why the text cannot end here; NULL when it is one whole object. */
static const char *
ck_end(const struct proto_check *ck)
{
	switch (ck->state) {
	case CK_DONE:
		return NULL;
	case CK_FAILED:
		return ck->why;
	case CK_START:
		return "expected a JSON object";
	case CK_OBJ_FIRST:
	case CK_OBJ_KEY:
		return "expected a string key";
	case CK_COLON:
		return "expected ':' after a key";
	case CK_VALUE:
	case CK_ARR_FIRST:
		return "expected a value";
	case CK_STR:
	case CK_ESC:
		return "unterminated string";
	case CK_HEX:
		return "invalid \\u escape in string";
	case CK_LOW_BS:
	case CK_LOW_U:
		return "lone high surrogate in string";
	case CK_UTF8:
		return "invalid UTF-8 in string";
	case CK_NUM_MINUS:
	case CK_NUM_DOT:
	case CK_NUM_E:
	case CK_NUM_ESIGN:
		return "invalid number";
	case CK_LIT:
		return "invalid literal";
	default:
		return "unterminated object or array";
	}
}

/* ---- frames ---- */

enum {
	R_LEN,	/* a length line */
	R_BODY,	/* a payload, kept */
	R_SKIP,	/* a payload over max_frame, checked but not kept */
	R_HUNT,	/* a line of junk, looked through for the start of a frame */
	R_CAND,	/* an object that may be a frame whose length line was run into */
	R_RAW,	/* a data frame's raw bytes after its header, kept as they are */
	R_DROP	/* a data frame's raw bytes after a header that was refused */
};

/* Where the bytes seen last stand against a frame's start, "DIGITS[blanks]\n{". */
enum { T_NONE, T_DIGITS, T_BLANK, T_NL };

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
	r->want = r->declared = 0;
	r->body.len = 0;
	r->rawlen = 0;
	buf_free(&r->held);
	r->track = T_NONE;
}

void
proto_reader_free(struct proto_reader *r)
{
	buf_free(&r->body);
	buf_free(&r->held);
}

/* Whether bytes of an unfinished frame are buffered (for the partial-frame timer). */
int
proto_reader_partial(const struct proto_reader *r)
{
	return r->state != R_LEN || r->linelen > 0;
}

/* Whether the frame in progress is a data frame (its length line said "H+R"). */
int
proto_reader_raw(const struct proto_reader *r)
{
	return r->rawlen > 0 && (r->state == R_BODY || r->state == R_RAW || r->state == R_DROP);
}

/*
 * Gives up the frame in progress and hands its bytes back in *bytes, the
 * reader then looking through them (fed again) for the next frame's start:
 * what a data frame cut short swallowed.
 */
void
proto_reader_rehunt(struct proto_reader *r, struct buf *bytes)
{
	*bytes = r->body;
	memset(&r->body, 0, sizeof(r->body));
	proto_reader_reset(r);
	r->state = R_HUNT;
}

/* The declared payload length of the frame in progress; 0 in a length line or a hunt. */
size_t
proto_reader_declared(const struct proto_reader *r)
{
	return r->state == R_BODY || r->state == R_SKIP || r->state == R_RAW ||
	    r->state == R_DROP ? r->declared + r->rawlen : 0;
}

static int
is_space(int c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' ||
	    c == '\f';
}

/* Decimal digits s[0..e) as a number; -1 = not digits, -2 = too many. */
static int
parse_digits(const char *s, const char *e, size_t *n)
{
	size_t v = 0;

	if (s == e)
		return -1;
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

/*
 * Parses a complete length line (newline excluded): "N", or where data frames
 * are read "H+R" (H bytes of JSON, then R raw ones; *raw = R).  1 = blank,
 * 0 = ok, -1 = bad, -2 = too many digits.
 */
static int
parse_length(struct proto_reader *r, size_t *n, size_t *raw)
{
	const char *s = r->line, *e = r->line + r->linelen, *plus;
	int rc;

	*raw = 0;
	while (s < e && is_space((unsigned char)*s))
		s++;
	while (e > s && is_space((unsigned char)e[-1]))
		e--;
	if (s == e)
		return 1;
	if (r->raw_ok && (plus = memchr(s, '+', (size_t)(e - s))) != NULL) {
		if ((rc = parse_digits(s, plus, n)) < 0 || (rc = parse_digits(plus + 1, e, raw)) < 0)
			return rc;
		/* a data frame carries bytes: "H+0" would be a plain frame in disguise */
		return *n < 2 || *n > PROTO_MAX_RAW_HEAD || *raw == 0 || *raw > (size_t)-1 - *n ? -3 : 0;
	}
	return parse_digits(s, e, n);
}

static void
reader_error(struct proto_reader *r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(r->err, sizeof(r->err), fmt, ap);
	va_end(ap);
	r->cut = 0;
}

/* Moves the tracker past byte c; the digits of the latest run are kept (the last ones). */
static void
track(struct proto_reader *r, int c)
{
	if (c >= '0' && c <= '9') {
		if (r->track != T_DIGITS) {
			r->ndigits = 0;
		} else if (r->ndigits == sizeof(r->digits)) {
			memmove(r->digits, r->digits + sizeof(r->digits) / 2, sizeof(r->digits) / 2);
			r->ndigits = sizeof(r->digits) / 2;
		}
		r->digits[r->ndigits++] = (char)c;
		r->track = T_DIGITS;
	} else if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
		r->track = r->track == T_NONE || r->track == T_NL ? T_NONE :
		    c == '\n' ? T_NL : T_BLANK;
	} else {
		r->track = T_NONE;
	}
}

/* Sets the tracker from the bytes just before the present one. */
static void
track_from(struct proto_reader *r, const char *p, size_t n)
{
	r->track = T_NONE;
	while (n > 0) {
		track(r, (unsigned char)*p++);
		n--;
	}
}

/* The tracker from the last bytes of the body. */
static void
track_body(struct proto_reader *r)
{
	size_t n = r->body.len < PROTO_MAX_LENLINE ? r->body.len : PROTO_MAX_LENLINE;

	track_from(r, r->body.p + r->body.len - n, n);
}

/* Keeps the last bytes of a frame that is skipped, for track_from. */
static void
tail_add(struct proto_reader *r, const char *p, size_t n)
{
	size_t keep;

	if (n >= sizeof(r->tail)) {
		memcpy(r->tail, p + n - sizeof(r->tail), sizeof(r->tail));
		r->ntail = sizeof(r->tail);
		return;
	}
	keep = r->ntail + n > sizeof(r->tail) ? sizeof(r->tail) - n : r->ntail;
	memmove(r->tail, r->tail + r->ntail - keep, keep);
	memcpy(r->tail + keep, p, n);
	r->ntail = keep + n;
}

/* Whether the digit run ends with the decimal digits of n. */
static int
digits_end_with(const struct proto_reader *r, size_t n)
{
	char d[24];
	int k = snprintf(d, sizeof(d), "%zu", n);

	return (size_t)k <= r->ndigits && memcmp(r->digits + r->ndigits - (size_t)k, d, (size_t)k) == 0;
}

/* The largest length the digit run can end with: its value, or max_frame if less. */
static size_t
digits_bound(const struct proto_reader *r)
{
	size_t i, d, v = 0;

	for (i = 0; i < r->ndigits; i++) {
		d = (size_t)(r->digits[i] - '0');
		if (d > r->max_frame || v > (r->max_frame - d) / 10)
			return r->max_frame;
		v = v * 10 + d;
	}
	return v;
}

/* After a frame's last byte: a payload that was not one JSON object may have run into a length line. */
static int
state_after_frame(struct proto_reader *r, int bad)
{
	if (bad && r->ck.why == NULL && r->state == R_BODY)
		track_body(r);
	else if (bad && r->ck.why == NULL)
		track_from(r, r->tail, r->ntail);
	return bad && r->track != T_NONE ? R_HUNT : R_LEN;
}

static void
cand_start(struct proto_reader *r)
{
	r->state = R_CAND;
	r->want = r->declared = r->rawlen = 0;
	r->body.len = 0;
	ck_init(&r->ck);
}

/* What a state's step returns when it saw no event: the reader goes on with the next bytes. */
#define R_GO_ON (-1)

/* LEN: one byte of a length line; at its newline, the frame it announces starts (or an error). */
static int
reader_length(struct proto_reader *r, const char *p, size_t *ip)
{
	size_t n = 0, raw = 0;
	int rc;

	if (p[*ip] != '\n') {
		if (r->linelen == sizeof(r->line)) {
			track_from(r, r->line, r->linelen);
			r->state = R_HUNT;
			r->linelen = 0;
			reader_error(r, "Protocol error: length line longer than %d bytes",
			    PROTO_MAX_LENLINE);
			return PROTO_ERROR;
		}
		r->line[r->linelen++] = p[(*ip)++];
		return R_GO_ON;
	}
	(*ip)++;
	rc = parse_length(r, &n, &raw);
	track_from(r, r->line, r->linelen);
	r->linelen = 0;
	if (rc == 1)	/* a stray newline between frames is harmless */
		return R_GO_ON;
	if (rc < 0) {
		/* digits right before the newline may be a length line run into */
		track(r, '\n');
		r->state = r->track == T_NL ? R_HUNT : R_LEN;
		if (rc == -3)
			reader_error(r, "Protocol error: a data frame's length line is H+R, "
			    "a header of 2 to %d bytes and 1 or more bytes", PROTO_MAX_RAW_HEAD);
		else
			reader_error(r, "Protocol error: expected a byte count, got a line of %s",
			    rc == -1 ? "other characters" : "too many digits");
		return PROTO_ERROR;
	}
	r->body.len = 0;
	r->want = r->declared = n;
	r->rawlen = raw;
	ck_init(&r->ck);
	if (n > r->max_frame || raw > r->max_frame - n) {
		r->state = R_SKIP;
		r->ntail = 0;
		/* what is over the limit is skipped, the raw bytes too: all of it is checked */
		r->want = r->declared = n + raw;
		r->rawlen = 0;
		reader_error(r, "Protocol error: frame of %zu bytes exceeds the limit of %zu bytes",
		    n + raw, r->max_frame);
		return PROTO_ERROR;
	}
	r->state = R_BODY;
	if (n == 0) {
		r->state = R_LEN;
		buf_reserve(&r->body, 0);
		return PROTO_FRAME;
	}
	return R_GO_ON;
}

/*
 * BODY or SKIP, bytes the checker still accepts: taken up to where it stops.
 * An object that ends before the declared length at a decimal suffix of it
 * is a cut length line run into the next frame's (PROTO_ERROR, r->cut; the
 * frame of that size comes next, from r->held).
 */
static int
reader_body_good(struct proto_reader *r, const char *p, size_t len, size_t *ip)
{
	const unsigned char *u = (const unsigned char *)p;
	size_t i = *ip, take = len - i < r->want ? len - i : r->want, k, n;

	k = ck_run(&r->ck, u + i, take, r->state == R_BODY ? r->declared : 0);
	if (r->state == R_BODY)
		buf_add(&r->body, p + i, k);
	else
		tail_add(r, p + i, k);
	*ip = i += k;
	r->want -= k;
	if (r->ck.why != NULL && r->state == R_BODY) {
		track_body(r);
	} else if (r->ck.why != NULL) {
		track_from(r, r->tail, r->ntail);
	} else if (k < take) {
		/* the object ends before the declared length */
		n = r->declared - r->want + 1;
		/* (a data frame's header: its digits are the raw length's) */
		if (r->rawlen == 0 && digits_end_with(r, n)) {
			/* a cut length line ran into this frame's: "100" + "79\n{...}" */
			reader_error(r, "Protocol error: frame cut short (a length line ran "
			    "into the next one: %zu declared, a whole object of %zu follows)",
			    r->declared, n);
			r->cut = 1;
			r->want = 1;
			r->declared = n;
			r->held = r->body;
			memset(&r->body, 0, sizeof(r->body));
			return PROTO_ERROR;
		}
		ck_close(&r->ck);
		buf_add(&r->body, p + i, 1);
		(*ip)++;
		r->want--;
	}
	return R_GO_ON;
}

/*
 * BODY or SKIP after a byte that cannot be this frame: the bytes are kept
 * whole for the parser's report, unless a frame starts in them ("DIGITS\n{"),
 * which means this one was cut short (PROTO_ERROR, r->cut; the candidate
 * frame is read next).
 */
static int
reader_body_bad(struct proto_reader *r, const char *p, size_t len, size_t *ip)
{
	const unsigned char *u = (const unsigned char *)p;
	size_t i = *ip, take = len - i < r->want ? len - i : r->want, k;

	for (k = 0; k < take && !(r->track == T_NL && p[i + k] == '{'); k++)
		track(r, u[i + k]);
	if (r->state == R_BODY)
		buf_add(&r->body, p + i, k);
	*ip = i + k;
	r->want -= k;
	if (k < take && r->state == R_SKIP) {
		cand_start(r);	/* the frame was refused already */
		return R_GO_ON;
	}
	if (k < take) {
		reader_error(r, "Protocol error: frame cut short (invalid JSON at byte "
		    "%zu of %zu: %s); resynchronising", r->ck.pos, r->declared, r->ck.why);
		r->cut = 1;
		cand_start(r);
		return PROTO_ERROR;
	}
	return R_GO_ON;
}

/* BODY or SKIP: the frame's bytes; at its end, the frame (or a data frame's raw bytes next). */
static int
reader_body(struct proto_reader *r, const char *p, size_t len, size_t *ip)
{
	int ev, bad;

	ev = r->ck.why == NULL ? reader_body_good(r, p, len, ip) : reader_body_bad(r, p, len, ip);
	if (ev != R_GO_ON || r->want > 0 || r->state == R_CAND)
		return ev;
	bad = r->ck.state != CK_DONE;
	if (r->state == R_BODY && r->rawlen > 0) {
		/* a data frame's header is done: its raw bytes follow, unchecked */
		r->want = r->rawlen;
		if (!bad) {
			r->state = R_RAW;
			return R_GO_ON;
		}
		r->state = R_DROP;
		reader_error(r, "Protocol error: a data frame's header is not one JSON object");
		return PROTO_ERROR;
	}
	ev = r->state == R_SKIP ? R_GO_ON : PROTO_FRAME;
	r->state = state_after_frame(r, bad);
	return ev;
}

/* RAW or DROP: a data frame's raw bytes, kept (the frame) or dropped (its header was refused). */
static int
reader_raw(struct proto_reader *r, const char *p, size_t len, size_t *ip)
{
	size_t take = len - *ip < r->want ? len - *ip : r->want;
	int keep = r->state == R_RAW;

	if (keep)
		buf_add(&r->body, p + *ip, take);
	*ip += take;
	r->want -= take;
	if (r->want > 0)
		return R_GO_ON;
	r->state = R_LEN;
	r->track = T_NONE;
	r->rawlen = 0;
	if (!keep)
		return R_GO_ON;
	r->json_len = r->declared;
	return PROTO_FRAME;
}

/*
 * The resync, HUNT and CAND: after bytes that are no frame (junk, a cut or
 * refused frame), finds where the next frame starts.  HUNT looks for a line
 * start ("\n", or digits and "\n"); "DIGITS\n{" starts a candidate, which
 * CAND takes for a frame only when it is one whole JSON object whose size is
 * a decimal suffix of those digits (a length line the cut bytes ran into),
 * else it hunts again from the candidate's last bytes.  Consumes at most up
 * to p[len); returns PROTO_FRAME (the frame in r->body) or R_GO_ON.
 */
static int
reader_resync(struct proto_reader *r, const char *p, size_t len, size_t *ip)
{
	const unsigned char *u = (const unsigned char *)p;
	size_t i = *ip, n, k, take;

	if (r->state == R_HUNT) {
		if (r->track == T_NL && p[i] == '{') {
			cand_start(r);
		} else if (r->track == T_NL || (r->track == T_NONE && p[i] == '\n')) {
			/* a line start: what follows is a length line */
			r->state = R_LEN;
			*ip += r->track == T_NONE;
		} else {
			track(r, u[(*ip)++]);
		}
		return R_GO_ON;
	}
	n = digits_bound(r);
	take = len - i < n - r->body.len ? len - i : n - r->body.len;
	k = ck_run(&r->ck, u + i, take, (size_t)-1);
	buf_add(&r->body, p + i, k);
	*ip = i += k;
	if (r->ck.why == NULL && k < take) {
		ck_close(&r->ck);
		buf_add(&r->body, p + i, 1);
		(*ip)++;
		if (digits_end_with(r, r->body.len)) {
			r->state = R_LEN;
			return PROTO_FRAME;
		}
		/* a whole object, of another length: no frame starts inside it */
		r->track = T_NONE;
		r->state = R_HUNT;
	} else if (r->ck.why != NULL || r->body.len == n) {
		/* not a frame; one may start in its last bytes */
		track_body(r);
		r->state = R_HUNT;
	}
	return R_GO_ON;
}

/*
 * Consumes bytes from p[0..len) and stops at the first event: a whole frame in
 * r->body, or an error (in r->err).  *used says how many bytes were taken.
 * See the top of this file for the states; each error is returned once, and
 * a frame that follows a cut one comes out whole after it.
 */
static enum proto_event
reader_feed(struct proto_reader *r, const char *p, size_t len, size_t *used)
{
	size_t i = 0;
	int ev = R_GO_ON;

	if (r->held.p != NULL) {
		/* the caller may have released the body after the error: the frame's bytes are here */
		buf_free(&r->body);
		r->body = r->held;
		memset(&r->held, 0, sizeof(r->held));
	}
	while (i < len && ev == R_GO_ON) {
		switch (r->state) {
		case R_LEN:
			ev = reader_length(r, p, &i);
			break;
		case R_BODY:
		case R_SKIP:
			ev = reader_body(r, p, len, &i);
			break;
		case R_RAW:
		case R_DROP:
			ev = reader_raw(r, p, len, &i);
			break;
		case R_HUNT:
		case R_CAND:
			ev = reader_resync(r, p, len, &i);
			break;
		}
	}
	*used = i;
	return ev == R_GO_ON ? PROTO_NEED_MORE : (enum proto_event)ev;
}

enum proto_event
proto_reader_feed(struct proto_reader *r, const char *p, size_t len, size_t *used)
{
	enum proto_event ev;

	r->json_len = (size_t)-1;
	ev = reader_feed(r, p, len, used);
	if (ev == PROTO_FRAME && r->json_len == (size_t)-1)
		r->json_len = r->body.len;
	return ev;
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

/* ---- strict JSON ---- */

static long
hex4(const unsigned char *s)
{
	long v = 0;
	int i;

	for (i = 0; i < 4; i++)
		v = v * 16 + hexval(s[i]);
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

/*
 * How many times the checker started over a text: each frame the reader
 * reads, each parse that checks.  For the tests, which count one per served
 * request.
 */
unsigned long
proto_check_runs(void)
{
	return ck_begun;
}

/*
 * Validates js[0..len) as exactly one JSON object (the checker above) and
 * tokenizes it.  Bounded: depth by PROTO_MAX_DEPTH, tokens by
 * PROTO_MAX_TOKENS; jsmn with parent links and the next[] table keep the cost
 * linear in len.  done, when not NULL, is a check already run over these
 * bytes from their first (the frame reader's): when it took all len of them,
 * or failed inside them, its verdict is the one a check here would reach
 * (the checker is resumable at any byte), so it is not run again.
 */
static int
json_parse(struct proto_json *j, const char *js, size_t len, const struct proto_check *done,
    char *err, size_t errlen)
{
	struct proto_check ck;
	const char *why;
	jsmntok_t *t;
	jsmn_parser p;
	int r, i;

	memset(j, 0, sizeof(*j));
	if (len > PROTO_MAX_FRAME_LIMIT) {
		snprintf(err, errlen, "Protocol error: message too large");
		return -1;
	}
	if (done != NULL && (done->state == CK_FAILED ? done->pos < len : done->pos == len)) {
		ck = *done;
	} else {
		ck_init(&ck);
		ck_run(&ck, (const unsigned char *)js, len, 0);
	}
	if ((why = ck_end(&ck)) == ck_too_many) {
		snprintf(err, errlen, "Protocol error: more than %d JSON values in one message",
		    PROTO_MAX_TOKENS);
		return -1;
	}
	if (why != NULL) {
		snprintf(err, errlen, "Protocol error: invalid JSON at byte %zu: %s", ck.pos, why);
		return -1;
	}
	/* the allocation below cannot wrap, even on i386 (jsmn's int offsets: the limit above) */
	if ((size_t)ck.ntok > ((size_t)-1) / (sizeof(jsmntok_t) + sizeof(int))) {
		snprintf(err, errlen, "Protocol error: message too large");
		return -1;
	}
	j->js = js;
	j->len = len;
	j->tok = t = neg_alloc((sizeof(jsmntok_t) + sizeof(int)) * (size_t)ck.ntok);
	j->next = (int *)(t + ck.ntok);
	jsmn_init(&p);
	r = jsmn_parse(&p, js, len, t, (unsigned)ck.ntok);
	if (r != ck.ntok) {
		/* Cannot happen for text the checker accepted; refuse rather than trust it. */
		proto_json_free(j);
		snprintf(err, errlen, "Protocol error: JSON tokenizer disagrees (%d)", r);
		return -1;
	}
	j->ntok = r;
	/*
	 * A subtree is the run of tokens after its root: counting each token's
	 * descendants from the last token up (a parent comes before its
	 * children) gives where each subtree ends, so no lookup walks one.
	 */
	for (i = 0; i < r; i++)
		j->next[i] = 0;
	for (i = r - 1; i >= 0; i--) {
		if (t[i].parent >= 0)
			j->next[t[i].parent] += j->next[i] + 1;
		j->next[i] += i + 1;
	}
	return 0;
}

int
proto_json_parse(struct proto_json *j, const char *js, size_t len, char *err,
    size_t errlen)
{
	return json_parse(j, js, len, NULL, err, errlen);
}

void
proto_json_free(struct proto_json *j)
{
	free(j->tok);
	j->tok = NULL;
	j->next = NULL;
	j->ntok = 0;
}

/* The index of the token after tok's whole subtree (a key's subtree holds its value). */
int
proto_json_next(const struct proto_json *j, int tok)
{
	return j->next[tok];
}

/* jsmn's token types as ours, whatever numbers jsmn gives them. */
int
proto_json_type(const struct proto_json *j, int tok)
{
	switch (((const jsmntok_t *)j->tok)[tok].type) {
	case JSMN_OBJECT:
		return PROTO_J_OBJECT;
	case JSMN_ARRAY:
		return PROTO_J_ARRAY;
	case JSMN_STRING:
		return PROTO_J_STRING;
	case JSMN_PRIMITIVE:
		return PROTO_J_PRIMITIVE;
	default:
		return 0;
	}
}

int
proto_json_size(const struct proto_json *j, int tok)
{
	return ((const jsmntok_t *)j->tok)[tok].size;
}

/* Whether tok is the literal (true, false, null) or number spelt so; never a string. */
int
proto_json_is(const struct proto_json *j, int tok, const char *literal)
{
	const jsmntok_t *t = (const jsmntok_t *)j->tok + tok;
	size_t n = strlen(literal);

	return proto_json_type(j, tok) == PROTO_J_PRIMITIVE &&
	    (size_t)(t->end - t->start) == n && memcmp(j->js + t->start, literal, n) == 0;
}

/* Whether tok is a string whose value (escapes decoded) is s. */
int
proto_json_is_string(const struct proto_json *j, int tok, const char *s)
{
	const jsmntok_t *t = (const jsmntok_t *)j->tok + tok;
	size_t n = (size_t)(t->end - t->start), slen = strlen(s);
	struct buf b = {0};
	int eq;

	if (proto_json_type(j, tok) != PROTO_J_STRING)
		return 0;
	if (memchr(j->js + t->start, '\\', n) == NULL)
		return n == slen && memcmp(j->js + t->start, s, n) == 0;
	proto_json_string(j, tok, &b);
	eq = b.len == slen && memcmp(b.p, s, slen) == 0;
	buf_free(&b);
	return eq;
}

/* The value token of key in object obj; the last one wins, as in Python; -1 if absent. */
int
proto_json_get(const struct proto_json *j, int obj, const char *key)
{
	int i, n = proto_json_size(j, obj), tok = obj + 1, found = -1;

	for (i = 0; i < n; i++, tok = proto_json_next(j, tok)) {
		if (proto_json_is_string(j, tok, key))
			found = tok + 1;
	}
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

	if (proto_json_type(j, tok) != PROTO_J_STRING)
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
			cp = (unsigned long)hex4(s + i + 2);
			i += 6;
			if (cp >= 0xd800 && cp <= 0xdbff) {
				lo = (unsigned long)hex4(s + i + 2);
				cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
				i += 6;
			} else if (PROTO_RAW_BYTE_ESCAPE(cp)) {
				c = (char)(cp - 0xdc00);
				buf_add(b, &c, 1);
				continue;
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
	int frac, places = 3;

	/* less than half a millisecond is still a timeout, not 0 ("none") */
	if (secs > 0 && ms == 0)
		ms = 1;
	frac = (int)(ms % 1000);

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

	if (proto_json_type(j, tok) != PROTO_J_PRIMITIVE)
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
			/* a byte that is not UTF-8 as Python's surrogateescape writes it: read back intact */
			cp = 0xdc00 + s[i];
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
	int tok = proto_json_get(j, 0, "id"), str;
	size_t n;

	id[0] = '\0';
	if (tok < 0)
		return 0;
	t = (const jsmntok_t *)j->tok + tok;
	str = proto_json_type(j, tok) == PROTO_J_STRING;
	if (!str && proto_json_type(j, tok) != PROTO_J_PRIMITIVE)
		return -1;
	/* jsmn's string tokens exclude the quotes; keep them, the id is echoed as JSON text. */
	n = (size_t)(t->end - t->start) + (str ? 2 : 0);
	if (n > PROTO_MAX_ID)
		return -1;
	memcpy(id, j->js + t->start - str, n);
	id[n] = '\0';
	/* it is echoed as it came, and what we write is ASCII, as json.dumps writes */
	for (; n > 0; n--)
		if ((unsigned char)id[n - 1] >= 0x80) {
			id[0] = '\0';
			return -1;
		}
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

/*
 * Fills a zeroed req from a request's tokens (j is the caller's: a copy of its
 * handle, never freed here); err names what was wrong.
 */
static int
request_from_json(struct proto_request *req, struct proto_json j, char *err, size_t errlen)
{
	int tok, args, kw, i, n;
	double d;

	if (copy_id(&j, req->id) < 0)
		FAIL("Protocol error: the request id must be a string or number of at most %d ASCII bytes",
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
		if (!proto_json_is_string(&j, tok, "base64"))
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
	if ((tok = proto_json_get(&j, kw, "stream")) >= 0 && !proto_json_is(&j, tok, "null")) {
		if (proto_json_number(&j, tok, &d) < 0 || d != NEG_STREAM_VERSION)
			FAIL("Protocol error: stream must be %d", NEG_STREAM_VERSION);
		if (req->id[0] == '\0' || req->has_input)
			FAIL("Protocol error: a streamed call needs an id, and takes no input key");
		req->stream = NEG_STREAM_VERSION;
		req->window = NEG_STREAM_WINDOW;
		if ((tok = proto_json_get(&j, kw, "window")) >= 0 && !proto_json_is(&j, tok, "null")) {
			if (proto_json_number(&j, tok, &d) < 0 || d < 1 || d > PROTO_MAX_FRAME_LIMIT)
				FAIL("Protocol error: window must be a number of bytes");
			req->window = (size_t)d;
		}
		tok = proto_json_get(&j, kw, "stdin");
		req->want_stdin = tok >= 0 && proto_json_is(&j, tok, "true");
	}
	tok = proto_json_get(&j, kw, "new_caller");
	req->new_caller = tok >= 0 && proto_json_is(&j, tok, "true");
done:
	req->argv[req->argc] = NULL;
	return 0;
fail:
	if (req->argv)
		req->argv[req->argc] = NULL;
	return -1;
}

/* Parses a request frame's payload into req; err names what was wrong. */
int
proto_request_parse(struct proto_request *req, const char *js, size_t len,
    char *err, size_t errlen)
{
	struct proto_json j;
	int rc;

	memset(req, 0, sizeof(*req));
	if (proto_json_parse(&j, js, len, err, errlen) < 0)
		return -1;
	rc = request_from_json(req, j, err, errlen);
	proto_json_free(&j);
	return rc;
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
		if (kw && kw->stream)
			buf_addf(b, ", \"stream\": %d, \"window\": %zu, \"stdin\": %s", kw->stream,
			    kw->window, kw->want_stdin ? "true" : "false");
	} else if (kw && kw->new_caller) {
		buf_adds(b, "\"new_caller\": true");
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

/* A version reply; stream > 0 says which version of streaming the callee serves. */
void
proto_reply_version(struct buf *b, const char *id, const char *version, int stream)
{
	size_t start = b->len;

	buf_adds(b, "{\"success\": true, \"result\": ");
	proto_put_string(b, version, strlen(version));
	if (stream)
		buf_addf(b, ", \"stream\": %d", stream);
	end_reply(b, id, start);
}

/* ---- the frames of a streamed call ---- */

static const char *const stream_fds[] = { "stdin", "stdout", "stderr" };

static int stream_from_json(struct proto_stream *, struct proto_json, const char *, size_t,
    size_t, char *, size_t);

static int
stream_fd(const struct proto_json *j, int tok)
{
	int i;

	for (i = 0; i < 3; i++)
		if (proto_json_is_string(j, tok, stream_fds[i]))
			return i;
	return -1;
}

/*
 * Whether a payload is a stream frame (an object with "id" and one of
 * "data", "credit", "eof", "cancel", no "method" or "success"): 1 and s
 * filled, 0 for a request or reply, -1 for a broken one (err says why).
 * Requests and replies may be large; stream frames never are, so only a
 * short JSON part is parsed here.
 */
int
proto_stream_parse(struct proto_stream *s, const char *js, size_t len, size_t json_len,
    char *err, size_t errlen)
{
	struct proto_json j;
	int rc;

	memset(s, 0, sizeof(*s));
	if (json_len > PROTO_MAX_RAW_HEAD) {
		if (json_len == len)
			return 0;
		snprintf(err, errlen, "Protocol error: a data frame's header must be 2 to %d bytes",
		    PROTO_MAX_RAW_HEAD);
		return -1;
	}
	if (proto_json_parse(&j, js, json_len, err, errlen) < 0)
		return json_len == len ? 0 : -1;	/* a request's parser says why */
	rc = stream_from_json(s, j, js, len, json_len, err, errlen);
	proto_json_free(&j);
	return rc;
}

/*
 * A frame the reader r returned, as a daemon serves it: a stream frame (1, s
 * filled), a request (0, req filled) or neither (-1, err says why; s->id names
 * the call when it was a broken stream frame of one).  As proto_stream_parse
 * then proto_request_parse would answer, but the JSON is tokenised once, and
 * checked only when the reader did not check it whole as it arrived.
 */
int
proto_served_parse(const struct proto_reader *r, struct proto_stream *s,
    struct proto_request *req, char *err, size_t errlen)
{
	const char *js = r->body.p;
	size_t len = r->body.len, json_len = r->json_len;
	struct proto_json j;
	int rc;

	memset(s, 0, sizeof(*s));
	memset(req, 0, sizeof(*req));
	if (json_len > PROTO_MAX_RAW_HEAD && json_len != len)
		return proto_stream_parse(s, js, len, json_len, err, errlen);
	if (json_parse(&j, js, json_len, &r->ck, err, errlen) < 0)
		return -1;
	/* requests and replies may be large; stream frames never are */
	rc = json_len > PROTO_MAX_RAW_HEAD ? 0 : stream_from_json(s, j, js, len, json_len, err, errlen);
	if (rc == 0) {
		memset(s, 0, sizeof(*s));
		rc = request_from_json(req, j, err, errlen);
	}
	proto_json_free(&j);
	return rc;
}

/*
 * proto_stream_parse's reading of a header's tokens (j is the caller's: a
 * copy of its handle, never freed here).
 */
static int
stream_from_json(struct proto_stream *s, struct proto_json j, const char *js, size_t len,
    size_t json_len, char *err, size_t errlen)
{
	int tok, rc = 1;
	double d;

	if (proto_json_get(&j, 0, "method") >= 0 || proto_json_get(&j, 0, "command") >= 0 ||
	    proto_json_get(&j, 0, "success") >= 0) {
		rc = 0;
		if (json_len != len)
			FAIL("Protocol error: raw bytes follow a request or reply");
		goto out;
	}
	if (copy_id(&j, s->id) < 0 || s->id[0] == '\0')
		FAIL("Protocol error: a stream frame needs an id");
	s->data = js + json_len;
	s->len = len - json_len;
	if ((tok = proto_json_get(&j, 0, "data")) >= 0) {
		s->kind = PROTO_S_DATA;
		if ((s->fd = stream_fd(&j, tok)) < 0)
			FAIL("Protocol error: data must be \"stdin\", \"stdout\" or \"stderr\"");
		if (json_len == len)
			FAIL("Protocol error: a data frame carries 1 or more bytes after its header (an H+R length line)");
		goto out;
	}
	if (json_len != len)
		FAIL("Protocol error: raw bytes follow a frame that is no data frame");
	if ((tok = proto_json_get(&j, 0, "credit")) >= 0) {
		s->kind = PROTO_S_CREDIT;
		if (proto_json_number(&j, tok, &d) < 0 || d < 0 || d > PROTO_MAX_FRAME_LIMIT ||
		    d != (double)(size_t)d)
			FAIL("Protocol error: credit must be a whole number of bytes");
		s->credit = (size_t)d;
	} else if ((tok = proto_json_get(&j, 0, "eof")) >= 0) {
		s->kind = PROTO_S_EOF;
		if ((s->fd = stream_fd(&j, tok)) < 0)
			FAIL("Protocol error: eof must be \"stdin\", \"stdout\" or \"stderr\"");
	} else if ((tok = proto_json_get(&j, 0, "cancel")) >= 0) {
		s->kind = PROTO_S_CANCEL;
		s->kill = proto_json_is_string(&j, tok, "KILL");
		if (!s->kill && !proto_json_is_string(&j, tok, "TERM"))
			FAIL("Protocol error: cancel must be \"TERM\" or \"KILL\"");
	} else {
		rc = 0;	/* neither: the request's parser says what it lacks */
	}
out:
	return rc;
fail:
	return -1;
}

/* A data frame: "H+R\n", the header, the bytes (one write() on a port: keep R <= NEG_STREAM_CHUNK). */
void
proto_stream_data(struct buf *b, const char *id, int fd, const char *p, size_t len)
{
	char head[PROTO_MAX_RAW_HEAD + 1];
	int n = snprintf(head, sizeof(head), "{\"id\": %s, \"data\": \"%s\"}", id, stream_fds[fd]);

	buf_addf(b, "%d+%zu\n", n, len);
	buf_add(b, head, (size_t)n);
	buf_add(b, p, len);
}

/*
 * A data frame whose bytes are read straight into b: _open writes its length
 * line with R as five digits to fill in (leading zeros read as any digits do)
 * and its header, and makes room for up to room bytes at b->p + b->len;
 * _close takes the n bytes put there.  Returns where the frame starts.
 */
size_t
proto_stream_data_open(struct buf *b, const char *id, int fd, size_t room)
{
	char head[PROTO_MAX_RAW_HEAD + 1];
	int n = snprintf(head, sizeof(head), "{\"id\": %s, \"data\": \"%s\"}", id, stream_fds[fd]);
	size_t start = b->len;

	buf_addf(b, "%d+00000\n", n);
	buf_add(b, head, (size_t)n);
	buf_reserve(b, room);
	return start;
}

void
proto_stream_data_close(struct buf *b, size_t start, size_t n)
{
	char *plus = memchr(b->p + start, '+', 8);
	char digits[8];

	snprintf(digits, sizeof(digits), "%05zu", n % 100000);
	memcpy(plus + 1, digits, 5);
	b->len += n;
	b->p[b->len] = '\0';
}

void
proto_stream_credit(struct buf *b, const char *id, size_t n)
{
	size_t start = b->len;

	buf_addf(b, "{\"id\": %s, \"credit\": %zu}", id, n);
	proto_frame_end(b, start);
}

void
proto_stream_eof(struct buf *b, const char *id, int fd)
{
	size_t start = b->len;

	buf_addf(b, "{\"id\": %s, \"eof\": \"%s\"}", id, stream_fds[fd]);
	proto_frame_end(b, start);
}

void
proto_stream_cancel(struct buf *b, const char *id, int kill)
{
	size_t start = b->len;

	buf_addf(b, "{\"id\": %s, \"cancel\": \"%s\"}", id, kill ? "KILL" : "TERM");
	proto_frame_end(b, start);
}

/* The integer key holds if it is one from min to max, else dflt. */
static int
get_int(const struct proto_json *j, const char *key, int dflt, int min, int max)
{
	int tok = proto_json_get(j, 0, key);
	double d;

	if (tok < 0 || proto_json_number(j, tok, &d) < 0 || d < min || d > max || d != (int)d)
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
	r->stream = get_int(&j, "stream", 0, 0, INT_MAX);
	r->base64 = base64 = (tok = proto_json_get(&j, 0, "encoding")) >= 0 &&
	    proto_json_is_string(&j, tok, "base64");
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
		r->exit_code = get_int(&j, "exit_code", -1, 0, PROTO_MAX_EXIT_CODE);
		r->signal = get_int(&j, "signal", 0, 1, PROTO_MAX_SIGNAL);
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
	/* a refused reply leaves nothing for the caller to free */
	proto_json_free(&j);
	proto_response_free(r);
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
