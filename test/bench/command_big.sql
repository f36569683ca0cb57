-- Commands to one counter with 100,000 events (see command_setup.sql); they
-- serialize on the entity lock, so more clients only queue.
SELECT (eventsourced.handle_command('counter', 'big', 'Increase', '{"n": 1}')).seq_no;
