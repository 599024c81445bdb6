// Package agent is what an operator runs on a vantage point (`cutoff
// probe`): it registers the vantage, follows the plan kept in PostgreSQL,
// runs the scheduler over the probe engines, and gets every result and
// verdict into the database exactly once, through outages of the database
// itself, restarts and crashes.
//
// Data flow: the scheduler hands results and verdicts to a collector,
// which encodes them and writes them into the on-disk spool as they come
// (synced every Flush) before anything else; a writer replays the spool
// into PostgreSQL in order and acknowledges what committed. The database
// being away only makes the spool grow. A SIGKILL loses the probes in
// flight and, at most, the results handed over while the collector was
// busy with its previous write or sync (about a millisecond); a power cut
// at most one Flush interval of results. Rows the database refuses as bad
// data are set aside in the spool's rejected directory; every other
// refusal is retried. Run fails when a result could not be made durable.
package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is the agent's configuration. The command-line flags and the
// optional YAML file use the same keys.
type Config struct {
	DB            string        `yaml:"db"`
	Vantage       string        `yaml:"vantage"`
	Countries     []string      `yaml:"country"`
	Round         time.Duration `yaml:"round"`
	Timeout       time.Duration `yaml:"timeout"`
	Recheck       time.Duration `yaml:"recheck"`
	Rate          int           `yaml:"rate"` // probes per second, all kinds together
	Spool         string        `yaml:"spool"`
	Metrics       string        `yaml:"metrics"` // listen address of /metrics; "" for none
	AllowReserved []string      `yaml:"allow-reserved"`
	OptOut        []string      `yaml:"opt-out"`
	Contact       string        `yaml:"contact"` // opt-out URL named in every ICMP probe
	ICMPMode      string        `yaml:"icmp-mode"`
	Once          bool          `yaml:"once"`
	// Sweep probes every address of every block once, and exits.
	Sweep bool `yaml:"sweep"`
	// PlanRefresh is how often the plan is reloaded from the database.
	PlanRefresh time.Duration `yaml:"plan-refresh"`
	// Flush is how often the spool is synced to disk: a power cut loses
	// at most this much finished work. Results are written into the spool
	// as they come, whatever Flush: a SIGKILL does not wait for it.
	Flush time.Duration `yaml:"flush"`
	// Heartbeat is how often the vantage reports itself and measures its
	// clock against the database.
	Heartbeat time.Duration `yaml:"heartbeat"`
	// Drain bounds how long the agent, stopping, keeps writing the spool
	// into the database.
	Drain time.Duration `yaml:"drain"`
	// SpoolMax bounds the spool on disk, in bytes.
	SpoolMax int64 `yaml:"spool-max"`
	// Seed fixes the scheduler's pseudo-random choices (tests).
	Seed uint64 `yaml:"seed"`
	// TimeScale compresses the scheduler's hourly budgets and sampling
	// interval alike, for the lab's replays of history (a story hour in
	// four seconds is 900). 1 (or 0) for real deployments.
	TimeScale float64 `yaml:"time-scale"`
}

// Defaults returns the configuration a real deployment starts from.
func Defaults() Config {
	return Config{
		Round:       11 * time.Minute,
		Timeout:     5 * time.Second,
		Recheck:     30 * time.Second,
		Rate:        1000,
		Spool:       "/var/lib/cutoff/spool",
		ICMPMode:    "auto",
		Contact:     "https://github.com/cutoffnet/cutoff#opting-out",
		PlanRefresh: 5 * time.Minute,
		Flush:       250 * time.Millisecond,
		Heartbeat:   30 * time.Second,
		Drain:       10 * time.Second,
		SpoolMax:    1 << 30,
	}
}

// LoadConfig reads a YAML file over cfg: keys it sets replace cfg's
// values; unknown keys are an error. Errors name the file, the line and
// the key.
func LoadConfig(path string, cfg *Config) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	err = dec.Decode(cfg)
	if err == nil || errors.Is(err, io.EOF) {
		return nil
	}
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return fmt.Errorf("config %s: %w", path, err)
	}
	// yaml reports a bad value by line only ("line 2: cannot unmarshal
	// !!str `soon` into time.Duration"): name the key on that line.
	keys := map[string]string{}
	var doc yaml.Node
	if yaml.Unmarshal(data, &doc) == nil && len(doc.Content) == 1 && doc.Content[0].Kind == yaml.MappingNode {
		m := doc.Content[0].Content
		for i := 0; i+1 < len(m); i += 2 {
			keys[fmt.Sprintf("line %d:", m[i+1].Line)] = m[i].Value
		}
	}
	msgs := make([]string, len(te.Errors))
	for i, e := range te.Errors {
		msgs[i] = e
		line, rest, ok := strings.Cut(e, ":")
		if k := keys[line+":"]; ok && k != "" {
			msgs[i] = fmt.Sprintf("%s (%s):%s", k, line, rest)
		}
	}
	return fmt.Errorf("config %s: %s", path, strings.Join(msgs, "; "))
}

var (
	vantageName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)
	countryCode = regexp.MustCompile(`^[A-Z]{2}$`)
)

// Validate checks the configuration and says which field is wrong. It
// also fits Recheck to a short round (tests, the demo, lab replays).
func (c *Config) Validate() error {
	switch {
	case c.Vantage == "":
		return errors.New("vantage: a name is required (--vantage)")
	case !vantageName.MatchString(c.Vantage):
		return fmt.Errorf("vantage %q: letters, digits, '.', '_' and '-' only, at most 63", c.Vantage)
	case c.TimeScale < 0:
		return fmt.Errorf("time-scale %v: must not be negative", c.TimeScale)
	case c.Round < time.Second && c.TimeScale <= 1:
		return fmt.Errorf("round %v: at least 1s (shorter only in compressed lab replays, --time-scale)", c.Round)
	case c.Round < 50*time.Millisecond:
		return fmt.Errorf("round %v: at least 50ms", c.Round)
	case c.Timeout <= 0 || c.Timeout > c.Round:
		return fmt.Errorf("timeout %v: positive and at most the round (%v)", c.Timeout, c.Round)
	case c.Recheck <= 0:
		return fmt.Errorf("recheck %v: must be positive", c.Recheck)
	case c.Rate <= 0:
		return fmt.Errorf("rate %d: must be positive", c.Rate)
	case c.Spool == "":
		return errors.New("spool: a directory is required")
	case c.Flush <= 0:
		return fmt.Errorf("flush %v: must be positive", c.Flush)
	case c.Heartbeat <= 0:
		return fmt.Errorf("heartbeat %v: must be positive", c.Heartbeat)
	case c.PlanRefresh <= 0:
		return fmt.Errorf("plan-refresh %v: must be positive", c.PlanRefresh)
	case c.Drain < 0:
		return fmt.Errorf("drain %v: must not be negative", c.Drain)
	case c.SpoolMax < 0:
		return fmt.Errorf("spool-max %d: must not be negative (0 for the default)", c.SpoolMax)
	}
	// Re-checks are a fraction of a round by design; with a short round
	// the default 30 s would not fit. This adjusts, so it comes after
	// every check rather than ending the switch above early.
	if c.TimeScale > 1 && c.Recheck == 30*time.Second {
		c.Recheck = time.Duration(float64(c.Recheck) / c.TimeScale)
	}
	c.Recheck = min(c.Recheck, c.Round/4)
	for i, cc := range c.Countries {
		c.Countries[i] = strings.ToUpper(cc)
		if !countryCode.MatchString(c.Countries[i]) {
			return fmt.Errorf("country %q: not a two-letter code", cc)
		}
	}
	if _, err := c.prefixes(c.AllowReserved); err != nil {
		return fmt.Errorf("allow-reserved: %w", err)
	}
	if _, err := c.prefixes(c.OptOut); err != nil {
		return fmt.Errorf("opt-out: %w", err)
	}
	switch c.ICMPMode {
	case "auto", "raw", "ping":
	default:
		return fmt.Errorf("icmp-mode %q: want auto, raw or ping", c.ICMPMode)
	}
	return nil
}

func (c *Config) prefixes(ss []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range ss {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR prefix", s)
		}
		if p.Masked() != p {
			return nil, fmt.Errorf("%s has host bits set (did you mean %s?)", p, p.Masked())
		}
		out = append(out, p)
	}
	return out, nil
}

// The spool directory holds the spooled batches, the cached plan (so a
// restart while the database is away can go on probing) and batches the
// database refused (kept, never dropped).
func (c *Config) spoolDir() string  { return filepath.Join(c.Spool, "batches") }
func (c *Config) planPath() string  { return filepath.Join(c.Spool, "plan.gob") }
func (c *Config) rejectDir() string { return filepath.Join(c.Spool, "rejected") }
