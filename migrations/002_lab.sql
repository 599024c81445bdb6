-- Ground truth of the lab: every fault a scenario run injected (`cutoff lab
-- run`), recorded at the moment it took effect and again when it ended, so
-- tests and benchmarks can score the correlator's intervals against what
-- really happened.
CREATE TABLE lab_truth (
    run_id      text NOT NULL,               -- one scenario run
    seq         integer NOT NULL,            -- the fault's number within the run
    scenario    text NOT NULL,               -- scenario name (its file's base name)
    country     text NOT NULL DEFAULT '',    -- the lab country's code, e.g. XL
    -- 'border' (the whole country), 'net:198.19.1.0/24' (one network) or
    -- 'vantage:vp1' (a vantage's own uplink).
    target      text NOT NULL,
    -- cut; loss; delay; decay (hosts going silent one by one); flap (one
    -- down phase of a flapping link).
    fault       text NOT NULL CHECK (fault IN ('cut', 'loss', 'delay', 'decay', 'flap')),
    detail      text NOT NULL DEFAULT '',    -- e.g. '20%' for loss, '30 hosts over 15m0s' for decay
    prefixes    cidr[] NOT NULL DEFAULT '{}', -- the country's address space affected ('{}' for a vantage)
    line        integer NOT NULL DEFAULT 0,  -- line of the scenario file
    started_at  timestamptz NOT NULL,        -- wall clock, when the fault took effect
    ended_at    timestamptz,                 -- when it was restored; NULL while active
    done_at     timestamptz,                 -- decay: when its last host went silent
    story_start timestamptz,                 -- the same instants on the scenario's story clock,
    story_end   timestamptz,                 -- when it has one (e.g. December 2014)
    during      tstzrange GENERATED ALWAYS AS (tstzrange(started_at, ended_at)) STORED,
    PRIMARY KEY (run_id, seq),
    CHECK (ended_at IS NULL OR ended_at >= started_at)
);
CREATE INDEX lab_truth_during ON lab_truth USING gist (during);
COMMENT ON TABLE lab_truth IS 'Faults injected into the lab by scenario runs: the ground truth to score derived outages against.';

GRANT SELECT ON lab_truth TO cutoff_reader;
