package pgtemp

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestStartPauseResumeStop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := Start(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()

	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	var fsync, user string
	conn.QueryRow(ctx, "SELECT current_setting('fsync'), current_user").Scan(&fsync, &user)
	conn.Close(ctx)
	if fsync != "off" || user != Superuser {
		t.Fatalf("fsync %q, user %q", fsync, user)
	}
	if os.Geteuid() == 0 {
		// PostgreSQL refuses root: the server must run as someone else.
		var st syscall.Stat_t
		if err := syscall.Stat(c.Dir+"/data", &st); err != nil {
			t.Fatal(err)
		}
		if st.Uid == 0 {
			t.Fatal("data directory owned by root")
		}
	}

	if err := c.Pause(); err != nil {
		t.Fatal(err)
	}
	if _, err := pgx.Connect(ctx, c.URL("postgres")+" connect_timeout=2"); err == nil {
		t.Fatal("connected to a paused server")
	}
	if err := c.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	conn, err = pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		t.Fatalf("after resume: %v", err)
	}
	conn.Close(ctx)

	pid := c.PID()
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(c.Dir); !os.IsNotExist(err) {
		t.Fatalf("cluster directory left behind: %v", err)
	}
	if err := syscall.Kill(pid, 0); err == nil {
		t.Fatalf("server pid %d still alive after Stop", pid)
	}
	if err := c.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
}

func TestDurableKeepsFsync(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := Start(ctx, Options{Durable: true, Settings: map[string]string{"work_mem": "8MB"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var fsync, workMem string
	conn.QueryRow(ctx, "SELECT current_setting('fsync'), current_setting('work_mem')").Scan(&fsync, &workMem)
	if fsync != "on" || workMem != "8MB" {
		t.Fatalf("fsync %q work_mem %q", fsync, workMem)
	}
}

// A detached server outlives the process that started it (cutoff demo
// --keep), and a default one does not. The starting process is this test
// binary run again as a child, so that it can exit while we watch.
func TestDetachOutlivesProcess(t *testing.T) {
	if os.Getenv("PGTEMP_CHILD") != "" {
		c, err := Start(context.Background(), Options{Detach: os.Getenv("PGTEMP_CHILD") == "detach"})
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Printf("started %d %s\n", c.PID(), c.Dir)
		os.Exit(0) // no Stop: as if cutoff demo --keep had returned
	}
	for _, mode := range []string{"detach", "attached"} {
		t.Run(mode, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0], "-test.run", "^TestDetachOutlivesProcess$")
			cmd.Env = append(os.Environ(), "PGTEMP_CHILD="+mode)
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("child: %v\n%s", err, out)
			}
			var pid int
			var dir string
			if _, err := fmt.Sscanf(string(out), "started %d %s", &pid, &dir); err != nil {
				t.Fatalf("child said %q: %v", out, err)
			}
			defer os.RemoveAll(dir)
			url := fmt.Sprintf("host=%s user=%s dbname=postgres sslmode=disable", dir, Superuser)
			alive := func() bool {
				conn, err := pgx.Connect(ctx, url)
				if err != nil {
					return false
				}
				conn.Close(ctx)
				return true
			}
			if mode == "detach" {
				defer func() {
					syscall.Kill(pid, syscall.SIGQUIT) // the server we had started
					for i := 0; i < 100 && syscall.Kill(pid, 0) == nil; i++ {
						time.Sleep(50 * time.Millisecond)
					}
				}()
				if !alive() {
					t.Fatal("detached server gone with the process that started it")
				}
				return
			}
			// The parent-death signal may take a moment to land.
			deadline := time.Now().Add(10 * time.Second)
			for syscall.Kill(pid, 0) == nil && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
			if alive() {
				t.Fatal("attached server outlived the process that started it")
			}
		})
	}
}
