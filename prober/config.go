package prober

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"golang.org/x/time/rate"
)

const (
	// DefaultTimeout is how long an engine waits for an answer. Five
	// seconds because about 5% of replies from 5% of addresses take
	// longer than a second or two (Trinocular, SIGCOMM 2013; Padmanabhan
	// et al., IMC 2020): a short timeout invents loss.
	DefaultTimeout = 5 * time.Second
	// DefaultRate is the probes-per-second cap of an engine built without
	// a Limiter.
	DefaultRate = 1000
)

// ErrClosed is returned by Probe after Close.
var ErrClosed = errors.New("probe engine closed")

// Limiter paces probes; Probe waits on it before sending. A
// *rate.Limiter (see NewLimiter) satisfies it. Give every engine of a
// vantage the same Limiter to cap the vantage's total rate.
type Limiter interface {
	Wait(ctx context.Context) error
}

// NewLimiter returns a limiter of perSecond probes per second, with a
// burst of a hundredth of a second's worth so batching senders can fill a
// batch without exceeding the average.
func NewLimiter(perSecond int) *rate.Limiter {
	return rate.NewLimiter(rate.Limit(perSecond), max(1, perSecond/100))
}

// Config is what every engine needs. Its zero value works: the zero
// Policy (no reserved space), DefaultTimeout, a DefaultRate limiter of the
// engine's own, the wall clock and a discarding logger.
type Config struct {
	// Policy is checked before every probe; a refused target is never
	// sent and Probe returns an error wrapping ErrRefused.
	Policy Policy
	// Limiter caps the probe rate; nil gets NewLimiter(DefaultRate).
	Limiter Limiter
	// Timeout is how long to wait for an answer; 0 means DefaultTimeout.
	Timeout time.Duration
	// Now is the clock (for tests); nil means time.Now.
	Now func() time.Time
	// Log receives the engine's rare operational messages; nil discards.
	Log *slog.Logger
}

// withDefaults fills the zero fields of c.
func (c Config) withDefaults() Config {
	if c.Limiter == nil {
		c.Limiter = NewLimiter(DefaultRate)
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return c
}

// admit applies the policy and the rate limit to t: the common front of
// every engine's Probe.
func (c *Config) admit(ctx context.Context, t Target) error {
	if err := c.Policy.Check(t.Addr); err != nil {
		return err
	}
	if err := c.Limiter.Wait(ctx); err != nil {
		return fmt.Errorf("rate limit: %w", err)
	}
	return nil
}
