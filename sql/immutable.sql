-- Events are immutable, for superusers too.
\set SHOW_CONTEXT never
SELECT eventsourced.append('memo', 'm1', 0, 'Written', '{"text": "hello"}');
UPDATE eventsourced.events SET payload = '{}' WHERE entity_id = 'd1';
DELETE FROM eventsourced.events WHERE entity_id = 'd1';
TRUNCATE eventsourced.events;
-- replica sessions are refused too (the triggers are ENABLE ALWAYS)
SET session_replication_role = replica;
DELETE FROM eventsourced.events;
RESET session_replication_role;
SELECT seq_no, payload FROM eventsourced.events_by_id('memo', 'm1');
-- the position sequence is not cached per backend (the feed relies on it)
SELECT seqcache FROM pg_sequence WHERE seqrelid = 'eventsourced.events_position_seq'::regclass;
-- PREPARE TRANSACTION is refused once the transaction has appended
BEGIN;
SELECT eventsourced.append('memo', 'm1', 1, 'Edited', '{}');
PREPARE TRANSACTION 'es_test';
SELECT eventsourced.last_seq_no('memo', 'm1');
-- a transaction that only read may be prepared
BEGIN;
SELECT count(*) FROM eventsourced.events_by_id('memo', 'm1');
PREPARE TRANSACTION 'es_read_only';
COMMIT PREPARED 'es_read_only';
-- the extension's tables are dumped by pg_dump
SELECT c.relname FROM pg_extension e, unnest(e.extconfig) AS t(oid)
  JOIN pg_class c ON c.oid = t.oid WHERE e.extname = 'eventsourced' ORDER BY 1;
