-- The snapshot store.
\set SHOW_CONTEXT never
SELECT eventsourced.append('counter', 'k1', 0, ARRAY[
    eventsourced.event('Increased', '{"n": 1}'),
    eventsourced.event('Increased', '{"n": 2}'),
    eventsourced.event('Increased', '{"n": 3}')]);
-- no snapshot yet: no row
SELECT * FROM eventsourced.load_snapshot('counter', 'k1');
SELECT eventsourced.save_snapshot('counter', 'k1', 2, '{"value": 3}');
SELECT * FROM eventsourced.load_snapshot('counter', 'k1');
-- a newer snapshot replaces it
SELECT eventsourced.save_snapshot('counter', 'k1', 3, '{"value": 6}');
SELECT * FROM eventsourced.load_snapshot('counter', 'k1');
-- an older one never replaces a newer one
SELECT eventsourced.save_snapshot('counter', 'k1', 1, '{"value": 1}');
SELECT * FROM eventsourced.load_snapshot('counter', 'k1');
-- saving the same seq_no again replaces the state
SELECT eventsourced.save_snapshot('counter', 'k1', 3, '{"value": 6, "v": 2}');
SELECT * FROM eventsourced.load_snapshot('counter', 'k1');
SELECT count(*) FROM eventsourced.snapshots WHERE entity_type = 'counter';
-- snapshots are per entity
SELECT * FROM eventsourced.load_snapshot('counter', 'k2');
-- a snapshot inside a rolled back transaction is gone
BEGIN;
SELECT eventsourced.append('counter', 'k1', 3, 'Increased', '{"n": 4}');
SELECT eventsourced.save_snapshot('counter', 'k1', 4, '{"value": 10}');
SELECT seq_no FROM eventsourced.load_snapshot('counter', 'k1');
ROLLBACK;
SELECT seq_no FROM eventsourced.load_snapshot('counter', 'k1');

-- Bad input: nothing written
SELECT eventsourced.save_snapshot('counter', 'k1', 4, '{}');
SELECT eventsourced.save_snapshot('counter', 'k9', 1, '{}');
SELECT eventsourced.save_snapshot('counter', 'k1', 0, '{}');
SELECT eventsourced.save_snapshot('counter', 'k1', -3, '{}');
SELECT eventsourced.save_snapshot('counter', 'k1', NULL, '{}');
SELECT eventsourced.save_snapshot('counter', 'k1', 1, NULL);
SELECT eventsourced.save_snapshot(NULL, 'k1', 1, '{}');
SELECT eventsourced.save_snapshot('counter', '', 1, '{}');
SELECT * FROM eventsourced.load_snapshot(NULL, 'k1');
SELECT * FROM eventsourced.load_snapshot('counter', NULL);
SELECT * FROM eventsourced.load_snapshot('', 'k1');
SELECT entity_id, seq_no, state FROM eventsourced.snapshots WHERE entity_type = 'counter';
