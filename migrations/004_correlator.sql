-- What the correlator keeps besides the interval tables of 001.

-- Vantage health: a vantage is unhealthy while its control targets go
-- unanswered or while it sees an implausible share of all its blocks go
-- down at once; its observations in that period are set aside.
CREATE TABLE vantage_health (
    vantage        text NOT NULL,
    during         tstzrange NOT NULL CHECK (NOT isempty(during)),
    state          text NOT NULL CHECK (state IN ('healthy', 'unhealthy', 'unknown')),
    reason         text NOT NULL DEFAULT '',
    start_earliest timestamptz,
    start_latest   timestamptz,
    end_earliest   timestamptz,
    end_latest     timestamptz,
    EXCLUDE USING gist (vantage WITH =, during WITH &&)
);

-- The correlator's position: ingest_log entries with xid below watermark
-- have been folded in, and so have those listed in seen (entries at or
-- above the watermark that were already visible: transactions commit out
-- of xid order, so that zone cannot be skipped wholesale); horizon is the
-- latest evidence seen.
CREATE TABLE correlator_state (
    id         boolean PRIMARY KEY DEFAULT true CHECK (id),
    watermark  xid8 NOT NULL DEFAULT '0',
    seen       bigint[] NOT NULL DEFAULT '{}',
    horizon    timestamptz,
    passes     bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO correlator_state DEFAULT VALUES;

-- A year of one country's history must answer in milliseconds: GiST on
-- (key, range) for overlap queries, and btree on the down intervals'
-- starts for the outage views, which filter on started_at.
CREATE INDEX country_intervals_during ON country_intervals USING gist (country, during);
CREATE INDEX country_outages_start ON country_intervals (country, lower(during)) WHERE state = 'down';
CREATE INDEX network_intervals_network ON network_intervals (network, lower(during));
CREATE INDEX network_outages_start ON network_intervals (country, lower(during)) WHERE state = 'down';

CREATE OR REPLACE VIEW network_outages AS
SELECT n.network,
       n.country,
       p.asn,
       lower(n.during)                                          AS started_at,
       CASE WHEN upper_inf(n.during) THEN NULL ELSE upper(n.during) END AS ended_at,
       CASE WHEN upper_inf(n.during) THEN now() ELSE upper(n.during) END - lower(n.during) AS duration,
       upper_inf(n.during)                                      AS ongoing,
       n.blocks_total,
       n.blocks_down,
       n.vantages,
       n.start_earliest,
       n.start_latest,
       n.end_earliest,
       n.end_latest
FROM network_intervals n
LEFT JOIN prefixes p ON p.prefix = n.network
WHERE n.state = 'down';

GRANT SELECT ON vantage_health, correlator_state, network_outages TO cutoff_reader;
