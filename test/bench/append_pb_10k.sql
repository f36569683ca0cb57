-- One EventBatch of 10,000 events (JSON payloads {"n": 1}, one entity)
-- through eventsourced.append_pb(); the batch is made once by test/bench/run.
SELECT eventsourced.append_pb(batch, NULL) FROM bench.pb_batch;
