-- Fencing (docs/scale-out.md, "Moving a partition"): entity_hash() equals
-- the proxy's documented hash, a fenced partition refuses every write path
-- with 40001 and nothing else, fences need the extension's owner, bad input
-- is refused and writes nothing.
\set SHOW_CONTEXT never
-- Runs a statement and returns its SQLSTATE ('00000' when it succeeds).
CREATE FUNCTION pg_temp.sqlstate_of(stmt text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE stmt;
    RETURN '00000';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END $$;

-- The documented test vectors (docs/scale-out.md).
SELECT t, i, eventsourced.entity_hash(t, i)
  FROM (VALUES ('account', 'a1'), ('counter', 'c1'), ('a', 'bc'), ('ab', 'c'),
               ('zähler', 'ü-1'), ('t', '')) v(t, i);
-- The C hash equals the proxy's SQL definition (sql/eventsourced_proxy--0.1.0.sql)
-- over names of every length 0..299 bytes, ASCII and multibyte.
SELECT count(*) AS names,
       count(*) FILTER (WHERE eventsourced.entity_hash(t, i) <>
           ('x' || substr(md5(octet_length(t)::text || ':' || t || i), 1, 8))::bit(32)::integer) AS differ
  FROM (SELECT repeat(chr(97 + n % 26), n % 7) || CASE WHEN n % 3 = 0 THEN 'ä€' ELSE '' END AS t,
               repeat(md5(n::text), n % 10) || CASE WHEN n % 5 = 0 THEN '😀' ELSE '' END AS i
          FROM generate_series(0, 299) n) v;
SELECT eventsourced.entity_hash(NULL, 'x') IS NULL AS strict;

-- Setting up: a command and its handler, data to protect.
CREATE SCHEMA fencetest;
CREATE FUNCTION fencetest.apply(state jsonb, event_type text, payload jsonb)
    RETURNS jsonb LANGUAGE sql RETURN jsonb_build_object('n', (state->>'n')::int + 1);
CREATE FUNCTION fencetest.bump(entity_id text, state jsonb, args jsonb)
    RETURNS eventsourced.decision LANGUAGE sql RETURN eventsourced.emit('Bumped', '{}');
SELECT eventsourced.register_entity('fen', 'fencetest.apply(jsonb, text, jsonb)', '{"n": 0}');
SELECT eventsourced.register_command('fen', 'Bump', 'fencetest.bump(text, jsonb, jsonb)');
SELECT eventsourced.append('fen', 'p1', 0, 'Opened', '{}');

-- With 2 partitions, fence the partition of fen/p1 only.
SELECT (SELECT min('p' || n) FROM generate_series(2, 50) n
         WHERE eventsourced.entity_hash('fen', 'p' || n) & 1 = eventsourced.entity_hash('fen', 'p1') & 1) AS same,
       (SELECT min('p' || n) FROM generate_series(2, 50) n
         WHERE eventsourced.entity_hash('fen', 'p' || n) & 1 <> eventsourced.entity_hash('fen', 'p1') & 1) AS other \gset
SELECT eventsourced.fence_partition(2, eventsourced.entity_hash('fen', 'p1') & 1);
-- fencing again changes nothing
SELECT eventsourced.fence_partition(2, eventsourced.entity_hash('fen', 'p1') & 1);
SELECT partitions, partition, target FROM eventsourced.fences;
-- the message, DETAIL and HINT of a refused write
SELECT eventsourced.append('fen', 'p1', 1, 'E', '{}');
-- every write path is refused with 40001 (retryable)
SELECT w, pg_temp.sqlstate_of(s) FROM (VALUES
    ('append', $$SELECT eventsourced.append('fen', 'p1', 1, 'E', '{}')$$),
    ('append, no check', $$SELECT eventsourced.append('fen', 'p1', NULL, 'E', '{}')$$),
    ('append, events', $$SELECT eventsourced.append('fen', 'p1', 1, ARRAY[eventsourced.event('E', '{}')])$$),
    ('append, retry by event_id', $$SELECT eventsourced.append('fen', 'p1', 0, 'Opened', '{}', NULL, '00000000-0000-0000-0000-0000000000f1')$$),
    ('append_binary', $$SELECT eventsourced.append_binary('fen', 'p1', 1, 'E', '\x01')$$),
    ('append_pb', $$SELECT eventsourced.append_pb('\x0a10120366656e1a0270312a015832027b7d', NULL)$$),
    ('handle_command', $$SELECT eventsourced.handle_command('fen', 'p1', 'Bump', '{}')$$),
    ('handle_command, id', $$SELECT eventsourced.handle_command('fen', 'p1', 'Bump', '{}', 'c1')$$),
    ('save_snapshot', $$SELECT eventsourced.save_snapshot('fen', 'p1', 1, '{"n": 1}')$$),
    ('save_snapshot_bytes', $$SELECT eventsourced.save_snapshot_bytes('fen', 'p1', 1, '\x01')$$),
    ('a new entity of the partition', format($$SELECT eventsourced.append('fen', %L, 0, 'E', '{}')$$, :'same'))
  ) v(w, s);
-- nothing was written; reads work
SELECT eventsourced.last_seq_no('fen', 'p1') AS last,
       (SELECT count(*) FROM eventsourced.snapshots WHERE entity_type = 'fen') AS snapshots,
       (SELECT count(*) FROM eventsourced.events_by_id('fen', 'p1')) AS events;
-- an entity of the other partition is written
SELECT eventsourced.append('fen', :'other', 0, 'E', '{}');
SELECT accepted, seq_no FROM eventsourced.handle_command('fen', :'other', 'Bump', '{}');
-- fence_wait() waits for nobody here; not in the transaction that fenced
SELECT eventsourced.fence_wait();
BEGIN;
SELECT eventsourced.fence_partition(4, 3);
SELECT eventsourced.fence_wait();
ROLLBACK;
-- nor in one that appended; and a transaction that waited cannot write
-- (other callers of fence_wait() leave it out)
BEGIN;
SELECT eventsourced.append('fen', :'other', 2, 'E', '{}');
SELECT eventsourced.fence_wait();
ROLLBACK;
BEGIN;
SELECT eventsourced.fence_wait();
SELECT eventsourced.append('fen', :'other', 2, 'E', '{}');
ROLLBACK;
-- unfenced, the partition takes writes again
SELECT eventsourced.unfence_partition(2, eventsourced.entity_hash('fen', 'p1') & 1);
SELECT eventsourced.unfence_partition(2, eventsourced.entity_hash('fen', 'p1') & 1);
SELECT eventsourced.append('fen', 'p1', 1, 'E', '{}');
SELECT accepted, seq_no, state FROM eventsourced.handle_command('fen', 'p1', 'Bump', '{}');

-- A fence written into the table by hand (by its owner) holds too, and one
-- of 1 partition fences everything; the table's checks refuse nonsense.
INSERT INTO eventsourced.fences (partitions, partition) VALUES (1, 0);
SELECT pg_temp.sqlstate_of($$SELECT eventsourced.append('anything', 'x', NULL, 'E', '{}')$$);
DELETE FROM eventsourced.fences;
SELECT pg_temp.sqlstate_of($$SELECT eventsourced.append('anything', 'x', NULL, 'E', '{}')$$);
SELECT pg_temp.sqlstate_of(format($$INSERT INTO eventsourced.fences (partitions, partition) VALUES (%s, %s)$$, p, n))
  FROM (VALUES (3, 0), (0, 0), (4, 4), (4, -1), (-2147483648, 0)) v(p, n);

-- Bad input: writes nothing.
SELECT eventsourced.fence_partition(NULL, 0);
SELECT eventsourced.fence_partition(16, NULL);
SELECT eventsourced.fence_partition(0, 0);
SELECT eventsourced.fence_partition(12, 0);
SELECT eventsourced.fence_partition(-2147483648, 0);
SELECT eventsourced.fence_partition(2147483647, 0);
SELECT eventsourced.fence_partition(16, 16);
SELECT eventsourced.fence_partition(16, -1);
SELECT eventsourced.unfence_partition(16, 99);
SELECT eventsourced.fence_partition(1073741824, 1073741823, 'host=db2 dbname=events');
SELECT partitions, partition, target FROM eventsourced.fences;
SELECT eventsourced.unfence_partition(1073741824, 1073741823);
SELECT count(*) AS fences FROM eventsourced.fences;

-- Privileges: only the extension's owner or a superuser fences.
SET client_min_messages = warning;
DROP ROLE IF EXISTS es_fencer;
RESET client_min_messages;
CREATE ROLE es_fencer;
GRANT USAGE ON SCHEMA eventsourced TO es_fencer;
SET ROLE es_fencer;
SELECT eventsourced.fence_partition(2, 0);
SELECT eventsourced.unfence_partition(2, 0);
SELECT eventsourced.fence_wait();
INSERT INTO eventsourced.fences (partitions, partition) VALUES (2, 0);
DELETE FROM eventsourced.fences;
SELECT eventsourced.entity_hash('account', 'a1');
RESET ROLE;
-- granted EXECUTE, still not the owner
GRANT EXECUTE ON FUNCTION eventsourced.fence_partition(integer, integer, text),
    eventsourced.unfence_partition(integer, integer), eventsourced.fence_wait() TO es_fencer;
SET ROLE es_fencer;
SELECT eventsourced.fence_partition(2, 0);
SELECT eventsourced.unfence_partition(2, 0);
SELECT eventsourced.fence_wait();
RESET ROLE;
SELECT count(*) AS fences FROM eventsourced.fences;
-- search_path tricks: a table of the same name first in the path changes
-- nothing, the fence is in eventsourced.fences
CREATE TEMP TABLE fences (partitions integer, partition integer);
SET search_path = pg_temp, public;
SELECT eventsourced.fence_partition(2, 0);
RESET search_path;
SELECT (SELECT count(*) FROM pg_temp.fences) AS temp, (SELECT count(*) FROM eventsourced.fences) AS real;
SELECT eventsourced.unfence_partition(2, 0);
DROP TABLE pg_temp.fences;
REVOKE ALL ON SCHEMA eventsourced FROM es_fencer;
REVOKE ALL ON FUNCTION eventsourced.fence_partition(integer, integer, text),
    eventsourced.unfence_partition(integer, integer), eventsourced.fence_wait() FROM es_fencer;
DROP ROLE es_fencer;
DROP SCHEMA fencetest CASCADE;
