#!/bin/bash
# make bench-postfix: the same relay load as bench_gateway.py, against a
# private Postfix instance on 127.0.0.1:2600 relaying to smtp-sink, for the
# side-by-side figures in README "Performance". Root only (Postfix's master).
#
# Postfix acknowledges a message only after its queue file is fsynced, as
# smtpgw does. Its daemons log to syslog; where no syslog runs, a small
# listener on /dev/log catches the lines that count deliveries.
set -eu
[ "$(id -u)" -eq 0 ] || { echo "bench-postfix: run as root" >&2; exit 1; }

work=$(mktemp -d /tmp/smtpgw-bench-postfix.XXXXXX)
chmod 755 "$work" # Postfix's daemons run as postfix and must reach the queue
sink_port=27101
pids=()
made_devlog=

cleanup() {
	postfix -c "$work" stop >/dev/null 2>&1 || true
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	[ -z "$made_devlog" ] || rm -f /dev/log
	rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/main.cf" <<EOF
queue_directory = $work/queue
data_directory = $work/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = pfx.bench.example
mydestination =
relay_domains = bench.example
transport_maps = inline:{bench.example=smtp:[127.0.0.1]:$sink_port}
smtp_tls_security_level = none
smtpd_tls_security_level = none
compatibility_level = 3.6
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
default_process_limit = 100
smtp_dns_support_level = disabled
alias_maps =
alias_database =
EOF
# Debian's master.cf, listening on 127.0.0.1:2600, nothing chrooted.
sed -e 's/^smtp      inet  n       -       y       -       -       smtpd/127.0.0.1:2600 inet n - n - - smtpd/' \
    -e 's/^\(\S*\s\+\S\+\s\+\S\+\s\+\S\+\s\+\)y\(\s\)/\1n\2/' \
    /etc/postfix/master.cf >"$work/master.cf"

# The queue tree post-install would make (it needs the shared postfix-files).
mkdir -p "$work/data" "$work/queue/pid"
for d in active bounce corrupt defer deferred flush hold incoming private saved trace; do
	install -d -o postfix -g root -m 700 "$work/queue/$d"
done
install -d -o postfix -g postdrop -m 730 "$work/queue/maildrop"
install -d -o postfix -g postdrop -m 710 "$work/queue/public"
chown postfix:postfix "$work/data"

if [ ! -e /dev/log ]; then
	made_devlog=1
	/usr/bin/python3 -c '
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("/dev/log"); os.chmod("/dev/log", 0o666)
with open(sys.argv[1], "a") as f:
    while True:
        f.write(s.recv(8192).decode("utf8", "replace") + "\n"); f.flush()
' "$work/syslog" &
	pids+=($!)
	sleep 0.3
fi
logfile=${made_devlog:+$work/syslog}
logfile=${logfile:-/var/log/mail.log}

smtp-sink -u root "127.0.0.1:$sink_port" 256 >/dev/null 2>&1 &
pids+=($!)
postfix -c "$work" start
for _ in $(seq 50); do
	/usr/bin/python3 -c 'import socket; socket.create_connection(("127.0.0.1", 2600))' \
		2>/dev/null && break
	sleep 0.1
done

/usr/bin/python3 - "$logfile" <<'EOF'
import os, smtplib, socket, sys, threading, time
log = sys.argv[1]
THREADS, PER_THREAD = 8, 250
BODY = ("Subject: bench\r\n\r\n" + "x" * 70 + "\r\n") * 40
start_sent = open(log, errors="replace").read().count("status=sent")
errors = []

def sender():
    try:
        c = smtplib.SMTP("127.0.0.1", 2600, timeout=60)
        c.ehlo("client.bench")
        for _ in range(PER_THREAD):
            c.sendmail("from@origin.example", ["to@bench.example"], BODY)
        c.quit()
    except Exception as e:
        errors.append(repr(e))

threads = [threading.Thread(target=sender) for _ in range(THREADS)]
t0 = time.time()
for t in threads: t.start()
for t in threads: t.join()
accepted = time.time() - t0
total = THREADS * PER_THREAD
sent = 0
while time.time() - t0 < 180:
    sent = open(log, errors="replace").read().count("status=sent") - start_sent
    if sent >= total: break
    time.sleep(0.1)
delivered = time.time() - t0
print("postfix relay: %d messages, %d threads, errors %d: accepted %.0f msg/s "
      "(%.2f s), delivered %d to smtp-sink: %.0f msg/s (%.2f s)"
      % (total, THREADS, len(errors), total / accepted, accepted, sent,
         sent / delivered, delivered))

# One smtpd process per connection: its proportional memory (PSS).
def smtpd_pss():
    total_kib = count = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = open("/proc/%s/cmdline" % pid).read().split("\0")
            if not argv[0].endswith("smtpd") or "127.0.0.1:2600" not in argv:
                continue
            for line in open("/proc/%s/smaps_rollup" % pid):
                if line.startswith("Pss:"):
                    total_kib += int(line.split()[1]); count += 1
        except OSError:
            pass
    return total_kib, count
socks = [socket.create_connection(("127.0.0.1", 2600)) for _ in range(20)]
for s in socks: s.recv(200)
time.sleep(1)
kib, n = smtpd_pss()
print("postfix idle: %d smtpd processes hold %d KiB PSS: %.0f KiB per "
      "connection (each holds one)" % (n, kib, kib / max(n, 1)))
EOF
