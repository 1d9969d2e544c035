#!/usr/bin/python3
"""A table program for smtpd's tests (OpenSMTPD's table protocol 0.1):
the domain example.test and its virtual users, one of whom makes the
program misbehave: crash@example.test exits, hang@example.test never
answers."""
import sys
import time

ALIAS = {"alice@example.test": "sink", "team@example.test": "alice@example.test"}
DOMAINS = {"example.test"}


def out(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


for line in sys.stdin:
    if line.rstrip("\n") == "config|ready":
        break
out("register|alias")
out("register|domain")
out("register|ready")
for line in sys.stdin:
    f = line.rstrip("\n").split("|", 7)
    if f[4] == "update":
        out("update-result|%s|ok" % f[5])
        continue
    op, service, rid = f[4], f[5], f[6]
    key = f[7] if len(f) > 7 else ""
    if key.startswith("crash@"):
        sys.exit(3)
    if key.startswith("hang@"):
        while True:
            time.sleep(3600)
    if service == "alias":
        if key in ALIAS:
            out("%s-result|%s|found|%s" % (op, rid, ALIAS[key]))
        else:
            out("%s-result|%s|not-found" % (op, rid))
    else:
        out("%s-result|%s|%s" % (op, rid, "found" if key in DOMAINS else "not-found"))
