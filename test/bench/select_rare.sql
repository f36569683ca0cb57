-- Baseline of events_by_type_rare.sql: the same page from a plain table indexed on (entity_type, position).
SELECT count(*) FROM (SELECT * FROM bench.feed WHERE entity_type = 'bench_rare' AND position > 0
                       ORDER BY position LIMIT 1000) s;
