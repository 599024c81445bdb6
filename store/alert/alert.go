// Package alert delivers outage events to a webhook: a JSON POST when a
// country or network outage starts and when it ends, retried with
// exponential backoff. Events enter through Notify, which never blocks
// (the correlator must not wait on a slow or dead webhook); a bounded
// queue drops the oldest waiting event, with a warning, when the webhook
// stays unreachable for long. The event being sent is not in the queue,
// so it is never the one dropped.
package alert

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/cutoffnet/cutoff/store/correlate"
)

// Version of the event payload.
const Version = 1

// Payload is what the webhook receives.
type Payload struct {
	Version     int        `json:"version"`
	Event       string     `json:"event"` // outage_started or outage_ended
	Scope       string     `json:"scope"` // country or network
	Country     string     `json:"country"`
	Network     string     `json:"network,omitempty"`
	Start       time.Time  `json:"start"`
	End         *time.Time `json:"end"`
	Duration    string     `json:"duration,omitempty"`
	BlocksTotal int        `json:"blocks_total"`
	BlocksDown  int        `json:"blocks_down"`
	Text        string     `json:"text"` // one line for chat webhooks
}

// Webhook posts events to one URL.
type Webhook struct {
	URL string
	// Attempts per event (zero: 8) and the first retry delay (zero: 1 s),
	// doubling each time up to MaxDelay (zero: 2 min).
	Attempts  int
	BaseDelay time.Duration
	MaxDelay  time.Duration
	// Queue is how many events may wait (zero: 1000), besides the one
	// being sent.
	Queue  int
	Client *http.Client
	Log    *slog.Logger

	once sync.Once
	mu   sync.Mutex
	// pending waits to be sent, oldest first. Run takes the event it
	// sends out of it, so Notify's dropping never touches that one and
	// Run's accounting never touches an event it did not send.
	pending []Payload
	wake    chan struct{}
	// Stats, read with Stats.
	queued, delivered, failed, dropped int
}

func (w *Webhook) init() {
	w.once.Do(func() {
		if w.Attempts == 0 {
			w.Attempts = 8
		}
		if w.BaseDelay == 0 {
			w.BaseDelay = time.Second
		}
		if w.MaxDelay == 0 {
			w.MaxDelay = 2 * time.Minute
		}
		if w.Queue == 0 {
			w.Queue = 1000
		}
		if w.Client == nil {
			w.Client = &http.Client{Timeout: 10 * time.Second}
		}
		if w.Log == nil {
			w.Log = slog.New(slog.DiscardHandler)
		}
		w.wake = make(chan struct{}, 1)
	})
}

// PayloadOf turns a correlator event into the webhook's payload.
func PayloadOf(e correlate.Event) Payload {
	p := Payload{Version: Version, Event: e.Kind, Scope: e.Scope, Country: e.Country, Start: e.Start.UTC(),
		BlocksTotal: e.BlocksTotal, BlocksDown: e.BlocksDown}
	what := e.Country
	if e.Scope == "network" {
		p.Network = e.Network.String()
		what = fmt.Sprintf("%s network %s", e.Country, p.Network)
	}
	if e.End.IsZero() {
		p.Text = fmt.Sprintf("cutoff: %s is down since %s UTC (%d of %d blocks)", what, p.Start.Format("2006-01-02 15:04:05"), e.BlocksDown, e.BlocksTotal)
	} else {
		end := e.End.UTC()
		p.End = &end
		p.Duration = end.Sub(p.Start).Round(time.Second).String()
		p.Text = fmt.Sprintf("cutoff: %s was down from %s to %s UTC (%s)", what, p.Start.Format("2006-01-02 15:04:05"), end.Format("2006-01-02 15:04:05"), p.Duration)
	}
	if e.Kind == "outage_started" && !e.End.IsZero() {
		// Found after it ended (late results): say so.
		p.Text += ", found late"
	}
	return p
}

// Notify queues an event; it never blocks.
func (w *Webhook) Notify(e correlate.Event) {
	w.init()
	w.mu.Lock()
	if len(w.pending) >= w.Queue {
		w.Log.Warn("webhook queue full: dropping the oldest waiting event", "url", w.URL, "event", w.pending[0].Text)
		w.pending = w.pending[1:]
		w.dropped++
	}
	w.pending = append(w.pending, PayloadOf(e))
	w.queued++
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Stats reports how many events were delivered, given up on, and dropped
// from a full queue.
func (w *Webhook) Stats() (delivered, failed, dropped int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.delivered, w.failed, w.dropped
}

// Queued is how many events were ever queued.
func (w *Webhook) Queued() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.queued
}

// Run delivers queued events, in order, until ctx ends. An event whose
// delivery ctx interrupts goes back to the head of the queue.
func (w *Webhook) Run(ctx context.Context) {
	w.init()
	for {
		w.mu.Lock()
		var next Payload
		ok := len(w.pending) > 0
		if ok {
			next = w.pending[0]
			w.pending = w.pending[1:]
		}
		w.mu.Unlock()
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-w.wake:
				continue
			}
		}
		err := w.deliver(ctx, next)
		w.mu.Lock()
		switch {
		case err == nil:
			w.delivered++
		case ctx.Err() != nil:
			w.pending = append([]Payload{next}, w.pending...)
		default:
			w.failed++
		}
		w.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			w.Log.Error("webhook: giving up on an event", "url", w.URL, "event", next.Text, "err", err)
		}
	}
}

func (w *Webhook) deliver(ctx context.Context, p Payload) error {
	body, err := json.Marshal(p)
	if err != nil {
		return err
	}
	delay := w.BaseDelay
	var last error
	for attempt := 1; attempt <= w.Attempts; attempt++ {
		last = w.post(ctx, body)
		if last == nil {
			w.Log.Info("webhook delivered", "event", p.Event, "text", p.Text)
			return nil
		}
		if attempt == w.Attempts {
			break
		}
		w.Log.Warn("webhook failed, retrying", "url", w.URL, "attempt", attempt, "in", delay, "err", last)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, w.MaxDelay)
	}
	return fmt.Errorf("after %d attempts: %w", w.Attempts, last)
}

func (w *Webhook) post(ctx context.Context, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "cutoff")
	resp, err := w.Client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("POST %s: %s", w.URL, resp.Status)
	}
	return nil
}
