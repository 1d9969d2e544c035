package stats

import (
	"reflect"
	"sync"
	"testing"
	"time"

	"smtpd/proto"
)

func TestSenderMergesAndStoreApplies(t *testing.T) {
	var mu sync.Mutex
	var sent []*proto.StatUpdate
	s := NewSender(func(u *proto.StatUpdate) error {
		mu.Lock()
		sent = append(sent, u)
		mu.Unlock()
		return nil
	})
	s.Increment("a", 2)
	s.Increment("a", 3)
	s.Decrement("b", 1)
	s.Set("c", 10)
	s.Increment("c", 1)
	s.Set("d", 4)
	s.Decrement("d", 1)
	stop := make(chan struct{})
	close(stop)
	if err := s.Run(stop); err != nil {
		t.Fatal(err)
	}
	if len(sent) != 1 || len(sent[0].Changes) != 4 {
		t.Fatalf("sent %+v", sent)
	}
	st := NewStore()
	st.Apply([]proto.StatChange{{Key: "b", Op: proto.StatIncrement, Value: 5}})
	st.Apply(sent[0].Changes)
	want := []proto.StatValue{{Key: "a", Value: 5}, {Key: "b", Value: 4}, {Key: "c", Value: 11}, {Key: "d", Value: 3}}
	if got := st.Snapshot(); !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestSenderSplitsBatches(t *testing.T) {
	var frames int
	s := NewSender(func(u *proto.StatUpdate) error {
		frames++
		var w proto.Writer
		u.Encode(&w)
		_, err := w.Payload()
		return err
	})
	for i := range 250 {
		s.Increment(string(rune('a'+i%26))+time.Duration(i).String(), 1)
	}
	stop := make(chan struct{})
	close(stop)
	if err := s.Run(stop); err != nil {
		t.Fatal(err)
	}
	if frames != 3 {
		t.Fatalf("%d frames", frames)
	}
}

func TestHumanDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                              "0s",
		59 * time.Second:               "59s",
		time.Hour + 5*time.Second:      "1h0m5s",
		26 * time.Hour:                 "1d2h0m0s",
		8*24*time.Hour + 3*time.Minute: "1w1d0h3m0s",
	} {
		if got := HumanDuration(d); got != want {
			t.Errorf("%v: %q, want %q", d, got, want)
		}
	}
}
