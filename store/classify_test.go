package store

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// TestErrorClasses: which server errors make a batch bad data (set aside)
// and which leave it to be retried. Issue 5: a batch refused for any
// reason but its content must never be set aside.
func TestErrorClasses(t *testing.T) {
	pg := func(code, msg string) error {
		return fmt.Errorf("ingest 10 rows into probe_results: %w", &pgconn.PgError{Code: code, Message: msg})
	}
	tests := []struct {
		name     string
		give     error
		wantBad  bool // badData: set aside
		wantConn bool // IsConnError
		wantCode string
	}{
		{"check constraint", pg("23514", `new row for relation "probe_results_20261125" violates check constraint`), true, false, "23514"},
		{"not null", pg("23502", "null value"), true, false, "23502"},
		{"bad value", pg("22P02", "invalid input syntax"), true, false, "22P02"},
		{"out of range", pg("22003", "numeric field overflow"), true, false, "22003"},
		{"duplicate key", pg("23505", "duplicate key value"), false, false, "23505"},
		{"no partition", pg("23514", `no partition of relation "probe_results" found for row`), false, false, "23514"},
		{"statement timeout", pg("57014", "canceling statement due to statement timeout"), false, false, "57014"},
		{"deadlock", pg("40P01", "deadlock detected"), false, false, "40P01"},
		{"serialization", pg("40001", "could not serialize access"), false, false, "40001"},
		{"read-only standby", pg("25006", "cannot execute COPY FROM in a read-only transaction"), false, false, "25006"},
		{"bad password", pg("28P01", "password authentication failed"), false, false, "28P01"},
		{"no such role", pg("28000", "role does not exist"), false, false, "28000"},
		{"permission", pg("42501", "permission denied for table probe_results"), false, false, "42501"},
		{"missing table", pg("42P01", `relation "probe_results" does not exist`), false, false, "42P01"},
		{"admin shutdown", pg("57P01", "terminating connection due to administrator command"), false, true, "57P01"},
		{"connection failure", pg("08006", "connection failure"), false, true, "08006"},
		{"too many connections", pg("53300", "too many clients"), false, true, "53300"},
		{"no server", errors.New("dial unix /run/postgresql/.s.PGSQL.5432: connect: no such file or directory"), false, true, ""},
		{"cancelled", context.Canceled, false, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := badData(tt.give); got != tt.wantBad {
				t.Errorf("badData = %v, want %v", got, tt.wantBad)
			}
			if got := IsConnError(tt.give); got != tt.wantConn {
				t.Errorf("IsConnError = %v, want %v", got, tt.wantConn)
			}
			if got := SQLState(tt.give); got != tt.wantCode {
				t.Errorf("SQLState = %q, want %q", got, tt.wantCode)
			}
		})
	}
}
