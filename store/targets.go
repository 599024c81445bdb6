package store

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrInvalid marks errors caused by the caller's input (a bad country
// code, a target outside the country, a prefix another source owns), as
// opposed to the database failing.
var ErrInvalid = errors.New("invalid input")

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

var countryCode = regexp.MustCompile(`^[A-Z]{2}$`)

// CheckCountry validates an ISO 3166 alpha-2 (or user-assigned) code.
func CheckCountry(cc string) error {
	if !countryCode.MatchString(cc) {
		return invalidf("country %q is not a two-letter code such as KP", cc)
	}
	return nil
}

// Prefix is one network to import.
type Prefix struct {
	Prefix    netip.Prefix
	Registry  string
	Status    string
	Delegated time.Time // zero when unknown
	ASN       uint32    // 0 when unknown
}

// Import replaces one source's networks of a country.
type Import struct {
	Country string
	Name    string // country name; kept as is when empty
	Source  string // label; re-importing a source replaces its rows
	Origin  string // file path or URL
	// Prefixes must not overlap each other (rir.CheckOverlap).
	Prefixes []Prefix
}

// ImportStats says what an import changed.
type ImportStats struct {
	Prefixes, Added, Removed, Kept int
	Blocks                         int64 // the country's blocks after the import
}

// ImportPrefixes replaces, for each import, the country's prefixes from
// imp.Source with imp.Prefixes, all in one transaction: prefixes no longer
// listed are removed (with their blocks and targets), new ones are added
// with the /24 blocks they cover, and prefixes that stay keep their blocks
// and census data. A prefix that overlaps one from another source or
// country is refused, and then nothing changes.
func (s *Store) ImportPrefixes(ctx context.Context, imps ...Import) ([]ImportStats, error) {
	for _, imp := range imps {
		if err := CheckCountry(imp.Country); err != nil {
			return nil, err
		}
		if imp.Source == "" {
			return nil, invalidf("import needs a source label")
		}
	}
	stats := make([]ImportStats, len(imps))
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		for i, imp := range imps {
			if err := importOne(ctx, tx, imp, &stats[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrInvalid) {
			return nil, err
		}
		return nil, fmt.Errorf("import: %w", err)
	}
	return stats, nil
}

func importOne(ctx context.Context, tx pgx.Tx, imp Import, st *ImportStats) error {
	// One import at a time: the overlap check below must see every
	// other import's outcome.
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('cutoff import'))`); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO countries (code, name) VALUES ($1, $2)
		ON CONFLICT (code) DO UPDATE SET name = CASE WHEN excluded.name = '' THEN countries.name ELSE excluded.name END`,
		imp.Country, imp.Name); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `CREATE TEMP TABLE IF NOT EXISTS import_prefixes (
		prefix cidr PRIMARY KEY, registry text, status text, delegated date, asn bigint) ON COMMIT DROP`); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `TRUNCATE import_prefixes`); err != nil {
		return err
	}
	rows := make([][]any, len(imp.Prefixes))
	for i, p := range imp.Prefixes {
		var d, asn any
		if !p.Delegated.IsZero() {
			d = p.Delegated
		}
		if p.ASN != 0 {
			asn = int64(p.ASN)
		}
		rows[i] = []any{p.Prefix, p.Registry, p.Status, d, asn}
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"import_prefixes"},
		[]string{"prefix", "registry", "status", "delegated", "asn"}, pgx.CopyFromRows(rows)); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "23505" {
			return invalidf("a prefix is listed twice: %s", pgErr.Detail)
		}
		return fmt.Errorf("copy prefixes: %w", err)
	}
	var conflicts []string
	crow, err := tx.Query(ctx, `SELECT n.prefix::text, p.prefix::text, p.country, p.source
		FROM import_prefixes n JOIN prefixes p ON p.prefix && n.prefix
		WHERE NOT (p.country = $1 AND p.source = $2)
		ORDER BY n.prefix LIMIT 5`, imp.Country, imp.Source)
	if err != nil {
		return err
	}
	for crow.Next() {
		var np, op, oc, os string
		if err := crow.Scan(&np, &op, &oc, &os); err != nil {
			return err
		}
		conflicts = append(conflicts, fmt.Sprintf("%s overlaps %s of %s from source %q", np, op, oc, os))
	}
	if err := crow.Err(); err != nil {
		return err
	}
	if len(conflicts) > 0 {
		return invalidf("%s (remove that source first, or import under its label with --source)", strings.Join(conflicts, "; "))
	}
	tag, err := tx.Exec(ctx, `DELETE FROM prefixes p WHERE country = $1 AND source = $2
		AND NOT EXISTS (SELECT 1 FROM import_prefixes n WHERE n.prefix = p.prefix)`, imp.Country, imp.Source)
	if err != nil {
		return err
	}
	st.Removed = int(tag.RowsAffected())
	err = tx.QueryRow(ctx, `SELECT count(*) FROM prefixes p JOIN import_prefixes n USING (prefix)`).Scan(&st.Kept)
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO prefixes (prefix, country, registry, source, origin, status, delegated, asn)
		SELECT prefix, $1, registry, $2, $3, status, delegated, asn FROM import_prefixes
		ON CONFLICT (prefix) DO UPDATE SET registry = excluded.registry, origin = excluded.origin,
			status = excluded.status, delegated = excluded.delegated, asn = excluded.asn, imported_at = now()`,
		imp.Country, imp.Source, imp.Origin); err != nil {
		return err
	}
	st.Prefixes = len(imp.Prefixes)
	st.Added = st.Prefixes - st.Kept
	// The /24s each IPv4 prefix covers, or the prefix itself when it
	// is longer than a /24.
	if _, err := tx.Exec(ctx, `INSERT INTO blocks (block, country, prefix)
		SELECT CASE WHEN masklen(n.prefix) >= 24 THEN n.prefix
		            ELSE set_masklen(network(n.prefix) + g.i * 256, 24)::cidr END, $1, n.prefix
		FROM import_prefixes n
		CROSS JOIN LATERAL generate_series(0::bigint,
			CASE WHEN masklen(n.prefix) >= 24 THEN 0 ELSE (1::bigint << (24 - masklen(n.prefix))) - 1 END) AS g(i)
		WHERE family(n.prefix) = 4
		ON CONFLICT (block) DO NOTHING`, imp.Country); err != nil {
		return fmt.Errorf("blocks: %w", err)
	}
	return tx.QueryRow(ctx, `SELECT count(*) FROM blocks WHERE country = $1`, imp.Country).Scan(&st.Blocks)
}

// Target is something a vantage probes.
type Target struct {
	ID      int64
	Kind    string // icmp, tcp or dns
	Addr    netip.Addr
	Port    uint16 // tcp and dns; 0 for icmp
	Qname   string // dns: the zone whose SOA is asked for
	Country string // "" for control targets
	Block   netip.Prefix
	Control bool
	Enabled bool
	Origin  string // manual or census
}

// normalize fills in defaults: DNS port 53 and a fully qualified zone.
func (t *Target) normalize() error {
	switch t.Kind {
	case "icmp", "tcp":
	case "dns":
		if t.Port == 0 {
			t.Port = 53
		}
		if t.Qname != "" && !strings.HasSuffix(t.Qname, ".") {
			t.Qname += "."
		}
	default:
		return invalidf("kind %q is not icmp, tcp or dns", t.Kind)
	}
	if !t.Addr.IsValid() {
		return invalidf("target needs an address")
	}
	t.Addr = t.Addr.Unmap()
	return nil
}

// Validate fills in defaults and checks a target before it is stored.
func (t *Target) Validate() error {
	if err := t.normalize(); err != nil {
		return err
	}
	switch {
	case t.Kind == "icmp" && (t.Port != 0 || t.Qname != ""):
		return invalidf("icmp targets take no port and no zone")
	case t.Kind == "tcp" && t.Port == 0:
		return invalidf("tcp targets need a port")
	case t.Kind == "tcp" && t.Qname != "":
		return invalidf("tcp targets take no zone")
	case t.Kind == "dns" && t.Qname == "":
		return invalidf("dns targets need a zone")
	case t.Control != (t.Country == ""):
		return invalidf("a target is either a control target or in a country, not both or neither")
	case !t.Control:
		return CheckCountry(t.Country)
	}
	return nil
}

// AddTarget stores a manual or control target and returns its id. Adding
// one that exists enables it again. A country target's address must lie in
// the country's imported address space; a control target's must not lie
// in any watched country.
func (s *Store) AddTarget(ctx context.Context, t Target) (int64, error) {
	if err := t.Validate(); err != nil {
		return 0, err
	}
	var block, prefixCountry *string
	err := s.pool.QueryRow(ctx, `SELECT (SELECT block::text FROM blocks WHERE block >>= $1),
		(SELECT country FROM prefixes WHERE prefix >>= $1)`, t.Addr).Scan(&block, &prefixCountry)
	if err != nil {
		return 0, fmt.Errorf("add target: %w", err)
	}
	var country any
	switch {
	case t.Control && prefixCountry != nil:
		return 0, invalidf("%s is in %s's address space; a control target must lie outside every watched country", t.Addr, *prefixCountry)
	case !t.Control && (prefixCountry == nil || *prefixCountry != t.Country):
		return 0, invalidf("%s is not in %s's imported address space (import its prefixes first: cutoff targets import)", t.Addr, t.Country)
	case !t.Control:
		country = t.Country
	}
	var id int64
	err = s.pool.QueryRow(ctx, `INSERT INTO targets (kind, addr, port, qname, block, country, control, origin)
		VALUES ($1, $2, $3, $4, $5::cidr, $6, $7, 'manual')
		ON CONFLICT (kind, addr, port, qname) DO UPDATE SET enabled = true
		RETURNING id`, t.Kind, t.Addr, int32(t.Port), t.Qname, block, country, t.Control).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("add target: %w", err)
	}
	return id, nil
}

// RemoveTarget deletes the target with t's kind, address, port and zone.
func (s *Store) RemoveTarget(ctx context.Context, t Target) error {
	if err := t.normalize(); err != nil {
		return err
	}
	tag, err := s.pool.Exec(ctx, `DELETE FROM targets WHERE kind = $1 AND addr = $2 AND port = $3 AND qname = $4`,
		t.Kind, t.Addr, int32(t.Port), t.Qname)
	if err != nil {
		return fmt.Errorf("remove target: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return invalidf("no %s target %s port %d %s", t.Kind, t.Addr, t.Port, t.Qname)
	}
	return nil
}

// CountrySummary describes one watched country.
type CountrySummary struct {
	Code, Name             string
	Prefixes, Prefixes6    int
	Blocks, BlocksCensused int
	Targets                map[string]int // by kind
}

// Countries summarises every watched country, or just the given ones.
func (s *Store) Countries(ctx context.Context, codes ...string) ([]CountrySummary, error) {
	if codes == nil {
		codes = []string{} // NULL would match nothing
	}
	rows, err := s.pool.Query(ctx, `SELECT c.code, c.name,
			(SELECT count(*) FROM prefixes p WHERE p.country = c.code AND family(p.prefix) = 4),
			(SELECT count(*) FROM prefixes p WHERE p.country = c.code AND family(p.prefix) = 6),
			(SELECT count(*) FROM blocks b WHERE b.country = c.code),
			(SELECT count(*) FROM blocks b WHERE b.country = c.code AND b.census_rounds > 0),
			(SELECT count(*) FROM targets t WHERE t.country = c.code AND t.kind = 'icmp' AND t.enabled),
			(SELECT count(*) FROM targets t WHERE t.country = c.code AND t.kind = 'tcp' AND t.enabled),
			(SELECT count(*) FROM targets t WHERE t.country = c.code AND t.kind = 'dns' AND t.enabled)
		FROM countries c WHERE cardinality($1::text[]) = 0 OR c.code = ANY($1) ORDER BY c.code`, codes)
	if err != nil {
		return nil, fmt.Errorf("list countries: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (CountrySummary, error) {
		var c CountrySummary
		var icmp, tcp, dns int
		err := r.Scan(&c.Code, &c.Name, &c.Prefixes, &c.Prefixes6, &c.Blocks, &c.BlocksCensused, &icmp, &tcp, &dns)
		c.Targets = map[string]int{"icmp": icmp, "tcp": tcp, "dns": dns}
		return c, err
	})
}

// PrefixSummary describes one network of a country.
type PrefixSummary struct {
	Prefix                 netip.Prefix
	Registry, Source       string
	ASN                    uint32
	Blocks, BlocksCensused int
	Targets                int
}

// Prefixes lists a country's networks.
func (s *Store) Prefixes(ctx context.Context, country string) ([]PrefixSummary, error) {
	rows, err := s.pool.Query(ctx, `SELECT p.prefix, p.registry, p.source, coalesce(p.asn, 0),
			(SELECT count(*) FROM blocks b WHERE b.prefix = p.prefix),
			(SELECT count(*) FROM blocks b WHERE b.prefix = p.prefix AND b.census_rounds > 0),
			(SELECT count(*) FROM targets t WHERE t.addr << p.prefix AND t.enabled)
		FROM prefixes p WHERE p.country = $1 ORDER BY family(p.prefix), p.prefix`, country)
	if err != nil {
		return nil, fmt.Errorf("list prefixes: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (PrefixSummary, error) {
		var p PrefixSummary
		var asn int64
		err := r.Scan(&p.Prefix, &p.Registry, &p.Source, &asn, &p.Blocks, &p.BlocksCensused, &p.Targets)
		p.ASN = uint32(asn)
		return p, err
	})
}

// Targets lists manual and control targets (census targets are counted,
// not listed: there may be millions). An empty country lists control
// targets.
func (s *Store) Targets(ctx context.Context, country string) ([]Target, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, kind, addr, port, qname, coalesce(country, ''),
			coalesce(block::text, ''), control, enabled, origin
		FROM targets WHERE origin = 'manual' AND (($1 = '' AND control) OR country = $1)
		ORDER BY kind, addr, port`, country)
	if err != nil {
		return nil, fmt.Errorf("list targets: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Target, error) {
		var t Target
		var port int32
		var block string
		err := r.Scan(&t.ID, &t.Kind, &t.Addr, &port, &t.Qname, &t.Country, &block, &t.Control, &t.Enabled, &t.Origin)
		t.Port = uint16(port)
		if block != "" {
			t.Block, _ = netip.ParsePrefix(block)
		}
		return t, err
	})
}
