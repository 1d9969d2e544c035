"""Send one message with Python's smtplib, as a real client would.

Run by regress/clients_test.go with /usr/bin/python3 (the standard
library only):

    smtplib_client.py HOST PORT [options]

Options:
    --helo NAME          the name given in EHLO
    --starttls           STARTTLS before anything else (certificate not
                         verified: the test daemon's is self-signed)
    --auth MECH          PLAIN or LOGIN, with --user and --password
    --from ADDR          the reverse path
    --to ADDR            a recipient (repeatable)
    --smtputf8           declare SMTPUTF8 (RFC 6531)
    --mail-option OPT    a MAIL parameter, e.g. RET=HDRS (repeatable)
    --rcpt-option OPT    a RCPT parameter, e.g. NOTIFY=SUCCESS (repeatable)
    --bdat N             send the message with BDAT (RFC 3030) in N
                         chunks, all pipelined after RCPT; smtplib has no
                         BDAT of its own, so its documented low-level
                         calls (putcmd, send, getreply) send them
    --message FILE       the message, as bytes; CRLF line endings

The SMTP transcript goes to stderr (smtplib's debug output); the exit
status is 0 only when the server accepted the message for every
recipient.
"""

import argparse
import smtplib
import ssl
import sys


def main():
    p = argparse.ArgumentParser()
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--helo", default="client.example.net")
    p.add_argument("--starttls", action="store_true")
    p.add_argument("--auth")
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--from", dest="sender", required=True)
    p.add_argument("--to", action="append", required=True)
    p.add_argument("--smtputf8", action="store_true")
    p.add_argument("--mail-option", action="append", default=[])
    p.add_argument("--rcpt-option", action="append", default=[])
    p.add_argument("--bdat", type=int, default=0)
    p.add_argument("--message", required=True)
    a = p.parse_args()

    with open(a.message, "rb") as f:
        msg = f.read()

    s = smtplib.SMTP(a.host, a.port, local_hostname=a.helo, timeout=20)
    s.set_debuglevel(1)
    s.ehlo()
    if a.starttls:
        s.starttls(context=ssl._create_unverified_context())
        s.ehlo()
    if a.auth:
        mech = a.auth.upper()
        s.user, s.password = a.user, a.password
        auth = {"PLAIN": s.auth_plain, "LOGIN": s.auth_login}[mech]
        code, text = s.auth(mech, auth)
        print("auth:", code, text, file=sys.stderr)
    mail_options = list(a.mail_option)
    if a.smtputf8:
        mail_options.append("SMTPUTF8")

    if a.bdat == 0:
        refused = s.sendmail(a.sender, a.to, msg, mail_options, a.rcpt_option)
        if refused:
            print("refused:", refused, file=sys.stderr)
            return 1
        s.quit()
        return 0

    if not s.has_extn("chunking"):
        print("no CHUNKING offered", file=sys.stderr)
        return 1
    code, text = s.mail(a.sender, mail_options)
    if code != 250:
        print("MAIL:", code, text, file=sys.stderr)
        return 1
    for rcpt in a.to:
        code, text = s.rcpt(rcpt, a.rcpt_option)
        if code not in (250, 251):
            print("RCPT:", code, text, file=sys.stderr)
            return 1
    # the chunks in one write each, without waiting for replies in
    # between (RFC 3030 §4.2 with PIPELINING)
    size = -(-len(msg) // a.bdat)
    chunks = [msg[i:i + size] for i in range(0, len(msg), size)]
    for i, chunk in enumerate(chunks):
        last = " LAST" if i == len(chunks) - 1 else ""
        s.send(b"BDAT %d%s\r\n" % (len(chunk), last.encode()) + chunk)
    for i in range(len(chunks)):
        code, text = s.getreply()
        if code != 250:
            print("BDAT:", code, text, file=sys.stderr)
            return 1
    s.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
