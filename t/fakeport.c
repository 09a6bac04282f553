/*
 * fakeport: a stand-in for one QEMU virtio-serial port, for the fast tests.
 *
 * usage: fakeport LINK SOCKET
 *
 * Makes a pty whose slave is reachable as LINK (the "guest's" character
 * device) and listens on the UNIX socket SOCKET (the "host's" chardev socket).
 * Like QEMU it serves one client at a time, later ones wait in the backlog,
 * and what the guest writes while no client is connected is dropped.
 * It does not imitate virtio_console's POLLHUP; the QEMU tier tests that.
 */
#include <sys/socket.h>
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

static int
pump(int from, int to)
{
	char buf[65536];
	ssize_t n = read(from, buf, sizeof(buf)), off = 0, w;

	if (n <= 0)
		return n == 0 || errno != EAGAIN ? -1 : 0;
	while (to >= 0 && off < n) {
		w = write(to, buf + off, (size_t)(n - off));
		if (w < 0 && errno == EAGAIN) {
			struct pollfd p = { to, POLLOUT, 0 };

			poll(&p, 1, 1000);
			continue;
		}
		if (w <= 0)
			return -2;
		off += w;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	struct sockaddr_un sa;
	struct termios t;
	struct pollfd p[3];
	int master, slave, lsock, client = -1, n, rc;

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
	    bind(lsock, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lsock, 8) < 0) {
		perror("fakeport: socket");
		return 1;
	}
	fcntl(master, F_SETFL, O_NONBLOCK);
	for (;;) {
		p[0].fd = master;
		p[0].events = POLLIN;
		p[1].fd = client >= 0 ? client : lsock;
		p[1].events = POLLIN;
		n = 2;
		if (poll(p, (nfds_t)n, -1) < 0 && errno != EINTR)
			return 1;
		if (p[0].revents & POLLIN)
			pump(master, client);	/* to nobody (-1): dropped, as QEMU does */
		if (client < 0 && (p[1].revents & POLLIN)) {
			client = accept(lsock, NULL, NULL);
			if (client >= 0)
				fcntl(client, F_SETFL, O_NONBLOCK);
		} else if (client >= 0 && (p[1].revents & (POLLIN | POLLHUP | POLLERR))) {
			rc = pump(client, master);
			if (rc < 0) {
				close(client);
				client = -1;
			}
		}
	}
}
