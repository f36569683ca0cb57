-- Baseline: a plain index scan of one entity's 10,000 events.
SELECT seq_no, event_type, payload, metadata, event_id, position, recorded_at
  FROM eventsourced.events
 WHERE entity_type = 'bench_read' AND entity_id = 'r1' AND seq_no >= 1
 ORDER BY seq_no;
