# smtpgw build. `make` builds build/smtpgw; `make run` and `make check` first
# install the Debian packages that are missing (as root), see README.md.

CC      ?= cc
PKGCONF ?= pkg-config

WARN    = -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
	  -Wmissing-prototypes -Wformat=2
CSTD    = -std=c17 -D_GNU_SOURCE -Isrc
INC     = $(shell $(PKGCONF) --cflags inih luajit 2>/dev/null) \
	  $(shell $(PKGCONF) --cflags libunbound 2>/dev/null) \
	  $(shell $(PKGCONF) --cflags libcurl 2>/dev/null) \
	  -DSMTPGW_LUA_DIR='"$(CURDIR)/lua"'
# libev is linked statically: Debian's libev.so also exports libevent's API
# (event_base_new, event_add, ...), which would take the place of the real
# libevent inside libunbound and corrupt its memory; from libev.a only ev.o
# is pulled in.
LIBS    = -l:libev.a $(shell $(PKGCONF) --libs inih 2>/dev/null || echo -linih) \
	  $(shell $(PKGCONF) --libs luajit 2>/dev/null || echo -lluajit-5.1) \
	  $(shell $(PKGCONF) --libs libunbound 2>/dev/null || echo -lunbound) \
	  $(shell $(PKGCONF) --libs libcurl 2>/dev/null || echo -lcurl) \
	  -ltls -lssl -lcrypto -lpthread

CFLAGS_RELEASE = $(CSTD) $(WARN) -O2 -g $(INC)
SANITIZE       = -fsanitize=address,undefined -fno-sanitize-recover=undefined \
		 -fno-omit-frame-pointer
CFLAGS_CHECK   = $(CSTD) $(WARN) -O1 -g $(SANITIZE) $(INC)

# src/ has a folder per layer (README "Source layout"); includes name the
# folder ("core/log.h"), so -Isrc is the only include path.
SRC      = $(wildcard src/*.c src/*/*.c)
HDR      = $(wildcard src/*/*.h)
OBJ      = $(SRC:src/%.c=build/obj/%.o)
OBJ_CHK  = $(SRC:src/%.c=build/check/obj/%.o)

# Debian packages: what building, running and checking need.
DEPS_BUILD = build-essential pkg-config libev-dev libinih-dev libtls-dev libssl-dev \
	     libluajit2-5.1-dev libunbound-dev libcurl4-openssl-dev ca-certificates \
	     dns-root-data
DEPS_CHECK = lua-busted luajit2 lua-socket swaks iproute2 util-linux libnet-ssleay-perl \
	     libio-socket-ssl-perl python3 procps openssl testssl.sh mandoc strace \
	     ldnsutils
# Debian packages that ship a service: postfix (smtp-sink, and the
# side-by-side bench), unbound (a DNS server for specs), haproxy (PROXY
# protocol in front of two gateways), prometheus (promtool checks the
# metrics endpoint's text).
DEPS_SERVICES = postfix unbound haproxy prometheus

.PHONY: all run check deps deps-check deps-services deps-fuzz deps-postfix user unit clean fuzz format \
	bench install uninstall version-stamp

all: build/smtpgw

build/smtpgw: $(OBJ)
	$(CC) $(CFLAGS_RELEASE) -o $@ $(OBJ) $(LIBS)

build/obj/%.o: src/%.c $(HDR)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_RELEASE) -c -o $@ $<

build/check/smtpgw: $(OBJ_CHK)
	$(CC) $(CFLAGS_CHECK) -o $@ $(OBJ_CHK) $(LIBS)

build/check/obj/%.o: src/%.c $(HDR)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_CHECK) -c -o $@ $<

build/check/test_smtp_proto: spec/c/test_smtp_proto.c src/proto/smtp_proto.c $(HDR) spec/c/tap.h | build/check/obj
	$(CC) $(CFLAGS_CHECK) -Isrc -o $@ spec/c/test_smtp_proto.c src/proto/smtp_proto.c

build/check/test_dsn: spec/c/test_dsn.c src/proto/dsn.c $(HDR) spec/c/tap.h | build/check/obj
	$(CC) $(CFLAGS_CHECK) -Isrc -o $@ spec/c/test_dsn.c src/proto/dsn.c

build/check/test_envelope: spec/c/test_envelope.c src/proto/envelope.c $(HDR) spec/c/tap.h | build/check/obj
	$(CC) $(CFLAGS_CHECK) -Isrc -o $@ spec/c/test_envelope.c src/proto/envelope.c

build/check/test_log_format: spec/c/test_log_format.c src/proto/log_format.c $(HDR) spec/c/tap.h | build/check/obj
	$(CC) $(CFLAGS_CHECK) -Isrc -o $@ spec/c/test_log_format.c src/proto/log_format.c

build/check/test_dns_wire: spec/c/test_dns_wire.c src/proto/dns_wire.c $(HDR) spec/c/tap.h | build/check/obj
	$(CC) $(CFLAGS_CHECK) -Isrc -o $@ spec/c/test_dns_wire.c src/proto/dns_wire.c

build/check/test_proxy: spec/c/test_proxy.c src/proto/proxy.c $(HDR) spec/c/tap.h | build/check/obj
	$(CC) $(CFLAGS_CHECK) -Isrc -o $@ spec/c/test_proxy.c src/proto/proxy.c

build/check/test_tlsa: spec/c/test_tlsa.c src/proto/tlsa.c src/proto/dns_wire.c $(HDR) spec/c/tap.h | build/check/obj
	$(CC) $(CFLAGS_CHECK) -Isrc -o $@ spec/c/test_tlsa.c src/proto/tlsa.c src/proto/dns_wire.c

# DANE matching on the certificates of spec/c/fixtures/dane/ (libcrypto).
TEST_DANE_SRC = spec/c/test_dane.c src/net/dane.c src/proto/tlsa.c src/proto/dns_wire.c
build/check/test_dane: $(TEST_DANE_SRC) $(HDR) spec/c/tap.h | build/check/obj
	$(CC) $(CFLAGS_CHECK) -Isrc -o $@ $(TEST_DANE_SRC) -lcrypto

build/check/test_sts: spec/c/test_sts.c src/proto/sts.c $(HDR) spec/c/tap.h | build/check/obj
	$(CC) $(CFLAGS_CHECK) -Isrc -o $@ spec/c/test_sts.c src/proto/sts.c

build/check/test_suggest: spec/c/test_suggest.c src/policy/suggest.c $(HDR) spec/c/tap.h | build/check/obj
	$(CC) $(CFLAGS_CHECK) -Isrc -o $@ spec/c/test_suggest.c src/policy/suggest.c

TEST_CONFIG_SRC = spec/c/test_config.c src/core/config.c src/proto/smtp_proto.c \
		  src/proto/next_hop.c src/proto/dns_wire.c src/proto/log_format.c
build/check/test_config: $(TEST_CONFIG_SRC) $(HDR) spec/c/tap.h | build/check/obj
	$(CC) $(CFLAGS_CHECK) -Isrc -o $@ $(TEST_CONFIG_SRC) $(FUZZ_LIBS_config)

build/check/test_http_req: spec/c/test_http_req.c src/proto/http_req.c $(HDR) spec/c/tap.h | build/check/obj
	$(CC) $(CFLAGS_CHECK) -Isrc -o $@ spec/c/test_http_req.c src/proto/http_req.c

build/check/test_stats: spec/c/test_stats.c src/core/stats.c $(HDR) spec/c/tap.h | build/check/obj
	$(CC) $(CFLAGS_CHECK) -Isrc -o $@ spec/c/test_stats.c src/core/stats.c

TEST_QUEUE_SCAN_SRC = spec/c/test_queue_scan.c src/spool/queue_scan.c \
		      src/spool/queue.c src/proto/envelope.c \
		      src/proto/smtp_proto.c src/core/log.c src/proto/log_format.c
build/check/test_queue_scan: $(TEST_QUEUE_SCAN_SRC) $(HDR) spec/c/tap.h | build/check/obj
	$(CC) $(CFLAGS_CHECK) -Isrc -o $@ $(TEST_QUEUE_SCAN_SRC) -l:libev.a -lpthread

# limits.c is included by its test (white-box checks of the shared table).
build/check/test_conncache: spec/c/test_conncache.c src/outbound/conncache.c $(HDR) spec/c/tap.h | build/check/obj
	$(CC) $(CFLAGS_CHECK) -Isrc -o $@ spec/c/test_conncache.c src/outbound/conncache.c

build/check/test_limits: spec/c/test_limits.c src/inbound/limits.c src/core/log.c src/proto/log_format.c $(HDR) spec/c/tap.h | build/check/obj
	$(CC) $(CFLAGS_CHECK) -Isrc -o $@ spec/c/test_limits.c src/core/log.c \
		src/proto/log_format.c -l:libev.a -lpthread

# The TLS ticket key ring (net/tls_resume.c).
TEST_TLS_RESUME_SRC = spec/c/test_tls_resume.c src/net/tls_resume.c src/core/log.c \
		      src/proto/log_format.c
build/check/test_tls_resume: $(TEST_TLS_RESUME_SRC) $(HDR) spec/c/tap.h | build/check/obj
	$(CC) $(CFLAGS_CHECK) -Isrc -o $@ $(TEST_TLS_RESUME_SRC) -l:libev.a -ltls -lssl \
		-lcrypto -lpthread

TEST_SCHEDULER_SRC = spec/c/test_scheduler.c src/outbound/scheduler.c \
		     src/outbound/idmap.c
build/check/test_scheduler: $(TEST_SCHEDULER_SRC) $(HDR) spec/c/tap.h | build/check/obj
	$(CC) $(CFLAGS_CHECK) -Isrc -o $@ $(TEST_SCHEDULER_SRC) -lm

# One smtp_client transaction, driven by spec/integration/smtp_client_spec.lua.
CLIENT_DRIVER_OBJ = $(addprefix build/check/obj/,outbound/smtp_client.o \
		    outbound/conncache.o net/conn.o net/tls.o net/tls_resume.o \
		    net/certs.o net/dane.o core/config.o core/log.o core/netaddr.o \
		    proto/smtp_proto.o proto/smtp_out.o \
		    proto/next_hop.o proto/dns_wire.o proto/tlsa.o proto/log_format.o)
build/check/client_driver: spec/c/client_driver.c $(CLIENT_DRIVER_OBJ) $(HDR)
	$(CC) $(CFLAGS_CHECK) -Isrc -o $@ spec/c/client_driver.c \
		$(CLIENT_DRIVER_OBJ) $(LIBS)

# The queue runner on its own loop, driven by spec/integration/
# delivery_uaf_spec.lua: the objects below proc/, but not inbound/ or cli/.
DELIVERY_DRIVER_OBJ = $(filter-out build/check/obj/main.o build/check/obj/proc/% \
		      build/check/obj/inbound/% build/check/obj/cli/%,$(OBJ_CHK))
build/check/delivery_driver: spec/c/delivery_driver.c $(DELIVERY_DRIVER_OBJ) $(HDR)
	$(CC) $(CFLAGS_CHECK) -Isrc -o $@ spec/c/delivery_driver.c \
		$(DELIVERY_DRIVER_OBJ) $(LIBS)

# The policy sandbox's string functions as a Lua module, compared with
# LuaJIT's own by spec/unit/sandbox_str_spec.lua. Not sanitized: busted's
# luajit is not, and could not load it.
SANDBOX_STR_SRC = spec/c/sandbox_str_module.c src/policy/sandbox_str.c \
		  src/policy/pattern.c
build/check/sandbox_str.so: $(SANDBOX_STR_SRC) $(HDR) | build/check/obj
	$(CC) $(CSTD) $(WARN) -O2 -g -fPIC -shared $(INC) -o $@ $(SANDBOX_STR_SRC)

build/obj build/check/obj:
	mkdir -p $@

# Installs only what dpkg says is not installed ("dpkg -s" also succeeds
# for a removed package that left its config files), so a ready machine is
# not touched and a non-root user gets a clear list instead of a failed
# apt-get.
installed = dpkg-query -W -f='$${Status}' $(1) 2>/dev/null | grep -q '^install ok installed'

define install_missing
	@missing=""; for p in $(1); do \
		$(call installed,$$p) || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" -ne 0 ]; then \
			echo "smtpgw: missing Debian packages:$$missing" >&2; \
			echo "smtpgw: run as root, or: apt-get install$$missing" >&2; \
			exit 1; \
		fi; \
		echo "smtpgw: installing$$missing"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
			--no-install-recommends $$missing >/dev/null || { \
			apt-get update -q >/dev/null && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
				--no-install-recommends $$missing >/dev/null; }; \
	fi
endef

deps:
	$(call install_missing,$(DEPS_BUILD))

deps-check: deps
	$(call install_missing,$(DEPS_CHECK))
	@# Packages that ship a service, installed with services forbidden to
	@# start (policy-rc.d): nothing starts listening on port 25 or 53.
	@missing=""; for p in $(DEPS_SERVICES); do \
		$(call installed,$$p) || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		made=; if [ "$$(id -u)" -eq 0 ] && [ ! -e /usr/sbin/policy-rc.d ]; then \
			printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && \
			chmod 755 /usr/sbin/policy-rc.d && made=1; \
		fi; \
		$(MAKE) --no-print-directory deps-services; rc=$$?; \
		[ -z "$$made" ] || rm -f /usr/sbin/policy-rc.d; exit $$rc; \
	fi

deps-services:
	$(call install_missing,$(DEPS_SERVICES))

# Kept for `make bench` and old habits: Postfix alone.
deps-postfix:
	$(call install_missing,postfix)

# The unprivileged user the gateway's children run as when it is started
# as root ([gateway] user, default smtpgw): a system user without a shell
# or a home.
GW_USER ?= smtpgw
user:
	@if [ "$$(id -u)" -eq 0 ] && ! id -u $(GW_USER) >/dev/null 2>&1; then \
		echo "smtpgw: creating system user $(GW_USER)"; \
		useradd --system --no-create-home --home-dir /nonexistent \
			--shell /usr/sbin/nologin $(GW_USER); \
	fi

run: deps user
	$(MAKE) build/smtpgw
	./build/smtpgw -c examples/gateway.ini

check: deps-check user
	$(MAKE) build/check/smtpgw build/check/test_smtp_proto build/check/test_dsn \
		build/check/test_envelope build/check/test_config \
		build/check/test_dns_wire build/check/test_limits build/check/test_proxy \
		build/check/test_suggest build/check/test_http_req build/check/test_stats \
		build/check/test_queue_scan build/check/test_log_format \
		build/check/test_tls_resume build/check/test_sts \
		build/check/test_tlsa build/check/test_dane build/check/test_conncache \
		build/check/test_scheduler \
		build/check/client_driver build/check/delivery_driver \
		build/check/sandbox_str.so $(REPLAY_BINS)
	./spec/run.sh

# ---- fuzzing (README "Fuzzing") ----------------------------------------
# One libFuzzer harness per parser, spec/fuzz/fuzz_NAME.c, over the sources
# FUZZ_SRC_NAME. `make fuzz` builds them with clang and runs each for
# FUZZ_SECONDS (spec/fuzz/run.sh; crash inputs and the growing corpora stay
# in build/fuzz/); `make check` replays each committed corpus,
# spec/fuzz/corpus/NAME/, through the same harness built with $(CC) and
# CFLAGS_CHECK around spec/fuzz/replay_main.c (no clang needed).
FUZZ_SECONDS ?= 60
FUZZ_NAMES ?= smtp_proto envelope dsn config dns_wire smtp_reply dot_stuff proxy \
	      http_req log_format tlsa sts
FUZZ_SRC_smtp_proto = src/proto/smtp_proto.c
FUZZ_SRC_envelope   = src/proto/envelope.c
FUZZ_SRC_dsn        = src/proto/dsn.c
FUZZ_SRC_config     = src/core/config.c src/proto/smtp_proto.c \
		      src/proto/next_hop.c src/proto/dns_wire.c src/proto/log_format.c
FUZZ_LIBS_config    = $(shell $(PKGCONF) --libs inih 2>/dev/null || echo -linih)
FUZZ_SRC_dns_wire   = src/proto/dns_wire.c
FUZZ_SRC_smtp_reply = src/proto/smtp_out.c src/proto/smtp_proto.c
FUZZ_SRC_dot_stuff  = src/proto/smtp_out.c src/proto/smtp_proto.c
FUZZ_SRC_proxy      = src/proto/proxy.c
FUZZ_SRC_http_req   = src/proto/http_req.c
FUZZ_SRC_log_format = src/proto/log_format.c
FUZZ_SRC_tlsa       = src/proto/tlsa.c src/proto/dns_wire.c
FUZZ_SRC_sts        = src/proto/sts.c
FUZZ_CFLAGS = $(CSTD) $(WARN) -g -O1 -fsanitize=fuzzer,address,undefined \
	      -fno-sanitize-recover=undefined -fno-omit-frame-pointer $(INC)
REPLAY_BINS = $(FUZZ_NAMES:%=build/check/replay_%)
DEPS_FUZZ   = clang libclang-rt-14-dev

.SECONDEXPANSION:
build/fuzz/bin/fuzz_%: spec/fuzz/fuzz_%.c $$(FUZZ_SRC_$$*) $(HDR)
	@mkdir -p $(@D)
	clang $(FUZZ_CFLAGS) -o $@ $< $(FUZZ_SRC_$*) $(FUZZ_LIBS_$*)

build/check/replay_%: spec/fuzz/fuzz_%.c spec/fuzz/replay_main.c \
		$$(FUZZ_SRC_$$*) $(HDR)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_CHECK) -o $@ $< spec/fuzz/replay_main.c \
		$(FUZZ_SRC_$*) $(FUZZ_LIBS_$*)

deps-fuzz: deps
	$(call install_missing,$(DEPS_FUZZ))

# Exits non-zero when a harness crashed (or could not be built).
fuzz: deps-fuzz
	$(MAKE) $(FUZZ_NAMES:%=build/fuzz/bin/fuzz_%)
	FUZZ_SECONDS=$(FUZZ_SECONDS) ./spec/fuzz/run.sh $(FUZZ_NAMES)

# The cost of one policy decision (README "Performance"); a release build.
BENCH_SRC = spec/bench/bench_policy.c src/policy/policy.c src/policy/suggest.c \
	    src/policy/sandbox_str.c src/policy/pattern.c src/core/config.c \
	    src/core/log.c src/proto/smtp_proto.c src/proto/next_hop.c \
	    src/proto/dns_wire.c src/proto/log_format.c src/proto/sts.c
build/bench_policy: $(BENCH_SRC) $(HDR) | build/obj
	$(CC) $(CFLAGS_RELEASE) -Isrc -o $@ $(BENCH_SRC) $(LIBS)

# The C load generator and sink behind every figure of `make bench`.
build/bench/loadgen: spec/bench/loadgen.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_RELEASE) -o $@ $< -l:libev.a -ltls -lssl -lcrypto

build/bench/sink: spec/bench/sink.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_RELEASE) -o $@ $< -l:libev.a -ltls -lssl -lcrypto

# smtpgw and a private Postfix side by side (README "Performance"): root,
# sealed in a network namespace with only lo; the load generator and sink
# are checked first (selftest.sh). ROUNDS=3 WORKERS=1,2 PARTS=a,b,c,d,e,f
# RELAY_N= TLS_N= IDLE_N= PF_IDLE_N= SYSCALL_N= HS_N= TLS_OUT_N= tune it
# (spec/bench/bench.py).
# PARTS=q (smtpgw with a large deferred queue) takes DEFERRED_N=.
bench: deps user build/bench_policy
	@mkdir -p build/bench
	@for p in try require require_verify; do \
		printf '[gateway]\nhostname = mx.example.test\n[policy]\nscript = %s/policies/%s.lua\n[domain:partner.example]\ntls = verify\n' \
			"$(CURDIR)" $$p > build/bench/$$p.ini; done
	./build/bench_policy build/bench/try.ini build/bench/require.ini \
		build/bench/require_verify.ini
	$(MAKE) --no-print-directory deps-check build/smtpgw build/bench/loadgen \
		build/bench/sink
	$(call install_missing,linux-perf)
	rm -rf build/bench/run
	{ unshare --net -- sh -c 'ip link set lo up && spec/bench/selftest.sh \
		build/bench/loadgen build/bench/sink build/bench/run/selftest && \
		exec /usr/bin/python3 spec/bench/bench.py $(CURDIR)/build/smtpgw \
		$(CURDIR)/build/bench/loadgen $(CURDIR)/build/bench/sink \
		$(CURDIR)/build/bench/run'; echo $$? >build/bench/rc; } 2>&1 | \
		tee build/bench/results.txt; exit $$(cat build/bench/rc)

# ---- installation (README "Operating") ----------------------------------
# `make install` copies the release binary to $(PREFIX)/sbin/smtpgw and
# lua/ and policies/ to $(PREFIX)/share/smtpgw, which the binary finds
# from its own location (/proc/self/exe → ../share/smtpgw; src/core/
# paths.c), so a DESTDIR staging tree runs as it is. A binary under this
# tree's build/ uses this tree instead (make run, make check). Also: the
# man pages, the systemd unit, the examples, and SYSCONFDIR/smtpgw/
# gateway.ini unless one exists (never overwritten). The paths in the
# unit and the installed gateway.ini are the defaults below, rewritten to
# the ones given. INSTALL_BIN picks another build (the specs install the
# sanitized one).
PREFIX         ?= /usr/local
DESTDIR        ?=
SYSCONFDIR     ?= /etc
SPOOLDIR       ?= /var/spool/smtpgw
MANDIR         ?= $(PREFIX)/share/man
DOCDIR         ?= $(PREFIX)/share/doc/smtpgw
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
INSTALL_BIN    ?= build/smtpgw
MAN_PAGES       = src/man/smtpgw.8 src/man/gateway.ini.5 src/man/smtpgw-policy.7

# `smtpgw --version`: a v* tag's `git describe`, else BASE_VERSION and
# the commit; BASE_VERSION alone outside git.
BASE_VERSION = 0.1.0
GIT_DESCRIBE := $(shell git describe --tags --match 'v[0-9]*' 2>/dev/null)
GIT_REV      := $(shell git rev-parse --short=12 HEAD 2>/dev/null)
VERSION      ?= $(if $(GIT_DESCRIBE),$(GIT_DESCRIBE:v%=%),$(BASE_VERSION)$(if $(GIT_REV),+g$(GIT_REV)))
INC += -DSMTPGW_VERSION='"$(VERSION)"'

# Rewritten only when the version changes, so that version_command.o is
# rebuilt then and only then.
build/version: version-stamp
	@mkdir -p build
	@echo '$(VERSION)' | cmp -s - $@ || echo '$(VERSION)' >$@
build/obj/cli/version_command.o build/check/obj/cli/version_command.o: \
	build/version

# The default paths in examples/smtpgw.service and examples/installed.ini,
# rewritten to the ones given.
INSTALL_SED = sed -e 's|/usr/local/|$(PREFIX)/|g' \
		  -e 's|/etc/smtpgw|$(SYSCONFDIR)/smtpgw|g' \
		  -e 's|/var/spool/smtpgw|$(SPOOLDIR)|g'

install: $(INSTALL_BIN)
	install -d $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(PREFIX)/share/smtpgw \
		$(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man7 \
		$(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(DOCDIR)/examples/policies \
		$(DESTDIR)$(SYSTEMDUNITDIR) $(DESTDIR)$(SYSCONFDIR)/smtpgw/certs \
		$(DESTDIR)$(SPOOLDIR)
	install -m 0755 $(INSTALL_BIN) $(DESTDIR)$(PREFIX)/sbin/smtpgw
	rm -rf $(DESTDIR)$(PREFIX)/share/smtpgw/lua \
		$(DESTDIR)$(PREFIX)/share/smtpgw/policies
	for f in $$(find lua policies -name '*.lua' | sort); do \
		install -D -m 0644 $$f $(DESTDIR)$(PREFIX)/share/smtpgw/$$f \
		|| exit 1; done
	install -m 0644 src/man/smtpgw.8 $(DESTDIR)$(MANDIR)/man8/
	install -m 0644 src/man/gateway.ini.5 $(DESTDIR)$(MANDIR)/man5/
	install -m 0644 src/man/smtpgw-policy.7 $(DESTDIR)$(MANDIR)/man7/
	install -m 0644 README.md $(DESTDIR)$(DOCDIR)/
	install -m 0644 examples/gateway.ini examples/installed.ini \
		examples/smtpgw.service $(DESTDIR)$(DOCDIR)/examples/
	install -m 0644 examples/policies/*.lua \
		$(DESTDIR)$(DOCDIR)/examples/policies/
	$(INSTALL_SED) examples/smtpgw.service \
		>$(DESTDIR)$(SYSTEMDUNITDIR)/smtpgw.service
	chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/smtpgw.service
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/smtpgw/gateway.ini ]; then \
		echo "smtpgw: $(DESTDIR)$(SYSCONFDIR)/smtpgw/gateway.ini exists: kept"; \
	else \
		$(INSTALL_SED) examples/installed.ini \
			>$(DESTDIR)$(SYSCONFDIR)/smtpgw/gateway.ini && \
		chmod 0644 $(DESTDIR)$(SYSCONFDIR)/smtpgw/gateway.ini; \
	fi

# Removes what install put down but the configuration, the certificates
# and the spool, as `apt remove` would.
uninstall:
	rm -f $(DESTDIR)$(PREFIX)/sbin/smtpgw \
		$(DESTDIR)$(MANDIR)/man8/smtpgw.8 \
		$(DESTDIR)$(MANDIR)/man5/gateway.ini.5 \
		$(DESTDIR)$(MANDIR)/man7/smtpgw-policy.7 \
		$(DESTDIR)$(SYSTEMDUNITDIR)/smtpgw.service
	rm -rf $(DESTDIR)$(PREFIX)/share/smtpgw $(DESTDIR)$(DOCDIR)
	@echo "smtpgw: kept $(DESTDIR)$(SYSCONFDIR)/smtpgw and $(DESTDIR)$(SPOOLDIR)"

format:
	clang-format -i src/*.c src/*/*.c src/*/*.h spec/c/*.c spec/fuzz/*.c

clean:
	rm -rf build
