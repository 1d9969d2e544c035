"""Validate a JSON document against a JSON Schema, checking formats.

usage: validate.py SCHEMA DOCUMENT

Exit status: 0 valid, 1 invalid (the errors on stdout), 3 jsonschema
missing. Debian's python3-jsonschema checks "date-time" only when
rfc3339-validator is installed too: without it, a strict RFC 3339 check
is registered here, so that the format is never skipped.
"""
import datetime
import json
import re
import sys

try:
    import jsonschema
except ImportError as e:
    print(e)
    sys.exit(3)

RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def main():
    with open(sys.argv[1]) as f:
        schema = json.load(f)
    with open(sys.argv[2]) as f:
        document = json.load(f)
    checker = jsonschema.FormatChecker()
    if "date-time" not in checker.checkers:
        @checker.checks("date-time", raises=ValueError)
        def date_time(value):
            if not isinstance(value, str):
                return True
            if not RFC3339.match(value):
                return False
            datetime.datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
            return True
    for name in ("email", "ipv4", "ipv6", "date-time"):
        if name not in checker.checkers:
            print("no checker for format %s" % name)
            sys.exit(3)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    errors = sorted(cls(schema, format_checker=checker).iter_errors(document),
                    key=lambda e: list(e.absolute_path))
    for e in errors:
        print("/".join(str(p) for p in e.absolute_path) or "(root)", ":", e.message)
    sys.exit(1 if errors else 0)


main()
