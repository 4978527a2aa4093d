#!/usr/bin/python3
"""make bench: smtpgw and a private Postfix 3.7, side by side in one run.

    bench.py SMTPGW LOADGEN SINK WORKDIR

Runs sealed on loopback (the Makefile starts it in a private network
namespace). The load comes from loadgen.c and the mail goes to sink.c, both
C on libev + libtls; every reply is checked and any error fails the run
(exit 1, no figures). Rounds alternate smtpgw and Postfix; the tables give
medians, every round's value and the ratio smtpgw / Postfix.

  (a) relay end to end, plain: 20 sessions, 4 KiB, one message per
      connection, to the sink; accepted msg/s, delivered msg/s, CPU per
      message (utime+stime of the MTA's whole process tree, from /proc)
  (b) STARTTLS inbound, the RSA-4096 Default Cert the gateway makes (Postfix
      gets the same cert and key), one message per connection, for every
      count in WORKERS
  (c) memory per idle connection: IDLE_N connections held, plain and after
      STARTTLS (RSS growth of every gateway process / connections); Postfix:
      PSS per smtpd process at PF_IDLE_N connections (one process each)
  (d) system calls per relayed message: a separate run of each MTA under
      `perf stat -e raw_syscalls:sys_enter` (inherited by every child),
      counting only while the load runs (perf's --control fifo)
  (e) STARTTLS handshakes, full and resumed (session tickets), at TLS 1.2
      and 1.3: connections with no message (loadgen -m 0 -N; -R resumes),
      connections/s and MTA CPU per connection, RSA-4096 Default Cert
  (f) outbound STARTTLS (encrypt, one destination, 4 KiB): TLS_OUT_N
      messages are queued while their next hop is down (each attempt
      deferred), then a STARTTLS sink with the RSA-4096 Default Cert comes
      up and the queue is flushed; msg/s from the flush to the last
      arrival. smtpgw with connection reuse and with reuse_max_messages = 1;
      Postfix with smtp_tls_connection_reuse off and on
  (q) smtpgw alone (not in the default PARTS): accept rate and CPU with
      DEFERRED_N (100000) deferred messages in the spool against an empty
      spool, rounds alternated, and the queue manager's memory; then the
      queue manager's peak memory while it works through DEFERRED_N due
      messages for a dead next hop, at two active_limit values


Both MTAs fsync a message before its 250. Environment: ROUNDS (3), WORKERS
("1,2"), RELAY_N (3000), TLS_N (1000), IDLE_N (10000), PF_IDLE_N (100),
SYSCALL_N (1000), PARTS ("a,b,c,d,e,f": which figures), SESSIONS (20:
loadgen's concurrency in (a) and (b)), HS_N (500 full handshakes),
HS_RESUMED_N (3000 resumed ones), HS_SESSIONS (10: loadgen's concurrency in
(e)), TLS_OUT_N (1000, (f)). Every process started
here is stopped by its PID.
"""
import os
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import types

ROUNDS = int(os.environ.get("ROUNDS", "3"))
WORKERS = [int(w) for w in os.environ.get("WORKERS", "1,2").split(",") if w]
RELAY_N = int(os.environ.get("RELAY_N", "3000"))
TLS_N = int(os.environ.get("TLS_N", "1000"))
IDLE_N = int(os.environ.get("IDLE_N", "10000"))
PF_IDLE_N = int(os.environ.get("PF_IDLE_N", "100"))
SYSCALL_N = int(os.environ.get("SYSCALL_N", "1000"))
TLS_OUT_N = int(os.environ.get("TLS_OUT_N", "1000"))
PARTS = set(os.environ.get("PARTS", "a,b,c,d,e,f").split(","))
DEFERRED_N = int(os.environ.get("DEFERRED_N", "100000"))  # of (q)
SESSIONS = int(os.environ.get("SESSIONS", "20"))  # of (a) and (b)
HS_N = int(os.environ.get("HS_N", "500"))
HS_RESUMED_N = int(os.environ.get("HS_RESUMED_N", "3000"))
HS_SESSIONS = int(os.environ.get("HS_SESSIONS", "10"))  # of (e)
SIZE = 4096
HOST = "127.0.0.1"
TICK = os.sysconf("SC_CLK_TCK")
POSTFIX_DAEMONS = "/usr/lib/postfix/sbin"

started = []  # every Popen, stopped by PID at exit


class Fail(Exception):
    pass


def spawn(argv, **kw):
    p = subprocess.Popen(argv, **kw)
    started.append(p)
    return p


def stop(p, sig=signal.SIGTERM, wait=30):
    if p.poll() is not None:
        return p.returncode
    p.send_signal(sig)
    try:
        return p.wait(wait)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        raise Fail("pid %d did not stop on signal %d" % (p.pid, sig))


# ---- /proc: the process tree of an MTA ----

def proc_stat(pid):
    with open("/proc/%d/stat" % pid) as f:
        text = f.read()
    return text[text.rindex(")") + 2:].split()  # fields from 3 on


def tree(root):
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                children.setdefault(int(proc_stat(int(d))[1]), []).append(
                    int(d))
            except (OSError, ValueError):
                pass
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_by_pid(root):
    """utime+stime of every live process of the tree, plus what its reaped
    children used (cutime+cstime), in seconds, by PID."""
    out = {}
    for pid in tree(root):
        try:
            f = proc_stat(pid)
        except OSError:
            continue
        out[pid] = sum(int(x) for x in f[11:15]) / TICK
    return out


def tree_cpu(root):
    return sum(cpu_by_pid(root).values())


def smtpgw_used(root, before, after):
    """[(name, seconds)] of the CPU used between two cpu_by_pid()
    snapshots: the master, then its children by PID (the queue manager is
    forked first, then the workers)."""
    used = {p: after[p] - before.get(p, 0) for p in after}
    kids = sorted(p for p in used if p != root)
    names = ["master"] + ["qmgr" if i == 0 else "w%d" % i
                          for i in range(len(kids))]
    return list(zip(names, [used.get(root, 0)] + [used[p] for p in kids]))


def smtpgw_split(used):
    total = sum(s for _, s in used) or 1
    return " ".join("%s %.0f%%" % (n, 100 * s / total) for n, s in used)


def budget(parts, machine, n):
    """Where the machine's CPU went during a round, in ms per message:
    machine = (idle, total) jiffies of every core over the round; parts =
    [(name, seconds)] measured per process. "other" is the rest: the
    kernel's work not charged to these processes, this script, and other
    users' processes."""
    total = machine[1] / TICK
    idle = machine[0] / TICK
    other = total - idle - sum(s for _, s in parts)
    items = parts + [("idle", idle), ("other", other)]
    return "%.2f = %s" % (1000 * total / n, " + ".join(
        "%s %.2f" % (name, 1000 * s / n) for name, s in items))


def status_kib(pid, key):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss(root):
    return sum(status_kib(pid, "VmRSS") for pid in tree(root))


def pss_kib(pid):
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid) as f:
            return f.read().split("\0")
    except OSError:
        return []


# ---- SMTP probes and the load generator ----

def wait_banner(port, proc, seconds=120):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise Fail("%s exited with %d before listening on %d"
                       % (proc.args[0], proc.returncode, port))
        try:
            with socket.create_connection((HOST, port), timeout=5) as s:
                line = s.makefile("rb").readline()
                s.sendall(b"QUIT\r\n")
                if line.startswith(b"220 "):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise Fail("no 220 banner on port %d within %d s" % (port, seconds))


def parse_loadgen(out):
    res = {}
    for line in out.splitlines():
        w = line.split()
        if w[:1] == ["sessions"]:
            res["ok"] = int(w[3])
            res["errors"] = int(w[7])
        elif w[:1] == ["rate"]:
            res["rate"] = float(w[1])
        elif w[:1] == ["latency_ms"]:
            res["p50"], res["p99"] = float(w[2]), float(w[6])
        elif w[:1] == ["tls"]:
            res.setdefault("tls", []).append("%s x%s" % (w[1], w[2]))
        elif w[:1] == ["idle_held"]:
            res["held"] = int(w[1])
        elif w[:1] == ["tls_resumed"]:
            res["resumed"] = int(w[1])
    return res


def handshake_round(mta, version, resume):
    """(e): connections with STARTTLS and no message at one TLS version,
    every handshake full, or (resume) each loadgen session offering the
    session of its previous connection. A resumed run whose handshakes
    were not all resumed but each session's first fails."""
    n = HS_RESUMED_N if resume else HS_N
    argv = [LOADGEN, "-c", str(HS_SESSIONS), "-m", "0", "-n", str(n), "-t",
            "-N", "-V", version] + (["-R"] if resume else []) + \
        ["%s:%d" % (HOST, mta.port)]
    m0 = machine_cpu()
    before = cpu_by_pid(mta.root)
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    after = cpu_by_pid(mta.root)
    m1 = machine_cpu()
    res = parse_loadgen(p.stdout)
    want = n - HS_SESSIONS if resume else 0
    if p.returncode != 0 or res.get("errors") != 0 or res.get("ok") != n \
            or "rate" not in res or res.get("resumed") != want:
        raise Fail("loadgen %s: exit %d, %s handshakes resumed, expected "
                   "%d\n%s%s" % (" ".join(argv[1:]), p.returncode,
                                 res.get("resumed"), want, p.stdout,
                                 p.stderr))
    res["cpu_ms"] = (sum(after.values()) - sum(before.values())) * 1000 / n
    res["client_ms"] = (r1.ru_utime + r1.ru_stime - r0.ru_utime -
                        r0.ru_stime) * 1000 / n
    res["idle"] = 100.0 * (m1[0] - m0[0]) / max(m1[1] - m0[1], 1)
    return res


def loadgen(port, n, tls=False, rcpt=None):
    argv = [LOADGEN, "-c", str(SESSIONS), "-m", "1", "-s", str(SIZE),
            "-n", str(n)] + (["-t"] if tls else []) + \
        (["-a", rcpt] if rcpt else []) + ["%s:%d" % (HOST, port)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = parse_loadgen(p.stdout)
    res["client_ms"] = (after.ru_utime + after.ru_stime - before.ru_utime -
                        before.ru_stime) * 1000 / n
    if p.returncode != 0 or res.get("errors") != 0 or res.get("ok") != n \
            or "rate" not in res:
        raise Fail("loadgen %s: exit %d\n%s%s" % (" ".join(argv[1:]),
                   p.returncode, p.stdout, p.stderr))
    return res


class Sink:
    def __init__(self, port, work, name, tls=()):
        """tls: (cert, key) for STARTTLS."""
        self.port = port
        self.file = os.path.join(work, name + ".count")
        self.proc = spawn([SINK] + (["-t", tls[0], "-k", tls[1]] if tls
                                    else []) +
                          ["-o", self.file, "%s:%d" % (HOST, port)],
                          stdout=subprocess.DEVNULL)
        deadline = time.time() + 10
        while not os.path.exists(self.file) or self.read()[0] < 0:
            if time.time() > deadline or self.proc.poll() is not None:
                raise Fail("sink on port %d did not start" % port)
            time.sleep(0.05)

    def read(self):
        try:
            with open(self.file) as f:
                w = f.read().split()
            return int(w[0]), float(w[1])
        except (OSError, ValueError, IndexError):
            return -1, 0.0

    def wait_for(self, n, mta, seconds=300):
        """Waits until n messages arrived; returns the arrival time of the
        last. More than n is an error (a message delivered twice), and so
        is an MTA whose master died."""
        deadline = time.time() + seconds
        while time.time() < deadline:
            if not os.path.exists("/proc/%d" % mta.root) or \
                    mta.proc.poll() is not None:
                raise Fail("%s (pid %d) died" % (mta.name, mta.root))
            count, last = self.read()
            if count >= n:
                time.sleep(0.3)
                if self.read()[0] != n:
                    raise Fail("sink %d: %d messages, expected %d"
                               % (self.port, self.read()[0], n))
                return last
            time.sleep(0.02)
        raise Fail("sink %d: %d of %d messages delivered within %d s"
                   % (self.port, self.read()[0], n, seconds))


# ---- the two MTAs ----

class Smtpgw:
    def __init__(self, name, work, port, sink, workers=None,
                 domain="bench.example", policy=None, delivery=""):
        """policy: a script's path (default: the stock try.lua); delivery:
        lines for [delivery]."""
        self.name, self.port, self.sink, self.workers = name, port, sink, workers
        self.dir = os.path.join(work, name)
        os.makedirs(self.dir)
        os.chmod(self.dir, 0o755)
        self.ini = os.path.join(self.dir, "gateway.ini")
        self.log = os.path.join(self.dir, "log")
        extra = ""
        if workers is not None:
            extra += "workers = %d\n" % workers
        if "greet_pause" in KEYS:
            extra += "greet_pause = 0\n"
        with open(self.ini, "w") as f:
            f.write("[gateway]\nhostname = gw.bench.example\n"
                    "listen = %s:%d\nspool = spool\n"
                    "relay_domains = %s\n"
                    "max_connections = 15000\n"
                    "max_connections_per_ip = 15000\n%s"
                    "[tls]\ncert_dir = ../certs\n"
                    "[policy]\nscript = %s\n"
                    "[delivery]\n%s"
                    "[domain:%s]\nnext_hop = %s:%d\n"
                    % (HOST, port, domain, extra,
                       policy or SRC + "/policies/try.lua", delivery,
                       domain, HOST, sink.port))
        self.proc = None

    def start(self, prefix=()):
        log = open(self.log, "a")
        self.proc = spawn(list(prefix) + [SMTPGW, "-c", self.ini],
                          stdout=subprocess.DEVNULL, stderr=log)
        log.close()
        wait_banner(self.port, self.proc)
        self.root = self.proc.pid
        if prefix:  # under perf: the gateway is perf's child
            self.root = [p for p in tree(self.proc.pid)
                         if cmdline(p)[:1] == [SMTPGW]][0]

    def stop(self):
        if self.proc is None:
            return
        if self.root != self.proc.pid:  # perf ends when the gateway does
            os.kill(self.root, signal.SIGTERM)
            rc = self.proc.wait(60)
        else:
            rc = stop(self.proc)
        self.proc = None
        if rc != 0:
            raise Fail("%s exited with %d (log %s)" % (self.name, rc,
                                                       self.log))

    def idle_memory(self, n, tls):
        return idle_growth(self.port, n, tls, lambda: tree_rss(self.root))


POSTFIX_MAIN = """\
queue_directory = {work}/queue
data_directory = {work}/data
command_directory = /usr/sbin
daemon_directory = {daemons}
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = pfx.bench.example
mydestination =
relay_domains = bench.example
transport_maps = inline:{{bench.example=smtp:[127.0.0.1]:{sink},
    tls.bench.example=smtp:[127.0.0.1]:{out_sink},
    tlsreuse.bench.example=smtp:[127.0.0.1]:{out_reuse_sink}}}
smtp_tls_security_level = none
smtp_tls_policy_maps = inline:{{ [127.0.0.1]:{out_sink}=encrypt,
    {{ [127.0.0.1]:{out_reuse_sink} = encrypt connection_reuse=yes }} }}
smtpd_tls_security_level = may
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
compatibility_level = 3.6
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
default_process_limit = {procs}
smtpd_client_connection_count_limit = 0
smtp_dns_support_level = disabled
maillog_file = /dev/stdout
alias_maps =
alias_database =
"""


class Postfix:
    """A private Postfix instance: its own main.cf, master.cf and queue,
    its master run in the foreground (master -d) so that this script owns
    its PID; every daemon is a descendant of it."""

    def __init__(self, work, port, sink, cert, key):
        self.name, self.port, self.sink = "postfix", port, sink
        self.dir = os.path.join(work, "postfix")
        os.makedirs(os.path.join(self.dir, "queue", "pid"))
        os.makedirs(os.path.join(self.dir, "data"))
        os.chmod(self.dir, 0o755)
        shutil.chown(os.path.join(self.dir, "data"), "postfix", "postfix")
        for d in ("active bounce corrupt defer deferred flush hold "
                  "incoming private saved trace").split():
            self.qdir(d, "postfix", "root", 0o700)
        self.qdir("maildrop", "postfix", "postdrop", 0o730)
        self.qdir("public", "postfix", "postdrop", 0o710)
        with open(os.path.join(self.dir, "main.cf"), "w") as f:
            f.write(POSTFIX_MAIN.format(work=self.dir, daemons=POSTFIX_DAEMONS,
                                        sink=sink.port, cert=cert, key=key,
                                        out_sink=OUT_PORTS["pf"],
                                        out_reuse_sink=OUT_PORTS["pf-reuse"],
                                        procs=max(PF_IDLE_N + 50, 100)))
        self.write_master_cf()
        self.proc = None

    def qdir(self, d, user, group, mode):
        path = os.path.join(self.dir, "queue", d)
        os.makedirs(path, exist_ok=True)
        shutil.chown(path, user, group)
        os.chmod(path, mode)

    def write_master_cf(self):
        """Debian's master.cf, smtpd on HOST:port, nothing chrooted, and
        tlsproxy (which Debian leaves commented out) for (f)'s
        connection_reuse=yes."""
        out = ["tlsproxy unix - - n - 0 tlsproxy\n"]
        with open("/etc/postfix/master.cf") as f:
            for line in f:
                w = line.split()
                if w[:2] == ["tlsproxy", "unix"]:
                    continue
                if len(w) >= 8 and not line[0].isspace() and w[0][0] != "#":
                    if w[0] == "smtp" and w[1] == "inet":
                        w[0] = "%s:%d" % (HOST, self.port)
                    w[4] = "n"
                    line = " ".join(w) + "\n"
                out.append(line)
        with open(os.path.join(self.dir, "master.cf"), "w") as f:
            f.writelines(out)

    def start(self, prefix=()):
        """master -d stays in the foreground; setsid makes it a process
        group leader, which its SIGTERM handler needs to stop its daemons.
        Its log (maillog_file = /dev/stdout) goes to WORK/postfix/maillog."""
        master = os.path.join(POSTFIX_DAEMONS, "master")
        log = open(os.path.join(self.dir, "maillog"), "a")
        self.proc = spawn(list(prefix) + ["setsid", master, "-c", self.dir,
                                          "-d"], stdout=log,
                          stderr=subprocess.STDOUT)
        log.close()
        wait_banner(self.port, self.proc)
        self.root = [p for p in tree(self.proc.pid)
                     if cmdline(p)[:1] == [master]][0]

    def stop(self):
        if self.proc is None:
            return
        os.kill(self.root, signal.SIGTERM)  # master, perf or setsid above it
        self.proc.wait(60)
        self.proc = None

    def smtpd_pss(self):
        kib = n = 0
        for pid in tree(self.root):
            if cmdline(pid)[0].endswith("smtpd"):
                kib += pss_kib(pid)
                n += 1
        return kib, n


def idle_growth(port, n, tls, measure):
    """Opens n idle connections (after STARTTLS and EHLO if tls), returns
    measure() after minus before, divided by n."""
    before = measure()
    argv = [LOADGEN, "-i", "-c", str(n), "-r", "100", "-T", "300"] + \
        (["-t"] if tls else []) + ["%s:%d" % (HOST, port)]
    p = spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ready, _, _ = select.select([p.stdout], [], [], 600)
    line = p.stdout.readline() if ready else ""
    if line.split() != ["ready", str(n)]:
        p.kill()
        out, err = p.communicate()
        raise Fail("idle %d%s on %d: %s%s%s" % (n, " tls" if tls else "",
                   port, line, out, err))
    time.sleep(2)
    after = measure()
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    if p.returncode != 0:
        raise Fail("idle loadgen: exit %d\n%s%s" % (p.returncode, out, err))
    time.sleep(2)  # let the MTA close them before the next figure
    return (after - before) / n


# ---- one round of each figure ----

def machine_cpu():
    """(idle, total) jiffies of every CPU, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return v[3] + v[4], sum(v)


def relay_round(mta, n, tls=False):
    m0 = machine_cpu()
    before = cpu_by_pid(mta.root)
    sink0 = tree_cpu(mta.sink.proc.pid)
    start_count = mta.sink.read()[0]
    t0 = time.time()
    res = loadgen(mta.port, n, tls)
    m_load = machine_cpu()  # the load alone: the budget's window
    at_load = cpu_by_pid(mta.root)
    sink = tree_cpu(mta.sink.proc.pid) - sink0
    last = mta.sink.wait_for(start_count + n, mta)
    time.sleep(0.5)
    after = cpu_by_pid(mta.root)
    m1 = machine_cpu()
    res["idle"] = 100.0 * (m1[0] - m0[0]) / max(m1[1] - m0[1], 1)
    machine = (m_load[0] - m0[0], m_load[1] - m0[1])
    res["idle_load"] = 100.0 * machine[0] / max(machine[1], 1)
    res["cpu_ms"] = (sum(after.values()) - sum(before.values())) * 1000 / n
    if isinstance(mta, Smtpgw):
        res["split"] = smtpgw_split(smtpgw_used(mta.root, before, after))
        used = smtpgw_used(mta.root, before, at_load)
    else:
        used = [("postfix", sum(at_load.values()) - sum(before.values()))]
    res["budget"] = budget(used + [("loadgen", res["client_ms"] * n / 1000),
                                   ("sink", sink)], machine, n)
    res["e2e"] = n / (last - t0)
    return res


# (f): the next hop of each outbound configuration, down while mail is
# queued, up (a STARTTLS sink) for the flush
OUT_PORTS = {"gw": 2710, "gw-noreuse": 2711, "pf": 2712, "pf-reuse": 2713}
OUT_DOMAIN = {"gw": "tls.bench.example", "gw-noreuse": "tls.bench.example",
              "pf": "tls.bench.example", "pf-reuse": "tlsreuse.bench.example"}
OUT_POLICY = """-- bench (f): outbound TLS required without checks, inbound may
local gateway = require "gateway"
local policy = {}
function policy.server_tls() return gateway.MAY end
function policy.client_tls() return gateway.ENCRYPT end
return policy
"""


def deferred(mta):
    """Messages the MTA has deferred so far: smtpgw's deferral log lines
    (one recipient per message), Postfix's deferred queue files."""
    if isinstance(mta, Smtpgw):
        with open(mta.log) as f:
            return sum("event=delivery" in l and "status=deferred" in l
                       for l in f)
    n = 0
    for _, _, files in os.walk(os.path.join(mta.dir, "queue", "deferred")):
        n += len(files)
    return n


def flush(mta):
    if isinstance(mta, Smtpgw):
        os.kill(mta.root, signal.SIGUSR1)  # `smtpgw queue flush`
        return
    p = subprocess.run(["postqueue", "-c", mta.dir, "-f"],
                       capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise Fail("postqueue -f: %s%s" % (p.stdout, p.stderr))


def outbound_round(mta, key, r):
    """Queues TLS_OUT_N messages for OUT_DOMAIN[key] while its next hop is
    down, then brings up a STARTTLS sink and flushes: msg/s from the flush
    to the last arrival, the MTA's and the sink's CPU per message."""
    n, base = TLS_OUT_N, deferred(mta)
    loadgen(mta.port, n, rcpt="user@" + OUT_DOMAIN[key])
    deadline = time.time() + 300
    while deferred(mta) - base < n:
        if time.time() > deadline:
            raise Fail("%s: %d of %d messages deferred" % (
                mta.name, deferred(mta) - base, n))
        time.sleep(0.1)
    cert = os.path.join(WORK, "certs", "default.crt")
    key_file = os.path.join(WORK, "certs", "default.key")
    sink = Sink(OUT_PORTS[key], WORK, "out-%s-%d" % (key, r),
                tls=(cert, key_file))
    m0, before = machine_cpu(), tree_cpu(mta.root)
    s0, t0 = tree_cpu(sink.proc.pid), time.time()
    flush(mta)
    last = sink.wait_for(n, mta)
    res = {"rate": n / (last - t0),
           "cpu_ms": (tree_cpu(mta.root) - before) * 1000 / n,
           "sink_ms": (tree_cpu(sink.proc.pid) - s0) * 1000 / n}
    m1 = machine_cpu()
    res["idle"] = 100.0 * (m1[0] - m0[0]) / max(m1[1] - m0[1], 1)
    stop(sink.proc)
    return res


def outbound(ws, pf):
    """(f), ROUNDS rounds alternating the four configurations."""
    policy = os.path.join(WORK, "out_policy.lua")
    with open(policy, "w") as f:
        f.write(OUT_POLICY)
    gws = {}
    for i, (key, delivery) in enumerate((("gw", ""), (
            "gw-noreuse", "reuse_max_messages = 1\n"))):
        gws[key] = Smtpgw("out-" + key, WORK, 2545 + i,
                          types.SimpleNamespace(port=OUT_PORTS[key]),
                          ws[-1], domain=OUT_DOMAIN[key], policy=policy,
                          delivery=delivery)
        gws[key].start()
    out = {k: [] for k in OUT_PORTS}
    for r in range(ROUNDS):
        for key in ("gw", "pf", "gw-noreuse", "pf-reuse"):
            out[key].append(outbound_round(gws.get(key, pf), key, r))
        print("outbound round %d/%d done" % (r + 1, ROUNDS), flush=True)
    for g in gws.values():
        g.stop()
    return out


def postfix_idle(pf, tls):
    """PSS per smtpd process, each holding one idle connection."""
    argv = [LOADGEN, "-i", "-c", str(PF_IDLE_N), "-r", "20", "-T", "300"] + \
        (["-t"] if tls else []) + ["%s:%d" % (HOST, pf.port)]
    p = spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ready, _, _ = select.select([p.stdout], [], [], 300)
    line = p.stdout.readline() if ready else ""
    if line.split() != ["ready", str(PF_IDLE_N)]:
        p.kill()
        raise Fail("postfix idle: %s%s" % (line, p.communicate()))
    time.sleep(2)
    kib, procs = pf.smtpd_pss()
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    if p.returncode != 0:
        raise Fail("postfix idle loadgen: exit %d\n%s%s"
                   % (p.returncode, out, err))
    if procs < PF_IDLE_N:
        raise Fail("postfix idle: %d smtpd for %d connections"
                   % (procs, PF_IDLE_N))
    time.sleep(2)
    return kib / procs


def perf_syscalls(mta):
    """Starts mta under perf stat, relays SYSCALL_N messages while counting,
    stops it; returns (syscalls per message, [(count, name)] top list)."""
    d = os.path.join(WORK, "perf-" + mta.name)
    os.makedirs(d)
    ctl, ack, out = (os.path.join(d, x) for x in ("ctl", "ack", "out"))
    os.mkfifo(ctl)
    os.mkfifo(ack)
    mta.start(["perf", "stat", "-x", ",", "-o", out, "-D", "-1",
               "--control", "fifo:%s,%s" % (ctl, ack),
               "-e", "raw_syscalls:sys_enter", "-e", "raw_syscalls:sys_exit",
               "--filter", "ret < 0", "-e", "syscalls:sys_enter_*"])
    with open(ctl, "w") as c, open(ack) as a:
        relay_round(mta, 100)  # warm: Postfix starts its daemons
        c.write("enable\n")
        c.flush()
        a.readline()
        relay_round(mta, SYSCALL_N)
        c.write("disable\n")
        c.flush()
        a.readline()
    mta.stop()
    total, failed, per = 0, 0, []
    with open(out) as f:
        for line in f:
            w = line.strip().split(",")
            if len(w) < 3 or not w[0].isdigit():
                continue
            if w[2] == "raw_syscalls:sys_enter":
                total = int(w[0])
            elif w[2] == "raw_syscalls:sys_exit":
                failed = int(w[0])
            elif int(w[0]) > 0:
                per.append((int(w[0]), w[2].replace("syscalls:sys_enter_", "")))
    if total == 0:
        raise Fail("perf counted no system calls for %s" % mta.name)
    per.sort(reverse=True)
    return (total / SYSCALL_N, failed / SYSCALL_N,
            [(c / SYSCALL_N, name) for c, name in per])


# ---- tables ----

def med(xs):
    return statistics.median(xs)


def fmt(xs, digits):
    return "%.*f (%s)" % (digits, med(xs),
                          " ".join("%.*f" % (digits, x) for x in xs))


def table(title, rows):
    """rows: (label, smtpgw values, postfix values, digits)"""
    print("\n" + title)
    print("  %-30s %-34s %-34s %s" % ("", "smtpgw: median (rounds)",
                                      "Postfix: median (rounds)",
                                      "smtpgw/Postfix"))
    def ratio(x, y):
        return "%.2f" % (x / y) if y else "-"

    for label, a, b, digits in rows:
        rounds = " ".join(ratio(x, y) for x, y in zip(a, b)) \
            if len(a) == len(b) and len(a) > 1 else ""
        print("  %-30s %-34s %-34s %s%s" % (
            label, fmt(a, digits), fmt(b, digits), ratio(med(a), med(b)),
            " (%s)" % rounds if rounds else ""))


def check_ini(d, name, text):
    ini = os.path.join(d, name + ".ini")
    with open(ini, "w") as f:
        f.write("[gateway]\nspool = spool\n%s[tls]\ncert_dir = ../certs\n"
                % text)
    return subprocess.run([SMTPGW, "-c", ini, "-t"], capture_output=True,
                          text=True, timeout=60)


def supported_keys():
    """The [gateway] keys this build knows: -t passes with the key where it
    passes without it."""
    d = os.path.join(WORK, "probe")
    os.makedirs(d)
    base = check_ini(d, "base", "")
    if base.returncode != 0:
        raise Fail("smtpgw -t refuses a minimal ini: %s" % base.stdout +
                   base.stderr)
    return {key for key, value in (("workers", "1"), ("greet_pause", "0"),
                                   ("user", "root"))
            if check_ini(d, key, "%s = %s\n" % (key, value)).returncode == 0}


def ensure_user():
    """Started as root, the gateway's children run as [gateway] user
    (default smtpgw); make run creates that system user, so does this."""
    if "user" not in KEYS:
        return
    if subprocess.run(["id", "smtpgw"], capture_output=True).returncode:
        subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", "smtpgw"],
                       check=True)


def main():
    global SMTPGW, LOADGEN, SINK, WORK, SRC, KEYS
    SMTPGW, LOADGEN, SINK, WORK = (os.path.abspath(a) for a in sys.argv[1:5])
    SRC = os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    if min(ROUNDS, RELAY_N, TLS_N, IDLE_N, PF_IDLE_N, SYSCALL_N,
           TLS_OUT_N, SESSIONS) <= 0 or \
            not WORKERS or min(WORKERS) <= 0:
        raise Fail("ROUNDS, WORKERS and every *_N must be positive")
    if not PARTS or not PARTS <= {"a", "b", "c", "d", "e", "f", "q"}:
        raise Fail("PARTS is a list of a, b, c, d, e, f, q")
    if min(HS_N, HS_SESSIONS) <= 0 or HS_RESUMED_N <= HS_SESSIONS:
        raise Fail("HS_N, HS_SESSIONS must be positive, HS_RESUMED_N above "
                   "HS_SESSIONS")
    if os.getuid() != 0:
        raise Fail("run as root (Postfix's master, perf)")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < IDLE_N + 100:
        raise Fail("open files limit %d is below IDLE_N %d" % (hard, IDLE_N))
    os.makedirs(os.path.join(WORK, "certs"))
    for d in (WORK, os.path.join(WORK, "certs")):
        os.chmod(d, 0o755)
    KEYS = supported_keys()
    ensure_user()
    ws = WORKERS if "workers" in KEYS else [None]
    print("load average before: %s" % open("/proc/loadavg").read().strip())
    print("smtpgw %s; workers %s; rounds %d; %s" % (
        SMTPGW, ",".join(map(str, WORKERS)) if "workers" in KEYS else
        "key not supported by this build: one process", ROUNDS,
        time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())))

    gws, port = {}, 2525
    for i, w in enumerate(ws):
        sink = Sink(2700 + i, WORK, "sink-gw%s" % w)
        gws[w] = Smtpgw("gw-w%s" % w, WORK, port + i, sink, w)
        gws[w].start()  # the first one makes the Default Cert
    main_gw = gws[ws[-1]]
    cert = os.path.join(WORK, "certs", "default.crt")
    key = os.path.join(WORK, "certs", "default.key")
    pf = Postfix(WORK, 2600, Sink(2699, WORK, "sink-pf"), cert, key)
    pf.start()

    relay = {"gw": [], "pf": []}
    tls = {"pf": []}
    tls.update({w: [] for w in ws})
    for r in range(ROUNDS if PARTS & {"a", "b"} else 0):
        if "a" in PARTS:
            relay["gw"].append(relay_round(main_gw, RELAY_N))
            relay["pf"].append(relay_round(pf, RELAY_N))
        for w in ws if "b" in PARTS else []:
            tls[w].append(relay_round(gws[w], TLS_N, tls=True))
        if "b" in PARTS:
            tls["pf"].append(relay_round(pf, TLS_N, tls=True))
        print("round %d/%d done" % (r + 1, ROUNDS), flush=True)

    hs = {(m, v, r): [] for m in ("gw", "pf") for v in ("1.2", "1.3")
          for r in (False, True)}
    for r in range(ROUNDS if "e" in PARTS else 0):
        for (m, v, resume), results in hs.items():
            results.append(handshake_round(main_gw if m == "gw" else pf, v,
                                           resume))
        print("handshakes round %d/%d done" % (r + 1, ROUNDS), flush=True)

    mem = {}
    for w in ws if "c" in PARTS else []:
        mem[w] = (gws[w].idle_memory(IDLE_N, False),
                  gws[w].idle_memory(IDLE_N, True))
        print("idle %d connections held on %s" % (IDLE_N, gws[w].name),
              flush=True)
    if "c" in PARTS:
        mem["pf"] = (postfix_idle(pf, False), postfix_idle(pf, True))
    for g in gws.values():
        g.stop()
    out = outbound(ws, pf) if "f" in PARTS else None
    pf.stop()

    gw_sys = pf_sys = None
    if "d" in PARTS:
        gw_sys = perf_syscalls(Smtpgw("gw-perf", WORK, 2535, main_gw.sink,
                                      ws[-1]))
        pf_sys = perf_syscalls(pf)  # same sink, its count goes on
    report(ws, relay, tls, mem, gw_sys, pf_sys)
    if "e" in PARTS:
        report_handshakes(ws, hs)
    if "f" in PARTS:
        report_outbound(ws, out)
    if "q" in PARTS:
        report_deferred(deferred_part(ws[-1]))
    print("\nload average after: %s" % open("/proc/loadavg").read().strip())

# ---- (q) a large deferred queue (smtpgw alone) ----
#
# Self-contained: its own gateways (ports 2550-2553), sinks (2750-2753)
# and spools. The deferred messages are written straight into the spool,
# as a gateway that could not reach dead.bench.example leaves them: a
# queue file, a state file with one "deferred" line, and the queue file's
# mtime (smtpgw's due time) an hour or more ahead.

DEAD_HOP = "127.0.0.1:9"  # nothing listens: refused at once


class DeferredGw(Smtpgw):
    def __init__(self, name, port, sink, workers, deferred, due_in,
                 active_limit=None):
        super().__init__(name, WORK, port, sink, workers)
        extra = "[domain:dead.bench.example]\nnext_hop = %s\n" % DEAD_HOP
        if active_limit is not None:
            extra += "[delivery]\nactive_limit = %d\n" % active_limit
        with open(self.ini, "a") as f:
            f.write(extra)
        self.deferred = deferred
        fill_deferred(os.path.join(self.dir, "spool"), deferred, due_in)

    def qmgr_pid(self):
        pid = None
        with open(self.log) as f:
            for line in f:
                if " event=ready role=qmgr " in line:
                    pid = int(line.split(" pid=")[1].split()[0])
        return pid

    def qmgr_restarts(self):
        with open(self.log) as f:
            return f.read().count(" event=ready role=qmgr ") - 1

    def wait_log(self, needle, seconds):
        deadline = time.time() + seconds
        while time.time() < deadline:
            with open(self.log) as f:
                if needle in f.read():
                    return True
            time.sleep(0.2)
        return False


def fill_deferred(spool, n, due_in):
    """n deferred messages for dead.bench.example, due `due_in` seconds
    from now and later (spread over an hour)."""
    for d in ("queue", "state"):
        os.makedirs(os.path.join(spool, d), exist_ok=True)
    now = time.time()
    for i in range(n):
        qid = "00000001%08x" % i
        with open(os.path.join(spool, "queue", qid), "w") as f:
            f.write("smtpgw-queue-file: 1\nid: %s\narrival: %d\n"
                    "client: 127.0.0.1\nhelo: client.example\n"
                    "sender: <s@origin.example>\n"
                    "rcpt: <u%d@dead.bench.example>\nbody: 7BIT\n"
                    "smtputf8: 0\n\nSubject: deferred %d\r\n\r\n"
                    "body\r\n" % (qid, int(now), i, i))
        with open(os.path.join(spool, "state", qid), "w") as f:
            f.write("0 deferred 4.4.1 %s: Connection refused\n" % DEAD_HOP)
        due = now + due_in + (i % 3600)
        os.utime(os.path.join(spool, "queue", qid), (due, due))


def qmgr_memory(gw):
    pid = gw.qmgr_pid()
    return (status_kib(pid, "VmRSS"), status_kib(pid, "VmHWM")) if pid \
        else (0, 0)


def deferred_accept(workers):
    """Accept rate, empty spool against DEFERRED_N deferred (not due)."""
    t0 = time.time()
    gws = {"empty": DeferredGw("gw-q-empty", 2550, Sink(2750, WORK, "q0"),
                               workers, 0, 3600),
           "full": DeferredGw("gw-q-full", 2551, Sink(2751, WORK, "q1"),
                              workers, DEFERRED_N, 3600)}
    print("(q) %d deferred messages written in %.0f s" % (
        DEFERRED_N, time.time() - t0), flush=True)
    res = {"empty": [], "full": [], "start": {}}
    for k, g in gws.items():
        t0 = time.time()
        g.start()
        # the start-up pass over the spool is over (a build without an
        # active set has no such line: then a minute for its start)
        if not ACTIVE_SET or not g.wait_log("event=queue_pass", 600):
            time.sleep(60)
        res["start"][k] = time.time() - t0
        res[k + "_mem0"] = qmgr_memory(g)
    for r in range(ROUNDS):  # alternated, and which goes first too
        for k in ("empty", "full") if r % 2 == 0 else ("full", "empty"):
            g = gws[k]
            before = cpu_by_pid(g.root)
            round_ = relay_round(g, RELAY_N)
            after, qpid = cpu_by_pid(g.root), g.qmgr_pid()
            # accepting (the workers) and delivering (the queue manager,
            # found by its pid: a restarted one is not the first child;
            # one killed during the round counts in the master's column)
            used = {p: after[p] - before.get(p, 0) for p in after}
            round_["accept_ms"] = sum(v for p, v in used.items() if p not in
                                      (g.root, qpid)) * 1000 / RELAY_N
            round_["qmgr_ms"] = used.get(qpid, 0) * 1000 / RELAY_N
            round_["restarts"] = g.qmgr_restarts()
            res[k].append(round_)
        print("(q) round %d/%d done" % (r + 1, ROUNDS), flush=True)
    for k, g in gws.items():
        res[k + "_mem"] = qmgr_memory(g)
        g.stop()
    return res


def deferred_drain(workers, limit):
    """Peak memory of the queue manager working through DEFERRED_N due
    messages for the dead next hop (each tried or deferred at once)."""
    g = DeferredGw("gw-q-due-%d" % limit, 2552 if limit > 1000 else 2553,
                   Sink(2752 if limit > 1000 else 2753, WORK,
                        "q-due-%d" % limit),
                   workers, DEFERRED_N, -7200, limit)
    t0 = time.time()
    g.start()
    ok = g.wait_log("event=queue_pass seen=%d " % DEFERRED_N, 1800)
    deferred = 0
    while ok and deferred < DEFERRED_N and time.time() < t0 + 1800:
        time.sleep(1)  # the pass is over; the last held are on their way
        with open(g.log) as f:
            deferred = f.read().count("status=deferred")
    took = time.time() - t0
    mem = qmgr_memory(g)
    g.stop()
    if not ok:
        raise Fail("(q) the queue manager did not get through %d due "
                   "messages within 30 min" % DEFERRED_N)
    return {"limit": limit, "seconds": took, "mem": mem,
            "deferred": deferred}


def deferred_part(workers):
    global ACTIVE_SET
    ACTIVE_SET = check_ini(os.path.join(WORK, "probe"), "active_limit",
                           "[delivery]\nactive_limit = 1000\n"
                           ).returncode == 0
    res = deferred_accept(workers)
    res["drain"] = [deferred_drain(workers, limit)
                    for limit in (20000, 1000)] if ACTIVE_SET else []
    return res


def report_deferred(res):
    e, f = res["empty"], res["full"]
    print("\n(q) smtpgw with %d deferred messages in the spool (not due; "
          "for dead.bench.example) against an empty spool; (a)'s load, %d "
          "messages per round, alternated (empty first in odd rounds)"
          % (DEFERRED_N, RELAY_N))
    print("  %-30s %-34s %-34s %s" % ("", "empty: median (rounds)",
                                      "deferred: median (rounds)",
                                      "deferred/empty"))
    for label, key, digits in (("accepted msg/s", "rate", 0),
                               ("delivered msg/s (e2e)", "e2e", 0),
                               ("CPU ms per message", "cpu_ms", 2),
                               ("  workers (accepting)", "accept_ms", 2),
                               ("  queue manager", "qmgr_ms", 2),
                               ("latency p50 ms", "p50", 1)):
        a, b = col(e, key), col(f, key)
        print("  %-30s %-34s %-34s %.2f (%s)" % (
            label, fmt(a, digits), fmt(b, digits), med(b) / med(a),
            " ".join("%.2f" % (y / x) for x, y in zip(a, b))))
    print("  queue manager restarted (watchdog) by the end of each round: "
          "empty %s; deferred %s" % (" ".join(str(r["restarts"]) for r in e),
                                     " ".join(str(r["restarts"]) for r in f)))
    print("  start (ready + first pass over the spool): empty %.1f s, "
          "deferred %.1f s" % (res["start"]["empty"], res["start"]["full"]))
    for k in ("empty", "full"):
        print("  queue manager %s: VmRSS %d KiB after start, %d KiB after "
              "the rounds (VmHWM %d KiB)" % (
                  k, res[k + "_mem0"][0], res[k + "_mem"][0],
                  res[k + "_mem"][1]))
    if not res["drain"]:
        print("  (this build has no [delivery] active_limit: no drain)")
    for d in res["drain"]:
        print("  %d messages due for the dead next hop, active_limit %d: "
              "through in %.0f s (%d deferral lines); queue manager VmRSS "
              "%d KiB, VmHWM %d KiB" % (DEFERRED_N, d["limit"], d["seconds"],
                                        d["deferred"], d["mem"][0],
                                        d["mem"][1]))


def wlabel(w):
    return "smtpgw workers=%d" % w if w else "smtpgw (one process)"


def col(results, key):
    return [x[key] for x in results]


def report(ws, relay, tls, mem, gw_sys, pf_sys):
    if "a" in PARTS:
        report_relay(ws, relay)
    if "b" in PARTS:
        report_tls(ws, tls)
    if "c" in PARTS:
        report_memory(ws, mem)
    if "d" in PARTS:
        report_syscalls(gw_sys, pf_sys)


def report_outbound(ws, out):
    rows = []
    for label, key in (("msg/s", "rate"), ("MTA CPU ms/msg", "cpu_ms"),
                       ("sink CPU ms/msg", "sink_ms"),
                       ("machine CPU idle %", "idle")):
        digits = 0 if key in ("rate", "idle") else 2
        rows += [("reuse: " + label, col(out["gw"], key),
                  col(out["pf-reuse"], key), digits),
                 ("no reuse: " + label, col(out["gw-noreuse"], key),
                  col(out["pf"], key), digits)]
    table("(f) outbound STARTTLS (encrypt, RSA-4096 sink, one destination, "
          "%d B), %d messages queued then flushed, per round; %s: "
          "reuse (defaults) vs reuse_max_messages = 1; Postfix: "
          "smtp_tls_connection_reuse on vs off"
          % (SIZE, TLS_OUT_N, wlabel(ws[-1])), rows)
    for a, b in (("gw", "gw-noreuse"), ("pf-reuse", "pf")):
        x, y = col(out[a], "rate"), col(out[b], "rate")
        print("  %s reuse / no reuse: %.2f (rounds %s)" % (
            "smtpgw" if a == "gw" else "Postfix", med(x) / med(y),
            " ".join("%.2f" % (p / q) for p, q in zip(x, y))))


def report_relay(ws, relay):
    label = "workers=%s" % ws[-1] if ws[-1] else "one process"
    table("(a) relay end to end, plain, %d sessions, %d B, 1 message per "
          "connection, %d messages per round; smtpgw %s"
          % (SESSIONS, SIZE, RELAY_N, label), [
              ("accepted msg/s", col(relay["gw"], "rate"),
               col(relay["pf"], "rate"), 0),
              ("delivered msg/s (e2e)", col(relay["gw"], "e2e"),
               col(relay["pf"], "e2e"), 0),
              ("CPU ms per message", col(relay["gw"], "cpu_ms"),
               col(relay["pf"], "cpu_ms"), 2),
              ("loadgen CPU ms per msg", col(relay["gw"], "client_ms"),
               col(relay["pf"], "client_ms"), 2),
              ("machine CPU idle %", col(relay["gw"], "idle"),
               col(relay["pf"], "idle"), 0),
              ("latency p50 ms", col(relay["gw"], "p50"),
               col(relay["pf"], "p50"), 1),
              ("latency p99 ms", col(relay["gw"], "p99"),
               col(relay["pf"], "p99"), 1)])
    print("  smtpgw CPU by process per round: %s" % "; ".join(
        r["split"] for r in relay["gw"]))


def report_tls(ws, tls):
    rows = []
    for w in ws:
        name = "workers=%s " % w if w else ""
        rows += [(name + "accepted msg/s", col(tls[w], "rate"),
                  col(tls["pf"], "rate"), 0),
                 (name + "CPU ms per message", col(tls[w], "cpu_ms"),
                  col(tls["pf"], "cpu_ms"), 2),
                 (name + "loadgen CPU ms/msg", col(tls[w], "client_ms"),
                  col(tls["pf"], "client_ms"), 2),
                 (name + "machine CPU idle %", col(tls[w], "idle"),
                  col(tls["pf"], "idle"), 0),
                 (name + "idle % during load", col(tls[w], "idle_load"),
                  col(tls["pf"], "idle_load"), 0),
                 (name + "latency p50 ms", col(tls[w], "p50"),
                  col(tls["pf"], "p50"), 1),
                 (name + "latency p99 ms", col(tls[w], "p99"),
                  col(tls["pf"], "p99"), 1)]
    table("(b) STARTTLS inbound, RSA-4096 Default Cert (same cert for "
          "Postfix), %d sessions, 1 message per connection, %d per round"
          % (SESSIONS, TLS_N), rows)
    for w in ws + ["pf"]:
        print("  %s, TLS negotiated per round: %s" % (
            "Postfix" if w == "pf" else wlabel(w),
            "; ".join(", ".join(r.get("tls", ["none"])) for r in tls[w])))
    for w in ws:
        print("  %s, CPU by process per round: %s" % (wlabel(w), "; ".join(
            r["split"] for r in tls[w])))
    print("  machine CPU per message while loadgen ran (ms, all cores; "
          "\"other\" is what no process listed was charged):")
    for w in ws + ["pf"]:
        for i, r in enumerate(tls[w]):
            print("    %s round %d: %s" % ("Postfix" if w == "pf" else
                                          wlabel(w), i + 1, r["budget"]))
    if len(ws) > 1 and ws[0]:
        a, b = col(tls[ws[0]], "rate"), col(tls[ws[-1]], "rate")
        print("  smtpgw workers=%d / workers=%d: %.2f (rounds %s)" % (
            ws[-1], ws[0], med(b) / med(a),
            " ".join("%.2f" % (y / x) for x, y in zip(a, b))))


def report_memory(ws, mem):
    print("\n(c) memory per idle connection (KiB); smtpgw: RSS growth of "
          "every gateway process / %d connections; Postfix: PSS per smtpd "
          "process at %d connections (one process per connection)"
          % (IDLE_N, PF_IDLE_N))
    print("  %-24s %-12s %-12s" % ("", "plain", "STARTTLS"))
    for w in ws:
        print("  %-24s %-12.1f %-12.1f" % (wlabel(w),
                                           mem[w][0], mem[w][1]))
    print("  %-24s %-12.1f %-12.1f" % ("Postfix", mem["pf"][0],
                                       mem["pf"][1]))
    print("  %-24s %-12.4f %-12.4f" % ("ratio (main smtpgw)",
                                       mem[ws[-1]][0] / mem["pf"][0],
                                       mem[ws[-1]][1] / mem["pf"][1]))


def report_syscalls(gw_sys, pf_sys):
    print("\n(d) system calls per relayed message (perf stat "
          "raw_syscalls:sys_enter, whole process tree, %d messages of (a)'s "
          "load, separate run)" % SYSCALL_N)
    print("  %-24s %-12s %-12s %s" % ("", "smtpgw", "Postfix",
                                     "smtpgw/Postfix"))
    print("  %-24s %-12.1f %-12.1f %.2f" % ("system calls", gw_sys[0],
                                           pf_sys[0], gw_sys[0] / pf_sys[0]))
    print("  %-24s %-12.1f %-12.1f" % ("of which failed (ret<0)", gw_sys[1],
                                      pf_sys[1]))
    for name, (total, _, per) in (("smtpgw", gw_sys), ("Postfix", pf_sys)):
        print("  %s top: %s" % (name, ", ".join(
            "%s %.1f" % (n, c) for c, n in per[:14])))


def report_handshakes(ws, hs):
    rows = []
    for v in ("1.2", "1.3"):
        for resume in (False, True):
            kind = "TLS %s %s" % (v, "resumed" if resume else "full")
            rows += [(kind + " conn/s", col(hs["gw", v, resume], "rate"),
                      col(hs["pf", v, resume], "rate"), 0),
                     (kind + " CPU ms/conn", col(hs["gw", v, resume],
                                                 "cpu_ms"),
                      col(hs["pf", v, resume], "cpu_ms"), 3),
                     (kind + " loadgen ms/conn",
                      col(hs["gw", v, resume], "client_ms"),
                      col(hs["pf", v, resume], "client_ms"), 3),
                     (kind + " machine idle %", col(hs["gw", v, resume],
                                                    "idle"),
                      col(hs["pf", v, resume], "idle"), 0)]
    table("(e) STARTTLS handshakes, no message (EHLO, STARTTLS, EHLO, QUIT), "
          "RSA-4096 Default Cert, %d sessions, TCP_NODELAY; %d full or %d "
          "resumed per round (each session's first handshake is a full one); "
          "smtpgw %s" % (HS_SESSIONS, HS_N, HS_RESUMED_N, wlabel(ws[-1])),
          rows)
    # A resumed run's CPU includes each session's first, full handshake:
    # taken out at the full runs' median cost.
    n, s = HS_RESUMED_N, HS_SESSIONS
    for m, name in (("gw", "smtpgw"), ("pf", "Postfix")):
        for v in ("1.2", "1.3"):
            full, res = hs[m, v, False], hs[m, v, True]
            f = med(col(full, "cpu_ms"))
            only = max((med(col(res, "cpu_ms")) * n - s * f) / (n - s), 1e-9)
            print("  %s TLS %s resumed / full: conn/s %.1f; CPU per "
                  "handshake: full %.3f ms, resumed %.3f ms (the %d full "
                  "ones taken out), full / resumed %.1f" % (
                      name, v, med(col(res, "rate")) / med(col(full, "rate")),
                      f, only, s, f / only))


def on_sigterm(signum, frame):
    raise Fail("stopped by signal %d" % signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, on_sigterm)  # so that cleanup runs
    code = 0
    try:
        main()
    except Fail as e:
        print("\nBENCH FAILED (no figures): %s" % e, file=sys.stderr)
        code = 1
    except Exception:  # a bug here fails the run just as loudly
        import traceback
        traceback.print_exc()
        print("\nBENCH FAILED (no figures)", file=sys.stderr)
        code = 1
    finally:
        for p in reversed(started):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
    sys.exit(code)
