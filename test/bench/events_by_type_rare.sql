-- A poll of a rare type: its one event, with 1,000,000 events of another type after it.
SELECT count(*) FROM eventsourced.events_by_type('bench_rare', 0, 1000);
