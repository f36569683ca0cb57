-- Setup for the command benchmarks (command_1.sql, command_big.sql): the
-- counter example, snapshot every 100 events, and one counter "big" with
-- 100,000 events appended in batches.  One command then folds them once;
-- it keeps the state with the entity and saves a snapshot, so later
-- commands start from there.
\ir ../../examples/counter/counter.sql
SELECT eventsourced.append('counter', 'big', NULL,
           (SELECT array_agg(eventsourced.event('Increased', '{"n": 1}'))
              FROM generate_series(1, 10000)))
  FROM generate_series(1, 10);
SELECT seq_no, state FROM eventsourced.handle_command('counter', 'big', 'Increase', '{"n": 1}');
