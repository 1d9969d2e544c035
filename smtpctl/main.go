// Command smtpctl controls a running smtpd through its control socket.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strings"
	"time"

	"smtpd/internal/config"
	"smtpd/internal/stats"
	"smtpd/proto"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("smtpctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("s", "", "control socket `path` (default: control_socket of the configuration)")
	cfgPath := fs.String("f", "", "configuration `file` to read the control socket path from")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: smtpctl [-s socket] [-f file] show stats|hosts|relays|routes")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	path, err := socketPath(*socket, *cfgPath)
	if err != nil {
		fmt.Fprintf(stderr, "smtpctl: %v\n", err)
		return 1
	}
	cmd, err := parseCommand(fs.Args())
	if err != nil {
		fmt.Fprintf(stderr, "smtpctl: %v\n", err)
		fs.Usage()
		return 2
	}
	if err := cmd(path, stdout); err != nil {
		fmt.Fprintf(stderr, "smtpctl: %v\n", err)
		return 1
	}
	return 0
}

// socketPath picks the control socket: -s, else the configuration's
// (with -f, or the default configuration if it exists), else the default.
func socketPath(flagPath, cfgPath string) (string, error) {
	if flagPath != "" {
		return flagPath, nil
	}
	if cfgPath == "" {
		if _, err := os.Stat(config.DefaultPath); err != nil {
			return config.DefaultControlSocket, nil
		}
		cfgPath = config.DefaultPath
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return "", err
	}
	return cfg.ControlSocket, nil
}

type command func(socket string, out io.Writer) error

// commands maps command words to what they do; a command may be given
// by any unambiguous prefix of its words, as in OpenSMTPD ("sh st").
var commands = map[string]command{
	"show stats":  showStats,
	"show hosts":  showMTA("hosts"),
	"show relays": showMTA("relays"),
	"show routes": showMTA("routes"),
}

// showMTA prints the mta's live objects of a kind, one per line.
func showMTA(what string) command {
	return func(socket string, out io.Writer) error {
		return request(socket, &proto.ControlShowMTA{What: what}, func(m proto.Message) bool {
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
}

// request sends req to control and hands each answer to more until it
// returns false; a ControlError ends the request with its text.
func request(socket string, req proto.Message, more func(proto.Message) bool) error {
	ch, err := dial(socket)
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

func parseCommand(words []string) (command, error) {
	if len(words) == 0 {
		return nil, errors.New("no command")
	}
	var found []string
	for name := range commands {
		full := strings.Fields(name)
		if len(full) != len(words) {
			continue
		}
		match := true
		for i, w := range words {
			match = match && strings.HasPrefix(full[i], w)
		}
		if match {
			found = append(found, name)
		}
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("unknown command %q", strings.Join(words, " "))
	case 1:
		return commands[found[0]], nil
	}
	sort.Strings(found)
	return nil, fmt.Errorf("ambiguous command %q: %s", strings.Join(words, " "), strings.Join(found, ", "))
}

func dial(socket string) (*proto.Channel, error) {
	conn, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: socket, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("cannot connect to %s: is smtpd running? (%w)", socket, err)
	}
	return proto.NewChannelConn(conn, proto.ProcClient, proto.ProcControl), nil
}

func showStats(socket string, out io.Writer) error {
	var values []proto.StatValue
	err := request(socket, &proto.ControlShowStats{}, func(m proto.Message) bool {
		st, ok := m.(*proto.ControlStats)
		if !ok {
			return false
		}
		values = append(values, st.Values...)
		return !st.Last
	})
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
			lines = append(lines, line{"uptime.human", stats.HumanDuration(time.Duration(v.Value) * time.Second)})
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
