/*
 * fakeport: a stand-in for one QEMU virtio-serial port, for the fast tests.
 *
 * usage: fakeport LINK SOCKET
 *
 * Makes a pty whose slave is reachable as LINK (the "guest's" character
 * device, in raw mode) and listens on the UNIX socket SOCKET (the "host's"
 * chardev socket), and copies bytes both ways between the pty master and the
 * one connected client.
 *
 * It is a full-duplex bridge with bounded memory: one poll loop, every
 * descriptor non-blocking, and per direction one ring of FP_RING bytes.  A
 * side is read only while the ring it feeds has room, and POLLOUT is armed
 * only while a ring holds data, so a peer that stops reading stops only the
 * direction towards it (its sender waits, as QEMU throttles a port), never
 * the other one, and nothing grows with the bytes that pass.
 *
 * What it imitates of QEMU's socket chardev:
 * - one client at a time; later ones wait in the listen backlog
 *   (FP_BACKLOG) and are accepted when the current one has gone;
 * - what the guest writes while no client is connected is read and dropped;
 * - a client that goes away (end of file or an error on reading; a
 *   half-close counts, as it does for QEMU) is closed, and what was queued
 *   for it is dropped, so the next client starts clean.  What it had sent
 *   still reaches the guest, in order, before the next client's bytes.  A
 *   client that cannot be written to any more is treated as no client for
 *   the guest's bytes until its end of file is read;
 * - the pty master keeps a slave open itself, so it never reports a hang-up
 *   between guest openers.  Because of that, what the host sends while no
 *   guest has LINK open is not lost: it waits in the pty's input queue (and,
 *   once that is full, in the ring and then the client's socket, the client
 *   being held back), and the next guest opener reads it first.  fakeport
 *   never reads its own slave.
 * It does not imitate virtio_console's POLLHUP; the QEMU tier tests that.
 */
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#define FP_RING		65536	/* bytes buffered per direction */
#define FP_BACKLOG	8	/* clients waiting while one is served */

/* The pollfd slots: the pty master, and the client (or, with none, the listening socket). */
enum { PFD_PTY, PFD_HOST, PFD_COUNT };

/* A byte queue of FP_RING bytes: len bytes from head, wrapping at the end. */
struct ring {
	char	 buf[FP_RING];
	size_t	 head;
	size_t	 len;
};

/* Up to two iovecs over r's free space (room) or its bytes (!room); returns how many. */
static int
ring_iov(struct ring *r, int room, struct iovec *iov)
{
	size_t start, n, first;

	if (room) {
		start = (r->head + r->len) % FP_RING;
		n = FP_RING - r->len;
	} else {
		start = r->head;
		n = r->len;
	}
	first = FP_RING - start < n ? FP_RING - start : n;
	iov[0].iov_base = r->buf + start;
	iov[0].iov_len = first;
	iov[1].iov_base = r->buf;
	iov[1].iov_len = n - first;
	return iov[1].iov_len > 0 ? 2 : 1;
}

/* Reads what fd has into r's free space: 0 (also when nothing is there yet), -1 at EOF or error. */
static int
ring_fill(struct ring *r, int fd)
{
	struct iovec iov[2];
	ssize_t n;

	if (r->len == FP_RING)
		return 0;
	n = readv(fd, iov, ring_iov(r, 1, iov));
	if (n < 0)
		return errno == EAGAIN || errno == EINTR ? 0 : -1;
	if (n == 0)
		return -1;
	r->len += (size_t)n;
	return 0;
}

/* Writes what fd takes of r's bytes: 0 (also when it takes nothing yet), or -1 on an error. */
static int
ring_drain(struct ring *r, int fd)
{
	struct iovec iov[2];
	ssize_t n;

	if (r->len == 0)
		return 0;
	n = writev(fd, iov, ring_iov(r, 0, iov));
	if (n < 0)
		return errno == EAGAIN || errno == EINTR ? 0 : -1;
	r->head = (r->head + (size_t)n) % FP_RING;
	r->len -= (size_t)n;
	if (r->len == 0)
		r->head = 0;
	return 0;
}

static void
ring_clear(struct ring *r)
{
	r->head = r->len = 0;
}

static void
set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
		perror("fakeport: fcntl");
		exit(1);
	}
}

int
main(int argc, char **argv)
{
	static struct ring to_guest, to_host;
	struct sockaddr_un sa;
	struct termios t;
	struct pollfd pfd[PFD_COUNT];
	int master, slave, lsock, client = -1, client_ok = 0;

	if (argc != 3) {
		fprintf(stderr, "usage: fakeport LINK SOCKET\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	if ((master = posix_openpt(O_RDWR | O_NOCTTY)) < 0 || grantpt(master) < 0 ||
	    unlockpt(master) < 0) {
		perror("fakeport: pty");
		return 1;
	}
	/* keep a slave open so the master never reports a hang-up between guest openers */
	if ((slave = open(ptsname(master), O_RDWR | O_NOCTTY)) < 0 || tcgetattr(slave, &t) < 0) {
		perror("fakeport: pty slave");
		return 1;
	}
	cfmakeraw(&t);
	tcsetattr(slave, TCSANOW, &t);
	unlink(argv[1]);
	if (symlink(ptsname(master), argv[1]) < 0) {
		perror("fakeport: symlink");
		return 1;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", argv[2]);
	unlink(argv[2]);
	if ((lsock = socket(AF_UNIX, SOCK_STREAM, 0)) < 0 ||
	    bind(lsock, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lsock, FP_BACKLOG) < 0) {
		perror("fakeport: socket");
		return 1;
	}
	set_nonblock(master);
	set_nonblock(lsock);
	/*
	 * A turn: arm each side for what its rings allow, poll, then read both
	 * sides, accept or drop the client, and write both rings.  A ring is
	 * written after a read in the same turn without waiting for POLLOUT: the
	 * descriptor is non-blocking, so at worst the write takes nothing.  A
	 * side with nothing to wait for is left out (fd -1), so a hung-up client
	 * whose input cannot be taken yet does not make poll return at once.
	 */
	for (;;) {
		pfd[PFD_PTY].fd = master;
		pfd[PFD_PTY].events = (to_host.len < FP_RING ? POLLIN : 0) |
		    (to_guest.len > 0 ? POLLOUT : 0);
		if (client < 0) {
			pfd[PFD_HOST].fd = lsock;
			pfd[PFD_HOST].events = POLLIN;
		} else {
			pfd[PFD_HOST].fd = client;
			pfd[PFD_HOST].events = (to_guest.len < FP_RING ? POLLIN : 0) |
			    (to_host.len > 0 ? POLLOUT : 0);
		}
		for (int i = 0; i < PFD_COUNT; i++)
			if (pfd[i].events == 0)
				pfd[i].fd = -1;
		if (poll(pfd, PFD_COUNT, -1) < 0) {
			if (errno == EINTR)
				continue;
			perror("fakeport: poll");
			return 1;
		}
		if (pfd[PFD_PTY].revents & (POLLIN | POLLHUP | POLLERR)) {
			if (ring_fill(&to_host, master) < 0) {
				perror("fakeport: pty read");
				return 1;
			}
			if (!client_ok)
				ring_clear(&to_host);	/* to nobody: dropped, as QEMU does */
		}
		if (client < 0 && (pfd[PFD_HOST].revents & POLLIN)) {
			if ((client = accept(lsock, NULL, NULL)) >= 0) {
				set_nonblock(client);
				client_ok = 1;
			}
		} else if (client >= 0 && (pfd[PFD_HOST].revents & (POLLIN | POLLHUP | POLLERR)) &&
		    ring_fill(&to_guest, client) < 0) {
			close(client);
			client = -1;
			client_ok = 0;
			ring_clear(&to_host);
		}
		if (ring_drain(&to_guest, master) < 0) {
			perror("fakeport: pty write");
			return 1;
		}
		if (client_ok && ring_drain(&to_host, client) < 0) {
			client_ok = 0;
			ring_clear(&to_host);
		}
	}
}
