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
"""
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
for line in sys.stdin:
    line = line.rstrip("\n")
    log.write(line + "\n")
    fields = line.split("|")
    if fields[0] != "filter":
        continue
    phase, sid, token = fields[4], fields[5], fields[6]
    params = "|".join(fields[7:])
    if phase == "data-line":
        if sid not in started:
            started.add(sid)
            send("filter-dataline|%s|%s|X-Phases-Filter: seen" % (sid, token))
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
        if local == "rewrite":
            send("filter-result|%s|%s|rewrite|<sink@%s>" % (sid, token, params.split("@")[1]))
            continue
    send("filter-result|%s|%s|proceed" % (sid, token))
