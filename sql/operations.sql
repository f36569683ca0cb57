-- Documented operations on a live store (README, "Operating it"): a purge
-- in the middle of an entity's log, TRUNCATE of the state cache, snapshots
-- saved by hand, REINDEX CONCURRENTLY, and DDL on the extension's tables.
\set SHOW_CONTEXT never
\set VERBOSITY default
CREATE FUNCTION ops_apply(state jsonb, event_type text, payload jsonb) RETURNS jsonb
LANGUAGE sql RETURN jsonb_build_object('n', (state->>'n')::bigint + (payload->>'n')::bigint);
CREATE FUNCTION ops_add(entity_id text, state jsonb, args jsonb) RETURNS eventsourced.decision
LANGUAGE sql RETURN eventsourced.emit('Added', args);
SELECT eventsourced.register_entity('ops', 'ops_apply(jsonb,text,jsonb)', '{"n": 0}', 2);
SELECT eventsourced.register_command('ops', 'Add', 'ops_add(text,jsonb,jsonb)');

-- A purge of one event in the middle of a log: the concurrency check gives
-- the index's answer (the last seq_no is still 10), whatever expectation
-- the writer brings.
SELECT eventsourced.append('ops_p', 'e1', NULL, 'E', jsonb_build_object('i', i)) FROM generate_series(1, 10) i;
BEGIN;
ALTER TABLE eventsourced.events DISABLE TRIGGER events_immutable;
DELETE FROM eventsourced.events WHERE entity_type = 'ops_p' AND entity_id = 'e1' AND seq_no = 7;
ALTER TABLE eventsourced.events ENABLE ALWAYS TRIGGER events_immutable;
COMMIT;
\set VERBOSITY sqlstate
SELECT eventsourced.append('ops_p', 'e1', 6, 'E', '{}');
SELECT eventsourced.append('ops_p', 'e1', 5, 'E', '{}');
\set VERBOSITY default
SELECT eventsourced.append('ops_p', 'e1', 6, 'E', '{}');
SELECT eventsourced.append('ops_p', 'e1', 10, 'E', '{}');
SELECT eventsourced.append('ops_p', 'e1', NULL, 'E', '{}');
SELECT eventsourced.last_seq_no('ops_p', 'e1');
SELECT string_agg(seq_no::text, ',' ORDER BY seq_no) FROM eventsourced.events_by_id('ops_p', 'e1');
-- a gap longer than the few probes the lookup tries
BEGIN;
ALTER TABLE eventsourced.events DISABLE TRIGGER events_immutable;
DELETE FROM eventsourced.events WHERE entity_type = 'ops_p' AND entity_id = 'e1' AND seq_no BETWEEN 2 AND 9;
ALTER TABLE eventsourced.events ENABLE ALWAYS TRIGGER events_immutable;
COMMIT;
SELECT eventsourced.append('ops_p', 'e1', 1, 'E', '{}');
SELECT eventsourced.append('ops_p', 'e1', 12, 'E', '{}');

-- A whole entity purged by the documented procedure (events, snapshot,
-- cached state and snapshot claim) and written again: a command starts
-- from the new events, not from the purged state.
SELECT seq_no, state FROM eventsourced.handle_command('ops', 'gone', 'Add', '{"n": 7}');
SELECT seq_no, state FROM eventsourced.handle_command('ops', 'gone', 'Add', '{"n": 5}');
BEGIN;
ALTER TABLE eventsourced.events DISABLE TRIGGER events_immutable;
DELETE FROM eventsourced.events WHERE entity_type = 'ops' AND entity_id = 'gone';
ALTER TABLE eventsourced.events ENABLE ALWAYS TRIGGER events_immutable;
DELETE FROM eventsourced.snapshots WHERE entity_type = 'ops' AND entity_id = 'gone';
DELETE FROM eventsourced.entity_states WHERE entity_type = 'ops' AND entity_id = 'gone';
DELETE FROM eventsourced.snapshot_generations WHERE entity_type = 'ops' AND entity_id = 'gone';
COMMIT;
SELECT eventsourced.append('ops', 'gone', 0, 'Added', '{"n": 1}');
SELECT eventsourced.append('ops', 'gone', 1, 'Added', '{"n": 1}');
SELECT seq_no, state FROM eventsourced.handle_command('ops', 'gone', 'Add', '{"n": 1}');

-- A purge inside the transaction that appended: the transaction's own
-- memory of the entity's last seq_no is dropped too.
BEGIN;
SELECT eventsourced.append('ops_t', 'e1', NULL, 'E', '{}') FROM generate_series(1, 2);
ALTER TABLE eventsourced.events DISABLE TRIGGER events_immutable;
DELETE FROM eventsourced.events WHERE entity_type = 'ops_t' AND entity_id = 'e1';
ALTER TABLE eventsourced.events ENABLE ALWAYS TRIGGER events_immutable;
SELECT eventsourced.append('ops_t', 'e1', 0, 'E', '{}');
SELECT eventsourced.append('ops_t', 'e2', 0, 'E', '{}');
COMMIT;
SELECT eventsourced.append('ops_t', 'e1', 1, 'E', '{}');
-- DROP and CREATE EXTENSION in the transaction that appended: the new
-- store's entities start at 1 (rolled back, to keep this database's store)
BEGIN;
SELECT eventsourced.append('ops_x', 'e1', NULL, 'E', '{}') FROM generate_series(1, 2);
SET client_min_messages = warning;
DROP EXTENSION eventsourced CASCADE;
RESET client_min_messages;
CREATE EXTENSION eventsourced;
SELECT eventsourced.append('ops_x', 'e1', NULL, 'E', '{}');
ROLLBACK;

-- A snapshot saved by hand never becomes a command's state, even after the
-- state cache is truncated (README: it may be truncated at any time).
SELECT seq_no, state FROM eventsourced.handle_command('ops', 'f1', 'Add', '{"n": 1}');
SELECT seq_no, state FROM eventsourced.handle_command('ops', 'f1', 'Add', '{"n": 2}');
SELECT seq_no, state FROM eventsourced.load_snapshot('ops', 'f1');
SELECT eventsourced.save_snapshot('ops', 'f1', 2, '{"n": 1000000}');
TRUNCATE eventsourced.entity_states;
SELECT seq_no, state FROM eventsourced.handle_command('ops', 'f1', 'Add', '{"n": 4}');
-- (a hand-saved snapshot older than the command's one replaces nothing)
SELECT eventsourced.save_snapshot('ops', 'f1', 1, '{"n": 999}');
SELECT seq_no, state FROM eventsourced.load_snapshot('ops', 'f1');

-- REINDEX CONCURRENTLY gives indexes new OIDs: sessions that cached the old
-- ones follow.
SELECT seq_no FROM eventsourced.handle_command('ops', 'f2', 'Add', '{"n": 1}');
REINDEX INDEX CONCURRENTLY eventsourced.entity_states_pkey;
SELECT seq_no, state FROM eventsourced.handle_command('ops', 'f2', 'Add', '{"n": 1}');
REINDEX INDEX CONCURRENTLY eventsourced.snapshot_generations_pkey;
REINDEX INDEX CONCURRENTLY eventsourced.snapshots_pkey;
SELECT seq_no, state FROM eventsourced.handle_command('ops', 'f2', 'Add', '{"n": 1}');
REINDEX INDEX CONCURRENTLY eventsourced.events_pkey;
REINDEX INDEX CONCURRENTLY eventsourced.entity_types_pkey;
REINDEX INDEX CONCURRENTLY eventsourced.events_position_key;
SELECT seq_no, state FROM eventsourced.handle_command('ops', 'f2', 'Add', '{"n": 1}');
SELECT eventsourced.append('ops', 'f2', 4, 'Added', '{"n": 5}');
SELECT count(*) FROM eventsourced.events_by_type('ops');
REINDEX TABLE CONCURRENTLY eventsourced.events;
SELECT seq_no, state FROM eventsourced.handle_command('ops', 'f2', 'Add', '{"n": 1}');

-- DDL that would change what the extension writes is refused, on every
-- one of its tables; what operations need is allowed.
\set VERBOSITY default
ALTER TABLE eventsourced.events ADD COLUMN tenant text;
ALTER TABLE eventsourced.events ALTER COLUMN payload SET DEFAULT '{}';
ALTER TABLE eventsourced.events ADD CONSTRAINT small CHECK (seq_no < 100);
ALTER TABLE eventsourced.events ALTER COLUMN metadata TYPE json;
ALTER TABLE eventsourced.events DROP COLUMN metadata;
ALTER TABLE eventsourced.events RENAME TO events_old;
ALTER TABLE eventsourced.events RENAME COLUMN payload TO body;
ALTER TABLE eventsourced.events SET SCHEMA public;
ALTER TABLE eventsourced.entity_states ADD COLUMN note text;
ALTER TABLE eventsourced.snapshots ALTER COLUMN state SET NOT NULL;
CREATE FUNCTION ops_audit() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END';
CREATE TRIGGER audit AFTER INSERT ON eventsourced.events FOR EACH ROW EXECUTE FUNCTION ops_audit();
CREATE RULE no_insert AS ON INSERT TO eventsourced.snapshots DO INSTEAD NOTHING;
\set VERBOSITY terse
-- partitions and inheritance (statement triggers would not fire through a parent)
CREATE TABLE ops_parent (LIKE eventsourced.events) PARTITION BY RANGE (position);
ALTER TABLE ops_parent ATTACH PARTITION eventsourced.events FOR VALUES FROM (MINVALUE) TO (MAXVALUE);
DROP TABLE ops_parent;
CREATE TABLE ops_child () INHERITS (eventsourced.events);
-- the extension's types, view, indexes and triggers
ALTER TYPE eventsourced.event_data ADD ATTRIBUTE extra text;
ALTER TYPE eventsourced.command_result ADD ATTRIBUTE extra text;
ALTER VIEW eventsourced.projections RESET (security_invoker);
ALTER INDEX eventsourced.events RENAME TO events2;
ALTER INDEX eventsourced.events_pkey RENAME TO events_pk;
DROP INDEX eventsourced.events_event_id_key;
DROP TRIGGER events_immutable ON eventsourced.events;
\set VERBOSITY terse
BEGIN;
ALTER TABLE eventsourced.events DISABLE TRIGGER events_immutable;
ALTER TABLE eventsourced.events ENABLE ALWAYS TRIGGER events_immutable;
ALTER TABLE eventsourced.events ENABLE ROW LEVEL SECURITY;
ALTER TABLE eventsourced.events DISABLE ROW LEVEL SECURITY;
ALTER TABLE eventsourced.entity_states SET (fillfactor = 80);
ALTER TABLE eventsourced.events ALTER COLUMN entity_id SET STATISTICS 500;
ALTER TABLE eventsourced.events ALTER COLUMN entity_id SET (n_distinct = 100);
ALTER TABLE eventsourced.events SET TABLESPACE pg_default;
ALTER TABLE eventsourced.events OWNER TO CURRENT_USER;
ALTER INDEX eventsourced.events_pkey SET (fillfactor = 90);
CREATE INDEX ops_by_event_type ON eventsourced.events (event_type);
SET LOCAL enable_seqscan = off;
SET LOCAL enable_bitmapscan = off;
SELECT eventsourced.append('ops_idx', 'e1', 0, 'Indexed', '{}');
SELECT count(*) FROM eventsourced.events WHERE event_type = 'Indexed';
ROLLBACK;
-- other tables are not concerned
CREATE TABLE ops_other (a int);
ALTER TABLE ops_other ADD COLUMN b int;
DROP TABLE ops_other;
-- with the guard disabled by a superuser, a changed table is refused by
-- the writers instead of crashing them (rolled back)
BEGIN;
ALTER EVENT TRIGGER eventsourced_ddl_guard DISABLE;
ALTER TABLE eventsourced.events ADD COLUMN tenant text NOT NULL DEFAULT 'x';
\set VERBOSITY default
SELECT eventsourced.append('ops_ddl', 'e1', 0, 'E', '{}');
ROLLBACK;
BEGIN;
ALTER EVENT TRIGGER eventsourced_ddl_guard DISABLE;
ALTER TYPE eventsourced.event_data ADD ATTRIBUTE a1 text, ADD ATTRIBUTE a2 text,
    ADD ATTRIBUTE a3 text, ADD ATTRIBUTE a4 text, ADD ATTRIBUTE a5 text;
SELECT eventsourced.append('ops_ddl', 'e1', 0,
    ARRAY[ROW('E', '{}', NULL, NULL, 'x', 'x', 'x', 'x', 'x')::eventsourced.event_data]);
ROLLBACK;
BEGIN;
ALTER EVENT TRIGGER eventsourced_ddl_guard DISABLE;
ALTER TYPE eventsourced.command_result ADD ATTRIBUTE extra text;
SELECT seq_no FROM eventsourced.handle_command('ops', 'f9', 'Add', '{"n": 1}');
ROLLBACK;
BEGIN;
ALTER EVENT TRIGGER eventsourced_ddl_guard DISABLE;
ALTER TABLE eventsourced.entity_states ADD COLUMN note text;
SELECT seq_no FROM eventsourced.handle_command('ops', 'f9', 'Add', '{"n": 1}');
ROLLBACK;
SELECT eventsourced.append('ops_ddl', 'e1', 0, 'E', '{}');

DELETE FROM eventsourced.commands WHERE entity_type = 'ops';
DELETE FROM eventsourced.entity_types WHERE entity_type = 'ops';
