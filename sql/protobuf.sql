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
-- an exact retry of the same batch returns its last seq_no (event 1's id is
-- held at seq_no 1, event 2 has no id and finds an event of its type at 2)
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
-- strings with a NUL byte (protobuf-c would cut them there): entity_type
-- "pb\0x", event_type "E\0", event_id "\0A"; nothing is written
SELECT eventsourced.append_pb('\x0a101204706200781a01692a014532027b7d', NULL);
SELECT eventsourced.append_pb('\x0a0f120270621a01692a02450032027b7d', NULL);
SELECT eventsourced.append_pb('\x0a12120270621a01692a014532027b7d4a020041', NULL);
SELECT count(*) FROM eventsourced.events WHERE entity_type = 'pb';
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
-- an empty page resumes where feed_checkpoint() says (the horizon here)
SELECT eventsourced.events_by_type_pb('nothing', 7)
       = eventsourced.events_by_type_pb('nothing', eventsourced.feed_horizon() - 1)
       AS empty_batch_at_horizon;
SELECT encode(eventsourced.events_by_type_pb('nothing', 5000000000), 'hex') AS empty_batch;
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

-- register_protobuf / protobuf_to_jsonb: the descriptor set of
-- proto/eventsourced.proto (protoc --include_imports --descriptor_set_out),
-- then our own batches decoded in SQL with protobuf's JSON mapping
-- (lowerCamelCase names, 64-bit integers as strings, enums by name, bytes
-- as base64, fields at their default value omitted).
\set descriptors '\\x0ad8040a126576656e74736f75726365642e70726f746f120c6576656e74736f757263656422cd020a054576656e74121a0a08706f736974696f6e1801200128045208706f736974696f6e121f0a0b656e746974795f74797065180220012809520a656e7469747954797065121b0a09656e746974795f69641803200128095208656e74697479496412150a067365715f6e6f18042001280452057365714e6f121d0a0a6576656e745f7479706518052001280952096576656e745479706512180a077061796c6f616418062001280c52077061796c6f616412420a0e7061796c6f61645f666f726d617418072001280e321b2e6576656e74736f75726365642e5061796c6f6164466f726d6174520d7061796c6f6164466f726d6174121a0a086d6574616461746118082001280c52086d6574616461746112190a086576656e745f696418092001280952076576656e744964121f0a0b7265636f726465645f6174180a20012803520a7265636f726465644174225e0a0a4576656e744261746368122b0a066576656e747318012003280b32132e6576656e74736f75726365642e4576656e7452066576656e747312230a0d6c6173745f706f736974696f6e180220012804520c6c617374506f736974696f6e22370a08536e617073686f7412150a067365715f6e6f18012001280452057365714e6f12140a05737461746518022001280c520573746174652a430a0d5061796c6f6164466f726d617412170a135041594c4f41445f464f524d41545f4a534f4e100012190a155041594c4f41445f464f524d41545f42494e4152591001620670726f746f33'
SELECT * FROM eventsourced.register_protobuf(:'descriptors') ORDER BY 1;
-- registering the same set again adds nothing
SELECT count(*) FROM eventsourced.register_protobuf(:'descriptors');
SELECT message_types FROM eventsourced.protobuf_descriptors;
SELECT e->>'entityId' AS entity_id, e->>'seqNo' AS seq_no, e->>'eventType' AS event_type,
       e->>'payload' AS payload_base64, e->>'payloadFormat' AS format,
       convert_from(decode(e->>'payload', 'base64'), 'UTF8') AS payload_text
  FROM jsonb_array_elements(eventsourced.protobuf_to_jsonb(
           eventsourced.events_by_type_pb('doc'), 'eventsourced.EventBatch')->'events') e;
SELECT eventsourced.protobuf_to_jsonb(eventsourced.load_snapshot_pb('file', 'f1'), 'eventsourced.Snapshot');
SELECT eventsourced.protobuf_to_jsonb('\x', 'eventsourced.Snapshot');
SELECT eventsourced.protobuf_to_jsonb('\x08ffffffffffffffffff01', '.eventsourced.Snapshot');
SELECT eventsourced.protobuf_to_jsonb(NULL, 'eventsourced.Snapshot') IS NULL AS strict;
-- binary events can be read by SQL projections
SELECT eventsourced.append_binary('snapfile', 's1', 0, 'Saved', eventsourced.load_snapshot_pb('file', 'f1'));
SELECT seq_no, eventsourced.protobuf_to_jsonb(payload_bytes, 'eventsourced.Snapshot') AS decoded
  FROM eventsourced.events_by_id('snapfile', 's1');
-- bad input
SELECT eventsourced.protobuf_to_jsonb('\x0a', 'eventsourced.EventBatch');
SELECT eventsourced.protobuf_to_jsonb('\x0a05', 'eventsourced.Snapshot');
SELECT eventsourced.protobuf_to_jsonb('\x0d00000000', 'eventsourced.Snapshot');
SELECT eventsourced.protobuf_to_jsonb('\x08', 'nope.Missing');
SELECT * FROM eventsourced.register_protobuf('\x0a05');
SELECT * FROM eventsourced.register_protobuf('\x0aff');
SELECT * FROM eventsourced.register_protobuf(NULL);
SELECT * FROM eventsourced.register_protobuf(decode(repeat('00', 4 * 1024 * 1024 + 1), 'hex'));
SELECT eventsourced.protobuf_to_jsonb(decode(repeat('00', 64 * 1024 * 1024 + 1), 'hex'), 'eventsourced.Snapshot');
SELECT count(*) FROM eventsourced.protobuf_descriptors;
-- every event's names are checked before any message prints them: event 2's
-- 2,000-byte entity_id is refused as too long, not echoed in a DETAIL
SELECT eventsourced.append_pb(decode('0a10' || '1203646f631a0264312a015832027b7d' || '0adf0f' || '1203646f63'
       || '1ad00f' || repeat('78', 2000) || '2a015832027b7d', 'hex'), NULL);
