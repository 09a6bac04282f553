# negotiator: static musl binaries of negotiator-host and negotiator-guest.
#
#   make            both programs (x86_64, static musl) and the i386 guest when its libc is there
#   make check      every test tier (bats); make check-fast: unit and fake-port tiers only
#   make asan       the same programs under AddressSanitizer/UBSan (glibc) in asan/
#   make glibc      the two programs static against glibc in glibc/ (make LIBC=glibc: in place)
#   make demo       boot a test VM and call both ways
#   make bench      measurements beside the floors and qemu-ga: a table and PNGs in bench/, then
#                   Ansible through our collection beside libvirt_qemu (make bench-ansible alone)
#   make fuzz       libFuzzer harnesses (clang) in t/fuzz-bin/; make fuzz-run runs each FUZZ_SECONDS
#   make dist       a release tarball that builds with a C compiler and musl alone
#   make install    programs, man pages, service files, completion, the Ansible collection (PREFIX,
#                   DESTDIR); make uninstall
#   make deb        Debian packages of both programs in pkg/out/

VERSION  = 0.9.0
MUSLCC  ?= musl-gcc
# LIBC=glibc builds both programs static against glibc instead, for systems with Linux 3.2 or
# later (glibc's own floor); musl stays the default and the only choice for 2.6.32 guests
LIBC    ?= musl
PROGCC   = $(if $(filter glibc,$(LIBC)),$(CC),$(MUSLCC))
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
# the compilers' version strings that libc.a's objects carry: no use at run time
NOCOMMENT = strip -R .comment
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

# $(call prog,COMPILER,OUTPUT,MAIN.c): one static program of MAIN.c and the shared files
prog = $(1) $(WARN) $(CFLAGS) $(DEFS) $(SMALL) -o $(2) $(3) $(SHARED) $(LDSTATIC) && $(NOCOMMENT) $(2)

negotiator-host: neg_host.c $(SHARED) $(HEADERS)
	$(call prog,$(PROGCC),$@,neg_host.c)

negotiator-guest: neg_guest.c $(SHARED) $(HEADERS)
	$(call prog,$(PROGCC),$@,neg_guest.c)

negotiator-guest.i386: neg_guest.c $(SHARED) $(HEADERS)
	$(I386CC) $(WARN) $(CFLAGS) $(DEFS) $(SMALL) -o $@ $(I386START) neg_guest.c $(SHARED) $(I386END) $(LDSTATIC)
	$(NOCOMMENT) $@

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

# the glibc build in glibc/, for the fake-port tier to run against once (make LIBC=glibc gives
# the same programs in place of the musl ones)
glibc/negotiator-host glibc/negotiator-guest: neg_host.c neg_guest.c $(SHARED) $(HEADERS)
	mkdir -p glibc
	$(call prog,$(CC),glibc/negotiator-host,neg_host.c)
	$(call prog,$(CC),glibc/negotiator-guest,neg_guest.c)

glibc: glibc/negotiator-host

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

check: all $(TESTPROGS) asan glibc fuzz
	t/run-tests

check-fast: all $(TESTPROGS) asan glibc
	NEG_TIERS="unit fake" t/run-tests

demo: all
	t/demo

bench: all $(TESTPROGS)
	t/bench
	t/bench-ansible

bench-ansible: all
	t/bench-ansible

# Where make install puts things; DESTDIR prefixes them all (for packages).  The commands
# directory and the files under /etc are where the programs and init systems look whatever
# PREFIX is; the units go where systemd reads a PREFIX's units (/usr/local/lib/systemd/system).
SBINDIR     = $(PREFIX)/sbin
MANDIR      = $(PREFIX)/share/man
DOCDIR      = $(PREFIX)/share/doc/negotiator
UNITDIR     = $(PREFIX)/lib/systemd/system
COMPDIR     = $(PREFIX)/share/bash-completion/completions
COMMANDSDIR = /usr/lib/negotiator/commands
SYSCONFDIR  = /etc
# the guest binary installed by install-guest (negotiator-guest.i386 for a 32-bit guest)
GUEST_BIN   = negotiator-guest
EXAMPLES    = commands/README commands/guest-uptime commands/health-check commands/load \
              commands/read-file commands/reconfigure-network commands/sh commands/write-file
# the Ansible collection negotiator.guest, where ansible-galaxy installs collections for every
# user (Ansible's default collections path has /usr/share/ansible/collections whatever PREFIX is)
ANSIBLEDIR  = /usr/share/ansible/collections/ansible_collections/negotiator/guest
ANSIBLE_FILES = galaxy.yml README.md meta/runtime.yml plugins/connection/negotiator.py \
              plugins/inventory/negotiator.py plugins/plugin_utils/runner.py
# service files name the programs by their installed path
SUBST       = sed 's|/usr/sbin/|$(SBINDIR)/|g'

install: install-host install-guest

install-host: negotiator-host
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(COMMANDSDIR) \
	  $(DESTDIR)$(DOCDIR)/examples/commands $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSCONFDIR)/init.d \
	  $(DESTDIR)$(COMPDIR)
	install -m 755 negotiator-host $(DESTDIR)$(SBINDIR)/negotiator-host
	install -m 644 man/negotiator-host.8 $(DESTDIR)$(MANDIR)/man8/
	install -m 644 $(EXAMPLES) $(DESTDIR)$(DOCDIR)/examples/commands/
	$(SUBST) init/supervisord.conf > $(DESTDIR)$(DOCDIR)/examples/negotiator-host.supervisord.conf
	$(SUBST) init/negotiator-host.service > $(DESTDIR)$(UNITDIR)/negotiator-host.service
	$(SUBST) init/negotiator-guest.init | sed 's/negotiator-guest/negotiator-host/g; s/_GUEST_OPTS/_HOST_OPTS/g' \
	  > $(DESTDIR)$(SYSCONFDIR)/init.d/negotiator-host
	chmod 755 $(DESTDIR)$(SYSCONFDIR)/init.d/negotiator-host
	install -m 644 init/negotiator.bash $(DESTDIR)$(COMPDIR)/negotiator-host
	for f in $(ANSIBLE_FILES); do install -D -m 644 ansible/$$f $(DESTDIR)$(ANSIBLEDIR)/$$f || exit 1; done

install-guest: $(GUEST_BIN)
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(COMMANDSDIR) \
	  $(DESTDIR)$(DOCDIR)/examples/commands $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSCONFDIR)/init.d \
	  $(DESTDIR)$(SYSCONFDIR)/init $(DESTDIR)$(COMPDIR)
	install -m 755 $(GUEST_BIN) $(DESTDIR)$(SBINDIR)/negotiator-guest
	install -m 644 man/negotiator-guest.8 $(DESTDIR)$(MANDIR)/man8/
	install -m 644 $(EXAMPLES) $(DESTDIR)$(DOCDIR)/examples/commands/
	$(SUBST) init/negotiator-guest.service > $(DESTDIR)$(UNITDIR)/negotiator-guest.service
	$(SUBST) init/negotiator-guest.init > $(DESTDIR)$(SYSCONFDIR)/init.d/negotiator-guest
	chmod 755 $(DESTDIR)$(SYSCONFDIR)/init.d/negotiator-guest
	$(SUBST) init/negotiator-guest.upstart > $(DESTDIR)$(SYSCONFDIR)/init/negotiator-guest.conf
	install -m 644 init/negotiator.bash $(DESTDIR)$(COMPDIR)/negotiator-guest

# removes what install put there, and the directories that are then empty
uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/negotiator-host $(DESTDIR)$(SBINDIR)/negotiator-guest \
	  $(DESTDIR)$(MANDIR)/man8/negotiator-host.8 $(DESTDIR)$(MANDIR)/man8/negotiator-guest.8 \
	  $(DESTDIR)$(UNITDIR)/negotiator-host.service $(DESTDIR)$(UNITDIR)/negotiator-guest.service \
	  $(DESTDIR)$(SYSCONFDIR)/init.d/negotiator-host $(DESTDIR)$(SYSCONFDIR)/init.d/negotiator-guest \
	  $(DESTDIR)$(SYSCONFDIR)/init/negotiator-guest.conf \
	  $(DESTDIR)$(COMPDIR)/negotiator-host $(DESTDIR)$(COMPDIR)/negotiator-guest
	rm -rf $(DESTDIR)$(DOCDIR)/examples $(DESTDIR)$(ANSIBLEDIR)
	-rmdir $(DESTDIR)$(dir $(ANSIBLEDIR)) 2>/dev/null
	-rmdir $(DESTDIR)$(DOCDIR) $(DESTDIR)$(COMMANDSDIR) $(DESTDIR)/usr/lib/negotiator 2>/dev/null

# Debian packages, built with dpkg-deb alone: negotiator-host (amd64) and negotiator-guest
# (amd64, and i386 when its musl is there), in pkg/out/
deb: negotiator-host negotiator-guest $(if $(HAVE_I386),negotiator-guest.i386)
	pkg/mkdeb $(VERSION) $(if $(HAVE_I386),i386)

dist: jsmn.h
	rm -rf negotiator-$(VERSION)
	mkdir -p negotiator-$(VERSION)
	cp -R Makefile LICENSE README.md jsmn.h neg.c neg_proto.c neg_proto.h neg_host.c neg_guest.c init \
	  commands man pkg t ansible negotiator-$(VERSION)/
	cd negotiator-$(VERSION) && rm -rf pkg/out t/.cache $(TESTPROGS) t/oldkernel.i386 t/fuzz-bin
	tar czf negotiator-$(VERSION).tar.gz negotiator-$(VERSION)
	rm -rf negotiator-$(VERSION)

clean:
	rm -rf $(PROGS) negotiator-guest.i386 $(TESTPROGS) t/oldkernel.i386 asan glibc t/fuzz-bin negotiator-*.tar.gz pkg/out

.PHONY: all i386 asan glibc fuzz fuzz-run check check-fast demo bench bench-ansible install install-host install-guest \
        uninstall deb dist clean
