package alert

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cutoffnet/cutoff/store/correlate"
)

var (
	start = time.Date(2014, 12, 22, 16, 15, 4, 0, time.UTC)
	end   = time.Date(2014, 12, 23, 1, 46, 2, 0, time.UTC)
)

type sink struct {
	mu       sync.Mutex
	got      []Payload
	failures int // answer 500 this many times first
	calls    int
}

func (s *sink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if s.failures > 0 {
		s.failures--
		http.Error(w, "try later", http.StatusServiceUnavailable)
		return
	}
	var p Payload
	if r.Header.Get("Content-Type") != "application/json" || json.NewDecoder(r.Body).Decode(&p) != nil {
		http.Error(w, "bad payload", http.StatusBadRequest)
		return
	}
	s.got = append(s.got, p)
}

func (s *sink) payloads() []Payload {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Payload(nil), s.got...)
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDeliversInOrderWithRetries(t *testing.T) {
	s := &sink{failures: 2}
	srv := httptest.NewServer(s)
	defer srv.Close()
	w := &Webhook{URL: srv.URL, BaseDelay: 10 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.Run(ctx)

	w.Notify(correlate.Event{Kind: "outage_started", Scope: "country", Country: "KP", Start: start, BlocksTotal: 4, BlocksDown: 4})
	w.Notify(correlate.Event{Kind: "outage_ended", Scope: "network", Country: "KP", Network: netip.MustParsePrefix("175.45.176.0/24"), Start: start, End: end, BlocksTotal: 1, BlocksDown: 1})
	waitFor(t, func() bool { return len(s.payloads()) == 2 })

	got := s.payloads()
	if got[0].Event != "outage_started" || got[0].Country != "KP" || got[0].End != nil || got[0].Version != Version {
		t.Fatalf("first payload %+v", got[0])
	}
	if got[0].Text != "cutoff: KP is down since 2014-12-22 16:15:04 UTC (4 of 4 blocks)" {
		t.Fatalf("text %q", got[0].Text)
	}
	if got[1].Event != "outage_ended" || got[1].Network != "175.45.176.0/24" || got[1].End == nil || got[1].Duration != "9h30m58s" {
		t.Fatalf("second payload %+v", got[1])
	}
	if d, f, dr := w.Stats(); d != 2 || f != 0 || dr != 0 {
		t.Fatalf("stats delivered %d failed %d dropped %d", d, f, dr)
	}
	if s.calls != 4 {
		t.Fatalf("%d calls, want 2 failures then 2 deliveries", s.calls)
	}
}

func TestDeadWebhookNeverBlocks(t *testing.T) {
	// A webhook that accepts connections and never answers.
	hang := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-hang }))
	defer srv.Close()
	defer close(hang)
	w := &Webhook{URL: srv.URL, Attempts: 2, BaseDelay: time.Millisecond, Queue: 3,
		Client: &http.Client{Timeout: 50 * time.Millisecond}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.Run(ctx)

	began := time.Now()
	for range 10 {
		w.Notify(correlate.Event{Kind: "outage_started", Scope: "country", Country: "KP", Start: start})
	}
	if el := time.Since(began); el > 100*time.Millisecond {
		t.Fatalf("Notify blocked for %v", el)
	}
	waitFor(t, func() bool {
		d, f, dr := w.Stats()
		return d+f+dr == 10
	})
	d, f, dr := w.Stats()
	if d != 0 || dr < 6 || f < 1 {
		t.Fatalf("delivered %d, failed %d, dropped %d: want none delivered, the queue bounded", d, f, dr)
	}
}

// TestFullQueueSparesTheEventInFlight: while the webhook holds the first
// event, more arrive than the queue holds. The oldest waiting ones are
// dropped, never the one being sent; what is counted as delivered is
// exactly what the server received, in the order it happened.
func TestFullQueueSparesTheEventInFlight(t *testing.T) {
	var (
		mu      sync.Mutex
		got     []string
		arrived = make(chan string, 10)
		release = make(chan struct{})
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p Payload
		if err := json.NewDecoder(r.Body).Decode(&p); err != nil {
			http.Error(w, "bad payload", http.StatusBadRequest)
			return
		}
		arrived <- p.Country
		<-release
		mu.Lock()
		got = append(got, p.Country)
		mu.Unlock()
	}))
	defer srv.Close()
	w := &Webhook{URL: srv.URL, Attempts: 1, Queue: 2}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.Run(ctx)

	// Countries stand for the events' order: AA is sent first and held.
	notify := func(cc string) {
		w.Notify(correlate.Event{Kind: "outage_started", Scope: "country", Country: cc, Start: start})
	}
	notify("AA")
	select {
	case cc := <-arrived:
		if cc != "AA" {
			t.Fatalf("first event at the server: %s", cc)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the first event never reached the server")
	}
	for _, cc := range []string{"BB", "CC", "DD", "EE", "FF"} {
		notify(cc)
	}
	close(release)
	waitFor(t, func() bool {
		d, f, dr := w.Stats()
		return d+f+dr == w.Queued()
	})

	mu.Lock()
	defer mu.Unlock()
	want := []string{"AA", "EE", "FF"} // BB, CC and DD made way
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("server received %v, want %v", got, want)
	}
	if d, f, dr := w.Stats(); d != len(got) || f != 0 || dr != 3 {
		t.Fatalf("delivered %d (server received %d), failed %d, dropped %d; want 3 dropped", d, len(got), f, dr)
	}
}
