-- A fixture history modelled on North Korea, December 2014: four networks,
-- two vantages, a flapping network on the 21st, the 9.5-hour cut-off on
-- the 22nd, two short blackouts on the 23rd, and vp2 losing its own uplink
-- for an hour. A second country, IR, has a stretch nobody could judge
-- (unknown) on the 22nd and one of its two networks down on the 23rd.
INSERT INTO countries (code, name) VALUES ('KP', 'North Korea'), ('IR', 'Iran');
INSERT INTO prefixes (prefix, country, registry, source, asn) VALUES
    ('175.45.176.0/24', 'KP', 'apnic', 'fixture', 131279),
    ('175.45.177.0/24', 'KP', 'apnic', 'fixture', 131279),
    ('175.45.178.0/24', 'KP', 'apnic', 'fixture', 131279),
    ('175.45.179.0/24', 'KP', 'apnic', 'fixture', 131279),
    ('2.176.0.0/24', 'IR', 'ripencc', 'fixture', 58224),
    ('2.177.0.0/24', 'IR', 'ripencc', 'fixture', 58224);
INSERT INTO blocks (block, country, prefix) SELECT prefix, country, prefix FROM prefixes;
INSERT INTO vantages (name, first_seen, last_seen) VALUES
    ('vp1', '2014-12-21 11:50Z', '2014-12-23 18:00Z'),
    ('vp2', '2014-12-21 11:50Z', '2014-12-23 18:00Z');
UPDATE correlator_state SET horizon = '2014-12-23 17:59:30Z';

INSERT INTO country_intervals (country, during, state, start_earliest, start_latest, end_earliest, end_latest, blocks_total, blocks_measurable, blocks_up, blocks_down, vantages) VALUES
    ('KP', '[2014-12-21 12:00Z, 2014-12-21 20:00:10Z)', 'up', NULL, NULL, '2014-12-21 19:59:50Z', '2014-12-21 20:00:30Z', 4, 4, 4, 0, 2),
    ('KP', '[2014-12-21 20:00:10Z, 2014-12-21 21:30:05Z)', 'partial', '2014-12-21 19:59:50Z', '2014-12-21 20:00:30Z', '2014-12-21 21:29:50Z', '2014-12-21 21:30:20Z', 4, 4, 3, 1, 2),
    ('KP', '[2014-12-21 21:30:05Z, 2014-12-22 16:15:04Z)', 'up', '2014-12-21 21:29:50Z', '2014-12-21 21:30:20Z', '2014-12-22 16:14:40Z', '2014-12-22 16:15:28Z', 4, 4, 4, 0, 2),
    ('KP', '[2014-12-22 16:15:04Z, 2014-12-23 01:46:02Z)', 'down', '2014-12-22 16:14:40Z', '2014-12-22 16:15:28Z', '2014-12-23 01:45:41Z', '2014-12-23 01:46:23Z', 4, 4, 0, 4, 2),
    ('KP', '[2014-12-23 01:46:02Z, 2014-12-23 07:38:10Z)', 'up', '2014-12-23 01:45:41Z', '2014-12-23 01:46:23Z', '2014-12-23 07:37:52Z', '2014-12-23 07:38:28Z', 4, 4, 4, 0, 2),
    ('KP', '[2014-12-23 07:38:10Z, 2014-12-23 07:57:55Z)', 'down', '2014-12-23 07:37:52Z', '2014-12-23 07:38:28Z', '2014-12-23 07:57:40Z', '2014-12-23 07:58:10Z', 4, 4, 0, 4, 2),
    ('KP', '[2014-12-23 07:57:55Z, 2014-12-23 15:41:06Z)', 'up', '2014-12-23 07:57:40Z', '2014-12-23 07:58:10Z', '2014-12-23 15:40:51Z', '2014-12-23 15:41:21Z', 4, 4, 4, 0, 2),
    ('KP', '[2014-12-23 15:41:06Z, 2014-12-23 16:12:01Z)', 'down', '2014-12-23 15:40:51Z', '2014-12-23 15:41:21Z', '2014-12-23 16:11:44Z', '2014-12-23 16:12:18Z', 4, 4, 0, 4, 2),
    ('KP', '[2014-12-23 16:12:01Z,)', 'up', '2014-12-23 16:11:44Z', '2014-12-23 16:12:18Z', NULL, NULL, 4, 4, 4, 0, 2);

-- Each network follows the country, except 175.45.177.0/24 which flaps on the 21st.
INSERT INTO network_intervals (network, country, during, state, start_earliest, start_latest, end_earliest, end_latest, blocks_total, blocks_measurable, blocks_up, blocks_down, vantages)
SELECT p.prefix, 'KP', c.during, c.state, c.start_earliest, c.start_latest, c.end_earliest, c.end_latest, 1, 1,
       CASE c.state WHEN 'up' THEN 1 ELSE 0 END, CASE c.state WHEN 'down' THEN 1 ELSE 0 END, 2
FROM prefixes p, country_intervals c
WHERE c.country = 'KP' AND p.country = 'KP' AND c.state <> 'partial' AND NOT (p.prefix = '175.45.177.0/24' AND lower(c.during) < '2014-12-22Z');
INSERT INTO network_intervals (network, country, during, state, start_earliest, start_latest, end_earliest, end_latest, blocks_total, blocks_measurable, blocks_up, blocks_down, vantages)
SELECT p.prefix, 'KP', c.during, 'up', c.start_earliest, c.start_latest, c.end_earliest, c.end_latest, 1, 1, 1, 0, 2
FROM prefixes p, country_intervals c
WHERE c.country = 'KP' AND p.country = 'KP' AND c.state = 'partial' AND p.prefix <> '175.45.177.0/24';
INSERT INTO network_intervals (network, country, during, state, blocks_total, blocks_measurable, blocks_up, blocks_down, vantages) VALUES
    ('175.45.177.0/24', 'KP', '[2014-12-21 12:00Z, 2014-12-21 20:00:10Z)', 'up', 1, 1, 1, 0, 2),
    ('175.45.177.0/24', 'KP', '[2014-12-21 20:00:10Z, 2014-12-21 20:20:00Z)', 'down', 1, 1, 0, 1, 2),
    ('175.45.177.0/24', 'KP', '[2014-12-21 20:20:00Z, 2014-12-21 20:40:00Z)', 'up', 1, 1, 1, 0, 2),
    ('175.45.177.0/24', 'KP', '[2014-12-21 20:40:00Z, 2014-12-21 21:30:05Z)', 'down', 1, 1, 0, 1, 2),
    ('175.45.177.0/24', 'KP', '[2014-12-21 21:30:05Z, 2014-12-22 16:15:04Z)', 'up', 1, 1, 1, 0, 2);

-- IR: up, then for three and a half hours on the 22nd too few blocks
-- measurable to judge (unknown), up again, and 2.177.0.0/24 down on its
-- own for an hour and a half on the 23rd (the country partial).
INSERT INTO country_intervals (country, during, state, start_earliest, start_latest, end_earliest, end_latest, blocks_total, blocks_measurable, blocks_up, blocks_down, vantages) VALUES
    ('IR', '[2014-12-21 12:00Z, 2014-12-22 02:00:20Z)', 'up', NULL, NULL, '2014-12-22 02:00:00Z', '2014-12-22 02:00:40Z', 2, 2, 2, 0, 2),
    ('IR', '[2014-12-22 02:00:20Z, 2014-12-22 05:30:10Z)', 'unknown', '2014-12-22 02:00:00Z', '2014-12-22 02:00:40Z', '2014-12-22 05:29:50Z', '2014-12-22 05:30:30Z', 2, 0, 0, 0, 0),
    ('IR', '[2014-12-22 05:30:10Z, 2014-12-23 09:00:12Z)', 'up', '2014-12-22 05:29:50Z', '2014-12-22 05:30:30Z', '2014-12-23 08:59:50Z', '2014-12-23 09:00:34Z', 2, 2, 2, 0, 2),
    ('IR', '[2014-12-23 09:00:12Z, 2014-12-23 10:30:40Z)', 'partial', '2014-12-23 08:59:50Z', '2014-12-23 09:00:34Z', '2014-12-23 10:30:20Z', '2014-12-23 10:31:00Z', 2, 2, 1, 1, 2),
    ('IR', '[2014-12-23 10:30:40Z,)', 'up', '2014-12-23 10:30:20Z', '2014-12-23 10:31:00Z', NULL, NULL, 2, 2, 2, 0, 2);
INSERT INTO network_intervals (network, country, during, state, start_earliest, start_latest, end_earliest, end_latest, blocks_total, blocks_measurable, blocks_up, blocks_down, vantages) VALUES
    ('2.176.0.0/24', 'IR', '[2014-12-21 12:00Z, 2014-12-22 02:00:20Z)', 'up', NULL, NULL, '2014-12-22 02:00:00Z', '2014-12-22 02:00:40Z', 1, 1, 1, 0, 2),
    ('2.176.0.0/24', 'IR', '[2014-12-22 02:00:20Z, 2014-12-22 05:30:10Z)', 'unknown', '2014-12-22 02:00:00Z', '2014-12-22 02:00:40Z', '2014-12-22 05:29:50Z', '2014-12-22 05:30:30Z', 1, 0, 0, 0, 0),
    ('2.176.0.0/24', 'IR', '[2014-12-22 05:30:10Z,)', 'up', '2014-12-22 05:29:50Z', '2014-12-22 05:30:30Z', NULL, NULL, 1, 1, 1, 0, 2),
    ('2.177.0.0/24', 'IR', '[2014-12-21 12:00Z, 2014-12-22 02:00:20Z)', 'up', NULL, NULL, '2014-12-22 02:00:00Z', '2014-12-22 02:00:40Z', 1, 1, 1, 0, 2),
    ('2.177.0.0/24', 'IR', '[2014-12-22 02:00:20Z, 2014-12-22 05:30:10Z)', 'unknown', '2014-12-22 02:00:00Z', '2014-12-22 02:00:40Z', '2014-12-22 05:29:50Z', '2014-12-22 05:30:30Z', 1, 0, 0, 0, 0),
    ('2.177.0.0/24', 'IR', '[2014-12-22 05:30:10Z, 2014-12-23 09:00:12Z)', 'up', '2014-12-22 05:29:50Z', '2014-12-22 05:30:30Z', '2014-12-23 08:59:50Z', '2014-12-23 09:00:34Z', 1, 1, 1, 0, 2),
    ('2.177.0.0/24', 'IR', '[2014-12-23 09:00:12Z, 2014-12-23 10:30:40Z)', 'down', '2014-12-23 08:59:50Z', '2014-12-23 09:00:34Z', '2014-12-23 10:30:20Z', '2014-12-23 10:31:00Z', 1, 1, 0, 1, 2),
    ('2.177.0.0/24', 'IR', '[2014-12-23 10:30:40Z,)', 'up', '2014-12-23 10:30:20Z', '2014-12-23 10:31:00Z', NULL, NULL, 1, 1, 1, 0, 2);

INSERT INTO vantage_health (vantage, during, state, reason) VALUES
    ('vp1', '[2014-12-21 12:00Z,)', 'healthy', ''),
    ('vp2', '[2014-12-21 12:00Z, 2014-12-22 04:00Z)', 'healthy', ''),
    ('vp2', '[2014-12-22 04:00Z, 2014-12-22 05:00:30Z)', 'unhealthy', 'control targets unanswered'),
    ('vp2', '[2014-12-22 05:00:30Z,)', 'healthy', '');
