package main

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cutoffnet/cutoff/prober"
	"github.com/cutoffnet/cutoff/prober/lab"
	"github.com/cutoffnet/cutoff/prober/lab/labtest"
	"github.com/cutoffnet/cutoff/store"
	"github.com/cutoffnet/cutoff/store/pgtest"
)

func TestDiscoverBadInput(t *testing.T) {
	t.Parallel()
	db := pgtest.URL(t)
	tests := []struct {
		name string
		give []string
		want string
	}{
		{"bad country code", []string{"--country", "K1"}, "--country"},
		{"no country", nil, "--country"},
		{"bad port", []string{"--country", "KP", "--ports", "80,http"}, `"http" is not a port`},
		{"port zero", []string{"--country", "KP", "--ports", "0"}, "not a port"},
		{"no rounds", []string{"--country", "KP", "--rounds", "0"}, "--rounds"},
		{"bad prefix", []string{"--country", "KP", "--allow-reserved", "198.18.0.0"}, "--allow-reserved"},
		{"opt-out not a prefix", []string{"--country", "KP", "--opt-out", "175.45.176.0"}, "--opt-out"},
		{"opt-out with host bits", []string{"--country", "KP", "--opt-out", "175.45.176.1/24"}, "--opt-out 175.45.176.1/24 has host bits set"},
		{"opt-out garbage", []string{"--country", "KP", "--opt-out", "kp"}, `--opt-out "kp"`},
		{"country not watched", []string{"--country", "KP", "--db", db}, "not watched"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := cli(t, append([]string{"targets", "discover"}, tt.give...)...)
			if code != exitUsage || !strings.Contains(stderr, tt.want) {
				t.Errorf("exit %d, stderr %q; want %d mentioning %q", code, stderr, exitUsage, tt.want)
			}
		})
	}
}

// TestDiscoverLab runs the census command from the lab's vp1: without
// --allow-reserved the lab's space is refused (exit 2, nothing written);
// with it every network's responsive hosts are found and stored.
func TestDiscoverLab(t *testing.T) {
	l := labtest.Up(t, lab.Default())
	db := pgtest.URL(t)
	ctx := context.Background()
	st, err := store.Open(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	country := l.Country()
	imp := store.Import{Country: country.Code, Name: country.Name, Source: "lab"}
	for _, nw := range country.Networks {
		imp.Prefixes = append(imp.Prefixes, store.Prefix{Prefix: nw.Prefix, Registry: "lab"})
	}
	if _, err := st.ImportPrefixes(ctx, imp); err != nil {
		t.Fatal(err)
	}
	discover := func(extra ...string) (code int, stdout, stderr string) {
		args := append([]string{"targets", "discover", "--db", db, "--country", country.Code,
			"--ports", "80,443", "--rounds", "2", "--timeout", "500ms", "--rate", "5000"}, extra...)
		// The engines open their sockets in vp1's namespace; the database
		// is reached over a unix socket, which namespaces do not hide.
		if err := l.Do("vp1", func() error {
			code, stdout, stderr = cli(t, args...)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return code, stdout, stderr
	}

	code, _, stderr := discover()
	if code != exitUsage || !strings.Contains(stderr, "--allow-reserved") {
		t.Fatalf("without --allow-reserved: exit %d, %q; want 2", code, stderr)
	}
	if n := query[int64](t, db, `SELECT count(*) FROM targets`); n != 0 {
		t.Fatalf("%d targets written by a refused census", n)
	}

	code, stdout, stderr := discover("--allow-reserved", prober.Lab.String())
	if code != exitOK {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	if !strings.Contains(stdout, "censused 4 of 4 blocks") {
		t.Errorf("output %q", stdout)
	}
	for _, nw := range country.Networks {
		want := 0
		for _, h := range nw.Hosts {
			if (h.ICMP && !nw.FilterICMP) || len(h.TCPPorts) > 0 {
				want++
			}
		}
		got := query[int32](t, db, `SELECT ever_responsive FROM blocks WHERE block = '`+nw.Prefix.String()+`'`)
		if int(got) != want {
			t.Errorf("%s: E(b) %d, want the lab's %d responsive hosts", nw.Name, got, want)
		}
	}
	if n := query[int32](t, db, `SELECT min(census_rounds) FROM blocks`); n != 2 {
		t.Errorf("census_rounds %d, want 2", n)
	}

	// Again, with one network opted out and the operator's contact: the
	// opted-out network sees no echo request at all, the others see the
	// contact in every one, and only they are censused again.
	out, in := country.Networks[1], country.Networks[0]
	const contact = "https://example.org/cutoff-lab-census"
	outSniff, inSniff := sniffEcho(t, l, out.Name), sniffEcho(t, l, in.Name)
	code, stdout, stderr = discover("--allow-reserved", prober.Lab.String(), "--opt-out", out.Prefix.String(), "--contact", contact)
	if code != exitOK {
		t.Fatalf("with --opt-out: exit %d\n%s%s", code, stdout, stderr)
	}
	if got := outSniff(); len(got) != 0 {
		t.Errorf("opted-out %s received %d echo requests", out.Prefix, len(got))
	}
	got := inSniff()
	if len(got) == 0 {
		t.Errorf("%s received no echo request", in.Prefix)
	}
	for _, p := range got {
		if !strings.HasSuffix(string(p), "opt out: "+contact) {
			t.Fatalf("echo request payload %q does not name --contact", p)
		}
	}
	if !strings.Contains(stdout, "censused 3 of 4 blocks") || !strings.Contains(stdout, "1 blocks are opted out") {
		t.Errorf("output %q", stdout)
	}
	if n := query[int32](t, db, `SELECT census_rounds FROM blocks WHERE block = '`+out.Prefix.String()+`'`); n != 2 {
		t.Errorf("opted-out block: census_rounds %d, want still 2", n)
	}
	if n := query[int32](t, db, `SELECT census_rounds FROM blocks WHERE block = '`+in.Prefix.String()+`'`); n != 4 {
		t.Errorf("census_rounds %d after another 2 rounds, want 4", n)
	}
}

// sniffEcho records the payloads of the ICMP echo requests that reach a
// lab network's namespace, through a raw socket there, until the
// function it returns is called.
func sniffEcho(t *testing.T, l *lab.Lab, role string) func() [][]byte {
	t.Helper()
	var fd int
	err := l.Do(role, func() (err error) {
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
		if err != nil {
			return err
		}
		tv := unix.NsecToTimeval(int64(50 * time.Millisecond))
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return err
		}
		return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
	})
	if err != nil {
		t.Fatalf("sniff %s: %v", role, err)
	}
	var stop atomic.Bool
	done := make(chan [][]byte, 1)
	go func() {
		defer unix.Close(fd)
		var got [][]byte
		buf := make([]byte, 2048)
		for !stop.Load() {
			k, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil || k < 28 {
				continue // the receive timeout, to look at stop
			}
			m := buf[int(buf[0]&0x0f)<<2 : k]
			if len(m) >= 8 && m[0] == 8 { // echo request
				got = append(got, bytes.Clone(m[8:]))
			}
		}
		done <- got
	}()
	var once sync.Once
	var got [][]byte
	collect := func() [][]byte {
		once.Do(func() {
			stop.Store(true)
			got = <-done
		})
		return got
	}
	t.Cleanup(func() { collect() })
	return collect
}
