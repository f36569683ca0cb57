-- The read functions: one entity's events, the last seq_no, the feed by type
-- and over all types, paging and bad input.
\set SHOW_CONTEXT never
SELECT eventsourced.append('cart', 'c1', 0, ARRAY[
    eventsourced.event('Created', '{}'),
    eventsourced.event('ItemAdded', '{"sku": "apple"}', '{"by": "u1"}'),
    eventsourced.event('ItemAdded', '{"sku": "pear"}'),
    eventsourced.event('CheckedOut', '{}', NULL, 'aaaaaaaa-0000-0000-0000-000000000001')]);
SELECT eventsourced.append('cart', 'c2', 0, 'Created', '{}');
SELECT eventsourced.append('user', 'u1', 0, 'SignedUp', '{"name": "ann"}');
SELECT eventsourced.append('cart', 'c2', 1, 'ItemAdded', '{"sku": "plum"}');

-- events_by_id: seq_no order, from_seq_no, max_count
SELECT seq_no, event_type, payload, metadata, event_id
  FROM eventsourced.events_by_id('cart', 'c1');
SELECT seq_no, event_type FROM eventsourced.events_by_id('cart', 'c1', 3);
SELECT seq_no, event_type FROM eventsourced.events_by_id('cart', 'c1', 2, 2);
SELECT seq_no FROM eventsourced.events_by_id('cart', 'c1', 5);
SELECT seq_no FROM eventsourced.events_by_id('cart', 'c1', 1, 0);
SELECT count(*) FROM eventsourced.events_by_id('cart', 'nope');
SELECT eventsourced.last_seq_no('cart', 'c1'), eventsourced.last_seq_no('cart', 'c2'),
       eventsourced.last_seq_no('cart', 'nope');
-- the position column matches the feed
SELECT bool_and(b.position = a.position) FROM eventsourced.events_by_id('cart', 'c1') b
  JOIN eventsourced.read_all((SELECT min(position) - 1 FROM eventsourced.events WHERE entity_type = 'cart')) a ON a.entity_type = 'cart' AND a.entity_id = 'c1' AND a.seq_no = b.seq_no;

-- events_by_type: position order across entities of one type
SELECT entity_id, seq_no, event_type FROM eventsourced.events_by_type('cart');
SELECT entity_id, seq_no, event_type FROM eventsourced.events_by_type('user');
SELECT count(*) FROM eventsourced.events_by_type('nothing');
-- paging by the last position received yields every event exactly once
CREATE TEMP TABLE paged (position bigint, entity_id text, seq_no bigint);
DO $$
DECLARE
    last_pos bigint := 0;
    n int;
BEGIN
    FOR page IN 1..1000 LOOP   -- bounded: a feed that repeats a row must not hang the suite
        INSERT INTO paged
            SELECT position, entity_id, seq_no
              FROM eventsourced.events_by_type('cart', last_pos, 2);
        GET DIAGNOSTICS n = ROW_COUNT;
        EXIT WHEN n = 0;
        SELECT max(position) INTO last_pos FROM paged;
    END LOOP;
END $$;
SELECT entity_id, seq_no FROM paged ORDER BY position;
SELECT (SELECT count(*) FROM paged) = (SELECT count(*) FROM eventsourced.events WHERE entity_type = 'cart') AS complete;

-- read_all: every type, in position order, with entity_type
-- (filtered to this test's types: other tests share the database)
SELECT entity_type, entity_id, seq_no, event_type
  FROM eventsourced.read_all((SELECT min(position) - 1 FROM eventsourced.events WHERE entity_type = 'cart'))
 WHERE entity_type IN ('cart', 'user');
SELECT count(*) FROM eventsourced.read_all(0, 2);
SELECT (SELECT array_agg(position ORDER BY position) FROM eventsourced.read_all(0, 3))
     = (SELECT array_agg(position ORDER BY position) FROM (SELECT position FROM eventsourced.events ORDER BY position LIMIT 3) p)
       AS first_three;
SELECT entity_type, entity_id, seq_no
  FROM eventsourced.read_all((SELECT min(position) FROM eventsourced.events WHERE entity_type = 'cart'), 4);
SELECT count(*) FROM eventsourced.read_all(0, 0);
SELECT count(*) FROM eventsourced.read_all((SELECT max(position) FROM eventsourced.events));
-- the feed horizon is past every committed event when nothing is in flight
SELECT eventsourced.feed_horizon() > (SELECT max(position) FROM eventsourced.events) AS horizon_past_all;
-- feed_checkpoint: where a reader resumes after an empty page, just below
-- the next event it has not read, or just below the horizon
SELECT eventsourced.feed_checkpoint('cart', 0)
       = (SELECT min(position) - 1 FROM eventsourced.events WHERE entity_type = 'cart') AS before_first_cart;
SELECT eventsourced.feed_checkpoint('cart', (SELECT max(position) FROM eventsourced.events WHERE entity_type = 'cart'))
       = eventsourced.feed_horizon() - 1 AS past_last_cart;
SELECT eventsourced.feed_checkpoint(NULL, 0)
       = (SELECT min(position) - 1 FROM eventsourced.events) AS before_first_event;
SELECT eventsourced.feed_checkpoint(NULL, (SELECT max(position) FROM eventsourced.events))
       = eventsourced.feed_horizon() - 1 AS past_last_event;
SELECT eventsourced.feed_checkpoint('no such type') = eventsourced.feed_horizon() - 1 AS empty_type;
-- never behind after_position, even past the horizon
SELECT eventsourced.feed_checkpoint('cart', 9000000000000000000);
-- reading from the checkpoint returns what reading from after_position does
SELECT (SELECT array_agg(position) FROM eventsourced.events_by_type('cart', eventsourced.feed_checkpoint('cart', 0)))
     = (SELECT array_agg(position) FROM eventsourced.events_by_type('cart', 0)) AS same_events;
-- an append in the checkpoint's own transaction counts (and is gone after ROLLBACK)
BEGIN;
SELECT eventsourced.append('user', 'u9', 0, 'SignedUp', '{}');
SELECT eventsourced.feed_checkpoint('user', (SELECT max(position) FROM eventsourced.events WHERE entity_type = 'user' AND entity_id <> 'u9'))
       = (SELECT position - 1 FROM eventsourced.events WHERE entity_id = 'u9') AS stops_before_own_append;
ROLLBACK;
-- an append in the reader's own transaction is readable there
BEGIN;
SELECT eventsourced.append('user', 'u2', 0, 'SignedUp', '{}');
SELECT entity_id FROM eventsourced.events_by_type('user') ORDER BY position;
ROLLBACK;
SELECT entity_id FROM eventsourced.events_by_type('user') ORDER BY position;

-- an append and a feed read in one statement: the read sees the append,
-- so its checkpoint does not pass it
SELECT eventsourced.append('stmt', 'r1', NULL, 'E', '{}') AS s,
       eventsourced.feed_checkpoint('stmt', 0) AS cp \gset
SELECT :cp = (SELECT position - 1 FROM eventsourced.events WHERE entity_type = 'stmt') AS stops_before_it;
WITH a AS (SELECT eventsourced.append('stmt', 'r2', NULL, 'E', '{}') AS s)
SELECT s, length(eventsourced.events_by_type_pb('stmt', :cp)) > 20 AS batch_has_events FROM a;

-- Bad input
SELECT eventsourced.feed_checkpoint('cart', NULL);
SELECT eventsourced.feed_checkpoint('cart', -1);
SELECT eventsourced.feed_checkpoint('', 0);
SELECT eventsourced.feed_checkpoint(repeat('t', 256), 0);
SELECT * FROM eventsourced.events_by_id(NULL, 'c1');
SELECT * FROM eventsourced.events_by_id('cart', NULL);
SELECT * FROM eventsourced.events_by_id('', 'c1');
SELECT * FROM eventsourced.events_by_id('cart', 'c1', 0);
SELECT * FROM eventsourced.events_by_id('cart', 'c1', NULL);
SELECT * FROM eventsourced.events_by_id('cart', 'c1', 1, -1);
SELECT eventsourced.last_seq_no(NULL, 'c1');
SELECT eventsourced.last_seq_no('cart', '');
SELECT * FROM eventsourced.events_by_type(NULL);
SELECT * FROM eventsourced.events_by_type('');
SELECT * FROM eventsourced.events_by_type(repeat('x', 300));
SELECT * FROM eventsourced.events_by_type('cart', -1);
SELECT * FROM eventsourced.events_by_type('cart', NULL);
SELECT * FROM eventsourced.events_by_type('cart', 0, -1);
SELECT * FROM eventsourced.events_by_type('cart', 0, NULL);
SELECT * FROM eventsourced.read_all(-5);
SELECT * FROM eventsourced.read_all(NULL);
SELECT * FROM eventsourced.read_all(0, -1);
SELECT * FROM eventsourced.read_all(0, NULL);
