-- One EventBatch page of 10,000 events built on the server by
-- eventsourced.events_by_type_pb(); only its length is sent back.
SELECT length(eventsourced.events_by_type_pb('bench_read', 0, 10000));
