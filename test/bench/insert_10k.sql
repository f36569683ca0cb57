-- Baseline: a 10,000-row INSERT ... SELECT (what append_pb_10k.sql writes).
\set e random(1, 100000)
\set s random(1, 4000000000000000000)
INSERT INTO bench.plain (entity_type, entity_id, seq_no, position, event_type, payload)
SELECT 'bench10k', :e, :s::bigint + g, :s::bigint + g, 'Happened', '{"n": 1}'
  FROM generate_series(1, 10000) g;
