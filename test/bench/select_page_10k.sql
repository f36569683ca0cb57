-- Baseline: the same feed page as plain rows, each turned into text on the
-- server (the work of serializing it); only the total length is sent back.
SELECT sum(length(e::text)) FROM (
    SELECT position, entity_type, entity_id, seq_no, event_type, payload, metadata,
           event_id, recorded_at, payload_bytes
      FROM eventsourced.events
     WHERE position > 0 AND entity_type = 'bench_read'
     ORDER BY position LIMIT 10000) e;
