package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// valid is a configuration Validate accepts, with the short round the
// tests use: the checks after the Recheck adjustment must still run.
func valid() Config {
	c := Defaults()
	c.Vantage = "vp1"
	c.Round = 2 * time.Second
	c.Timeout = 300 * time.Millisecond
	return c
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		give func(*Config)
		want string // in the error; "" for none
	}{
		{"valid", func(c *Config) {}, ""},
		{"valid default round", func(c *Config) { c.Round = Defaults().Round; c.Timeout = Defaults().Timeout }, ""},
		{"no vantage", func(c *Config) { c.Vantage = "" }, "vantage: a name is required"},
		{"bad vantage", func(c *Config) { c.Vantage = "vp 1" }, `vantage "vp 1"`},
		{"negative time scale", func(c *Config) { c.TimeScale = -1 }, "time-scale"},
		{"round too short", func(c *Config) { c.Round = 500 * time.Millisecond }, "round 500ms: at least 1s"},
		{"round too short even compressed", func(c *Config) { c.Round, c.TimeScale = 10*time.Millisecond, 900 }, "round 10ms: at least 50ms"},
		{"timeout zero", func(c *Config) { c.Timeout = 0 }, "timeout 0s"},
		{"timeout over the round", func(c *Config) { c.Timeout = 3 * time.Second }, "timeout 3s"},
		{"recheck zero", func(c *Config) { c.Recheck = 0 }, "recheck 0s"},
		// The bugs of issue 5's audit: with a round under 2 minutes the
		// Recheck adjustment ended the switch before these checks.
		{"rate zero, short round", func(c *Config) { c.Rate = 0 }, "rate 0"},
		{"rate negative, short round", func(c *Config) { c.Rate = -5 }, "rate -5"},
		{"rate zero, compressed", func(c *Config) {
			c.Rate, c.Round, c.Timeout, c.TimeScale = 0, 100*time.Millisecond, 50*time.Millisecond, 900
		}, "rate 0"},
		{"no spool, short round", func(c *Config) { c.Spool = "" }, "spool: a directory is required"},
		{"flush zero, short round", func(c *Config) { c.Flush = 0 }, "flush 0s"},
		{"heartbeat zero, short round", func(c *Config) { c.Heartbeat = 0 }, "heartbeat 0s"},
		{"plan-refresh zero, short round", func(c *Config) { c.PlanRefresh = 0 }, "plan-refresh 0s"},
		{"drain negative", func(c *Config) { c.Drain = -time.Second }, "drain -1s"},
		{"spool-max negative", func(c *Config) { c.SpoolMax = -1 }, "spool-max -1"},
		{"bad country", func(c *Config) { c.Countries = []string{"KP", "K1"} }, `country "K1": not a two-letter code`},
		{"country lower case", func(c *Config) { c.Countries = []string{"kp"} }, ""},
		{"allow-reserved not a prefix", func(c *Config) { c.AllowReserved = []string{"198.18.0.0"} }, `allow-reserved: "198.18.0.0" is not a CIDR prefix`},
		{"allow-reserved host bits", func(c *Config) { c.AllowReserved = []string{"198.18.0.1/15"} }, "allow-reserved: 198.18.0.1/15 has host bits set (did you mean 198.18.0.0/15?)"},
		{"opt-out host bits", func(c *Config) { c.OptOut = []string{"10.0.0.1/8"} }, "opt-out: 10.0.0.1/8 has host bits set"},
		{"icmp-mode", func(c *Config) { c.ICMPMode = "fast" }, `icmp-mode "fast"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.give(&c)
			err := c.Validate()
			got := ""
			if err != nil {
				got = err.Error()
			}
			if (tt.want == "") != (err == nil) || !strings.Contains(got, tt.want) {
				t.Fatalf("Validate: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// TestValidateRecheck: Validate fits Recheck to the round, and an adjusted
// Recheck does not skip the checks after it.
func TestValidateRecheck(t *testing.T) {
	tests := []struct {
		name           string
		round, recheck time.Duration
		scale          float64
		want           time.Duration
	}{
		{"default round keeps 30s", 11 * time.Minute, 30 * time.Second, 0, 30 * time.Second},
		{"short round: a quarter", 2 * time.Second, 30 * time.Second, 0, 500 * time.Millisecond},
		{"compressed: default scaled", 4 * time.Second, 30 * time.Second, 900, 30 * time.Second / 900},
		{"compressed: explicit recheck kept within a quarter", 4 * time.Second, 10 * time.Second, 900, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			c.Round, c.Recheck, c.TimeScale, c.Timeout = tt.round, tt.recheck, tt.scale, 100*time.Millisecond
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
			if c.Recheck != tt.want {
				t.Fatalf("recheck %v, want %v", c.Recheck, tt.want)
			}
		})
	}
}

func TestLoadConfig(t *testing.T) {
	tests := []struct {
		name string
		give string // the YAML file
		want string // in the error from LoadConfig, then Validate; "" for none
		// check looks at the result when there is no error.
		check func(Config) bool
	}{
		{"empty file keeps the defaults", "", "vantage: a name is required", nil},
		{"keys", "vantage: tokyo\nround: 2m\ncountry: [kp, IR]\nrate: 300\nallow-reserved: [198.18.0.0/15]\n", "",
			func(c Config) bool {
				return c.Vantage == "tokyo" && c.Round == 2*time.Minute && c.Rate == 300 && c.Countries[0] == "KP" &&
					c.Timeout == Defaults().Timeout && c.Recheck == 30*time.Second
			}},
		{"unknown key", "vantage: tokyo\nvantge: osaka\n", "field vantge not found", nil},
		{"bad duration", "vantage: tokyo\nround: soon\n", "round (line 2): cannot unmarshal", nil},
		{"bad number", "vantage: tokyo\nrate: many\n", "rate (line 2)", nil},
		{"bad yaml", "vantage: [tokyo\n", "config", nil},
		{"rate zero", "vantage: tokyo\nround: 30s\nrate: 0\n", "rate 0", nil},
		{"timeout zero", "vantage: tokyo\ntimeout: 0s\n", "timeout 0s", nil},
		{"bad country", "vantage: tokyo\ncountry: [KPX]\n", `country "KPX"`, nil},
		{"host bits", "vantage: tokyo\nallow-reserved: [198.18.0.1/15]\n", "host bits", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "probe.yaml")
			if err := os.WriteFile(path, []byte(tt.give), 0o600); err != nil {
				t.Fatal(err)
			}
			c := Defaults()
			err := LoadConfig(path, &c)
			if err == nil {
				err = c.Validate()
			}
			got := ""
			if err != nil {
				got = err.Error()
			}
			if (tt.want == "") != (err == nil) || !strings.Contains(got, tt.want) {
				t.Fatalf("%v, want an error containing %q", err, tt.want)
			}
			if tt.check != nil && !tt.check(c) {
				t.Fatalf("config read wrong: %+v", c)
			}
		})
	}
	if err := LoadConfig(filepath.Join(t.TempDir(), "missing.yaml"), new(Config)); err == nil {
		t.Fatal("a missing file is not an error")
	}
}

// TestNewRefusesBadConfig: New validates once, on a configuration no one
// has validated (or adjusted) before; a round under two minutes must not
// let a zero rate through (it would block every probe forever).
func TestNewRefusesBadConfig(t *testing.T) {
	c := valid()
	c.Rate = 0
	if _, err := New(c, nil, nil); err == nil || !strings.Contains(err.Error(), "rate 0") {
		t.Fatalf("New with rate 0 and a 2s round: %v, want the rate refused", err)
	}
}
