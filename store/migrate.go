package store

import (
	"context"
	"fmt"
	"io/fs"

	"github.com/jackc/tern/v2/migrate"

	"github.com/cutoffnet/cutoff/migrations"
)

// versionTable records which migrations have been applied.
const versionTable = "schema_version"

// Migration is one applied schema step, for reporting.
type Migration struct {
	Sequence int32
	Name     string
}

// Migrate applies every pending migration from the embedded files, each in
// its own transaction, and returns the ones it applied. A second run
// applies nothing. Concurrent runs are safe: tern serialises them with an
// advisory lock, and the later run finds the work done.
func (s *Store) Migrate(ctx context.Context) ([]Migration, error) {
	return migrateFS(ctx, s, migrations.FS)
}

func migrateFS(ctx context.Context, s *Store, fsys fs.FS) ([]Migration, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	defer conn.Release()
	m, err := migrate.NewMigrator(ctx, conn.Conn(), versionTable)
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	if err := m.LoadMigrations(fsys); err != nil {
		return nil, fmt.Errorf("migrate: load migrations: %w", err)
	}
	var applied []Migration
	m.OnStart = func(seq int32, name, direction, _ string) {
		applied = append(applied, Migration{Sequence: seq, Name: name})
	}
	if err := m.Migrate(ctx); err != nil {
		// The migration that failed was rolled back: it is not applied.
		if len(applied) > 0 {
			applied = applied[:len(applied)-1]
		}
		return applied, fmt.Errorf("migrate: %w", err)
	}
	return applied, nil
}

// SchemaVersion reports the sequence number of the newest applied
// migration and of the newest one this binary knows; 0 means none applied.
func (s *Store) SchemaVersion(ctx context.Context) (current, latest int32, err error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return 0, 0, err
	}
	defer conn.Release()
	m, err := migrate.NewMigrator(ctx, conn.Conn(), versionTable)
	if err != nil {
		return 0, 0, err
	}
	if err := m.LoadMigrations(migrations.FS); err != nil {
		return 0, 0, err
	}
	current, err = m.GetCurrentVersion(ctx)
	if err != nil {
		return 0, 0, err
	}
	return current, int32(len(m.Migrations)), nil
}
