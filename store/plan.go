package store

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/jackc/pgx/v5"
)

// Plan is what a vantage probes, as the scheduler (prober/sched) needs it:
// the censused blocks with their ever-responsive addresses E(b),
// availability A(b) and per-address history; the TCP and DNS targets that
// are evidence for their block; and the control targets outside every
// watched country.
type Plan struct {
	// Blocks are sorted by network, then block. Only blocks with at least
	// one enabled target are listed: a block where nothing ever answered
	// cannot be judged.
	Blocks []PlanBlock
	// Services are the enabled TCP and DNS targets of the blocks, sorted
	// by block.
	Services []PlanTarget
	// Controls are the enabled control targets.
	Controls []PlanTarget
	// Skipped counts enabled targets left out: IPv6 ones (the scheduler
	// judges IPv4 blocks).
	Skipped int
}

// PlanBlock is one block to judge.
type PlanBlock struct {
	Block   netip.Prefix
	Network netip.Prefix // the imported prefix the block belongs to
	Country string
	// Availability is A(b): the share of probes to E(b)'s ICMP addresses
	// that the census saw answered. 0 when unknown.
	Availability float64
	CensusRounds int
	CensusedAt   time.Time // zero if never censused
	// Hosts are E(b): the block's enabled ICMP targets, in address order.
	Hosts []PlanHost
}

// PlanHost is one ever-responsive address and its census history.
type PlanHost struct {
	Addr            netip.Addr
	Probes, Replies int32
	// Answered: it answered during the block's latest census run.
	Answered bool
}

// PlanTarget is a service or control target and its history.
type PlanTarget struct {
	Kind    string // icmp, tcp or dns
	Addr    netip.Addr
	Port    uint16
	Qname   string
	Block   netip.Prefix // zero for control targets
	Country string       // "" for control targets
	Origin  string       // manual or census
	// Probes, Replies and Answered are the target's census history.
	Probes, Replies int32
	Answered        bool
}

// LoadPlan reads the plan for the given countries (all watched countries
// when none are given). It reads with one snapshot, so blocks and targets
// agree.
func (s *Store) LoadPlan(ctx context.Context, countries ...string) (*Plan, error) {
	for _, c := range countries {
		if err := CheckCountry(c); err != nil {
			return nil, err
		}
	}
	if countries == nil {
		countries = []string{}
	}
	p := &Plan{}
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		return loadPlan(ctx, tx, countries, p)
	})
	if err != nil {
		return nil, fmt.Errorf("load plan: %w", err)
	}
	return p, nil
}

func loadPlan(ctx context.Context, tx pgx.Tx, countries []string, p *Plan) error {
	rows, err := tx.Query(ctx, `SELECT b.block, b.prefix, b.country, coalesce(b.availability, 0),
			b.census_rounds, b.censused_at
		FROM blocks b
		WHERE (cardinality($1::text[]) = 0 OR b.country = ANY($1))
		  AND EXISTS (SELECT 1 FROM targets t WHERE t.block = b.block AND t.enabled)
		ORDER BY b.prefix, b.block`, countries)
	if err != nil {
		return err
	}
	index := map[netip.Prefix]int{}
	for rows.Next() {
		var b PlanBlock
		var at *time.Time
		var avail float32
		var rounds int32
		if err := rows.Scan(&b.Block, &b.Network, &b.Country, &avail, &rounds, &at); err != nil {
			return err
		}
		b.Availability, b.CensusRounds = float64(avail), int(rounds)
		if at != nil {
			b.CensusedAt = *at
		}
		index[b.Block] = len(p.Blocks)
		p.Blocks = append(p.Blocks, b)
	}
	if err := rows.Err(); err != nil {
		return err
	}

	rows, err = tx.Query(ctx, `SELECT t.kind, t.addr, t.port, t.qname, t.block, t.country, t.origin,
			t.probes, t.replies, coalesce(t.last_reply >= b.censused_at, false)
		FROM targets t JOIN blocks b ON b.block = t.block
		WHERE t.enabled AND NOT t.control
		  AND (cardinality($1::text[]) = 0 OR t.country = ANY($1))
		ORDER BY t.block, t.kind, t.addr, t.port, t.qname`, countries)
	if err != nil {
		return err
	}
	for rows.Next() {
		var t PlanTarget
		var port int32
		if err := rows.Scan(&t.Kind, &t.Addr, &port, &t.Qname, &t.Block, &t.Country, &t.Origin,
			&t.Probes, &t.Replies, &t.Answered); err != nil {
			return err
		}
		t.Port = uint16(port)
		i, ok := index[t.Block]
		if !ok {
			continue // cannot happen within one snapshot
		}
		if t.Kind == "icmp" {
			b := &p.Blocks[i]
			b.Hosts = append(b.Hosts, PlanHost{Addr: t.Addr, Probes: t.Probes, Replies: t.Replies, Answered: t.Answered})
			continue
		}
		p.Services = append(p.Services, t)
	}
	if err := rows.Err(); err != nil {
		return err
	}

	err = tx.QueryRow(ctx, `SELECT count(*) FROM targets
		WHERE enabled AND NOT control AND family(addr) = 6
		  AND (cardinality($1::text[]) = 0 OR country = ANY($1))`, countries).Scan(&p.Skipped)
	if err != nil {
		return err
	}

	rows, err = tx.Query(ctx, `SELECT kind, addr, port, qname, origin, probes, replies
		FROM targets WHERE enabled AND control ORDER BY kind, addr, port, qname`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var t PlanTarget
		var port int32
		if err := rows.Scan(&t.Kind, &t.Addr, &port, &t.Qname, &t.Origin, &t.Probes, &t.Replies); err != nil {
			return err
		}
		t.Port = uint16(port)
		p.Controls = append(p.Controls, t)
	}
	return rows.Err()
}
