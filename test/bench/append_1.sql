-- One event per transaction through eventsourced.append().
\set e random(1, 100000)
SELECT eventsourced.append('bench', :e, NULL, 'Happened', '{"n": 1}');
