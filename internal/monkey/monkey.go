// Package monkey injects faults into the daemon, as OpenSMTPD's monkeys
// did: random delays on the channels between processes, temporary
// failures at the queue's writes, syncs and renames, in lookup answers,
// DNS, table reads, remote sessions and local deliveries, and crashes at
// named points of the commit and delivery paths. It is compiled in only
// with `-tags monkey`; otherwise every function is an empty one the
// compiler removes.
//
// A monkey build reads its settings from the environment, which the
// parent passes to every process it starts:
//
//	SMTPD_MONKEYS       points to enable, comma-separated, or "all"
//	SMTPD_MONKEY_SEED   seed of the random choices (printed if unset)
//	SMTPD_MONKEY_RATE   percent of the passes through a point that fail (5)
//	SMTPD_CRASH         crash point to arm
//	SMTPD_CRASH_MODE    "self" kills the process, "whole" (default) the daemon
//	SMTPD_MONKEY_STREAM set by the parent: which start of a delivery agent
package monkey

import "errors"

// StreamEnv names the start of a process the parent starts many times,
// so that each start draws its own random choices from the seed.
const StreamEnv = "SMTPD_MONKEY_STREAM"

// Points are the fault injection points.
var Points = []string{
	"proto.delay",   // a random delay before a frame is sent
	"queue.write",   // staging a message or creating its body file fails
	"queue.sync",    // syncfs of the spool fails
	"queue.rename",  // moving a message into queue/ fails
	"queue.update",  // rewriting an envelope after a failure fails
	"lookup.expand", // lookup answers a temporary failure
	"dns",           // a DNS query fails temporarily
	"table.read",    // reading a table file fails
	"mta.session",   // a remote session drops, before MAIL or after the final 250
	"mda.tempfail",  // a local delivery ends as if its program exited 75
}

// CrashPoints are the places where a monkey build can crash.
var CrashPoints = []string{
	"queue.before-sync",   // a batch is staged, not yet synced
	"queue.after-sync",    // staged and synced: committed, not yet in queue/
	"queue.after-publish", // moved into queue/, the move not yet synced, the client not yet told
	"smtp.before-250",     // the queue said yes, the client not yet told
	"mda.after-deliver",   // delivered locally, the queue not yet told
	"mta.before-250",      // the message sent to the remote host, its reply not read
	"mta.after-250",       // the remote host said 250, the queue not yet told
	"queue.after-bounce",  // a bounce committed, the failed envelope still there
}

// ErrInjected is the cause of every injected failure.
var ErrInjected = errors.New("monkey: injected failure")
