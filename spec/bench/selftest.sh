#!/bin/sh
# make bench, first step: the load generator and the sink are checked
# against each other and against Postfix's smtp-sink before any figure is
# taken. loadgen must print a rate only for a clean run, and fail (exit 1, no
# rate) on a 5xx, a 4xx, a dropped connection, a refused connection.
# Runs inside the bench's network namespace; stops what it starts by PID.
#   selftest.sh LOADGEN SINK WORKDIR
set -u
lg=$1 sink=$2 work=$3
mkdir -p "$work"
pids=
fails=0
trap 'for p in $pids; do kill "$p" 2>/dev/null; done' EXIT

start() { # port argv...: start a server, wait until it accepts
	port=$1
	shift
	"$@" >/dev/null 2>&1 &
	pids="$pids $!"
	i=0
	while ! /usr/bin/python3 -c 'import socket, sys
socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' \
		"$port" 2>/dev/null; do
		i=$((i + 1))
		[ $i -lt 50 ] || { echo "selftest: no server on $port"; exit 1; }
		sleep 0.1
	done
}

check() { # want_rc name loadgen-args...: rate printed iff want_rc = 0
	want=$1 name=$2
	shift 2
	out=$("$lg" "$@" 2>&1)
	rc=$?
	rate=$(printf '%s\n' "$out" | grep -c '^rate ')
	if [ "$rc" -ne "$want" ] || { [ "$want" -eq 0 ] && [ "$rate" -ne 1 ]; } ||
		{ [ "$want" -ne 0 ] && [ "$rate" -ne 0 ]; }; then
		echo "selftest: FAIL $name: exit $rc (want $want), rate lines $rate"
		printf '%s\n' "$out" | sed 's/^/  /'
		fails=$((fails + 1))
	else
		echo "selftest: ok   $name"
	fi
}

openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/k.pem" \
	-out "$work/c.pem" -subj /CN=sink.bench.example -days 1 2>/dev/null
start 2800 "$sink" -t "$work/c.pem" -k "$work/k.pem" -o "$work/count" \
	127.0.0.1:2800
start 2801 smtp-sink -u root -f RCPT 127.0.0.1:2801 64
start 2802 smtp-sink -u root -r MAIL 127.0.0.1:2802 64
start 2803 smtp-sink -u root -q DATA 127.0.0.1:2803 64

check 0 "plain, 20 sessions, 1 message/connection" -c 20 -n 500 127.0.0.1:2800
check 0 "pipelining, 10 messages/connection" -P -m 10 -c 20 -n 500 \
	127.0.0.1:2800
check 0 "STARTTLS" -t -c 10 -n 100 127.0.0.1:2800
check 0 "duration mode" -c 5 -d 0.5 127.0.0.1:2800
check 1 "5xx to RCPT" -c 5 -n 50 127.0.0.1:2801
check 1 "4xx to MAIL" -c 5 -n 50 127.0.0.1:2802
check 1 "connection dropped at DATA" -c 5 -n 50 127.0.0.1:2803
check 1 "connection refused" -c 5 -n 50 127.0.0.1:2804
check 1 "STARTTLS not offered" -t -c 2 -n 4 127.0.0.1:2801

kill -USR1 "$(echo $pids | cut -d' ' -f1)"
sleep 0.1
got=$(awk '{print $1}' "$work/count")
# 500 + 500 + 100 + the duration run's
if [ "$got" -lt 1100 ]; then
	echo "selftest: FAIL sink counted $got messages, want >= 1100"
	fails=$((fails + 1))
fi
[ "$fails" -eq 0 ] || { echo "selftest: $fails failed"; exit 1; }
echo "selftest: loadgen and sink ok"
