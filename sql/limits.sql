-- Every documented limit at its edge and one past it (names counted in
-- bytes, multibyte names included), and the SQLSTATE of every error in
-- README's table.
\set SHOW_CONTEXT never
\set VERBOSITY sqlstate

-- entity_type and event_type: at most 255 bytes; entity_id: at most 1024.
SELECT eventsourced.append(repeat('t', 255), 'x', 0, 'E', '{}');
SELECT eventsourced.append(repeat('t', 256), 'x', 0, 'E', '{}');
-- 'é' is 2 bytes in UTF-8: 127 of them and one 'a' make 255 bytes, 128 make 256
SELECT eventsourced.append(repeat('é', 127) || 'a', 'x', 0, 'E', '{}');
SELECT eventsourced.append(repeat('é', 128), 'x', 0, 'E', '{}');
SELECT eventsourced.append('lim', repeat('i', 1024), 0, 'E', '{}');
SELECT eventsourced.append('lim', repeat('i', 1025), 0, 'E', '{}');
SELECT eventsourced.append('lim', repeat('é', 512), 0, 'E', '{}');
SELECT eventsourced.append('lim', repeat('é', 512) || 'a', 0, 'E', '{}');
SELECT eventsourced.append('lim', 'e', 0, repeat('é', 127) || 'a', '{}');
SELECT eventsourced.append('lim', 'e', 0, repeat('é', 128), '{}');
SELECT octet_length(entity_type), octet_length(entity_id)
  FROM eventsourced.events WHERE entity_id LIKE 'é%' OR entity_type LIKE 'é%' ORDER BY 1, 2;
-- an EventBatch to append holds at most 100,000 events
SELECT eventsourced.append_pb(decode(repeat('0a0f12036c696d1a01622a014532027b7d', 100000), 'hex'), 0);
SELECT eventsourced.append_pb(decode(repeat('0a0f12036c696d1a01632a014532027b7d', 100001), 'hex'), 0);
SELECT eventsourced.last_seq_no('lim', 'b'), eventsourced.last_seq_no('lim', 'c');
-- decoding is bounded by 64 MB plus twice the input: one event and
-- three million unknown varint fields (6 MB) would make protobuf-c ask for
-- over 170 MB
SELECT eventsourced.append_pb(decode('0a0f12036c696d1a01642a014532027b7d' || repeat('1800', 3000000), 'hex'), 0);
-- the same event with a thousand unknown fields is fine
SELECT eventsourced.append_pb(decode('0a0f12036c696d1a01642a014532027b7d' || repeat('1800', 1000), 'hex'), 0);

-- README's errors table, one case each
SELECT eventsourced.append('lim', 'e', 5, 'E', '{}');                       -- SC001
SELECT eventsourced.append(NULL, 'x', 0, 'E', '{}');                        -- 22004
SELECT eventsourced.append('lim', 'x', 0, 'E', NULL);                       -- 22004
SELECT eventsourced.append('', 'x', 0, 'E', '{}');                          -- 22023
SELECT eventsourced.append('lim', 'x', -1, 'E', '{}');                      -- 22023
SELECT eventsourced.append('lim', 'x', 0, ARRAY[]::eventsourced.event_data[]); -- 22023
SELECT eventsourced.save_snapshot('lim', 'e', 99, '{}');                    -- 22023
SELECT eventsourced.read_all(-1);                                           -- 22023
SELECT eventsourced.append('lim', 'x', 0,
    ARRAY[[eventsourced.event('E', '{}')], [eventsourced.event('F', '{}')]]); -- 2202E
SELECT eventsourced.append('lim', 'o1', 0, 'E', '{}', NULL, '77777777-7777-7777-7777-777777777777');
SELECT eventsourced.append('lim', 'o2', 0, 'E', '{}', NULL, '77777777-7777-7777-7777-777777777777'); -- 23505
SELECT eventsourced.append('lim', 'o3', 0, ARRAY[
    eventsourced.event('E', '{}', NULL, '88888888-8888-8888-8888-888888888888'),
    eventsourced.event('E', '{}', NULL, '88888888-8888-8888-8888-888888888888')]);        -- 23505
SELECT eventsourced.append('lim', 'o1', 0, ARRAY[
    eventsourced.event('E', '{}', NULL, '77777777-7777-7777-7777-777777777777'),
    eventsourced.event('E', '{}', NULL, '99999999-9999-9999-9999-999999999999')]);        -- 23505
UPDATE eventsourced.events SET payload = '{}' WHERE entity_type = 'lim';    -- 42501
DELETE FROM eventsourced.events WHERE entity_type = 'lim';                  -- 42501
BEGIN READ ONLY;
SELECT eventsourced.append('lim', 'ro', 0, 'E', '{}');                      -- 25006
ROLLBACK;
BEGIN;
SELECT eventsourced.append('lim', 'p', 0, 'E', '{}');
PREPARE TRANSACTION 'lim';                                                  -- 0A000
SELECT count(*) FROM pg_prepared_xacts WHERE gid = 'lim';
BEGIN;
ALTER EVENT TRIGGER eventsourced_ddl_guard DISABLE;
ALTER TABLE eventsourced.events ADD COLUMN extra int;
SELECT eventsourced.append('lim', 's', 0, 'E', '{}');                       -- 55000
ROLLBACK;
ALTER TABLE eventsourced.events ADD COLUMN extra int;                       -- 0A000
-- nothing above wrote an event it refused
SELECT entity_id, count(*) FROM eventsourced.events
 WHERE entity_type = 'lim' AND entity_id IN ('x', 'o2', 'o3', 'ro', 'p', 's') GROUP BY 1;

-- The last positions: the largest bigint is never handed out (the horizon
-- is one above the highest position), with or without the library
-- preloaded (whose block of 1,024 positions runs out first).  In a
-- database of its own, since its sequence ends at the limit.
CREATE DATABASE es_limits_positions;
\c es_limits_positions
SET client_min_messages = warning;
CREATE EXTENSION eventsourced;
RESET client_min_messages;
SELECT eventsourced.append('edge', 'e', 0, 'E', '{}');
SELECT setval('eventsourced.events_position_seq', 9223372036854775806) > 0 AS moved;
\set VERBOSITY default
DO $$
BEGIN
    FOR i IN 1..2000 LOOP
        PERFORM eventsourced.append('edge', 'e' || i, 0, 'E', '{}');
    END LOOP;
EXCEPTION WHEN sequence_generator_limit_exceeded THEN
    RAISE NOTICE 'exhausted: %', SQLERRM;
END $$;
\set VERBOSITY sqlstate
SELECT count(*), eventsourced.feed_horizon() > max(position) AS horizon_above
  FROM eventsourced.events;
SELECT entity_id FROM eventsourced.events_by_type('edge');
\c contrib_regression
DROP DATABASE es_limits_positions;
