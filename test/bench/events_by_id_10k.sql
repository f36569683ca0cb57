-- One entity's 10,000 events through eventsourced.events_by_id().
SELECT * FROM eventsourced.events_by_id('bench_read', 'r1');
