/*
 * oldkernel PROGRAM [ARG...]: runs PROGRAM as if on Linux 2.6.32, as far as
 * system calls go: a seccomp filter makes every call that 2.6.32 did not have
 * fail with ENOSYS, which is what that kernel answers to an unknown number.
 * The filter is inherited by every process PROGRAM starts.
 *
 * Why: musl tries newer calls first and falls back on ENOSYS (on i386 for
 * instance clock_gettime64, statx and the direct socket calls before
 * socketcall); a newer test kernel never takes those fallbacks.  Under this
 * filter the tests take them.
 *
 * 2.6.32's last call is perf_event_open: 298 on x86_64, 336 on i386
 * (arch/x86/include/asm/unistd_{64,32}.h; recvmmsg came in 2.6.33).
 * Numbers are checked per architecture, so one filter serves an i386 program
 * and the x86_64 programs it runs; x32 numbers (bit 30 set) are all refused.
 */
#include <sys/prctl.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/*
 * The kernel's ABI, spelled out here: the static i386 musl build has no
 * kernel headers (linux/filter.h, linux/seccomp.h and linux/audit.h say the same).
 */
struct sock_filter { uint16_t code; uint8_t jt, jf; uint32_t k; };
struct sock_fprog { unsigned short len; struct sock_filter *filter; };
#define BPF_STMT(code, k) { (uint16_t)(code), 0, 0, k }
#define BPF_JUMP(code, k, jt, jf) { (uint16_t)(code), jt, jf, k }
#define BPF_LD_W_ABS 0x20	/* BPF_LD | BPF_W | BPF_ABS */
#define BPF_JEQ_K 0x15		/* BPF_JMP | BPF_JEQ | BPF_K */
#define BPF_JGT_K 0x25		/* BPF_JMP | BPF_JGT | BPF_K */
#define BPF_RET_K 0x06		/* BPF_RET | BPF_K */
#define OFF_NR 0		/* struct seccomp_data: int nr; __u32 arch; ... */
#define OFF_ARCH 4
#define AUDIT_ARCH_X86_64 0xc000003eU
#define AUDIT_ARCH_I386 0x40000003U
#define SECCOMP_RET_ALLOW 0x7fff0000U
#define SECCOMP_RET_ERRNO 0x00050000U
#define SECCOMP_MODE_FILTER 2
#ifndef PR_SET_SECCOMP
#define PR_SET_SECCOMP 22
#endif
#ifndef PR_SET_NO_NEW_PRIVS
#define PR_SET_NO_NEW_PRIVS 38
#endif

#define LAST_X86_64 298
#define LAST_I386 336

int
main(int argc, char **argv)
{
	struct sock_filter f[] = {
		/* 0 */ BPF_STMT(BPF_LD_W_ABS, OFF_ARCH),
		/* 1 */ BPF_JUMP(BPF_JEQ_K, AUDIT_ARCH_X86_64, 0, 2),
		/* 2 */ BPF_STMT(BPF_LD_W_ABS, OFF_NR),
		/* 3 */ BPF_JUMP(BPF_JGT_K, LAST_X86_64, 4, 3),
		/* 4 */ BPF_JUMP(BPF_JEQ_K, AUDIT_ARCH_I386, 0, 3),
		/* 5 */ BPF_STMT(BPF_LD_W_ABS, OFF_NR),
		/* 6 */ BPF_JUMP(BPF_JGT_K, LAST_I386, 1, 0),
		/* 7 */ BPF_STMT(BPF_RET_K, SECCOMP_RET_ALLOW),
		/* 8 */ BPF_STMT(BPF_RET_K, SECCOMP_RET_ERRNO | ENOSYS),
	};
	struct sock_fprog prog = { sizeof(f) / sizeof(f[0]), f };

	if (argc < 2) {
		fprintf(stderr, "usage: oldkernel PROGRAM [ARG...]\n");
		return 2;
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
	    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0) {
		fprintf(stderr, "oldkernel: cannot install the seccomp filter: %s\n", strerror(errno));
		return 2;
	}
	execvp(argv[1], argv + 1);
	fprintf(stderr, "oldkernel: cannot execute %s: %s\n", argv[1], strerror(errno));
	return 127;
}
