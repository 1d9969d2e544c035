#!/usr/bin/python3
"""A filter for smtpd's tests, speaking OpenSMTPD's filter protocol 0.7.

It registers every filter phase and every report event, writes each line
it receives to the file named by its first argument, and lets everything
pass, adding a header field to each message. The recipient address picks
a misbehaviour, so that one test can try them all:
  crash@...    the filter exits at once
  hang@...     the filter stops answering
  garbage@...  the filter writes a line that is not the protocol
  reject@...   the recipient is refused with 550
  junk@...     the session is marked as junk
  rewrite@...  the recipient becomes sink@<same domain>
  badcr@...    the message comes back with a bare CR in a line

With "monkey SEED BUDGETFILE" after the log file, it also misbehaves at
random (crash, hang or garbage, one request in fifty) as long as the
number in BUDGETFILE, which it counts down, is above zero.
"""
import os
import random
import sys
import time

PHASES = ["connect", "helo", "ehlo", "starttls", "auth", "mail-from", "rcpt-to",
          "data", "data-line", "commit", "rset", "quit", "noop", "help", "wiz"]
EVENTS = ["link-connect", "link-disconnect", "link-greeting", "link-identify",
          "link-tls", "link-auth", "tx-reset", "tx-begin", "tx-mail", "tx-rcpt",
          "tx-envelope", "tx-data", "tx-commit", "tx-rollback", "protocol-client",
          "protocol-server", "filter-report", "filter-response", "timeout"]

log = open(sys.argv[1], "a", buffering=1)
out = sys.stdout
monkey = None
if len(sys.argv) > 4 and sys.argv[2] == "monkey":
    monkey = random.Random(int(sys.argv[3]) * 1000003 + os.getpid())
    budget_file = sys.argv[4]


misbehaved = False


def misbehave(sid, token):
    """At random, and within the budget, crash, hang or write garbage,
    once per process: each misbehaviour ends the process."""
    global misbehaved
    if monkey is None or misbehaved or monkey.random() >= 0.02:
        return
    with open(budget_file, "r+") as f:
        left = int(f.read().strip() or "0")
        if left <= 0:
            return
        f.seek(0)
        f.truncate()
        f.write(str(left - 1))
    misbehaved = True
    what = monkey.choice(["crash", "hang", "garbage"])
    log.write("monkey: %s at %s %s\n" % (what, sid, token))
    if what == "crash":
        os._exit(3)
    if what == "hang":
        while True:
            time.sleep(3600)
    send("filter-result|%s|%s|not the protocol" % (sid, token))


def send(line):
    out.write(line + "\n")
    out.flush()


for line in sys.stdin:
    line = line.rstrip("\n")
    log.write(line + "\n")
    if line == "config|ready":
        break
for p in PHASES:
    send("register|filter|smtp-in|" + p)
for e in EVENTS:
    send("register|report|smtp-in|" + e)
send("register|ready")

started = set()
badcr = set()
for line in sys.stdin:
    line = line.rstrip("\n")
    log.write(line + "\n")
    fields = line.split("|")
    if fields[0] != "filter":
        continue
    phase, sid, token = fields[4], fields[5], fields[6]
    params = "|".join(fields[7:])
    misbehave(sid, token)
    if phase == "data-line":
        if sid not in started:
            started.add(sid)
            send("filter-dataline|%s|%s|X-Phases-Filter: seen" % (sid, token))
            if sid in badcr:
                send("filter-dataline|%s|%s|X-Bad: a\rb" % (sid, token))
        send("filter-dataline|%s|%s|%s" % (sid, token, params))
        if params == ".":
            started.discard(sid)
        continue
    if phase == "rcpt-to":
        local = params.split("@")[0].lower()
        if local == "crash":
            sys.exit(3)
        if local == "hang":
            while True:
                time.sleep(3600)
        if local == "garbage":
            send("this is not the filter protocol")
            continue
        if local == "reject":
            send("filter-result|%s|%s|reject|550 5.7.1 Refused by the phases filter" % (sid, token))
            continue
        if local == "junk":
            send("filter-result|%s|%s|junk" % (sid, token))
            continue
        if local == "badcr":
            badcr.add(sid)
        if local == "rewrite":
            send("filter-result|%s|%s|rewrite|<sink@%s>" % (sid, token, params.split("@")[1]))
            continue
    send("filter-result|%s|%s|proceed" % (sid, token))
