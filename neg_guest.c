/*
 * neg_guest.c: negotiator-guest, the agent inside a virtual machine.
 *
 * As a daemon (-d) it serves the host-to-guest port: requests from the host,
 * one command at a time, replies in order.  As a client (-l, -e) it calls
 * the host daemon over the guest-to-host port.  Ports are found by name in
 * /sys/class/virtio-ports, or given with -c (also a virtconsole tty such as
 * /dev/hvc0 on kernels without named ports).
 *
 * virtio_console's quirks shape the port loop (README, "Old guests"): with the
 * host side away, read() returns 0 and poll() reports POLLHUP at once, so a
 * level-triggered loop would spin.  The port is in one of three states,
 * changed by port_event alone (its table is the authority for this picture):
 *
 *            OPENED                HANGUP, EARLY_HANGUP
 *   CLOSED ----------> AWAY <--------------------------- UP
 *     ^                 | \___ NO_HOST, SIGIO: stay     ^ |
 *     |                 +-----------HOST-----------------+ |
 *     +--------LOST (ENODEV, ENXIO; a tty hung up)---------+  (from any state)
 *
 * In AWAY the fd is not polled; it is probed on SIGIO (where the kernel sends
 * it) and on a timer: 50 ms doubling up to 0.5 s where SIGIO may never come
 * (kernels before 2.6.37 have no fasync), up to 60 s where the kernel's
 * release says it comes or a SIGIO has woken us to a connected host.  A tty
 * (virtconsole) has no connect signalling: it is UP from its first probe on.
 * The port stays open for the daemon's life: closing it discards data.
 */
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/utsname.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <termios.h>
#include <unistd.h>

#include "neg_proto.h"

static const char usage_text[] =
"Usage: negotiator-guest [OPTIONS]\n"
"\n"
"Communicate from a KVM/QEMU guest with its host, or serve the host's calls.\n"
"\n"
"  -l, --list-commands          list the commands the host exposes to this guest\n"
"  -e, --execute=COMMAND        run COMMAND (split like a shell would, no expansion) on\n"
"                               the host; its output and exit status become ours\n"
"  -d, --daemon                 serve the host's calls (foreground, until SIGTERM)\n"
"  -t, --timeout=SECONDS        give up after this long (default 10, 0 = never)\n"
"  -c, --character-device=PATH  the port to use (default: found by its name)\n"
"      --commands-directory=DIR the commands the host may run (default\n"
"                               /usr/lib/negotiator/commands)\n"
NEG_COMMON_USAGE
"Exit status of -e: the host command's status when it failed, 0 on success,\n"
"255 when negotiator itself failed.\n";

static const struct option longopts[] = {
	{ "list-commands", no_argument, NULL, 'l' },
	{ "character-device", required_argument, NULL, 'c' },
	NEG_COMMON_LONGOPTS,
	{ NULL, 0, NULL, 0 }
};

/* Finds /dev/NAME for the port whose sysfs name is `name`, rescanning until deadline. */
static int
guest_find_port(const char *name, char *path, size_t pathlen, int64_t deadline)
{
	char file[PATH_MAX], buf[128];
	struct dirent *e;
	DIR *d;
	FILE *f;
	int found;

	for (;;) {
		found = 0;
		if ((d = opendir(GUEST_PORTS_DIR)) != NULL) {
			while (!found && (e = readdir(d)) != NULL) {
				if (e->d_name[0] == '.')
					continue;
				snprintf(file, sizeof(file), GUEST_PORTS_DIR "/%s/name", e->d_name);
				if ((f = fopen(file, "re")) == NULL)
					continue;
				if (fgets(buf, sizeof(buf), f) != NULL) {
					buf[strcspn(buf, "\n")] = '\0';
					if (strcmp(buf, name) == 0) {
						snprintf(path, pathlen, "/dev/%s", e->d_name);
						found = 1;
					}
				}
				fclose(f);
			}
			closedir(d);
		}
		if (found)
			return 0;
		if (neg_now() >= deadline)
			return -1;
		poll(NULL, 0, 200);
	}
}

/*
 * A virtconsole is a tty, and a tty's line discipline would edit what crosses
 * it: echo the host's bytes back to the host, hold input until a newline, turn
 * ^C, ^Z and ^\ into signals, ^D into end of file, ^S/^Q into flow control, CR
 * into NL.  So it goes into raw mode: no echo, no canonical input, no signals
 * or extended processing, no CR/NL mapping or output processing, no XON/XOFF
 * either way, 8 data bits, no parity, no modem control or hang-up on close;
 * VMIN 1, VTIME 0.  Only TCGETS and TCSETS, which every kernel has.  Unlike a
 * port, a tty lets anyone open it again; an exclusive flock keeps a second
 * negotiator out (a second caller, or a caller given the daemon's tty), and
 * the caller retries as it does on EBUSY.  Returns -1 with errno set.
 */
static int
guest_tty_setup(int fd)
{
	struct termios t;

	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		if (errno == EWOULDBLOCK)
			errno = EBUSY;
		return -1;
	}
	if (tcgetattr(fd, &t) < 0)
		return -1;
	t.c_iflag &= ~(tcflag_t)(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL |
	    IXON | IXOFF | IXANY | IMAXBEL | INPCK);
	t.c_oflag &= ~(tcflag_t)OPOST;
	t.c_lflag &= ~(tcflag_t)(ECHO | ECHOE | ECHOK | ECHONL | ICANON | ISIG | IEXTEN | TOSTOP);
	t.c_cflag &= ~(tcflag_t)(CSIZE | PARENB | CRTSCTS | HUPCL);
	t.c_cflag |= CS8 | CREAD | CLOCAL;
	t.c_cc[VMIN] = 1;
	t.c_cc[VTIME] = 0;
	return tcsetattr(fd, TCSANOW, &t);
}

/* Whether an EMFILE is our own (no descriptor left) rather than a busy port's; keeps errno. */
static int
guest_out_of_fds(void)
{
	int fd = open("/dev/null", O_RDONLY | O_CLOEXEC), e = errno;

	if (fd >= 0)
		close(fd);
	errno = EMFILE;
	return fd < 0 && e == EMFILE;
}

/*
 * Opens the port non-blocking; "already open" (EBUSY, EMFILE on kernels
 * 2.6.34 to ~3.9, and a tty another negotiator holds) is retried until
 * deadline.  An EMFILE of our own (no descriptor left) is no busy port: it
 * is said at once.  A tty (virtconsole) is put in raw mode.
 */
static int
guest_open_port(const char *path, int64_t deadline, int quiet)
{
	int fd, e;

	for (;;) {
		fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
		if (fd >= 0 && isatty(fd) && guest_tty_setup(fd) < 0) {
			e = errno;
			close(fd);
			fd = -1;
			errno = e;
		}
		if (fd >= 0)
			break;
		if (errno == EMFILE && guest_out_of_fds()) {
			if (!quiet)
				neg_log(LOG_ERR, "cannot open %s: %s (this process has no descriptor "
				    "left: raise ulimit -n)", path, strerror(EMFILE));
			return -1;
		}
		if ((errno != EBUSY && errno != EMFILE) || neg_now() >= deadline) {
			if (!quiet)
				neg_log(LOG_ERR, "cannot open %s: %s%s", path, strerror(errno),
				    errno == EBUSY || errno == EMFILE ?
				    " (another program has the port open)" : errno == ENXIO ?
				    " (no port behind this node: a virtconsole is opened as /dev/hvcN)" : "");
			return -1;
		}
		poll(NULL, 0, 100);
	}
	return fd;
}

static int
find_and_open(const char *given, const char *name, int64_t deadline, char *path,
    size_t pathlen)
{
	if (given) {
		snprintf(path, pathlen, "%s", given);
	} else if (guest_find_port(name, path, pathlen, deadline) < 0) {
		neg_log(LOG_ERR, "no virtio port named %s in %s: add the channel to the "
		    "guest's definition (see README) or give the device with -c PATH",
		    name, GUEST_PORTS_DIR);
		return -1;
	}
	return guest_open_port(path, deadline, 0);
}

/* ---- the daemon ---- */

enum { PORT_CLOSED, PORT_UP, PORT_AWAY };

/* What happens to the port; port_event alone turns these into states. */
enum {
	EV_OPENED,      /* the port was (re)opened */
	EV_HOST,        /* a probe read data or EAGAIN: the host is there */
	EV_NO_HOST,     /* a probe read 0: still away */
	EV_HANGUP,      /* poll and read agree the host left */
	EV_EARLY_HANGUP,/* a hang-up while data ran ahead of the kernel's "host connected" */
	EV_SIGIO,       /* the kernel says something changed */
	EV_LOST         /* an error such as ENODEV: the port is gone */
};

struct port {
	int state;
	char path[PATH_MAX];
	const char *given;
	int tty;              /* a virtconsole: no connect signalling, a hang-up is final */
	int64_t probe_at;
	int probe_ms;
	int sigio;            /* we ask for SIGIO */
	int sigio_trusted;    /* SIGIO is known to come on host connect (see sigio_expected) */
	int woken;            /* a SIGIO came since the last probe */
	int64_t unconfirmed;  /* until when a hang-up is not believed (see port_probe) */
	struct neg_chan chan;
};

/*
 * Whether this kernel's virtio_console raises SIGIO when the host connects:
 * fasync came in Linux 2.6.37; RHEL 6 backported it to 2.6.32-71.16.1.
 * Older kernels take O_ASYNC without complaint (F_GETFL even shows it) and
 * never signal, so the flag cannot be probed: the release is the hint, and
 * a SIGIO that wakes us to a connected host is the proof (port_event).
 */
static int
sigio_expected(const char *rel)
{
	unsigned long v[5] = { 0 };	/* A.B.C-X.Y: RHEL's releases are 2.6.32-X.Y.Z.el6 */
	const char *p = rel;
	char *end;
	int n;

	for (n = 0; n < 5 && *p >= '0' && *p <= '9'; n++) {
		v[n] = strtoul(p, &end, 10);
		p = end;
		if (*p == '.' || *p == '-')
			p++;
	}
	if (n < 2)
		return 0;
	if (v[0] != 2)
		return v[0] > 2;
	if (v[1] != 6)
		return v[1] > 6;
	if (v[2] >= 37)
		return 1;
	return v[2] == 32 && strstr(rel, ".el6") != NULL && (v[3] > 71 || (v[3] == 71 && v[4] >= 16));
}

/*
 * SIGIO only while the host is away: it wakes us when the host comes.  While
 * it is there poll() says everything, and a signal per incoming buffer would
 * cost a wake-up and two system calls per chunk of a stream.
 */
static void
port_async(struct port *pt, int on)
{
	int fl;

	if (!pt->sigio || pt->chan.fd < 0 || (fl = fcntl(pt->chan.fd, F_GETFL)) < 0)
		return;
	fcntl(pt->chan.fd, F_SETFL, on ? fl | O_ASYNC : fl & ~O_ASYNC);
}

/* The next probe of a port whose host is away: soon after a change, then rarer. */
static void
port_backoff(struct port *pt, int64_t now, int first)
{
	int cap = pt->sigio_trusted ? GUEST_PROBE_SAFETY_MS : GUEST_PROBE_MAX_MS;

	pt->probe_ms = first ? GUEST_PROBE_MIN_MS :
	    pt->probe_ms * 2 > cap ? cap : pt->probe_ms * 2;
	pt->probe_at = now + pt->probe_ms;
}

/*
 * The port's one state function: every change of pt->state is made here, and
 * the diagram at the top of this file is drawn from it.
 *
 *   CLOSED  OPENED        -> AWAY    probe at once
 *   AWAY    HOST          -> UP      SIGIO off (a SIGIO that woke us proves it works)
 *   AWAY    NO_HOST       -> AWAY    next probe later, up to 0.5 s, or 60 s once SIGIO is trusted
 *   AWAY    SIGIO         -> AWAY    probe at once
 *   UP      HANGUP        -> AWAY    the host's calls are void; SIGIO on; probe soon
 *   UP      EARLY_HANGUP  -> AWAY    its requests kept; SIGIO on; probe soon
 *   any     LOST          -> CLOSED  close; look for the port again every second
 *
 * SIGIO goes on before the next probe, so a host that comes meanwhile is seen
 * by that probe; the probes after a change come at 50 ms doubling.
 */
static void
port_event(struct port *pt, int ev, int64_t now)
{
	switch (ev) {
	case EV_OPENED:
		neg_log(LOG_INFO, "serving %s", pt->path);
		pt->state = PORT_AWAY;
		port_async(pt, 1);
		pt->probe_ms = GUEST_PROBE_MIN_MS;
		pt->probe_at = now;
		break;
	case EV_HOST:
		if (pt->woken && !pt->sigio_trusted) {
			pt->sigio_trusted = 1;
			neg_log(LOG_INFO, "SIGIO on host connect: seen; probing every %d s at most",
			    GUEST_PROBE_SAFETY_MS / 1000);
		}
		neg_log(LOG_INFO, "host connected to %s%s", pt->path,
		    pt->unconfirmed ? " (before the port says so)" : "");
		pt->state = PORT_UP;
		pt->woken = 0;
		port_async(pt, 0);
		break;
	case EV_NO_HOST:
		pt->woken = 0;
		if (pt->unconfirmed && now >= pt->unconfirmed) {
			neg_log(LOG_INFO, "host disconnected from %s", pt->path);
			neg_chan_reset(&pt->chan);
			pt->unconfirmed = 0;
		}
		port_backoff(pt, now, 0);
		break;
	case EV_SIGIO:
		/* one queued before SIGIO went off proves nothing */
		if (pt->state == PORT_AWAY) {
			pt->woken = 1;
			pt->probe_at = now;
		}
		break;
	case EV_HANGUP:
	case EV_EARLY_HANGUP:
		if (ev == EV_HANGUP) {
			neg_log(LOG_INFO, "host disconnected from %s", pt->path);
			neg_chan_reset(&pt->chan);
		}
		pt->state = PORT_AWAY;
		port_async(pt, 1);
		port_backoff(pt, now, 1);
		break;
	case EV_LOST:
		neg_log(LOG_WARNING, "lost %s: %s; looking for it again", pt->path, strerror(errno));
		neg_chan_reset(&pt->chan);
		close(pt->chan.fd);
		pt->chan.fd = -1;
		pt->state = PORT_CLOSED;
		pt->probe_at = now + GUEST_REOPEN_MS;
		break;
	}
}

static void
port_attach(struct port *pt, struct neg_server *srv, int fd, const char *path, int64_t now)
{
	snprintf(pt->path, sizeof(pt->path), "%s", path);
	pt->tty = isatty(fd);
	if (pt->sigio)
		fcntl(fd, F_SETOWN, getpid());
	if (pt->chan.srv == NULL)
		neg_chan_init(&pt->chan, fd, srv, 1);
	pt->chan.fd = fd;
	port_event(pt, EV_OPENED, now);
}

/* After an unplug: find the port again (quietly; it may take a while to come back). */
static void
port_reopen(struct port *pt, struct neg_server *srv, int64_t now)
{
	char path[PATH_MAX];
	int fd;

	pt->probe_at = now + GUEST_REOPEN_MS;
	if (pt->given)
		snprintf(path, sizeof(path), "%s", pt->given);
	else if (guest_find_port(H2G_NAME, path, sizeof(path), now) < 0)
		return;
	if ((fd = guest_open_port(path, now, 1)) >= 0)
		port_attach(pt, srv, fd, path, now);
}

/*
 * Reads what the port has: 2 for data (kept for the channel) and 1 for EAGAIN,
 * both meaning the host is connected; 0 while it is away (read() gives 0); -1
 * for an error such as ENODEV after an unplug.  A tty gives 0 only once it is
 * hung up (its virtconsole removed), which no reconnect undoes: an error too.
 */
static int
port_read(struct port *pt)
{
	struct neg_chan *c = &pt->chan;
	ssize_t n;

	buf_reserve(&c->in, NEG_READ_CHUNK);
	n = read(c->fd, c->in.p + c->in.len, NEG_READ_CHUNK);
	if (n > 0) {
		c->in.len += (size_t)n;
		c->last_rx = neg_now();
		return 2;
	}
	if (n < 0)
		return errno == EAGAIN || errno == EINTR ? 1 : -1;
	if (pt->tty) {
		errno = ENODEV;
		return -1;
	}
	return 0;
}

/* Whether the host is there now. */
static void
port_probe(struct port *pt, int64_t now)
{
	int r = port_read(pt);
	struct pollfd q = { pt->chan.fd, POLLIN, 0 };

	switch (r) {
	case 2:
	case 1:
		/*
		 * Data and the host's "port open" come on different virtqueues, and
		 * the kernel handles the control message later, in a work item: a
		 * request can be read while the port still says the host is away,
		 * with poll() reporting POLLHUP.  Until the kernel catches up, such
		 * a hang-up is not taken for the host's departure.
		 */
		pt->unconfirmed = r == 2 && poll(&q, 1, 0) == 1 && (q.revents & POLLHUP) ?
		    now + GUEST_UNCONFIRMED_MS : 0;
		port_event(pt, EV_HOST, now);
		return;
	case -1:
		port_event(pt, EV_LOST, now);
		return;
	}
	port_event(pt, EV_NO_HOST, now);
}

/*
 * A POLLHUP is taken for the host's departure only when read() agrees (0, or
 * an error): poll has been seen to report a hang-up while the host stayed
 * connected, and killing its running command then would be wrong.
 */
static int
port_still_up(struct port *pt)
{
	if (port_read(pt) < 1)
		return 0;
	neg_log(LOG_DEBUG, "port: a hang-up the port itself does not confirm; staying");
	return 1;
}

/* Says once, at start, how the daemon will learn that the host came. */
static void
port_sigio_init(struct port *pt)
{
	const char *no_sigio = getenv("NEGOTIATOR_NO_SIGIO"), *hint = getenv("NEGOTIATOR_NO_RELEASE_HINT");
	struct utsname u;

	/* NEGOTIATOR_NO_SIGIO=1 takes the path of kernels without fasync, for tests */
	pt->sigio = !(no_sigio && *no_sigio && strcmp(no_sigio, "0") != 0);
	if (!pt->sigio) {
		neg_log(LOG_INFO, "SIGIO on host connect: not used (NEGOTIATOR_NO_SIGIO); "
		    "probing every %d ms while the host is away", GUEST_PROBE_MAX_MS);
		return;
	}
	/* NEGOTIATOR_NO_RELEASE_HINT=1, for tests: SIGIO is believed only once one has come */
	if (uname(&u) == 0 && sigio_expected(u.release) && !(hint && *hint && strcmp(hint, "0") != 0)) {
		pt->sigio_trusted = 1;
		neg_log(LOG_INFO, "SIGIO on host connect: expected (Linux %s); probing every "
		    "%d s at most while the host is away", u.release, GUEST_PROBE_SAFETY_MS / 1000);
	} else {
		neg_log(LOG_INFO, "SIGIO on host connect: not known to come (Linux %s); probing "
		    "every %d ms while the host is away until one does", uname(&u) == 0 ?
		    u.release : "?", GUEST_PROBE_MAX_MS);
	}
}

/*
 * What the daemon does on the signals the self-pipe brought (SIGCHLD aside:
 * the loop reaps): SIGTERM or SIGINT begin the stop (neg_stop: no new
 * commands, a running one may finish for NEG_STOP_GRACE_MS, then is killed);
 * SIGIO is the port's event; SIGHUP reopens the log and probes an absent
 * host at once (commands are looked up at each call: nothing to re-read).
 */
static void
guestd_signals(struct port *pt, const char *dir, unsigned sigs, int64_t now, struct neg_stop *stop)
{
	if ((sigs & (NEG_SIG(SIGTERM) | NEG_SIG(SIGINT))) && stop->step == NEG_STOP_NONE) {
		neg_log(LOG_INFO, "terminating: no new commands; a running one may finish for %d s",
		    NEG_STOP_GRACE_MS / 1000);
		neg_stop_begin(stop, now);
		if (pt->chan.srv)
			neg_chan_stop(&pt->chan, stop->step);
	}
	if (sigs & NEG_SIG(SIGIO))
		port_event(pt, EV_SIGIO, now);
	if (sigs & NEG_SIG(SIGHUP)) {
		if (neg_syslog)
			closelog();
		neg_log(LOG_INFO, "SIGHUP: commands are read from %s at each call; log reopened, "
		    "port probed", dir);
		if (pt->state != PORT_UP)
			pt->probe_at = now;
	}
}

/* The daemon's poll slots: the self-pipe, then the port's channel as neg_chan_pollfds fills it. */
enum { GD_PFD_SIG, GD_PFD_CHAN, GD_PFD_PORT = GD_PFD_CHAN + NEG_CHAN_PFD_PEER,
    GD_PFD_JOBS = GD_PFD_CHAN + NEG_CHAN_PFD_JOBS, GD_PFD_COUNT = GD_PFD_CHAN + NEG_CHAN_FDS };

static int
guest_daemon(struct neg_server *srv, const char *given)
{
	struct pollfd p[GD_PFD_COUNT];
	struct port pt;
	int64_t now, wake, poll_warned = 0;
	char path[PATH_MAX];
	struct neg_stop stop = { NEG_STOP_NONE, 0 };
	unsigned sigs;
	int n, chld, i, fd, step;

	memset(&pt, 0, sizeof(pt));
	pt.chan.fd = -1;
	pt.given = given;
	if (neg_signals_init() < 0)
		neg_die("cannot set up signal handling: %s", strerror(errno));
	if ((fd = find_and_open(given, H2G_NAME, neg_now() + GUEST_FIND_PORT_MS, path, sizeof(path))) < 0)
		return 255;
	port_sigio_init(&pt);
	port_attach(&pt, srv, fd, path, neg_now());
	neg_log(LOG_INFO, "negotiator-guest %s started", NEG_VERSION);
	for (;;) {
		now = neg_now();
		if (stop.step && (pt.chan.srv == NULL || !neg_chan_busy(&pt.chan))) {
			if (pt.chan.srv)
				neg_chan_free(&pt.chan);
			return 0;
		}
		if ((step = neg_stop_due(&stop, now)) != NEG_STOP_NONE && pt.chan.srv)
			neg_chan_stop(&pt.chan, step);
		if (pt.state != PORT_UP && now >= pt.probe_at) {
			if (pt.state == PORT_CLOSED)
				port_reopen(&pt, srv, now);
			else
				port_probe(&pt, now);
			continue;
		}
		p[GD_PFD_SIG].fd = neg_sigpipe_fd();
		p[GD_PFD_SIG].events = POLLIN;
		p[GD_PFD_SIG].revents = 0;
		n = GD_PFD_CHAN;
		wake = neg_min_deadline(pt.state == PORT_UP ? 0 : pt.probe_at, stop.at);
		if (pt.chan.srv) {
			/* read while stopping too: the running call's stdin, credit and cancels */
			n += neg_chan_pollfds(&pt.chan, p + GD_PFD_CHAN, 1);
			if (pt.state != PORT_UP)
				p[GD_PFD_PORT].fd = -1;	/* never poll a port whose host is away: it spins */
			wake = neg_min_deadline(wake, neg_chan_wake(&pt.chan));
		}
		if (neg_poll(p, (nfds_t)n, neg_poll_timeout(wake, now), &poll_warned) < 0 &&
		    errno != EINTR)
			continue;
		now = neg_now();
		sigs = (p[GD_PFD_SIG].revents & POLLIN) ? neg_signal_drain() : 0;
		guestd_signals(&pt, srv->env.dir, sigs, now, &stop);
		chld = (sigs & NEG_SIG(SIGCHLD)) != 0;
		if (pt.chan.srv == NULL)
			continue;
		if (pt.state == PORT_UP) {
			/* poll() reports a hang-up whenever there is one: none means connected */
			if (!(p[GD_PFD_PORT].revents & POLLHUP))
				pt.unconfirmed = 0;
			if (neg_chan_io(&pt.chan, p + GD_PFD_CHAN, n - GD_PFD_CHAN) < 0) {
				neg_log(LOG_DEBUG, "port: revents %#x, errno %d", p[GD_PFD_PORT].revents,
				    errno);
				if (errno != 0 && errno != EPIPE && errno != ECONNRESET)
					port_event(&pt, EV_LOST, now);
				else if (port_still_up(&pt))
					;	/* a hang-up the port itself does not confirm: stay */
				else if (pt.unconfirmed && now < pt.unconfirmed)
					port_event(&pt, EV_EARLY_HANGUP, now);
				else
					port_event(&pt, pt.tty ? EV_LOST : EV_HANGUP, now);
			}
		} else {
			for (i = GD_PFD_JOBS; i < n; i++)
				if (p[i].revents)
					break;
			if (i < n) {
				p[GD_PFD_PORT].revents = 0;
				neg_chan_io(&pt.chan, p + GD_PFD_CHAN, n - GD_PFD_CHAN);
			}
		}
		if (chld)
			neg_chan_reap(&pt.chan);
		neg_chan_tick(&pt.chan, now);
	}
}

int
main(int argc, char **argv)
{
	struct neg_cli o;
	const char *device = NULL;
	char path[PATH_MAX];
	int c, fd, rc;
	int64_t deadline;

	opterr = 0;	/* one line of our own instead of getopt's two */
	neg_progname = "negotiator-guest";
	neg_cli_init(&o, usage_text, 1);
	while ((c = getopt_long(argc, argv, "le:dt:c:vqh", longopts, NULL)) != -1) {
		if (neg_cli_option(&o, c, c == '?' ? argv[(optind > argc ? argc : optind) - 1] : optarg))
			continue;
		if (c == 'l')
			o.mode = c;
		else if (c == 'c')
			device = optarg;
		else
			neg_cli_option(&o, '?', argv[optind - 1]);
	}
	if (optind < argc)
		neg_die("unexpected argument '%s' (the guest takes no positional arguments)",
		    argv[optind]);
	if (o.mode == 0) {
		fputs(usage_text, stdout);
		return 0;
	}
	neg_cli_verbosity(&o);
	if (o.mode == 'd')
		return guest_daemon(&o.srv, device);
	neg_cli_prepare(&o);
	signal(SIGPIPE, SIG_IGN);
	deadline = o.deadline >= 0 ? o.deadline : neg_now() + NEG_POLL_MAX_MS;
	if ((fd = find_and_open(device, G2H_NAME, deadline, path, sizeof(path))) < 0) {
		neg_cli_free(&o);
		return 255;
	}
	if (o.mode == 'l')
		rc = neg_cli_list(fd, NEG_CALL_PORT, &o, "host");
	else
		rc = neg_cli_execute(fd, NEG_CALL_PORT, &o, "host");
	close(fd);
	neg_cli_free(&o);
	return rc;
}
