package store_test

import (
	"testing"

	"github.com/cutoffnet/cutoff/store"
)

func TestWithDatabase(t *testing.T) {
	tests := []struct {
		name string
		give string
		want string
	}{
		{"keyword/value", "host=/tmp/x user=cutoff dbname=postgres", "host=/tmp/x user=cutoff dbname=postgres dbname=t1"},
		{"url", "postgres://u:p@db.example:5432/postgres?sslmode=require", "postgres://u:p@db.example:5432/t1?sslmode=require"},
		{"postgresql url", "postgresql://u@db/x", "postgresql://u@db/t1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := store.WithDatabase(tt.give, "t1"); got != tt.want {
				t.Fatalf("WithDatabase(%q) = %q, want %q", tt.give, got, tt.want)
			}
		})
	}
}
