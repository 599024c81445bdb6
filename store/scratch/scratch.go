// Package scratch provides a throwaway, migrated cutoff database for
// benchmarks: a fresh database on a server the caller names, or, when none
// is named, on a throwaway cluster (store/pgtemp) started for the purpose.
// Either way the caller gets a connection string; Close removes the
// database (and stops the cluster), so nothing synthetic is left in a real
// database.
package scratch

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cutoffnet/cutoff/store"
	"github.com/cutoffnet/cutoff/store/pgtemp"
)

// Options tune New. The zero value starts a throwaway cluster with fsync
// off.
type Options struct {
	// Durable keeps fsync on in a throwaway cluster (a named server keeps
	// its own settings).
	Durable bool
	Log     *slog.Logger
}

// DB is a scratch database.
type DB struct {
	// URL connects to it.
	URL string
	// Cluster is the throwaway cluster holding it, nil on a named server.
	Cluster *pgtemp.Cluster

	admin, name string
}

// New creates a scratch database on server (a connection string whose
// role may create databases), or on a new throwaway cluster when server
// is "", and migrates it.
func New(ctx context.Context, server string, opts Options) (*DB, error) {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &DB{}
	if server == "" {
		c, err := pgtemp.Start(ctx, pgtemp.Options{Durable: opts.Durable, Log: log})
		if err != nil {
			return nil, fmt.Errorf("throwaway cluster: %w", err)
		}
		d.Cluster, d.admin = c, c.URL("postgres")
	} else {
		d.admin = server
	}
	var b [6]byte
	rand.Read(b[:])
	d.name = "cutoff_bench_" + hex.EncodeToString(b[:])
	conn, err := pgx.Connect(ctx, d.admin)
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("connect: %w", err)
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{d.name}.Sanitize())
	conn.Close(ctx)
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("create scratch database: %w", err)
	}
	d.URL = store.WithDatabase(d.admin, d.name)
	log.Info("scratch database", "name", d.name, "throwaway_cluster", d.Cluster != nil)
	st, err := store.Open(ctx, d.URL)
	if err != nil {
		d.Close()
		return nil, err
	}
	defer st.Close()
	if _, err := st.Migrate(ctx); err != nil {
		d.Close()
		return nil, fmt.Errorf("migrate scratch database: %w", err)
	}
	return d, nil
}

// Close drops the database and stops the throwaway cluster.
func (d *DB) Close() error {
	var errs []error
	if d.URL != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, d.admin)
		if err == nil {
			_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{d.name}.Sanitize()+" WITH (FORCE)")
			conn.Close(ctx)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("drop scratch database %s: %w", d.name, err))
		}
		d.URL = ""
	}
	if d.Cluster != nil {
		errs = append(errs, d.Cluster.Stop())
		d.Cluster = nil
	}
	return errors.Join(errs...)
}
