-- Baseline: a plain single-row INSERT into a table with the events columns.
\set e random(1, 100000)
\set s random(1, 4000000000000000000)
INSERT INTO bench.plain (entity_type, entity_id, seq_no, position, event_type, payload)
VALUES ('bench', :e, :s, :s, 'Happened', '{"n": 1}');
