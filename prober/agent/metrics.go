package agent

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cutoffnet/cutoff/prober"
	"github.com/cutoffnet/cutoff/prober/spool"
)

// metrics are the agent's Prometheus series. They are registered on the
// Registerer passed in, never on a global one.
type metrics struct {
	probes         *prometheus.CounterVec   // kind, outcome
	rtt            *prometheus.HistogramVec // kind
	verdicts       *prometheus.CounterVec   // state
	round          prometheus.Gauge
	lag            prometheus.Gauge
	inFlight       prometheus.Gauge
	ingested       *prometheus.CounterVec // table
	ingestErr      *prometheus.CounterVec // reason
	dbUp           prometheus.Gauge
	clock          prometheus.Gauge
	spoolFull      prometheus.Counter
	spooled        prometheus.Counter
	batchesDropped prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, sp *spool.Spool, icmp func() prober.ICMPStats) *metrics {
	m := &metrics{
		probes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cutoff_probes_total",
			Help: "Probes sent, by kind and outcome (answered: reply, refused, unreachable).",
		}, []string{"kind", "outcome"}),
		rtt: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cutoff_probe_rtt_seconds",
			Help:    "Round-trip time of answered probes.",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .2, .3, .5, 1, 2, 5},
		}, []string{"kind"}),
		verdicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cutoff_verdicts_total",
			Help: "Visit verdicts, by state.",
		}, []string{"state"}),
		round: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cutoff_round_duration_seconds",
			Help: "How long the last completed round took: from the first probe of its first visit to its last verdict (the configured round plus how long its last visit ran, or more when probing falls behind).",
		}),
		lag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cutoff_round_lag_seconds",
			Help: "How late the last regular visit started against its schedule.",
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cutoff_probes_in_flight",
			Help: "Probes sent and not yet answered or timed out.",
		}),
		ingested: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cutoff_ingested_rows_total",
			Help: "Rows the database took from this vantage (new rows only), by table.",
		}, []string{"table"}),
		ingestErr: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cutoff_ingest_errors_total",
			Help: "Failed attempts to write a spooled batch to the database, by reason: unreachable and refused (the server turned the statement down: permissions, read-only, timeouts) are retried; invalid counts batches whose bad rows were set aside in the rejected directory.",
		}, []string{"reason"}),
		dbUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cutoff_database_up",
			Help: "1 when the last write to the database succeeded.",
		}),
		clock: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cutoff_clock_offset_seconds",
			Help: "This vantage's clock minus the database's, last measured.",
		}),
		spoolFull: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cutoff_spool_full_total",
			Help: "Writes the spool refused because it was full (the batches stay in memory and are retried).",
		}),
		spooled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cutoff_results_spooled_total",
			Help: "Probe results written into the spool: from then on they survive the agent being killed (and a power cut once synced, every --flush).",
		}),
		batchesDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cutoff_batches_dropped_total",
			Help: "Batches of results dropped from memory, lost, because the spool stayed full until they passed the agent's memory bound.",
		}),
	}
	reg.MustRegister(m.probes, m.rtt, m.verdicts, m.round, m.lag, m.inFlight, m.ingested, m.ingestErr, m.dbUp, m.clock, m.spoolFull, m.spooled, m.batchesDropped)
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cutoff_spool_bytes", Help: "Bytes of spooled batches on disk."},
			func() float64 { return float64(sp.Bytes()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cutoff_spool_pending_batches", Help: "Spooled batches not yet in the database."},
			func() float64 { return float64(sp.Pending()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cutoff_spool_age_seconds", Help: "Age of the oldest spooled batch not yet in the database (0 when none)."},
			func() float64 { return sp.Age().Seconds() }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "cutoff_spool_corrupt_total", Help: "Damaged stretches of spool data found and skipped."},
			func() float64 { return float64(sp.Corrupt()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "cutoff_spool_batches_lost_total", Help: "Spooled batches lost to damaged spool data (cutoff_spool_corrupt_total counts the damage)."},
			func() float64 { return float64(sp.Lost()) }),
	)
	if icmp != nil {
		reg.MustRegister(newICMPCollector(icmp))
	}
	return m
}

// icmpCollector exports the ICMP engine's counters of rejected packets:
// forged, stale, duplicated or foreign replies never count as answers,
// but an operator should see them.
type icmpCollector struct {
	stats func() prober.ICMPStats
	desc  *prometheus.Desc
}

func newICMPCollector(stats func() prober.ICMPStats) *icmpCollector {
	return &icmpCollector{stats: stats, desc: prometheus.NewDesc("cutoff_icmp_rejected_total",
		"ICMP packets not accepted as answers, by reason.", []string{"reason"}, nil)}
}

func (c *icmpCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *icmpCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	for reason, v := range map[string]uint64{
		"malformed": s.Malformed, "foreign": s.Foreign, "wrong_id": s.WrongID,
		"forged": s.Forged, "stale": s.Stale, "duplicate": s.Duplicate,
	} {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(v), reason)
	}
}
