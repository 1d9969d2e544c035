// Package proto is the wire between the smtpd processes: frames with a
// fixed header and a small payload, sent over SOCK_SEQPACKET socketpairs
// with at most one file descriptor each, and one typed Go struct per
// message type with explicit encoding.
//
// The reader is strict on purpose, as OpenSMTPD's imsg layer is: a payload
// that is short, has trailing bytes, has an unknown type, or a type that
// the receiving process does not expect from that peer is an error, and
// the receiving process treats it as fatal.
package proto

import "fmt"

// Proc names a process of the daemon, or the control client.
type Proc uint32

// The processes. The numbers travel on the wire (in SetupPeer).
const (
	ProcParent Proc = iota + 1
	ProcSMTP
	ProcMFA
	ProcQueue
	ProcMTA
	ProcLookup
	ProcControl
	// ProcClient is smtpctl (or sendmail) talking to control.
	ProcClient
	// ProcMDA is a local delivery process the parent starts as the
	// recipient's user.
	ProcMDA
)

// Children lists the processes the parent starts, in start order.
var Children = []Proc{ProcControl, ProcLookup, ProcQueue, ProcMFA, ProcMTA, ProcSMTP}

var procNames = [...]string{
	ProcParent:  "parent",
	ProcSMTP:    "smtp",
	ProcMFA:     "mfa",
	ProcQueue:   "queue",
	ProcMTA:     "mta",
	ProcLookup:  "lookup",
	ProcControl: "control",
	ProcClient:  "client",
	ProcMDA:     "mda",
}

// String returns the process name as used in `smtpd -x NAME` and in logs.
func (p Proc) String() string {
	if int(p) < len(procNames) && procNames[p] != "" {
		return procNames[p]
	}
	return fmt.Sprintf("proc(%d)", uint32(p))
}

// ParseProc returns the process named name: a child, or mda.
func ParseProc(name string) (Proc, error) {
	for _, p := range append([]Proc{ProcMDA}, Children...) {
		if p.String() == name {
			return p, nil
		}
	}
	return 0, fmt.Errorf("proto: unknown process %q", name)
}

// Peers lists, for every child, the children it has a direct channel to.
// The parent creates one socketpair per pair and sends each end with
// SetupPeer. Control talks to every other child for stats and commands.
var Peers = [][2]Proc{
	{ProcSMTP, ProcMFA},
	{ProcSMTP, ProcLookup},
	{ProcSMTP, ProcQueue},
	{ProcMFA, ProcLookup},
	{ProcQueue, ProcLookup},
	{ProcQueue, ProcMTA},
	{ProcMTA, ProcLookup},
	{ProcControl, ProcSMTP},
	{ProcControl, ProcMFA},
	{ProcControl, ProcQueue},
	{ProcControl, ProcMTA},
	{ProcControl, ProcLookup},
}
