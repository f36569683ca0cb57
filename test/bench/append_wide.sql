-- One event per transaction to one of 10,000,000 entities: most miss the
-- shared seq_no cache (131,072 entries by default) and probe the index.
\set e random(1, 10000000)
SELECT eventsourced.append('bench', :e, NULL, 'Happened', '{"n": 1}');
