-- A vantage row belongs to the login that first reported it, so one
-- prober's credential cannot rewrite another vantage's row (its clock, its
-- spool backlog, its last contact). Superusers and the migrating owner are
-- not bound: they run the lab, the demo and repairs. To move a vantage to a
-- new login: UPDATE vantages SET login = NULL WHERE name = '...'.
--
-- The heartbeat also keeps the day partitions of probe_results and
-- observations a week ahead, so ingest does not create them on its path
-- (it still does, on demand, when a vantage replays old results).
ALTER TABLE vantages ADD COLUMN login name;

CREATE OR REPLACE FUNCTION cutoff_vantage_heartbeat(
    v_name text, v_round real, v_timeout real, v_offset_ms real,
    v_spool_bytes bigint, v_spool_records bigint, v_spool_oldest timestamptz,
    v_probes_sent bigint, v_countries text[], v_version text, v_hostname text)
RETURNS timestamptz
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    bound  boolean := NOT coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = session_user), false);
    caller name := CASE WHEN bound THEN session_user ELSE NULL END;
    owner  name;
BEGIN
    SELECT login INTO owner FROM vantages WHERE name = v_name FOR UPDATE;
    IF bound AND owner IS NOT NULL AND owner <> caller THEN
        RAISE EXCEPTION 'vantage % belongs to login %, not %', v_name, owner, caller
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'give each vantage its own name, or release it: UPDATE vantages SET login = NULL WHERE name = ...';
    END IF;
    INSERT INTO vantages AS v (name, login, round_seconds, timeout_seconds, clock_offset_ms, clock_checked_at,
        spool_bytes, spool_records, spool_oldest, probes_sent, countries, version, hostname)
    VALUES (v_name, caller, v_round, v_timeout, v_offset_ms, CASE WHEN v_offset_ms IS NULL THEN NULL ELSE clock_timestamp() END,
        v_spool_bytes, v_spool_records, v_spool_oldest, v_probes_sent, v_countries, v_version, v_hostname)
    ON CONFLICT (name) DO UPDATE SET
        login = coalesce(v.login, excluded.login),
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
    IF to_regclass('probe_results_' || to_char((now() + interval '6 days') AT TIME ZONE 'UTC', 'YYYYMMDD')) IS NULL
       OR to_regclass('observations_' || to_char((now() + interval '6 days') AT TIME ZONE 'UTC', 'YYYYMMDD')) IS NULL THEN
        PERFORM cutoff_ensure_partitions(now() - interval '1 day', now() + interval '7 days');
    END IF;
    RETURN clock_timestamp();
END
$$;
