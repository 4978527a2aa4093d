#!/usr/bin/env bash
# `make fuzz`: runs each named harness, build/fuzz/bin/fuzz_NAME, for
# FUZZ_SECONDS (default 60), one after the other, starting from the
# committed seeds in spec/fuzz/corpus/NAME/. What the fuzzer finds goes to
# build/fuzz/NAME/ (its growing corpus in corpus/, crash, leak, timeout and
# oom inputs as crash-*, leak-*, timeout-*, oom-*, the whole log in log),
# never to the work tree. Prints one line per harness: executions, libFuzzer
# coverage (cov: edges, ft: features), corpus size and crashes. Exits 1 when
# any harness crashed or did not run.
set -u

cd "$(dirname "$0")/../.." || exit 1
seconds=${FUZZ_SECONDS:-60}
failed=0

for name in "$@"; do
	bin=build/fuzz/bin/fuzz_$name
	out=build/fuzz/$name
	mkdir -p "$out/corpus"
	# A slow input is a finding too (-timeout), and so is a leak.
	"$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
		-print_final_stats=1 -artifact_prefix="$out/" \
		"$out/corpus" "spec/fuzz/corpus/$name" >"$out/log" 2>&1
	status=$?
	found=$(find "$out" -maxdepth 1 \( -name 'crash-*' -o -name 'leak-*' \
		-o -name 'timeout-*' -o -name 'oom-*' \) | sort)
	crashes=$(printf '%s' "$found" | grep -c .)
	last=$(grep -E '^#[0-9]+' "$out/log" | tail -1)
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/log")
	cov=$(echo "$last" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')
	ft=$(echo "$last" | sed -n 's/.* ft: \([0-9]*\).*/\1/p')
	corp=$(echo "$last" | sed -n 's/.* corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p')
	echo "fuzz_$name: ${seconds}s, ${execs:-?} executions, cov ${cov:-?}," \
		"ft ${ft:-?}, corpus ${corp:-?}, crashes $crashes," \
		"exit status $status (log: $out/log)"
	if [ "$status" -ne 0 ] || [ "$crashes" -ne 0 ]; then
		grep -E 'ERROR|SUMMARY' "$out/log" | head -5
		[ -z "$found" ] || printf '  input: %s\n' $found
		failed=$((failed + 1))
	fi
done
echo "fuzz: $# harnesses, $failed crashed or failed"
[ "$failed" -eq 0 ]
