// Package migrations holds cutoff's schema as numbered SQL files, embedded
// into the binary so that `cutoff migrate` needs nothing on disk.
//
// Files are named NNN_what.sql and applied in order, each in its own
// transaction, by store.Migrate. An applied file is never edited: a change
// to the schema is a new file.
package migrations

import "embed"

// FS holds the migration files.
//
//go:embed *.sql
var FS embed.FS
