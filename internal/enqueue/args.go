package enqueue

import (
	"fmt"
	"strings"
)

// Mode is what a sendmail command line asks for.
type Mode int

// The modes, after sendmail's -b option.
const (
	// ModeDeliver reads a message from standard input (-bm, the default).
	ModeDeliver Mode = iota
	// ModeSMTP speaks SMTP on standard input and output (-bs).
	ModeSMTP
	// ModeQueue lists the queue, as mailq (-bp).
	ModeQueue
	// ModeAliases reloads the alias tables, as newaliases (-bi).
	ModeAliases
)

// Options are a sendmail command line.
type Options struct {
	Mode Mode
	// Sender is the envelope sender (-f or -r); the user's address if
	// empty.
	Sender string
	// FullName is the sender's name for a From field we add (-F).
	FullName string
	// FromHeaders takes the recipients from To, Cc and Bcc (-t).
	FromHeaders bool
	// IgnoreDots keeps reading after a line with a single dot (-i, -oi).
	IgnoreDots bool
	// Verbose shows the SMTP dialogue (-v).
	Verbose bool
	// Config is the configuration file (-C).
	Config string
	// Recipients are the addresses of the command line.
	Recipients []string
}

// withArgument are the option letters of sendmail that take an argument,
// attached (-fuser) or as the next word (-f user). Those we do not use
// are accepted and ignored, as other mail systems do.
const withArgument = "ABCFLNORVXbefhopr"

// ParseArgs reads a sendmail command line, without the program name.
func ParseArgs(args []string) (Options, error) {
	var o Options
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			o.Recipients = append(o.Recipients, args[i+1:]...)
			break
		}
		if len(arg) < 2 || arg[0] != '-' {
			o.Recipients = append(o.Recipients, arg)
			continue
		}
		// letters may be grouped, as getopt allows: -ti
		for j := 1; j < len(arg); j++ {
			letter := arg[j]
			if !strings.ContainsRune(withArgument, rune(letter)) {
				switch letter {
				case 't':
					o.FromHeaders = true
				case 'i':
					o.IgnoreDots = true
				case 'v':
					o.Verbose = true
				}
				continue
			}
			value := arg[j+1:]
			if value == "" {
				if i+1 >= len(args) {
					return o, fmt.Errorf("option -%c needs an argument", letter)
				}
				i++
				value = args[i]
			}
			if err := o.set(letter, value); err != nil {
				return o, err
			}
			break
		}
	}
	return o, nil
}

func (o *Options) set(letter byte, value string) error {
	switch letter {
	case 'f', 'r':
		o.Sender = strings.Trim(value, "<>")
	case 'F':
		o.FullName = value
	case 'C':
		o.Config = value
	case 'o':
		// -oi is -i; other -o options (-oem, -odb...) are sendmail's
		// configuration and mean nothing here
		if value == "i" {
			o.IgnoreDots = true
		}
	case 'b':
		switch value {
		case "m", "":
			o.Mode = ModeDeliver
		case "s":
			o.Mode = ModeSMTP
		case "p":
			o.Mode = ModeQueue
		case "i":
			o.Mode = ModeAliases
		default:
			return fmt.Errorf("-b%s is not supported (only -bm, -bs, -bp and -bi)", value)
		}
	}
	return nil
}
