package spool

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const crashDirEnv = "CUTOFF_SPOOL_CRASH_DIR"

// crashPayload is the record the crash child appends as seq: large and of
// varying size, so a SIGKILL often lands in the middle of a write.
func crashPayload(seq uint64) []byte {
	b := make([]byte, 100+int(seq*7919%40000))
	for i := range b {
		b[i] = byte(seq>>(8*(i%8))) ^ byte(i)
	}
	return b
}

// TestCrashChild is the process TestCrash kills. It appends in batches
// (Write or AppendBatch) while a second goroutine replays and
// acknowledges, and prints what must survive a SIGKILL: "D seq" once the
// batch ending at seq is appended, "a seq"
// before acknowledging seq and "A seq" after.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("helper process for TestCrash; runs only when TestCrash starts it")
	}
	s, err := Open(dir, Options{SegmentBytes: 256 << 10})
	if err != nil {
		fmt.Println("E", err)
		os.Exit(1)
	}
	var out sync.Mutex
	say := func(what string, seq uint64) {
		out.Lock()
		defer out.Unlock()
		fmt.Fprintf(os.Stdout, "%s %d\n", what, seq)
	}
	// Bounded in count and time even if nobody kills it.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go func() {
		for {
			r, err := s.Next(ctx)
			if err != nil {
				return
			}
			if r.Seq%5 == 0 {
				say("a", r.Seq)
				if err := s.Ack(r.Seq); err != nil {
					fmt.Println("E", err)
					os.Exit(1)
				}
				say("A", r.Seq)
			}
		}
	}()
	rng := rand.New(rand.NewPCG(uint64(os.Getpid()), 1))
	for i := 0; i < 20000 && ctx.Err() == nil; i++ {
		s.mu.Lock()
		next := s.nextSeq
		s.mu.Unlock()
		var batch [][]byte
		for j := range 1 + rng.IntN(4) {
			batch = append(batch, crashPayload(next+uint64(j)))
		}
		// Write (no fsync, synced every few batches) or AppendBatch: a
		// SIGKILL must not lose what either has returned.
		var first uint64
		var err error
		if rng.IntN(2) == 0 {
			first, err = s.Write(batch)
			if err == nil && i%8 == 0 {
				err = s.Sync()
			}
		} else {
			first, err = s.AppendBatch(batch)
		}
		if err != nil || first != next {
			fmt.Println("E append", first, next, err)
			os.Exit(1)
		}
		say("D", first+uint64(len(batch))-1)
	}
	os.Exit(0)
}

// TestCrash starts a child that appends and acknowledges, SIGKILLs it at
// a random moment, and checks the spool it left: every record the child
// saw durable is there, in order, byte for byte; nothing acknowledged
// comes back; at most the append in progress is lost, and quietly. Several
// rounds run on the same directory, each child continuing the last one's
// sequence.
func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills child processes")
	}
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(7, 8))
	var durable, ackedDone, ackedTried uint64
	repaired := 0
	for round := range 6 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		killAfter := 10 + rng.IntN(200)
		seen := 0
		sc := bufio.NewScanner(stdout)
		killed := false
		for sc.Scan() {
			what, num, _ := strings.Cut(sc.Text(), " ")
			seq, err := strconv.ParseUint(num, 10, 64)
			if err != nil || what == "E" {
				t.Fatalf("round %d: child says %q", round, sc.Text())
			}
			switch what {
			case "D":
				durable = max(durable, seq)
				seen++
			case "a":
				ackedTried = max(ackedTried, seq)
			case "A":
				ackedDone = max(ackedDone, seq)
			}
			if seen == killAfter && !killed {
				// Land anywhere in the next append: write, fdatasync or
				// segment creation.
				time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
				// By PID: this is the process this test started.
				if err := cmd.Process.Kill(); err != nil {
					t.Fatal(err)
				}
				killed = true
			}
		}
		err = cmd.Wait()
		if !killed || err == nil {
			t.Fatalf("round %d: child ended on its own (%v) before being killed: %s", round, err, stderr.String())
		}

		// What the child left behind.
		rep := &reports{}
		s, err := Open(dir, Options{SegmentBytes: 256 << 10, OnCorrupt: rep.add})
		if err != nil {
			t.Fatalf("round %d: Open: %v", round, err)
		}
		rs := drain(t, s)
		for _, e := range rep.all() {
			if e.Lost != 0 || !strings.Contains(e.Reason, "crash") {
				t.Errorf("round %d: unexpected report after SIGKILL: %v", round, e)
			}
			repaired++
		}
		if s.Lost() != 0 {
			t.Errorf("round %d: %d records lost", round, s.Lost())
		}
		if len(rs) == 0 {
			if durable > ackedTried {
				t.Fatalf("round %d: nothing pending, but %d is durable and at most %d acknowledged", round, durable, ackedTried)
			}
		} else {
			first := rs[0].Seq
			// Acknowledged records never come back; the first pending one
			// follows the last acknowledgement that may have reached disk.
			if first <= ackedDone || first > ackedTried+1 {
				t.Errorf("round %d: first pending %d; acknowledged %d (attempted %d)", round, first, ackedDone, ackedTried)
			}
			for i, r := range rs {
				if r.Seq != first+uint64(i) {
					t.Fatalf("round %d: record %d has seq %d: gap or disorder in %s", round, i, r.Seq, summary(seqs(rs)))
				}
				if !bytes.Equal(r.Data, crashPayload(r.Seq)) {
					t.Fatalf("round %d: record %d differs from what was appended", round, r.Seq)
				}
			}
			if last := rs[len(rs)-1].Seq; last < durable {
				t.Fatalf("round %d: records up to %d reported durable, spool ends at %d", round, durable, last)
			}
		}
		t.Logf("round %d: killed after %d appends; durable %d, acknowledged %d, pending %d, reports %d",
			round, seen, durable, ackedDone, len(rs), len(rep.all()))
		s.Close()
	}
	t.Logf("torn appends repaired over all rounds: %d", repaired)
}
