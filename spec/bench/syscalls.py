#!/usr/bin/env python3
"""syscalls.py: the system calls of each smtpgw process per relayed message,
for issue 9. Runs the release build with W workers relaying to
spec/bench/sink.c, warms it up, attaches strace to every thread of the
process tree, relays N messages of `make bench`'s load (a) (plain, 4 KiB,
one message per connection, lockstep) with spec/bench/loadgen.c, detaches,
and prints per process role (master, worker, qmgr, metrics) each system
call per message, with the failed ones (and their errno) apart.

Run it sealed, as root (the gateway drops to [gateway] user smtpgw):
  unshare --net -- sh -c 'ip link set lo up && python3 spec/bench/syscalls.py \
      build/smtpgw build/bench/loadgen build/bench/sink [N] [WORKERS]'
strace slows the gateway down; the counts are what it is for, not time.
Environment: STRACE=1 uses strace (names each failed call's errno) instead
of perf stat; TLS=1 has loadgen use STARTTLS; KEEP=1 keeps the work
directory (logs, traces).
It stops every process it starts, by PID.
"""
import collections
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HOST, PORT, SINK_PORT = "127.0.0.1", 2591, 2592
started = []


def spawn(argv, **kw):
    p = subprocess.Popen(argv, **kw)
    started.append(p)
    return p


def wait_banner(port, proc, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit("%s exited with %d" % (proc.args[0], proc.returncode))
        try:
            with socket.create_connection((HOST, port), timeout=5) as s:
                if s.makefile("rb").readline().startswith(b"220 "):
                    s.sendall(b"QUIT\r\n")
                    return
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit("no banner on port %d" % port)


def sink_count(path):
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return -1


def relay(loadgen, sink, count_file, n):
    before = sink_count(count_file)
    tls = ["-t"] if os.environ.get("TLS") else []
    p = subprocess.run([loadgen, "-c", "20", "-m", "1", "-s", "4096", "-n",
                        str(n)] + tls + ["%s:%d" % (HOST, PORT)],
                       capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        sys.exit("loadgen: %s%s" % (p.stdout, p.stderr))
    deadline = time.time() + 120
    while sink_count(count_file) < before + n:
        if time.time() > deadline:
            sys.exit("the sink got %d of %d" % (
                sink_count(count_file) - before, n))
        sink.send_signal(signal.SIGUSR1)
        time.sleep(0.2)


def children(pid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError):
                continue
            if ppid == pid:
                out.append(int(d))
    return out


def roles(root, log):
    """pid -> role, from the children's "ready" lines and the tree."""
    out = {root: "master"}
    with open(log) as f:
        for line in f:
            m = re.search(r"event=ready\b.*\brole=(\w+).*\bpid=(\d+)", line)
            if m:
                out[int(m.group(2))] = m.group(1)
    for pid in children(root):
        out.setdefault(pid, "child")
    return out


# x86_64 numbers of the calls whose failures perf names (the rest: "any")
FAILING = {0: "read", 1: "write", 44: "sendto", 45: "recvfrom",
           202: "futex", 233: "epoll_ctl", 257: "openat", 262: "newfstatat",
           263: "unlinkat", 288: "accept4"}
FAILING_IDS = list(FAILING)

LINE = re.compile(r"^(?:<\.\.\. )?([a-z0-9_]+)(?:\(| resumed>)")
RESULT = re.compile(r" = (-?\d+|\?)(?: (E[A-Z0-9]+))?(?: \(.*\))?$")


def parse(path):
    """(name -> calls, (name, errno) -> failed calls) of one strace file."""
    calls, failed = collections.Counter(), collections.Counter()
    with open(path) as f:
        for line in f:
            m = LINE.match(line)
            if m is None:
                continue
            name = m.group(1)
            if not line.startswith("<..."):
                calls[name] += 1
            if "<unfinished ...>" in line:
                continue
            r = RESULT.search(line.rstrip("\n"))
            if r and r.group(1).startswith("-") and r.group(2):
                failed[(name, r.group(2))] += 1
    return calls, failed


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    smtpgw, loadgen, sink_bin = (os.path.abspath(a) for a in sys.argv[1:4])
    n = int(sys.argv[4]) if len(sys.argv) > 4 else 200
    workers = int(sys.argv[5]) if len(sys.argv) > 5 else 2
    src = os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    work = tempfile.mkdtemp(prefix="smtpgw-syscalls-")
    os.chmod(work, 0o755)
    os.makedirs(os.path.join(work, "certs"))
    os.chmod(os.path.join(work, "certs"), 0o755)
    gw_dir = os.path.join(work, "gw")
    os.makedirs(gw_dir)
    os.chmod(gw_dir, 0o755)
    ini, log = os.path.join(gw_dir, "gateway.ini"), os.path.join(gw_dir, "log")
    with open(ini, "w") as f:
        f.write("[gateway]\nhostname = gw.bench.example\nlisten = %s:%d\n"
                "spool = spool\nrelay_domains = bench.example\n"
                "max_connections = 15000\nmax_connections_per_ip = 15000\n"
                "workers = %d\ngreet_pause = 0\n[tls]\ncert_dir = ../certs\n"
                "[policy]\nscript = %s/policies/try.lua\n[delivery]\n"
                "[domain:bench.example]\nnext_hop = %s:%d\n"
                % (HOST, PORT, workers, src, HOST, SINK_PORT))
    count_file = os.path.join(work, "sink.count")
    strace = None
    try:
        sink = spawn([sink_bin, "-o", count_file, "%s:%d" % (HOST, SINK_PORT)],
                     stdout=subprocess.DEVNULL)
        with open(log, "a") as lf:
            gw = spawn([smtpgw, "-c", ini], stdout=subprocess.DEVNULL,
                       stderr=lf)
        wait_banner(PORT, gw)
        relay(loadgen, sink, count_file, 50)  # warm: every worker has run
        who = roles(gw.pid, log)
        tids = {}
        for pid in who:
            for t in os.listdir("/proc/%d/task" % pid):
                tids[int(t)] = who[pid]
        if os.environ.get("STRACE"):
            by_role, fails = with_strace(work, who, tids, loadgen, sink,
                                         count_file, n)
        else:
            by_role, fails = with_perf(work, who, tids, loadgen, sink,
                                       count_file, n)
        report(by_role, fails, n, workers)
    finally:
        for p in reversed(started):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
        if os.environ.get("KEEP"):
            print("kept %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)


def with_strace(work, who, tids, loadgen, sink, count_file, n):
    """Every call and the errno of each failed one (slow: strace stops
    the gateway at each call, so loop turns batch more than they would)."""
    out = os.path.join(work, "trace")
    argv = ["strace", "-qq", "-ff", "-o", out]
    for pid in who:
        argv += ["-p", str(pid)]
    strace = spawn(argv, stderr=subprocess.DEVNULL)
    deadline = time.time() + 20
    while not all(open("/proc/%d/status" % t).read().find(
            "TracerPid:\t0\n") < 0 for t in tids):
        if time.time() > deadline:
            sys.exit("strace did not attach")
        time.sleep(0.05)
    relay(loadgen, sink, count_file, n)
    time.sleep(0.3)  # the last notices and log lines
    strace.send_signal(signal.SIGINT)
    strace.wait(30)
    by_role = collections.defaultdict(collections.Counter)
    fails = collections.defaultdict(collections.Counter)
    for name in os.listdir(work):
        if not name.startswith("trace."):
            continue
        tid = int(name.rsplit(".", 1)[1])
        calls, failed = parse(os.path.join(work, name))
        by_role[tids.get(tid, "new thread")].update(calls)
        fails[tids.get(tid, "new thread")].update(failed)
    return by_role, fails


def with_perf(work, who, tids, loadgen, sink, count_file, n):
    """Counts per thread with perf stat (tracepoints: the gateway runs at
    its own pace); failed calls are counted, not named."""
    ctl, ack, out = (os.path.join(work, x) for x in ("ctl", "ack", "perf"))
    os.mkfifo(ctl)
    os.mkfifo(ack)
    perf = spawn(["perf", "stat", "-x", ",", "--per-thread", "-o", out,
                  "-D", "-1", "--control", "fifo:%s,%s" % (ctl, ack),
                  "-e", "raw_syscalls:sys_exit", "--filter", "ret < 0"] +
                 [a for nr in FAILING for a in (
                     "-e", "raw_syscalls:sys_exit", "--filter",
                     "ret < 0 && id == %d" % nr)] +
                 ["-e", "syscalls:sys_enter_*",
                  "-p", ",".join(str(p) for p in who)])
    with open(ctl, "w") as c, open(ack) as a:
        c.write("enable\n")
        c.flush()
        a.readline()
        relay(loadgen, sink, count_file, n)
        time.sleep(0.3)  # the last notices and log lines
        c.write("disable\n")
        c.flush()
        a.readline()
    perf.send_signal(signal.SIGINT)
    perf.wait(30)
    by_role = collections.defaultdict(collections.Counter)
    fails = collections.defaultdict(collections.Counter)
    seen = {}
    with open(out) as f:
        for line in f:
            w = line.strip().split(",")
            if len(w) < 4 or not (w[1].isdigit() or w[1] == "<not counted>"):
                continue
            if not w[1].isdigit():
                w[1] = "0"
            if int(w[1]) == 0 and w[3] != "raw_syscalls:sys_exit":
                continue
            role = tids.get(int(w[0].rsplit("-", 1)[1]), "new thread")
            if w[3] == "raw_syscalls:sys_exit":
                # the unfiltered count comes first, then FAILING's
                k = seen.get(w[0], 0)
                seen[w[0]] = k + 1
                name = "any" if k == 0 else FAILING[FAILING_IDS[k - 1]]
                fails[role][(name, "ret<0")] += int(w[1])
            else:
                by_role[role][w[3].replace("syscalls:sys_enter_", "")] += \
                    int(w[1])
    return by_role, fails


def report(by_role, fails, n, workers):
    total = 0
    print("system calls per relayed message, %d messages, %d workers "
          "(all workers together), %s" % (n, workers, "strace" if
                                           os.environ.get("STRACE")
                                           else "perf"))
    for role in sorted(by_role):
        calls = by_role[role]
        s = sum(calls.values())
        total += s
        # perf: "any" is the total; strace: the sum of the named ones
        f = fails[role].get(("any", "ret<0"), sum(fails[role].values()))
        print("\n%-8s %6.2f per message, %.2f failed" % (role, s / n, f / n))
        for name, c in calls.most_common():
            print("  %-16s %6.2f" % (name, c / n))
        for (name, err), c in fails[role].most_common():
            if c == 0 or name == "any":
                continue
            print("  failed %-14s %-12s %6.2f" % (name, err, c / n))
    print("\ntotal    %6.2f per message" % (total / n))


if __name__ == "__main__":
    main()
