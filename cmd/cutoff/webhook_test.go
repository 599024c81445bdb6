package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cutoffnet/cutoff/store"
	"github.com/cutoffnet/cutoff/store/pgtest"
)

// hookSink is a webhook receiver that keeps every body it is sent.
type hookSink struct {
	mu     sync.Mutex
	bodies [][]byte
	bad    []string // requests that were not a JSON POST
}

func (h *hookSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	h.mu.Lock()
	defer h.mu.Unlock()
	if err != nil || r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
		h.bad = append(h.bad, r.Method+" "+r.Header.Get("Content-Type"))
		http.Error(w, "want a JSON POST", http.StatusBadRequest)
		return
	}
	h.bodies = append(h.bodies, body)
}

// events returns the bodies received so far whose scope and event match.
func (h *hookSink) events(t *testing.T, scope, event string) []map[string]any {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []map[string]any
	for _, b := range h.bodies {
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("webhook body is not JSON: %v\n%s", err, b)
		}
		if m["scope"] == scope && m["event"] == event {
			out = append(out, m)
		}
	}
	return out
}

// wait returns the first matching event, failing the test at the deadline.
func (h *hookSink) wait(t *testing.T, scope, event string, deadline time.Time, logs func() string) map[string]any {
	t.Helper()
	for time.Now().Before(deadline) {
		if es := h.events(t, scope, event); len(es) > 0 {
			return es[0]
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no %s %s event reached the webhook in time; correlator's log:\n%s", scope, event, logs())
	return nil
}

// syncBuffer collects a child's output while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// verdicts is what two vantages would have reported on KP's four blocks
// from t0+from to t0+to, every round, with their control target answering.
func verdicts(t0 time.Time, from, to time.Duration, state string) store.Batch {
	const round = time.Minute
	var b store.Batch
	for vi, v := range []string{"vp1", "vp2"} {
		for bi := range 4 {
			block := netip.MustParsePrefix(fmt.Sprintf("175.45.%d.0/24", 176+bi))
			phase := time.Duration(vi*4+bi) * round / 8
			for d := from + phase; d < to; d += round {
				o := store.Observation{Vantage: v, Block: block, SentAt: t0.Add(d), At: t0.Add(d + 30*time.Millisecond),
					Round: int64(d / round), State: "up", Belief: 0.99, Probes: 1, Replies: 1}
				if state == "down" {
					o.At, o.Belief, o.Probes, o.Replies = t0.Add(d+2*time.Second), 0.05, 5, 0
				}
				o.State = state
				b.Observations = append(b.Observations, o)
			}
		}
		for d := from + time.Duration(vi)*round/2; d < to; d += round {
			b.Results = append(b.Results, store.Result{Vantage: v, Kind: "icmp", Addr: netip.MustParseAddr("192.0.2.1"),
				SentAt: t0.Add(d), Outcome: "reply", RTT: time.Millisecond, Responder: netip.MustParseAddr("192.0.2.1"), Round: int64(d / round)})
		}
	}
	return b
}

// TestCorrelateWebhook runs `cutoff correlate --follow --webhook URL` as
// its own process, as a deployment does, while the verdicts of KP going
// dark and coming back are written into its database: the country's
// outage_started and then outage_ended events reach a local HTTP server
// as JSON, once each, and SIGTERM ends the correlator cleanly.
func TestCorrelateWebhook(t *testing.T) {
	t.Parallel()
	db := pgtest.URL(t)
	mustCLI(t, "targets", "import", "--db", db, "--country", "KP", "--cidr", kpList)
	mustCLI(t, "targets", "add", "--db", db, "--control", "--kind", "icmp", "--addr", "192.0.2.1")
	ctx := context.Background()
	st, err := store.Open(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, v := range []string{"vp1", "vp2"} {
		if err := st.Beat(ctx, store.Heartbeat{Vantage: v, Round: time.Minute, Timeout: 2 * time.Second, Version: "test", Hostname: "test"}); err != nil {
			t.Fatal(err)
		}
	}

	hook := &hookSink{}
	srv := httptest.NewServer(hook)
	defer srv.Close()
	// The test binary is the cutoff binary when asCLI is set (TestMain).
	cmd := exec.Command(os.Args[0], "correlate", "--db", db, "--follow", "--interval", "200ms", "--webhook", srv.URL)
	var logs syncBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var waitErr error
	exited := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(exited) }()
	pid := cmd.Process.Pid
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			syscall.Kill(pid, syscall.SIGKILL)
			<-exited
		}
	})

	// KP is up for half an hour, then every block goes down: the outage
	// is ongoing at the latest evidence.
	t0 := time.Now().UTC().Truncate(time.Minute).Add(-2 * time.Hour)
	b := verdicts(t0, 0, 30*time.Minute, "up")
	down := verdicts(t0, 30*time.Minute, 50*time.Minute, "down")
	b.Observations, b.Results = append(b.Observations, down.Observations...), append(b.Results, down.Results...)
	if _, err := st.Ingest(ctx, b); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	started := hook.wait(t, "country", "outage_started", deadline, logs.String)
	checkNear(t, "outage_started start", started["start"], t0.Add(30*time.Minute))
	for k, want := range map[string]any{"version": 1.0, "country": "KP", "end": nil, "blocks_total": 4.0, "blocks_down": 4.0} {
		if started[k] != want {
			t.Errorf("outage_started %s = %v, want %v\n%v", k, started[k], want, started)
		}
	}
	if _, ok := started["end"]; !ok {
		t.Error(`outage_started has no "end" key; want null`)
	}
	if want := "cutoff: KP is down since " + stampOf(t, started["start"]) + " UTC (4 of 4 blocks)"; started["text"] != want {
		t.Errorf("outage_started text %q, want %q", started["text"], want)
	}

	// Twenty minutes later KP is back.
	if _, err := st.Ingest(ctx, verdicts(t0, 50*time.Minute, 70*time.Minute, "up")); err != nil {
		t.Fatal(err)
	}
	ended := hook.wait(t, "country", "outage_ended", deadline, logs.String)
	if ended["start"] != started["start"] || ended["country"] != "KP" || ended["version"] != 1.0 {
		t.Errorf("outage_ended %v does not match outage_started %v", ended, started)
	}
	checkNear(t, "outage_ended end", ended["end"], t0.Add(50*time.Minute))
	d, err := time.ParseDuration(ended["duration"].(string))
	if err != nil || d < 18*time.Minute || d > 22*time.Minute {
		t.Errorf("outage_ended duration %v (%v), want about 20m", ended["duration"], err)
	}
	if text, _ := ended["text"].(string); !strings.HasPrefix(text, "cutoff: KP was down from "+stampOf(t, started["start"])+" to ") || !strings.HasSuffix(text, "UTC ("+ended["duration"].(string)+")") {
		t.Errorf("outage_ended text %q", ended["text"])
	}

	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if waitErr != nil {
			t.Errorf("correlator after SIGTERM: %v, want exit 0\n%s", waitErr, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("correlator still running 30 s after SIGTERM\n%s", logs.String())
	}
	// Each event once, however many passes saw the outage; the network
	// (KP's one /22) had its own pair; nothing malformed was sent.
	for _, e := range []struct{ scope, event string }{{"country", "outage_started"}, {"country", "outage_ended"}, {"network", "outage_started"}, {"network", "outage_ended"}} {
		if n := len(hook.events(t, e.scope, e.event)); n != 1 {
			t.Errorf("%d %s %s events, want 1", n, e.scope, e.event)
		}
	}
	if n := hook.events(t, "network", "outage_ended"); len(n) == 1 && n[0]["network"] != "175.45.176.0/22" {
		t.Errorf("network event for %v, want 175.45.176.0/22", n[0]["network"])
	}
	hook.mu.Lock()
	defer hook.mu.Unlock()
	for _, b := range hook.bodies {
		t.Logf("webhook received %s", b)
	}
	if len(hook.bad) > 0 {
		t.Errorf("malformed webhook requests: %v", hook.bad)
	}
}

// checkNear checks that a payload's RFC 3339 time lies within a round of want.
func checkNear(t *testing.T, what string, v any, want time.Time) {
	t.Helper()
	s, _ := v.(string)
	got, err := time.Parse(time.RFC3339, s)
	if err != nil || got.Sub(want).Abs() > time.Minute || got.Location() != time.UTC {
		t.Errorf("%s = %v (%v), want UTC within a round of %s", what, v, err, want.Format(time.RFC3339))
	}
}

// stampOf formats a payload's time as the event's text does.
func stampOf(t *testing.T, v any) string {
	t.Helper()
	s, _ := v.(string)
	got, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatalf("time %v: %v", v, err)
	}
	return got.Format("2006-01-02 15:04:05")
}
