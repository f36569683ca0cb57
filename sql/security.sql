-- Privileges: a role granted nothing can do nothing; the README's grants for
-- an application role and a read-only role work; search_path tricks change
-- nothing.
\set SHOW_CONTEXT never
SET client_min_messages = warning;
DROP ROLE IF EXISTS es_app;
DROP ROLE IF EXISTS es_reader;
DROP ROLE IF EXISTS es_nobody;
RESET client_min_messages;
CREATE ROLE es_app;
CREATE ROLE es_reader;
CREATE ROLE es_nobody;

-- README: application role (append and read)
GRANT USAGE ON SCHEMA eventsourced TO es_app;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA eventsourced TO es_app;
GRANT SELECT ON ALL TABLES IN SCHEMA eventsourced TO es_app;
-- README: read-only role
GRANT USAGE ON SCHEMA eventsourced TO es_reader;
GRANT SELECT ON eventsourced.events, eventsourced.snapshots TO es_reader;
GRANT EXECUTE ON FUNCTION
    eventsourced.last_seq_no(text, text),
    eventsourced.events_by_id(text, text, bigint, integer),
    eventsourced.events_by_type(text, bigint, integer),
    eventsourced.read_all(bigint, integer),
    eventsourced.load_snapshot(text, text),
    eventsourced.feed_horizon(),
    eventsourced.feed_checkpoint(text, bigint)
    TO es_reader;

SET ROLE es_app;
SELECT eventsourced.append('acct', 's1', 0, 'Opened', '{}');
SELECT eventsourced.append('acct', 's1', 1, ARRAY[eventsourced.event('Deposited', '{"n": 1}')]);
SELECT eventsourced.save_snapshot('acct', 's1', 2, '{"balance": 1}');
SELECT * FROM eventsourced.load_snapshot('acct', 's1');
SELECT seq_no, event_type FROM eventsourced.events_by_id('acct', 's1');
SELECT entity_id, seq_no FROM eventsourced.events_by_type('acct');
SELECT count(*) > 0 FROM eventsourced.read_all();
-- positions for more than one block (1,024 when preloaded): the application
-- role needs no privilege on the position sequence
SELECT eventsourced.append('bulk', 'many', 0,
    (SELECT array_agg(eventsourced.event('Happened', '{}')) FROM generate_series(1, 2100)));
SELECT count(DISTINCT position), max(position) - min(position) >= 2099 AS increasing
  FROM eventsourced.events_by_id('bulk', 'many');
SELECT nextval('eventsourced.events_position_seq');
-- the application role cannot bypass the API
INSERT INTO eventsourced.events VALUES ('acct', 's1', 3, 999999, 'Forged', '{}');
UPDATE eventsourced.snapshots SET state = '{}';
RESET ROLE;

SET ROLE es_reader;
SELECT eventsourced.last_seq_no('acct', 's1');
SELECT eventsourced.feed_checkpoint('acct', 0) < eventsourced.feed_horizon() AS reader_checkpoint;
SELECT seq_no, event_type FROM eventsourced.events_by_id('acct', 's1');
SELECT entity_id, seq_no FROM eventsourced.events_by_type('acct');
SELECT count(*) > 0 FROM eventsourced.read_all();
SELECT seq_no FROM eventsourced.load_snapshot('acct', 's1');
SELECT eventsourced.append('acct', 's1', 2, 'Deposited', '{}');
SELECT eventsourced.save_snapshot('acct', 's1', 2, '{}');
RESET ROLE;

SET ROLE es_nobody;
SELECT eventsourced.append('acct', 's1', 2, 'Deposited', '{}');
SELECT * FROM eventsourced.events_by_id('acct', 's1');
SELECT * FROM eventsourced.events_by_type('acct');
SELECT * FROM eventsourced.read_all();
SELECT eventsourced.feed_checkpoint('acct', 0);
SELECT * FROM eventsourced.events;
RESET ROLE;
-- EXECUTE alone is not enough: the feed functions check the table's SELECT grant.
GRANT USAGE ON SCHEMA eventsourced TO es_nobody;
GRANT EXECUTE ON FUNCTION eventsourced.read_all(bigint, integer),
                          eventsourced.feed_checkpoint(text, bigint) TO es_nobody;
SET ROLE es_nobody;
SELECT * FROM eventsourced.read_all();
SELECT eventsourced.feed_checkpoint('acct', 0);
RESET ROLE;
SELECT eventsourced.last_seq_no('acct', 's1');

-- search_path tricks: objects that shadow built-ins change nothing.
CREATE SCHEMA evil;
CREATE FUNCTION evil.texteq_always(text, text) RETURNS boolean
    LANGUAGE sql IMMUTABLE AS 'SELECT true';
CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.texteq_always);
CREATE FUNCTION evil.int8le_never(bigint, bigint) RETURNS boolean
    LANGUAGE sql IMMUTABLE AS 'SELECT false';
CREATE OPERATOR evil.<= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = evil.int8le_never);
CREATE OPERATOR evil.>= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = evil.int8le_never);
CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE sql AS $$SELECT '2000-01-01'::timestamptz$$;
CREATE TABLE evil.events (LIKE eventsourced.events);
CREATE TABLE evil.snapshots (LIKE eventsourced.snapshots);
SET search_path = evil, pg_catalog, public;
SELECT eventsourced.append('acct', 's2', 0, 'Opened', '{}');
SELECT eventsourced.last_seq_no('acct', 's2');
SELECT seq_no, event_type FROM eventsourced.events_by_id('acct', 's2');
SELECT seq_no, event_type FROM eventsourced.events_by_id('acct', 's1', 2);
SELECT eventsourced.save_snapshot('acct', 's1', 2, '{"v": 2}');
SELECT eventsourced.save_snapshot('acct', 's1', 1, '{"v": 1}');
SELECT seq_no, state FROM eventsourced.load_snapshot('acct', 's1');
SELECT recorded_at > '2001-01-01' AS real_time FROM eventsourced.load_snapshot('acct', 's1') l
  JOIN eventsourced.snapshots s ON s.entity_type OPERATOR(pg_catalog.=) 'acct' AND s.entity_id OPERATOR(pg_catalog.=) 's1';
SELECT count(*) FROM evil.events;
SELECT count(*) FROM evil.snapshots;
RESET search_path;
DROP SCHEMA evil CASCADE;

DROP OWNED BY es_app, es_reader, es_nobody;
DROP ROLE es_app;
DROP ROLE es_reader;
DROP ROLE es_nobody;
