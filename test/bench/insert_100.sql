-- Baseline: a 100-row INSERT ... SELECT.
\set e random(1, 100000)
\set s random(1, 4000000000000000000)
INSERT INTO bench.plain (entity_type, entity_id, seq_no, position, event_type, payload)
SELECT 'bench100', :e, :s::bigint + g, :s::bigint + g, 'Happened', '{"n": 1}'
  FROM generate_series(1, 100) g;
