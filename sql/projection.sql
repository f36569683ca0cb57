-- Projections inside the database: create, run (exactly once), the error
-- strategies stop/skip/retry, reset, drop, the projections view, bad input.
\set SHOW_CONTEXT never
CREATE TABLE proj_totals (id text PRIMARY KEY, n bigint NOT NULL, events int NOT NULL);
CREATE TABLE proj_seen (pos bigint PRIMARY KEY, entity_type text, entity_id text,
                        seq_no bigint, event_type text);
-- a SQL handler: running totals per entity
CREATE FUNCTION proj_add(entity_id text, seq_no bigint, event_type text,
                         payload jsonb, pos bigint) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO proj_totals VALUES (entity_id, (payload->>'n')::bigint, 1)
    ON CONFLICT (id) DO UPDATE SET n = proj_totals.n + excluded.n,
                                   events = proj_totals.events + 1
$$;
-- a PL/pgSQL handler that records what it was given and fails on demand
CREATE FUNCTION proj_record(entity_id text, seq_no bigint, event_type text,
                            payload jsonb, pos bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF payload ? 'fail' THEN
        RAISE EXCEPTION 'cannot apply % of %', event_type, entity_id;
    END IF;
    INSERT INTO proj_seen VALUES (pos, NULL, entity_id, seq_no, event_type);
END $$;

SELECT eventsourced.append('meter', 'm' || (i % 3), NULL, 'Read', jsonb_build_object('n', i))
  FROM generate_series(1, 9) i;
SELECT eventsourced.append('other', 'o1', NULL, 'Noise', '{"n": 1000}');

SELECT eventsourced.create_projection('totals', 'meter', 'proj_add(text,bigint,text,jsonb,bigint)');
-- lag: positions from the checkpoint to the newest event of its type
SELECT name, entity_type, checkpoint, status, events_applied,
       lag = (SELECT max(position) FROM eventsourced.events WHERE entity_type = 'meter') AS lag_ok,
       error_strategy
  FROM eventsourced.projections;
-- a run applies the next events in the caller's transaction
SELECT eventsourced.run_projection('totals', 4);
SELECT * FROM proj_totals ORDER BY id;
SELECT eventsourced.run_projection('totals');
SELECT eventsourced.run_projection('totals');
SELECT * FROM proj_totals ORDER BY id;
-- a run that reaches the end moves the checkpoint on to the horizon
SELECT checkpoint = eventsourced.feed_horizon() - 1 AS at_horizon,
       events_applied, lag FROM eventsourced.projections WHERE name = 'totals';
-- a rolled back run leaves no trace, and the events are applied again later
SELECT eventsourced.append('meter', 'm1', NULL, 'Read', '{"n": 100}');
BEGIN;
SELECT eventsourced.run_projection('totals');
ROLLBACK;
SELECT events_applied, lag FROM eventsourced.projections WHERE name = 'totals';
SELECT eventsourced.run_projection('totals');
SELECT * FROM proj_totals ORDER BY id;
-- max_events 0 does nothing; the largest max_events reads in chunks
-- (memory does not grow with it)
SELECT eventsourced.run_projection('totals', 2147483647);
SELECT eventsourced.run_projection('totals', 0);

-- entity_type NULL follows every type; the handler gets every argument
SELECT eventsourced.create_projection('everything', NULL, 'proj_record(text,bigint,text,jsonb,bigint)', 'skip');
-- (start at this test's first event: other tests share the database)
SELECT eventsourced.reset_projection('everything',
    (SELECT min(position) - 1 FROM eventsourced.events WHERE entity_type = 'meter'));
SELECT eventsourced.run_projection('everything');
SELECT s.entity_id, s.seq_no, s.event_type, s.pos = e.position AS pos_ok
  FROM proj_seen s JOIN eventsourced.events e
    ON e.entity_id = s.entity_id AND e.seq_no = s.seq_no
 WHERE e.entity_type IN ('meter', 'other') ORDER BY s.pos;

-- skip: the failing event is recorded and passed over
TRUNCATE proj_seen;
SELECT eventsourced.append('job', 'j1', NULL, 'Step', '{}');
SELECT eventsourced.append('job', 'j1', NULL, 'Step', '{"fail": true}');
SELECT eventsourced.append('job', 'j1', NULL, 'Step', '{}');
SELECT eventsourced.run_projection('everything');
SELECT entity_id, seq_no FROM proj_seen ORDER BY pos;
SELECT status, last_error, errors, lag,
       last_error_position = (SELECT position FROM eventsourced.events
                               WHERE entity_id = 'j1' AND seq_no = 2) AS error_at_2
  FROM eventsourced.projections WHERE name = 'everything';

-- stop: the checkpoint stays before the failing event, status failed
TRUNCATE proj_seen;
SELECT eventsourced.create_projection('jobs_stop', 'job', 'proj_record(text,bigint,text,jsonb,bigint)', 'stop');
SELECT eventsourced.run_projection('jobs_stop');
SELECT entity_id, seq_no FROM proj_seen ORDER BY pos;
SELECT status, last_error, events_applied,
       checkpoint = (SELECT position FROM eventsourced.events
                      WHERE entity_id = 'j1' AND seq_no = 1) AS before_failure
  FROM eventsourced.projections WHERE name = 'jobs_stop';
-- a failed projection does nothing until it is reset
SELECT eventsourced.run_projection('jobs_stop');
-- reset past the failing event
SELECT eventsourced.reset_projection('jobs_stop',
    (SELECT position FROM eventsourced.events WHERE entity_id = 'j1' AND seq_no = 2));
SELECT status, last_error FROM eventsourced.projections WHERE name = 'jobs_stop';
SELECT eventsourced.run_projection('jobs_stop');
SELECT entity_id, seq_no FROM proj_seen ORDER BY pos;

-- retry: the failing event is retried on each run, then the projection stops
SET eventsourced.projection_max_retries = 2;
TRUNCATE proj_seen;
SELECT eventsourced.create_projection('jobs_retry', 'job', 'proj_record(text,bigint,text,jsonb,bigint)', 'retry');
SELECT eventsourced.run_projection('jobs_retry');
SELECT status, retries FROM eventsourced.projections WHERE name = 'jobs_retry';
SELECT eventsourced.run_projection('jobs_retry');
SELECT status, retries, last_error FROM eventsourced.projections WHERE name = 'jobs_retry';
SELECT eventsourced.run_projection('jobs_retry');
-- a retry that succeeds (the handler was fixed) goes on
CREATE OR REPLACE FUNCTION proj_record(entity_id text, seq_no bigint, event_type text,
                                       payload jsonb, pos bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO proj_seen VALUES (pos, NULL, entity_id, seq_no, event_type);
END $$;
SELECT eventsourced.reset_projection('jobs_retry',
    (SELECT position FROM eventsourced.events WHERE entity_id = 'j1' AND seq_no = 1));
SELECT eventsourced.run_projection('jobs_retry');
SELECT status, retries, lag FROM eventsourced.projections WHERE name = 'jobs_retry';
RESET eventsourced.projection_max_retries;

-- reset to 0 replays everything (the read model is the caller's business)
TRUNCATE proj_totals;
SELECT eventsourced.reset_projection('totals');
SELECT eventsourced.run_projection('totals');
SELECT * FROM proj_totals ORDER BY id;

-- drop
SELECT eventsourced.drop_projection('jobs_retry');
SELECT name FROM eventsourced.projections ORDER BY name;

-- More events than one chunk (1,000) in one run, and a run that ends in
-- the middle of a chunk.
SELECT eventsourced.create_projection('chunks', 'chunky', 'proj_add(text,bigint,text,jsonb,bigint)');
SELECT eventsourced.append('chunky', 'big', NULL,
    (SELECT array_agg(eventsourced.event('Read', '{"n": 1}')) FROM generate_series(1, 2500)));
SELECT eventsourced.run_projection('chunks', 1500);
SELECT n, events FROM proj_totals WHERE id = 'big';
SELECT eventsourced.run_projection('chunks', 2147483647);
SELECT n, events FROM proj_totals WHERE id = 'big';
SELECT events_applied, lag FROM eventsourced.projections WHERE name = 'chunks';
SELECT eventsourced.drop_projection('chunks');

-- Bad input
SELECT eventsourced.create_projection('totals', 'meter', 'proj_add(text,bigint,text,jsonb,bigint)');
SELECT eventsourced.create_projection(NULL, 'meter', 'proj_add(text,bigint,text,jsonb,bigint)');
SELECT eventsourced.create_projection('', 'meter', 'proj_add(text,bigint,text,jsonb,bigint)');
SELECT eventsourced.create_projection('x', '', 'proj_add(text,bigint,text,jsonb,bigint)');
SELECT eventsourced.create_projection('x', 'meter', NULL);
SELECT eventsourced.create_projection('x', 'meter', 'proj_add(text,bigint,text,jsonb,bigint)', 'ignore');
SELECT eventsourced.create_projection('x', 'meter', 'proj_add(text,bigint,text,jsonb,bigint)', NULL);
SELECT eventsourced.create_projection('x', 'meter', 'pg_catalog.now()');
CREATE FUNCTION proj_wrong_ret(text, bigint, text, jsonb, bigint) RETURNS int LANGUAGE sql AS 'SELECT 1';
SELECT eventsourced.create_projection('x', 'meter', 'proj_wrong_ret(text,bigint,text,jsonb,bigint)');
CREATE PROCEDURE proj_proc(text, bigint, text, jsonb, bigint) LANGUAGE sql AS 'SELECT 1';
SELECT eventsourced.create_projection('x', 'meter', 'proj_proc(text,bigint,text,jsonb,bigint)');
SELECT eventsourced.run_projection('nope');
SELECT eventsourced.run_projection(NULL);
SELECT eventsourced.run_projection('totals', -1);
SELECT eventsourced.reset_projection('nope');
SELECT eventsourced.reset_projection('totals', -1);
SELECT eventsourced.reset_projection('totals', NULL);
SELECT eventsourced.drop_projection('nope');
SELECT eventsourced.create_projection('x', 'meter', 'proj_add(text,bigint,text,jsonb,bigint)', 'stop', '1 minute');
SELECT eventsourced.create_projection('x', 'meter', 'proj_add(text,bigint,text,jsonb,bigint)', 'retry', '0');
SELECT eventsourced.create_projection('x', 'meter', 'proj_add(text,bigint,text,jsonb,bigint)', 'retry', '-1 second');
SELECT eventsourced.create_projection('x', 'meter', 'proj_add(text,bigint,text,jsonb,bigint)', 'retry', '367 days');
SELECT eventsourced.create_projection('x', 'meter', 'proj_add(text,bigint,text,jsonb,bigint)', 'retry', 'infinity');
SELECT eventsourced.stop_projection('nope');
SELECT eventsourced.stop_projection(NULL);
SELECT eventsourced.start_projection('nope');
SELECT eventsourced.start_projection('');
SET eventsourced.projection_max_retries = -1;
SELECT name FROM eventsourced.projections ORDER BY name;

-- An idle run moves the checkpoint over positions that held nothing for
-- it, up to the horizon, once that is ES_PROJECTION_IDLE_STEP (1,000) or
-- more ahead: fewer positions are not worth a write.
SELECT eventsourced.create_projection('idle', 'quiet', 'proj_add(text,bigint,text,jsonb,bigint)');
SELECT eventsourced.reset_projection('idle', eventsourced.feed_horizon() - 1);
SELECT count(eventsourced.append('noisy', i::text, NULL, 'E', '{}')) FROM generate_series(1, 10) i;
SELECT eventsourced.run_projection('idle');
SELECT checkpoint = eventsourced.feed_horizon() - 11 AS unmoved, lag FROM eventsourced.projections WHERE name = 'idle';
SELECT count(eventsourced.append('noisy', i::text, NULL, 'E', '{}')) FROM generate_series(1, 1000) i;
SELECT eventsourced.run_projection('idle');
SELECT checkpoint = eventsourced.feed_horizon() - 1 AS at_horizon, lag FROM eventsourced.projections WHERE name = 'idle';
-- an event of its type is applied, then the checkpoint again moves to the horizon
SELECT eventsourced.append('quiet', 'q1', NULL, 'Read', '{"n": 5}');
SELECT count(eventsourced.append('noisy', i::text, NULL, 'E', '{}')) FROM generate_series(1, 3) i;
SELECT eventsourced.run_projection('idle');
SELECT * FROM proj_totals WHERE id = 'q1';
SELECT checkpoint = eventsourced.feed_horizon() - 1 AS at_horizon, lag FROM eventsourced.projections WHERE name = 'idle';

-- stop and start: a stopped projection keeps its checkpoint and applies
-- nothing until started again
SELECT eventsourced.stop_projection('idle');
SELECT eventsourced.stop_projection('idle');   -- again: nothing changes
SELECT eventsourced.append('quiet', 'q1', NULL, 'Read', '{"n": 6}');
SELECT eventsourced.run_projection('idle');
SELECT status, lag > 0 AS behind FROM eventsourced.projections WHERE name = 'idle';
SELECT * FROM proj_totals WHERE id = 'q1';
SELECT eventsourced.start_projection('idle');
SELECT eventsourced.start_projection('idle');  -- again: nothing changes
SELECT eventsourced.run_projection('idle');
SELECT status, lag FROM eventsourced.projections WHERE name = 'idle';
SELECT * FROM proj_totals WHERE id = 'q1';
-- a failed projection can be stopped, and started again from its checkpoint
SELECT eventsourced.append('quiet', 'q1', NULL, 'Read', '{"n": "not a number"}');
SELECT eventsourced.run_projection('idle');
SELECT status FROM eventsourced.projections WHERE name = 'idle';
SELECT eventsourced.stop_projection('idle');
SELECT status, last_error IS NOT NULL AS kept_error FROM eventsourced.projections WHERE name = 'idle';
SELECT eventsourced.start_projection('idle');
SELECT status, retries FROM eventsourced.projections WHERE name = 'idle';
SELECT eventsourced.run_projection('idle');
SELECT status FROM eventsourced.projections WHERE name = 'idle';
SELECT eventsourced.drop_projection('idle');

-- an append and a run in one statement: the run applies the append
SELECT eventsourced.create_projection('same_stmt', 'stmt_p', 'proj_add(text,bigint,text,jsonb,bigint)');
WITH a AS (SELECT eventsourced.append('stmt_p', 's1', NULL, 'Read', '{"n": 1}') AS s)
SELECT s, eventsourced.run_projection('same_stmt') FROM a;
SELECT eventsourced.append('stmt_p', 's1', NULL, 'Read', '{"n": 2}');
SELECT eventsourced.run_projection('same_stmt');
SELECT * FROM proj_totals WHERE id = 's1';
-- reset keeps a stopped projection stopped
SELECT eventsourced.stop_projection('same_stmt');
SELECT eventsourced.reset_projection('same_stmt');
SELECT status, checkpoint FROM eventsourced.projections WHERE name = 'same_stmt';
-- a handler may not stop (start, reset, drop) a projection
CREATE FUNCTION proj_stopper(entity_id text, seq_no bigint, event_type text,
                             payload jsonb, pos bigint) RETURNS void
LANGUAGE sql AS $$ SELECT eventsourced.stop_projection('stopper') $$;
SELECT eventsourced.create_projection('stopper', 'stmt_p', 'proj_stopper(text,bigint,text,jsonb,bigint)', 'skip');
SELECT eventsourced.run_projection('stopper');
SELECT status, errors, last_error FROM eventsourced.projections WHERE name = 'stopper';
SELECT eventsourced.drop_projection('stopper');
SELECT eventsourced.drop_projection('same_stmt');

-- retry with a delay: after a failure the event is not tried again before
-- retry_delay has passed; projection_max_retries = 0 retries forever
SET eventsourced.projection_max_retries = 0;
SELECT eventsourced.create_projection('slow_retry', 'job', 'proj_record(text,bigint,text,jsonb,bigint)',
                                      'retry', '1 hour');
CREATE OR REPLACE FUNCTION proj_record(entity_id text, seq_no bigint, event_type text,
                                       payload jsonb, pos bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF payload ? 'fail' THEN
        RAISE EXCEPTION 'cannot record %', entity_id;
    END IF;
    INSERT INTO proj_seen VALUES (pos, NULL, entity_id, seq_no, event_type);
END $$;
SELECT eventsourced.run_projection('slow_retry');
SELECT status, retries, retry_delay, retry_at = updated_at + interval '1 hour' AS retry_at_ok
  FROM eventsourced.projections WHERE name = 'slow_retry';
-- within the delay a run does nothing and says when the retry comes
\set VERBOSITY terse
SELECT eventsourced.run_projection('slow_retry') AS waits;
\set VERBOSITY default
SELECT retries FROM eventsourced.projections WHERE name = 'slow_retry';
-- once the delay has passed (moved back here by hand) it is tried again,
-- and fails again without stopping (max_retries 0)
UPDATE eventsourced.projection_state SET updated_at = updated_at - interval '2 hours'
 WHERE name = 'slow_retry';
SELECT eventsourced.run_projection('slow_retry');
SELECT status, retries FROM eventsourced.projections WHERE name = 'slow_retry';
UPDATE eventsourced.projection_state SET updated_at = updated_at - interval '2 hours',
       retries = 1000000 WHERE name = 'slow_retry';
SELECT eventsourced.run_projection('slow_retry');
SELECT status, retries FROM eventsourced.projections WHERE name = 'slow_retry';
-- start_projection clears the wait
SELECT eventsourced.start_projection('slow_retry');
SELECT retries, retry_at FROM eventsourced.projections WHERE name = 'slow_retry';
SELECT eventsourced.drop_projection('slow_retry');
RESET eventsourced.projection_max_retries;
