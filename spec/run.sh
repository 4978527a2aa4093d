#!/usr/bin/env bash
# Runs every spec for `make check`: the C unit tests (build/check/
# test_smtp_proto, test_dsn, test_envelope, test_dns_wire, test_proxy,
# test_config, test_limits, test_log_format, test_suggest, test_http_req,
# test_stats, test_queue_scan, test_tls_resume, test_tlsa, test_dane,
# test_conncache and test_scheduler, TAP), the fuzz corpora replayed
# (build/check/replay_NAME spec/fuzz/corpus/NAME/) and the busted
# specs in spec/unit and spec/integration (TAP), against the sanitized
# build/check/smtpgw.
# Prints all output, then as the very last line "N passed, N failed".
# Exits 1 when anything failed or a runner crashed.
set -u

cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)

# Sealed on loopback: the specs run in a network namespace of their own
# that has only `lo`, so nothing they start can reach anything but
# 127.0.0.0/8 and ::1 (DNS included). That needs root on Linux; anywhere
# else the run goes on unsealed, with a warning in its output.
if [ -z "${SMTPGW_SEALED:-}" ]; then
	if [ "$(id -u)" -eq 0 ] && command -v unshare >/dev/null &&
		command -v ip >/dev/null &&
		unshare --net true 2>/dev/null; then
		exec unshare --net -- env SMTPGW_SEALED=1 sh -c \
			'ip link set lo up && exec "$0" "$@"' "$0" "$@"
	fi
	echo "# WARNING: not sealed: the specs can reach the network" \
		"(a private network namespace needs root, unshare and ip)"
	export SMTPGW_SEALED=0
fi

export SMTPGW_BIN="$ROOT/build/check/smtpgw"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export LC_ALL=C.UTF-8

passed=0
failed=0
skipped=0

# count_tap NAME STATUS FILE: add the TAP results of one runner. A runner
# that exited non-zero without reporting a failure counts as one failure;
# so does a runner that reported no test at all.
count_tap() {
	local name=$1 status=$2 file=$3
	local ok notok skip
	ok=$(grep -cE '^ok [0-9]+' "$file")
	skip=$(grep -cE '^ok [0-9]+ - # SKIP' "$file")
	notok=$(grep -cE '^not ok [0-9]+' "$file")
	ok=$((ok - skip))
	echo "# $name: $ok ok, $notok not ok, $skip skipped, exit status $status"
	passed=$((passed + ok))
	failed=$((failed + notok))
	skipped=$((skipped + skip))
	if [ "$status" -ne 0 ] && [ "$notok" -eq 0 ]; then
		echo "# $name: runner exited with status $status without a failing test: counted as 1 failure"
		failed=$((failed + 1))
	elif [ $((ok + notok + skip)) -eq 0 ]; then
		echo "# $name: runner reported no test: counted as 1 failure"
		failed=$((failed + 1))
	fi
}

tmp=$(mktemp -d /tmp/smtpgw-run.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
export SMTPGW_SPEC_PIDS="$tmp/pids"
# One certificate pair for every gateway of the run (see gateway.lua).
export SMTPGW_SPEC_CERTS="$tmp/certs"
: >"$SMTPGW_SPEC_PIDS"

# ---- C unit tests of src/proto/smtp_proto.c, dsn.c, envelope.c,
# dns_wire.c, proxy.c, log_format.c, tlsa.c and sts.c, of how
# src/core/config.c reads lines, of src/inbound/limits.c,
# src/policy/suggest.c, src/proto/http_req.c, src/core/stats.c and
# src/spool/queue_scan.c, the TLS ticket key ring of src/net/tls_resume.c,
# DANE matching (src/net/dane.c), src/outbound/conncache.c and
# src/outbound/scheduler.c
for t in test_smtp_proto test_dsn test_envelope test_dns_wire test_proxy test_config \
	test_limits test_log_format test_suggest test_http_req test_stats \
	test_queue_scan test_tls_resume test_tlsa test_dane test_sts test_conncache \
	test_scheduler; do
	echo "# ==== spec/c: build/check/$t"
	if [ -x "build/check/$t" ]; then
		timeout -k 10 120 "./build/check/$t" >"$tmp/$t.out" 2>&1
		status=$?
	else
		echo "build/check/$t is missing (run: make build/check/$t)" >"$tmp/$t.out"
		status=127
	fi
	cat "$tmp/$t.out"
	count_tap "spec/c/$t" "$status" "$tmp/$t.out"
done

# ---- the committed fuzz corpora (spec/fuzz/corpus/NAME/), replayed through
# each harness built with the sanitizers, one TAP line per input
for corpus in spec/fuzz/corpus/*/; do
	name=$(basename "$corpus")
	t=replay_$name
	echo "# ==== spec/fuzz: build/check/$t $corpus"
	if [ -x "build/check/$t" ]; then
		timeout -k 10 120 "./build/check/$t" "$corpus" >"$tmp/$t.out" 2>&1
		status=$?
	else
		echo "build/check/$t is missing (run: make build/check/$t)" >"$tmp/$t.out"
		status=127
	fi
	# One line per input would drown the log: failures and the count.
	grep -v '^ok ' "$tmp/$t.out"
	count_tap "spec/fuzz/$t" "$status" "$tmp/$t.out"
done

# ---- busted specs
dirs=()
for d in spec/unit spec/integration examples; do
	[ -d "$d" ] && dirs+=("$d")
done
echo "# ==== busted: ${dirs[*]}"
if [ ! -x "$SMTPGW_BIN" ]; then
	echo "# warning: $SMTPGW_BIN is missing; the integration specs will fail"
fi
# A safety net, not a target (a quiet 2-core CI machine takes about half):
# a loaded machine used to hit 480 s.
timeout -k 10 720 busted --lua=luajit -o TAP "${dirs[@]}" >"$tmp/busted.out" 2>&1
status=$?
cat "$tmp/busted.out"
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
	echo "# busted: timed out"
fi
count_tap "busted" "$status" "$tmp/busted.out"

# A gateway that a crashed spec left running must not outlive the run: the
# harness records every PID it starts in $SMTPGW_SPEC_PIDS.
while read -r pid; do
	[ -n "$pid" ] || continue
	if [ -r "/proc/$pid/cmdline" ] &&
		tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$SMTPGW_BIN -c "; then
		echo "# gateway pid $pid was left running by the specs: killed, counted as 1 failure"
		kill -KILL "$pid" 2>/dev/null
		failed=$((failed + 1))
	fi
done <"$SMTPGW_SPEC_PIDS"

if [ "$skipped" -gt 0 ]; then
	echo "# $skipped skipped"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
