package pgtemp

import (
	"context"
	"os"
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
