package scratch

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cutoffnet/cutoff/store"
	"github.com/cutoffnet/cutoff/store/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func exists(t *testing.T, server, name string) bool {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, server)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_database WHERE datname = $1`, name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n == 1
}

func migrated(t *testing.T, url string) {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cur, latest, err := st.SchemaVersion(ctx)
	if err != nil || cur != latest || cur == 0 {
		t.Errorf("schema at %d of %d (%v), want migrated", cur, latest, err)
	}
}

// On a named server: a new, migrated database, dropped by Close.
func TestOnServer(t *testing.T) {
	server := pgtest.Cluster(t).URL("postgres")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d, err := New(ctx, server, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Cluster != nil {
		t.Error("started a cluster although a server was named")
	}
	name := d.name
	if !exists(t, server, name) {
		t.Fatalf("database %s not created", name)
	}
	migrated(t, d.URL)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if exists(t, server, name) {
		t.Errorf("database %s left behind", name)
	}
	if err := d.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
}

// Without a server: a throwaway cluster, fsync off unless Durable.
func TestThrowaway(t *testing.T) {
	tests := []struct {
		name    string
		durable bool
		want    string
	}{{"fast", false, "off"}, {"durable", true, "on"}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			d, err := New(ctx, "", Options{Durable: tt.durable})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			migrated(t, d.URL)
			conn, err := pgx.Connect(ctx, d.URL)
			if err != nil {
				t.Fatal(err)
			}
			var fsync string
			err = conn.QueryRow(ctx, `SHOW fsync`).Scan(&fsync)
			conn.Close(ctx)
			if err != nil || fsync != tt.want {
				t.Errorf("fsync = %q (%v), want %q", fsync, err, tt.want)
			}
			dir := d.Cluster.Dir
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			if d.Cluster != nil {
				t.Error("cluster still set after Close")
			}
			if _, err := pgx.Connect(ctx, "host="+dir+" user=cutoff dbname=postgres connect_timeout=2"); err == nil {
				t.Error("cluster still answers after Close")
			}
		})
	}
}
