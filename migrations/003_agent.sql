-- What the agent stores besides raw results: each visit's verdict
-- (observations), and what a vantage reports about itself.

-- One row per block per visit verdict. A verdict on a pooled unit (several
-- sparse blocks judged together) is stored once for each of its blocks,
-- with the unit's key in `unit`, so the correlator works per block.
CREATE TABLE observations (
    vantage text NOT NULL,
    block   cidr NOT NULL,
    unit    cidr NOT NULL,                   -- the judged unit: the block itself or a pooled prefix
    at      timestamptz NOT NULL,            -- when the verdict was reached
    sent_at timestamptz NOT NULL,            -- when the visit's first probe left
    round   bigint NOT NULL DEFAULT 0,
    state   text NOT NULL CHECK (state IN ('up', 'down', 'uncertain', 'unmeasurable')),
    belief  real NOT NULL CHECK (belief BETWEEN 0 AND 1),
    probes  smallint NOT NULL DEFAULT 0,
    replies smallint NOT NULL DEFAULT 0,
    PRIMARY KEY (at, block, vantage)
) PARTITION BY RANGE (at);
COMMENT ON TABLE observations IS 'per-visit verdicts of the vantages'' schedulers, one row per block';
CREATE INDEX observations_block ON observations (block, at);

ALTER TABLE ingest_log ADD COLUMN tbl text NOT NULL DEFAULT 'probe_results'
    CHECK (tbl IN ('probe_results', 'observations'));

-- Partitions for both day-partitioned tables. Replaces the probe_results
-- only version of 001 (same signature, so callers need not change).
CREATE OR REPLACE FUNCTION cutoff_ensure_partitions(first timestamptz, last timestamptz)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    d       date;
    parent  text;
    created integer := 0;
    part    text;
BEGIN
    IF last < first THEN
        RETURN 0;
    END IF;
    IF last - first > interval '400 days' THEN
        RAISE EXCEPTION 'cutoff_ensure_partitions: span % to % is over 400 days', first, last;
    END IF;
    FOREACH parent IN ARRAY ARRAY['probe_results', 'observations'] LOOP
        FOR d IN SELECT generate_series((first AT TIME ZONE 'UTC')::date, (last AT TIME ZONE 'UTC')::date, interval '1 day')::date LOOP
            part := parent || '_' || to_char(d, 'YYYYMMDD');
            CONTINUE WHEN to_regclass(part) IS NOT NULL;
            BEGIN
                EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                    part, parent, d::timestamp AT TIME ZONE 'UTC', (d + 1)::timestamp AT TIME ZONE 'UTC');
                created := created + 1;
            EXCEPTION WHEN duplicate_table THEN
                NULL; -- a concurrent session made it first
            END;
        END LOOP;
    END LOOP;
    RETURN created;
END
$$;

-- cutoff_drop_partitions drops the daily partitions that end at or
-- before the given time, of one table or (parent NULL) of both: raw
-- results may be kept for less time than the verdicts the correlator
-- works from.
DROP FUNCTION cutoff_drop_partitions(timestamptz);
CREATE FUNCTION cutoff_drop_partitions(before timestamptz, parent text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    r       record;
    dropped integer := 0;
BEGIN
    IF parent IS NOT NULL AND parent NOT IN ('probe_results', 'observations') THEN
        RAISE EXCEPTION 'cutoff_drop_partitions: % is not a partitioned cutoff table', parent;
    END IF;
    FOR r IN
        SELECT c.relname
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent IN ('probe_results'::regclass, 'observations'::regclass)
          AND (parent IS NULL OR i.inhparent = parent::regclass)
          AND c.relname ~ '_[0-9]{8}$'
          AND (to_date(right(c.relname, 8), 'YYYYMMDD') + 1)::timestamp AT TIME ZONE 'UTC' <= before
        ORDER BY c.relname
    LOOP
        EXECUTE format('DROP TABLE %I', r.relname);
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END
$$;
REVOKE ALL ON FUNCTION cutoff_drop_partitions(timestamptz, text) FROM PUBLIC;

SELECT cutoff_ensure_partitions(now() - interval '1 day', now() + interval '7 days');

-- What a vantage says about itself. The correlator reads round_seconds and
-- timeout_seconds to know when a vantage's verdicts go stale.
ALTER TABLE vantages
    ADD COLUMN round_seconds    real,
    ADD COLUMN timeout_seconds  real,
    ADD COLUMN clock_offset_ms  real,          -- vantage clock minus database clock
    ADD COLUMN clock_checked_at timestamptz,
    ADD COLUMN spool_bytes      bigint NOT NULL DEFAULT 0,
    ADD COLUMN spool_records    bigint NOT NULL DEFAULT 0,
    ADD COLUMN spool_oldest     timestamptz,
    ADD COLUMN probes_sent      bigint NOT NULL DEFAULT 0,
    ADD COLUMN countries        text[] NOT NULL DEFAULT '{}',
    ADD COLUMN version          text NOT NULL DEFAULT '',
    ADD COLUMN hostname         text NOT NULL DEFAULT '';

-- cutoff_vantage_heartbeat registers a vantage or refreshes its row, and
-- returns the database's clock so the agent can measure its offset. A
-- prober may call it but cannot otherwise write the vantages table.
CREATE FUNCTION cutoff_vantage_heartbeat(
    v_name text, v_round real, v_timeout real, v_offset_ms real,
    v_spool_bytes bigint, v_spool_records bigint, v_spool_oldest timestamptz,
    v_probes_sent bigint, v_countries text[], v_version text, v_hostname text)
RETURNS timestamptz
LANGUAGE sql SECURITY DEFINER SET search_path FROM CURRENT AS $$
    INSERT INTO vantages AS v (name, round_seconds, timeout_seconds, clock_offset_ms, clock_checked_at,
        spool_bytes, spool_records, spool_oldest, probes_sent, countries, version, hostname)
    VALUES (v_name, v_round, v_timeout, v_offset_ms, CASE WHEN v_offset_ms IS NULL THEN NULL ELSE clock_timestamp() END,
        v_spool_bytes, v_spool_records, v_spool_oldest, v_probes_sent, v_countries, v_version, v_hostname)
    ON CONFLICT (name) DO UPDATE SET
        last_seen = now(),
        round_seconds = excluded.round_seconds,
        timeout_seconds = excluded.timeout_seconds,
        clock_offset_ms = coalesce(excluded.clock_offset_ms, v.clock_offset_ms),
        clock_checked_at = coalesce(excluded.clock_checked_at, v.clock_checked_at),
        spool_bytes = excluded.spool_bytes,
        spool_records = excluded.spool_records,
        spool_oldest = excluded.spool_oldest,
        probes_sent = excluded.probes_sent,
        countries = excluded.countries,
        version = excluded.version,
        hostname = excluded.hostname;
    SELECT clock_timestamp();
$$;

REVOKE ALL ON FUNCTION cutoff_vantage_heartbeat(text, real, real, real, bigint, bigint, timestamptz, bigint, text[], text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cutoff_vantage_heartbeat(text, real, real, real, bigint, bigint, timestamptz, bigint, text[], text, text) TO cutoff_prober;
GRANT INSERT ON observations TO cutoff_prober;
GRANT SELECT ON observations TO cutoff_reader;
