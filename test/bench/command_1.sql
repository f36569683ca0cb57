-- One command per transaction through eventsourced.handle_command() (counter example).
\set e random(1, 1000)
SELECT (eventsourced.handle_command('counter', :e, 'Increase', '{"n": 1}')).seq_no;
