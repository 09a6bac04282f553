/*
 * neg.c: what negotiator-host and negotiator-guest share.
 *
 * Logging (stderr or syslog), option helpers, signals through a self-pipe,
 * the commands directory and the built-in commands, the command runner, the
 * dispatch of one request, and the client side of a call (one, or many at once).
 *
 * The command runner never uses a shell.  A command is a plain name, looked up
 * in the commands directory, else in the built-in table, and exec'd (or, for a
 * built-in, run in a forked child) with the argv the peer sent, a fixed small
 * environment, its own session, stdin from the request, and stdout and stderr
 * read by the caller's poll loop into bounded buffers.  A failed exec comes
 * back through a close-on-exec pipe as an errno, not as a mystery exit 127.
 *
 * Job states:   running --exit--> reaped --pipes at EOF--> done
 *               running --deadline--> SIGTERM --grace--> SIGKILL (group)
 *               reaped --pipes still open after grace--> done (pipes closed)
 *
 * A slot on a served channel holds one execute; every other request, and an
 * execute that finds all the channel's slots taken ("busy"), is answered at
 * once, or, without an id, right behind the replies it must follow, so the
 * channel is always read.  A slot's state changes only in slot_event, by its
 * table; this picture is what `neg-test slot-table` prints of it (t/unit.bats
 * compares the two):
 *   FREE     execute    -> QUEUED   the request kept; its timeout runs from now
 *   QUEUED   start      -> RUNNING  command started (fair share allows); DONE when it cannot start
 *   QUEUED   refused    -> DONE     reply: why it will not run
 *   QUEUED   cancel     -> DONE     reply: cancelled before it started
 *   QUEUED   kill       -> DONE     reply: cancelled before it started
 *   QUEUED   violation  -> DONE     reply: the protocol error
 *   QUEUED   new-caller -> DONE     no reply
 *   QUEUED   peer-gone  -> DONE     no reply
 *   QUEUED   stop       -> DONE     reply: the daemon is stopping
 *   RUNNING  job-done   -> DONE     reply: the command's result
 *   RUNNING  cancel     -> RUNNING  SIGTERM, SIGKILL after the grace; stdin closed
 *   RUNNING  kill       -> RUNNING  SIGKILL; stdin closed
 *   RUNNING  violation  -> RUNNING  stdin closed; SIGTERM; the reply will say why
 *   RUNNING  new-caller -> RUNNING  stdin closed; SIGTERM; no reply
 *   RUNNING  peer-gone  -> RUNNING  stdin closed; SIGTERM; no reply
 *   RUNNING  stop       -> RUNNING  SIGTERM; the reply will say the daemon is stopping
 *   DONE     flushed    -> FREE     reply (and answers held behind it) queued for the peer
 *   DONE     new-caller -> DONE     reply dropped
 *   DONE     peer-gone  -> DONE     reply dropped
 *   DONE     stop       -> DONE     reply kept: it goes before the daemon exits
 *   any other event in any state: logged, and nothing changes
 *
 * Contents, in reading order:
 *   logging and small helpers   neg_log, neg_die, sizes and seconds, neg_split
 *   signals                     the self-pipe every loop polls
 *   built-in commands           find-* in C, the reference's formats
 *   the commands directory      names, lookup, list_commands
 *   the command runner          neg_job_spawn and the job a poll loop drives
 *   serving one request         per-peer log lines, dispatch, the fair job cap
 *   a served channel            neg_chan_*: read, queue, run, reply, time out
 *   the options                 neg_cli_*: what both programs take, --input
 *   the client side of a call   neg_run, every CLI call as a state
 *                               machine (one guest's -e, or a host fleet's
 *                               many), and -e / -l as ssh would behave
 *
 * Both daemons' loop turn: build the pollfds (signal pipe, channels, jobs),
 * poll until the earliest deadline, drain the signal pipe, neg_chan_io
 * (write what is queued, read, run or answer, and write an answer to what was
 * just read at once), neg_chan_reap on SIGCHLD, neg_chan_tick (timeouts,
 * kills, partial frames).
 * A CLI's turn (neg_runs_turn): signals become cancels, the pollfds of every
 * call not done, poll until the earliest deadline, each call's io and tick.
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <limits.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <net/if.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "neg_proto.h"

const char *neg_progname = "negotiator";
int neg_verbosity = LOG_WARNING;
int neg_syslog;

static char clean_path[] =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
static char clean_home[] = "HOME=/";

/* ---- logging and small helpers ---- */

/*
 * Sends one message to the local syslog daemon (/dev/log), falling back to
 * stderr.  Our own few lines instead of syslog(3): musl's pulls in time-zone
 * and strftime code the guest has no other use for.
 */
static void
send_syslog(int prio, const char *msg)
{
	static int fd = -1;
	struct sockaddr_un sa;
	char line[1200];
	int n, tries;

	n = snprintf(line, sizeof(line), "<%d>%s[%d]: %s", LOG_DAEMON | prio, neg_progname,
	    (int)getpid(), msg);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line))
		n = sizeof(line) - 1;
	for (tries = 0; tries < 2; tries++) {
		if (fd < 0) {
			memset(&sa, 0, sizeof(sa));
			sa.sun_family = AF_UNIX;
			memcpy(sa.sun_path, "/dev/log", 9);
			if ((fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0)
				break;
			if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
				close(fd);
				fd = -1;
				break;
			}
		}
		if (send(fd, line, (size_t)n, MSG_NOSIGNAL) == n)
			return;
		close(fd);	/* the syslog daemon restarted: connect again once */
		fd = -1;
	}
	fprintf(stderr, "%s: %s\n", neg_progname, msg);
}

/*
 * The printable form of the character at s (len > 0 bytes left): a byte or
 * character a terminal may take for a control (C0, DEL, C1 as UTF-8 or as a
 * raw byte 0x80-0x9f) becomes \n, \r, \t or \xHH, C-style (tab is kept when
 * tab_ok); anything else, a backslash and bytes that are no UTF-8 included,
 * is copied.  What a peer sent then cannot start a line of its own, move the
 * cursor or clear a terminal.  Writes at most NEG_ESCAPE_MAX bytes to out;
 * returns their count, and in *used the bytes of s taken.
 */
static size_t
escape_char(const char *s, size_t len, int tab_ok, char *out, size_t *used)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t n = u[0] >= 0xf0 ? 4 : u[0] >= 0xe0 ? 3 : 2;

	*used = 1;
	if ((u[0] >= 0x20 && u[0] < 0x7f) || (u[0] == '\t' && tab_ok)) {
		out[0] = s[0];
		return 1;
	}
	if (u[0] == '\n' || u[0] == '\r' || u[0] == '\t') {
		out[0] = '\\';
		out[1] = u[0] == '\n' ? 'n' : u[0] == '\r' ? 'r' : 't';
		return 2;
	}
	if (u[0] >= 0x80 && n <= len && proto_utf8_valid(s, n)) {
		*used = n;
		if (u[0] == 0xc2 && u[1] < 0xa0) {
			snprintf(out, NEG_ESCAPE_MAX + 1, "\\x%02x\\x%02x", u[0], u[1]);
			return 8;
		}
		memcpy(out, s, n);
		return n;
	}
	if (u[0] >= 0xa0) {
		out[0] = s[0];
		return 1;
	}
	snprintf(out, NEG_ESCAPE_MAX + 1, "\\x%02x", u[0]);
	return 4;
}

/* Appends s[0..len) to b in its printable form (escape_char). */
void
neg_escape(struct buf *b, const char *s, size_t len, int tab_ok)
{
	char tmp[NEG_ESCAPE_MAX + 1];
	size_t used, off = 0, n;

	buf_reserve(b, len);
	while (off < len) {
		n = escape_char(s + off, len - off, tab_ok, tmp, &used);
		buf_add(b, tmp, n);
		off += used;
	}
}

/*
 * A log line as it goes out: what a peer put in it (an error text, a name)
 * printed as escape_char does, so that it can never add a line of its own.
 * Cut at outlen - 1 bytes, always NUL-terminated.
 */
static void
escape_line(char *out, size_t outlen, const char *s)
{
	char tmp[NEG_ESCAPE_MAX + 1];
	size_t used, len = strlen(s), off = 0, at = 0, n;

	while (off < len) {
		n = escape_char(s + off, len - off, 1, tmp, &used);
		if (at + n >= outlen)
			break;
		memcpy(out + at, tmp, n);
		at += n;
		off += used;
	}
	out[at] = '\0';
}

static void
vlog(int prio, const char *fmt, va_list ap)
{
	char raw[1024], msg[1024];

	if (prio > neg_verbosity)
		return;
	vsnprintf(raw, sizeof(raw), fmt, ap);
	escape_line(msg, sizeof(msg), raw);
	if (neg_syslog)
		send_syslog(prio, msg);
	else
		fprintf(stderr, "%s: %s\n", neg_progname, msg);
}

void
neg_log(int prio, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog(prio, fmt, ap);
	va_end(ap);
}

void
neg_die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog(LOG_ERR, fmt, ap);
	va_end(ap);
	exit(255);
}

void *
neg_alloc(size_t n)
{
	void *p = calloc(1, n ? n : 1);

	if (p == NULL)
		neg_die("out of memory");
	return p;
}

char *
neg_strdup(const char *s)
{
	size_t n = strlen(s) + 1;

	return memcpy(neg_alloc(n), s, n);
}

/* Monotonic milliseconds. */
int64_t
neg_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int
neg_parse_seconds(const char *s, double *d)
{
	size_t n = strspn(s, "0123456789.");

	/* plain decimal seconds: no sign, no exponent, no hex, no "inf" */
	if (n == 0 || s[n] != '\0' || strchr(s, '.') != strrchr(s, '.') ||
	    proto_parse_number(s, n, d) < 0 || *d > 1e7)
		return -1;
	return 0;
}

/* A byte count, optionally with a K, M or G suffix (binary). */
int
neg_parse_size(const char *s, size_t *n)
{
	unsigned long long v = 0;
	const char *end;

	if (!isdigit((unsigned char)*s))
		return -1;
	/* by hand, not strtoull: its scanner is 2 KB of the guest binary */
	for (end = s; isdigit((unsigned char)*end); end++) {
		v = v * 10 + (unsigned long long)(*end - '0');
		if (v > PROTO_MAX_FRAME_LIMIT)
			return -1;
	}
	switch (*end) {
	case 'k': case 'K': v <<= 10; end++; break;
	case 'm': case 'M': v <<= 20; end++; break;
	case 'g': case 'G': v <<= 30; end++; break;
	}
	if (*end != '\0' || v > PROTO_MAX_FRAME_LIMIT || v < 1024)
		return -1;
	*n = (size_t)v;
	return 0;
}

void
neg_strv_free(char **v)
{
	size_t i;

	for (i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

/*
 * Splits a command line the way a POSIX shell splits words: blanks separate,
 * '...' is literal, "..." honours \" \\ \$ \`, a backslash outside quotes
 * escapes the next character.  No expansion of any kind.
 */
int
neg_split(const char *s, char ***argvp, size_t *argcp, char *err, size_t errlen)
{
	char **argv = NULL;
	size_t argc = 0;
	struct buf w = {0};
	int inword = 0;

	for (;;) {
		if (*s == '\0' || *s == ' ' || *s == '\t' || *s == '\n') {
			if (inword) {
				argv = realloc(argv, sizeof(char *) * (argc + 2));
				if (argv == NULL)
					neg_die("out of memory");
				argv[argc] = neg_alloc(w.len + 1);
				if (w.len)
					memcpy(argv[argc], w.p, w.len);
				argc++;
				w.len = 0;
				inword = 0;
			}
			if (*s == '\0')
				break;
			s++;
			continue;
		}
		/* backslash-newline joins lines, in sh as here: it is removed, not a word break */
		if (s[0] == '\\' && s[1] == '\n') {
			s += 2;
			continue;
		}
		inword = 1;
		if (*s == '\'') {
			const char *e = strchr(s + 1, '\'');

			if (e == NULL)
				goto unterminated;
			buf_add(&w, s + 1, (size_t)(e - s - 1));
			s = e + 1;
		} else if (*s == '"') {
			for (s++; *s != '"'; s++) {
				if (*s == '\0')
					goto unterminated;
				if (s[0] == '\\' && s[1] == '\n') {
					s++;
					continue;
				}
				if (*s == '\\' && strchr("\"\\$`", s[1]) && s[1] != '\0')
					s++;
				buf_add(&w, s, 1);
			}
			s++;
		} else if (*s == '\\') {
			if (s[1] != '\0')
				s++;
			buf_add(&w, s++, 1);
		} else {
			buf_add(&w, s++, 1);
		}
	}
	buf_free(&w);
	if (argc == 0) {
		free(argv);
		snprintf(err, errlen, "the command line is empty");
		return -1;
	}
	argv[argc] = NULL;
	*argvp = argv;
	*argcp = argc;
	return 0;
unterminated:
	buf_free(&w);
	if (argv)
		argv[argc] = NULL;
	neg_strv_free(argv);
	snprintf(err, errlen, "unterminated quote in the command line");
	return -1;
}

void
neg_set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl >= 0)
		fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* ---- signals: the one handler writes the signal's number to the self-pipe ---- */

/*
 * Every loop (both daemons, a CLI's calls, its wait for virsh) polls the
 * pipe's read end and acts on the numbers it reads (neg_signal_drain): the
 * byte is the message, so no signal is lost between a check and a poll.  A
 * full pipe drops a byte, when 64 KiB of signals wait unread: a wake-up is
 * pending then anyway.  One flag stays, for the one place that cannot poll:
 * a write to our stdout blocked on a reader that went away (neg_write_out).
 */
static int selfpipe[2] = { -1, -1 };
static volatile sig_atomic_t cancel_pending;
static unsigned sig_seen;     /* read from the pipe, not yet taken by neg_signal_drain */
static int sig_cancels;       /* SIGINT, SIGTERM, SIGHUP read since neg_cli_signals(1) ... */
static int sig_last;          /* ... and the latest of them */

static int
cancelling(int sig)
{
	return sig == SIGINT || sig == SIGTERM || sig == SIGHUP;
}

static void
on_signal(int sig)
{
	int saved = errno;
	unsigned char c = (unsigned char)sig;

	if (cancelling(sig))
		cancel_pending = 1;
	if (write(selfpipe[1], &c, 1) < 0) {
		/* full pipe: a wake-up is already pending */
	}
	errno = saved;
}

/* Reads what the pipe holds into sig_seen and the count of cancelling signals. */
static void
signal_read(void)
{
	unsigned char tmp[64];
	ssize_t n, i;

	if (selfpipe[0] < 0)
		return;
	while ((n = read(selfpipe[0], tmp, sizeof(tmp))) > 0)
		for (i = 0; i < n; i++) {
			if (tmp[i] < NEG_SIG_MAX)
				sig_seen |= NEG_SIG(tmp[i]);
			if (cancelling(tmp[i])) {
				sig_cancels++;
				sig_last = tmp[i];
			}
		}
}

/* The daemons': SIGTERM, SIGINT, SIGHUP, SIGIO and SIGCHLD to the self-pipe, system calls restarted. */
int
neg_signals_init(void)
{
	static const int sigs[] = { SIGTERM, SIGINT, SIGHUP, SIGIO, SIGCHLD };
	struct sigaction sa;
	size_t i;

	int fd;

	/* Descriptors 0-2 must be taken, or a pipe could land there and be dup2'ed away. */
	while ((fd = open("/dev/null", O_RDWR)) >= 0 && fd <= 2)
		;
	if (fd > 2)
		close(fd);
	if (pipe2(selfpipe, O_CLOEXEC | O_NONBLOCK) < 0)
		return -1;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		sigaction(sigs[i], &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	return 0;
}

int
neg_sigpipe_fd(void)
{
	return selfpipe[0];
}

/*
 * Empties the self-pipe; returns the signals that arrived since the last
 * call, NEG_SIG(number) each.  The caller acts on them after this (reaps on
 * SIGCHLD): one that lands later leaves its byte, and the next poll wakes.
 * A CLI calls it after every poll, whatever poll said of the pipe:
 * neg_cli_signalled reads the pipe too, and keeps what it read for this.
 */
unsigned
neg_signal_drain(void)
{
	unsigned seen;

	signal_read();
	seen = sig_seen;
	sig_seen = 0;
	return seen;
}

/* ---- built-in commands ---- */

/* Reads KEY=value (value optionally quoted) from a shell-style release file. */
static int
release_value(const char *path, const char *key, char *out, size_t outlen)
{
	FILE *f = fopen(path, "re");
	char line[512], *v, *e;
	size_t klen = strlen(key);
	int found = 0;

	if (f == NULL)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, key, klen) != 0 || line[klen] != '=')
			continue;
		v = line + klen + 1;
		v[strcspn(v, "\r\n")] = '\0';
		if ((*v == '"' || *v == '\'') && (e = strrchr(v + 1, *v)) != NULL) {
			*e = '\0';
			v++;
		}
		if (*v == '\0')
			continue;
		snprintf(out, outlen, "%s", v);
		found = 1;
	}
	fclose(f);
	return found;
}

/* The first line of a file, without its newline. */
static int
first_line(const char *path, char *out, size_t outlen)
{
	FILE *f = fopen(path, "re");
	int ok;

	if (f == NULL)
		return 0;
	ok = fgets(out, (int)outlen, f) != NULL;
	fclose(f);
	if (ok)
		out[strcspn(out, "\r\n")] = '\0';
	return ok && out[0] != '\0';
}

enum { DIST_ID, DIST_RELEASE, DIST_CODENAME };

/* The first place needle occurs in s, or NULL (for short texts; musl's strstr is large). */
static const char *
find_text(const char *s, const char *needle)
{
	size_t n = strlen(needle);

	for (; *s; s++)
		if (strncmp(s, needle, n) == 0)
			return s;
	return NULL;
}

/*
 * What `lsb_release --short --id|--release|--codename` prints: from
 * /etc/lsb-release, then /etc/os-release, then /etc/debian_version or
 * /etc/redhat-release.
 */
static int
builtin_distribution(int what)
{
	static const char *const lsb[] = { "DISTRIB_ID", "DISTRIB_RELEASE", "DISTRIB_CODENAME" };
	char v[256], line[256], *p, *q;
	const char *cq;

	if (release_value("/etc/lsb-release", lsb[what], v, sizeof(v)))
		goto print;
	switch (what) {
	case DIST_ID:
		if (release_value("/etc/os-release", "NAME", v, sizeof(v)) ||
		    release_value("/usr/lib/os-release", "NAME", v, sizeof(v))) {
			v[strcspn(v, " ")] = '\0';	/* "Debian GNU/Linux" -> "Debian" */
			goto print;
		}
		break;
	case DIST_RELEASE:
		if (release_value("/etc/os-release", "VERSION_ID", v, sizeof(v)) ||
		    release_value("/usr/lib/os-release", "VERSION_ID", v, sizeof(v)))
			goto print;
		if (first_line("/etc/debian_version", v, sizeof(v)))
			goto print;
		break;
	case DIST_CODENAME:
		if (release_value("/etc/os-release", "VERSION_CODENAME", v, sizeof(v)) ||
		    release_value("/etc/os-release", "UBUNTU_CODENAME", v, sizeof(v)) ||
		    release_value("/usr/lib/os-release", "VERSION_CODENAME", v, sizeof(v)))
			goto print;
		/* VERSION="7 (wheezy)" */
		if (release_value("/etc/os-release", "VERSION", line, sizeof(line)) &&
		    (p = strchr(line, '(')) && (q = strchr(p, ')'))) {
			*q = '\0';
			snprintf(v, sizeof(v), "%s", p + 1);
			goto print;
		}
		break;
	}
	/* "CentOS release 6.10 (Final)" */
	if (first_line("/etc/redhat-release", line, sizeof(line))) {
		if (what == DIST_ID) {
			line[strcspn(line, " ")] = '\0';
			snprintf(v, sizeof(v), "%s", line);
			goto print;
		}
		if (what == DIST_RELEASE && (cq = find_text(line, " release ")) != NULL) {
			p = line + (cq - line) + 9;
			p[strcspn(p, " ")] = '\0';
			snprintf(v, sizeof(v), "%s", p);
			goto print;
		}
		if (what == DIST_CODENAME && (p = strchr(line, '(')) && (q = strchr(p, ')'))) {
			*q = '\0';
			snprintf(v, sizeof(v), "%s", p + 1);
			goto print;
		}
	}
	fprintf(stderr, "cannot determine the distribution (no /etc/lsb-release or /etc/os-release)\n");
	return 1;
print:
	printf("%s\n", v);
	return 0;
}

/* Undoes /proc/mounts' octal escapes (\040 for a space) in place. */
static void
unoctal(char *s)
{
	char *o = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*o++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
			s += 3;
		} else {
			*o++ = *s;
		}
	}
	*o = '\0';
}

/* DEVICE MOUNTPOINT BYTES_TOTAL BYTES_USED for every mounted /dev/ device, as df -B1. */
static int
builtin_disk_usage(void)
{
	FILE *f = fopen("/proc/mounts", "re");
	char line[4096], *dev, *mnt;
	struct statvfs st;

	if (f == NULL) {
		fprintf(stderr, "cannot open /proc/mounts: %s\n", strerror(errno));
		return 1;
	}
	while (fgets(line, sizeof(line), f)) {
		dev = strtok(line, " ");
		mnt = strtok(NULL, " ");
		if (dev == NULL || mnt == NULL || strncmp(dev, "/dev/", 5) != 0)
			continue;
		unoctal(dev);
		unoctal(mnt);
		if (mnt[0] != '/' || statvfs(mnt, &st) < 0)
			continue;
		printf("%s %s %llu %llu\n", dev, mnt,
		    (unsigned long long)st.f_blocks * st.f_frsize,
		    (unsigned long long)(st.f_blocks - st.f_bfree) * st.f_frsize);
	}
	fclose(f);
	return 0;
}

/* Every IPv4 address in CIDR form, one per line, as `ip addr show` lists them. */
static int
builtin_ip_addresses(void)
{
	struct ifaddrs *ifa, *i;
	char addr[INET_ADDRSTRLEN];
	uint32_t mask;
	int bits;

	if (getifaddrs(&ifa) < 0) {
		fprintf(stderr, "cannot list network interfaces: %s\n", strerror(errno));
		return 1;
	}
	for (i = ifa; i; i = i->ifa_next) {
		if (i->ifa_addr == NULL || i->ifa_addr->sa_family != AF_INET)
			continue;
		inet_ntop(AF_INET, &((struct sockaddr_in *)(void *)i->ifa_addr)->sin_addr,
		    addr, sizeof(addr));
		mask = i->ifa_netmask ?
		    ntohl(((struct sockaddr_in *)(void *)i->ifa_netmask)->sin_addr.s_addr) : 0;
		for (bits = 0; mask & 0x80000000u; mask <<= 1)
			bits++;
		printf("%s/%d\n", addr, bits);
	}
	freeifaddrs(ifa);
	return 0;
}

static int builtin_codename(void) { return builtin_distribution(DIST_CODENAME); }
static int builtin_release(void) { return builtin_distribution(DIST_RELEASE); }
static int builtin_distributor(void) { return builtin_distribution(DIST_ID); }

static const struct {
	const char *name;
	int (*run)(void);
} builtins[] = {
	{ "find-disk-usage", builtin_disk_usage },
	{ "find-distribution-codename", builtin_codename },
	{ "find-distribution-release", builtin_release },
	{ "find-distributor-id", builtin_distributor },
	{ "find-ip-addresses", builtin_ip_addresses },
};

#define NBUILTINS (sizeof(builtins) / sizeof(builtins[0]))

static int
builtin_index(const char *name)
{
	size_t i;

	for (i = 0; i < NBUILTINS; i++)
		if (strcmp(builtins[i].name, name) == 0)
			return (int)i;
	return -1;
}

/* Runs a built-in in this process (a forked child, or a test); returns its exit status. */
int
neg_builtin_run(const char *name)
{
	int i = builtin_index(name), rc;

	if (i < 0)
		return 127;
	rc = builtins[i].run();
	if (fflush(stdout) != 0)
		rc = 1;
	return rc;
}

/* ---- the commands directory ---- */

/* A plain name: [A-Za-z0-9._-], not starting with a dot, at most NEG_MAX_NAME bytes. */
int
neg_valid_name(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > NEG_MAX_NAME || s[0] == '.')
		return 0;
	return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	    "0123456789._-") == n;
}

/* Whether dir/name is an executable regular file; its path goes to path. */
static int
user_command(const char *dir, const char *name, char *path, size_t pathlen)
{
	struct stat st;
	int n = snprintf(path, pathlen, "%s/%s", dir, name);

	return n > 0 && (size_t)n < pathlen && stat(path, &st) == 0 &&
	    S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

/*
 * Sorts strings (Shell sort, gaps 3h+1): lists of commands are short, and
 * qsort is 2 KB of the guest binary.
 */
static void
sort_strings(char **v, size_t n)
{
	size_t gap = 1, i, j;
	char *t;

	while (gap < n / 3)
		gap = gap * 3 + 1;
	for (; gap > 0; gap /= 3)
		for (i = gap; i < n; i++) {
			t = v[i];
			for (j = i; j >= gap && strcmp(v[j - gap], t) > 0; j -= gap)
				v[j] = v[j - gap];
			v[j] = t;
		}
}

/* The sorted union of the built-ins and the executables in the commands directory. */
int
neg_list_commands(const struct neg_cmdenv *env, char ***namesp, size_t *np)
{
	char **v = NULL, path[PATH_MAX];
	size_t n = 0, cap = 0, i, j;
	DIR *d;
	struct dirent *e;

	for (i = 0; i < NBUILTINS; i++) {
		if (n == cap && (v = realloc(v, sizeof(char *) * (cap = cap * 2 + 16))) == NULL)
			neg_die("out of memory");
		v[n++] = neg_strdup(builtins[i].name);
	}
	if ((d = opendir(env->dir)) != NULL) {
		while ((e = readdir(d)) != NULL && n < NEG_MAX_COMMANDS) {
			if (!neg_valid_name(e->d_name) ||
			    !user_command(env->dir, e->d_name, path, sizeof(path)))
				continue;
			if (n == cap && (v = realloc(v, sizeof(char *) * (cap = cap * 2 + 16))) == NULL)
				neg_die("out of memory");
			v[n++] = neg_strdup(e->d_name);
		}
		closedir(d);
	}
	sort_strings(v, n);
	for (i = j = 0; i < n; i++) {
		if (j > 0 && strcmp(v[j - 1], v[i]) == 0)
			free(v[i]);
		else
			v[j++] = v[i];
	}
	*namesp = v;
	*np = j;
	return 0;
}

/* ---- the command runner ---- */

/*
 * Set by a program that raised its own resource limits (the host's
 * host_raise_fd_limit): called in every command's child before exec, so the
 * command starts with the limits the program itself was given.  NULL in the
 * guest, which changes none.
 */
void (*neg_child_restore_limits)(void);

static void
close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* In the child: every descriptor above 2 goes but keep, whatever our own parent left open. */
static void
close_others(int keep)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int fd;

	if (d != NULL) {
		while ((e = readdir(d)) != NULL) {
			fd = atoi(e->d_name);
			if (fd > 2 && fd != keep && fd != dirfd(d))
				close(fd);
		}
		closedir(d);
		return;
	}
	/*
	 * No /proc: every possible descriptor.  Not up to sysconf(_SC_OPEN_MAX),
	 * which asks prlimit64, a call 2.6.32 does not have.
	 */
	for (fd = 3; fd < NEG_FD_SCAN_MAX; fd++)
		if (fd != keep)
			close(fd);
}

/*
 * In the child: a session and process group of its own (so that the group
 * can be signalled as one), default signals, no descriptors but the three,
 * in /, then the program.  A failed exec writes its errno to errpipe.
 */
static void
child(const struct neg_spawn *sp, char *const *argv, int in, int out, int err, int errpipe)
{
	extern char **environ;
	char guestvar[512];
	char *envp[4];
	sigset_t none;
	int e, i = 0;

	setsid();
	for (e = 1; e < NSIG; e++)
		signal(e, SIG_DFL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	if (neg_child_restore_limits != NULL)
		neg_child_restore_limits();
	if (in < 0)
		in = open("/dev/null", O_RDONLY);
	if (in < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0)
		goto fail;
	close_others(errpipe);
	if (chdir("/") < 0)
		goto fail;
	if (sp->inherit) {
		/* a helper such as virsh: the caller's environment, found in its PATH */
		execvp(sp->path, argv);
		goto fail;
	}
	envp[i++] = clean_path;
	envp[i++] = clean_home;
	if (sp->guest != NULL) {
		snprintf(guestvar, sizeof(guestvar), "NEGOTIATOR_GUEST=%s", sp->guest);
		envp[i++] = guestvar;
	}
	envp[i] = NULL;
	if (sp->builtin) {
		environ = envp;
		close(errpipe);
		_exit(neg_builtin_run(argv[0]));
	}
	execve(sp->path, argv, envp);
fail:
	e = errno;
	if (write(errpipe, &e, sizeof(e)) < 0)
		_exit(127);
	_exit(127);
}

/*
 * Starts a process as sp says, its stdout and stderr on pipes for the caller's
 * poll loop: the one way the programs start anything (commands and helpers).
 * Returns 0, or -1 with nothing left running and err saying why (an exec that
 * failed included: it is known before this returns).
 */
int
neg_job_spawn(struct neg_job *j, const struct neg_spawn *sp, char *const *argv,
    char *err, size_t errlen)
{
	int in[2] = { -1, -1 }, out[2] = { -1, -1 }, er[2] = { -1, -1 }, ep[2] = { -1, -1 };
	int e = 0;
	ssize_t n;

	memset(j, 0, sizeof(*j));
	j->fd_in = j->fd_out = j->fd_err = -1;
	snprintf(j->name, sizeof(j->name), "%s", argv[0]);
	if (((sp->input != NULL || sp->keep_stdin) && pipe2(in, O_CLOEXEC) < 0) ||
	    pipe2(out, O_CLOEXEC) < 0 ||
	    pipe2(er, O_CLOEXEC) < 0 || pipe2(ep, O_CLOEXEC) < 0) {
		snprintf(err, errlen, "Cannot create pipes: %s", strerror(errno));
		goto fail;
	}
	/* Flush stdio so a built-in's child does not inherit and repeat buffered output. */
	fflush(NULL);
	j->pid = fork();
	if (j->pid < 0) {
		j->pid = 0;
		snprintf(err, errlen, "Cannot fork: %s", strerror(errno));
		goto fail;
	}
	if (j->pid == 0)
		child(sp, argv, in[0], out[1], er[1], ep[1]);
	close_fd(&in[0]);
	close_fd(&out[1]);
	close_fd(&er[1]);
	close_fd(&ep[1]);
	/* EOF here means exec'd (or a built-in running): setsid is done, -pid names the group */
	do
		n = read(ep[0], &e, sizeof(e));
	while (n < 0 && errno == EINTR);
	close_fd(&ep[0]);
	if (n == (ssize_t)sizeof(e)) {
		snprintf(err, errlen, "Cannot execute %s: %s", argv[0], strerror(e));
		while (waitpid(j->pid, NULL, 0) < 0 && errno == EINTR)
			;
		j->pid = 0;
		errno = e;
		goto fail;
	}
	j->fd_in = in[1];
	j->fd_out = out[0];
	j->fd_err = er[0];
	j->in = sp->input;
	j->inlen = sp->inputlen;
	if (j->fd_in >= 0)
		neg_set_nonblock(j->fd_in);
	neg_set_nonblock(j->fd_out);
	neg_set_nonblock(j->fd_err);
	j->max_out = sp->max_out;
	j->deadline = sp->deadline;
	j->grace_ms = sp->grace_ms;
	if (j->fd_in >= 0 && sp->inputlen == 0 && !sp->keep_stdin)
		close_fd(&j->fd_in);
	return 0;
fail:
	e = errno;
	close_fd(&in[0]); close_fd(&in[1]);
	close_fd(&out[0]); close_fd(&out[1]);
	close_fd(&er[0]); close_fd(&er[1]);
	close_fd(&ep[0]); close_fd(&ep[1]);
	errno = e;
	return -1;
}

/*
 * Starts argv[0] from the commands directory or the built-ins.  On failure
 * (bad name, unknown command, exec failed) nothing is left running and err says
 * why in a sentence fit for a reply.
 */
int
neg_job_start(struct neg_job *j, const struct neg_cmdenv *env, char *const *argv,
    const char *input, size_t inputlen, int keep_stdin, double timeout, size_t max_out,
    char *err, size_t errlen)
{
	char path[PATH_MAX];
	struct neg_spawn sp;

	memset(j, 0, sizeof(*j));
	j->fd_in = j->fd_out = j->fd_err = -1;
	if (argv == NULL || argv[0] == NULL) {
		snprintf(err, errlen, "No command given");
		return -1;
	}
	if (!neg_valid_name(argv[0])) {
		snprintf(err, errlen, "Invalid command name (only letters, digits, '.', '_' and '-', not starting with '.')");
		return -1;
	}
	memset(&sp, 0, sizeof(sp));
	if (!user_command(env->dir, argv[0], path, sizeof(path))) {
		if (builtin_index(argv[0]) < 0) {
			snprintf(err, errlen, "Command %s is not available (not in %s and not a built-in)",
			    argv[0], env->dir);
			return -1;
		}
		sp.builtin = 1;
	}
	sp.path = path;
	sp.guest = env->guest;
	sp.input = input;
	sp.inputlen = inputlen;
	sp.keep_stdin = keep_stdin;
	sp.max_out = max_out;
	sp.deadline = timeout > 0 ? neg_now() + (int64_t)(timeout * 1000) : 0;
	sp.grace_ms = NEG_KILL_GRACE_MS;
	return neg_job_spawn(j, &sp, argv, err, errlen);
}

/* The job's open pipes as pollfds: stdin if want_in, stdout and stderr if want_out; how many. */
static int
job_fds(const struct neg_job *j, struct pollfd *p, int want_in, int want_out)
{
	int n = 0;

	if (want_in && j->fd_in >= 0) {
		p[n].fd = j->fd_in;
		p[n++].events = POLLOUT;
	}
	if (want_out && j->fd_out >= 0) {
		p[n].fd = j->fd_out;
		p[n++].events = POLLIN;
	}
	if (want_out && j->fd_err >= 0) {
		p[n].fd = j->fd_err;
		p[n++].events = POLLIN;
	}
	return n;
}

/* Fills up to NEG_JOB_FDS pollfds; returns how many. */
int
neg_job_pollfds(struct neg_job *j, struct pollfd *p)
{
	return job_fds(j, p, 1, 1);
}

/* Reads what is there, at most a bounded amount per wake-up so others get their turn. */
static void
job_drain(struct neg_job *j, int *fd, struct buf *b, size_t cap, int is_out)
{
	char tmp[NEG_READ_CHUNK];
	ssize_t n;
	int rounds;

	for (rounds = 0; rounds < NEG_READS_PER_WAKE; rounds++) {
		n = read(*fd, tmp, sizeof(tmp));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0) {
			close_fd(fd);
			return;
		}
		if (b->len + (size_t)n <= cap) {
			buf_add(b, tmp, (size_t)n);
		} else if (b->len < cap) {
			buf_add(b, tmp, cap - b->len);
			if (is_out)
				j->overflow = 1;
		} else if (is_out) {
			j->overflow = 1;
		}
		if (j->overflow && j->kill_at == 0)
			neg_job_kill(j, neg_now());
	}
}

void
neg_job_io(struct neg_job *j, const struct pollfd *p, int n)
{
	ssize_t w;
	size_t chunk;
	int i;

	for (i = 0; i < n; i++) {
		if (p[i].revents == 0)
			continue;
		if (p[i].fd == j->fd_in) {
			chunk = j->inlen - j->inpos < NEG_READ_CHUNK ? j->inlen - j->inpos : NEG_READ_CHUNK;
			w = write(j->fd_in, j->in + j->inpos, chunk);
			if (w > 0)
				j->inpos += (size_t)w;
			/* EPIPE: the command does not read its input; that is its business */
			if ((w < 0 && errno != EAGAIN && errno != EINTR) || j->inpos == j->inlen)
				close_fd(&j->fd_in);
		} else if (p[i].fd == j->fd_out) {
			job_drain(j, &j->fd_out, &j->out, j->max_out, 1);
		} else if (p[i].fd == j->fd_err) {
			job_drain(j, &j->fd_err, &j->err, NEG_MAX_STDERR, 0);
		}
	}
}

void
neg_job_reap(struct neg_job *j)
{
	int st;

	if (j->pid <= 0 || j->reaped)
		return;
	if (waitpid(j->pid, &st, WNOHANG) == j->pid) {
		j->status = st;
		j->reaped = 1;
		close_fd(&j->fd_in);
		/* a background child may hold the pipes: give it the grace period, not forever */
		if (j->kill_at == 0 || j->kill_at > neg_now() + NEG_KILL_GRACE_MS)
			j->kill_at = neg_now() + NEG_KILL_GRACE_MS;
	}
}

/*
 * SIGTERM to the process group now, SIGKILL after the job's grace period (at
 * once when it has none).  The group is signalled whether or not its leader
 * is reaped: the group id stays valid, and not reused, while any member lives.
 */
void
neg_job_kill(struct neg_job *j, int64_t now)
{
	if (j->pid <= 0 || j->signalled)
		return;
	j->signalled = 1;
	kill(-j->pid, j->grace_ms > 0 ? SIGTERM : SIGKILL);
	j->kill_at = now + j->grace_ms;
}

void
neg_job_tick(struct neg_job *j, int64_t now)
{
	if (j->deadline && now >= j->deadline && !j->reaped && !j->signalled) {
		j->timed_out = 1;
		neg_job_kill(j, now);
	}
	if (j->kill_at == 0 || now < j->kill_at)
		return;
	if (j->signalled && !j->group_killed)
		kill(-j->pid, SIGKILL);
	if (!j->reaped) {
		/*
		 * Reaped on SIGCHLD; should that be late (a process stuck in the
		 * kernel dies only when it leaves it) the kill is repeated each
		 * second, not on every turn of the loop.
		 */
		j->kill_at = now + 1000;
		return;
	}
	/* what is left of a killed group is gone; an unkilled one's pipes are let go */
	j->group_killed = j->signalled;
	j->kill_at = 0;
	close_fd(&j->fd_out);
	close_fd(&j->fd_err);
}

/* The next time neg_job_tick has something to do; 0 for none. */
int64_t
neg_job_wake(const struct neg_job *j)
{
	if (j->kill_at)
		return j->kill_at;
	return j->reaped ? 0 : j->deadline;
}

int
neg_job_done(const struct neg_job *j)
{
	return j->reaped && j->fd_out < 0 && j->fd_err < 0;
}

/* The reference strips the output of a one-line command and keeps several lines as they are. */
static void
strip_one_line(const char **s, size_t *len)
{
	const char *p = *s, *e = *s + *len, *q;
	size_t lines = 0;

	for (q = p; q < e; q++) {
		if (*q == '\n' || *q == '\r') {
			lines++;
			if (*q == '\r' && q + 1 < e && q[1] == '\n')
				q++;
			if (q + 1 == e)
				lines--;	/* a final line break ends a line, it does not start one */
		}
	}
	if (*len == 0 || lines > 0)
		return;
	while (p < e && isspace((unsigned char)*p))
		p++;
	while (e > p && isspace((unsigned char)e[-1]))
		e--;
	*s = p;
	*len = (size_t)(e - p);
}

void
neg_job_reply(struct neg_job *j, const struct proto_request *req, struct buf *frame,
    size_t max_frame)
{
	struct proto_failure f;
	char msg[512];
	const char *s = j->out.p ? j->out.p : "";
	size_t len = j->out.len, start = frame->len;

	memset(&f, 0, sizeof(f));
	f.error = msg;
	f.exit_code = -1;
	f.base64 = req->base64;
	f.stderr_text = j->err.p;
	f.stderr_len = j->err.len;
	f.stdout_text = s;
	f.stdout_len = len;
	if (j->timed_out) {
		struct buf secs = {0};

		proto_put_seconds(&secs, req->timeout);
		snprintf(msg, sizeof(msg), "External command %s timed out after %s seconds",
		    j->name, secs.p);
		buf_free(&secs);
		f.timed_out = 1;
		f.signal = WIFSIGNALED(j->status) ? WTERMSIG(j->status) : 0;
	} else if (j->overflow) {
		snprintf(msg, sizeof(msg), "Output of %s exceeds the limit of %zu bytes",
		    j->name, j->max_out);
		f.stdout_len = 0;
	} else if (WIFEXITED(j->status) && WEXITSTATUS(j->status) == 0) {
		if (!req->base64)
			strip_one_line(&s, &len);
		proto_reply_string(frame, req->id, s, len, req->base64, j->err.p, j->err.len);
		goto check;
	} else if (WIFEXITED(j->status)) {
		f.exit_code = WEXITSTATUS(j->status);
		snprintf(msg, sizeof(msg), "%sExternal command failed with exit code %d (command: %s)",
		    j->stopping ? NEG_STOPPING_TEXT ": " : "", f.exit_code, j->name);
	} else {
		f.signal = WTERMSIG(j->status);
		snprintf(msg, sizeof(msg), "%sExternal command failed: %s was killed by signal %d (%s)",
		    j->stopping ? NEG_STOPPING_TEXT ": " : "", j->name, f.signal, strsignal(f.signal));
	}
	proto_reply_error(frame, req->id, &f);
check:
	if (frame->len - start > max_frame) {
		frame->len = start;
		memset(&f, 0, sizeof(f));
		f.exit_code = -1;
		snprintf(msg, sizeof(msg), "The reply of %s would exceed the frame limit of %zu bytes",
		    j->name, max_frame);
		f.error = msg;
		proto_reply_error(frame, req->id, &f);
	}
}

/*
 * Releases a done job.  Of a signalled one, what is left of the process group
 * (members that ignored SIGTERM and let go of the pipes; those holding them had
 * the grace period) gets SIGKILL now: nothing else would ever stop it.  The id
 * was its leader's a moment ago, and pids are handed out cyclically, so it
 * names no other group.
 */
void
neg_job_free(struct neg_job *j)
{
	if (j->pid > 0 && j->signalled && !j->group_killed)
		kill(-j->pid, SIGKILL);
	close_fd(&j->fd_in);
	close_fd(&j->fd_out);
	close_fd(&j->fd_err);
	buf_free(&j->out);
	buf_free(&j->err);
}

/* ---- serving one request ---- */

void
neg_reply_text(struct buf *out, const char *id, const char *msg)
{
	struct proto_failure f;

	memset(&f, 0, sizeof(f));
	f.error = msg;
	f.exit_code = -1;
	proto_reply_error(out, id, &f);
}

/* Who a channel's log lines are about: the guest on the host, the host in a guest. */
static const char *
chan_peer(const struct neg_chan *c)
{
	return c->guest ? c->guest : "host";
}

/*
 * A line about what the peer did, prefixed with its name.  At most
 * NEG_LOG_BURST lines per channel and NEG_LOG_WINDOW_MS: a flooding peer gets
 * a count of what was suppressed, not a line per bad frame.
 */
static void
chan_log(struct neg_chan *c, int prio, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
chan_log_window(struct neg_chan *c, int64_t now)
{
	if (now < c->log_until)
		return;
	if (c->log_dropped > 0)
		neg_log(LOG_WARNING, "%s: %d messages about it were not shown", chan_peer(c),
		    c->log_dropped);
	c->log_until = now + NEG_LOG_WINDOW_MS;
	c->log_count = c->log_dropped = 0;
}

static void
chan_log(struct neg_chan *c, int prio, const char *fmt, ...)
{
	char msg[900];
	va_list ap;

	if (prio > neg_verbosity)
		return;
	chan_log_window(c, neg_now());
	/* what the peer does wrong is limited; what it is served is not */
	if (prio <= LOG_WARNING && c->log_count++ >= NEG_LOG_BURST) {
		if (c->log_dropped++ == 0)
			neg_log(LOG_WARNING, "%s: too many messages about it; the rest of them for %d s "
			    "are counted, not shown", chan_peer(c), NEG_LOG_WINDOW_MS / 1000);
		return;
	}
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	neg_log(prio, "%s: %s", chan_peer(c), msg);
}

/* Whether the streaming extension is served: chunks must fit the frame limit. */
static int
chan_streams(const struct neg_chan *c)
{
	return c->srv->max_frame >= NEG_STREAM_MIN_FRAME;
}

/* The answer to a request that runs nothing, onto out. */
static void
chan_answer(struct neg_chan *c, struct proto_request *req, struct buf *out)
{
	struct neg_cmdenv env = { c->srv->env.dir, c->guest };
	char err[512];
	char **names;
	size_t n, i;

	switch (proto_method_lookup(req->method)) {
	case PROTO_M_LIST_COMMANDS:
		neg_list_commands(&env, &names, &n);
		proto_reply_list(out, req->id, names, n);
		for (i = 0; i < n; i++)
			free(names[i]);
		free(names);
		break;
	case PROTO_M_PING:
		proto_reply_string(out, req->id, "pong", 4, 0, NULL, 0);
		break;
	case PROTO_M_VERSION:
		proto_reply_version(out, req->id, NEG_VERSION, chan_streams(c) ? NEG_STREAM_VERSION : 0);
		break;
	default:
		snprintf(err, sizeof(err), "Method %s not supported", req->method);
		chan_log(c, LOG_WARNING, "%s", err);
		neg_reply_text(out, req->id, err);
		break;
	}
}

/*
 * Whether the channel may start a command now: below its own cap, a job slot
 * free, and within its fair share.
 */
static int
chan_may_start(const struct neg_chan *c)
{
	const struct neg_server *srv = c->srv;
	int share = srv->busy > 0 ? srv->max_running / srv->busy : srv->max_running;

	return c->running < c->maxjobs && srv->running < srv->max_running &&
	    c->running < (share > 0 ? share : 1);
}

/* Starts the queued command of slot s: 0, or -1 with the reply saying why it cannot run. */
static int
slot_start(struct neg_chan *c, struct neg_slot *s, int64_t now)
{
	struct neg_cmdenv env = { c->srv->env.dir, c->guest };
	struct proto_request *req = &s->req;
	double left = req->timeout;
	char err[512];

	if (req->timeout > 0) {
		/* the caller's clock started when it sent the request */
		left = req->timeout - (double)(now - s->since) / 1000;
		if (left <= 0) {
			snprintf(err, sizeof(err), "External command %s timed out after %g seconds "
			    "waiting for one of the %d command slots", req->argc ? req->argv[0] : "",
			    req->timeout, c->srv->max_running);
			chan_log(c, LOG_WARNING, "%s", err);
			neg_reply_text(&s->reply, req->id, err);
			return -1;
		}
	}
	chan_log(c, LOG_INFO, "executing %s (%zu arguments%s)", req->argc ? req->argv[0] : "",
	    req->argc ? req->argc - 1 : 0, req->stream ? ", streamed" : "");
	if (neg_job_start(&s->job, &env, req->argv, req->has_input ? req->input.p : NULL,
	    req->input.len, req->stream && req->want_stdin, left, c->srv->max_frame,
	    err, sizeof(err)) < 0) {
		chan_log(c, LOG_WARNING, "%s", err);
		neg_reply_text(&s->reply, req->id, err);
		return -1;
	}
	if (req->stream) {
		s->out_credit = req->window;
		if (req->want_stdin) {
			/* the caller sends stdin only against credit: here is the first */
			s->sin_room = NEG_STREAM_WINDOW;
			proto_stream_credit(&c->out, req->id, NEG_STREAM_WINDOW);
		}
	}
	return 0;
}

/* ---- a served channel ---- */

static void slot_event(struct neg_chan *, struct neg_slot *, int ev, const char *why);

int64_t
neg_min_deadline(int64_t a, int64_t b)
{
	if (a == 0)
		return b;
	if (b == 0)
		return a;
	return a < b ? a : b;
}

/*
 * poll() for a daemon's loop: an error (ENOMEM, or anything else a peer might
 * provoke) is logged at most every NEG_POLL_WARN_MS and waited out for
 * NEG_POLL_BACKOFF_MS, never fatal.  Returns poll's result, -1 for EINTR too.
 */
int
neg_poll(struct pollfd *p, nfds_t n, int timeout, int64_t *warned_at)
{
	int r = poll(p, n, timeout);
	int64_t now;

	if (r < 0 && errno != EINTR) {
		now = neg_now();
		if (*warned_at == 0 || now - *warned_at >= NEG_POLL_WARN_MS) {
			neg_log(LOG_ERR, "poll failed (%lu descriptors): %s; going on",
			    (unsigned long)n, strerror(errno));
			*warned_at = now;
		}
		poll(NULL, 0, NEG_POLL_BACKOFF_MS);
	}
	return r;
}

/* A poll() timeout in ms for an absolute deadline (0: none, wait forever). */
int
neg_poll_timeout(int64_t deadline, int64_t now)
{
	if (deadline == 0)
		return -1;
	if (deadline <= now)
		return 0;
	return deadline - now > NEG_POLL_MAX_MS ? NEG_POLL_MAX_MS : (int)(deadline - now);
}

void
neg_chan_init(struct neg_chan *c, int fd, struct neg_server *srv, int maxjobs)
{
	memset(c, 0, sizeof(*c));
	c->fd = fd;
	c->srv = srv;
	c->maxjobs = maxjobs < 1 ? 1 : maxjobs > NEG_CHAN_MAXJOBS ? NEG_CHAN_MAXJOBS : maxjobs;
	proto_reader_init(&c->rd, srv->max_frame);
	c->rd.raw_ok = chan_streams(c);
	c->last_rx = neg_now();
}

/* Keeps srv->busy, the number of channels with commands running or queued, up to date. */
static void
chan_account(struct neg_chan *c)
{
	int i, busy = 0;

	for (i = 0; i < NEG_CHAN_SLOTS && !busy; i++)
		busy = c->slot[i].state == SLOT_QUEUED || c->slot[i].state == SLOT_RUNNING;
	if (busy != c->busy)
		c->srv->busy += busy ? 1 : -1;
	c->busy = busy;
}

static size_t
chan_unsent(const struct neg_chan *c)
{
	return c->out.len - c->outoff;
}

/*
 * Returns freed memory to the kernel after held bytes of buffers went: musl
 * unmaps a large block when it is freed, glibc keeps freed heap pages until
 * malloc_trim asks for them.
 */
static void
give_back(size_t held)
{
#ifdef __GLIBC__
	if (held > NEG_KEEP_BUF)
		malloc_trim(0);
#else
	(void)held;
#endif
}

/* Keeps the daemon's total of unsent output (srv->unsent) up to date with this channel's. */
static void
chan_count_unsent(struct neg_chan *c)
{
	size_t unsent = chan_unsent(c);

	c->srv->unsent = c->srv->unsent - c->unsent_counted + unsent;
	c->unsent_counted = unsent;
}

/* A slot for a new execute, NULL while all the channel may have are taken (maxjobs + NEG_CHAN_QUEUE). */
static struct neg_slot *
chan_free_slot(struct neg_chan *c)
{
	int i;

	if (c->count >= c->maxjobs + NEG_CHAN_QUEUE)
		return NULL;
	for (i = 0; i < NEG_CHAN_SLOTS; i++)
		if (c->slot[i].state == SLOT_FREE)
			return &c->slot[i];
	return NULL;
}

/* The slots in use, oldest first. */
static int
chan_order(struct neg_chan *c, struct neg_slot **v)
{
	int i, j, n = 0;
	struct neg_slot *t;

	for (i = 0; i < NEG_CHAN_SLOTS; i++)
		if (c->slot[i].state != SLOT_FREE)
			v[n++] = &c->slot[i];
	for (i = 1; i < n; i++)
		for (j = i; j > 0 && v[j]->seq - v[0]->seq < v[j - 1]->seq - v[0]->seq; j--) {
			t = v[j];
			v[j] = v[j - 1];
			v[j - 1] = t;
		}
	return n;
}

static void
slot_release(struct neg_chan *c, struct neg_slot *s)
{
	buf_free(&s->reply);
	buf_free(&s->sin);
	buf_free(&s->after);
	memset(s, 0, sizeof(*s));
	c->count--;
}

/*
 * Moves finished replies to the output queue: one with an id at once (its
 * caller matches it by id), one without after every earlier one without
 * (a 0.8 caller takes replies in the order of its requests).
 */
static void
chan_flush(struct neg_chan *c)
{
	struct neg_slot *v[NEG_CHAN_SLOTS];
	int i, n = chan_order(c, v), blocked = 0;

	for (i = 0; i < n; i++) {
		if (v[i]->state == SLOT_DONE && (!blocked || v[i]->has_id))
			slot_event(c, v[i], SEV_FLUSHED, NULL);
		else if (!v[i]->has_id) {
			blocked = 1;
		}
	}
}

/* The streamed call of id that is still going, or NULL. */
static struct neg_slot *
chan_stream_slot(struct neg_chan *c, const char *id)
{
	int i;
	struct neg_slot *s;

	for (i = 0; i < NEG_CHAN_SLOTS; i++) {
		s = &c->slot[i];
		if ((s->state == SLOT_QUEUED || s->state == SLOT_RUNNING) && s->req.stream &&
		    strcmp(s->req.id, id) == 0)
			return s;
	}
	return NULL;
}

/* Stops a running call's command: SIGTERM, then SIGKILL after the grace period (or at once). */
static void
slot_stop(struct neg_slot *s, int at_once, int64_t now)
{
	struct neg_job *j = &s->job;

	if (!j->signalled) {
		if (at_once)
			j->grace_ms = 0;
		neg_job_kill(j, now);
	} else if (at_once && !j->group_killed) {
		kill(-j->pid, SIGKILL);
		j->kill_at = now;
	}
}

/* The command's stdin is closed (or will be): what the caller still sends is dropped. */
static void
slot_close_stdin(struct neg_chan *c, struct neg_slot *s)
{
	if (s->job.fd_in >= 0) {
		close(s->job.fd_in);
		s->job.fd_in = -1;
	}
	s->sin.len = s->sinoff = 0;
	if (!s->sin_closed && !s->sin_eof && s->state == SLOT_RUNNING && !s->job.discard)
		proto_stream_eof(&c->out, s->req.id, 0);	/* "send no more" */
	s->sin_closed = 1;
}

/*
 * A slot's one state function: every change of s->state is made here, by
 * slot_next's table (the picture at the top of this file is printed from it
 * and t/unit.bats compares the two).  An event the table does not allow in
 * the slot's state is logged and ignored: it changes nothing.  why is the
 * reply's text for REFUSED and VIOLATION.
 */
static const char *const slot_state_name[SLOT_STATES] = { "FREE", "QUEUED", "RUNNING", "DONE" };
static const char *const slot_event_name[SEV_COUNT] = {
	"execute", "start", "refused", "job-done", "flushed", "cancel", "kill", "violation",
	"new-caller", "peer-gone", "stop"
};
#define NO (-1)
static const signed char slot_next[SLOT_STATES][SEV_COUNT] = {
	/*            execute      start         refused    job-done   flushed    */
	/*            cancel       kill          violation  new-caller peer-gone  stop */
	[SLOT_FREE] = { SLOT_QUEUED, NO, NO, NO, NO,
	    NO, NO, NO, NO, NO, NO },
	[SLOT_QUEUED] = { NO, SLOT_RUNNING, SLOT_DONE, NO, NO,
	    SLOT_DONE, SLOT_DONE, SLOT_DONE, SLOT_DONE, SLOT_DONE, SLOT_DONE },
	[SLOT_RUNNING] = { NO, NO, NO, SLOT_DONE, NO,
	    SLOT_RUNNING, SLOT_RUNNING, SLOT_RUNNING, SLOT_RUNNING, SLOT_RUNNING, SLOT_RUNNING },
	[SLOT_DONE] = { NO, NO, NO, NO, SLOT_FREE,
	    NO, NO, NO, SLOT_DONE, SLOT_DONE, SLOT_DONE },
};
/* What each allowed row does, for the picture (the code is slot_act's switch). */
static const char *const slot_doc[SLOT_STATES][SEV_COUNT] = {
	[SLOT_FREE] = { [SEV_EXECUTE] = "the request kept; its timeout runs from now" },
	[SLOT_QUEUED] = {
		[SEV_START] = "command started (fair share allows); DONE when it cannot start",
		[SEV_REFUSED] = "reply: why it will not run",
		[SEV_CANCEL] = "reply: cancelled before it started",
		[SEV_KILL] = "reply: cancelled before it started",
		[SEV_VIOLATION] = "reply: the protocol error",
		[SEV_NEW_CALLER] = "no reply",
		[SEV_PEER_GONE] = "no reply",
		[SEV_STOP] = "reply: the daemon is stopping",
	},
	[SLOT_RUNNING] = {
		[SEV_JOB_DONE] = "reply: the command's result",
		[SEV_CANCEL] = "SIGTERM, SIGKILL after the grace; stdin closed",
		[SEV_KILL] = "SIGKILL; stdin closed",
		[SEV_VIOLATION] = "stdin closed; SIGTERM; the reply will say why",
		[SEV_NEW_CALLER] = "stdin closed; SIGTERM; no reply",
		[SEV_PEER_GONE] = "stdin closed; SIGTERM; no reply",
		[SEV_STOP] = "SIGTERM; the reply will say the daemon is stopping",
	},
	[SLOT_DONE] = {
		[SEV_FLUSHED] = "reply (and answers held behind it) queued for the peer",
		[SEV_NEW_CALLER] = "reply dropped",
		[SEV_PEER_GONE] = "reply dropped",
		[SEV_STOP] = "reply kept: it goes before the daemon exits",
	},
};

int
neg_slot_next(int state, int ev)
{
	if (state < 0 || state >= SLOT_STATES || ev < 0 || ev >= SEV_COUNT)
		return NO;
	return slot_next[state][ev];
}
#undef NO

/* The picture of slot_next, one line per allowed row, then the rule for the rest. */
void
neg_slot_table(struct buf *b)
{
	int st, ev;

	for (st = 0; st < SLOT_STATES; st++)
		for (ev = 0; ev < SEV_COUNT; ev++)
			if (slot_next[st][ev] >= 0)
				buf_addf(b, "%-8s %-10s -> %-8s %s\n", slot_state_name[st],
				    slot_event_name[ev], slot_state_name[slot_next[st][ev]],
				    slot_doc[st][ev] ? slot_doc[st][ev] : "");
	buf_addf(b, "any other event in any state: logged, and nothing changes\n");
}

/* A call's command stops: its stdin closed (no "send no more" to a caller that is gone), SIGTERM. */
static void
slot_end_call(struct neg_chan *c, struct neg_slot *s, int discard)
{
	if (discard) {
		s->job.discard = 1;
		buf_free(&s->reply);
		buf_free(&s->after);
	}
	slot_close_stdin(c, s);
	slot_stop(s, 0, neg_now());
}

/* The action of an allowed row; returns the event that happened (START may become REFUSED). */
static int
slot_act(struct neg_chan *c, struct neg_slot *s, int ev, const char *why)
{
	int queued = s->state == SLOT_QUEUED, running = s->state == SLOT_RUNNING;

	switch (ev) {
	case SEV_EXECUTE:
		s->since = neg_now();
		break;
	case SEV_START:
		if (slot_start(c, s, neg_now()) < 0) {
			proto_request_free(&s->req);
			return SEV_REFUSED;
		}
		c->running++;
		c->srv->running++;
		break;
	case SEV_JOB_DONE:
		if (s->why)
			neg_reply_text(&s->reply, s->req.id, s->why);
		else if (!s->job.discard)
			neg_job_reply(&s->job, &s->req, &s->reply, c->srv->max_frame);
		neg_job_free(&s->job);
		proto_request_free(&s->req);
		buf_free(&s->sin);
		c->running--;
		c->srv->running--;
		break;
	case SEV_FLUSHED:
		buf_add(&c->out, s->reply.p, s->reply.len);
		buf_add(&c->out, s->after.p, s->after.len);
		slot_release(c, s);
		break;
	case SEV_REFUSED:
	case SEV_CANCEL:
	case SEV_KILL:
	case SEV_VIOLATION:
	case SEV_NEW_CALLER:
	case SEV_PEER_GONE:
	case SEV_STOP:
		if (ev == SEV_VIOLATION)
			chan_log(c, LOG_WARNING, "%s (call %s)", why, s->req.id);
		if (ev == SEV_CANCEL || ev == SEV_KILL)
			why = "Cancelled by the caller before it started";
		if (ev == SEV_STOP)
			why = NEG_STOPPING_TEXT;
		if (ev == SEV_NEW_CALLER || ev == SEV_PEER_GONE) {
			buf_free(&s->reply);
			buf_free(&s->after);
			why = NULL;
		}
		if (queued) {
			if (why)
				neg_reply_text(&s->reply, s->req.id, why);
			proto_request_free(&s->req);
		} else if (running && (ev == SEV_CANCEL || ev == SEV_KILL)) {
			/* the signal first: a command reading its stdin would take the end for a clean exit */
			slot_stop(s, ev == SEV_KILL, neg_now());
			slot_close_stdin(c, s);
		} else if (running && ev == SEV_STOP) {
			s->job.stopping = 1;
			slot_stop(s, 0, neg_now());
		} else if (running) {
			s->why = ev == SEV_VIOLATION ? why : s->why;
			slot_end_call(c, s, ev != SEV_VIOLATION);
		}
		break;
	}
	return ev;
}

static void
slot_event(struct neg_chan *c, struct neg_slot *s, int ev, const char *why)
{
	int next = neg_slot_next(s->state, ev);

	if (next < 0) {
		neg_log(LOG_WARNING, "%s: slot event %s in state %s ignored (a bug: please report it)",
		    chan_peer(c), ev >= 0 && ev < SEV_COUNT ? slot_event_name[ev] : "?",
		    s->state >= 0 && s->state < SLOT_STATES ? slot_state_name[s->state] : "?");
		return;
	}
	if ((ev = slot_act(c, s, ev, why)) != SEV_FLUSHED)
		s->state = slot_next[s->state][ev];
}

/* One event to slot i of c, as the channel's own code raises it: for neg-test's walk of the table. */
void
neg_slot_event(struct neg_chan *c, int i, int ev)
{
	slot_event(c, &c->slot[i], ev, "Protocol error: a walk of the table");
}
/* Grants the caller what the command took of its stdin, in steps, or all once nothing waits. */
static void
stream_grant(struct neg_chan *c, struct neg_slot *s)
{
	if (!s->sin_eof && !s->sin_closed && s->sin_taken > 0 &&
	    (s->sin_taken >= NEG_STREAM_GRANT || s->sin.len == s->sinoff)) {
		proto_stream_credit(&c->out, s->req.id, s->sin_taken);
		s->sin_room += s->sin_taken;
		s->sin_taken = 0;
	}
}

/* Writes stdin bytes to the command; how many it took, or -1 when its stdin is closed now. */
static ssize_t
stream_put(struct neg_chan *c, struct neg_slot *s, const char *p, size_t len)
{
	ssize_t w = write(s->job.fd_in, p, len < NEG_READ_CHUNK ? len : NEG_READ_CHUNK);

	if (w < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	if (w <= 0) {
		/* EPIPE: the command does not read its input; the caller is told to stop */
		slot_close_stdin(c, s);
		return -1;
	}
	s->sin_taken += (size_t)w;
	return w;
}

/* A frame of a streamed call: stdin data, its end, output credit, or a cancel. */
static void
chan_stream_frame(struct neg_chan *c, const struct proto_stream *f)
{
	struct neg_slot *s = chan_stream_slot(c, f->id);
	const char *data;
	size_t len;
	ssize_t w;

	if (s == NULL) {
		/* the rest of a call that ended, was cancelled or was never ours */
		neg_log(LOG_DEBUG, "%s: dropping a stream frame of call %s, which is not going on",
		    chan_peer(c), f->id);
		return;
	}
	switch (f->kind) {
	case PROTO_S_DATA:
		if (f->fd != 0 || s->state != SLOT_RUNNING || f->len > s->sin_room || s->sin_eof) {
			slot_event(c, s, SEV_VIOLATION, f->fd != 0 ? "Protocol error: a caller sends stdin only" :
			    s->sin_eof ? "Protocol error: stdin data after its end" :
			    "Protocol error: stdin data beyond the window granted");
			return;
		}
		s->sin_room -= f->len;
		if (s->sin_closed)
			return;
		data = f->data;
		len = f->len;
		/* nothing waiting before it: straight to the command, one copy less */
		if (s->sinoff == s->sin.len && (w = stream_put(c, s, data, len)) != 0) {
			if (w < 0)
				return;
			data += w;
			len -= (size_t)w;
		}
		/* taken bytes go once they are half: the buffer stays within the window */
		if (s->sinoff > 0 && s->sinoff >= s->sin.len - s->sinoff) {
			memmove(s->sin.p, s->sin.p + s->sinoff, s->sin.len - s->sinoff);
			s->sin.len -= s->sinoff;
			s->sinoff = 0;
		}
		buf_add(&s->sin, data, len);
		stream_grant(c, s);
		return;
	case PROTO_S_EOF:
		if (f->fd != 0) {
			slot_event(c, s, SEV_VIOLATION, "Protocol error: a caller ends stdin only");
			return;
		}
		s->sin_eof = 1;
		if (s->state == SLOT_RUNNING && s->sinoff == s->sin.len)
			slot_close_stdin(c, s);
		return;
	case PROTO_S_CREDIT:
		s->out_credit = s->out_credit + f->credit > PROTO_MAX_FRAME_LIMIT ? PROTO_MAX_FRAME_LIMIT :
		    s->out_credit + f->credit;
		return;
	case PROTO_S_CANCEL:
		chan_log(c, LOG_INFO, "call %s cancelled (%s)", f->id, f->kill ? "KILL" : "TERM");
		slot_event(c, s, f->kill ? SEV_KILL : SEV_CANCEL, NULL);
		return;
	}
}

/*
 * A new caller has the channel (it said so in its version request): a port
 * has one caller at a time, so the calls in progress belong to callers that
 * are gone, and are stopped without replies.
 */
static void
chan_supersede(struct neg_chan *c)
{
	struct neg_slot *s;
	int i, n = 0;

	for (i = 0; i < NEG_CHAN_SLOTS; i++) {
		s = &c->slot[i];
		if (s->state == SLOT_FREE)
			continue;
		n++;
		slot_event(c, s, SEV_NEW_CALLER, NULL);
	}
	if (n > 0)
		chan_log(c, LOG_INFO, "a new caller: %d earlier call%s dropped", n, n == 1 ? "" : "s");
}

/*
 * Where the answer to a request without an id goes: after the reply of the
 * last execute without an id still in progress (a 0.8 caller takes replies in
 * the order of its requests), or, when there is none, out at once.
 */
static struct buf *
chan_inorder(struct neg_chan *c)
{
	struct neg_slot *v[NEG_CHAN_SLOTS];
	int n = chan_order(c, v);

	while (n > 0 && v[n - 1]->has_id)
		n--;
	return n > 0 ? &v[n - 1]->after : &c->out;
}

/* Whether answers held for order pile up: reading requests waits until they can go. */
static int
chan_after_full(struct neg_chan *c)
{
	const struct buf *b = chan_inorder(c);

	return b != &c->out && b->len >= NEG_CHAN_AFTER_MAX;
}

/*
 * A request read (rc 0) or refused (rc < 0, err why).  Only an execute takes a
 * slot; every other request, a refusal, and an execute that finds no slot
 * ("busy") is answered at once, or, without an id, right after the replies
 * it must follow.  So frames after a waiting command are always read: the
 * stdin, credit and cancels of running calls, pings, a new caller's version.
 */
static void
chan_request(struct neg_chan *c, struct proto_request *req, int rc, const char *err)
{
	struct neg_slot *s;
	struct buf *to;
	char busy[200];
	int exec = rc == 0 && proto_method_lookup(req->method) == PROTO_M_EXECUTE;

	chan_flush(c);	/* what is done goes first: an answer given at once comes after it */
	to = req->id[0] ? &c->out : chan_inorder(c);
	if (rc < 0) {
		chan_log(c, LOG_WARNING, "%s", err);
		/* "id": null says "not an answer to any call of yours" to callers that sent an id */
		neg_reply_text(to, req->id[0] ? req->id : "null", err);
	} else if (!exec) {
		if (req->new_caller && req->id[0])
			chan_supersede(c);
		chan_answer(c, req, to);
	} else if (c->stopping) {
		neg_reply_text(to, req->id, NEG_STOPPING_TEXT ": it starts no new commands");
	} else if ((s = chan_free_slot(c)) == NULL) {
		snprintf(busy, sizeof(busy), "The callee is busy: %d commands are running or waiting "
		    "on this channel, the most it takes; %s was refused, try again when one has "
		    "finished", c->count, req->argc ? req->argv[0] : "");
		chan_log(c, LOG_WARNING, "%s", busy);
		neg_reply_text(to, req->id, busy);
	} else {
		memset(s, 0, sizeof(*s));
		c->count++;
		s->seq = c->seq++;
		s->has_id = req->id[0] != '\0';
		s->req = *req;
		memset(req, 0, sizeof(*req));
		slot_event(c, s, SEV_EXECUTE, NULL);
		if (s->req.stream && !chan_streams(c))
			slot_event(c, s, SEV_REFUSED,
			    "Protocol error: streaming is not served here (frame limit too small)");
		else if (chan_may_start(c))
			slot_event(c, s, SEV_START, NULL);
		return;
	}
	proto_request_free(req);
}

/* One frame the reader returned (ev PROTO_FRAME), or its error (PROTO_ERROR). */
static void
chan_frame(struct neg_chan *c, enum proto_event ev)
{
	struct proto_request req;
	struct proto_stream f;
	char err[200];
	int rc;

	memset(&req, 0, sizeof(req));
	if (ev == PROTO_ERROR && c->rd.cut) {
		/*
		 * A later frame started inside this one: its caller died mid-request
		 * (a host that hung up, on a port whose disconnect came too late to
		 * be seen).  An "id": null answer would reach nobody but the next
		 * caller, and a 0.8 caller would take it for its own reply.
		 */
		chan_log(c, LOG_WARNING, "dropped, not answered (its caller is gone): %s",
		    strncmp(c->rd.err, "Protocol error: ", 16) == 0 ? c->rd.err + 16 : c->rd.err);
		return;
	}
	if (ev == PROTO_ERROR) {
		snprintf(err, sizeof(err), "%s", c->rd.err);
		rc = -1;
	} else {
		/* checked as it arrived, tokenised here once */
		rc = proto_served_parse(&c->rd, &f, &req, err, sizeof(err));
		if (rc == 1) {
			chan_stream_frame(c, &f);
			return;
		}
		if (rc < 0 && f.id[0]) {
			chan_log(c, LOG_WARNING, "%s (call %s)", err, f.id);
			return;
		}
		if (rc < 0)
			proto_request_free(&req);
		/* a large frame's buffer is not kept around between requests */
		if (c->rd.body.cap > NEG_KEEP_BUF)
			buf_free(&c->rd.body);
	}
	chan_request(c, &req, rc, err);
}

/*
 * Whether reading requests waits: while replies pile up unread (a peer that
 * sends and never reads holds NEG_CHAN_OUT_MAX and what was already running,
 * not --max-frame), or answers held for order behind a command do.
 */
static int
chan_paused(struct neg_chan *c)
{
	size_t unsent = chan_unsent(c);

	return unsent >= NEG_CHAN_OUT_MAX || chan_after_full(c) ||
	    (c->srv->unsent >= NEG_SRV_OUT_MAX && unsent >= NEG_CHAN_OUT_LOW);
}

/* Starts queued commands in arrival order while the fair share allows, and reads requests. */
static void
chan_process(struct neg_chan *c)
{
	struct neg_slot *v[NEG_CHAN_SLOTS];
	enum proto_event ev;
	size_t used;
	int i, n;

	n = chan_order(c, v);
	for (i = 0; i < n && chan_may_start(c); i++)
		if (v[i]->state == SLOT_QUEUED)
			slot_event(c, v[i], SEV_START, NULL);
	chan_flush(c);
	while (c->inoff < c->in.len && !chan_paused(c)) {
		if (!proto_reader_partial(&c->rd))
			c->frame_t0 = c->last_rx;
		ev = proto_reader_feed(&c->rd, c->in.p + c->inoff, c->in.len - c->inoff, &used);
		c->inoff += used;
		if (ev == PROTO_NEED_MORE)
			break;
		chan_frame(c, ev);
	}
	if (c->inoff == c->in.len) {
		c->in.len = c->inoff = 0;
		if (c->in.cap > NEG_KEEP_BUF)
			buf_free(&c->in);
	}
	chan_account(c);
	chan_flush(c);
	chan_count_unsent(c);
}

/* Whether the output of a streamed call is read now: it has credit and the channel room. */
static int
stream_readable(const struct neg_chan *c, const struct neg_slot *s)
{
	return s->job.discard || (s->out_credit > 0 && chan_unsent(c) < NEG_STREAM_OUT_HIGH);
}

/* A streamed call's pollfds: stdin while bytes wait for it, output while it may be sent. */
static int
stream_pollfds(const struct neg_chan *c, struct neg_slot *s, struct pollfd *p)
{
	return job_fds(&s->job, p, s->sinoff < s->sin.len, stream_readable(c, s));
}

/* Forwards what the command wrote on fd (1 stdout, 2 stderr) as data frames, within the credit. */
static void
stream_read(struct neg_chan *c, struct neg_slot *s, int *fdp, int which)
{
	size_t room, start;
	ssize_t n;
	int rounds;

	for (rounds = 0; rounds < NEG_READS_PER_WAKE && *fdp >= 0 && stream_readable(c, s); rounds++) {
		room = s->job.discard || s->out_credit > NEG_STREAM_CHUNK ? NEG_STREAM_CHUNK :
		    s->out_credit;
		/* read into the frame itself: one copy less per byte, which TCG guests feel */
		start = proto_stream_data_open(&c->out, s->req.id, which, room);
		n = read(*fdp, c->out.p + c->out.len, room);
		if (n <= 0 || s->job.discard) {
			c->out.len = start;
			c->out.p[start] = '\0';
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0) {
			close(*fdp);
			*fdp = -1;
			return;
		}
		if (s->job.discard)
			continue;
		proto_stream_data_close(&c->out, start, (size_t)n);
		s->out_credit -= (size_t)n;
	}
}

/* Feeds the command's stdin from what the caller sent, granting it back as it goes. */
static void
stream_write(struct neg_chan *c, struct neg_slot *s)
{
	ssize_t w = stream_put(c, s, s->sin.p + s->sinoff, s->sin.len - s->sinoff);

	if (w <= 0)
		return;
	s->sinoff += (size_t)w;
	if (s->sinoff == s->sin.len) {
		s->sin.len = s->sinoff = 0;
		if (s->sin_eof)
			slot_close_stdin(c, s);
	}
	stream_grant(c, s);
}

static void
stream_io(struct neg_chan *c, struct neg_slot *s, const struct pollfd *p, int n)
{
	struct neg_job *j = &s->job;
	int i;

	for (i = 0; i < n; i++) {
		if (p[i].revents == 0)
			continue;
		if (p[i].fd == j->fd_in)
			stream_write(c, s);
		else if (p[i].fd == j->fd_out)
			stream_read(c, s, &j->fd_out, 1);
		else if (p[i].fd == j->fd_err)
			stream_read(c, s, &j->fd_err, 2);
	}
}

/*
 * The channel's pollfds: its own fd first (input wanted unless reading is
 * paused, output when queued), then its commands' pipes.
 */
int
neg_chan_pollfds(struct neg_chan *c, struct pollfd *p, int want_input)
{
	int n = NEG_CHAN_PFD_JOBS, i;
	struct neg_slot *s;

	/* -1 while disconnected: poll() skips it, the jobs are still served */
	p[NEG_CHAN_PFD_PEER].fd = c->fd;
	p[NEG_CHAN_PFD_PEER].events = 0;
	p[NEG_CHAN_PFD_PEER].revents = 0;
	if (want_input && !chan_paused(c) && c->inoff == c->in.len)
		p[NEG_CHAN_PFD_PEER].events |= POLLIN;
	if (c->outoff < c->out.len)
		p[NEG_CHAN_PFD_PEER].events |= POLLOUT;
	for (i = 0; i < NEG_CHAN_SLOTS; i++) {
		s = &c->slot[i];
		s->nfds = s->state != SLOT_RUNNING ? 0 : s->req.stream ? stream_pollfds(c, s, p + n) :
		    neg_job_pollfds(&s->job, p + n);
		n += s->nfds;
	}
	return n;
}

static void
chan_jobs_finished(struct neg_chan *c)
{
	int i;

	for (i = 0; i < NEG_CHAN_SLOTS; i++)
		if (c->slot[i].state == SLOT_RUNNING && neg_job_done(&c->slot[i].job))
			slot_event(c, &c->slot[i], SEV_JOB_DONE, NULL);
}

/*
 * Writes queued output, a few write units at most (streamed output keeps the
 * port busy, others get a turn); 1 when the peer is gone, its errno in *why.
 */
static int
chan_write(struct neg_chan *c, int *why)
{
	ssize_t r;
	int rounds;

	for (rounds = 0; c->outoff < c->out.len && rounds < NEG_READS_PER_WAKE; rounds++) {
		size_t len = c->out.len - c->outoff;

		r = write(c->fd, c->out.p + c->outoff, len < NEG_WRITE_CHUNK ? len : NEG_WRITE_CHUNK);
		if (r > 0) {
			c->outoff += (size_t)r;
			if (c->outoff == c->out.len) {
				c->out.len = c->outoff = 0;
				if (c->out.cap > NEG_KEEP_BUF)
					buf_free(&c->out);
			} else if (c->outoff >= c->out.len - c->outoff) {
				/* streamed output may never let the queue run dry: sent bytes go */
				memmove(c->out.p, c->out.p + c->outoff, c->out.len - c->outoff);
				c->out.len -= c->outoff;
				c->outoff = 0;
			}
			continue;
		}
		if (r < 0 && errno != EAGAIN && errno != EINTR) {
			*why = errno;
			return 1;
		}
		break;
	}
	return 0;
}

/* Handles poll results; returns -1 when the peer is gone (errno says how, 0 for EOF). */
int
neg_chan_io(struct neg_chan *c, const struct pollfd *p, int n)
{
	char tmp[NEG_READ_CHUNK];
	ssize_t r;
	int i, k, rounds, gone = 0, why = 0;
	struct neg_slot *s;

	for (i = 0, k = NEG_CHAN_PFD_JOBS; i < NEG_CHAN_SLOTS; i++) {
		s = &c->slot[i];
		if (s->state != SLOT_RUNNING || s->nfds == 0)
			continue;
		if (k + s->nfds <= n) {
			if (s->req.stream)
				stream_io(c, s, p + k, s->nfds);
			else
				neg_job_io(&s->job, p + k, s->nfds);
		}
		k += s->nfds;
	}
	if (p[NEG_CHAN_PFD_PEER].revents & POLLOUT)
		gone = chan_write(c, &why);
	if (!gone && (p[NEG_CHAN_PFD_PEER].revents & POLLIN)) {
		for (rounds = 0; rounds < NEG_READS_PER_WAKE; rounds++) {
			buf_reserve(&c->in, sizeof(tmp));
			r = read(c->fd, c->in.p + c->in.len, sizeof(tmp));
			if (r > 0) {
				c->in.len += (size_t)r;
				c->last_rx = neg_now();
				/*
				 * Requests are taken as they come: a peer that never reads
				 * its replies pauses the channel with one read's bytes held
				 * here at most, not NEG_READS_PER_WAKE of them.
				 */
				chan_process(c);
				if (chan_paused(c))
					break;
				continue;
			}
			if (r < 0 && errno == EINTR)
				continue;
			if (r == 0 || errno != EAGAIN) {
				gone = 1;
				why = r == 0 ? 0 : errno;
			}
			break;
		}
	}
	if (!gone && (p[NEG_CHAN_PFD_PEER].revents & (POLLHUP | POLLERR | POLLNVAL)) &&
	    !(p[NEG_CHAN_PFD_PEER].revents & POLLIN))
		gone = 1;
	chan_jobs_finished(c);
	chan_process(c);
	/* the peer just spoke: what answers it goes now, not after one more poll() per call */
	if (!gone && (p[NEG_CHAN_PFD_PEER].revents & POLLIN) && c->outoff < c->out.len)
		gone = chan_write(c, &why);
	/* what happened to the peer, not whatever the commands' start-up left in errno */
	errno = why;
	chan_count_unsent(c);
	return gone ? -1 : 0;
}

void
neg_chan_reap(struct neg_chan *c)
{
	int i;

	for (i = 0; i < NEG_CHAN_SLOTS; i++)
		if (c->slot[i].state == SLOT_RUNNING)
			neg_job_reap(&c->slot[i].job);
	chan_jobs_finished(c);
	chan_process(c);
}

/* How long a frame may take from its first byte: a fixed allowance plus time for its size. */
static int64_t
chan_frame_limit(const struct neg_chan *c)
{
	if (proto_reader_raw(&c->rd))
		return NEG_DATA_FRAME_MS;
	return PROTO_PARTIAL_MS + (int64_t)(proto_reader_declared(&c->rd) / NEG_FRAME_MIN_RATE);
}

void
neg_chan_tick(struct neg_chan *c, int64_t now)
{
	struct proto_request none;
	int i;

	for (i = 0; i < NEG_CHAN_SLOTS; i++)
		if (c->slot[i].state == SLOT_RUNNING)
			neg_job_tick(&c->slot[i].job, now);
	/*
	 * A data frame is one write(): still incomplete, its writer died in it,
	 * and what came after (the next caller's request) is in its bytes.
	 */
	if (proto_reader_raw(&c->rd) && c->inoff == c->in.len && !chan_paused(c) &&
	    now - c->frame_t0 >= chan_frame_limit(c)) {
		chan_log(c, LOG_WARNING, "a data frame was cut short; looking through its bytes "
		    "for the next frame");
		buf_free(&c->in);
		proto_reader_rehunt(&c->rd, &c->in);
		c->inoff = 0;
		c->frame_t0 = now;
	}
	/* timed from the frame's first byte: a trickle of bytes does not keep a cut frame alive */
	if (proto_reader_partial(&c->rd) && c->inoff == c->in.len && !chan_paused(c) &&
	    now - c->frame_t0 >= chan_frame_limit(c)) {
		chan_log(c, LOG_WARNING, "dropping an incomplete frame");
		memset(&none, 0, sizeof(none));
		chan_request(c, &none, -1, "Protocol error: incomplete frame (the rest did not arrive in time)");
		proto_reader_reset(&c->rd);
	}
	chan_log_window(c, now);
	chan_jobs_finished(c);
	chan_process(c);
}

int64_t
neg_chan_wake(const struct neg_chan *c)
{
	int64_t t = 0;
	int i;
	const struct neg_slot *s;

	for (i = 0; i < NEG_CHAN_SLOTS; i++) {
		s = &c->slot[i];
		if (s->state == SLOT_RUNNING)
			t = neg_min_deadline(t, neg_job_wake(&s->job));
		/* a queued command is looked at again soon: another channel's may have ended */
		if (s->state == SLOT_QUEUED)
			t = neg_min_deadline(t, neg_now() + 50);
	}
	if (proto_reader_partial(&c->rd))
		t = neg_min_deadline(t, c->frame_t0 + chan_frame_limit(c));
	/* old guest kernels can lose the POLLOUT wake-up: retry writes on a timer */
	if (c->outoff < c->out.len)
		t = neg_min_deadline(t, neg_now() + 100);
	/* requests not read while reading is paused */
	if (c->inoff < c->in.len)
		t = neg_min_deadline(t, neg_now() + 50);
	if (c->log_dropped > 0)
		t = neg_min_deadline(t, c->log_until);
	return t;
}

/*
 * The peer went away: its requests are void.  Running commands are killed
 * and their replies discarded; the slots stay until the commands are reaped.
 */
void
neg_chan_reset(struct neg_chan *c)
{
	struct neg_slot *s;
	size_t held;
	int i;

	for (i = 0; i < NEG_CHAN_SLOTS; i++) {
		s = &c->slot[i];
		if (s->state != SLOT_FREE)
			slot_event(c, s, SEV_PEER_GONE, NULL);
	}
	proto_reader_reset(&c->rd);
	/* a closed channel gives back what its peer made it hold */
	held = c->rd.body.cap + c->in.cap + c->out.cap;
	buf_free(&c->rd.body);
	buf_free(&c->in);
	buf_free(&c->out);
	c->inoff = c->outoff = 0;
	give_back(held);
	chan_count_unsent(c);
	chan_account(c);
}

/* Releases a channel whose commands are all reaped. */
void
neg_chan_free(struct neg_chan *c)
{
	int i;

	neg_chan_reset(c);
	for (i = 0; i < NEG_CHAN_SLOTS; i++) {
		buf_free(&c->slot[i].reply);
		buf_free(&c->slot[i].sin);
		buf_free(&c->slot[i].after);
	}
	proto_reader_free(&c->rd);
	buf_free(&c->in);
	buf_free(&c->out);
}

void
neg_stop_begin(struct neg_stop *st, int64_t now)
{
	st->step = NEG_STOP_REFUSE;
	st->at = now + NEG_STOP_GRACE_MS;
}

/* The step of a stop whose time has come now, or NEG_STOP_NONE. */
int
neg_stop_due(struct neg_stop *st, int64_t now)
{
	if (st->step == NEG_STOP_NONE || st->step == NEG_STOP_DROP || now < st->at)
		return NEG_STOP_NONE;
	st->step++;
	st->at = st->step == NEG_STOP_KILL ? now + NEG_KILL_GRACE_MS + NEG_STOP_FLUSH_MS : 0;
	return st->step;
}

/*
 * The channel's stop event, one step of neg_stop (neg_proto.h): every slot
 * it concerns gets SEV_STOP (the waiting ones at REFUSE, the running ones at
 * KILL); DROP is the peer-gone event for all (the replies that could not go).
 */
void
neg_chan_stop(struct neg_chan *c, int step)
{
	int i, want = step == NEG_STOP_REFUSE ? SLOT_QUEUED : SLOT_RUNNING;

	if (step == NEG_STOP_DROP) {
		neg_chan_reset(c);
		return;
	}
	c->stopping = 1;
	for (i = 0; i < NEG_CHAN_SLOTS; i++)
		if (c->slot[i].state == want)
			slot_event(c, &c->slot[i], SEV_STOP, NULL);
	chan_process(c);
}

/* Whether commands are still running or replies unsent (a stopping daemon waits for both). */
int
neg_chan_busy(const struct neg_chan *c)
{
	int i;

	if (c->fd >= 0 && c->outoff < c->out.len)
		return 1;
	for (i = 0; i < NEG_CHAN_SLOTS; i++)
		if (c->slot[i].state == SLOT_RUNNING)
			return 1;
	return 0;
}

/* ---- the options both programs take ---- */

void
neg_cli_init(struct neg_cli *o, const char *usage, int max_running)
{
	memset(o, 0, sizeof(*o));
	o->usage = usage;
	o->srv.env.dir = "/usr/lib/negotiator/commands";
	o->srv.max_frame = PROTO_MAX_FRAME_DEFAULT;
	o->srv.max_running = max_running;
	o->timeout = 10;
	o->deadline = -1;
	o->infd = -1;
}

/*
 * A directory as given, or made absolute against the working directory: the
 * commands run in /, where a relative path would name something else.
 */
static const char *
absolute_dir(const char *dir)
{
	static char path[PATH_MAX];
	char cwd[PATH_MAX];
	int n;

	if (dir[0] == '/')
		return dir;
	if (getcwd(cwd, sizeof(cwd)) == NULL)
		neg_die("cannot resolve the directory '%s': %s", dir, strerror(errno));
	n = snprintf(path, sizeof(path), "%s/%s", cwd, dir);
	if (n < 0 || (size_t)n >= sizeof(path))
		neg_die("cannot resolve the directory '%s': the path is too long", dir);
	return path;
}

/*
 * Handles an option both programs take and returns 1, or returns 0 for one of
 * the program's own.  --version and --help exit 0; a bad value or an unknown
 * option exits 255 with one line.
 */
int
neg_cli_option(struct neg_cli *o, int c, const char *arg)
{
	switch (c) {
	case 'e':
		o->command = arg;
		/* FALLTHROUGH */
	case 'd':
		o->mode = c;
		return 1;
	case 't':
		if (neg_parse_seconds(arg, &o->timeout) < 0)
			neg_die("invalid timeout '%s': give a number of seconds", arg);
		/* the wire carries milliseconds: less would read as 0, "no timeout" */
		if (o->timeout > 0 && o->timeout < NEG_MIN_TIMEOUT)
			o->timeout = NEG_MIN_TIMEOUT;
		return 1;
	case NEG_OPT_COMMANDS:
		o->srv.env.dir = absolute_dir(arg);
		return 1;
	case NEG_OPT_INPUT:
		o->input = arg;
		return 1;
	case NEG_OPT_MAX_FRAME:
		if (neg_parse_size(arg, &o->srv.max_frame) < 0)
			neg_die("invalid --max-frame '%s': give bytes (1K to 1G)", arg);
		return 1;
	case NEG_OPT_SYSLOG:
		neg_syslog = 1;
		return 1;
	case 'v':
		o->loud++;
		return 1;
	case 'q':
		o->loud--;
		return 1;
	case NEG_OPT_VERSION:
		printf("%s %s\n", neg_progname, NEG_VERSION);
		exit(0);
	case 'h':
		fputs(o->usage, stdout);
		exit(0);
	case '?':
		neg_die("unknown option, or one without its value: %s (%s --help lists them)",
		    arg ? arg : "?", neg_progname);
	}
	return 0;
}

/* Daemons tell what they do by default; clients speak only of trouble. */
void
neg_cli_verbosity(const struct neg_cli *o)
{
	neg_verbosity = (o->mode == 'd' ? LOG_INFO : LOG_WARNING) + o->loud;
	if (neg_verbosity < LOG_ERR)
		neg_verbosity = LOG_ERR;
	if (neg_verbosity > LOG_DEBUG)
		neg_verbosity = LOG_DEBUG;
}

/* Milliseconds until deadline (-1 for none), at most cap. */
static int
wait_ms(int64_t deadline, int cap)
{
	int64_t left;

	if (deadline < 0)
		return cap;
	left = deadline - neg_now();
	if (left < 0)
		return 0;
	return left < cap ? (int)left : cap;
}

static int
expired(int64_t deadline)
{
	return deadline >= 0 && neg_now() >= deadline;
}

/*
 * Reads --input into o->indata for a call that does not stream (a 0.8 peer),
 * within the deadline, and no more than can travel: base64 makes 4 bytes of 3.
 */
static int
cli_read_input(struct neg_cli *o, char *err, size_t errlen)
{
	size_t limit = o->srv.max_frame / 4 * 3, want;
	int fd = o->infd;
	struct pollfd p;
	struct buf secs = {0};
	ssize_t n;
	int rc = -1;

	for (;;) {
		p.fd = fd;
		p.events = POLLIN;
		p.revents = 0;
		if (poll(&p, 1, wait_ms(o->deadline, 1000)) < 0 && errno != EINTR) {
			snprintf(err, errlen, "%s", strerror(errno));
			break;
		}
		if (p.revents == 0) {
			if (!expired(o->deadline))
				continue;
			proto_put_seconds(&secs, o->timeout);
			snprintf(err, errlen, "timed out after %s seconds", secs.p);
			buf_free(&secs);
			break;
		}
		want = limit + 1 - o->indata.len < NEG_READ_CHUNK ? limit + 1 - o->indata.len :
		    NEG_READ_CHUNK;
		buf_reserve(&o->indata, want);
		n = read(fd, o->indata.p + o->indata.len, want);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			snprintf(err, errlen, "%s", strerror(errno));
			break;
		}
		if (n == 0) {
			rc = 0;
			break;
		}
		o->indata.len += (size_t)n;
		if (o->indata.len > limit) {
			snprintf(err, errlen, "more than %zu bytes do not fit in a frame of %zu bytes "
			    "(raise --max-frame on both sides)", limit, o->srv.max_frame);
			break;
		}
	}
	buf_reserve(&o->indata, 0);
	return rc;
}

/*
 * After the options, before any channel is opened: the deadline -t gives,
 * -e's words (each UTF-8: arguments travel as JSON text, and a 0.8 peer could
 * not pass a byte that is not UTF-8 on intact), and --input's bytes.  Exits
 * 255 with one line.
 */
void
neg_cli_prepare(struct neg_cli *o)
{
	char err[512];
	size_t i;

	o->deadline = o->timeout > 0 ? neg_now() + (int64_t)(o->timeout * 1000) : -1;
	if (o->input && o->mode != 'e')
		neg_die("--input goes with -e");
	if (o->mode != 'e')
		return;
	if (neg_split(o->command, &o->argv, &o->argc, err, sizeof(err)) < 0)
		neg_die("cannot run '%s': %s", o->command, err);
	for (i = 0; i < o->argc; i++)
		if (!proto_utf8_valid(o->argv[i], strlen(o->argv[i])))
			neg_die("cannot run '%s': word %zu is not valid UTF-8 (arguments travel as "
			    "JSON text)", o->command, i + 1);
	/* opened now, so that a wrong name is said before any channel is opened */
	if (o->input && (o->infd = strcmp(o->input, "-") == 0 ? 0 :
	    open(o->input, O_RDONLY | O_CLOEXEC)) < 0)
		neg_die("cannot read the input (%s): %s", o->input, strerror(errno));
}

void
neg_cli_free(struct neg_cli *o)
{
	neg_strv_free(o->argv);
	o->argv = NULL;
	if (o->infd > 0)
		close(o->infd);
	o->infd = -1;
	buf_free(&o->indata);
}

/* ---- the client side of a call ---- */

/*
 * Writes all of s, at most NEG_WRITE_CHUNK per write() (virtio_console's
 * limit), waiting for POLLOUT in short slices because old guest kernels lose
 * that wake-up.  On a port, POLLHUP means the host is not there yet: wait.
 */
static int
write_all(int fd, int flags, const char *s, size_t len, int64_t deadline,
    char *err, size_t errlen)
{
	struct pollfd p;
	ssize_t n;
	size_t off = 0;
	int away = 0;

	while (off < len) {
		p.fd = fd;
		p.events = POLLOUT;
		p.revents = 0;
		if (poll(&p, 1, wait_ms(deadline, 100)) < 0 && errno != EINTR) {
			snprintf(err, errlen, "poll failed: %s", strerror(errno));
			return -1;
		}
		if ((p.revents & POLLHUP) && (flags & NEG_CALL_PORT) && off == 0) {
			away = 1;
			if (expired(deadline))
				break;
			poll(NULL, 0, 50);
			continue;
		}
		if (p.revents & (POLLERR | POLLNVAL | POLLHUP)) {
			snprintf(err, errlen, "the connection was closed while sending");
			return -1;
		}
		n = write(fd, s + off, len - off < NEG_WRITE_CHUNK ? len - off : NEG_WRITE_CHUNK);
		if (n > 0) {
			off += (size_t)n;
			continue;
		}
		if (n < 0 && errno != EAGAIN && errno != EINTR) {
			snprintf(err, errlen, "cannot send: %s", strerror(errno));
			return -1;
		}
		if (expired(deadline))
			break;
	}
	if (off == len)
		return 0;
	snprintf(err, errlen, away ? "the other side is not connected to the channel" :
	    "timed out while sending");
	return -1;
}

/*
 * Reads and drops what is already waiting on fd: the rest of a reply an
 * earlier caller gave up on.  Only what is there now; what is still in
 * flight is skipped by the reader, which finds the next frame by itself.
 */
static void
drop_pending(int fd)
{
	struct pollfd p = { fd, POLLIN, 0 };
	char tmp[NEG_READ_CHUNK];
	ssize_t n;
	int rounds;

	/* poll first: the caller's fd may be blocking (a test's socket) */
	for (rounds = 0; rounds < NEG_DROP_READS && poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
	    rounds++) {
		n = read(fd, tmp, sizeof(tmp));
		if (n == 0 || (n < 0 && errno != EINTR))
			break;
	}
}

/* A fresh request id: a caller drops replies and stream frames with any other. */
void
neg_new_id(char *id, size_t idlen)
{
	static unsigned counter;

	if (counter == 0)
		counter = (unsigned)getpid() * 7919u + (unsigned)neg_now();
	counter = counter * 1103515245u + 12345u;
	snprintf(id, idlen, "%u", counter % 1000000000u);
}

/*
 * The request frame of method with kw's words, options and a fresh id (into
 * id): 0, or -1 when the other side would refuse it unread for its size (said
 * in err, rather than waiting for the timeout).
 */
static int
request_frame(struct buf *frame, const char *method, const struct proto_request *kw,
    char *id, size_t max_frame, char *err, size_t errlen)
{
	struct proto_request req;
	size_t head;

	memset(&req, 0, sizeof(req));
	if (kw)
		req = *kw;
	neg_new_id(req.id, sizeof(req.id));
	memcpy(id, req.id, sizeof(req.id));
	frame->len = 0;
	proto_request_write(frame, method, req.argv, req.argc, &req);
	head = (size_t)(strchr(frame->p, '\n') + 1 - frame->p);
	if (frame->len - head <= max_frame)
		return 0;
	snprintf(err, errlen, "the request is %zu bytes (input in base64 included), over the "
	    "frame limit of %zu: raise --max-frame on both sides", frame->len - head, max_frame);
	return -1;
}

/*
 * Whether a reply that parsed (resp) is the answer to request id: a 0.8 peer
 * echoes no id, ours does.  Anything else is freed: a failure about a frame
 * that could not be read ("id": null) is kept in refused (the answer once the
 * channel is quiet until *quiet), replies to earlier calls are dropped.
 */
static int
call_reply(const char *id, struct proto_response *resp, char *refused, size_t refusedlen,
    int64_t *quiet)
{
	if (resp->id[0] == '\0' || strcmp(resp->id, id) == 0)
		return 1;
	/* "cut short" is about a frame that ran into a later one, never the later one itself */
	if (strcmp(resp->id, "null") == 0 && !resp->success &&
	    find_text(resp->error, "cut short") == NULL) {
		neg_log(LOG_INFO, "the other side could not read a request: %s", resp->error);
		snprintf(refused, refusedlen, "%s", resp->error);
		*quiet = neg_now() + NEG_NULL_QUIET_MS;
	} else {
		neg_log(LOG_INFO, "dropping a reply to an earlier call (id %s)", resp->id);
	}
	proto_response_free(resp);
	return 0;
}

/* Whether a call waiting for its reply is over without one (err says why). */
static int
call_overdue(const char *refused, int64_t quiet, int64_t deadline, const char *skipped,
    char *err, size_t errlen)
{
	if (refused[0] && (neg_now() >= quiet || expired(deadline))) {
		snprintf(err, errlen, "the other side could not read the request: %s", refused);
		return 1;
	}
	if (!expired(deadline))
		return 0;
	snprintf(err, errlen, "no reply within the timeout%s%s%s", skipped[0] ?
	    " (skipped data that was no reply: " : "", skipped, skipped[0] ? ")" : "");
	return 1;
}

/*
 * Writes all of s to fd; -1 with errno on failure.  A signal that cancels a
 * streamed call ends a write blocked on a stdout nobody reads: the rest does
 * not matter then.
 */
int
neg_write_out(int fd, const char *s, size_t len)
{
	ssize_t n;

	while (len > 0) {
		n = write(fd, s, len);
		if (n < 0 && errno == EINTR && cancel_pending)
			return 0;
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		s += n;
		len -= (size_t)n;
	}
	return 0;
}

/* The exit status a 0.8 peer's error text implies ("... exit code N ..."), else 255. */
static int
status_from_text(const char *e)
{
	const char *p = find_text(e, "exit code ");
	int v;

	if (p && (v = atoi(p + 10)) > 0 && v < 256)
		return v;
	return 255;
}

/*
 * SIGINT, SIGTERM and SIGHUP during a CLI's calls (and SIGCHLD, its wait for
 * virsh), to the self-pipe: the first cancels every remote command (TERM, its
 * grace period), the second kills them at once and we go.  No SA_RESTART: a
 * write to a stdout nobody reads must not hide them.  An inherited ignore, as
 * nohup's, stays.  Off: the old dispositions back, and a cancelling signal
 * that came is raised again, so that we die of it as a shell expects of a
 * program it interrupted.
 */
void
neg_cli_signals(int on)
{
	static const int sigs[] = { SIGINT, SIGTERM, SIGHUP, SIGCHLD };
	static struct sigaction old[4];
	struct sigaction sa;
	int i;

	if (on) {
		if (selfpipe[0] < 0 && pipe2(selfpipe, O_CLOEXEC | O_NONBLOCK) < 0)
			neg_die("cannot make a pipe: %s", strerror(errno));
		signal_read();
		sig_seen = 0;
		sig_cancels = 0;
		cancel_pending = 0;
		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = on_signal;
		sigemptyset(&sa.sa_mask);
		for (i = 0; i < 4; i++) {
			sigaction(sigs[i], NULL, &old[i]);
			sa.sa_flags = sigs[i] == SIGCHLD ? SA_NOCLDSTOP : 0;
			/* SIGCHLD whatever was inherited: an ignored one would reap virsh behind our back */
			if (old[i].sa_handler != SIG_IGN || sigs[i] == SIGCHLD)
				sigaction(sigs[i], &sa, NULL);
		}
		return;
	}
	for (i = 0; i < 4; i++)
		sigaction(sigs[i], &old[i], NULL);
	if (neg_cli_signalled() > 0) {
		fflush(NULL);
		raise(sig_last);
	}
}

/* How many cancelling signals came since neg_cli_signals(1). */
int
neg_cli_signalled(void)
{
	signal_read();
	return sig_cancels;
}

/*
 * A CLI's call, driven by neg_runs_turn (one for -e of one guest, many for a
 * fleet; the same code either way):
 *
 *   HELLO   version with new_caller --reply with stream--> STREAM
 *           --any other reply (a 0.8 peer)--> ONESHOT
 *   STREAM  stdin sent as granted, output emitted as it comes and granted
 *           back --final reply--> DONE
 *   ONESHOT execute with all input --reply, all output--> DONE
 *   CALL    one request (list_commands) --reply--> DONE
 *   any     --deadline, channel failure, second signal--> DONE (status 255)
 *
 * A frame half sent when a call ends on a port is sent out (at most 1 s): it
 * would swallow the next caller's first one; the guest CLI has one call, so
 * nothing else waits meanwhile.  A socket (the host's calls, a fleet's in one
 * loop) is closed right after, which tells the other side to drop the half
 * frame: what leaves now without blocking (a cancel frame, mostly) is sent,
 * the rest dropped, so that a guest that stopped reading stalls no other call.
 */
static int
run_put(struct neg_run *c, int fd, const char *s, size_t len)
{
	return c->emit ? c->emit(c, fd, s, len) : neg_write_out(fd, s, len);
}

static void
run_flush(struct neg_run *c, int ms)
{
	char err[256];
	ssize_t n;

	if (c->wq.len > c->wqoff && (c->flags & NEG_CALL_PORT)) {
		write_all(c->fd, c->flags, c->wq.p + c->wqoff, c->wq.len - c->wqoff,
		    neg_now() + ms, err, sizeof(err));
	} else {
		/* the fd is non-blocking (neg_run_start) */
		while (c->wq.len > c->wqoff && ((n = write(c->fd, c->wq.p + c->wqoff,
		    c->wq.len - c->wqoff)) > 0 || (n < 0 && errno == EINTR)))
			c->wqoff += n > 0 ? (size_t)n : 0;
	}
	c->wq.len = c->wqoff = 0;
}

static void
run_done(struct neg_run *c, int status)
{
	c->status = status;
	c->phase = NEG_RUN_DONE;
	run_flush(c, 1000);
}

/*
 * Negotiator failed: 255, err said (unless kept quiet; with the peer's name
 * unless it is about our own side), the call over.
 */
static void
run_failv(struct neg_run *c, int own, const char *fmt, va_list ap)
{
	vsnprintf(c->err, sizeof(c->err), fmt, ap);
	if (!c->keep_quiet)
		neg_log(LOG_ERR, "%s%s%s", own ? "" : c->peer, own ? "" : ": ", c->err);
	c->self_failed = 1;
	run_done(c, 255);
}

static void run_fail(struct neg_run *, const char *, ...) __attribute__((format(printf, 2, 3)));
static void run_own_fail(struct neg_run *, const char *, ...)
    __attribute__((format(printf, 2, 3)));

static void
run_fail(struct neg_run *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	run_failv(c, 0, fmt, ap);
	va_end(ap);
}

static void
run_own_fail(struct neg_run *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	run_failv(c, 1, fmt, ap);
	va_end(ap);
}

static int
stdout_failed(void)
{
	neg_log(LOG_ERR, "cannot write to standard output: %s", strerror(errno));
	return 255;
}

/* The final reply's exit status, like ssh's; the failure said on stderr. */
static void
run_outcome(struct neg_run *c, int out_failed)
{
	const struct proto_response *resp = &c->resp;
	int rc;

	if (out_failed) {
		run_own_fail(c, "cannot write to standard output: %s", strerror(errno));
		return;
	}
	if (resp->success)
		rc = 0;
	else if (resp->timed_out)
		rc = 255;
	else if (resp->exit_code > 0)
		rc = resp->exit_code;
	else if (resp->signal > 0)
		rc = 128 + resp->signal;
	else
		rc = status_from_text(resp->error);
	if (!resp->success) {
		snprintf(c->err, sizeof(c->err), "%s", resp->error);
		if (!c->keep_quiet)
			neg_log(LOG_ERR, "%s: %s", c->peer, resp->error);
	}
	c->self_failed = rc == 255;
	run_done(c, rc);
}

/* Queues a request of this phase; 0, or -1 with the call failed. */
static int
run_request(struct neg_run *c, int phase, const char *method, const struct proto_request *kw)
{
	char err[512];

	c->phase = phase;
	c->quiet = -1;
	c->refused[0] = c->skipped[0] = '\0';
	if (request_frame(&c->wq, method, kw, c->id, c->o->srv.max_frame, err, sizeof(err)) < 0) {
		c->wq.len = 0;
		run_fail(c, "%s", err);
		return -1;
	}
	return 0;
}

/* The one-shot call of 0.8: all input in the request, all output in the reply. */
static void
run_oneshot(struct neg_run *c)
{
	struct neg_cli *o = c->o;
	struct proto_request kw;
	char err[512];

	memset(&kw, 0, sizeof(kw));
	kw.argv = o->argv;
	kw.argc = o->argc;
	kw.base64 = 1;
	kw.timeout = o->timeout;
	if (o->infd >= 0 && !o->indata_read) {
		if ((o->input_shared && lseek(o->infd, 0, SEEK_SET) < 0) ||
		    cli_read_input(o, err, sizeof(err)) < 0) {
			run_own_fail(c, "cannot read the input (%s): %s", o->input,
			    o->input_shared ? strerror(errno) : err);
			return;
		}
		o->indata_read = 1;
	}
	if (o->infd >= 0) {
		kw.input = o->indata;
		kw.has_input = 1;
	}
	run_request(c, NEG_RUN_ONESHOT, "execute", &kw);
}

/* The streamed execute, once the callee said it streams. */
static void
run_stream(struct neg_run *c)
{
	struct proto_request kw;

	memset(&kw, 0, sizeof(kw));
	kw.argv = c->o->argv;
	kw.argc = c->o->argc;
	kw.timeout = c->o->timeout;
	kw.stream = NEG_STREAM_VERSION;
	kw.window = NEG_STREAM_WINDOW;
	kw.want_stdin = c->in_open = c->o->infd >= 0;
	c->r.raw_ok = 1;
	run_request(c, NEG_RUN_STREAM, "execute", &kw);
}

/*
 * Starts a call of method on fd.  With call, one request of method with
 * call's words and options, and one reply (a test's calls); without, execute
 * runs o's words as -e does (the handshake, then streamed or one-shot), and
 * any other method is one request without words.
 */
void
neg_run_start(struct neg_run *c, int fd, int flags, struct neg_cli *o, const char *peer,
    const char *method, const struct proto_request *call)
{
	struct proto_request kw;

	memset(c, 0, sizeof(*c));
	c->fd = fd;
	c->flags = flags;
	c->o = o;
	c->peer = peer;
	c->method = method;
	/*
	 * -t from the call's start; for execute the callee enforces it, and we wait
	 * for it to kill the command and tell us, and a little more
	 */
	c->wait = o->timeout <= 0 ? -1 : neg_now() + (int64_t)(o->timeout * 1000) +
	    (strcmp(method, "execute") == 0 ? NEG_KILL_GRACE_MS + NEG_REPLY_MARGIN_MS : 0);
	proto_reader_init(&c->r, o->srv.max_frame);
	drop_pending(fd);
	neg_set_nonblock(fd);
	memset(&kw, 0, sizeof(kw));
	kw.new_caller = 1;
	if (call != NULL || strcmp(method, "execute") != 0)
		run_request(c, NEG_RUN_CALL, method, call);
	else if (o->srv.max_frame >= NEG_STREAM_MIN_FRAME)
		/* says we are the channel's caller now, and asks whether the callee streams */
		run_request(c, NEG_RUN_HELLO, "version", &kw);
	else
		run_oneshot(c);
}

/* Queues the cancel frames level calls for (1 TERM, 2 KILL). */
static void
run_cancel_frames(struct neg_run *c, int level)
{
	while (c->cancelled < level) {
		c->cancelled++;
		proto_stream_cancel(&c->wq, c->id, c->cancelled == 2);
	}
	c->in_open = 0;
}

/*
 * A signal's cancel: a streamed call's command gets TERM (and the call the
 * grace period and a reply's time), or KILL and the call ends; a call that
 * does not stream has nothing to cancel and ends at once.
 */
void
neg_run_cancel(struct neg_run *c, int level)
{
	int64_t until = neg_now() + NEG_KILL_GRACE_MS + NEG_REPLY_MARGIN_MS;

	if (c->phase == NEG_RUN_DONE || c->cancelled >= level)
		return;
	if (c->phase != NEG_RUN_STREAM) {
		snprintf(c->err, sizeof(c->err), "cancelled");
		c->self_failed = 1;
		run_done(c, 255);
		return;
	}
	run_cancel_frames(c, level);
	if (c->cancelled == 2) {
		run_fail(c, "cancelled; the command is killed");
		return;
	}
	if (c->wait < 0 || c->wait > until)
		c->wait = until;
}

/* Sends what is queued, at most one write unit (data frames are queued one at a time). */
static void
run_send(struct neg_run *c, short revents)
{
	size_t len = c->wq.len - c->wqoff;
	ssize_t n;

	if (len == 0)
		return;
	/* a port whose host is not there yet: wait for it (until the deadline) */
	if ((revents & POLLHUP) && (c->flags & NEG_CALL_PORT) && !c->sent) {
		c->away = 1;
		c->away_until = neg_now() + 50;
		return;
	}
	if (c->phase != NEG_RUN_STREAM && (revents & (POLLERR | POLLNVAL | POLLHUP))) {
		run_fail(c, "the connection was closed while sending");
		return;
	}
	n = write(c->fd, c->wq.p + c->wqoff, len < NEG_WRITE_CHUNK ? len : NEG_WRITE_CHUNK);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n < 0) {
		run_fail(c, "cannot send: %s", strerror(errno));
		return;
	}
	/* the host is here: away's past deadline would be every turn's wake, a spin */
	c->sent = 1;
	c->away = 0;
	c->wqoff += (size_t)n;
	if (c->wqoff == c->wq.len)
		c->wq.len = c->wqoff = 0;
}

/* A frame of a streamed call: 1 for the final reply (in c->resp), 0 to go on, -1 output failed. */
static int
stream_frame(struct neg_run *c)
{
	struct proto_stream f;
	char err[256];
	int rc = proto_stream_parse(&f, c->r.body.p, c->r.body.len, c->r.json_len, err, sizeof(err));

	if (rc == 1 && strcmp(f.id, c->id) != 0) {
		neg_log(LOG_DEBUG, "dropping a stream frame of an earlier call (id %s)", f.id);
		return 0;
	}
	if (rc == 1) {
		switch (f.kind) {
		case PROTO_S_DATA:
			if (f.fd == 0)
				break;
			if (!c->gone && run_put(c, f.fd, f.data, f.len) < 0)
				return -1;
			c->taken += f.len;
			break;
		case PROTO_S_CREDIT:
			c->in_credit += f.credit;
			break;
		case PROTO_S_EOF:
			/* the command closed its stdin: the rest of ours would be dropped */
			c->in_open = 0;
			break;
		}
		return 0;
	}
	if (rc < 0 || proto_response_parse(&c->resp, c->r.body.p, c->r.body.len, err,
	    sizeof(err)) < 0) {
		neg_log(LOG_INFO, "skipping a frame that does not parse: %s", err);
		return 0;
	}
	if (strcmp(c->resp.id, c->id) == 0)
		return 1;
	neg_log(LOG_INFO, "dropping a reply that is not ours (id %s)",
	    c->resp.id[0] ? c->resp.id : "none");
	proto_response_free(&c->resp);
	return 0;
}

/* The reply of a one-shot execute: stderr, then stdout, then the outcome. */
static void
oneshot_reply(struct neg_run *c)
{
	const struct proto_response *resp = &c->resp;
	size_t len;
	int out = 0;

	if (resp->stderr_text.len)
		run_put(c, 2, resp->stderr_text.p, resp->stderr_text.len);
	if (resp->success || resp->result.len) {
		if (resp->base64) {
			out = run_put(c, 1, resp->result.p, resp->result.len);
		} else {
			/* a 0.8 peer: print as its CLI does, trailing white space removed */
			len = resp->result.len;
			while (len > 0 && isspace((unsigned char)resp->result.p[len - 1]))
				len--;
			out = run_put(c, 1, resp->result.p, len) < 0 ? -1 : run_put(c, 1, "\n", 1);
		}
	}
	run_outcome(c, out < 0);
}

/* One frame that arrived, as the phase takes it. */
static void
run_frame(struct neg_run *c)
{
	int ev, stream;

	if (c->phase == NEG_RUN_STREAM) {
		ev = stream_frame(c);
		if (ev < 0 && !c->gone) {
			/* like ssh when its stdout goes: the command is stopped */
			c->gone = 1;
			snprintf(c->err, sizeof(c->err), "cannot write to standard output: %s",
			    strerror(errno));
			if (!c->keep_quiet)
				neg_log(LOG_ERR, "%s", c->err);
			run_cancel_frames(c, 1);
		}
		if (ev == 1) {
			c->have_resp = 1;
			if (c->gone) {
				c->self_failed = 1;
				run_done(c, 255);
			} else {
				run_outcome(c, 0);
			}
		}
		return;
	}
	if (proto_response_parse(&c->resp, c->r.body.p, c->r.body.len, c->skipped,
	    sizeof(c->skipped)) < 0) {
		neg_log(LOG_INFO, "skipping a reply that does not parse: %s", c->skipped);
		return;
	}
	if (!call_reply(c->id, &c->resp, c->refused, sizeof(c->refused), &c->quiet))
		return;
	if (c->phase == NEG_RUN_HELLO) {
		stream = c->resp.success && c->resp.stream == NEG_STREAM_VERSION;
		neg_log(LOG_DEBUG, "%s: %s %s", c->peer, c->resp.success ? "version" : "no version:",
		    c->resp.success ? c->resp.result.p : c->resp.error);
		proto_response_free(&c->resp);
		if (stream)
			run_stream(c);
		else
			run_oneshot(c);
		return;
	}
	c->have_resp = 1;
	if (c->phase == NEG_RUN_ONESHOT) {
		oneshot_reply(c);
	} else if (strcmp(c->method, "list_commands") != 0) {
		/* a call of another method (a test's): its reply is the caller's to read */
		run_done(c, c->resp.success ? 0 : 255);
	} else if (!c->resp.success || c->resp.result_kind != PROTO_J_ARRAY) {
		run_fail(c, "%s", c->resp.success ? "the reply is not a list" : c->resp.error);
	} else {
		sort_strings(c->resp.list, c->resp.nlist);
		run_done(c, 0);
	}
}

/* Reads what the channel has and feeds it through the reader to run_frame. */
static void
run_read(struct neg_run *c)
{
	char tmp[NEG_READ_CHUNK];
	size_t used, off;
	ssize_t n;
	int ev;

	n = read(c->fd, tmp, sizeof(tmp));
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		run_fail(c, n == 0 ? "the other side closed the connection before replying" :
		    "cannot receive: %s", strerror(errno));
		return;
	}
	if (c->refused[0])
		c->quiet = neg_now() + NEG_NULL_QUIET_MS;
	for (off = 0; off < (size_t)n && c->phase != NEG_RUN_DONE; off += used) {
		ev = proto_reader_feed(&c->r, tmp + off, (size_t)n - off, &used);
		if (ev == PROTO_ERROR) {
			neg_log(LOG_INFO, "skipping data that is no frame: %s", c->r.err);
			snprintf(c->skipped, sizeof(c->skipped), "%s", c->r.err);
		}
		if (ev == PROTO_FRAME)
			run_frame(c);
	}
	/* what we wrote is granted back, in steps: the window stays full */
	if (c->phase == NEG_RUN_STREAM && c->cancelled < 2 && c->taken >= NEG_STREAM_GRANT) {
		proto_stream_credit(&c->wq, c->id, c->taken);
		c->taken = 0;
	}
}

/* A few chunks of --input per wake-up, each queued only behind nothing, so that it leaves whole. */
static void
run_input(struct neg_run *c)
{
	char tmp[NEG_STREAM_CHUNK];
	size_t want;
	ssize_t n;
	int i;

	for (i = 0; i < NEG_READS_PER_WAKE && c->in_open && c->in_credit > 0 &&
	    c->wq.len == c->wqoff && c->phase == NEG_RUN_STREAM; i++) {
		want = c->in_credit < sizeof(tmp) ? c->in_credit : sizeof(tmp);
		n = c->o->input_shared ? pread(c->o->infd, tmp, want, c->inoff) :
		    read(c->o->infd, tmp, want);
		if (n > 0) {
			proto_stream_data(&c->wq, c->id, 0, tmp, (size_t)n);
			c->in_credit -= (size_t)n;
			c->inoff += n;
		} else if (n == 0) {
			proto_stream_eof(&c->wq, c->id, 0);
			c->in_open = 0;
		} else if (errno != EAGAIN && errno != EINTR) {
			neg_log(LOG_ERR, "cannot read the input (%s): %s", c->o->input, strerror(errno));
			run_cancel_frames(c, 1);
		}
		run_send(c, 0);
		if (n <= 0 || (size_t)n < want)
			break;
	}
}

/* A call's pollfds, each in its slot: the channel, and --input while it is read. */
enum { RUN_PFD_CHAN, RUN_PFD_INPUT, RUN_PFD_COUNT };

/* Fills the call's RUN_PFD_COUNT slots (fd -1: nothing awaited there); returns them, 0 once done. */
static int
run_pollfds(const struct neg_run *c, struct pollfd *p, int64_t now)
{
	if (c->phase == NEG_RUN_DONE)
		return 0;
	p[RUN_PFD_CHAN].fd = c->away && now < c->away_until ? -1 : c->fd;
	p[RUN_PFD_CHAN].events = POLLIN | (c->wq.len > c->wqoff ? POLLOUT : 0);
	p[RUN_PFD_CHAN].revents = 0;
	p[RUN_PFD_INPUT].fd = c->phase == NEG_RUN_STREAM && c->in_open && c->in_credit > 0 &&
	    c->wq.len == c->wqoff ? c->o->infd : -1;
	p[RUN_PFD_INPUT].events = POLLIN;
	p[RUN_PFD_INPUT].revents = 0;
	return RUN_PFD_COUNT;
}

/* When the call must be looked at again without an event (0: only on one). */
static int64_t
run_wake(const struct neg_run *c, int64_t now)
{
	int64_t w = c->wait < 0 ? 0 : c->wait;

	if (c->quiet >= 0)
		w = neg_min_deadline(w, c->quiet);
	if (c->away)
		w = neg_min_deadline(w, c->away_until);
	/* old guest kernels lose POLLOUT's wake-up: a port is tried again in short slices */
	if ((c->flags & NEG_CALL_PORT) && c->wq.len > c->wqoff)
		w = neg_min_deadline(w, now + 100);
	return w;
}

static void
run_io(struct neg_run *c, const struct pollfd *p, int n)
{
	short rev = n > RUN_PFD_CHAN && p[RUN_PFD_CHAN].fd >= 0 ? p[RUN_PFD_CHAN].revents : 0;

	if (c->away && rev == 0 && neg_now() >= c->away_until)
		rev = POLLOUT;	/* try again: the host may be there now */
	if (c->wq.len > c->wqoff && (rev & (POLLOUT | POLLHUP | POLLERR | POLLNVAL) ||
	    (c->flags & NEG_CALL_PORT)))
		run_send(c, rev);
	if (c->phase != NEG_RUN_DONE && n > RUN_PFD_INPUT && p[RUN_PFD_INPUT].revents)
		run_input(c);
	if (c->phase != NEG_RUN_DONE && !(c->away && !c->sent) && (rev & (POLLIN | POLLHUP | POLLERR)))
		run_read(c);
}

/* Deadlines: the reply that did not come, or the other side that was not there. */
static void
run_tick(struct neg_run *c)
{
	char err[512];

	if (c->phase == NEG_RUN_DONE)
		return;
	if (c->phase == NEG_RUN_STREAM) {
		if (expired(c->wait)) {
			run_cancel_frames(c, 2);
			run_fail(c, "no reply within the timeout");
		}
		return;
	}
	if (c->wq.len > c->wqoff) {
		if (expired(c->wait))
			run_fail(c, "%s", c->away && !c->sent ? "the other side is not connected "
			    "to the channel" : "timed out while sending");
		return;
	}
	if (call_overdue(c->refused, c->quiet, c->wait, c->skipped, err, sizeof(err)))
		run_fail(c, "%s", err);
}

/*
 * One turn of a CLI's loop over its calls: cancelling signals, the pollfds
 * of every call not done, one poll until the earliest deadline (or wake),
 * then each call's io and deadlines; wake 0 for none of the caller's own.
 * The fleet's loop and -e of one guest both turn this.
 */
void
neg_runs_turn(struct neg_run **v, size_t n, int64_t wake)
{
	static struct pollfd *p;
	static int *first;
	static size_t cap;
	int64_t now = neg_now();
	size_t i, np = 0, live = 0;
	/* the pipe emptied first: a signal after this leaves its byte, and the poll returns at once */
	int nsig = neg_cli_signalled();

	for (i = 0; i < n; i++) {
		if (nsig > 0)
			neg_run_cancel(v[i], nsig > 1 ? 2 : 1);
		live += v[i]->phase != NEG_RUN_DONE;
	}
	/* a signal may have ended the last of them: nothing to wait for but the caller's wake */
	if (live == 0 && wake == 0)
		return;
	/* every call's slots, then the self-pipe's */
	if (RUN_PFD_COUNT * n + 1 > cap) {
		cap = RUN_PFD_COUNT * n + 16;
		if ((p = realloc(p, cap * sizeof(*p))) == NULL ||
		    (first = realloc(first, cap * sizeof(*first))) == NULL)
			neg_die("out of memory");
	}
	for (i = 0; i < n; i++) {
		first[i] = (int)np;
		np += (size_t)run_pollfds(v[i], p + np, now);
		if (v[i]->phase != NEG_RUN_DONE)
			wake = neg_min_deadline(wake, run_wake(v[i], now));
	}
	first[n] = (int)np;
	if (selfpipe[0] >= 0) {
		p[np].fd = selfpipe[0];
		p[np].events = POLLIN;
		p[np++].revents = 0;
	}
	if (poll(p, (nfds_t)np, neg_poll_timeout(wake, now)) < 0) {
		if (errno != EINTR)
			for (i = 0; i < n; i++)
				if (v[i]->phase != NEG_RUN_DONE)
					run_fail(v[i], "poll failed: %s", strerror(errno));
		return;
	}
	for (i = 0; i < n; i++) {
		if (v[i]->phase == NEG_RUN_DONE)
			continue;
		run_io(v[i], p + first[i], first[i + 1] - first[i]);
		run_tick(v[i]);
	}
}

void
neg_run_free(struct neg_run *c)
{
	if (c->have_resp)
		proto_response_free(&c->resp);
	c->have_resp = 0;
	proto_reader_free(&c->r);
	buf_free(&c->wq);
}

/*
 * One call of a CLI to its end (method's reply in c, which the caller frees),
 * turned by the same loop as a fleet's (neg_runs_turn); wait, unless 0, is its
 * deadline instead of -t from its start.
 */
static int
cli_call(struct neg_run *c, int fd, int flags, struct neg_cli *o, const char *peer,
    const char *method, int64_t wait)
{
	struct neg_run *v = c;

	neg_run_start(c, fd, flags, o, peer, method, NULL);
	if (wait != 0)
		c->wait = wait;
	while (c->phase != NEG_RUN_DONE)
		neg_runs_turn(&v, 1, 0);
	return c->status;
}

/*
 * -e: runs o->argv on the other side and behaves like ssh: the command's stdout
 * and stderr on ours, its exit status as ours, 255 when negotiator failed.
 */
int
neg_cli_execute(int fd, int flags, struct neg_cli *o, const char *peer)
{
	struct neg_run c;
	int rc;

	neg_cli_signals(1);
	rc = cli_call(&c, fd, flags, o, peer, "execute", 0);
	neg_run_free(&c);
	neg_cli_signals(0);
	return rc;
}

/*
 * -c, -l: the other side's commands, sorted, one a line (control bytes
 * escaped: a name is one line); -t counts from the program's start, the
 * channel's discovery included.
 */
int
neg_cli_list(int fd, int flags, struct neg_cli *o, const char *peer)
{
	struct neg_run c;
	struct buf line = {0};
	size_t i;
	int rc;

	neg_cli_signals(1);
	rc = cli_call(&c, fd, flags, o, peer, "list_commands", o->deadline);
	for (i = 0; rc == 0 && i < c.resp.nlist; i++) {
		line.len = 0;
		neg_escape(&line, c.resp.list[i], strlen(c.resp.list[i]), 0);
		printf("%s\n", line.p);
	}
	buf_free(&line);
	neg_run_free(&c);
	if (rc == 0 && fflush(stdout) != 0)
		rc = stdout_failed();
	neg_cli_signals(0);
	return rc;
}
