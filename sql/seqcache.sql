-- The shared seq_no cache: with the library preloaded, writers find an
-- entity's last seq_no in shared memory instead of the index.  Every answer
-- must be the one the index gives, after commits, rollbacks, savepoints and
-- writes that bypass append(); this file's output is the same with the
-- cache on (preloaded) and off.
\set SHOW_CONTEXT never
SELECT current_setting('shared_preload_libraries') LIKE '%eventsourced%' AS preloaded \gset
SELECT hits AS hits0 FROM eventsourced.seq_cache_stats() \gset

-- Committed appends are remembered; a stale writer is still refused.
SELECT eventsourced.append('sc', 'a', 0, 'E', '{}');
SELECT eventsourced.append('sc', 'a', 1, 'E', '{}');
SELECT eventsourced.append('sc', 'a', 1, 'E', '{}');
SELECT eventsourced.append('sc', 'a', NULL, 'E', '{}');
SELECT (hits > :hits0) = :'preloaded'::boolean AS cache_answered FROM eventsourced.seq_cache_stats();

-- A rolled-back transaction publishes nothing.
BEGIN;
SELECT eventsourced.append('sc', 'a', 3, 'E', '{}');
ROLLBACK;
SELECT eventsourced.append('sc', 'a', 3, 'E', '{}');

-- Savepoints rolled back: the value from before them counts, in the
-- transaction and after it commits.
BEGIN;
SELECT eventsourced.append('sc', 'a', 4, 'E', '{}');
SAVEPOINT s;
SELECT eventsourced.append('sc', 'a', 5, 'E', '{}');
ROLLBACK TO SAVEPOINT s;
SELECT eventsourced.append('sc', 'a', 5, 'E', '{}');
SAVEPOINT t;
SELECT eventsourced.append('sc', 'a', 6, 'E', '{}');
ROLLBACK TO SAVEPOINT t;
COMMIT;
SELECT eventsourced.append('sc', 'a', 7, 'E', '{}');
SELECT eventsourced.append('sc', 'a', 6, 'E', '{}');
SELECT eventsourced.last_seq_no('sc', 'a');

-- The same when the savepoint took the entity first, and when an exception
-- block catches the conflict.
BEGIN;
SAVEPOINT s;
SELECT eventsourced.append('sc', 'b', 0, 'E', '{}');
ROLLBACK TO SAVEPOINT s;
SELECT eventsourced.append('sc', 'b', 0, 'E', '{}');
COMMIT;
DO $$
BEGIN
    PERFORM eventsourced.append('sc', 'b', 1, 'E', '{}');
    BEGIN
        PERFORM eventsourced.append('sc', 'b', 2, 'E', '{}');
        PERFORM eventsourced.append('sc', 'b', 2, 'E', '{}');
    EXCEPTION WHEN SQLSTATE 'SC001' THEN
        RAISE NOTICE 'conflict caught';
    END;
END $$;
SELECT eventsourced.append('sc', 'b', 2, 'E', '{}');
SELECT eventsourced.last_seq_no('sc', 'b');

-- Entities interleaved in one transaction.
BEGIN;
SELECT eventsourced.append('sc', 'x', 0, 'E', '{}');
SELECT eventsourced.append('sc', 'y', 0, 'E', '{}');
SELECT eventsourced.append('sc', 'x', 1, 'E', '{}');
SELECT eventsourced.append('sc', 'y', NULL, 'E', '{}');
COMMIT;
SELECT eventsourced.append('sc', 'x', 2, 'E', '{}'), eventsourced.append('sc', 'y', 2, 'E', '{}');

-- More entities in one transaction than it tracks for the cache.
BEGIN;
SELECT count(*) FROM generate_series(1, 100) g, eventsourced.append('many', g::text, 0, 'E', '{}');
COMMIT;
SELECT count(*) FILTER (WHERE a = 2) AS appended_2
  FROM generate_series(1, 100) g, eventsourced.append('many', g::text, 1, 'E', '{}') a;
SELECT count(*) AS last_2 FROM generate_series(1, 100) g
 WHERE eventsourced.last_seq_no('many', g::text) = 2;

-- Names too long to cache behave the same.
SELECT eventsourced.append(repeat('t', 40), repeat('i', 40), 0, 'E', '{}');
SELECT eventsourced.append(repeat('t', 40), repeat('i', 40), 1, 'E', '{}');
SELECT eventsourced.append(repeat('t', 40), repeat('i', 40), 1, 'E', '{}');

-- A purge in one transaction, the documented way: the entity starts over.
BEGIN;
ALTER TABLE eventsourced.events DISABLE TRIGGER events_immutable;
DELETE FROM eventsourced.events WHERE entity_type = 'sc' AND entity_id = 'a';
ALTER TABLE eventsourced.events ENABLE ALWAYS TRIGGER events_immutable;
COMMIT;
SELECT eventsourced.append('sc', 'a', 0, 'E', '{}');

-- A purge over several transactions.
ALTER TABLE eventsourced.events DISABLE TRIGGER events_immutable;
DELETE FROM eventsourced.events WHERE entity_type = 'sc' AND entity_id = 'a';
SELECT eventsourced.append('sc', 'a', 0, 'E', '{}');
DELETE FROM eventsourced.events WHERE entity_type = 'sc' AND entity_id = 'a';
ALTER TABLE eventsourced.events ENABLE ALWAYS TRIGGER events_immutable;
SELECT eventsourced.append('sc', 'a', 0, 'E', '{}');

-- A row written by a plain INSERT (a superuser, a restore) is seen.
INSERT INTO eventsourced.events (entity_type, entity_id, seq_no, position, event_type, payload)
VALUES ('sc', 'a', 2, nextval('eventsourced.events_position_seq'), 'E', '{}');
SELECT eventsourced.append('sc', 'a', 1, 'E', '{}');
SELECT eventsourced.append('sc', 'a', 2, 'E', '{}');

-- TRUNCATE (rolled back here) is seen too.
BEGIN;
ALTER TABLE eventsourced.events DISABLE TRIGGER events_no_truncate;
TRUNCATE eventsourced.events;
SELECT eventsourced.append('sc', 'a', 0, 'E', '{}');
ROLLBACK;
SELECT eventsourced.append('sc', 'a', 3, 'E', '{}');

-- The generation trigger is a trigger only.
SELECT eventsourced.events_changed();
