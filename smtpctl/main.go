// Command smtpctl controls a running smtpd through its control socket.
// Called as sendmail, send-mail, mailq, newaliases or makemap (through
// links of those names) it is the sendmail interface of the system.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"smtpd/internal/enqueue"
	"smtpd/internal/envelope"
	"smtpd/internal/logging"
	"smtpd/internal/stats"
	"smtpd/proto"
)

func main() {
	if status, ok := personality(filepath.Base(os.Args[0]), os.Args[1:], os.Stdin, os.Stdout, os.Stderr); ok {
		os.Exit(status)
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("smtpctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("s", "", "control socket `path` (default: control_socket of the configuration)")
	cfgPath := fs.String("f", "", "configuration `file` to read the control socket path from")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: smtpctl [-s socket] [-f file] show stats|hosts|relays|routes|queue")
		fmt.Fprintln(stderr, "       smtpctl [-s socket] [-f file] schedule|remove ID|all, schedule domain [@]DOMAIN")
		fmt.Fprintln(stderr, "       smtpctl [-s socket] [-f file] pause|resume envelope ID|all, pause|resume smtp|mda|mta")
		fmt.Fprintln(stderr, "       smtpctl [-s socket] [-f file] flush, flush -t TIMEOUT")
		fmt.Fprintln(stderr, "       smtpctl [-s socket] [-f file] update table NAME")
		fmt.Fprintln(stderr, "       smtpctl [-s socket] [-f file] show envelope ID|message ID|status|stats --json, monitor")
		fmt.Fprintln(stderr, "       smtpctl [-s socket] [-f file] log brief|verbose, trace|untrace SUBSYSTEM")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	env, err := environment(*socket, *cfgPath)
	if err != nil {
		fmt.Fprintf(stderr, "smtpctl: %v\n", err)
		return 1
	}
	cmd, arg, err := parseCommand(fs.Args())
	if err != nil {
		fmt.Fprintf(stderr, "smtpctl: %v\n", err)
		fs.Usage()
		return 2
	}
	env.arg = arg
	if err := cmd(env, stdout); err != nil {
		fmt.Fprintf(stderr, "smtpctl: %v\n", err)
		var e *enqueue.Error
		if errors.As(err, &e) {
			// a status that is an answer, such as flush's 75
			return e.Status
		}
		return 1
	}
	return 0
}

// cmdEnv is what a command works with.
type cmdEnv struct {
	// socket is the control socket: -s, else the configuration's.
	socket string
	// spool is the spool, read directly when the daemon is down.
	spool string
	// arg is the command's argument, such as an envelope id.
	arg string
}

// environment reads the configuration (-f, or the default one if it
// exists) for the control socket and the spool.
func environment(flagSocket, cfgPath string) (*cmdEnv, error) {
	cfg, err := loadConfig(cfgPath)
	if err != nil {
		return nil, err
	}
	env := &cmdEnv{socket: cfg.ControlSocket, spool: cfg.SpoolDir}
	if flagSocket != "" {
		env.socket = flagSocket
	}
	return env, nil
}

type command func(env *cmdEnv, out io.Writer) error

// commands maps command words to what they do; a command may be given
// by any unambiguous prefix of its words, as in OpenSMTPD ("sh st").
var commands = map[string]command{
	"show stats":        showStats,
	"show stats --json": showStatsJSON,
	"show hosts":        showMTA("hosts"),
	"show relays":       showMTA("relays"),
	"show routes":       showMTA("routes"),
	"show policies":     showMTA("policies"),
	"send tls-reports":  showMTA("send-tls-reports"),
	// the day so far too, which is then no longer counted
	"send tls-reports today": showMTA("send-tls-reports-today"),
	"show filters": func(env *cmdEnv, out io.Writer) error {
		return printLines(env.socket, &proto.ControlShowFilters{}, out)
	},
	"show queue":                showQueue,
	"schedule <id>":             queueOp("schedule"),
	"schedule domain <id>":      scheduleDomain,
	"flush":                     flush,
	"flush -t <id>":             flush,
	"remove <id>":               queueOp("remove"),
	"pause envelope <id>":       queueOp("pause"),
	"resume envelope <id>":      queueOp("resume"),
	"pause smtp":                pauseSMTP(true),
	"resume smtp":               pauseSMTP(false),
	"pause mda":                 queueKind("pause", "mda"),
	"resume mda":                queueKind("resume", "mda"),
	"pause mta":                 queueKind("pause", "mta"),
	"resume mta":                queueKind("resume", "mta"),
	"show table <id> <id>":      showTable,
	"show table <id> <id> <id>": showTable,
	"update table <id>": func(env *cmdEnv, out io.Writer) error {
		return updateTable(env.socket, env.arg, out)
	},
	"show envelope <id>": func(env *cmdEnv, out io.Writer) error {
		if len(env.arg) != 16 {
			return fmt.Errorf("show envelope: %q is not an envelope id", env.arg)
		}
		return printLines(env.socket, &proto.ControlQueue{QueueOp: proto.QueueOp{Op: "envelope", Target: env.arg}}, out)
	},
	"show message <id>": showMessage,
	"show status": func(env *cmdEnv, out io.Writer) error {
		return printLines(env.socket, &proto.ControlQueue{QueueOp: proto.QueueOp{Op: "status"}}, out)
	},
	"log brief":    logSetting("verbose", false),
	"log verbose":  logSetting("verbose", true),
	"trace <id>":   logSetting("", true),
	"untrace <id>": logSetting("", false),
	"monitor":      monitor,
}

// logSetting changes what the daemon logs: debug lines, or the trace of
// a subsystem (the argument) if what is empty.
func logSetting(what string, on bool) command {
	return func(env *cmdEnv, out io.Writer) error {
		w := what
		if w == "" {
			w = env.arg
			if w != "all" && !slices.Contains(logging.Subsystems, w) {
				return fmt.Errorf("unknown subsystem %q: all, %s", w, strings.Join(logging.Subsystems, ", "))
			}
		}
		return printLines(env.socket, &proto.ControlLog{LogSetting: proto.LogSetting{What: w, On: on}}, out)
	}
}

// showMessage prints a queued message as it is kept in the spool.
func showMessage(env *cmdEnv, out io.Writer) error {
	if len(env.arg) != 8 && len(env.arg) != 16 {
		return fmt.Errorf("show message: %q is not a message or envelope id", env.arg)
	}
	var copyErr error
	err := request(env.socket, &proto.ControlQueue{QueueOp: proto.QueueOp{Op: "message", Target: env.arg}}, func(m proto.Message) bool {
		switch m := m.(type) {
		case *proto.ControlFile:
			defer m.File().Close()
			_, copyErr = io.Copy(out, m.File())
		case *proto.ControlText:
			copyErr = errors.New(strings.Join(m.Lines, "; "))
		}
		return false
	})
	if err != nil {
		return err
	}
	return copyErr
}

// printLines prints the ControlText answers to req.
func printLines(socket string, req proto.Message, out io.Writer) error {
	return request(socket, req, func(m proto.Message) bool {
		t, ok := m.(*proto.ControlText)
		if !ok {
			return false
		}
		for _, l := range t.Lines {
			fmt.Fprintln(out, l)
		}
		return !t.Last
	})
}

// updateTable asks lookup to read a table again; a table that does
// not reload (it no longer parses, it is unknown) is an error, so that
// the exit status says so.
func updateTable(socket, name string, out io.Writer) error {
	var b strings.Builder
	if err := printLines(socket, &proto.ControlUpdateTable{Name: name}, &b); err != nil {
		return err
	}
	text := strings.TrimSpace(b.String())
	if text != "table "+name+" reloaded" {
		return errors.New(text)
	}
	fmt.Fprintln(out, text)
	return nil
}

// showQueue lists the envelopes in the queue, one per line; with the
// daemon down it reads the spool itself (as root), marking them offline.
func showQueue(env *cmdEnv, out io.Writer) error {
	err := printLines(env.socket, &proto.ControlQueue{QueueOp: proto.QueueOp{Op: "show", Target: "all"}}, out)
	var ne *net.OpError
	if !errors.As(err, &ne) {
		return err
	}
	lines, serr := spoolLines(env.spool)
	if serr != nil {
		return fmt.Errorf("%v; reading the spool: %w", err, serr)
	}
	for _, l := range lines {
		fmt.Fprintln(out, l)
	}
	return nil
}

// spoolLines reads every envelope of the spool's queue/.
func spoolLines(spool string) ([]string, error) {
	files, err := filepath.Glob(filepath.Join(spool, "queue", "*", "*", "*"))
	if err != nil {
		return nil, err
	}
	if _, err := os.ReadDir(filepath.Join(spool, "queue")); err != nil {
		return nil, err
	}
	var lines []string
	for _, f := range files {
		// the message body and leftovers of an update are beside them
		if _, err := envelope.ParseEvpID(filepath.Base(f)); err != nil {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if e, err := envelope.Unmarshal(data); err == nil {
			lines = append(lines, e.QueueLine("offline"))
		}
	}
	sort.Strings(lines)
	return lines, nil
}

// pauseSMTP stops or restarts the taking of new SMTP sessions.
func pauseSMTP(paused bool) command {
	return func(env *cmdEnv, out io.Writer) error {
		return printLines(env.socket, &proto.ControlPauseSMTP{Paused: paused}, out)
	}
}

// queueKind pauses or resumes all local deliveries or all relaying.
func queueKind(op, kind string) command {
	return func(env *cmdEnv, out io.Writer) error {
		return printLines(env.socket, &proto.ControlQueue{QueueOp: proto.QueueOp{Op: op, Target: kind}}, out)
	}
}

// queueOp asks queue to schedule, remove, pause or resume envelopes.
func queueOp(op string) command {
	return func(env *cmdEnv, out io.Writer) error {
		if env.arg != "all" && len(env.arg) != 8 && len(env.arg) != 16 {
			return fmt.Errorf("%s: %q is not all, a message id or an envelope id", op, env.arg)
		}
		return printLines(env.socket, &proto.ControlQueue{QueueOp: proto.QueueOp{Op: op, Target: env.arg}}, out)
	}
}

// scheduleDomain asks queue to try at once the relayed mail waiting for
// a domain, and with "@domain" for the domains below it too, as a
// client's ETRN would (RFC 1985); mta forgets the failures of the
// domain's exchangers first.
func scheduleDomain(env *cmdEnv, out io.Writer) error {
	if d := strings.TrimPrefix(env.arg, "@"); d == "" || strings.ContainsAny(d, "@ \t") || strings.HasPrefix(d, ".") {
		return fmt.Errorf("schedule domain: %q is not a domain or @domain", env.arg)
	}
	return printLines(env.socket, &proto.ControlQueue{QueueOp: proto.QueueOp{Op: "schedule-domain", Target: env.arg}}, out)
}

// showMTA prints the mta's live objects of a kind, one per line.
func showMTA(what string) command {
	return func(env *cmdEnv, out io.Writer) error {
		return printLines(env.socket, &proto.ControlShowMTA{What: what}, out)
	}
}

// request sends req to control and hands each answer to more until it
// returns false; a ControlError ends the request with its text.
func request(socket string, req proto.Message, more func(proto.Message) bool) error {
	ch, err := proto.DialControl(socket)
	if err != nil {
		return err
	}
	defer ch.Close()
	if err := ch.Send(req, 1); err != nil {
		return err
	}
	for {
		env, err := ch.Recv()
		if err != nil {
			return fmt.Errorf("control: %w", err)
		}
		if e, ok := env.Msg.(*proto.ControlError); ok {
			return errors.New(e.Text)
		}
		if !more(env.Msg) {
			return nil
		}
	}
}

// parseCommand finds the command words name, by prefixes of its words;
// a word "<id>" of a command takes any argument, which is returned.
// showTable is `show table NAME [SERVICE] KEY`: one lookup, as lookup
// answers it.
func showTable(env *cmdEnv, out io.Writer) error {
	f := strings.Fields(env.arg)
	q := &proto.ControlShowTable{Name: f[0], Key: f[len(f)-1]}
	if len(f) == 3 {
		q.Service = f[1]
	}
	return printLines(env.socket, q, out)
}

func parseCommand(words []string) (command, string, error) {
	if len(words) == 0 {
		return nil, "", errors.New("no command")
	}
	var found []string
	arg := ""
	for name := range commands {
		full := strings.Fields(name)
		if len(full) != len(words) {
			continue
		}
		match := true
		var args []string
		for i, w := range words {
			if full[i] == "<id>" {
				args = append(args, w)
				continue
			}
			match = match && strings.HasPrefix(full[i], w)
		}
		if match {
			found = append(found, name)
			arg = strings.Join(args, " ")
		}
	}
	switch len(found) {
	case 0:
		return nil, "", fmt.Errorf("unknown command %q", strings.Join(words, " "))
	case 1:
		return commands[found[0]], arg, nil
	}
	// "sh st" has meant show stats since before show status existed
	if slices.Contains(found, "show stats") && len(found) == 2 && slices.Contains(found, "show status") {
		return commands["show stats"], arg, nil
	}
	sort.Strings(found)
	return nil, "", fmt.Errorf("ambiguous command %q: %s", strings.Join(words, " "), strings.Join(found, ", "))
}

// stats reads every counter from control.
func readStats(env *cmdEnv) ([]proto.StatValue, error) {
	var values []proto.StatValue
	err := request(env.socket, &proto.ControlShowStats{}, func(m proto.Message) bool {
		st, ok := m.(*proto.ControlStats)
		if !ok {
			return false
		}
		values = append(values, st.Values...)
		return !st.Last
	})
	return values, err
}

// showStatsJSON prints the counters as one JSON object, for scripts.
func showStatsJSON(env *cmdEnv, out io.Writer) error {
	values, err := readStats(env)
	if err != nil {
		return err
	}
	obj := make(map[string]any, len(values)+1)
	for _, v := range values {
		obj[v.Key] = v.Value
		if v.Key == "uptime" {
			obj["uptime.human"] = statsHuman(v.Value)
		}
	}
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(obj)
}

func statsHuman(seconds int64) string {
	return stats.HumanDuration(time.Duration(seconds) * time.Second)
}

func showStats(env *cmdEnv, out io.Writer) error {
	values, err := readStats(env)
	if err != nil {
		return err
	}
	// sorted by key, as OpenSMTPD prints them; uptime.human is derived
	// here from uptime
	type line struct{ key, value string }
	lines := make([]line, 0, len(values)+1)
	for _, v := range values {
		lines = append(lines, line{v.Key, fmt.Sprint(v.Value)})
		if v.Key == "uptime" {
			lines = append(lines, line{"uptime.human", statsHuman(v.Value)})
		}
	}
	sort.Slice(lines, func(i, j int) bool { return lines[i].key < lines[j].key })
	var b strings.Builder
	for _, l := range lines {
		fmt.Fprintf(&b, "%s=%s\n", l.key, l.value)
	}
	_, err = io.WriteString(out, b.String())
	return err
}
