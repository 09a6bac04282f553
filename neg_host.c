/*
 * neg_host.c: negotiator-host, the hypervisor's side.
 *
 * As a client (-g, -c, -e) it finds a guest's host-to-guest channel socket and
 * calls the guest daemon through it, or calls many guests at once (a fleet:
 * --all, patterns, several names) in one poll loop, their output prefixed
 * line by line or as JSON lines.  As a daemon (-d) it serves the
 * guest-to-host channel of every running guest from one process and one poll
 * loop: guests are found under the channel directory in libvirt's layouts,
 * new and vanished ones are noticed through inotify (with a slow rescan as a
 * safety net), and each guest's commands run as jobs of that loop, so a slow
 * command of one guest never delays another.
 *
 * A guest's channel:  IDLE --connect ok--> UP --EOF/error--> IDLE (retry, backoff)
 *                     IDLE --refused (guest stopped)--> IDLE (retry, longer backoff)
 *                     IDLE --out of descriptors--> IDLE (said once, retry)
 *                     any --socket gone from the directory, or replaced--> removed
 * Its name:           first connect ok --> WAITING --round starts--> ASKING
 *                     --virsh names it, or the round ends--> SETTLED (served)
 *                     (a socket nobody listens on is settled with its path's name
 *                     and asked about when it first answers; each appearance of a
 *                     socket is asked about once, never at rescans)
 *
 * virsh runs as a job of the loop, like a guest's command, and is killed at
 * HOST_VIRSH_TIMEOUT_MS: a hung virsh delays only the naming of new guests.
 */
#include <sys/inotify.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "neg_proto.h"


static const char usage_text[] =
"Usage: negotiator-host [OPTIONS] [GUEST_NAME]\n"
"       negotiator-host [OPTIONS] -e COMMAND|-c --all|GUEST_NAME|PATTERN...\n"
"\n"
"Communicate from a KVM/QEMU host with the negotiator daemons inside its guests,\n"
"or serve the guests' calls.\n"
"\n"
"  -g, --list-guests            list the running guests that have the channels\n"
"  -c, --list-commands          list the commands GUEST_NAME exposes to the host\n"
"  -e, --execute=COMMAND        run COMMAND (split like a shell would, no expansion)\n"
"                               inside GUEST_NAME; its output and exit status\n"
"                               become ours\n"
"      --all                    -e, -c: every running guest (as -g lists them);\n"
"                               several names, or patterns such as 'web-*', select\n"
"                               some: output is then prefixed 'GUEST: ' per line\n"
"      --parallel=N             calls at once to several guests (default 32)\n"
"      --no-prefix              several guests' output as raw bytes, unprefixed\n"
"      --json                   one JSON line per guest (-e, -c) or guest (-g)\n"
"  -d, --daemon                 serve every guest's calls (foreground, until SIGTERM)\n"
"  -t, --timeout=SECONDS        give up after this long (default 10, 0 = never)\n"
"      --channel-directory=DIR  where the channel sockets are (default\n"
"                               " HOST_CHANNEL_DIR ")\n"
"      --socket=PATH            call the guest through this host-to-guest socket\n"
"                               (no discovery; GUEST_NAME is then optional)\n"
"      --commands-directory=DIR the commands guests may run (default\n"
"                               /usr/lib/negotiator/commands)\n"
NEG_COMMON_USAGE
"Exit status of -e: the guest command's status when it failed, 0 on success,\n"
"255 when negotiator itself failed; of several guests: 0 when all succeeded,\n"
"255 when negotiator failed for any, else the highest status (and a summary\n"
"line on stderr names the guests that failed).\n";

enum { OPT_CHANNELS = NEG_OPT_OWN, OPT_SOCKET, OPT_ALL, OPT_PARALLEL, OPT_NO_PREFIX, OPT_JSON };

static const struct option longopts[] = {
	{ "list-guests", no_argument, NULL, 'g' },
	{ "list-commands", no_argument, NULL, 'c' },
	{ "channel-directory", required_argument, NULL, OPT_CHANNELS },
	{ "socket", required_argument, NULL, OPT_SOCKET },
	{ "all", no_argument, NULL, OPT_ALL },
	{ "parallel", required_argument, NULL, OPT_PARALLEL },
	{ "no-prefix", no_argument, NULL, OPT_NO_PREFIX },
	{ "json", no_argument, NULL, OPT_JSON },
	NEG_COMMON_LONGOPTS,
	{ NULL, 0, NULL, 0 }
};

/* ---- discovery ---- */

struct found {
	char name[HOST_MAX_NAME];
	char path[PATH_MAX];
	dev_t dev;	/* the socket file: a new one at a known path is a new appearance */
	ino_t ino;
	int want;	/* its name is still to be asked of virsh */
	int up;		/* a process listens on it (host_listening) */
};

struct scan {
	struct found *v;
	size_t n, cap;
};

static void
scan_add(struct scan *s, const char *name, size_t namelen, const char *path, const struct stat *st)
{
	if (namelen == 0 || namelen >= HOST_MAX_NAME || s->n >= HOST_MAX_GUESTS)
		return;
	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 16;
		if ((s->v = realloc(s->v, s->cap * sizeof(*s->v))) == NULL)
			neg_die("out of memory");
	}
	memcpy(s->v[s->n].name, name, namelen);
	s->v[s->n].name[namelen] = '\0';
	snprintf(s->v[s->n].path, sizeof(s->v[s->n].path), "%s", path);
	s->v[s->n].dev = st->st_dev;
	s->v[s->n].ino = st->st_ino;
	s->v[s->n].want = 1;
	s->n++;
}

static int
is_socket(const char *path, struct stat *st)
{
	return stat(path, st) == 0 && S_ISSOCK(st->st_mode);
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
	struct stat st;
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
			if (n > 0 && (size_t)n < sizeof(path) && is_socket(path, &st))
				scan_add(s, name, strlen(name), path, &st);
		} else if (len > clen + 1 && e->d_name[len - clen - 1] == '.' &&
		    strcmp(e->d_name + len - clen, channel) == 0) {
			n = snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
			if (n > 0 && (size_t)n < sizeof(path) && is_socket(path, &st))
				scan_add(s, e->d_name, len - clen - 1, path, &st);
		}
	}
	closedir(d);
}

/* Whether virsh is to be asked for names at all (it is run through PATH, like any helper). */
static int
virsh_wanted(void)
{
	const char *no = getenv("NEGOTIATOR_NO_VIRSH");

	return !(no && *no && strcmp(no, "0") != 0);
}

/* Starts `virsh -q VERB [NAME]` as a job of the caller's loop, killed (no grace) at the deadline. */
static int
virsh_start(struct neg_job *j, const char *verb, const char *name, int64_t deadline)
{
	char virsh[] = "virsh", quiet[] = "-q", list[] = "list", onlynames[] = "--name",
	    dump[] = "dumpxml", dname[HOST_MAX_NAME], err[256];
	char *list_argv[] = { virsh, quiet, list, onlynames, NULL };
	char *dump_argv[] = { virsh, quiet, dump, dname, NULL };
	struct neg_spawn sp;

	memset(&sp, 0, sizeof(sp));
	sp.path = virsh;
	sp.inherit = 1;
	sp.max_out = HOST_VIRSH_MAX_OUT;
	sp.deadline = deadline;
	snprintf(dname, sizeof(dname), "%s", name ? name : "");
	neg_log(LOG_DEBUG, "virsh -q %s %s", verb, name ? name : "--name");
	if (neg_job_spawn(j, &sp, strcmp(verb, "list") == 0 ? list_argv : dump_argv, err,
	    sizeof(err)) == 0)
		return 0;
	/* not installed is the usual case of a host without libvirt: names then come from paths */
	neg_log(errno == ENOENT ? LOG_DEBUG : LOG_WARNING, "%s", err);
	return -1;
}

/* A finished virsh job's exit status, or -1 (killed at its deadline, or by a signal). */
static int
virsh_status(const struct neg_job *j)
{
	if (j->timed_out || !WIFEXITED(j->status))
		return -1;
	return WEXITSTATUS(j->status);
}

/*
 * Copies the value of attribute attr inside the tag text [s, e) to out: 1, or
 * 0 when the tag has no such attribute or its value does not fit in outlen.
 */
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
 * The socket path of the <channel type='unix'> whose target name is `channel`
 * in a domain's XML (virsh dumpxml); 0 when it has none (or none bound yet).
 */
static int
xml_channel_path(const char *xml, const char *channel, char *src, size_t srclen)
{
	char tname[HOST_MAX_NAME];
	const char *p, *cs, *ce, *t, *end;

	for (p = xml; p && (cs = strstr(p, "<channel")) != NULL; p = ce) {
		if ((ce = strstr(cs, "</channel>")) == NULL)
			break;
		src[0] = tname[0] = '\0';
		if ((t = strstr(cs, "<source")) != NULL && t < ce &&
		    (end = strchr(t, '>')) != NULL && end < ce)
			xml_attr(t, end, "path", src, srclen);
		if ((t = strstr(cs, "<target")) != NULL && t < ce &&
		    (end = strchr(t, '>')) != NULL && end < ce)
			xml_attr(t, end, "name", tname, sizeof(tname));
		if (strcmp(tname, channel) == 0 && src[0] != '\0')
			return 1;
	}
	src[0] = '\0';
	return 0;
}

/*
 * Runs virsh VERB [NAME] to its end or the deadline (the CLI's lookups, before
 * any call): its stdout in b; its exit status, -1 when it failed or could not
 * run, -2 when the deadline came first (it is killed then).  One poll loop
 * over its pipes and the self-pipe: SIGCHLD reaps it; SIGINT, SIGTERM or
 * SIGHUP kill it first (it runs in a session of its own, where the terminal's
 * signals do not reach it), and the signal then acts as it would have.
 */
enum { PFD_VIRSH_SIG, PFD_VIRSH_JOB, PFD_VIRSH_COUNT = PFD_VIRSH_JOB + NEG_JOB_FDS };

static int
run_virsh(const char *verb, const char *name, struct buf *b, int64_t deadline)
{
	struct neg_job j;
	struct pollfd p[PFD_VIRSH_COUNT];
	int64_t now = neg_now(), wake;
	unsigned sigs;
	int n, rc;

	if (now + HOST_VIRSH_TIMEOUT_MS < deadline)
		deadline = now + HOST_VIRSH_TIMEOUT_MS;
	neg_cli_signals(1);
	if (virsh_start(&j, verb, name, deadline) < 0) {
		neg_cli_signals(0);
		return -1;
	}
	while (!neg_job_done(&j)) {
		now = neg_now();
		/* killed at the deadline; a process stuck in the kernel is not waited for */
		if (j.signalled && now >= deadline + HOST_VIRSH_REAP_MS)
			break;
		p[PFD_VIRSH_SIG].fd = neg_sigpipe_fd();
		p[PFD_VIRSH_SIG].events = POLLIN;
		p[PFD_VIRSH_SIG].revents = 0;
		n = neg_job_pollfds(&j, p + PFD_VIRSH_JOB);
		wake = neg_job_wake(&j);
		if (j.signalled)
			wake = neg_min_deadline(wake, deadline + HOST_VIRSH_REAP_MS);
		if (poll(p, (nfds_t)(PFD_VIRSH_JOB + n), neg_poll_timeout(wake, now)) < 0 &&
		    errno != EINTR)
			break;
		/* whatever poll said: neg_cli_signalled may have read the byte already */
		sigs = neg_signal_drain();
		if (neg_cli_signalled())
			neg_job_kill(&j, neg_now());
		neg_job_io(&j, p + PFD_VIRSH_JOB, n);
		if (sigs & NEG_SIG(SIGCHLD))
			neg_job_reap(&j);
		neg_job_tick(&j, neg_now());
	}
	buf_add(b, j.out.p ? j.out.p : "", j.out.len);
	rc = j.timed_out ? -2 : neg_job_done(&j) ? virsh_status(&j) : -1;
	if (j.err.len > 0 && rc > 0)
		neg_log(LOG_DEBUG, "virsh %s %s: %.*s", verb, name ? name : "", (int)j.err.len, j.err.p);
	neg_job_free(&j);
	neg_cli_signals(0);
	return rc;
}

/*
 * -g's names, where virsh is there: one `virsh list`, then a dumpxml of the
 * domains whose names start with a name read from a path (libvirt's directory
 * names are the domain's name, cut to 20 characters), and only if a path is
 * still unresolved, of the others (a channel path chosen freely).  Paths not
 * found keep the name read from the path.
 */
static void
host_virsh_names(const char *channel, struct scan *s, int64_t deadline)
{
	char src[PATH_MAX];
	struct buf names = {0}, xml = {0};
	char *name, *p;
	size_t i, wanted = s->n;
	int pass, prefix;

	if (wanted == 0 || run_virsh("list", NULL, &names, deadline) != 0 || names.p == NULL)
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
			xml.len = 0;
			if (run_virsh("dumpxml", name, &xml, deadline) != 0 ||
			    !xml_channel_path(xml.p, channel, src, sizeof(src)))
				continue;
			for (i = 0; i < s->n; i++)
				if (s->v[i].want && strcmp(s->v[i].path, src) == 0) {
					snprintf(s->v[i].name, sizeof(s->v[i].name), "%s", name);
					s->v[i].want = 0;
					wanted--;
				}
		}
	}
out:
	buf_free(&names);
	buf_free(&xml);
}

/* A socket path as the kernel would have it (realpath of its directory), and its guest. */
struct lkey {
	char *key;
	struct found *g;
};

static int
cmp_lkey(const void *a, const void *b)
{
	return strcmp(((const struct lkey *)a)->key, ((const struct lkey *)b)->key);
}

static int
cmp_key_lkey(const void *key, const void *b)
{
	return strcmp(key, ((const struct lkey *)b)->key);
}

/* path with its directory resolved (DIR/, a link, relative: as a listener bound it); malloc'ed */
static char *
canon_path(const char *path)
{
	const char *slash = strrchr(path, '/');
	char dir[PATH_MAX], real[PATH_MAX], *r;
	struct buf b = {0};

	if (slash == NULL)
		snprintf(dir, sizeof(dir), ".");
	else
		snprintf(dir, sizeof(dir), "%.*s", slash == path ? 1 : (int)(slash - path), path);
	if (realpath(dir, real) == NULL)
		snprintf(real, sizeof(real), "%s", dir);
	buf_adds(&b, strcmp(real, "/") == 0 ? "" : real);
	buf_adds(&b, "/");
	buf_adds(&b, slash ? slash + 1 : path);
	if ((r = strdup(b.p)) == NULL)
		neg_die("out of memory");
	buf_free(&b);
	return r;
}

static int host_connect(const char *, long);

/*
 * Marks the sockets of s a process listens on (up), from one read of
 * /proc/net/unix (no connect; once for all, not once per guest: a thousand
 * guests would read it a thousand times).  Paths are compared with their
 * directories resolved, as the kernel shows the path a listener bound.  One
 * no line names (bound relative, or through another link) is probed with a
 * non-blocking connect: a stale socket refuses it.  Without /proc every one
 * is up.
 */
static void
host_listening(struct scan *s)
{
	FILE *f = fopen("/proc/net/unix", "re");
	char line[PATH_MAX + 128], *p;
	struct lkey *by, *hit;
	unsigned long flags;
	size_t k;
	int i, fd;

	for (k = 0; k < s->n; k++)
		s->v[k].up = f == NULL;
	if (f == NULL || s->n == 0 || (by = calloc(s->n, sizeof(*by))) == NULL) {
		if (f)
			fclose(f);
		return;
	}
	for (k = 0; k < s->n; k++) {
		by[k].key = canon_path(s->v[k].path);
		by[k].g = &s->v[k];
	}
	qsort(by, s->n, sizeof(*by), cmp_lkey);
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = '\0';
		/*
		 * Num RefCount Protocol Flags Type St Inode Path: seven fields, runs
		 * of spaces between them (Inode is padded), then one space and the
		 * path, which may hold spaces of its own
		 */
		for (p = line, i = 0; i < 7 && *p; i++) {
			p += strspn(p, " ");
			if (i == 3 && ((flags = strtoul(p, NULL, 16)) == 0 || !(flags & 0x10000)))
				break;	/* not listening */
			p += strcspn(p, " ");
		}
		if (i < 7 || *p != ' ')
			continue;
		if ((hit = bsearch(p + 1, by, s->n, sizeof(*by), cmp_key_lkey)) != NULL)
			hit->g->up = 1;
	}
	for (k = 0; k < s->n; k++) {
		free(by[k].key);
		if (by[k].g->up)
			continue;
		/* a listener shows up as connectable (or its backlog full); a stale file refuses */
		if ((fd = host_connect(by[k].g->path, LONG_MAX)) >= 0 || errno == EAGAIN)
			by[k].g->up = 1;
		if (fd >= 0)
			close(fd);
	}
	free(by);
	fclose(f);
}

/*
 * Connects to a UNIX socket without blocking; -1 with errno on failure.  A path
 * too long for a socket address (108 bytes with the NUL) is reached through
 * its directory, opened, as /proc/self/fd/N/NAME: nothing process-wide (no
 * fchdir) changes, so relative paths elsewhere keep their meaning.  Without
 * /proc that fails with ENAMETOOLONG.  A descriptor above fd_max is not used
 * (EMFILE).
 */
static int
host_connect(const char *path, long fd_max)
{
	struct sockaddr_un sa;
	char dir[PATH_MAX];
	const char *slash;
	size_t len = strlen(path);
	int fd = -1, dfd = -1, e, n;

	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	if (len < sizeof(sa.sun_path)) {
		memcpy(sa.sun_path, path, len);
	} else {
		if ((slash = strrchr(path, '/')) == NULL || (size_t)(slash - path) >= sizeof(dir)) {
			errno = ENAMETOOLONG;
			return -1;
		}
		memcpy(dir, path, (size_t)(slash - path));
		dir[slash - path] = '\0';
		if ((dfd = open(dir[0] ? dir : "/", O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0)
			return -1;
		n = snprintf(sa.sun_path, sizeof(sa.sun_path), "/proc/self/fd/%d%s", dfd, slash);
		if (n < 0 || (size_t)n >= sizeof(sa.sun_path) || access("/proc/self/fd", X_OK) < 0) {
			close(dfd);
			errno = ENAMETOOLONG;
			return -1;
		}
	}
	/* descriptors are allocated lowest first: the number says how many are open */
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) > fd_max) {
		close(fd);
		fd = -1;
		errno = EMFILE;
	}
	if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS) {
		e = errno;
		close(fd);
		fd = -1;
		errno = e;
	}
	e = errno;
	if (dfd >= 0)
		close(dfd);
	errno = e;
	return fd;
}

/* ---- the CLI ---- */

static int
cmp_found(const void *a, const void *b)
{
	return strcmp(((const struct found *)a)->name, ((const struct found *)b)->name);
}

/* -g: the running guests' names; --json: every guest's JSON line, with its socket and state. */
static int
list_guests(const char *dir, int64_t deadline, int json)
{
	struct scan s = {0};
	struct buf b = {0};
	size_t i;
	int up;

	host_scan_channels(dir, H2G_NAME, &s);
	if (s.n > 0 && virsh_wanted())
		host_virsh_names(H2G_NAME, &s, deadline);
	if (s.n > 1)
		qsort(s.v, s.n, sizeof(*s.v), cmp_found);
	host_listening(&s);
	for (i = 0; i < s.n; i++) {
		up = s.v[i].up;
		if (!json) {
			if (up) {
				b.len = 0;
				neg_escape(&b, s.v[i].name, strlen(s.v[i].name), 0);
				printf("%s\n", b.p);
			}
			continue;
		}
		b.len = 0;
		buf_adds(&b, "{\"guest\": ");
		proto_put_string(&b, s.v[i].name, strlen(s.v[i].name));
		buf_adds(&b, ", \"socket\": ");
		proto_put_string(&b, s.v[i].path, strlen(s.v[i].path));
		buf_addf(&b, ", \"state\": \"%s\"}\n", up ? "running" : "stopped");
		fwrite(b.p, 1, b.len, stdout);
	}
	buf_free(&b);
	free(s.v);
	return fflush(stdout) == 0 ? 0 : 255;
}

/*
 * The host-to-guest socket of the guest named `guest`: asked of virsh (one
 * dumpxml of that domain) where it is there, else (virsh does not know the
 * name, or its domain has no such channel bound) found under dir by the names
 * in the paths.  0, or -1 with the reason said.
 */
static int
guest_path(const char *dir, const char *guest, char *path, size_t pathlen, double timeout,
    int64_t deadline)
{
	struct buf xml = {0};
	struct scan s = {0};
	size_t i;
	int rc = -1;

	if (virsh_wanted()) {
		rc = run_virsh("dumpxml", guest, &xml, deadline);
		if (rc == -2 && neg_now() >= deadline) {
			buf_free(&xml);
			neg_log(LOG_ERR, "no answer about %s within the timeout (%g s): virsh dumpxml %s "
			    "did not finish (NEGOTIATOR_NO_VIRSH=1 looks under %s alone)", guest, timeout,
			    guest, dir);
			return -1;
		}
		if (rc == -2)
			neg_log(LOG_WARNING, "virsh dumpxml %s did not finish within %d s: looking under %s",
			    guest, HOST_VIRSH_TIMEOUT_MS / 1000, dir);
		rc = rc == 0 && xml_channel_path(xml.p, H2G_NAME, path, pathlen) ? 0 : -1;
		buf_free(&xml);
		if (rc == 0)
			return 0;
	}
	host_scan_channels(dir, H2G_NAME, &s);
	for (i = 0; i < s.n && strcmp(s.v[i].name, guest) != 0; i++)
		;
	if (i < s.n) {
		snprintf(path, pathlen, "%s", s.v[i].path);
		rc = 0;
	} else {
		neg_log(LOG_ERR, "no guest named %s: no %s channel for it under %s "
		    "(negotiator-host -g lists the guests)", guest, H2G_NAME, dir);
	}
	free(s.v);
	return rc;
}

/* Connects to the guest's host-to-guest socket, retrying while QEMU's backlog is full. */
static int
guest_socket(const char *dir, const char *guest, const char *given, double timeout,
    int64_t deadline)
{
	char path[PATH_MAX];
	int fd;

	if (given)
		snprintf(path, sizeof(path), "%s", given);
	else if (guest_path(dir, guest, path, sizeof(path), timeout, deadline) < 0)
		return -1;
	for (;;) {
		if ((fd = host_connect(path, LONG_MAX)) >= 0)
			return fd;
		if (errno != EAGAIN || neg_now() >= deadline)
			break;
		poll(NULL, 0, 50);
	}
	if (errno == ECONNREFUSED || errno == ENOENT)
		neg_log(LOG_ERR, "%s is not running: nobody listens on %s", guest ? guest : "the guest",
		    path);
	else if (errno == ENAMETOOLONG)
		neg_log(LOG_ERR, "cannot connect to %s: the path is longer than a UNIX socket address "
		    "holds (%zu bytes) and /proc/self/fd, the way around that, is not there", path,
		    sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
	else
		neg_log(LOG_ERR, "cannot connect to %s: %s", path, strerror(errno));
	return -1;
}

/* ---- descriptors ---- */

/*
 * The soft RLIMIT_NOFILE before host_raise_fd_limit raised it: every command
 * the host spawns gets it back (neg_child_restore_limits), since programs that
 * use select() break on descriptors past 1,024.  Kept out of neg.c so that the
 * guest, which never raises the limit, does not link setrlimit.
 */
static struct rlimit child_nofile;

static void
restore_nofile(void)
{
	setrlimit(RLIMIT_NOFILE, &child_nofile);
}

/*
 * Raises the soft limit on open descriptors to the hard one (a daemon that
 * serves many guests needs a few each); returns the limit now in force.
 */
static long
host_raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return -1;
	if (rl.rlim_cur < rl.rlim_max) {
		child_nofile = rl;
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
			neg_child_restore_limits = restore_nofile;
		else
			rl.rlim_cur = child_nofile.rlim_cur;
	}
	return rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > LONG_MAX ? LONG_MAX : (long)rl.rlim_cur;
}

/* ---- many guests from one CLI ---- */

/*
 * A fleet: the guests --all, patterns or several names select, each called
 * as -e or -c of one guest would call it (a neg_run), at most `parallel` at
 * once, in one poll loop (neg_runs_turn), each with its own -t from its
 * start.  Output is prefixed whole lines as they come (split past
 * HOST_FLEET_LINE), raw bytes (--no-prefix), or one JSON line per guest
 * when its call ends (--json, HOST_FLEET_KEEP of each stream kept).
 *
 * A member:  WAITING --a call slot, connected--> RUNNING --its run done--> DONE
 *            WAITING --refused, no socket, timed out connecting, a signal--> DONE
 */
enum { M_WAITING, M_RUNNING, M_DONE };
enum { OUT_PREFIX, OUT_RAW, OUT_JSON };

struct member {
	const struct found *g;
	struct buf shown;      /* its name as printed (neg_escape): a name can forge no line */
	int state;
	int fd;
	struct neg_run *run;   /* while RUNNING */
	int64_t t0, retry_at;  /* its first connect; the next while the backlog is full */
	struct buf line[3];    /* OUT_PREFIX: the unfinished line of stdout [1], stderr [2] */
	struct buf keep[3];    /* OUT_JSON: what is kept of them */
	int cut[3];            /* ... and whether more came */
	int status, self_failed, timed_out, exit_code, signal;
	char err[512];
	double elapsed;
};

struct fleet {
	struct member *m;
	size_t n;
	int out;               /* OUT_* */
	int out_failed;        /* our own output failed: no more calls */
	const char *method;    /* execute or list_commands, for members that never ran too */
	struct buf wb;         /* what one emit writes */
};

static struct fleet fl;

/* Writes fl.wb to fd; a failure is said once and stops the fleet. */
static int
fleet_write(int fd)
{
	int rc = neg_write_out(fd, fl.wb.p, fl.wb.len);

	fl.wb.len = 0;
	if (rc < 0 && !fl.out_failed) {
		neg_log(LOG_ERR, "cannot write to standard %s: %s", fd == 1 ? "output" : "error",
		    strerror(errno));
		fl.out_failed = 1;
	}
	return rc;
}

/*
 * Queues "NAME: LINE\n" of the member's unfinished line of fd, which it
 * empties; the line's control bytes escaped (tabs kept), so that a CR or a
 * terminal's escape sequence cannot make it look like another guest's.
 */
static void
fleet_line(struct member *m, int fd)
{
	buf_add(&fl.wb, m->shown.p, m->shown.len);
	buf_add(&fl.wb, ": ", 2);
	neg_escape(&fl.wb, m->line[fd].p ? m->line[fd].p : "", m->line[fd].len, 1);
	buf_add(&fl.wb, "\n", 1);
	m->line[fd].len = 0;
}

/* A call's output: whole lines prefixed, or kept for its JSON line. */
static int
fleet_emit(struct neg_run *c, int fd, const char *s, size_t len)
{
	struct member *m = c->ctx;
	struct buf *l = &m->line[fd];
	const char *nl;
	size_t take, room;

	/* what comes after our output failed has nowhere to go (the calls are being cancelled) */
	if (fl.out_failed)
		return 0;
	if (fl.out == OUT_RAW) {
		/* through fleet_write, so that a failure is said once and stops the fleet, as prefixed */
		buf_add(&fl.wb, s, len);
		fleet_write(fd);
		return 0;
	}
	if (fl.out == OUT_JSON) {
		room = HOST_FLEET_KEEP - m->keep[fd].len;
		buf_add(&m->keep[fd], s, len < room ? len : room);
		m->cut[fd] |= len > room;
		return 0;
	}
	while (len > 0) {
		nl = memchr(s, '\n', len);
		take = nl ? (size_t)(nl - s) : len;
		room = HOST_FLEET_LINE - l->len;
		if (take > room) {
			buf_add(l, s, room);
			fleet_line(m, fd);
			s += room;
			len -= room;
			continue;
		}
		buf_add(l, s, take);
		if (nl)
			fleet_line(m, fd);
		s += take + (nl != NULL);
		len -= take + (nl != NULL);
	}
	/* a failure is said once and stops the fleet (fleet_run cancels the calls), not each call */
	if (fl.wb.len)
		fleet_write(fd);
	return 0;
}

/*
 * The length of s without the character HOST_FLEET_KEEP may have cut in two:
 * a UTF-8 lead byte in the last 3 bytes whose sequence needs more than is there.
 */
static size_t
utf8_whole(const char *s, size_t len)
{
	size_t i, need;
	unsigned char c;

	for (i = 1; i <= 3 && i <= len; i++) {
		c = (unsigned char)s[len - i];
		if ((c & 0xc0) == 0x80)
			continue;	/* a continuation byte: its lead is further back */
		need = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
		return need > i ? len - i : len;
	}
	return len;
}

/*
 * A kept stream as two JSON fields: text when it is UTF-8, else base64 (the
 * _encoding says).  A cut stream is text when it is UTF-8 up to the cut, the
 * character cut in two left out.
 */
static void
json_stream(struct buf *b, const char *key, const struct buf *k, int cut)
{
	struct buf enc = {0};
	const char *s = k->p ? k->p : "";
	size_t len = cut ? utf8_whole(s, k->len) : k->len;
	int text = proto_utf8_valid(s, len);

	buf_addf(b, ", \"%s\": ", key);
	if (text) {
		proto_put_string(b, s, len);
	} else {
		proto_b64_encode(&enc, k->p, k->len);
		proto_put_string(b, enc.p, enc.len);
		buf_free(&enc);
	}
	buf_addf(b, ", \"%s_encoding\": \"%s\", \"%s_truncated\": %s", key, text ? "text" : "base64",
	    key, cut ? "true" : "false");
}

/* The member's JSON line: name, status, output or commands, error, elapsed seconds. */
static void
fleet_json(const struct member *m, const struct neg_run *c)
{
	size_t i;

	/* fl.method, not c's: a member that never started (c NULL) was still asked for -c */

	buf_adds(&fl.wb, "{\"guest\": ");
	proto_put_string(&fl.wb, m->g->name, strlen(m->g->name));
	buf_addf(&fl.wb, ", \"status\": %d", m->status);
	if (strcmp(fl.method, "execute") != 0) {
		buf_adds(&fl.wb, ", \"commands\": [");
		for (i = 0; c && c->have_resp && m->status == 0 && i < c->resp.nlist; i++) {
			buf_adds(&fl.wb, i ? ", " : "");
			proto_put_string(&fl.wb, c->resp.list[i], strlen(c->resp.list[i]));
		}
		buf_adds(&fl.wb, "]");
	} else {
		buf_addf(&fl.wb, m->exit_code >= 0 ? ", \"exit_code\": %d" : ", \"exit_code\": null",
		    m->exit_code);
		buf_addf(&fl.wb, m->signal > 0 ? ", \"signal\": %d" : ", \"signal\": null", m->signal);
		json_stream(&fl.wb, "stdout", &m->keep[1], m->cut[1]);
		json_stream(&fl.wb, "stderr", &m->keep[2], m->cut[2]);
	}
	buf_adds(&fl.wb, ", \"error\": ");
	if (m->err[0])
		proto_put_string(&fl.wb, m->err, strlen(m->err));
	else
		buf_adds(&fl.wb, "null");
	buf_addf(&fl.wb, ", \"elapsed\": %.3f}\n", m->elapsed);
	fleet_write(1);
}

/* The member's call is over (c NULL: it never started): its last lines, or its JSON line. */
static void
fleet_done(struct member *m, struct neg_run *c)
{
	size_t i;
	int fd;

	m->state = M_DONE;
	m->elapsed = m->t0 ? (double)(neg_now() - m->t0) / 1000 : 0;
	if (c) {
		m->status = c->status;
		m->self_failed = c->self_failed;
		snprintf(m->err, sizeof(m->err), "%s", c->err);
		m->timed_out = c->have_resp && c->resp.timed_out;
		m->signal = c->have_resp ? c->resp.signal : 0;
		/* the command's own status when it exited; none when killed, timed out, or not run */
		m->exit_code = c->have_resp && c->resp.success ? 0 : c->have_resp &&
		    c->resp.exit_code > 0 ? c->resp.exit_code : !m->self_failed && m->signal == 0 &&
		    c->have_resp ? m->status : -1;
	}
	if (fl.out == OUT_JSON) {
		fleet_json(m, c);
	} else if (fl.out == OUT_PREFIX) {
		for (fd = 1; fd <= 2; fd++)
			if (m->line[fd].len > 0) {
				fleet_line(m, fd);
				fleet_write(fd);
			}
		for (i = 0; c && c->have_resp && m->status == 0 && i < c->resp.nlist; i++) {
			buf_add(&fl.wb, m->shown.p, m->shown.len);
			buf_add(&fl.wb, ": ", 2);
			neg_escape(&fl.wb, c->resp.list[i], strlen(c->resp.list[i]), 0);
			buf_add(&fl.wb, "\n", 1);
			if (fl.wb.len > NEG_READ_CHUNK)
				fleet_write(1);
		}
		if (fl.wb.len)
			fleet_write(1);
	} else {
		for (i = 0; !fl.out_failed && c && c->have_resp && m->status == 0 &&
		    i < c->resp.nlist; i++) {
			neg_escape(&fl.wb, c->resp.list[i], strlen(c->resp.list[i]), 0);
			buf_add(&fl.wb, "\n", 1);
			if (fl.wb.len > NEG_READ_CHUNK)
				fleet_write(1);
		}
		if (fl.wb.len)
			fleet_write(1);
	}
	/*
	 * A call under way (or whose output we were writing) when our output
	 * failed: what it said is lost and the fleet cancelled it; neither a
	 * success nor the signal our cancel sent.
	 */
	if (c && fl.out_failed) {
		m->status = 255;
		m->self_failed = 1;
		m->timed_out = m->signal = 0;
		m->exit_code = -1;
		snprintf(m->err, sizeof(m->err), "cancelled (our output failed)");
	}
	for (fd = 0; fd < 3; fd++) {
		buf_free(&m->line[fd]);
		buf_free(&m->keep[fd]);
	}
}

/* A member that fails before its call: said (as -e of one guest would), then done. */
static void
fleet_fail(struct member *m, int quiet, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void
fleet_fail(struct member *m, int quiet, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(m->err, sizeof(m->err), fmt, ap);
	va_end(ap);
	if (!quiet)
		neg_log(LOG_ERR, "%s: %s", m->shown.p, m->err);
	m->status = 255;
	m->self_failed = 1;
	m->exit_code = -1;
	fleet_done(m, NULL);
}

/*
 * Connects a waiting member and starts its call; 1 if it runs, 0 if it is to
 * be tried again (backlog full; out of descriptors while others run), -1 if
 * it failed.
 */
static int
fleet_start(struct member *m, struct neg_cli *o, const char *method, long fd_max, size_t running)
{
	int64_t now = neg_now();
	int quiet = fl.out == OUT_JSON;

	if (m->t0 == 0)
		m->t0 = now;
	if ((m->fd = host_connect(m->g->path, fd_max)) < 0) {
		if (errno == EMFILE && running > 0)
			return 0;
		if (errno == EAGAIN && (o->timeout <= 0 || now < m->t0 + (int64_t)(o->timeout * 1000))) {
			m->retry_at = now + HOST_FLEET_RETRY_MS;
			return 0;
		}
		if (errno == ECONNREFUSED || errno == ENOENT)
			fleet_fail(m, quiet, "not running: nobody listens on %s", m->g->path);
		else if (errno == EAGAIN)
			fleet_fail(m, quiet, "cannot connect to %s: its backlog stayed full for the "
			    "timeout", m->g->path);
		else
			fleet_fail(m, quiet, "cannot connect to %s: %s", m->g->path, strerror(errno));
		return -1;
	}
	if ((m->run = calloc(1, sizeof(*m->run))) == NULL)
		neg_die("out of memory");
	neg_run_start(m->run, m->fd, 0, o, m->shown.p, method, NULL);
	m->run->emit = fleet_emit;
	m->run->ctx = m;
	m->run->keep_quiet = quiet;
	m->state = M_RUNNING;
	return 1;
}

/* The summary line of the failed members, and the fleet's exit status. */
static int
fleet_status(void)
{
	struct buf b = {0};
	size_t i, failed = 0, named = 0;
	int rc = 0;

	for (i = 0; i < fl.n; i++) {
		const struct member *m = &fl.m[i];

		if (m->status == 0)
			continue;
		failed++;
		rc = m->self_failed || rc == 255 ? 255 : m->status > rc ? m->status : rc;
		if (b.len > HOST_FLEET_SUMMARY)
			continue;
		named++;
		buf_addf(&b, "%s%s (", named > 1 ? ", " : "", m->shown.p);
		if (m->timed_out)
			buf_adds(&b, "timed out");
		else if (m->self_failed)
			buf_adds(&b, m->err);
		else if (m->signal > 0)
			buf_addf(&b, "killed by signal %d", m->signal);
		else
			buf_addf(&b, "exit status %d", m->status);
		buf_adds(&b, ")");
	}
	if (failed > named)
		buf_addf(&b, ", and %zu more", failed - named);
	if (failed)
		neg_log(LOG_ERR, "%zu of %zu guests failed: %s", failed, fl.n, b.p);
	buf_free(&b);
	return fl.out_failed ? 255 : rc;
}

/*
 * Runs -e (or -c: method list_commands) on every selected guest, at most
 * parallel at once; each member's outcome as -e of one guest gives it, then
 * the summary line and the fleet's status: 0 when all succeeded, 255 when
 * negotiator failed for any, else the highest status of a remote command.
 */
static int
fleet_run(struct neg_cli *o, const char *method, size_t parallel)
{
	struct neg_run **v;
	struct member *m;
	long fd_limit = host_raise_fd_limit(), fd_max;
	size_t i, next = 0, running = 0, nv;
	int64_t wake;
	int rc;

	/* as the daemon: a few descriptors stay free (stdio, --input, what libc opens) */
	fd_max = fd_limit < 0 ? LONG_MAX :
	    fd_limit - (fd_limit / 2 < HOST_FD_RESERVE ? fd_limit / 2 : HOST_FD_RESERVE) - 1;
	if ((v = calloc(parallel, sizeof(*v))) == NULL)
		neg_die("out of memory");
	fl.method = method;
	neg_cli_signals(1);
	while (next < fl.n || running > 0) {
		/* waiting members start in order, as slots free up; a signal or our output failing stops that */
		wake = 0;
		for (i = next; i < fl.n && running < parallel; i++) {
			m = &fl.m[i];
			if (m->state != M_WAITING)
				continue;
			if (neg_cli_signalled() || fl.out_failed) {
				fleet_fail(m, 1, fl.out_failed ? "cancelled (our output failed)" :
				    "cancelled");
				continue;
			}
			if (m->retry_at > neg_now()) {
				wake = neg_min_deadline(wake, m->retry_at);
				continue;
			}
			if ((rc = fleet_start(m, o, method, fd_max, running)) > 0)
				running++;
			else if (rc == 0 && m->retry_at <= neg_now())
				break;	/* out of descriptors: a call must end first */
			else if (rc == 0)
				wake = neg_min_deadline(wake, m->retry_at);
		}
		while (next < fl.n && fl.m[next].state != M_WAITING)
			next++;
		for (i = 0, nv = 0; i < fl.n && nv < running; i++)
			if (fl.m[i].state == M_RUNNING) {
				if (fl.out_failed)
					neg_run_cancel(fl.m[i].run, 1);
				v[nv++] = fl.m[i].run;
			}
		neg_runs_turn(v, nv, wake);
		for (i = 0; i < nv; i++) {
			if (v[i]->phase != NEG_RUN_DONE)
				continue;
			m = v[i]->ctx;
			fleet_done(m, v[i]);
			close(m->fd);
			neg_run_free(v[i]);
			free(v[i]);
			m->run = NULL;
			running--;
		}
	}
	free(v);
	rc = fleet_status();
	buf_free(&fl.wb);
	neg_cli_signals(0);
	return rc;
}

/* Whether a name given is a pattern (fnmatch's special characters). */
static int
is_pattern(const char *s)
{
	return strpbrk(s, "*?[") != NULL;
}

/*
 * The running guests (as -g lists them) that --all, or the names and
 * patterns given, select; each once, sorted by name.  A name or pattern that
 * selects none exits 255 before any call, as does an empty --all.
 */
static void
fleet_select(struct scan *s, const char *dir, int all, char **sel, int nsel, int64_t deadline)
{
	unsigned char *pick;
	size_t i, k, hit;
	int j;

	host_scan_channels(dir, H2G_NAME, s);
	if (s->n > 0 && virsh_wanted())
		host_virsh_names(H2G_NAME, s, deadline);
	if (s->n > 1)
		qsort(s->v, s->n, sizeof(*s->v), cmp_found);
	if ((pick = calloc(s->n + 1, 1)) == NULL)
		neg_die("out of memory");
	host_listening(s);
	for (j = 0; j < nsel || (all && j == 0); j++) {
		for (i = 0, hit = 0; i < s->n; i++)
			if (s->v[i].up && (all || (is_pattern(sel[j]) ?
			    fnmatch(sel[j], s->v[i].name, 0) == 0 : strcmp(sel[j], s->v[i].name) == 0))) {
				pick[i] = 1;
				hit++;
			}
		if (hit == 0) {
			free(pick);
			free(s->v);
			if (all)
				neg_die("no running guest under %s (negotiator-host -g lists them)", dir);
			neg_die("no running guest matches '%s' (negotiator-host -g lists them)", sel[j]);
		}
	}
	for (i = 0, k = 0; i < s->n; i++)
		if (pick[i])
			s->v[k++] = s->v[i];
	s->n = k;
	free(pick);
	if ((fl.m = calloc(s->n, sizeof(*fl.m))) == NULL)
		neg_die("out of memory");
	for (i = 0; i < s->n; i++) {
		fl.m[i].g = &s->v[i];
		fl.m[i].fd = -1;
		neg_escape(&fl.m[i].shown, s->v[i].name, strlen(s->v[i].name), 0);
	}
	fl.n = s->n;
}

/* ---- the daemon ---- */

/* A guest's name: asked of virsh once per appearance of its socket, while nothing is served. */
enum { NAME_SETTLED, NAME_WAITING, NAME_ASKING };

struct hguest {
	char name[HOST_MAX_NAME];
	char path[PATH_MAX];
	dev_t dev;
	ino_t ino;
	int up;
	int seen;
	int removed;
	int naming;     /* NAME_*: not served until settled */
	int asked;      /* virsh was asked about this appearance (or is not to be) */
	int found;      /* "found guest" was said */
	int warned;     /* out of descriptors or a path too long was said, until it is served */
	int64_t retry_at;
	int retry_ms;
	struct neg_chan chan;
};

/*
 * The naming of new guests by virsh, one job at a time in the daemon's loop:
 * a round takes the guests waiting then (NAME_WAITING -> NAME_ASKING), runs
 * `virsh list`, then `virsh dumpxml` of the domains whose names start with a
 * guest's path name, then only if one is left unnamed of the other domains;
 * at its end every guest of the round is settled (by virsh or by its path).
 * A call that outlives HOST_VIRSH_TIMEOUT_MS is killed and ends the round.
 */
enum { ROUND_IDLE, ROUND_LIST, ROUND_DUMP };

struct naming {
	struct neg_job job;
	int busy;              /* job runs (a round that ended may leave it dying) */
	int step;              /* ROUND_* */
	struct buf names;      /* virsh list's names, each NUL-terminated */
	size_t next;           /* offset in names of the next domain to consider */
	size_t cur;            /* offset of the domain being dumped */
	int pass;              /* 0: the likely domains, 1: the others */
};

struct hostd {
	const char *dir;
	struct neg_server srv;
	struct hguest **g;
	size_t n;
	int ino;
	int wd_dir;             /* the channel directory's watch */
	int wd_up;              /* while it is missing: its nearest ancestor's */
	char up_name[NAME_MAX + 1]; /* ...and the name there that leads to it */
	int virsh;
	int stopping;
	long fd_limit;
	long fd_max;            /* the highest descriptor a guest's channel may take */
	struct naming nm;
	int64_t rescan_at;
	int64_t scan_every;
};

static void
hg_backoff(struct hguest *g, int64_t now, int max_ms)
{
	g->retry_at = now + g->retry_ms;
	g->retry_ms = g->retry_ms * 2 > max_ms ? max_ms : g->retry_ms * 2;
}

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
	hg_backoff(g, now, HOST_RETRY_MAX_MS);
}

/* The guest's name is settled (name from virsh, or NULL: the path's): said, and served if up. */
static void
hg_settle(struct hguest *g, const char *name)
{
	if (name != NULL && strcmp(name, g->name) != 0) {
		if (g->found)
			neg_log(LOG_INFO, "%s: virsh names it %s", g->name, name);
		snprintf(g->name, sizeof(g->name), "%s", name);
	}
	g->naming = NAME_SETTLED;
	if (!g->found)
		neg_log(LOG_INFO, "found guest %s (%s)", g->name, g->path);
	g->found = 1;
	if (g->up)
		neg_log(LOG_INFO, "%s: serving %s", g->name, g->path);
}

static void
hg_connect(struct hostd *h, struct hguest *g, int64_t now)
{
	/* the last HOST_FD_RESERVE descriptors are for commands and virsh, not for more guests */
	int fd = host_connect(g->path, h->fd_max);

	if (fd < 0) {
		if (errno == EMFILE || errno == ENFILE) {
			if (!g->warned)
				neg_log(LOG_WARNING, "%s: not served: out of file descriptors (%ld allowed, "
				    "%d of them kept for commands); trying again", g->name, h->fd_limit,
				    HOST_FD_RESERVE);
			g->warned = 1;
			hg_backoff(g, now, HOST_RETRY_FD_MAX_MS);
		} else {
			if (errno == ENAMETOOLONG && !g->warned)
				neg_log(LOG_WARNING, "%s: cannot connect to %s: the path is longer than a "
				    "UNIX socket address holds and /proc/self/fd, the way around that, "
				    "is not there", g->name, g->path);
			else
				/* a stopped guest's leftover socket: quietly try again later */
				neg_log(LOG_DEBUG, "%s: cannot connect to %s: %s", g->name, g->path,
				    strerror(errno));
			g->warned |= errno == ENAMETOOLONG;
			hg_backoff(g, now, HOST_RETRY_MAX_MS);
		}
		if (!g->found)
			hg_settle(g, NULL);
		return;
	}
	g->chan.fd = fd;
	g->up = 1;
	g->warned = 0;
	g->retry_ms = HOST_RETRY_MIN_MS;
	/* a socket nobody listens on is never asked about: no running domain has it */
	if (!g->asked) {
		g->asked = 1;
		g->naming = NAME_WAITING;
		return;
	}
	hg_settle(g, NULL);
}

/* ---- the daemon: naming by virsh ---- */

static int
naming_left(const struct hostd *h)
{
	size_t k;

	for (k = 0; k < h->n; k++)
		if (h->g[k]->naming == NAME_ASKING && !h->g[k]->removed)
			return 1;
	return 0;
}

/* Ends the round: who virsh did not name keeps the name in its path. */
static void
naming_end(struct hostd *h)
{
	size_t k;

	for (k = 0; k < h->n; k++)
		if (h->g[k]->naming == NAME_ASKING)
			hg_settle(h->g[k], NULL);
	h->nm.step = ROUND_IDLE;
}

/* Starts the dumpxml of the next domain worth asking; 0 when there is none left. */
static int
naming_next(struct hostd *h, int64_t now)
{
	struct naming *nm = &h->nm;
	const char *name;
	size_t k;
	int prefix;

	for (; nm->pass < 2; nm->pass++, nm->next = 0) {
		while (naming_left(h) && nm->next < nm->names.len) {
			name = nm->names.p + nm->next;
			nm->cur = nm->next;
			nm->next += strlen(name) + 1;
			if (*name == '\0')
				continue;
			for (prefix = 0, k = 0; k < h->n && !prefix; k++)
				prefix = h->g[k]->naming == NAME_ASKING &&
				    strncmp(name, h->g[k]->name, strlen(h->g[k]->name)) == 0;
			if (prefix != (nm->pass == 0))
				continue;
			if (virsh_start(&nm->job, "dumpxml", name, now + HOST_VIRSH_TIMEOUT_MS) < 0)
				return 0;
			nm->busy = 1;
			return 1;
		}
	}
	return 0;
}

/* What a finished virsh job said, and the round's next step. */
static void
naming_done(struct hostd *h, const struct neg_job *j, int64_t now)
{
	struct naming *nm = &h->nm;
	char src[PATH_MAX], *p;
	size_t k;
	int st = virsh_status(j);

	if (j->timed_out)
		neg_log(LOG_WARNING, "virsh -q %s %s did not finish within %d s: killed; the guests "
		    "waiting for it keep the names in their paths", nm->step == ROUND_LIST ? "list" :
		    "dumpxml", nm->step == ROUND_LIST ? "--name" : nm->names.p + nm->cur,
		    HOST_VIRSH_TIMEOUT_MS / 1000);
	else if (st != 0 && nm->step == ROUND_LIST)
		neg_log(LOG_WARNING, "virsh -q list --name failed (%.*s): names come from the paths",
		    (int)strcspn(j->err.p ? j->err.p : "", "\n"), j->err.p ? j->err.p : "");
	if (j->timed_out || (st != 0 && nm->step == ROUND_LIST)) {
		naming_end(h);
		return;
	}
	if (nm->step == ROUND_LIST) {
		buf_free(&nm->names);
		buf_add(&nm->names, j->out.p ? j->out.p : "", j->out.len);
		for (p = nm->names.p; (p = strchr(p, '\n')) != NULL; )
			*p++ = '\0';
		nm->next = 0;
		nm->pass = 0;
		nm->step = ROUND_DUMP;
	} else if (st == 0 && xml_channel_path(j->out.p, G2H_NAME, src, sizeof(src))) {
		for (k = 0; k < h->n; k++)
			if (h->g[k]->naming == NAME_ASKING && strcmp(h->g[k]->path, src) == 0)
				hg_settle(h->g[k], nm->names.p + nm->cur);
	}
	if (!naming_next(h, now))
		naming_end(h);
}

/* One step of the naming, each turn of the loop: never waits. */
static void
naming_run(struct hostd *h, int64_t now)
{
	struct naming *nm = &h->nm;
	struct neg_job j;
	size_t k;
	int any = 0;

	if (nm->busy) {
		/* killed at its deadline: the round ends now, not when the kill is reaped */
		if (nm->job.timed_out && nm->step != ROUND_IDLE)
			naming_done(h, &nm->job, now);
		if (!neg_job_done(&nm->job))
			return;
		/* the next step may start the next job in nm->job */
		j = nm->job;
		nm->busy = 0;
		if (nm->step != ROUND_IDLE && h->stopping)
			naming_end(h);
		else if (nm->step != ROUND_IDLE)
			naming_done(h, &j, now);
		neg_job_free(&j);
		if (nm->busy || nm->step != ROUND_IDLE)
			return;
	}
	if (nm->step != ROUND_IDLE || h->stopping)
		return;
	for (k = 0; k < h->n; k++)
		if (h->g[k]->naming == NAME_WAITING && !h->g[k]->removed) {
			h->g[k]->naming = NAME_ASKING;
			any = 1;
		}
	if (!any)
		return;
	nm->step = ROUND_LIST;
	if (virsh_start(&nm->job, "list", NULL, now + HOST_VIRSH_TIMEOUT_MS) < 0)
		naming_end(h);
	else
		nm->busy = 1;
}

/* ---- the daemon: the channel directory ---- */

/*
 * Watches dir and its domain-* subdirectories; a change there means a rescan.
 * While dir is missing (not made yet, or removed), its nearest existing
 * ancestor is watched for the name that leads to it, so that its making is
 * seen; a watch on a dir that was moved away follows it and is dropped.
 */
static void
hostd_watch(struct hostd *h)
{
	char path[PATH_MAX], *slash;
	struct dirent *e;
	struct stat st;
	DIR *d;
	int wd, tries;
	const uint32_t mask = IN_CREATE | IN_DELETE | IN_MOVED_TO | IN_MOVED_FROM | IN_ATTRIB |
	    IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR;

	if (h->ino < 0)
		return;
	for (tries = 0; tries < 2; tries++) {
		wd = inotify_add_watch(h->ino, h->dir, mask);
		if (wd != h->wd_dir && h->wd_dir >= 0)
			inotify_rm_watch(h->ino, h->wd_dir);
		h->wd_dir = wd;
		if (wd >= 0)
			break;
		snprintf(path, sizeof(path), "%s", h->dir);
		for (;;) {
			while ((slash = strrchr(path, '/')) != NULL && slash[1] == '\0' && slash > path)
				*slash = '\0';
			if ((slash = strrchr(path, '/')) == NULL) {
				snprintf(h->up_name, sizeof(h->up_name), "%.*s", NAME_MAX, path);
				snprintf(path, sizeof(path), ".");
			} else {
				snprintf(h->up_name, sizeof(h->up_name), "%.*s", NAME_MAX, slash + 1);
				slash[slash == path] = '\0';
			}
			wd = inotify_add_watch(h->ino, path, IN_CREATE | IN_MOVED_TO | IN_ONLYDIR);
			if (wd >= 0 || strcmp(path, ".") == 0 || strcmp(path, "/") == 0)
				break;
		}
		if (wd != h->wd_up && h->wd_up >= 0)
			inotify_rm_watch(h->ino, h->wd_up);
		h->wd_up = wd;
		/* made between the two watches: watch it after all */
		if (stat(h->dir, &st) < 0)
			return;
	}
	if (h->wd_dir < 0)
		return;
	if (h->wd_up >= 0)
		inotify_rm_watch(h->ino, h->wd_up);
	h->wd_up = -1;
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

/* Reads the pending inotify events; whether one of them calls for a rescan. */
static int
hostd_events(struct hostd *h)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	const struct inotify_event *ev;
	ssize_t n, off;
	int rescan = 0;

	while ((n = read(h->ino, buf, sizeof(buf))) > 0) {
		for (off = 0; off + (ssize_t)sizeof(*ev) <= n; off += (ssize_t)sizeof(*ev) + ev->len) {
			ev = (const struct inotify_event *)(buf + off);
			/* the ancestor of a missing dir: only the name that leads to it counts */
			if (ev->wd == h->wd_up && h->wd_up >= 0 &&
			    (ev->len == 0 || strcmp(ev->name, h->up_name) != 0))
				continue;
			rescan = 1;
		}
	}
	return rescan;
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
			if (!h->g[k]->removed && strcmp(h->g[k]->path, s.v[i].path) == 0 &&
			    h->g[k]->dev == s.v[i].dev && h->g[k]->ino == s.v[i].ino)
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
			g->retry_ms = HOST_RETRY_MIN_MS;
			g->retry_at = now;
		}
	}
	s.n = n;
	for (k = 0; k < h->n; k++) {
		g = h->g[k];
		if (!g->seen && !g->removed) {
			if (g->found)
				neg_log(LOG_INFO, "guest %s is gone", g->name);
			hg_disconnect(g, now, 1);
			g->removed = 1;
		}
	}
	for (i = 0; i < s.n; i++) {
		if (h->n >= HOST_MAX_GUESTS)
			break;
		g = neg_alloc(sizeof(*g));
		snprintf(g->name, sizeof(g->name), "%s", s.v[i].name);
		snprintf(g->path, sizeof(g->path), "%s", s.v[i].path);
		g->dev = s.v[i].dev;
		g->ino = s.v[i].ino;
		g->seen = 1;
		g->asked = !h->virsh;
		g->retry_ms = HOST_RETRY_MIN_MS;
		g->retry_at = now;
		neg_chan_init(&g->chan, -1, &h->srv, HOST_PER_GUEST_JOBS);
		g->chan.guest = g->name;
		if ((h->g = realloc(h->g, (h->n + 1) * sizeof(*h->g))) == NULL)
			neg_die("out of memory");
		h->g[h->n++] = g;
		hg_connect(h, g, now);
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

/* ---- the daemon's loop ---- */

/* The poll table: every slot as the channels number them, and the live ones polled. */
struct table {
	struct pollfd *all;    /* what neg_chan_pollfds filled, -1 for a closed fd */
	struct pollfd *live;   /* the entries with an fd, what poll() sees */
	size_t *from;          /* live[i] is all[from[i]] */
	size_t *first;         /* guest k's first entry in all */
	size_t cap, n, nlive;
};

static void
table_size(struct table *t, size_t n, size_t guests)
{
	if (n > t->cap || guests > t->cap) {
		t->cap = (n > guests ? n : guests) * 2;
		if ((t->all = realloc(t->all, t->cap * sizeof(*t->all))) == NULL ||
		    (t->live = realloc(t->live, t->cap * sizeof(*t->live))) == NULL ||
		    (t->from = realloc(t->from, t->cap * sizeof(*t->from))) == NULL ||
		    (t->first = realloc(t->first, t->cap * sizeof(*t->first))) == NULL)
			neg_die("out of memory");
	}
}

/*
 * poll() over the live entries alone: disconnected guests' slots (fd -1) would
 * still count against RLIMIT_NOFILE, and past it poll() fails with EINVAL.
 * An error is logged and waited out by neg_poll, never fatal: nothing a guest
 * does should stop the others' service.
 */
static void
table_poll(struct table *t, int timeout, int64_t *warned_at)
{
	size_t i;

	for (i = 0, t->nlive = 0; i < t->n; i++) {
		t->all[i].revents = 0;
		if (t->all[i].fd >= 0) {
			t->live[t->nlive] = t->all[i];
			t->from[t->nlive++] = i;
		}
	}
	if (neg_poll(t->live, (nfds_t)t->nlive, timeout, warned_at) < 0)
		return;
	for (i = 0; i < t->nlive; i++)
		t->all[t->from[i]].revents = t->live[i].revents;
}

static void
table_free(struct table *t)
{
	free(t->all);
	free(t->live);
	free(t->from);
	free(t->first);
}

/*
 * What the daemon does on the signals the self-pipe brought (SIGCHLD aside:
 * the loop reaps): SIGTERM or SIGINT begin the stop (neg_stop: no new
 * commands, running ones may finish for NEG_STOP_GRACE_MS, then are killed)
 * and kill virsh; SIGHUP reopens the log and rescans.
 */
static void
hostd_signals(struct hostd *h, unsigned sigs, int64_t now, struct neg_stop *stop)
{
	size_t k;

	if ((sigs & (NEG_SIG(SIGTERM) | NEG_SIG(SIGINT))) && !h->stopping) {
		neg_log(LOG_INFO, "terminating: no new requests, %d commands running",
		    h->srv.running);
		h->stopping = 1;
		neg_stop_begin(stop, now);
		for (k = 0; k < h->n; k++)
			neg_chan_stop(&h->g[k]->chan, stop->step);
		if (h->nm.busy)
			neg_job_kill(&h->nm.job, now);
	}
	if (sigs & NEG_SIG(SIGHUP)) {
		if (neg_syslog)
			closelog();	/* reopened at the next line: a restarted syslogd is found */
		neg_log(LOG_INFO, "SIGHUP: rescanning %s", h->dir);
		h->rescan_at = now;
	}
}

/* The poll table's fixed slots; the guests' channels follow from HD_PFD_GUESTS. */
enum { HD_PFD_SIG, HD_PFD_INOTIFY, HD_PFD_NAMING, HD_PFD_GUESTS = HD_PFD_NAMING + NEG_JOB_FDS };

/*
 * Each turn: a rescan when due, freeing removed guests, the naming's next step, the stop
 * when all is idle, connects due, the poll table; poll; then the self-pipe,
 * and what its signals ask (hostd_signals), inotify, the naming job's pipes, every guest's io,
 * reaping on SIGCHLD, ticks.
 */
static int
host_daemon(const char *dir, struct neg_server *srv)
{
	struct hostd h;
	struct table t;
	size_t k, n;
	int64_t now, wake, poll_warned = 0;
	struct neg_stop stop = { NEG_STOP_NONE, 0 };
	struct hguest *g;
	unsigned sigs;
	int chld, nj, step;

	memset(&h, 0, sizeof(h));
	memset(&t, 0, sizeof(t));
	h.dir = dir;
	h.srv = *srv;
	h.scan_every = HOST_RESCAN_MS;
	h.wd_dir = h.wd_up = -1;
	h.virsh = virsh_wanted();
	h.fd_limit = host_raise_fd_limit();
	h.fd_max = h.fd_limit < 0 ? LONG_MAX :
	    h.fd_limit - (h.fd_limit / 2 < HOST_FD_RESERVE ? h.fd_limit / 2 : HOST_FD_RESERVE) - 1;
	if (neg_signals_init() < 0)
		neg_die("cannot set up signal handling: %s", strerror(errno));
	h.ino = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (h.ino < 0) {
		neg_log(LOG_WARNING, "inotify is not available (%s): rescanning every %d s",
		    strerror(errno), HOST_RESCAN_NO_INOTIFY_MS / 1000);
		h.scan_every = HOST_RESCAN_NO_INOTIFY_MS;
	}
	neg_log(LOG_INFO, "negotiator-host %s serving guests under %s", NEG_VERSION, dir);
	hostd_rescan(&h, neg_now());
	for (;;) {
		now = neg_now();
		if (!h.stopping && now >= h.rescan_at)
			hostd_rescan(&h, now);
		hostd_collect(&h);
		/* before the stop's check: a killed virsh's end is seen here */
		naming_run(&h, now);
		if (h.stopping) {
			for (k = 0; k < h.n && !neg_chan_busy(&h.g[k]->chan); k++)
				;
			if (k == h.n && !h.nm.busy) {
				for (k = 0; k < h.n; k++)
					h.g[k]->removed = 1;
				hostd_collect(&h);
				free(h.g);
				buf_free(&h.nm.names);
				table_free(&t);
				return 0;
			}
			if ((step = neg_stop_due(&stop, now)) != NEG_STOP_NONE)
				for (k = 0; k < h.n; k++)
					neg_chan_stop(&h.g[k]->chan, step);
		}
		wake = h.stopping ? stop.at : h.rescan_at;
		for (k = 0, n = HD_PFD_GUESTS; k < h.n; k++)
			n += NEG_CHAN_FDS;
		table_size(&t, n, h.n);
		t.all[HD_PFD_SIG].fd = neg_sigpipe_fd();
		t.all[HD_PFD_SIG].events = POLLIN;
		t.all[HD_PFD_INOTIFY].fd = h.ino;
		t.all[HD_PFD_INOTIFY].events = POLLIN;
		n = HD_PFD_NAMING;
		nj = h.nm.busy ? neg_job_pollfds(&h.nm.job, t.all + n) : 0;
		n += (size_t)nj;
		if (h.nm.busy)
			wake = neg_min_deadline(wake, neg_job_wake(&h.nm.job));
		for (k = 0; k < h.n; k++) {
			g = h.g[k];
			if (!g->up && !g->removed && !h.stopping && now >= g->retry_at)
				hg_connect(&h, g, now);
			t.first[k] = n;
			/* read while stopping too: the running calls' stdin, credit and cancels */
			n += (size_t)neg_chan_pollfds(&g->chan, t.all + n, g->naming == NAME_SETTLED);
			if (!g->up && !g->removed && !h.stopping)
				wake = neg_min_deadline(wake, g->retry_at);
			wake = neg_min_deadline(wake, neg_chan_wake(&g->chan));
		}
		t.n = n;
		table_poll(&t, neg_poll_timeout(wake, now), &poll_warned);
		now = neg_now();
		sigs = (t.all[HD_PFD_SIG].revents & POLLIN) ? neg_signal_drain() : 0;
		hostd_signals(&h, sigs, now, &stop);
		chld = (sigs & NEG_SIG(SIGCHLD)) != 0;
		if ((t.all[HD_PFD_INOTIFY].revents & POLLIN) && hostd_events(&h) &&
		    h.rescan_at > now + HOST_RESCAN_DEBOUNCE_MS)
			h.rescan_at = now + HOST_RESCAN_DEBOUNCE_MS;
		if (h.nm.busy) {
			neg_job_io(&h.nm.job, t.all + HD_PFD_NAMING, nj);
			if (chld)
				neg_job_reap(&h.nm.job);
			neg_job_tick(&h.nm.job, now);
		}
		for (k = 0; k < h.n; k++) {
			g = h.g[k];
			if (neg_chan_io(&g->chan, t.all + t.first[k],
			    (int)((k + 1 < h.n ? t.first[k + 1] : n) - t.first[k])) < 0 && g->up)
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
	struct scan s = {0};
	struct stat st;
	const char *socket_path = NULL, *guest = NULL, *dir = HOST_CHANNEL_DIR;
	int c, fd, rc, all = 0, json = 0, raw = 0, nsel, fleet;
	size_t i;
	long parallel = HOST_FLEET_PARALLEL;
	char **sel, *end;
	int64_t deadline;

	opterr = 0;	/* one line of our own instead of getopt's two */
	neg_progname = "negotiator-host";
	neg_cli_init(&o, usage_text, HOST_TOTAL_JOBS);
	while ((c = getopt_long(argc, argv, "gce:dt:vqh", longopts, NULL)) != -1) {
		if (neg_cli_option(&o, c, c == '?' ? argv[(optind > argc ? argc : optind) - 1] : optarg))
			continue;
		if (c == 'g' || c == 'c')
			o.mode = c;
		else if (c == OPT_CHANNELS)
			dir = optarg;
		else if (c == OPT_SOCKET)
			socket_path = optarg;
		else if (c == OPT_ALL)
			all = 1;
		else if (c == OPT_JSON)
			json = 1;
		else if (c == OPT_NO_PREFIX)
			raw = 1;
		else if (c == OPT_PARALLEL && ((parallel = strtol(optarg, &end, 10)) < 1 ||
		    parallel > HOST_MAX_GUESTS || *end != '\0' || end == optarg))
			neg_die("invalid --parallel '%s': give a number from 1 to %d", optarg,
			    HOST_MAX_GUESTS);
		else if (c != OPT_PARALLEL)
			neg_cli_option(&o, '?', argv[optind - 1]);
	}
	sel = argv + optind;
	nsel = argc - optind;
	/* one guest by name is called as always; --all, a pattern, several names or --json make a fleet */
	fleet = all || nsel > 1 || (nsel == 1 && is_pattern(sel[0])) || json;
	if (all && nsel > 0)
		neg_die("--all takes no guest names (give either)");
	if (socket_path && fleet)
		neg_die("--socket calls one guest: give no --all, patterns or names beside it");
	if (json && o.mode != 'e' && o.mode != 'c' && o.mode != 'g')
		neg_die("--json goes with -e, -c or -g");
	if (o.mode == 0) {
		fputs(usage_text, stdout);
		return 0;
	}
	neg_cli_verbosity(&o);
	deadline = neg_now() + (o.timeout > 0 ? (int64_t)(o.timeout * 1000) : NEG_POLL_MAX_MS);
	if (o.mode == 'g')
		return list_guests(dir, deadline, json);
	if (o.mode == 'd')
		return host_daemon(dir, &o.srv);
	if (nsel == 0 && !all && socket_path == NULL)
		neg_die("give the name of a guest (negotiator-host -g lists them) or --socket PATH");
	neg_cli_prepare(&o);
	signal(SIGPIPE, SIG_IGN);
	deadline = o.deadline >= 0 ? o.deadline : neg_now() + NEG_POLL_MAX_MS;
	if (fleet) {
		if (o.infd >= 0 && (fstat(o.infd, &st) < 0 || !S_ISREG(st.st_mode)))
			neg_die("--input for several guests must be a regular file (each guest reads it "
			    "from its start)");
		o.input_shared = 1;
		fleet_select(&s, dir, all, sel, nsel, deadline);
		fl.out = json ? OUT_JSON : raw ? OUT_RAW : OUT_PREFIX;
		rc = fleet_run(&o, o.mode == 'c' ? "list_commands" : "execute", (size_t)parallel);
		for (i = 0; i < fl.n; i++)
			buf_free(&fl.m[i].shown);
		free(fl.m);
		free(s.v);
		neg_cli_free(&o);
		return rc;
	}
	guest = nsel > 0 ? sel[0] : NULL;
	if ((fd = guest_socket(dir, guest, socket_path, o.timeout, deadline)) < 0) {
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
