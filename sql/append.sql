-- eventsourced.append(): sequence numbers, the concurrency check, batches,
-- idempotent retries and every kind of bad input.
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

-- A new entity starts at 1; expected 0 means "must not exist yet".
SELECT eventsourced.append('account', 'a1', 0, 'Opened', '{"owner": "ann"}');
SELECT eventsourced.append('account', 'a1', 1, 'Deposited', '{"amount": 10}',
                           '{"user": "ann"}');
-- NULL expected_seq_no appends whatever the last seq_no is.
SELECT eventsourced.append('account', 'a1', NULL, 'Deposited', '{"amount": 5}');
SELECT eventsourced.last_seq_no('account', 'a1');
-- Another entity of the same type and one of another type have their own numbers.
SELECT eventsourced.append('account', 'a2', 0, 'Opened', '{"owner": "bob"}');
SELECT eventsourced.append('customer', 'a1', 0, 'Registered', 'null');
-- entity ids are case and byte sensitive
SELECT eventsourced.append('account', 'A1', 0, 'Opened', '{}');

-- A stale writer is refused with SQLSTATE SC001 and writes nothing.
SELECT eventsourced.append('account', 'a1', 1, 'Withdrawn', '{"amount": 1}');
SELECT pg_temp.sqlstate_of($$SELECT eventsourced.append('account', 'a1', 1, 'Withdrawn', '{}')$$);
SELECT eventsourced.append('account', 'a1', 0, 'Opened', '{}');
SELECT eventsourced.append('account', 'nobody', 4, 'Deposited', '{}');
SELECT eventsourced.append('account', 'a1', 99, 'Deposited', '{}');
SELECT eventsourced.last_seq_no('account', 'a1');
SELECT count(*) FROM eventsourced.events WHERE entity_id = 'nobody';

-- Batches: consecutive seq_nos, the last one is returned, all or nothing.
SELECT eventsourced.append('account', 'a3', 0, ARRAY[
    eventsourced.event('Opened', '{"owner": "cy"}'),
    eventsourced.event('Deposited', '{"amount": 1}', '{"m": 1}'),
    eventsourced.event('Deposited', '{"amount": 2}')]);
SELECT seq_no, event_type, payload, metadata FROM eventsourced.events_by_id('account', 'a3');
SELECT eventsourced.append('account', 'a3', 2, ARRAY[eventsourced.event('Closed', '{}')]);
SELECT eventsourced.append('account', 'a3', 3, ARRAY[eventsourced.event('Closed', '{}')]::eventsourced.event_data[]);
-- composite built by hand works too
SELECT eventsourced.append('account', 'a3', 4,
    ARRAY[ROW('Reopened', '{}', NULL, NULL)::eventsourced.event_data]);
-- positions grow with every event and are unique
SELECT count(*) = count(DISTINCT position) AS unique_positions,
       bool_and(position > 0) AS positive
  FROM eventsourced.events;
SELECT seq_no, position > lag(position) OVER (ORDER BY seq_no) AS grows
  FROM eventsourced.events_by_id('account', 'a3') ORDER BY seq_no;
-- recorded_at is the transaction's start time
BEGIN;
SELECT eventsourced.append('account', 'a4', 0, 'Opened', '{}');
SELECT recorded_at = now() AS is_now FROM eventsourced.events_by_id('account', 'a4');
COMMIT;

-- Idempotent retries: an event_id the entity holds returns its first seq_no.
SELECT eventsourced.append('order', 'o1', 0, 'Placed', '{"total": 3}', NULL,
                           '11111111-1111-1111-1111-111111111111');
SELECT eventsourced.append('order', 'o1', 0, 'Placed', '{"total": 3}', NULL,
                           '11111111-1111-1111-1111-111111111111');
SELECT eventsourced.append('order', 'o1', NULL, 'Placed', '{"total": 3}', NULL,
                           '11111111-1111-1111-1111-111111111111');
SELECT count(*) FROM eventsourced.events WHERE entity_id = 'o1';
-- batches retry as a whole
SELECT eventsourced.append('order', 'o1', 1, ARRAY[
    eventsourced.event('Paid', '{}', NULL, '22222222-2222-2222-2222-222222222222'),
    eventsourced.event('Shipped', '{}', NULL, '33333333-3333-3333-3333-333333333333')]);
SELECT eventsourced.append('order', 'o1', 1, ARRAY[
    eventsourced.event('Paid', '{}', NULL, '22222222-2222-2222-2222-222222222222'),
    eventsourced.event('Shipped', '{}', NULL, '33333333-3333-3333-3333-333333333333')]);
SELECT count(*) FROM eventsourced.events WHERE entity_id = 'o1';
-- a batch only partly appended before is refused
SELECT eventsourced.append('order', 'o1', 3, ARRAY[
    eventsourced.event('Paid', '{}', NULL, '22222222-2222-2222-2222-222222222222'),
    eventsourced.event('Refunded', '{}', NULL, '44444444-4444-4444-4444-444444444444')]);
SELECT eventsourced.append('order', 'o1', 3, ARRAY[
    eventsourced.event('Paid', '{}', NULL, '22222222-2222-2222-2222-222222222222'),
    eventsourced.event('Refunded', '{}')]);
-- an exact retry of a batch mixing events with and without ids is a retry
SELECT eventsourced.append('order', 'o4', 0, ARRAY[
    eventsourced.event('Placed', '{}'),
    eventsourced.event('Paid', '{}', NULL, '66666666-6666-6666-6666-666666666666'),
    eventsourced.event('Noted', '{}')]);
SELECT eventsourced.append('order', 'o4', 0, ARRAY[
    eventsourced.event('Placed', '{}'),
    eventsourced.event('Paid', '{}', NULL, '66666666-6666-6666-6666-666666666666'),
    eventsourced.event('Noted', '{}')]);
SELECT count(*) FROM eventsourced.events WHERE entity_id = 'o4';
-- but not one whose id-less events differ, or sit elsewhere
SELECT eventsourced.append('order', 'o4', 0, ARRAY[
    eventsourced.event('Placed', '{}'),
    eventsourced.event('Paid', '{}', NULL, '66666666-6666-6666-6666-666666666666'),
    eventsourced.event('Cancelled', '{}')]);
SELECT eventsourced.append('order', 'o4', 3, ARRAY[
    eventsourced.event('Noted', '{}'),
    eventsourced.event('Paid', '{}', NULL, '66666666-6666-6666-6666-666666666666')]);
-- ids held, but not as one earlier append of this batch (two appends, retried
-- as one batch in the other order)
SELECT eventsourced.append('order', 'o5', 0, 'P', '{}', NULL, 'b0b0b0b0-0000-0000-0000-000000000001');
SELECT eventsourced.append('order', 'o5', 1, 'Q', '{}', NULL, 'b0b0b0b0-0000-0000-0000-000000000002');
SELECT eventsourced.append('order', 'o5', 2, ARRAY[
    eventsourced.event('Q', '{}', NULL, 'b0b0b0b0-0000-0000-0000-000000000002'),
    eventsourced.event('P', '{}', NULL, 'b0b0b0b0-0000-0000-0000-000000000001')]);
-- event ids are global: another entity cannot reuse one
SELECT eventsourced.append('order', 'o2', 0, 'Placed', '{}', NULL,
                           '11111111-1111-1111-1111-111111111111');
-- the same id twice in one batch
SELECT pg_temp.sqlstate_of($$SELECT eventsourced.append('order', 'o3', 0, ARRAY[
    eventsourced.event('A', '{}', NULL, '55555555-5555-5555-5555-555555555555'),
    eventsourced.event('B', '{}', NULL, '55555555-5555-5555-5555-555555555555')])$$);
SELECT eventsourced.append('order', 'o3', 0, ARRAY[
    eventsourced.event('A', '{}', NULL, '55555555-5555-5555-5555-555555555555'),
    eventsourced.event('B', '{}'),
    eventsourced.event('C', '{}', NULL, '55555555-5555-5555-5555-555555555555')]);
SELECT count(*) FROM eventsourced.events WHERE entity_id IN ('o2', 'o3');

-- Bad input: a clear error, nothing written.
SELECT eventsourced.append(NULL, 'x', 0, 'E', '{}');
SELECT eventsourced.append('', 'x', 0, 'E', '{}');
SELECT eventsourced.append('t', NULL, 0, 'E', '{}');
SELECT eventsourced.append('t', '', 0, 'E', '{}');
SELECT eventsourced.append('t', 'x', -1, 'E', '{}');
SELECT eventsourced.append('t', 'x', 0, NULL, '{}');
SELECT eventsourced.append('t', 'x', 0, '', '{}');
SELECT eventsourced.append('t', 'x', 0, 'E', NULL);
SELECT eventsourced.append(repeat('t', 256), 'x', 0, 'E', '{}');
SELECT eventsourced.append('t', repeat('x', 1025), 0, 'E', '{}');
SELECT eventsourced.append('t', 'x', 0, repeat('E', 256), '{}');
SELECT eventsourced.append('t', 'x', 0, NULL::eventsourced.event_data[]);
SELECT eventsourced.append('t', 'x', 0, ARRAY[]::eventsourced.event_data[]);
SELECT eventsourced.append('t', 'x', 0, ARRAY[NULL]::eventsourced.event_data[]);
SELECT eventsourced.append('t', 'x', 0, ARRAY[eventsourced.event('E', '{}'), NULL]);
SELECT eventsourced.append('t', 'x', 0, ARRAY[eventsourced.event(NULL, '{}')]);
SELECT eventsourced.append('t', 'x', 0, ARRAY[eventsourced.event('', '{}')]);
SELECT eventsourced.append('t', 'x', 0, ARRAY[eventsourced.event('E', NULL)]);
SELECT eventsourced.append('t', 'x', 0, ARRAY[[eventsourced.event('E', '{}')]]);
SELECT eventsourced.append('t', 'x', -5, ARRAY[eventsourced.event('E', '{}')]);
SELECT pg_temp.sqlstate_of($$SELECT eventsourced.append(NULL, 'x', 0, 'E', '{}')$$) AS null_type,
       pg_temp.sqlstate_of($$SELECT eventsourced.append('t', 'x', -1, 'E', '{}')$$) AS negative,
       pg_temp.sqlstate_of($$SELECT eventsourced.append('t', 'x', 0, 'E', NULL)$$) AS null_payload;
SELECT count(*) FROM eventsourced.events WHERE entity_type = 't';

-- An error later in the transaction takes the append with it.
BEGIN;
SELECT eventsourced.append('account', 'a5', 0, 'Opened', '{}');
SELECT 1 / 0;
ROLLBACK;
SELECT eventsourced.last_seq_no('account', 'a5');
-- Several appends to one entity in one transaction see each other.
BEGIN;
SELECT eventsourced.append('account', 'a5', 0, 'Opened', '{}');
SELECT eventsourced.append('account', 'a5', 1, 'Deposited', '{}');
COMMIT;
-- A caught error inside a subtransaction leaves the entity unchanged.
DO $$
BEGIN
    PERFORM eventsourced.append('account', 'a5', 0, 'Opened', '{}');
EXCEPTION WHEN SQLSTATE 'SC001' THEN
    RAISE NOTICE 'conflict caught: %', SQLERRM;
END $$;
SELECT eventsourced.last_seq_no('account', 'a5');

-- Large payloads are stored out of line and read back intact.
SELECT eventsourced.append('blob', 'b1', 0, 'Big',
    jsonb_build_object('data', repeat('x', 300000)));
SELECT length(payload->>'data') FROM eventsourced.events_by_id('blob', 'b1');

-- A read-only transaction cannot append.
BEGIN READ ONLY;
SELECT eventsourced.append('account', 'a6', 0, 'Opened', '{}');
ROLLBACK;

-- Messages quote an entity's type and id, doubling any double quote in them,
-- so that ('a/b', 'c') and ('a', 'b/c') read apart.
SELECT eventsourced.append('a/b', 'c', 1, 'E', '{}');
SELECT eventsourced.append('a', 'b/c', 1, 'E', '{}');
SELECT eventsourced.append('say "hi"', 'c', 1, 'E', '{}');
-- names with control characters are written as \xNN in messages: a name
-- cannot forge a line of the message
SELECT eventsourced.append(E'line\nDETAIL:  forged', 'i', 5, 'E', '{}');
