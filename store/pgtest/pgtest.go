// Package pgtest gives each test its own freshly migrated PostgreSQL
// database, so tests that touch the database are real and may run in
// parallel.
//
// It uses the server named by CUTOFF_TEST_DATABASE_URL when set (the role
// needs CREATEDB and CREATEROLE); otherwise it starts one throwaway cluster
// per test binary with pgtemp and stops it when the tests end. Packages
// that use it call Main from TestMain:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cutoffnet/cutoff/store"
	"github.com/cutoffnet/cutoff/store/pgtemp"
)

// EnvURL names the variable that points tests at an existing server.
const EnvURL = "CUTOFF_TEST_DATABASE_URL"

type server struct {
	once     sync.Once
	err      error
	cluster  *pgtemp.Cluster // nil when using EnvURL
	admin    string          // URL of a database to run CREATE DATABASE from
	template string          // name of the migrated template database
	mu       sync.Mutex      // serialises CREATE DATABASE … TEMPLATE
}

var srv server

// Main runs the tests and stops the throwaway cluster afterwards.
func Main(m *testing.M) {
	code := m.Run()
	if srv.cluster != nil {
		srv.cluster.Stop()
	} else if srv.template != "" {
		// On a shared server, leave nothing behind.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if conn, err := pgx.Connect(ctx, srv.admin); err == nil {
			conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{srv.template}.Sanitize()+" WITH (FORCE)")
			conn.Close(ctx)
		}
		cancel()
	}
	os.Exit(code)
}

func (s *server) start() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if url := os.Getenv(EnvURL); url != "" {
		s.admin = url
	} else {
		c, err := pgtemp.Start(ctx, pgtemp.Options{})
		if err != nil {
			s.err = err
			return
		}
		s.cluster = c
		s.admin = c.URL("postgres")
	}
	// Migrate once into a template; every test database is a copy of it,
	// which is much faster than migrating each.
	s.template = "cutoff_tmpl_" + randomName()
	if err := createDatabase(ctx, s.admin, s.template, ""); err != nil {
		s.err = err
		return
	}
	st, err := store.Open(ctx, store.WithDatabase(s.admin, s.template))
	if err != nil {
		s.err = err
		return
	}
	defer st.Close()
	if _, err := st.Migrate(ctx); err != nil {
		s.err = fmt.Errorf("migrate template: %w", err)
	}
}

// Cluster returns the throwaway cluster, or nil when tests run against
// CUTOFF_TEST_DATABASE_URL. Tests that stop and start the server need it.
func Cluster(t testing.TB) *pgtemp.Cluster {
	t.Helper()
	srv.once.Do(srv.start)
	if srv.err != nil {
		t.Fatalf("test database: %v", srv.err)
	}
	return srv.cluster
}

// URL returns the connection string of a new, migrated database for this
// test. The database is dropped when the test ends.
func URL(t testing.TB) string {
	t.Helper()
	return newDB(t, true)
}

// EmptyURL returns the connection string of a new database without the
// schema, for tests of migration itself.
func EmptyURL(t testing.TB) string {
	t.Helper()
	return newDB(t, false)
}

// New opens a Store on a new, migrated database for this test.
func New(t testing.TB) *store.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := store.Open(ctx, URL(t))
	if err != nil {
		t.Fatalf("open test database: %v", err)
	}
	t.Cleanup(st.Close)
	return st
}

func newDB(t testing.TB, migrated bool) string {
	t.Helper()
	Cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := "cutoff_test_" + randomName()
	tmpl := ""
	if migrated {
		tmpl = srv.template
		// Copying a template needs it to be idle; one copy at a time.
		srv.mu.Lock()
		defer srv.mu.Unlock()
	}
	if err := createDatabase(ctx, srv.admin, name, tmpl); err != nil {
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, srv.admin)
		if err != nil {
			t.Logf("drop test database %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Logf("drop test database %s: %v", name, err)
		}
	})
	return store.WithDatabase(srv.admin, name)
}

func createDatabase(ctx context.Context, admin, name, template string) error {
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return fmt.Errorf("connect to test server: %w", err)
	}
	defer conn.Close(ctx)
	sql := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize()
	if template != "" {
		sql += " TEMPLATE " + pgx.Identifier{template}.Sanitize()
	}
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	return nil
}

func randomName() string {
	var b [6]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
