package store

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// CensusBlocks lists the IPv4 blocks of a watched country in address
// order: what a census probes.
func (s *Store) CensusBlocks(ctx context.Context, country string) ([]netip.Prefix, error) {
	if err := CheckCountry(country); err != nil {
		return nil, err
	}
	var watched bool
	if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM countries WHERE code = $1)`, country).Scan(&watched); err != nil {
		return nil, fmt.Errorf("census blocks: %w", err)
	}
	if !watched {
		return nil, invalidf("%s is not watched: import its address space first (cutoff targets import --country %s ...)", country, country)
	}
	rows, err := s.pool.Query(ctx, `SELECT block FROM blocks WHERE country = $1 ORDER BY block`, country)
	if err != nil {
		return nil, fmt.Errorf("census blocks: %w", err)
	}
	bs, err := pgx.CollectRows(rows, pgx.RowTo[netip.Prefix])
	if err != nil {
		return nil, fmt.Errorf("census blocks: %w", err)
	}
	if len(bs) == 0 {
		return nil, invalidf("%s has no IPv4 blocks to census", country)
	}
	return bs, nil
}

// Census is what one census run saw.
type Census struct {
	Country string
	// Started is when the run began; an address that answered during it
	// is the scheduler's first choice until it fails to answer.
	Started time.Time
	// Rounds is how many times every address of Blocks was probed.
	Rounds int
	// Ports are the TCP ports probed on every address (ICMP always is).
	Ports []uint16
	// Blocks were probed in full.
	Blocks []netip.Prefix
	// Hosts are the targets that answered at least once.
	Hosts []CensusHost
}

// CensusHost is an address (and, for TCP, port) that answered.
type CensusHost struct {
	Kind      string // icmp or tcp
	Addr      netip.Addr
	Port      uint16 // tcp
	Replies   int    // of Census.Rounds probes
	LastReply time.Time
}

// CensusStats says what SaveCensus changed.
type CensusStats struct {
	Blocks     int // blocks censused
	Responsive int // of them, blocks where something answered
	New        int // targets found for the first time
	Updated    int // known targets whose history grew
}

// SaveCensus stores a census run, all in one transaction: every known
// target of a censused block that the run probed (its ICMP address, or
// TCP address and a probed port) has Rounds added to its probes and its
// replies to its replies; addresses that answered for the first time
// become census targets; and each censused block gets E(b) (the number of
// its addresses that ever answered) and A(b) (the share of probes to its
// ever-responsive ICMP addresses that were answered) recomputed from the
// whole history, so each run refines the last.
func (s *Store) SaveCensus(ctx context.Context, c Census) (CensusStats, error) {
	var st CensusStats
	if err := checkCensus(&c); err != nil {
		return st, err
	}
	ports := make([]int32, len(c.Ports))
	for i, p := range c.Ports {
		ports[i] = int32(p)
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `CREATE TEMP TABLE census_blocks (block cidr PRIMARY KEY) ON COMMIT DROP`); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TEMP TABLE census_hosts (kind text, addr inet, port integer,
			replies integer, last_reply timestamptz, PRIMARY KEY (kind, addr, port)) ON COMMIT DROP`); err != nil {
			return err
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"census_blocks"}, []string{"block"},
			pgx.CopyFromSlice(len(c.Blocks), func(i int) ([]any, error) { return []any{c.Blocks[i]}, nil })); err != nil {
			return fmt.Errorf("copy blocks: %w", err)
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"census_hosts"}, []string{"kind", "addr", "port", "replies", "last_reply"},
			pgx.CopyFromSlice(len(c.Hosts), func(i int) ([]any, error) {
				h := c.Hosts[i]
				var last any
				if !h.LastReply.IsZero() {
					last = h.LastReply
				}
				return []any{h.Kind, h.Addr, int32(h.Port), int32(h.Replies), last}, nil
			})); err != nil {
			return fmt.Errorf("copy hosts: %w", err)
		}
		var foreign []string
		rows, err := tx.Query(ctx, `SELECT cb.block::text FROM census_blocks cb
			LEFT JOIN blocks b ON b.block = cb.block AND b.country = $1
			WHERE b.block IS NULL ORDER BY cb.block LIMIT 5`, c.Country)
		if err != nil {
			return err
		}
		if foreign, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return err
		}
		if len(foreign) > 0 {
			return invalidf("census blocks %v are not blocks of %s", foreign, c.Country)
		}

		// History of the targets already known in the censused blocks.
		// Every probed target's probes grow, answered or not.
		if _, err := tx.Exec(ctx, `UPDATE targets t SET probes = t.probes + $1
			FROM census_blocks cb
			WHERE t.block = cb.block AND t.qname = ''
			  AND (t.kind = 'icmp' OR (t.kind = 'tcp' AND t.port = ANY($2)))`, c.Rounds, ports); err != nil {
			return fmt.Errorf("update probes: %w", err)
		}
		tag, err := tx.Exec(ctx, `UPDATE targets t SET replies = t.replies + h.replies,
				last_reply = greatest(t.last_reply, h.last_reply)
			FROM census_hosts h
			WHERE t.kind = h.kind AND t.addr = h.addr AND t.port = h.port AND t.qname = ''`)
		if err != nil {
			return fmt.Errorf("update replies: %w", err)
		}
		st.Updated = int(tag.RowsAffected())
		tag, err = tx.Exec(ctx, `INSERT INTO targets (kind, addr, port, block, country, origin, probes, replies, last_reply)
			SELECT h.kind, h.addr, h.port, b.block, $1, 'census', $2, h.replies, h.last_reply
			FROM census_hosts h JOIN blocks b ON b.block >>= h.addr AND b.country = $1
			ON CONFLICT (kind, addr, port, qname) DO NOTHING`, c.Country, c.Rounds)
		if err != nil {
			return fmt.Errorf("insert targets: %w", err)
		}
		st.New = int(tag.RowsAffected())

		tag, err = tx.Exec(ctx, `UPDATE blocks b SET census_rounds = b.census_rounds + $1, censused_at = $2,
				ever_responsive = (SELECT count(DISTINCT t.addr) FROM targets t
					WHERE t.block = b.block AND t.replies > 0),
				availability = (SELECT CASE WHEN sum(t.probes) > 0
						THEN least(1, sum(t.replies)::real / sum(t.probes)) END FROM targets t
					WHERE t.block = b.block AND t.kind = 'icmp' AND t.replies > 0)
			FROM census_blocks cb WHERE b.block = cb.block`, c.Rounds, c.Started)
		if err != nil {
			return fmt.Errorf("update blocks: %w", err)
		}
		st.Blocks = int(tag.RowsAffected())
		return tx.QueryRow(ctx, `SELECT count(*) FROM blocks b JOIN census_blocks cb USING (block)
			WHERE b.ever_responsive > 0`).Scan(&st.Responsive)
	})
	if errors.Is(err, ErrInvalid) {
		return CensusStats{}, err
	}
	if err != nil {
		return CensusStats{}, fmt.Errorf("save census: %w", err)
	}
	return st, nil
}

// checkCensus rejects a census that cannot be right before anything is
// written: every host must lie in a censused block, have answered no
// more often than it was probed, and be of a probed kind and port.
func checkCensus(c *Census) error {
	if err := CheckCountry(c.Country); err != nil {
		return err
	}
	switch {
	case c.Rounds < 1:
		return invalidf("census of %s: %d rounds", c.Country, c.Rounds)
	case c.Started.IsZero():
		return invalidf("census of %s: no start time", c.Country)
	case len(c.Blocks) == 0:
		return invalidf("census of %s: no blocks", c.Country)
	}
	blocks := slices.Clone(c.Blocks)
	slices.SortFunc(blocks, func(x, y netip.Prefix) int { return x.Addr().Compare(y.Addr()) })
	for i, b := range blocks {
		if !b.Addr().Is4() || b.Bits() < 24 || b != b.Masked() {
			return invalidf("census block %s is not an IPv4 /24 or longer", b)
		}
		if i > 0 && blocks[i-1].Overlaps(b) {
			return invalidf("census blocks %s and %s overlap", blocks[i-1], b)
		}
	}
	for _, h := range c.Hosts {
		i, _ := slices.BinarySearchFunc(blocks, h.Addr, func(b netip.Prefix, a netip.Addr) int {
			if b.Contains(a) {
				return 0
			}
			return b.Addr().Compare(a)
		})
		switch {
		case i >= len(blocks) || !blocks[i].Contains(h.Addr):
			return invalidf("census host %s is in no censused block", h.Addr)
		case h.Replies < 1 || h.Replies > c.Rounds:
			return invalidf("census host %s: %d replies in %d rounds", h.Addr, h.Replies, c.Rounds)
		case h.Kind == "icmp" && h.Port != 0:
			return invalidf("census host %s: icmp takes no port", h.Addr)
		case h.Kind == "tcp" && !slices.Contains(c.Ports, h.Port):
			return invalidf("census host %s: port %d was not probed", h.Addr, h.Port)
		case h.Kind != "icmp" && h.Kind != "tcp":
			return invalidf("census host %s: kind %q is not icmp or tcp", h.Addr, h.Kind)
		}
	}
	return nil
}
