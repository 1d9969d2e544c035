#!/usr/bin/python3
# A table program for the tests (smtpd-tables(7), protocol 0.1). It
# registers every service and answers from a small static map, and
# misbehaves on purpose on keys with special local parts:
#   crash@...    exits with status 3
#   hang@...     never answers
#   garbage@...  answers a line that is not the protocol
#   error@...    answers error|boom
#   wrongid@...  answers with another id
#   stderr@...   writes a line on stderr, then not-found
#   bye@...      answers not-found, then exits with status 0
# The first argument, if any, selects a handshake mode (see below).
import os
import subprocess
import sys
import time

DATA = {
    "alias": {"root": "admin@example.org,ops@example.org", "pipe": "a|b"},
    "domain": {"example.org": "", "example.net": ""},
    "credentials": {"alice": "alice:$2b$08$abcdefghijklmnopqrstuv"},
    "netaddr": {"192.0.2.1": ""},
    "userinfo": {"alice": "1000:1000:/home/alice"},
    "source": {"192.0.2.10": ""},
    "mailaddr": {"alice@example.org": ""},
    "addrname": {"192.0.2.1": "mx.example.org"},
    "mailaddrmap": {"alice": "alice@example.org,a@example.org"},
    "relayhost": {"example.org": "smtp+tls://relay.example.org"},
    "string": {"tag": ""},
    "regex": {"x": ""},
    "auth": {"alice:secret": ""},
}

mode = sys.argv[1] if len(sys.argv) > 1 else ""
updates = 0


def out(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


config = {}
while True:
    line = sys.stdin.readline()
    if not line:
        sys.exit(1)
    line = line.rstrip("\n")
    if line == "config|ready":
        break
    _, k, v = line.split("|", 2)
    config[k] = v
# tell the test what we were told (stderr goes to Options.Log)
sys.stderr.write("config %s %s %s\n" % (config.get("smtpd-version"), config.get("protocol"), config.get("tablename")))
sys.stderr.flush()

if mode == "unknown-service":
    out("register|alias")
    out("register|frobnicate")
    out("register|ready")
elif mode == "no-services":
    out("register|ready")
elif mode == "garbage-handshake":
    out("hello there")
elif mode == "exit-handshake":
    sys.exit(2)
elif mode == "alias-only":
    out("register|alias")
    out("register|ready")
else:
    if mode == "child":
        # a descendant in our process group, which Close must take too
        child = subprocess.Popen(["/bin/sleep", "1000"])
        sys.stderr.write("child %d\n" % child.pid)
        sys.stderr.flush()
    for s in DATA:
        out("register|" + s)
    out("register|ready")

while True:
    line = sys.stdin.readline()
    if not line:
        sys.exit(0)  # smtpd went away
    f = line.rstrip("\n").split("|", 7)
    if f[0] != "table" or f[1] != "0.1" or f[3] != config.get("tablename"):
        sys.stderr.write("bad request %r\n" % line)
        sys.exit(1)
    op = f[4]
    if op == "update":
        rid = f[5]
        updates += 1
        if mode == "update-error":
            out("update-result|%s|error|cannot reload" % rid)
        else:
            out("update-result|%s|ok" % rid)
        continue
    service, rid, key = f[5], f[6], f[7]
    res = op + "-result|" + rid
    local = key.split("@", 1)[0] if "@" in key else ""
    if local == "crash":
        sys.exit(3)
    if local == "hang":
        time.sleep(1e9)
    if local == "garbage":
        out("this is not the protocol")
        continue
    if local == "error":
        out(res + "|error|boom")
        continue
    if local == "wrongid":
        out(op + "-result|%08x|not-found" % ((int(rid, 16) + 1) % (1 << 32)))
        continue
    if local == "stderr":
        sys.stderr.write("looking up %s\n" % key)
        sys.stderr.flush()
    if service == "alias" and key == "updates":
        out(res + "|found|%d" % updates)
        continue
    if service == "alias" and key == "pid":
        out(res + "|found|%d" % os.getpid())
        continue
    if local == "bye":
        out(res + "|not-found")
        sys.exit(0)
    table = DATA.get(service, {})
    if key not in table:
        out(res + "|not-found")
    elif op == "check":
        out(res + "|found")
    else:
        out(res + "|found|" + table[key])
