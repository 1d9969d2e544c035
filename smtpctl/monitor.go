package main

import (
	"fmt"
	"io"
	"time"
)

// monitorHeaderEvery is how often monitor repeats its header.
const monitorHeaderEvery = 20

// monitorColumns are the columns of monitor: a name and how the value
// comes from two successive readings of the counters.
var monitorColumns = []struct {
	name  string
	value func(now, before map[string]int64) int64
}{
	{"curr", func(now, _ map[string]int64) int64 { return now["smtp.session"] }},
	{"conn", delta("smtp.session.total")},
	{"disc", func(now, before map[string]int64) int64 {
		return delta("smtp.session.total")(now, before) - (now["smtp.session"] - before["smtp.session"])
	}},
	{"curr", func(now, _ map[string]int64) int64 { return now["scheduler.envelope"] }},
	{"enq", func(now, before map[string]int64) int64 {
		return now["scheduler.envelope"] - before["scheduler.envelope"] + dequeued(now, before)
	}},
	{"deq", dequeued},
	{"ok", delta("scheduler.delivery.ok")},
	{"tmpfail", delta("scheduler.delivery.tempfail")},
	{"prmfail", delta("scheduler.delivery.permfail")},
	{"expire", delta("scheduler.envelope.expired")},
	{"remove", delta("scheduler.envelope.removed")},
	{"bounce", delta("queue.bounce")},
}

func delta(key string) func(now, before map[string]int64) int64 {
	return func(now, before map[string]int64) int64 { return now[key] - before[key] }
}

// dequeued counts envelopes that left the queue: delivered, failed for
// good (expired ones included) or removed.
func dequeued(now, before map[string]int64) int64 {
	return delta("scheduler.delivery.ok")(now, before) + delta("scheduler.delivery.permfail")(now, before) + delta("scheduler.envelope.removed")(now, before)
}

// monitor prints a line of activity per second, as OpenSMTPD's does,
// until the daemon goes away.
func monitor(env *cmdEnv, out io.Writer) error {
	return monitorLoop(env, out, time.Second, -1)
}

// monitorLoop is monitor for count lines (-1: without end).
func monitorLoop(env *cmdEnv, out io.Writer, every time.Duration, count int) error {
	var before map[string]int64
	for line := 0; count < 0 || line < count; line++ {
		values, err := readStats(env)
		if err != nil {
			return err
		}
		now := make(map[string]int64, len(values))
		for _, v := range values {
			now[v.Key] = v.Value
		}
		if before == nil {
			before = now // the first line shows levels, no changes
		}
		if line%monitorHeaderEvery == 0 {
			fmt.Fprintln(out, "--- client ---  -- envelope --   ---- relay/delivery --- ------- misc -------")
			for _, c := range monitorColumns {
				fmt.Fprintf(out, "%s ", c.name)
			}
			fmt.Fprintln(out)
		}
		for _, c := range monitorColumns {
			fmt.Fprintf(out, "%*d ", len(c.name), c.value(now, before))
		}
		fmt.Fprintln(out)
		before = now
		if count < 0 || line+1 < count {
			time.Sleep(every)
		}
	}
	return nil
}
