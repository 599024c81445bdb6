// Package store is cutoff's center: it owns the PostgreSQL schema and every
// read and write of it. Probe results enter through Ingest; the plan that
// vantage points follow (countries, blocks, targets) leaves through the
// query helpers; the correlator and reports live in sub-packages.
package store

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Store is a pool of connections to cutoff's database.
type Store struct {
	pool  *pgxpool.Pool
	parts partitions
}

// ResolveURL picks the database to use: the explicit url when given, else
// $DATABASE_URL, else "" which lets pgx read libpq's PG* variables
// (PGHOST, PGUSER, PGDATABASE, ...). Keyword/value strings such as
// "host=/run/postgresql dbname=cutoff" reach the server over a unix socket.
func ResolveURL(url string) string {
	if url != "" {
		return url
	}
	return os.Getenv("DATABASE_URL")
}

// Open connects to the database. It fails fast when the server cannot be
// reached, so a command reports a wrong URL at once.
func Open(ctx context.Context, url string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(ResolveURL(url))
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", describe(cfg.ConnConfig), err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect %s: %w", describe(cfg.ConnConfig), err)
	}
	return &Store{pool: pool}, nil
}

// Dial makes a pool without waiting for the server: connections are made
// when first needed. A prober starts this way so that it can go on
// probing (into its spool) while the database is away.
func Dial(ctx context.Context, url string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(ResolveURL(url))
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", describe(cfg.ConnConfig), err)
	}
	return &Store{pool: pool}, nil
}

// describe names a connection target without its password.
func describe(c *pgx.ConnConfig) string {
	return fmt.Sprintf("database %q on %s:%d as %q", c.Database, c.Host, c.Port, c.User)
}

// Close releases every connection.
func (s *Store) Close() { s.pool.Close() }

// Pool gives sub-packages and tests direct access to the connections.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// ServerVersion reports the server's version number (e.g. 150018).
func (s *Store) ServerVersion(ctx context.Context) (int, error) {
	var v int
	err := s.pool.QueryRow(ctx, "SHOW server_version_num").Scan(&v)
	return v, err
}

// IsConnError reports whether err means the database could not be reached
// or the connection broke, as opposed to the server refusing a statement.
// A refused statement is not necessarily final either (a permission not
// yet granted, a standby after a failover, a statement timeout): writers
// that must not lose data give up only on ErrInvalid, and use this to
// say why they wait.
func IsConnError(err error) bool {
	if err == nil || errors.Is(err, ErrInvalid) {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// Class 08 is connection exceptions; 57P0x is the server shutting
		// down or not yet accepting connections; 53 is insufficient
		// resources (too many connections, disk full).
		switch {
		case len(pgErr.Code) == 5 && pgErr.Code[:2] == "08",
			pgErr.Code == "57P01", pgErr.Code == "57P02", pgErr.Code == "57P03",
			len(pgErr.Code) == 5 && pgErr.Code[:2] == "53":
			return true
		}
		return false
	}
	if errors.Is(err, context.Canceled) {
		return false
	}
	return true
}

// SQLState is the SQLSTATE of the server error in err's chain, or "" when
// the error did not come from the server.
func SQLState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}
