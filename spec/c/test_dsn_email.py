#!/usr/bin/env python3
"""Hands every DSN that spec/c/test_dsn.c builds to Python's email parser.

A second opinion on src/dsn.c from an independent MIME reader: each DSN
must parse without defects into a multipart/report of text/plain,
message/delivery-status and text/rfc822-headers, with the fields RFC 3464
asks for and no header that the inputs tried to inject. Prints TAP like
the C tests. Not part of `make check`; run it after building the test:

    make build/check/test_dsn && python3 spec/c/test_dsn_email.py
"""
import email
import email.policy
import email.utils
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
BINARY = os.path.join(ROOT, "build", "check", "test_dsn")
ONCE = ("From", "To", "Subject", "Date", "Message-Id", "Auto-Submitted",
        "MIME-Version", "Content-Type")
PARTS = ("text/plain", "message/delivery-status", "text/rfc822-headers")

count = 0
failed = 0


def check(cond, desc):
    global count, failed
    count += 1
    if not cond:
        failed += 1
    print("%sok %d - %s" % ("" if cond else "not ", count, desc))


def check_top(name, msg):
    check(not msg.defects, "%s: no defects at the top (%s)"
          % (name, msg.defects))
    for field in ONCE:
        check(len(msg.get_all(field, [])) == 1, "%s: one %s" % (name, field))
    check(msg.get_all("Bcc") is None and msg.get_all("X-Injected") is None,
          "%s: nothing injected into the header" % name)
    check(email.utils.parsedate_to_datetime(str(msg["Date"])) is not None,
          "%s: Date parses" % name)
    check(msg.get_content_type() == "multipart/report"
          and msg.get_param("report-type") == "delivery-status",
          "%s: multipart/report; report-type=delivery-status" % name)
    for field, value in msg.items():
        check("\r" not in str(value) and "\n" not in str(value),
              "%s: %s is one logical line" % (name, field))


def check_report(name, part):
    blocks = part.get_payload()
    check(isinstance(blocks, list) and len(blocks) >= 2,
          "%s: a per-message group and recipient groups" % name)
    if not isinstance(blocks, list) or len(blocks) < 2:
        return
    check(str(blocks[0]["Reporting-MTA"]).startswith("dns; "),
          "%s: Reporting-MTA" % name)
    for i, group in enumerate(blocks[1:], 1):
        check(str(group["Final-Recipient"]).startswith("rfc822; ")
              and str(group["Action"]) in ("failed", "delayed")
              and group["Status"] is not None
              and group["Last-Attempt-Date"] is not None,
              "%s: recipient %d has its fields" % (name, i))


def check_parts(name, msg):
    parts = list(msg.iter_parts())
    check(tuple(p.get_content_type() for p in parts) == PARTS,
          "%s: the three parts in order" % name)
    if len(parts) != 3:
        return
    for p in parts:
        check(not p.defects, "%s: %s has no defects"
              % (name, p.get_content_type()))
    check(parts[0].get_content_charset() == "us-ascii",
          "%s: the notice is us-ascii" % name)
    check_report(name, parts[1])
    boundary = msg.get_boundary()
    raw = msg.as_bytes(policy=email.policy.SMTP)
    check(boundary is not None and raw.count(boundary.encode()) == 5,
          "%s: the boundary occurs only where it belongs" % name)


def main():
    if not os.access(BINARY, os.X_OK):
        print("Bail out! %s is missing (make build/check/test_dsn)" % BINARY)
        return 1
    with tempfile.TemporaryDirectory(prefix="dsn-email.") as tmp:
        run = subprocess.run([BINARY, "--dump", tmp], capture_output=True,
                             text=True, check=False)
        check(run.returncode == 0, "test_dsn --dump passes")
        names = sorted(os.listdir(tmp))
        check(len(names) > 10, "test_dsn wrote DSNs (%d)" % len(names))
        for name in names:
            with open(os.path.join(tmp, name), "rb") as f:
                msg = email.message_from_binary_file(
                    f, policy=email.policy.default)
            check_top(name, msg)
            check_parts(name, msg)
    print("1..%d" % count)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
