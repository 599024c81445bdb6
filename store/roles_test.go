package store_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/cutoffnet/cutoff/store"
	"github.com/cutoffnet/cutoff/store/pgtest"
)

// loginAs returns a connection whose session user is a fresh login role
// in the given group, as a vantage's own credential would be. The role is
// dropped when the test ends (roles are shared by the whole cluster).
func loginAs(t *testing.T, st *store.Store, group string) *pgx.Conn {
	t.Helper()
	ctx := ctxT(t)
	b := make([]byte, 4)
	rand.Read(b)
	role := "test_" + group + "_" + hex.EncodeToString(b)
	if _, err := st.Pool().Exec(ctx, fmt.Sprintf(`CREATE ROLE %s LOGIN IN ROLE %s`, role, group)); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.ConnectConfig(ctx, st.Pool().Config().ConnConfig.Copy())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `SET SESSION AUTHORIZATION `+role); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn.Close(ctx)
		st.Pool().Exec(ctx, `REASSIGN OWNED BY `+role+` TO CURRENT_USER`)
		st.Pool().Exec(ctx, `DROP OWNED BY `+role)
		st.Pool().Exec(ctx, `DROP ROLE `+role)
	})
	return conn
}

func denied(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "42501"
}

const beat = `SELECT cutoff_vantage_heartbeat($1, 660, 5, 1, 0, 0, NULL, 0, '{KP}', 'test', 'host')`

func TestVantageBelongsToItsLogin(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	st := pgtest.New(t)
	tokyo := loginAs(t, st, "cutoff_prober")
	paris := loginAs(t, st, "cutoff_prober")

	if _, err := tokyo.Exec(ctx, beat, "tokyo"); err != nil {
		t.Fatalf("first heartbeat: %v", err)
	}
	if _, err := tokyo.Exec(ctx, beat, "tokyo"); err != nil {
		t.Fatalf("second heartbeat of its own vantage: %v", err)
	}
	_, err := paris.Exec(ctx, beat, "tokyo")
	if !denied(err) {
		t.Fatalf("another login's heartbeat for tokyo: err %v, want permission denied", err)
	}
	if _, err := paris.Exec(ctx, beat, "paris"); err != nil {
		t.Fatalf("paris's own vantage: %v", err)
	}
	// The operator (not bound) may still report any vantage, e.g. in the lab.
	if err := st.Beat(ctx, store.Heartbeat{Vantage: "tokyo", Round: time.Minute, Timeout: time.Second}); err != nil {
		t.Fatalf("operator heartbeat: %v", err)
	}
	var login string
	if err := st.Pool().QueryRow(ctx, `SELECT login FROM vantages WHERE name = 'tokyo'`).Scan(&login); err != nil {
		t.Fatal(err)
	}
	if want := tokyo.PgConn().ParameterStatus("session_authorization"); login != want {
		t.Fatalf("tokyo belongs to %q, want %q", login, want)
	}
	// Released, it can move to a new login.
	if _, err := st.Pool().Exec(ctx, `UPDATE vantages SET login = NULL WHERE name = 'tokyo'`); err != nil {
		t.Fatal(err)
	}
	if _, err := paris.Exec(ctx, beat, "tokyo"); err != nil {
		t.Fatalf("heartbeat after release: %v", err)
	}
}

func TestHeartbeatKeepsPartitionsAhead(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	st := pgtest.New(t)
	day := time.Now().UTC().Add(6 * 24 * time.Hour).Format("20060102")
	for _, p := range []string{"probe_results_", "observations_"} {
		if _, err := st.Pool().Exec(ctx, `DROP TABLE IF EXISTS `+p+day); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Beat(ctx, store.Heartbeat{Vantage: "vp1", Round: time.Minute, Timeout: time.Second}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"probe_results_", "observations_"} {
		if got := count(t, st, `SELECT count(*) FROM pg_class WHERE relname = $1`, p+day); got != 1 {
			t.Errorf("%s%s: %d after a heartbeat, want it made ahead", p, day, got)
		}
	}
}

func TestReaderRoleIsReadOnly(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	st := pgtest.New(t)
	if _, err := st.IngestResults(ctx, sample(3, time.Now().UTC())); err != nil {
		t.Fatal(err)
	}
	conn := loginAs(t, st, "cutoff_reader")
	tests := []struct {
		name string
		give string
		ok   bool
	}{
		{"read results", `SELECT count(*) FROM probe_results`, true},
		{"read outages", `SELECT count(*) FROM country_outages`, true},
		{"read vantages", `SELECT count(*) FROM vantages`, true},
		{"insert result", `INSERT INTO probe_results (vantage, kind, addr, sent_at, outcome) VALUES ('vp9', 'icmp', '198.19.0.1', now(), 'timeout')`, false},
		{"delete results", `DELETE FROM probe_results`, false},
		{"heartbeat", `SELECT cutoff_vantage_heartbeat('vp9', 660, 5, 1, 0, 0, NULL, 0, '{KP}', 'test', 'host')`, false},
		{"make partitions", `SELECT cutoff_ensure_partitions(now(), now() + interval '1 day')`, false},
		{"write intervals", `INSERT INTO country_intervals (country, during, state) VALUES ('KP', tstzrange(now(), null), 'down')`, false},
		{"create table", `CREATE TABLE mine (x int)`, false},
	}
	for _, tt := range tests {
		_, err := conn.Exec(ctx, tt.give)
		if tt.ok && err != nil {
			t.Errorf("%s: %v, want allowed", tt.name, err)
		}
		if !tt.ok && !denied(err) {
			t.Errorf("%s: err %v, want permission denied", tt.name, err)
		}
	}
}
