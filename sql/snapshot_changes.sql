-- snapshot_changes(): every snapshot write draws a change number from the
-- event positions; the reader returns each entity's current snapshot in
-- change order, below the feed horizon.
\set SHOW_CONTEXT never
SELECT eventsourced.append('sc', 'k1', 0, ARRAY[
    eventsourced.event('E', '{"n": 1}'), eventsourced.event('E', '{"n": 2}')]);
SELECT eventsourced.append_binary('sc', 'k2', 0, 'B', '\x0102'::bytea);
SELECT eventsourced.append('sc', 'k.3 *>', 0, 'E', '{}');
-- nothing saved yet in this database (the regression database is shared)
SELECT count(*) FROM eventsourced.snapshot_changes(0, 1000) WHERE entity_type = 'sc';
CREATE TEMP TABLE mark AS SELECT eventsourced.feed_horizon() - 1 AS pos;
SELECT eventsourced.save_snapshot('sc', 'k1', 1, '{"v": 1}');
SELECT eventsourced.save_snapshot_bytes('sc', 'k2', 1, '\x00ff00'::bytea);
SELECT eventsourced.save_snapshot('sc', 'k.3 *>', 1, '"odd"');
SELECT entity_id, seq_no, CASE WHEN NOT binary_state THEN pg_catalog.convert_from(state, 'UTF8') END AS json,
       state, binary_state
  FROM eventsourced.snapshot_changes((SELECT pos FROM mark), 100) ORDER BY change;
-- changes increase and lie in the event positions' range, above the events before them
SELECT bool_and(change > (SELECT max(position) FROM eventsourced.events WHERE entity_type = 'sc'))
  FROM eventsourced.snapshot_changes((SELECT pos FROM mark), 100);
-- a replaced snapshot moves to the end with a new change
SELECT eventsourced.save_snapshot('sc', 'k1', 2, '{"v": 3}');
SELECT entity_id, seq_no, CASE WHEN NOT binary_state THEN pg_catalog.convert_from(state, 'UTF8') END AS json
  FROM eventsourced.snapshot_changes((SELECT pos FROM mark), 100) ORDER BY change;
-- an older one does not replace it and draws no change
CREATE TEMP TABLE before AS SELECT max(change) AS c FROM eventsourced.snapshots;
SELECT eventsourced.save_snapshot('sc', 'k1', 1, '{"v": 0}');
SELECT max(change) = (SELECT c FROM before) FROM eventsourced.snapshots;
-- paging: after the first change, one at a time
SELECT entity_id FROM eventsourced.snapshot_changes(
    (SELECT min(change) FROM eventsourced.snapshot_changes((SELECT pos FROM mark), 100)), 1);
SELECT count(*) FROM eventsourced.snapshot_changes((SELECT pos FROM mark), 0);
-- the horizon counts the changes: an idle reader's checkpoint can pass them
SELECT eventsourced.feed_horizon() > (SELECT max(change) FROM eventsourced.snapshots);
-- a rolled back save leaves a gap and no change
BEGIN;
SELECT eventsourced.save_snapshot('sc', 'k2', 1, '{"v": "json now"}');
SELECT count(*) FROM eventsourced.snapshot_changes((SELECT pos FROM mark), 100) WHERE binary_state;
ROLLBACK;
SELECT count(*) FROM eventsourced.snapshot_changes((SELECT pos FROM mark), 100) WHERE binary_state;
-- the event feed goes on over the gaps
SELECT eventsourced.append('sc', 'k1', 2, 'E', '{"n": 3}');
SELECT entity_id, seq_no FROM eventsourced.read_all((SELECT pos FROM mark), 100) WHERE entity_type = 'sc';
-- a transaction that saved a snapshot cannot be prepared: it holds the horizon
BEGIN;
SELECT eventsourced.save_snapshot('sc', 'k1', 3, '{"v": 6}');
PREPARE TRANSACTION 'es_sc';
SELECT count(*) FROM pg_prepared_xacts WHERE gid = 'es_sc';
-- the change column is the events' position type, NOT NULL, unique
SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull
  FROM pg_attribute a WHERE a.attrelid = 'eventsourced.snapshots'::regclass AND a.attname = 'change';

-- Bad input: errors, nothing returned
SELECT * FROM eventsourced.snapshot_changes(NULL, 10);
SELECT * FROM eventsourced.snapshot_changes(0, NULL);
SELECT * FROM eventsourced.snapshot_changes(-1, 10);
SELECT * FROM eventsourced.snapshot_changes(0, -1);
SELECT count(*) FROM eventsourced.snapshot_changes(9223372036854775807, 10);
-- the column's default draws a change too (a row of a 0.4.0 dump); only
-- the owner may call it
SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d JOIN pg_attribute a
    ON a.attrelid = d.adrelid AND a.attnum = d.adnum
  WHERE d.adrelid = 'eventsourced.snapshots'::regclass AND a.attname = 'change';
SELECT has_function_privilege('public', 'eventsourced.draw_snapshot_change()', 'EXECUTE');
SELECT eventsourced.draw_snapshot_change() > (SELECT max(change) FROM eventsourced.snapshots);

-- Privileges: EXECUTE and SELECT on the snapshots, as for read_all
CREATE ROLE es_sc_reader;
GRANT USAGE ON SCHEMA eventsourced TO es_sc_reader;
SET ROLE es_sc_reader;
SELECT count(*) FROM eventsourced.snapshot_changes(0, 10);
RESET ROLE;
GRANT EXECUTE ON FUNCTION eventsourced.snapshot_changes(bigint, integer) TO es_sc_reader;
SET ROLE es_sc_reader;
SELECT count(*) FROM eventsourced.snapshot_changes(0, 10);
RESET ROLE;
GRANT SELECT ON eventsourced.snapshots TO es_sc_reader;
SET ROLE es_sc_reader;
SELECT count(*) > 0 FROM eventsourced.snapshot_changes(0, 10);
-- a search_path trap changes nothing
CREATE TEMP TABLE snapshots (x int);
SET search_path = pg_temp, public;
SELECT count(*) > 0 FROM eventsourced.snapshot_changes(0, 10);
RESET search_path;
DROP TABLE pg_temp.snapshots;
RESET ROLE;
-- row-level security on the snapshots applies to the reader
ALTER TABLE eventsourced.snapshots ENABLE ROW LEVEL SECURITY;
CREATE POLICY sc_only_k1 ON eventsourced.snapshots FOR SELECT TO es_sc_reader USING (entity_id = 'k1');
SET ROLE es_sc_reader;
SELECT DISTINCT entity_id FROM eventsourced.snapshot_changes(0, 1000);
RESET ROLE;
DROP POLICY sc_only_k1 ON eventsourced.snapshots;
ALTER TABLE eventsourced.snapshots DISABLE ROW LEVEL SECURITY;
REVOKE ALL ON eventsourced.snapshots FROM es_sc_reader;
REVOKE ALL ON FUNCTION eventsourced.snapshot_changes(bigint, integer) FROM es_sc_reader;
REVOKE ALL ON SCHEMA eventsourced FROM es_sc_reader;
DROP ROLE es_sc_reader;

-- A JSON state whose text form could not be read back (over 1 GB: a
-- control character is six bytes of text) is refused when saved, and
-- nothing is written
SELECT eventsourced.append('big', 'b' || i, 0, 'Made', '{}') FROM generate_series(1, 3) i;
SELECT max(change) AS before_big FROM eventsourced.snapshots \gset
SELECT eventsourced.save_snapshot('big', 'b1', 1, to_jsonb(repeat(chr(1), 180000000)));
SELECT count(*) FROM eventsourced.snapshots WHERE entity_type = 'big';
-- a page ends once it holds 64 MB of states (at least one change): large
-- states are read a few at a time, and the reader goes on from the last
SELECT eventsourced.save_snapshot('big', 'b' || i, 1, to_jsonb(repeat('y', 40000000)))
  FROM generate_series(1, 3) i;
SELECT entity_id, octet_length(state) FROM eventsourced.snapshot_changes(:before_big, 10);
SELECT max(change) AS after_b2 FROM eventsourced.snapshots WHERE entity_id = 'b2' \gset
SELECT entity_id, octet_length(state) FROM eventsourced.snapshot_changes(:after_b2, 10);
