-- 100 events in one eventsourced.append() call.
\set e random(1, 100000)
SELECT eventsourced.append('bench100', :e, NULL,
    (SELECT array_agg(eventsourced.event('Happened', '{"n": 1}')) FROM generate_series(1, 100)));
