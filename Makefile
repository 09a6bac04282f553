# negotiator: static musl binaries of negotiator-host and negotiator-guest.
#
#   make            both programs (x86_64, static musl) and the i386 guest when its libc is there
#   make check      every test tier (bats); make check-fast: unit and fake-port tiers only
#   make asan       the same programs under AddressSanitizer/UBSan (glibc) in asan/
#   make demo       boot a test VM and call both ways
#   make bench      measurements, printed as numbers
#   make fuzz       libFuzzer harnesses (clang) in t/fuzz-bin/; make fuzz-run runs each FUZZ_SECONDS
#   make dist       a release tarball that builds with a C compiler and musl alone

VERSION  = 0.9.0
MUSLCC  ?= musl-gcc
CC      ?= cc
JSMN_SRC ?= /usr/include/jsmn.h
PREFIX  ?= /usr/local
WARN     = -std=c99 -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
           -Wpointer-arith -Wcast-qual -Wwrite-strings
CFLAGS  ?= -Os
DEFS     = -D_GNU_SOURCE
# Size matters for a binary copied into every guest: no unwind tables (C, nothing unwinds), one
# text segment instead of page-aligned separate ones, no build id or RELRO page.
SMALL    = -ffunction-sections -fdata-sections -fno-asynchronous-unwind-tables -fno-unwind-tables
LDSTATIC = -static -Wl,--gc-sections -s -Wl,-z,noseparate-code -Wl,-z,norelro -Wl,--build-id=none
SHARED   = neg.c neg_proto.c
HEADERS  = neg_proto.h jsmn.h Makefile

# i386: Debian's musl:i386 and musl-dev:i386 unpacked under t/.cache/musl-i386 by t/setup
I386ROOT ?= t/.cache/musl-i386/usr/lib/i386-linux-musl
I386INC  ?= t/.cache/musl-i386/usr/include/i386-linux-musl

# a static i386 program: musl's start files and libc.a by hand (no i386 musl-gcc wrapper in Debian)
I386CC    = $(CC) -m32 -fno-stack-protector -nostdinc -nostdlib -isystem $(I386INC) \
            -isystem $$($(CC) -m32 -print-file-name=include)
I386START = $(I386ROOT)/crt1.o $(I386ROOT)/crti.o
I386END   = $(I386ROOT)/libc.a $$($(CC) -m32 -print-libgcc-file-name) $(I386ROOT)/crtn.o

PROGS = negotiator-host negotiator-guest
HAVE_I386 = $(if $(wildcard $(I386ROOT)/libc.a),1)
ALL   = $(PROGS) $(if $(HAVE_I386),negotiator-guest.i386)
TESTPROGS = t/neg-test t/fakeport t/fakeguests t/oldkernel $(if $(HAVE_I386),t/oldkernel.i386)

all: $(ALL)

jsmn.h:
	@test -r $(JSMN_SRC) || { echo "jsmn.h: $(JSMN_SRC) is missing: apt-get install libjsmn-dev" >&2; exit 1; }
	cp $(JSMN_SRC) $@

negotiator-host: neg_host.c $(SHARED) $(HEADERS)
	$(MUSLCC) $(WARN) $(CFLAGS) $(DEFS) $(SMALL) -o $@ neg_host.c $(SHARED) $(LDSTATIC)

negotiator-guest: neg_guest.c $(SHARED) $(HEADERS)
	$(MUSLCC) $(WARN) $(CFLAGS) $(DEFS) $(SMALL) -o $@ neg_guest.c $(SHARED) $(LDSTATIC)

negotiator-guest.i386: neg_guest.c $(SHARED) $(HEADERS)
	$(I386CC) $(WARN) $(CFLAGS) $(DEFS) $(SMALL) -o $@ $(I386START) neg_guest.c $(SHARED) $(I386END) $(LDSTATIC)

i386:
	t/setup
	$(MAKE) negotiator-guest.i386

# runs a program with the system calls of Linux 2.6.32 only (the rest fail with ENOSYS)
t/oldkernel: t/oldkernel.c
	$(CC) $(WARN) -O1 $(DEFS) -o $@ t/oldkernel.c

# the same for the VM, next to the i386 guest
t/oldkernel.i386: t/oldkernel.c
	$(I386CC) $(WARN) -O1 $(DEFS) -o $@ $(I386START) t/oldkernel.c $(I386END) -static

t/fakeport: t/fakeport.c
	$(CC) $(WARN) -O1 $(DEFS) -o $@ t/fakeport.c

t/fakeguests: t/fakeguests.c $(SHARED) $(HEADERS)
	$(CC) $(WARN) -O2 $(DEFS) -I. -o $@ t/fakeguests.c $(SHARED)

t/neg-test: t/neg_test.c $(SHARED) $(HEADERS)
	$(MUSLCC) $(WARN) -O1 $(DEFS) -I. -o $@ t/neg_test.c $(SHARED) -static

asan/negotiator-host asan/negotiator-guest asan/neg-test: neg_host.c neg_guest.c t/neg_test.c $(SHARED) $(HEADERS)
	mkdir -p asan
	$(CC) $(WARN) -O1 -g $(DEFS) -I. -fsanitize=address,undefined -fno-sanitize-recover=all -o asan/negotiator-host neg_host.c $(SHARED)
	$(CC) $(WARN) -O1 -g $(DEFS) -I. -fsanitize=address,undefined -fno-sanitize-recover=all -o asan/negotiator-guest neg_guest.c $(SHARED)
	$(CC) $(WARN) -O1 -g $(DEFS) -I. -fsanitize=address,undefined -fno-sanitize-recover=all -o asan/neg-test t/neg_test.c $(SHARED)

asan: asan/negotiator-host

# libFuzzer harnesses, one binary per target of t/fuzz.c (-DFUZZ_READER, ...); clang alone has libFuzzer
FUZZCC      ?= clang
FUZZFLAGS    = -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
FUZZ_TARGETS = reader request response base64 split numbers
FUZZ_BINS    = $(FUZZ_TARGETS:%=t/fuzz-bin/%)

$(FUZZ_BINS): t/fuzz.c $(SHARED) $(HEADERS)
	@mkdir -p t/fuzz-bin
	$(FUZZCC) $(WARN) $(FUZZFLAGS) $(DEFS) -I. -DFUZZ_$$(echo $(@F) | tr a-z A-Z) -o $@ t/fuzz.c $(SHARED) -lm

fuzz: $(FUZZ_BINS)

# each target for FUZZ_SECONDS (default 60), two at a time, on a copy of its corpus
fuzz-run: $(FUZZ_BINS)
	bats --tap t/fuzz.bats

check: all $(TESTPROGS) asan fuzz
	t/run-tests

check-fast: all $(TESTPROGS) asan
	NEG_TIERS="unit fake" t/run-tests

demo: all
	t/demo

bench: all $(TESTPROGS)
	t/bench

install: $(PROGS)
	install -d $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)/usr/lib/negotiator/commands
	install -m 755 $(PROGS) $(DESTDIR)$(PREFIX)/sbin/

dist: jsmn.h
	rm -rf negotiator-$(VERSION)
	mkdir -p negotiator-$(VERSION)
	cp -R Makefile LICENSE README.md jsmn.h neg.c neg_proto.c neg_proto.h neg_host.c neg_guest.c init \
	  commands t negotiator-$(VERSION)/
	cd negotiator-$(VERSION) && rm -rf t/.cache $(TESTPROGS) t/oldkernel.i386 t/fuzz-bin
	tar czf negotiator-$(VERSION).tar.gz negotiator-$(VERSION)
	rm -rf negotiator-$(VERSION)

clean:
	rm -rf $(PROGS) negotiator-guest.i386 $(TESTPROGS) t/oldkernel.i386 asan t/fuzz-bin negotiator-*.tar.gz

.PHONY: all i386 asan fuzz fuzz-run check check-fast demo bench install dist clean
