/*
 * neg_host.c: negotiator-host, the hypervisor's side.
 *
 * As a client (-g, -c, -e) it finds a guest's host-to-guest channel socket and
 * calls the guest daemon through it.  As a daemon (-d) it serves the
 * guest-to-host channel of every running guest from one process and one poll
 * loop: guests are found under the channel directory in libvirt's layouts,
 * new and vanished ones are noticed through inotify (with a slow rescan as a
 * safety net), and each guest's commands run as jobs of that loop, so a slow
 * command of one guest never delays another.
 *
 * A guest's channel:  IDLE --connect ok--> UP --EOF/error--> IDLE (retry, backoff)
 *                     IDLE --refused (guest stopped)--> IDLE (retry, longer backoff)
 *                     any --socket gone from the directory--> removed
 */
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "neg_proto.h"

#define H2G_NAME "negotiator-host-to-guest.0"
#define G2H_NAME "negotiator-guest-to-host.0"
#define CHANNEL_DIR "/var/lib/libvirt/qemu/channel/target"
#define MAX_GUESTS 4096
#define MAX_NAME 256
#define RESCAN_MS 60000        /* the safety net behind inotify */
#define RESCAN_DEBOUNCE_MS 50
#define RETRY_MIN_MS 100
#define RETRY_MAX_MS 60000       /* a stopped guest's socket: inotify says when it is back */
#define STOP_GRACE_MS 5000
#define PER_GUEST_JOBS NEG_CHAN_MAXJOBS
#define TOTAL_JOBS 64
#define VIRSH_TIMEOUT_MS 5000

static const char usage_text[] =
"Usage: negotiator-host [OPTIONS] [GUEST_NAME]\n"
"\n"
"Communicate from a KVM/QEMU host with the negotiator daemons inside its guests,\n"
"or serve the guests' calls.\n"
"\n"
"  -g, --list-guests            list the running guests that have the channels\n"
"  -c, --list-commands          list the commands GUEST_NAME exposes to the host\n"
"  -e, --execute=COMMAND        run COMMAND (split like a shell would, no expansion)\n"
"                               inside GUEST_NAME; its output and exit status\n"
"                               become ours\n"
"  -d, --daemon                 serve every guest's calls (foreground, until SIGTERM)\n"
"  -t, --timeout=SECONDS        give up after this long (default 10, 0 = never)\n"
"      --channel-directory=DIR  where the channel sockets are (default\n"
"                               " CHANNEL_DIR ")\n"
"      --socket=PATH            call the guest through this host-to-guest socket\n"
"                               (no discovery; GUEST_NAME is then optional)\n"
"      --commands-directory=DIR the commands guests may run (default\n"
"                               /usr/lib/negotiator/commands)\n"
NEG_COMMON_USAGE
"Exit status of -e: the guest command's status when it failed, 0 on success,\n"
"255 when negotiator itself failed.\n";

enum { OPT_CHANNELS = NEG_OPT_OWN, OPT_SOCKET };

static const struct option longopts[] = {
	{ "list-guests", no_argument, NULL, 'g' },
	{ "list-commands", no_argument, NULL, 'c' },
	{ "channel-directory", required_argument, NULL, OPT_CHANNELS },
	{ "socket", required_argument, NULL, OPT_SOCKET },
	NEG_COMMON_LONGOPTS,
	{ NULL, 0, NULL, 0 }
};

/* ---- discovery ---- */

struct found {
	char name[MAX_NAME];
	char path[PATH_MAX];
	int want;	/* its name is still to be asked of virsh */
};

struct scan {
	struct found *v;
	size_t n, cap;
};

static void
scan_add(struct scan *s, const char *name, size_t namelen, const char *path)
{
	if (namelen == 0 || namelen >= MAX_NAME || s->n >= MAX_GUESTS)
		return;
	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 16;
		if ((s->v = realloc(s->v, s->cap * sizeof(*s->v))) == NULL)
			neg_die("out of memory");
	}
	memcpy(s->v[s->n].name, name, namelen);
	s->v[s->n].name[namelen] = '\0';
	snprintf(s->v[s->n].path, sizeof(s->v[s->n].path), "%s", path);
	s->v[s->n].want = 1;
	s->n++;
}

static int
is_socket(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISSOCK(st.st_mode);
}

/*
 * The guest name a libvirt channel directory stands for: "domain-NAME" (libvirt
 * ~1.3) or "domain-ID-NAME" (libvirt >= 3).
 */
static const char *
domain_dir_name(const char *d)
{
	const char *p;

	if (strncmp(d, "domain-", 7) != 0)
		return NULL;
	d += 7;
	for (p = d; *p >= '0' && *p <= '9'; p++)
		;
	if (p > d && *p == '-' && p[1] != '\0')
		return p + 1;
	return *d ? d : NULL;
}

/*
 * Finds every socket for `channel` under dir in the three layouts:
 * NAME.CHANNEL, domain-NAME/CHANNEL and domain-ID-NAME/CHANNEL.
 */
static void
host_scan_channels(const char *dir, const char *channel, struct scan *s)
{
	char path[PATH_MAX];
	size_t clen = strlen(channel), len;
	struct dirent *e;
	const char *name;
	DIR *d;
	int n;

	s->n = 0;
	if ((d = opendir(dir)) == NULL)
		return;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		len = strlen(e->d_name);
		if ((name = domain_dir_name(e->d_name)) != NULL) {
			n = snprintf(path, sizeof(path), "%s/%s/%s", dir, e->d_name, channel);
			if (n > 0 && (size_t)n < sizeof(path) && is_socket(path))
				scan_add(s, name, strlen(name), path);
		} else if (len > clen + 1 && e->d_name[len - clen - 1] == '.' &&
		    strcmp(e->d_name + len - clen, channel) == 0) {
			n = snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
			if (n > 0 && (size_t)n < sizeof(path) && is_socket(path))
				scan_add(s, e->d_name, len - clen - 1, path);
		}
	}
	closedir(d);
}

/* Runs argv with stdout to b, bounded in time and size; returns its exit status or -1. */
static int
run_capture(char *const *argv, struct buf *b, int timeout_ms)
{
	struct neg_job j;
	struct pollfd p[3];
	int out[2], devnull, n;

	memset(&j, 0, sizeof(j));
	if (pipe2(out, O_CLOEXEC) < 0)
		return -1;
	fflush(NULL);
	if ((j.pid = fork()) < 0) {
		close(out[0]);
		close(out[1]);
		return -1;
	}
	if (j.pid == 0) {
		if ((devnull = open("/dev/null", O_RDWR)) < 0 || dup2(devnull, 0) < 0 ||
		    dup2(out[1], 1) < 0 || dup2(devnull, 2) < 0)
			_exit(127);
		execvp(argv[0], argv);
		_exit(127);
	}
	close(out[1]);
	neg_set_nonblock(out[0]);
	j.fd_in = j.fd_err = -1;
	j.fd_out = out[0];
	j.max_out = 4 << 20;
	j.deadline = neg_now() + timeout_ms;
	snprintf(j.name, sizeof(j.name), "%s", argv[0]);
	/* a short blocking wait of its own: discovery runs before serving, or on a rescan */
	while (!neg_job_done(&j)) {
		n = neg_job_pollfds(&j, p);
		poll(p, (nfds_t)n, 50);
		neg_job_io(&j, p, n);
		neg_job_reap(&j);
		neg_job_tick(&j, neg_now());
	}
	buf_add(b, j.out.p ? j.out.p : "", j.out.len);
	neg_job_free(&j);
	if (j.timed_out || !WIFEXITED(j.status))
		return -1;
	return WEXITSTATUS(j.status);
}

/* The value of attribute attr inside the tag text [s, e), or NULL. */
static int
xml_attr(const char *s, const char *e, const char *attr, char *out, size_t outlen)
{
	size_t alen = strlen(attr), n;
	const char *p, *q;
	char quote;

	for (p = s; p + alen + 2 < e; p++) {
		if ((p == s || p[-1] == ' ' || p[-1] == '\t' || p[-1] == '\n') &&
		    strncmp(p, attr, alen) == 0 && p[alen] == '=' &&
		    (p[alen + 1] == '\'' || p[alen + 1] == '"')) {
			quote = p[alen + 1];
			p += alen + 2;
			if ((q = memchr(p, quote, (size_t)(e - p))) == NULL)
				return 0;
			n = (size_t)(q - p);
			if (n >= outlen)
				return 0;
			memcpy(out, p, n);
			out[n] = '\0';
			return 1;
		}
	}
	return 0;
}

/*
 * Where virsh is installed, the domain names come from it: the running
 * domain's <channel type='unix'> whose target name is `channel` gives the
 * socket path, so truncated or odd directory names resolve to the real name.
 * Paths not found there keep the name read from the path.
 *
 * Each `virsh dumpxml` costs ~100 ms and the daemon's loop waits for it, so
 * only the entries still wanted are resolved, and first only through domains
 * whose name starts with the name read from the path (libvirt's directory
 * names are the domain's name, cut to 20 characters): one dumpxml per new
 * guest instead of one per running domain.  Domains that do not match are
 * asked only when a wanted path is still unresolved after that (a channel
 * path an administrator chose freely).
 */
static void
host_virsh_names(const char *channel, struct scan *s)
{
	static char virsh[] = "virsh", quiet[] = "-q", list[] = "list", onlynames[] = "--name",
	    dump[] = "dumpxml";
	char *list_argv[] = { virsh, quiet, list, onlynames, NULL };
	char *dump_argv[] = { virsh, quiet, dump, NULL, NULL };
	char src[PATH_MAX], tname[MAX_NAME];
	struct buf names = {0}, xml = {0};
	char *name, *p, *end, *cs, *ce, *t;
	size_t i, wanted = 0;
	int pass, prefix;

	for (i = 0; i < s->n; i++)
		wanted += s->v[i].want != 0;
	if (wanted == 0 || run_capture(list_argv, &names, VIRSH_TIMEOUT_MS) != 0 || names.p == NULL)
		goto out;
	for (p = names.p; (p = strchr(p, '\n')) != NULL; )
		*p++ = '\0';
	for (pass = 0; pass < 2 && wanted > 0; pass++) {
		for (name = names.p; name < names.p + names.len && wanted > 0; name += strlen(name) + 1) {
			if (*name == '\0')
				continue;
			for (prefix = 0, i = 0; i < s->n && !prefix; i++)
				prefix = s->v[i].want &&
				    strncmp(name, s->v[i].name, strlen(s->v[i].name)) == 0;
			/* pass 0: the likely domains; pass 1: the others */
			if (prefix != (pass == 0))
				continue;
			neg_log(LOG_DEBUG, "virsh dumpxml %s (%zu sockets to name, pass %d)", name, wanted, pass);
			xml.len = 0;
			dump_argv[3] = name;
			if (run_capture(dump_argv, &xml, VIRSH_TIMEOUT_MS) != 0 || xml.p == NULL)
				continue;
			for (p = xml.p; (cs = strstr(p, "<channel")) != NULL; p = ce) {
				if ((ce = strstr(cs, "</channel>")) == NULL)
					break;
				src[0] = tname[0] = '\0';
				if ((t = strstr(cs, "<source")) != NULL && t < ce &&
				    (end = strchr(t, '>')) != NULL && end < ce)
					xml_attr(t, end, "path", src, sizeof(src));
				if ((t = strstr(cs, "<target")) != NULL && t < ce &&
				    (end = strchr(t, '>')) != NULL && end < ce)
					xml_attr(t, end, "name", tname, sizeof(tname));
				if (strcmp(tname, channel) != 0 || src[0] == '\0')
					continue;
				for (i = 0; i < s->n; i++)
					if (s->v[i].want && strcmp(s->v[i].path, src) == 0) {
						snprintf(s->v[i].name, sizeof(s->v[i].name), "%s", name);
						s->v[i].want = 0;
						wanted--;
					}
			}
		}
	}
out:
	buf_free(&names);
	buf_free(&xml);
}

static int
have_virsh(void)
{
	static const char *const dirs[] = { "/usr/bin/virsh", "/usr/local/bin/virsh",
	    "/bin/virsh", "/usr/sbin/virsh" };
	size_t i;

	if (getenv("NEGOTIATOR_NO_VIRSH"))
		return 0;
	for (i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++)
		if (access(dirs[i], X_OK) == 0)
			return 1;
	return 0;
}

/* Discovery with names: the directory, then virsh where it is installed. */
static void
host_discover(const char *dir, const char *channel, struct scan *s)
{
	host_scan_channels(dir, channel, s);
	if (s->n > 0 && have_virsh())
		host_virsh_names(channel, s);
}

/* Whether a process listens on the UNIX socket at path (from /proc/net/unix; no connect). */
static int
host_listening(const char *path)
{
	FILE *f = fopen("/proc/net/unix", "re");
	char line[PATH_MAX + 128], *p;
	unsigned long flags;
	char *f3;
	int found = -1, i;

	if (f == NULL)
		return -1;
	found = 0;
	while (!found && fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = '\0';
		/* Num RefCount Protocol Flags Type St Inode Path */
		for (f3 = line, i = 0; i < 3 && f3; i++)
			if ((f3 = strchr(f3, ' ')) != NULL)
				f3 += strspn(f3, " ");
		if (f3 == NULL || (flags = strtoul(f3, NULL, 16)) == 0 || !(flags & 0x10000))
			continue;
		if ((p = strrchr(line, ' ')) != NULL && strcmp(p + 1, path) == 0)
			found = 1;
	}
	fclose(f);
	return found;
}

/* Connects to a UNIX socket without blocking; -1 with errno on failure. */
static int
host_connect(const char *path)
{
	struct sockaddr_un sa;
	int fd, e;

	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sa.sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(sa.sun_path, path, strlen(path));
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS) {
		e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

/* ---- the CLI ---- */

static int
cmp_found(const void *a, const void *b)
{
	return strcmp(((const struct found *)a)->name, ((const struct found *)b)->name);
}

static int
list_guests(const char *dir)
{
	struct scan s = {0};
	size_t i;

	host_discover(dir, H2G_NAME, &s);
	qsort(s.v, s.n, sizeof(*s.v), cmp_found);
	for (i = 0; i < s.n; i++)
		if (host_listening(s.v[i].path) != 0)
			printf("%s\n", s.v[i].name);
	free(s.v);
	return fflush(stdout) == 0 ? 0 : 255;
}

/* Connects to the guest's host-to-guest socket, retrying while QEMU's backlog is full. */
static int
guest_socket(const char *dir, const char *guest, const char *given, int64_t deadline)
{
	struct scan s = {0};
	char path[PATH_MAX];
	size_t i;
	int fd;

	if (given) {
		snprintf(path, sizeof(path), "%s", given);
	} else {
		host_discover(dir, H2G_NAME, &s);
		for (i = 0; i < s.n && strcmp(s.v[i].name, guest) != 0; i++)
			;
		if (i == s.n) {
			free(s.v);
			neg_log(LOG_ERR, "no guest named %s: no %s channel for it under %s "
			    "(negotiator-host -g lists the guests)", guest, H2G_NAME, dir);
			return -1;
		}
		snprintf(path, sizeof(path), "%s", s.v[i].path);
		free(s.v);
	}
	for (;;) {
		if ((fd = host_connect(path)) >= 0)
			return fd;
		if (errno != EAGAIN || neg_now() >= deadline)
			break;
		poll(NULL, 0, 50);
	}
	if (errno == ECONNREFUSED || errno == ENOENT)
		neg_log(LOG_ERR, "%s is not running: nobody listens on %s", guest ? guest : "the guest",
		    path);
	else
		neg_log(LOG_ERR, "cannot connect to %s: %s", path, strerror(errno));
	return -1;
}

/* ---- the daemon ---- */

struct hguest {
	char name[MAX_NAME];
	char path[PATH_MAX];
	int up;
	int seen;
	int removed;
	int64_t retry_at;
	int retry_ms;
	struct neg_chan chan;
};

struct hostd {
	const char *dir;
	struct neg_server srv;
	struct hguest **g;
	size_t n;
	int ino;
	int64_t rescan_at;
	int64_t scan_every;
};

static void
hg_disconnect(struct hguest *g, int64_t now, int quiet)
{
	if (g->up && !quiet)
		neg_log(LOG_INFO, "%s: channel closed", g->name);
	neg_chan_reset(&g->chan);
	if (g->chan.fd >= 0)
		close(g->chan.fd);
	g->chan.fd = -1;
	g->up = 0;
	g->retry_at = now + g->retry_ms;
	g->retry_ms = g->retry_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : g->retry_ms * 2;
}

static void
hg_connect(struct hguest *g, int64_t now)
{
	int fd = host_connect(g->path);

	if (fd < 0) {
		/* a stopped guest's leftover socket: quietly try again later */
		neg_log(LOG_DEBUG, "%s: cannot connect to %s: %s", g->name, g->path, strerror(errno));
		g->retry_at = now + g->retry_ms;
		g->retry_ms = g->retry_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : g->retry_ms * 2;
		return;
	}
	g->chan.fd = fd;
	g->up = 1;
	g->retry_ms = RETRY_MIN_MS;
	neg_log(LOG_INFO, "%s: serving %s", g->name, g->path);
}

/* Watches dir and its domain-* subdirectories; a change there means a rescan. */
static void
hostd_watch(struct hostd *h)
{
	char path[PATH_MAX];
	struct dirent *e;
	DIR *d;
	const uint32_t mask = IN_CREATE | IN_DELETE | IN_MOVED_TO | IN_MOVED_FROM | IN_ATTRIB |
	    IN_DELETE_SELF | IN_MOVE_SELF;

	if (h->ino < 0)
		return;
	inotify_add_watch(h->ino, h->dir, mask);
	if ((d = opendir(h->dir)) == NULL)
		return;
	while ((e = readdir(d)) != NULL) {
		if (domain_dir_name(e->d_name) == NULL)
			continue;
		snprintf(path, sizeof(path), "%s/%s", h->dir, e->d_name);
		/* adding an existing watch again is a cheap no-op */
		inotify_add_watch(h->ino, path, mask);
	}
	closedir(d);
}

static void
hostd_rescan(struct hostd *h, int64_t now)
{
	struct scan s = {0};
	struct hguest *g;
	size_t i, k, n;

	hostd_watch(h);
	host_scan_channels(h->dir, G2H_NAME, &s);
	for (k = 0; k < h->n; k++)
		h->g[k]->seen = 0;
	/* sockets already served are marked seen and dropped from s: what stays is new */
	for (i = 0, n = 0; i < s.n; i++) {
		for (k = 0; k < h->n; k++)
			if (!h->g[k]->removed && strcmp(h->g[k]->path, s.v[i].path) == 0)
				break;
		if (k == h->n) {
			if (n != i)
				s.v[n] = s.v[i];
			n++;
			continue;
		}
		g = h->g[k];
		g->seen = 1;
		/* something changed in the directory: a guest that refused may be back */
		if (!g->up && !g->removed) {
			g->retry_ms = RETRY_MIN_MS;
			g->retry_at = now;
		}
	}
	s.n = n;
	/* virsh is asked only about sockets not seen before: ~100-200 ms per new guest */
	if (s.n > 0 && have_virsh())
		host_virsh_names(G2H_NAME, &s);
	for (i = 0; i < s.n; i++) {
		if (h->n >= MAX_GUESTS)
			break;
		g = neg_alloc(sizeof(*g));
		snprintf(g->name, sizeof(g->name), "%s", s.v[i].name);
		snprintf(g->path, sizeof(g->path), "%s", s.v[i].path);
		g->seen = 1;
		g->retry_ms = RETRY_MIN_MS;
		g->retry_at = now;
		neg_chan_init(&g->chan, -1, &h->srv, PER_GUEST_JOBS);
		g->chan.guest = g->name;
		if ((h->g = realloc(h->g, (h->n + 1) * sizeof(*h->g))) == NULL)
			neg_die("out of memory");
		h->g[h->n++] = g;
		neg_log(LOG_INFO, "found guest %s (%s)", g->name, g->path);
		hg_connect(g, now);
	}
	for (k = 0; k < h->n; k++) {
		g = h->g[k];
		if (!g->seen && !g->removed) {
			neg_log(LOG_INFO, "guest %s is gone", g->name);
			hg_disconnect(g, now, 1);
			g->removed = 1;
		}
	}
	free(s.v);
	h->rescan_at = now + h->scan_every;
}

/* Frees removed guests once their commands are reaped. */
static void
hostd_collect(struct hostd *h)
{
	size_t k, j;

	for (k = j = 0; k < h->n; k++) {
		if (h->g[k]->removed && !neg_chan_busy(&h->g[k]->chan)) {
			if (h->g[k]->chan.fd >= 0)
				close(h->g[k]->chan.fd);
			neg_chan_free(&h->g[k]->chan);
			free(h->g[k]);
		} else {
			h->g[j++] = h->g[k];
		}
	}
	h->n = j;
}

static int
host_daemon(const char *dir, struct neg_server *srv)
{
	struct hostd h;
	struct pollfd *p = NULL;
	size_t cap = 0, k, n, *first = NULL;
	int64_t now, wake, stop_at = 0;
	struct hguest *g;
	char evbuf[4096];
	int chld, stopping = 0;

	memset(&h, 0, sizeof(h));
	h.dir = dir;
	h.srv = *srv;
	h.scan_every = RESCAN_MS;
	if (neg_signals_init() < 0)
		neg_die("cannot set up signal handling: %s", strerror(errno));
	h.ino = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (h.ino < 0)
		neg_log(LOG_WARNING, "inotify is not available (%s): rescanning every %d s",
		    strerror(errno), 2);
	if (h.ino < 0)
		h.scan_every = 2000;
	neg_log(LOG_INFO, "negotiator-host %s serving guests under %s", NEG_VERSION, dir);
	hostd_rescan(&h, neg_now());
	for (;;) {
		now = neg_now();
		if (neg_got_sigterm && !stopping) {
			neg_log(LOG_INFO, "terminating: no new requests, %d commands running",
			    h.srv.running);
			stopping = 1;
			stop_at = now + STOP_GRACE_MS;
		}
		if (stopping) {
			for (k = 0; k < h.n && !neg_chan_busy(&h.g[k]->chan); k++)
				;
			if (k == h.n) {
				for (k = 0; k < h.n; k++)
					h.g[k]->removed = 1;
				hostd_collect(&h);
				free(h.g);
				free(p);
				free(first);
				return 0;
			}
			if (now >= stop_at) {
				for (k = 0; k < h.n; k++)
					neg_chan_reset(&h.g[k]->chan);
				stop_at = now + 3600000;
			}
		}
		if (neg_got_sighup) {
			neg_got_sighup = 0;
			neg_log(LOG_INFO, "SIGHUP: rescanning %s", dir);
			h.rescan_at = now;
		}
		if (!stopping && now >= h.rescan_at)
			hostd_rescan(&h, now);
		hostd_collect(&h);
		wake = stopping ? stop_at : h.rescan_at;
		n = 2;
		for (k = 0; k < h.n; k++)
			n += NEG_CHAN_FDS;
		if (n > cap) {
			cap = n * 2;
			if ((p = realloc(p, cap * sizeof(*p))) == NULL ||
			    (first = realloc(first, cap * sizeof(*first))) == NULL)
				neg_die("out of memory");
		}
		p[0].fd = neg_sigpipe_fd();
		p[0].events = POLLIN;
		p[1].fd = h.ino;
		p[1].events = POLLIN;
		p[0].revents = p[1].revents = 0;
		n = 2;
		for (k = 0; k < h.n; k++) {
			g = h.g[k];
			if (!g->up && !g->removed && !stopping && now >= g->retry_at)
				hg_connect(g, now);
			first[k] = n;
			n += (size_t)neg_chan_pollfds(&g->chan, p + n, !stopping);
			if (!g->up && !g->removed && !stopping)
				wake = neg_min_deadline(wake, g->retry_at);
			wake = neg_min_deadline(wake, neg_chan_wake(&g->chan));
		}
		if (poll(p, (nfds_t)n, neg_poll_timeout(wake, now)) < 0 && errno != EINTR)
			neg_die("poll failed: %s", strerror(errno));
		now = neg_now();
		chld = (p[0].revents & POLLIN) ? neg_signal_drain() : 0;
		if (p[1].revents & POLLIN) {
			while (read(h.ino, evbuf, sizeof(evbuf)) > 0)
				;
			if (h.rescan_at > now + RESCAN_DEBOUNCE_MS)
				h.rescan_at = now + RESCAN_DEBOUNCE_MS;
		}
		for (k = 0; k < h.n; k++) {
			g = h.g[k];
			if (neg_chan_io(&g->chan, p + first[k],
			    (int)((k + 1 < h.n ? first[k + 1] : n) - first[k])) < 0 && g->up)
				hg_disconnect(g, now, 0);
			if (chld)
				neg_chan_reap(&g->chan);
			neg_chan_tick(&g->chan, now);
		}
	}
}

int
main(int argc, char **argv)
{
	struct neg_cli o;
	const char *socket_path = NULL, *guest = NULL, *dir = CHANNEL_DIR;
	int c, fd, rc;
	int64_t deadline;

	opterr = 0;	/* one line of our own instead of getopt's two */
	neg_progname = "negotiator-host";
	neg_cli_init(&o, usage_text, TOTAL_JOBS);
	while ((c = getopt_long(argc, argv, "gce:dt:vqh", longopts, NULL)) != -1) {
		if (neg_cli_option(&o, c, c == '?' ? argv[(optind > argc ? argc : optind) - 1] : optarg))
			continue;
		if (c == 'g' || c == 'c')
			o.mode = c;
		else if (c == OPT_CHANNELS)
			dir = optarg;
		else if (c == OPT_SOCKET)
			socket_path = optarg;
		else
			neg_cli_option(&o, '?', argv[optind - 1]);
	}
	if (optind < argc)
		guest = argv[optind++];
	if (optind < argc)
		neg_die("unexpected argument '%s' (give one guest name)", argv[optind]);
	if (o.mode == 0) {
		fputs(usage_text, stdout);
		return 0;
	}
	neg_cli_verbosity(&o);
	if (o.mode == 'g')
		return list_guests(dir);
	if (o.mode == 'd')
		return host_daemon(dir, &o.srv);
	if (guest == NULL && socket_path == NULL)
		neg_die("give the name of a guest (negotiator-host -g lists them) or --socket PATH");
	neg_cli_prepare(&o);
	signal(SIGPIPE, SIG_IGN);
	deadline = o.deadline >= 0 ? o.deadline : neg_now() + 3600000;
	if ((fd = guest_socket(dir, guest, socket_path, deadline)) < 0) {
		neg_cli_free(&o);
		return 255;
	}
	if (o.mode == 'c')
		rc = neg_cli_list(fd, 0, &o, guest ? guest : socket_path);
	else
		rc = neg_cli_execute(fd, 0, &o, guest ? guest : socket_path);
	close(fd);
	neg_cli_free(&o);
	return rc;
}
