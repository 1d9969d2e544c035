# smtpd: `make` builds, `make run` starts the daemon on etc/run.conf,
# `make test` installs what the tests need and runs them.

GO       ?= go
PREFIX   ?= /usr/local
SBINDIR  ?= $(PREFIX)/sbin
BINDIR   ?= $(PREFIX)/bin
MANDIR   ?= $(PREFIX)/share/man
SYSCONF  ?= /etc/mail
UNITDIR  ?= /lib/systemd/system
FUZZTIME ?= 10s

# Debian packages the tests use
TEST_PACKAGES = mandoc swaks msmtp e2fsprogs s-nail python3 python3-dkim python3-nacl python3-jsonschema postgresql slapd ldap-utils unbound \
	opensmtpd-filter-dkimsign opensmtpd-filter-senderscore opendkim opendkim-tools dovecot-core dovecot-lmtpd

# package:target for every fuzz target
FUZZ_TARGETS = \
	./proto:FuzzDecode \
	./internal/table:FuzzParse \
	./internal/config:FuzzLoad \
	./internal/envelope:FuzzUnmarshal \
	./internal/mta:FuzzGreeting \
	./internal/enqueue:FuzzReadMessage \
	./internal/smtp:FuzzSession \
	./internal/smtp/server:FuzzSession \
	./internal/address:FuzzParse \
	./internal/lookup:FuzzParseForward \
	./internal/lookup:FuzzAliases \
	./internal/mfa/procfilter:FuzzParseLine \
	./internal/mfa/milter:FuzzReadHeader \
	./internal/mailauth/spf:FuzzParseRecord \
	./internal/mailauth/dkim:FuzzParseTags \
	./internal/mailauth/dkim:FuzzReadHeader \
	./internal/mailauth/dkim:FuzzLoadKey \
	./internal/mailauth/dmarc:FuzzParseRecord \
	./internal/mailauth/dmarc:FuzzFromDomain \
	./internal/mailauth/srs:FuzzReverse \
	./internal/mailauth/dnsbl:FuzzText \
	./internal/mailauth/arc:FuzzTagList \
	./internal/smtp/proxyproto:FuzzParse \
	./internal/table/proctable:FuzzParseReply \
	./internal/dane:FuzzVerify \
	./internal/mtasts:FuzzParsePolicy \
	./internal/mtasts:FuzzParseTXT \
	./internal/tlsrpt:FuzzParseTXT

.PHONY: all build run test test-deps users fuzz bench bench-full install clean monkey

all: build

build:
	$(GO) build -o bin/smtpd ./smtpd
	$(GO) build -o bin/smtpctl ./smtpctl

# The daemon in the foreground on loopback (127.0.0.1:2525), spool and
# control socket under var/. Started by root it still runs its children
# unprivileged, as the users `make users` creates.
run: build
	@if [ "$$(id -u)" = 0 ]; then $(MAKE) --no-print-directory users; fi
	mkdir -p var
	exec bin/smtpd -d -f etc/run.conf

test: test-deps build
	$(GO) vet ./...
	$(GO) vet -tags monkey ./...
	$(GO) test -count=1 -skip '^TestStress' ./...
	@# the stress cases print their figures (sessions refused, peak RSS)
	$(GO) test -count=1 -v -run '^TestStress' ./regress
	$(GO) test -count=1 -tags monkey -run '^(TestMonkey|TestCrashMatrix)$$' ./regress

# One monkey run of COUNT messages with all fault injection points on;
# SEED=n replays the run a failure names.
COUNT ?= 2000
monkey:
	SMTPD_MONKEY_SEED=$(SEED) MONKEY_COUNT=$(COUNT) $(GO) test -count=1 -tags monkey -run '^TestMonkey$$' -v ./regress

test-deps:
	@missing=""; for p in $(TEST_PACKAGES); do \
		dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing:$$missing"; \
			policy=/usr/sbin/policy-rc.d; own=""; \
			if [ ! -e $$policy ]; then own=1; printf '#!/bin/sh\nexit 101\n' >$$policy; chmod 755 $$policy; fi; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
			status=$$?; [ -n "$$own" ] && rm -f $$policy; [ $$status = 0 ] || exit $$status; \
		else \
			echo "the tests need these Debian packages:$$missing (run make test as root, or apt-get install them)"; exit 1; \
		fi; \
	fi
	@if [ "$$(id -u)" = 0 ]; then $(MAKE) --no-print-directory users; fi
	@if [ "$$(id -u)" = 0 ]; then $(MAKE) --no-print-directory postfix-tools; fi

# Postfix's posttls-finger for regress/posttls_test.go: Debian's postfix
# package extracted into var/postfix, not installed (no service, user or
# /etc/postfix). The system libraries it links against that ldd finds
# missing are installed: the lib* packages among the package's
# dependencies, recorded in var/postfix/DEPENDS at extraction.
.PHONY: postfix-tools
postfix-tools:
	@dir="$(CURDIR)/var/postfix"; \
	if [ ! -e "$$dir/usr/sbin/posttls-finger" ]; then \
		echo "extracting Debian's postfix package into var/postfix (not installed)"; \
		tmp=$$(mktemp -d) || exit 1; chmod 777 "$$tmp"; \
		( cd "$$tmp" && { apt-get download -qq postfix >/dev/null 2>&1 || \
			{ apt-get update -qq && apt-get download -qq postfix >/dev/null; }; } ) && \
		deb=$$(ls "$$tmp"/postfix_*.deb) && mkdir -p "$$dir" && dpkg-deb -x "$$deb" "$$dir" && \
		dpkg-deb -f "$$deb" Depends >"$$dir/DEPENDS"; \
		status=$$?; rm -rf "$$tmp"; [ $$status = 0 ] || exit $$status; \
	fi; \
	libs() { LD_LIBRARY_PATH="$$dir/usr/lib/postfix" ldd "$$dir/usr/sbin/posttls-finger" | awk '/not found/ { print $$1 }'; }; \
	missing=$$(libs); \
	if [ -n "$$missing" ]; then \
		pkgs=""; for p in $$(tr ',|' '\n\n' <"$$dir/DEPENDS" | sed 's/[(:].*//' | grep -o '^ *lib[^ ]*'); do \
			dpkg -s $$p >/dev/null 2>&1 || pkgs="$$pkgs $$p"; done; \
		echo "posttls-finger lacks" $$missing: installing$$pkgs; \
		[ -n "$$pkgs" ] && { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$pkgs >/dev/null || \
			{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$pkgs >/dev/null; }; }; \
		missing=$$(libs); \
		if [ -n "$$missing" ]; then echo "posttls-finger still lacks" $$missing; exit 1; fi; \
	fi

# The unprivileged users of the daemon's processes.
users:
	@for u in _smtpd _smtpq; do \
		getent passwd $$u >/dev/null || { echo "creating user $$u"; \
		useradd --system --user-group --no-create-home --home-dir /var/empty \
			--shell /usr/sbin/nologin --comment "smtpd privilege separation" $$u; }; \
	done

# Short runs of every fuzz target; FUZZTIME=10m for a long one. New
# inputs are minimized for 5 s at most: the default minute stalls the
# run on large inputs.
fuzz:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$pkg $$name ($(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 5s $$pkg || exit 1; \
	done

# The Go benchmarks, then this daemon against Debian's OpenSMTPD side by
# side (bench/: installs opensmtpd if missing, without starting its
# service, and takes smtp-source and smtp-sink from Debian's postfix
# package into var/bench-tools without installing it); the table goes to
# var/bench/last.md. Quick mode here, the full matrix with bench-full.
bench: build
	@if [ "$$(id -u)" = 0 ]; then $(MAKE) --no-print-directory users; fi
	$(GO) test -run '^$$' -bench . -benchmem ./...
	$(GO) build -o bin/bench ./bench
	$(GO) build -o bin/passfilter ./bench/passfilter
	bin/bench

bench-full: build
	@if [ "$$(id -u)" = 0 ]; then $(MAKE) --no-print-directory users; fi
	$(GO) build -o bin/bench ./bench
	$(GO) build -o bin/passfilter ./bench/passfilter
	bin/bench -full

# smtpctl is also the sendmail interface, by the name it is called by.
# Into DESTDIR (a package's tree) no user is created: smtpd.sysusers
# creates them where the tree is installed. The unit gets this SBINDIR
# and SYSCONF.
install: build
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ]; then $(MAKE) --no-print-directory users; fi
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(SYSCONF)
	install -m 755 bin/smtpd $(DESTDIR)$(SBINDIR)/smtpd
	install -m 755 bin/smtpctl $(DESTDIR)$(SBINDIR)/smtpctl
	for l in sendmail send-mail mailq newaliases makemap; do \
		ln -sf smtpctl $(DESTDIR)$(SBINDIR)/$$l; done
	for l in mailq newaliases; do \
		ln -sf $(SBINDIR)/smtpctl $(DESTDIR)$(BINDIR)/$$l; done
	install -m 644 smtpd.conf.5 $(DESTDIR)$(MANDIR)/man5/smtpd.conf.5
	install -m 644 aliases.5 forward.5 $(DESTDIR)$(MANDIR)/man5/
	install -m 644 smtpd.8 smtpctl.8 $(DESTDIR)$(MANDIR)/man8/
	for l in sendmail mailq newaliases makemap; do \
		ln -sf smtpctl.8 $(DESTDIR)$(MANDIR)/man8/$$l.8; done
	install -d -m 755 $(DESTDIR)/var/empty
	@if [ ! -e $(DESTDIR)$(SYSCONF)/smtpd.conf ]; then \
		install -m 644 etc/smtpd.conf $(DESTDIR)$(SYSCONF)/smtpd.conf; \
		echo "installed $(SYSCONF)/smtpd.conf: edit hostname before starting"; \
	fi
	install -d $(DESTDIR)$(UNITDIR) $(DESTDIR)/usr/lib/sysusers.d $(DESTDIR)/usr/lib/tmpfiles.d
	sed -e 's|/usr/sbin/|$(SBINDIR)/|g' -e 's|/etc/mail/|$(SYSCONF)/|g' etc/systemd/smtpd.service >$(DESTDIR)$(UNITDIR)/smtpd.service
	chmod 644 $(DESTDIR)$(UNITDIR)/smtpd.service
	install -m 644 etc/systemd/smtpd.sysusers $(DESTDIR)/usr/lib/sysusers.d/smtpd.conf
	install -m 644 etc/systemd/smtpd.tmpfiles $(DESTDIR)/usr/lib/tmpfiles.d/smtpd.conf
	@# the unit starts only once its ReadWritePaths exist
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ] && command -v systemd-tmpfiles >/dev/null; then \
		systemd-tmpfiles --create /usr/lib/tmpfiles.d/smtpd.conf; fi

clean:
	rm -rf bin var
