-- Binary payloads and the protobuf wire format: append_binary, mixed JSON and
-- binary entities, the payload_bytes column, append_pb (also with malformed
-- and hostile input), events_by_type_pb / read_all_pb, binary snapshots.
-- (Round trips through protoc --decode: test/shell/protobuf.sh.)
\set SHOW_CONTEXT never
SELECT eventsourced.append('file', 'f1', 0, 'Created', '{"name": "a.bin"}');
SELECT eventsourced.append_binary('file', 'f1', 1, 'Chunk', '\x00010203ff'::bytea,
                                  '{"part": 1}', 'cccccccc-0000-0000-0000-000000000001');
SELECT eventsourced.append_binary('file', 'f1', 2, 'Chunk', ''::bytea);
-- reads return JSON in payload and bytes in payload_bytes
SELECT seq_no, event_type, payload, payload_bytes, metadata, event_id
  FROM eventsourced.events_by_id('file', 'f1');
SELECT seq_no, payload, payload_bytes FROM eventsourced.events_by_type('file');
SELECT seq_no, payload, payload_bytes FROM eventsourced.read_all(
    (SELECT min(position) - 1 FROM eventsourced.events WHERE entity_type = 'file'))
 WHERE entity_type = 'file';
-- the concurrency check and idempotency apply as for JSON events
SELECT eventsourced.append_binary('file', 'f1', 1, 'Chunk', '\x01'::bytea);
SELECT eventsourced.append_binary('file', 'f1', NULL, 'Chunk', '\x00010203ff'::bytea,
                                  NULL, 'cccccccc-0000-0000-0000-000000000001');
-- bad input
SELECT eventsourced.append_binary('file', 'f1', NULL, 'Chunk', NULL);
SELECT eventsourced.append_binary('file', '', NULL, 'Chunk', '\x01');
SELECT eventsourced.append_binary('file', 'f1', -1, 'Chunk', '\x01');
SELECT eventsourced.append_binary('file', 'f1', NULL, NULL, '\x01');

-- append_pb: an EventBatch of one entity (made with protoc --encode):
-- events { entity_type: "doc" entity_id: "d1" event_type: "Created"
--          payload: "{\"title\": \"hi\"}" metadata: "{\"by\": \"ann\"}"
--          event_id: "11111111-0000-0000-0000-000000000001" }
-- events { entity_type: "doc" entity_id: "d1" event_type: "Attached"
--          payload: "\001\002\003" payload_format: PAYLOAD_FORMAT_BINARY }
\set batch '\\x0a581203646f631a0264312a0743726561746564320f7b227469746c65223a20226869227d420d7b226279223a2022616e6e227d4a2431313131313131312d303030302d303030302d303030302d3030303030303030303030310a1a1203646f631a0264312a08417474616368656432030102033801'
SELECT eventsourced.append_pb(:'batch', 0);
SELECT seq_no, event_type, payload, payload_bytes, metadata, event_id
  FROM eventsourced.events_by_id('doc', 'd1');
-- a retry of the same batch is refused as partly known (only event 1 has an id)
SELECT eventsourced.append_pb(:'batch', 0);
-- the concurrency check applies (one event for d1, no event_id)
SELECT eventsourced.append_pb('\x0a101203646f631a0264312a015832027b7d', 5);
-- events of two entities
SELECT eventsourced.append_pb('\x0a101203646f631a0264312a015832027b7d0a101203646f631a0264322a015832027b7d', NULL);
-- payload that is not JSON, event_id that is not a UUID, empty event_type,
-- unknown payload_format, bad metadata, no events at all
SELECT eventsourced.append_pb('\x0a161203646f631a0264332a015832086e6f74206a736f6e', NULL);
SELECT eventsourced.append_pb('\x0a161203646f631a0264332a015832027b7d4a046e6f7065', NULL);
SELECT eventsourced.append_pb('\x0a0d1203646f631a02643332027b7d', NULL);
SELECT eventsourced.append_pb('\x0a121203646f631a0264332a015832027b7d3807', NULL);
SELECT eventsourced.append_pb('\x0a151203646f631a0264332a015832027b7d42035b312c', NULL);
SELECT eventsourced.append_pb('\x1005', NULL);
SELECT eventsourced.append_pb('\x', NULL);
SELECT eventsourced.append_pb(NULL, NULL);
SELECT eventsourced.append_pb('\x0a101203646f631a0264312a015832027b7d', -1);
-- malformed and hostile wire format
SELECT eventsourced.append_pb('\x0a', NULL);                       -- truncated key/length
SELECT eventsourced.append_pb('\x0a05', NULL);                     -- length past the end
SELECT eventsourced.append_pb('\x0affffffff0f', NULL);             -- huge declared length
SELECT eventsourced.append_pb('\x0affffffffffffffffffff01', NULL); -- varint longer than 10 bytes
SELECT eventsourced.append_pb('\x08ff', NULL);                     -- truncated varint
SELECT eventsourced.append_pb('\x0f', NULL);                       -- wire type 7
SELECT eventsourced.append_pb('\x00', NULL);                       -- field number 0
SELECT eventsourced.append_pb('\x0a101203646f631a0264312a015832027b7d0d00000000', NULL); -- events as fixed32
SELECT eventsourced.append_pb('\x0a0f1203646f631a01ff2a015832027b7d', NULL);   -- entity_id not UTF-8
SELECT eventsourced.append_pb('\x0a111203646f631a0264332a015832037b007d', NULL); -- NUL in JSON payload
SELECT eventsourced.append_pb('\x0a061b1c2a015832', NULL);          -- group inside an event
-- 100,001 events are refused before anything is decoded
SELECT eventsourced.append_pb(decode(repeat('0a00', 100001), 'hex'), NULL);
SELECT count(*) FROM eventsourced.events WHERE entity_type = 'doc';

-- events_by_type_pb / read_all_pb: one EventBatch; decoded by protoc in the
-- shell test; here: sizes and the checkpoint of an empty page
SELECT length(eventsourced.events_by_type_pb('doc')) > 100 AS has_events;
SELECT encode(eventsourced.events_by_type_pb('doc', 1000000), 'hex') AS empty_after;
SELECT encode(eventsourced.events_by_type_pb('nothing', 7), 'hex') AS empty_batch;
SELECT encode(eventsourced.read_all_pb(0, 0), 'hex') AS zero_events;
SELECT eventsourced.events_by_type_pb(NULL);
SELECT eventsourced.events_by_type_pb('doc', -1);
SELECT eventsourced.read_all_pb(0, -1);

-- binary snapshots
SELECT eventsourced.save_snapshot_bytes('file', 'f1', 2, '\xcafe');
SELECT * FROM eventsourced.load_snapshot_bytes('file', 'f1');
SELECT * FROM eventsourced.load_snapshot('file', 'f1');
SELECT encode(eventsourced.load_snapshot_pb('file', 'f1'), 'hex') AS snapshot_pb;
SELECT eventsourced.save_snapshot('file', 'f1', 3, '{"parts": 2}');
SELECT * FROM eventsourced.load_snapshot('file', 'f1');
SELECT * FROM eventsourced.load_snapshot_bytes('file', 'f1');
SELECT encode(eventsourced.load_snapshot_pb('file', 'f1'), 'hex') AS snapshot_pb;
SELECT eventsourced.load_snapshot_pb('file', 'none') IS NULL AS no_snapshot;
SELECT eventsourced.save_snapshot_bytes('file', 'f1', 3, NULL);
SELECT eventsourced.save_snapshot_bytes('file', 'f1', 9, '\x00');
