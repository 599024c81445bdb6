-- cutoff's base schema: what is watched (countries, prefixes, blocks,
-- targets), who watches (vantages), what they saw (probe_results) and what
-- the correlator derives from it (*_intervals). Column names here are a
-- contract: users query them directly.

-- btree_gist lets one exclusion constraint combine "same key" (btree
-- equality on text) with "overlapping range" (GiST), so the database itself
-- guarantees that the intervals of one country never overlap. It is a
-- trusted extension: a database owner may create it without superuser.
CREATE EXTENSION IF NOT EXISTS btree_gist;

CREATE TABLE countries (
    code           text PRIMARY KEY CHECK (code ~ '^[A-Z]{2}$'),
    name           text NOT NULL DEFAULT '',
    -- Share of measurable blocks up at or below which the country is down,
    -- and at or above which it is up; partial in between.
    down_threshold real NOT NULL DEFAULT 0.10,
    up_threshold   real NOT NULL DEFAULT 0.90,
    -- Fewer measurable blocks than this and the country's state is unknown.
    min_measurable integer NOT NULL DEFAULT 1 CHECK (min_measurable >= 1),
    CHECK (0 <= down_threshold AND down_threshold < up_threshold AND up_threshold <= 1)
);
COMMENT ON TABLE countries IS 'Countries (ISO 3166 alpha-2 or user-assigned codes) whose address space is watched.';

-- A prefix is a network: a delegation from an RIR file or a line of a CIDR
-- list. Prefixes never overlap, so every address belongs to at most one
-- network and every block to exactly one.
CREATE TABLE prefixes (
    prefix      cidr PRIMARY KEY,
    country     text NOT NULL REFERENCES countries (code),
    registry    text NOT NULL,               -- afrinic, apnic, arin, lacnic, ripencc, or '' for a plain list
    source      text NOT NULL,               -- import label; re-importing a source replaces its rows
    origin      text NOT NULL DEFAULT '',    -- file path or URL it was read from
    status      text NOT NULL DEFAULT '',    -- allocated, assigned, ...
    delegated   date,                        -- the RIR record's date
    asn         bigint,                      -- origin AS, where known
    imported_at timestamptz NOT NULL DEFAULT now(),
    EXCLUDE USING gist (prefix inet_ops WITH &&)
);
CREATE INDEX prefixes_country ON prefixes (country);
CREATE INDEX prefixes_source ON prefixes (country, source);

-- Blocks are the unit of measurement: the /24s an IPv4 prefix covers (or
-- the prefix itself when it is longer than a /24). The census columns hold
-- what the scheduler needs to judge a block: its ever-responsive addresses
-- E(b) (as census targets) and their availability A(b).
CREATE TABLE blocks (
    block           cidr PRIMARY KEY,
    country         text NOT NULL REFERENCES countries (code),
    prefix          cidr NOT NULL REFERENCES prefixes (prefix) ON DELETE CASCADE,
    ever_responsive integer NOT NULL DEFAULT 0,
    availability    real CHECK (availability BETWEEN 0 AND 1),
    census_rounds   integer NOT NULL DEFAULT 0,
    censused_at     timestamptz,
    CHECK (family(block) = 4)
);
CREATE INDEX blocks_country ON blocks (country);
CREATE INDEX blocks_prefix ON blocks (prefix);

-- What a vantage point probes. Census targets are the ever-responsive ICMP
-- addresses of a block; manual targets are services an operator names (a
-- web server's port, an authoritative DNS server and its zone); control
-- targets lie outside every watched country and tell a vantage whether its
-- own connectivity is intact.
CREATE TABLE targets (
    id         bigserial PRIMARY KEY,
    kind       text NOT NULL CHECK (kind IN ('icmp', 'tcp', 'dns')),
    addr       inet NOT NULL CHECK (masklen(addr) = CASE family(addr) WHEN 4 THEN 32 ELSE 128 END),
    port       integer NOT NULL DEFAULT 0 CHECK (port BETWEEN 0 AND 65535),
    qname      text NOT NULL DEFAULT '',
    block      cidr REFERENCES blocks (block) ON DELETE CASCADE,
    country    text REFERENCES countries (code),
    control    boolean NOT NULL DEFAULT false,
    enabled    boolean NOT NULL DEFAULT true,
    origin     text NOT NULL DEFAULT 'manual' CHECK (origin IN ('manual', 'census')),
    -- Per-address census history.
    probes     integer NOT NULL DEFAULT 0,
    replies    integer NOT NULL DEFAULT 0,
    last_reply timestamptz,
    added_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kind, addr, port, qname),
    CHECK (control = (country IS NULL)),
    CHECK (control OR block IS NOT NULL OR family(addr) = 6),
    CHECK ((kind = 'icmp') = (port = 0)),
    CHECK ((kind = 'dns') = (qname <> ''))
);
CREATE INDEX targets_country ON targets (country) WHERE enabled;
CREATE INDEX targets_block ON targets (block);

CREATE TABLE vantages (
    name       text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$'),
    first_seen timestamptz NOT NULL DEFAULT now(),
    last_seen  timestamptz NOT NULL DEFAULT now()
);

-- One row per probe. Partitioned by day on sent_at (the vantage's own send
-- time); cutoff_ensure_partitions creates partitions ahead of need. The
-- primary key makes re-sending a result harmless: a vantage replaying its
-- spool cannot count a probe twice.
CREATE TABLE probe_results (
    vantage   text NOT NULL,
    kind      text NOT NULL CHECK (kind IN ('icmp', 'tcp', 'dns')),
    addr      inet NOT NULL,
    port      integer NOT NULL DEFAULT 0,
    sent_at   timestamptz NOT NULL,
    rtt       real CHECK (rtt >= 0),         -- milliseconds; NULL when nothing answered
    outcome   text NOT NULL CHECK (outcome IN ('reply', 'refused', 'timeout', 'unreachable', 'error')),
    responder inet,                          -- who answered: the target, or the router reporting unreachable
    rcode     smallint,                      -- DNS response code
    round     bigint NOT NULL DEFAULT 0,
    -- sent_at first: results arrive in time order, so inserts append at the
    -- index's right edge instead of touching pages all over it.
    PRIMARY KEY (sent_at, addr, vantage, kind, port)
) PARTITION BY RANGE (sent_at);
COMMENT ON COLUMN probe_results.rtt IS 'round-trip time in milliseconds; NULL when nothing answered';

-- Every ingest transaction logs what it wrote. The correlator follows this
-- log (by transaction id, which is safe against out-of-order commits) to
-- learn which vantage and time span have new results, including results a
-- vantage replays from its spool hours late.
CREATE TABLE ingest_log (
    id         bigserial PRIMARY KEY,
    xid        xid8 NOT NULL DEFAULT pg_current_xact_id(),
    vantage    text NOT NULL,
    results    integer NOT NULL,
    inserted   integer NOT NULL,
    first_sent timestamptz NOT NULL,
    last_sent  timestamptz NOT NULL,
    logged_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ingest_log_xid ON ingest_log (xid);

-- cutoff_ensure_partitions creates the daily partitions of probe_results
-- that cover [first, last]. It is SECURITY DEFINER so that a prober, which
-- may only insert results, can still make room for them.
CREATE FUNCTION cutoff_ensure_partitions(first timestamptz, last timestamptz)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    d       date;
    created integer := 0;
    part    text;
BEGIN
    IF last < first THEN
        RETURN 0;
    END IF;
    IF last - first > interval '400 days' THEN
        RAISE EXCEPTION 'cutoff_ensure_partitions: span % to % is over 400 days', first, last;
    END IF;
    FOR d IN SELECT generate_series((first AT TIME ZONE 'UTC')::date, (last AT TIME ZONE 'UTC')::date, interval '1 day')::date LOOP
        part := 'probe_results_' || to_char(d, 'YYYYMMDD');
        CONTINUE WHEN to_regclass(part) IS NOT NULL;
        BEGIN
            EXECUTE format('CREATE TABLE %I PARTITION OF probe_results FOR VALUES FROM (%L) TO (%L)',
                part, d::timestamp AT TIME ZONE 'UTC', (d + 1)::timestamp AT TIME ZONE 'UTC');
            created := created + 1;
        EXCEPTION WHEN duplicate_table THEN
            NULL; -- a concurrent session made it first
        END;
    END LOOP;
    RETURN created;
END
$$;

-- cutoff_drop_partitions drops the daily partitions of probe_results that
-- end at or before the given time: raw results are kept for a limited time.
CREATE FUNCTION cutoff_drop_partitions(before timestamptz)
RETURNS integer
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    r       record;
    dropped integer := 0;
BEGIN
    FOR r IN
        SELECT c.relname
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'probe_results'::regclass
          AND c.relname ~ '^probe_results_[0-9]{8}$'
          AND (to_date(substr(c.relname, 15), 'YYYYMMDD') + 1)::timestamp AT TIME ZONE 'UTC' <= before
        ORDER BY c.relname
    LOOP
        EXECUTE format('DROP TABLE %I', r.relname);
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END
$$;

SELECT cutoff_ensure_partitions(now() - interval '1 day', now() + interval '7 days');

-- Derived intervals. Each key's intervals never overlap (exclusion
-- constraints); together they cover the processed time, with 'unknown'
-- where nothing could be said. An interval whose upper bound is infinite is
-- the key's current state. start_earliest..start_latest brackets the true
-- start (the last observation of the old state and the first of the new),
-- and likewise for the end; lower(during) and upper(during) are the
-- midpoints of those brackets.
CREATE TABLE block_intervals (
    block          cidr NOT NULL,
    country        text NOT NULL,
    during         tstzrange NOT NULL CHECK (NOT isempty(during)),
    state          text NOT NULL CHECK (state IN ('up', 'down', 'partial', 'unknown')),
    start_earliest timestamptz,
    start_latest   timestamptz,
    end_earliest   timestamptz,
    end_latest     timestamptz,
    vantages       integer NOT NULL DEFAULT 0,  -- healthy vantages whose evidence decided the state
    EXCLUDE USING gist (block inet_ops WITH =, during WITH &&)
);
CREATE INDEX block_intervals_country ON block_intervals USING gist (country, during);

CREATE TABLE network_intervals (
    network           cidr NOT NULL,
    country           text NOT NULL,
    during            tstzrange NOT NULL CHECK (NOT isempty(during)),
    state             text NOT NULL CHECK (state IN ('up', 'down', 'partial', 'unknown')),
    start_earliest    timestamptz,
    start_latest      timestamptz,
    end_earliest      timestamptz,
    end_latest        timestamptz,
    blocks_total      integer NOT NULL DEFAULT 0,
    blocks_measurable integer NOT NULL DEFAULT 0,
    blocks_up         integer NOT NULL DEFAULT 0,
    blocks_down       integer NOT NULL DEFAULT 0,
    vantages          integer NOT NULL DEFAULT 0,
    EXCLUDE USING gist (network inet_ops WITH =, during WITH &&)
);
CREATE INDEX network_intervals_country ON network_intervals USING gist (country, during);

CREATE TABLE country_intervals (
    country           text NOT NULL,
    during            tstzrange NOT NULL CHECK (NOT isempty(during)),
    state             text NOT NULL CHECK (state IN ('up', 'down', 'partial', 'unknown')),
    start_earliest    timestamptz,
    start_latest      timestamptz,
    end_earliest      timestamptz,
    end_latest        timestamptz,
    blocks_total      integer NOT NULL DEFAULT 0,
    blocks_measurable integer NOT NULL DEFAULT 0,
    blocks_up         integer NOT NULL DEFAULT 0,
    blocks_down       integer NOT NULL DEFAULT 0,
    vantages          integer NOT NULL DEFAULT 0,
    EXCLUDE USING gist (country WITH =, during WITH &&)
);

CREATE VIEW country_outages AS
SELECT country,
       lower(during)                                      AS started_at,
       CASE WHEN upper_inf(during) THEN NULL ELSE upper(during) END AS ended_at,
       CASE WHEN upper_inf(during) THEN now() ELSE upper(during) END - lower(during) AS duration,
       upper_inf(during)                                  AS ongoing,
       blocks_total,
       blocks_down,
       blocks_measurable,
       vantages,
       start_earliest,
       start_latest,
       end_earliest,
       end_latest
FROM country_intervals
WHERE state = 'down';

-- Roles. A prober's credential can read the plan and add results, never
-- rewrite history; a reader's can only read. Roles are cluster-wide, so
-- another database's migration may have made them already.
DO $$
BEGIN
    CREATE ROLE cutoff_prober NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;
DO $$
BEGIN
    CREATE ROLE cutoff_reader NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

GRANT USAGE ON SCHEMA public TO cutoff_prober, cutoff_reader;
GRANT SELECT ON countries, prefixes, blocks, targets, vantages TO cutoff_prober;
GRANT INSERT ON probe_results, ingest_log TO cutoff_prober;
GRANT USAGE ON SEQUENCE ingest_log_id_seq TO cutoff_prober;
REVOKE ALL ON FUNCTION cutoff_ensure_partitions(timestamptz, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cutoff_ensure_partitions(timestamptz, timestamptz) TO cutoff_prober;
REVOKE ALL ON FUNCTION cutoff_drop_partitions(timestamptz) FROM PUBLIC;

GRANT SELECT ON ALL TABLES IN SCHEMA public TO cutoff_reader;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO cutoff_reader;
