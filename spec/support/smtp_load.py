#!/usr/bin/python3
"""A steady SMTP load for the integration specs (reload under load).

Run with /usr/bin/python3:

  smtp_load.py --port P --stop-file F --out F [--threads N] [--probe ADDR]
               [--host 127.0.0.1] [--timeout S] [--max-seconds S]

Each thread runs complete transactions in a loop, one connection each:
connect, EHLO, MAIL, RCPT (--probe first, when given, then
user@example.test), DATA, QUIT, with smtplib, and records every outcome. A
transaction is ok when the banner is 220, EHLO, MAIL and the user RCPT are
250, DATA ends with "250 2.0.0 Ok: queued as ID" and QUIT is 221; anything
else (another reply, a refused or reset connection, a timeout) is a
failure. The probe recipient's reply is only recorded (counted by text).

The threads stop when the stop file exists (polled every 20 ms) or after
--max-seconds; each finishes the transaction it is in. Then the summary is
written to --out (through a temporary name, so it appears whole):

  {"transactions": n, "ok": n, "failed": n, "failures": [first 50],
   "probe_replies": {"550 5.7.1 ...": n, ...}, "queued_ids": [...],
   "started": t, "stopped": t}

"ready" is printed on stdout once the threads run. Exit status 0.
"""
import argparse
import json
import os
import smtplib
import socket
import sys
import threading
import time

MESSAGE = (b"From: <load@example.org>\r\nTo: <user@example.test>\r\n"
           b"Subject: reload under load\r\n\r\nHello.\r\n")


class Failure(Exception):
    pass


def reply_text(reply):
    code, text = reply
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return code, text


def expect(step, reply, code_wanted):
    code, text = reply_text(reply)
    if code != code_wanted:
        raise Failure("%s: %s %s" % (step, code, text))
    return text


def one_transaction(args, probe_counts, lock):
    s = smtplib.SMTP(timeout=args.timeout)
    try:
        expect("connect", s.connect(args.host, args.port), 220)
        expect("ehlo", s.ehlo("load.example"), 250)
        expect("mail", s.mail("load@example.org"), 250)
        if args.probe:
            code, text = reply_text(s.rcpt(args.probe))
            key = "%d %s" % (code, text)
            with lock:
                probe_counts[key] = probe_counts.get(key, 0) + 1
        expect("rcpt", s.rcpt("user@example.test"), 250)
        text = expect("data", s.data(MESSAGE), 250)
        if not text.startswith("2.0.0 Ok: queued as "):
            raise Failure("data: 250 %s" % text)
        qid = text[len("2.0.0 Ok: queued as "):]
        expect("quit", s.quit(), 221)
        return qid
    finally:
        try:
            s.close()
        except OSError:
            pass


def worker(args, stop, state, lock):
    while not stop.is_set():
        started = time.time()
        try:
            qid = one_transaction(args, state["probe_replies"], lock)
            with lock:
                state["transactions"] += 1
                state["ok"] += 1
                state["queued_ids"].append(qid)
        except (Failure, smtplib.SMTPException, OSError, socket.timeout) as e:
            with lock:
                state["transactions"] += 1
                state["failed"] += 1
                if len(state["failures"]) < 50:
                    state["failures"].append({
                        "at": started,
                        "error": "%s: %s" % (type(e).__name__, e)})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--stop-file", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--probe")
    ap.add_argument("--timeout", type=float, default=20)
    ap.add_argument("--max-seconds", type=float, default=120)
    args = ap.parse_args()

    state = {"transactions": 0, "ok": 0, "failed": 0, "failures": [],
             "probe_replies": {}, "queued_ids": [], "started": time.time()}
    lock = threading.Lock()
    stop = threading.Event()
    threads = [threading.Thread(target=worker, args=(args, stop, state, lock),
                                daemon=True) for _ in range(args.threads)]
    for t in threads:
        t.start()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    deadline = time.monotonic() + args.max_seconds
    while not os.path.exists(args.stop_file) and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    for t in threads:
        t.join()
    state["stopped"] = time.time()
    state["stopped_by"] = ("stop file" if os.path.exists(args.stop_file)
                           else "max-seconds")
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(state, f)
    os.rename(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
