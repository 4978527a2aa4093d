#!/usr/bin/python3
"""make bench, gateway part: memory per idle connection and relay throughput
of the release build, on loopback, with the spool synced as always.

    bench_gateway.py BINARY WORKDIR

1. idle: opens N connections that read the banner and stay idle; reports the
   gateway's RSS growth per connection (/proc/PID/status VmRSS).
2. relay: T client threads send M messages each through smtplib; the gateway
   fsyncs each into its spool before 250 and delivers it to Postfix's
   smtp-sink on loopback; reports accepted/s and delivered/s (wall clock,
   from the first MAIL to the last message logged as sent).
Every process started here is stopped by PID.
"""
import os
import re
import ssl
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time

IDLE = 2000
THREADS = 8
PER_THREAD = 250
BODY = ("Subject: bench\r\n\r\n" + "x" * 70 + "\r\n") * 40  # ~3 KiB


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def start_gateway(binary, work, sink_port):
    ini = os.path.join(work, "gateway.ini")
    with open(ini, "w") as f:
        f.write("[gateway]\nhostname = bench.example\nlisten = 127.0.0.1:0\n"
                "spool = spool\nrelay_domains = bench.example\n"
                "max_connections = 5000\nmax_connections_per_ip = 5000\n"
                "[tls]\ncert_dir = certs\n[dns]\nresolver = 127.0.0.1@9\n"
                "[domain:bench.example]\nnext_hop = 127.0.0.1:%d\n" % sink_port)
    log = open(os.path.join(work, "log"), "w")
    proc = subprocess.Popen([binary, "-c", ini], stderr=log,
                            stdout=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        text = open(os.path.join(work, "log")).read()
        m = re.search(r"event=listen addr=127\.0\.0\.1:(\d+)", text)
        if m:
            return proc, int(m.group(1))
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("gateway did not start")


def bench_idle(pid, port):
    base = rss_kib(pid)
    socks = []
    for _ in range(IDLE):
        s = socket.create_connection(("127.0.0.1", port))
        s.recv(512)
        socks.append(s)
    time.sleep(0.5)
    grown = rss_kib(pid) - base
    for s in socks:
        s.close()
    print("idle connections: %d, RSS grew %d KiB: %.2f KiB per idle "
          "connection" % (IDLE, grown, grown / IDLE))


def sender(port, errors):
    try:
        c = smtplib.SMTP("127.0.0.1", port, timeout=60)
        c.ehlo("client.bench")
        for i in range(PER_THREAD):
            c.sendmail("from@origin.example", ["to@bench.example"], BODY)
        c.quit()
    except Exception as e:  # counted, the run is then invalid
        errors.append(repr(e))


def bench_relay(work, port):
    errors = []
    threads = [threading.Thread(target=sender, args=(port, errors))
               for _ in range(THREADS)]
    start = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    accepted = time.time() - start
    total = THREADS * PER_THREAD
    deadline = time.time() + 120
    sent = 0
    while time.time() < deadline:
        sent = open(os.path.join(work, "log")).read().count("status=sent")
        if sent >= total:
            break
        time.sleep(0.05)
    delivered = time.time() - start
    if errors or sent < total:
        print("relay: INVALID (%d errors, %d of %d delivered): %s"
              % (len(errors), sent, total, errors[:3]))
        return
    print("relay: %d messages of %d octets, %d client threads, synced spool:"
          % (total, len(BODY), THREADS))
    print("  accepted %.0f msg/s (%.2f s), delivered to smtp-sink %.0f msg/s "
          "(%.2f s)" % (total / accepted, accepted, total / delivered,
                        delivered))


HANDSHAKE_SECONDS = 4


def handshaker(port, stop, counts, i):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    n = 0
    while not stop.is_set():
        s = socket.create_connection(("127.0.0.1", port))
        f = s.makefile("rb")
        f.readline()
        s.sendall(b"EHLO bench\r\n")
        while not f.readline().startswith(b"250 "):
            pass
        s.sendall(b"STARTTLS\r\n")
        f.readline()
        t = ctx.wrap_socket(s)
        t.sendall(b"QUIT\r\n")
        t.close()
        n += 1
    counts[i] = n


def bench_handshakes(port):
    stop = threading.Event()
    counts = [0] * THREADS
    threads = [threading.Thread(target=handshaker,
                                args=(port, stop, counts, i))
               for i in range(THREADS)]
    for t in threads:
        t.start()
    time.sleep(HANDSHAKE_SECONDS)
    stop.set()
    for t in threads:
        t.join()
    out = subprocess.run(["openssl", "speed", "-seconds", "2", "rsa4096"],
                         capture_output=True, text=True).stdout
    m = re.search(r"rsa 4096 bits\s+\S+s\s+\S+s\s+([\d.]+)", out)
    print("TLS: %.0f STARTTLS handshakes/s with the RSA 4096 Default Cert, "
          "%d client threads; one core signs %s RSA 4096/s (openssl speed)"
          % (sum(counts) / HANDSHAKE_SECONDS, THREADS,
             m.group(1) if m else "?"))


def main():
    binary, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    sink_port = free_port()
    sink = subprocess.Popen(["smtp-sink", "-u", "root", "127.0.0.1:%d"
                             % sink_port, "256"],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    proc = None
    try:
        proc, port = start_gateway(binary, work, sink_port)
        bench_idle(proc.pid, port)
        bench_relay(work, port)
        bench_handshakes(port)
    finally:
        for p in (proc, sink):
            if p is not None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()


if __name__ == "__main__":
    main()
