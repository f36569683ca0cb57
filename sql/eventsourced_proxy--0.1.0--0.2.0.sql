\echo Use "ALTER EXTENSION eventsourced_proxy UPDATE TO '0.2.0'" to load this file. \quit

-- eventsourced_proxy 0.2.0.  Each feature's objects stay in one block
-- under a heading naming it.

-- ---------------------------------------------------------------------
-- The cross-shard feed as protobuf (docs/scale-out.md, "The feed as
-- protobuf"): read_all_shards_pb and events_by_type_shards_pb return one
-- ShardBatch (proto/eventsourced_proxy.proto): the Event messages of every
-- server's read_all_pb / events_by_type_pb page, server after server, and
-- the resume token after the page.  ShardBatch is wire-compatible with
-- EventBatch: its events are field 1; field 2 (last_position, a per-server
-- value) is absent; the token is field 3.
-- ---------------------------------------------------------------------

-- One unsigned varint as protobuf encodes it.
CREATE FUNCTION eventsourced.pb_varint_bytes(value bigint)
    RETURNS bytea
    LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    out bytea := '';
BEGIN
    IF value < 0 THEN
        RAISE EXCEPTION USING ERRCODE = '22003', MESSAGE = 'a varint here must not be negative',
            DETAIL = format('The value was %s.', value);
    END IF;
    WHILE value >= 128 LOOP
        out := out || set_byte('\x00'::bytea, 0, ((value & 127) | 128)::integer);
        value := value >> 7;
    END LOOP;
    RETURN out || set_byte('\x00'::bytea, 0, value::integer);
END
$$;

-- One server's EventBatch (as read_all_pb / events_by_type_pb write it: its
-- Event fields, then last_position, field 2, last) split into the bytes of
-- its events and its last_position, where that server's reader resumes.
-- An empty batch (nothing read, last_position 0) has no position: the
-- caller keeps the one it asked after.  Bytes of another layout are refused.
CREATE FUNCTION eventsourced.pb_batch_split(batch bytea, OUT events bytea,
                                            OUT last_position bigint)
    LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    len integer := octet_length(batch);
    start integer := len - 1;       -- 0-based offset of the varint's first byte
    value bigint;
    next integer;
BEGIN
    events := ''::bytea;
    IF len = 0 THEN
        RETURN;
    END IF;
    WHILE start > 0 AND len - start <= 10 AND get_byte(batch, start - 1) >= 128 LOOP
        start := start - 1;
    END LOOP;
    IF start > 0 AND get_byte(batch, len - 1) < 128 AND get_byte(batch, start - 1) = 16 THEN
        SELECT v.value, v.next INTO value, next FROM eventsourced.pb_varint(batch, start) v;
    END IF;
    IF next IS DISTINCT FROM len OR value < 0 THEN
        RAISE EXCEPTION USING ERRCODE = '22P03', MESSAGE = 'invalid EventBatch message from a shard',
            DETAIL = 'It does not end with its last_position (field 2).',
            HINT = 'The shards must run the eventsourced extension (read_all_pb, events_by_type_pb).';
    END IF;
    events := substring(batch FROM 1 FOR start - 1);
    last_position := value;
END
$$;

-- Each server's EventBatch after its own position (one element of parts
-- per server, sent to that server).
CREATE FUNCTION eventsourced.read_all_pb_parts(parts text[], max_count integer)
    RETURNS TABLE (shard integer, batch bytea)
    LANGUAGE plproxy
AS $$
    CLUSTER 'eventsourced_cluster';
    SPLIT parts;
    RUN ON eventsourced.token_route(parts);
    SELECT pg_catalog.split_part((parts)[1], ':', 1)::integer AS shard,
           eventsourced.read_all_pb(pg_catalog.split_part((parts)[1], ':', 2)::bigint, max_count) AS batch;
$$;

CREATE FUNCTION eventsourced.events_by_type_pb_parts(type_name text, parts text[], max_count integer)
    RETURNS TABLE (shard integer, batch bytea)
    LANGUAGE plproxy
AS $$
    CLUSTER 'eventsourced_cluster';
    SPLIT parts;
    RUN ON eventsourced.token_route(parts);
    SELECT pg_catalog.split_part((parts)[1], ':', 1)::integer AS shard,
           eventsourced.events_by_type_pb(type_name,
                                          pg_catalog.split_part((parts)[1], ':', 2)::bigint,
                                          max_count) AS batch;
$$;

-- One ShardBatch: every server's page (at most shard_page() events each)
-- after the token's positions, its events server after server, and the
-- token where each server's reader resumes (its batch's last_position:
-- the last event's, or feed_checkpoint() past a short page).  by_type
-- false reads every type (type_name is then ignored).
CREATE FUNCTION eventsourced.feed_pb_page(type_name text, by_type boolean,
                                          after text, page_size integer)
    RETURNS bytea
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    start record;
    parts text[];
    got record;
    part record;
    positions bigint[];
    i integer;
    events bytea := '';
    token text;
BEGIN
    SELECT * INTO start FROM eventsourced.feed_start(after, page_size);
    positions := start.positions;
    parts := (SELECT array_agg(k || ':' || p ORDER BY o)
                FROM unnest(start.shards, start.positions) WITH ORDINALITY AS u(k, p, o));
    IF by_type THEN
        SELECT array_agg(x.shard ORDER BY x.shard) AS shards, array_agg(x.batch ORDER BY x.shard) AS batches
          INTO got
          FROM eventsourced.events_by_type_pb_parts(type_name, parts,
                   eventsourced.shard_page(page_size, cardinality(parts))) x;
    ELSE
        SELECT array_agg(x.shard ORDER BY x.shard) AS shards, array_agg(x.batch ORDER BY x.shard) AS batches
          INTO got
          FROM eventsourced.read_all_pb_parts(parts,
                   eventsourced.shard_page(page_size, cardinality(parts))) x;
    END IF;
    FOR n IN 1 .. coalesce(cardinality(got.shards), 0) LOOP
        i := array_position(start.shards, got.shards[n]);
        IF i IS NULL OR got.batches[n] IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = '22P03', MESSAGE = 'invalid answer from a shard',
                DETAIL = format('Shard %s answered for a server the page did not ask, or without a batch.',
                                got.shards[n]);
        END IF;
        SELECT * INTO part FROM eventsourced.pb_batch_split(got.batches[n]);
        IF octet_length(events) + octet_length(part.events) > 1000000000 THEN
            RAISE EXCEPTION USING ERRCODE = '54000', MESSAGE = 'page of the feed is too large',
                DETAIL = 'The servers'' batches add up to more than 1,000,000,000 bytes.',
                HINT = 'Ask for fewer events (max_count).';
        END IF;
        events := events || part.events;
        positions[i] := greatest(positions[i], part.last_position);
    END LOOP;
    token := (SELECT string_agg(k || ':' || p, ',' ORDER BY o)
                FROM unnest(start.shards, positions) WITH ORDINALITY AS u(k, p, o));
    RETURN events || '\x1a'::bytea || eventsourced.pb_varint_bytes(octet_length(token))
           || convert_to(token, 'UTF8');
END
$$;

-- The feed of every server as one ShardBatch (docs/scale-out.md).
CREATE FUNCTION eventsourced.read_all_shards_pb(token text DEFAULT '',
                                                max_count integer DEFAULT 1000)
    RETURNS bytea
    LANGUAGE sql VOLATILE
    RETURN eventsourced.feed_pb_page(NULL, false, token, max_count);

-- The feed of one entity type on every server as one ShardBatch.
CREATE FUNCTION eventsourced.events_by_type_shards_pb(entity_type text, token text DEFAULT '',
                                                      max_count integer DEFAULT 1000)
    RETURNS bytea
    LANGUAGE sql VOLATILE
    RETURN eventsourced.feed_pb_page(entity_type, true, token, max_count);

-- As the row forms: the API is for the roles granted it; the helpers are
-- pure or reach the shards only through functions the shards check.
REVOKE ALL ON FUNCTION eventsourced.read_all_shards_pb(text, integer),
    eventsourced.events_by_type_shards_pb(text, text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION eventsourced.pb_varint_bytes(bigint),
    eventsourced.pb_batch_split(bytea),
    eventsourced.read_all_pb_parts(text[], integer),
    eventsourced.events_by_type_pb_parts(text, text[], integer),
    eventsourced.feed_pb_page(text, boolean, text, integer)
    TO PUBLIC;

-- ---------------------------------------------------------------------
-- Cheaper routing (docs/scale-out.md, "Performance").  PL/Proxy runs a
-- RUN ON function as "SELECT * FROM f(...)" through a saved plan; the
-- planner inlines a SQL function there only when it returns a set, so the
-- scalar route() was executed as a SQL function on every call (its body
-- read and planned again each time).  route_rows() and route_pb_rows()
-- compute the same partition as one row; every entity-scoped function
-- routes with them now.  route() and route_pb() stay for callers of their
-- own.
-- ---------------------------------------------------------------------
CREATE FUNCTION eventsourced.route_rows(entity_type text, entity_id text)
    RETURNS SETOF integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE ROWS 1
BEGIN ATOMIC
    SELECT COALESCE(eventsourced.entity_hash(entity_type, entity_id), 0);
END;

CREATE FUNCTION eventsourced.route_pb_rows(batch bytea)
    RETURNS SETOF integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE ROWS 1
BEGIN ATOMIC
    SELECT COALESCE(eventsourced.entity_hash(b.entity_type, b.entity_id), 0)
      FROM eventsourced.pb_batch_entity(batch) b;
END;

GRANT EXECUTE ON FUNCTION eventsourced.route_rows(text, text),
    eventsourced.route_pb_rows(bytea) TO PUBLIC;

-- Every PL/Proxy function of the extension that routes with route() or
-- route_pb() routes with their set-returning forms (same arguments, same
-- partition; grants and owners are kept by CREATE OR REPLACE).  The script
-- runs with the schema of plproxy (public, as a rule) on its search_path:
-- every operator here is qualified, or one a role put there (say =(oid,
-- regclass), an exact match where pg_catalog's needs a cast) would run as
-- the superuser updating the extension.
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure
               FROM pg_catalog.pg_proc p
               JOIN pg_catalog.pg_depend d
                 ON d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass
                AND d.objid OPERATOR(pg_catalog.=) p.oid
                AND d.deptype OPERATOR(pg_catalog.=) 'e'
               JOIN pg_catalog.pg_extension e
                 ON e.oid OPERATOR(pg_catalog.=) d.refobjid
                AND e.extname OPERATOR(pg_catalog.=) 'eventsourced_proxy'
               JOIN pg_catalog.pg_language l
                 ON l.oid OPERATOR(pg_catalog.=) p.prolang
                AND l.lanname OPERATOR(pg_catalog.=) 'plproxy'
              WHERE p.prosrc OPERATOR(pg_catalog.~) 'RUN ON eventsourced\.route(_pb)?\('
              ORDER BY 1 LOOP
        EXECUTE pg_catalog.replace(pg_catalog.replace(pg_catalog.pg_get_functiondef(f),
                    'RUN ON eventsourced.route(', 'RUN ON eventsourced.route_rows('),
                    'RUN ON eventsourced.route_pb(', 'RUN ON eventsourced.route_pb_rows(');
    END LOOP;
END
$$;

-- ---------------------------------------------------------------------
-- Resume tokens (0.2.0): a token of more "shard:position" pairs than the
-- cluster has servers is refused before it is parsed (each pair went into
-- a growing object: a token of many pairs cost time quadratic in them).
-- ---------------------------------------------------------------------
CREATE OR REPLACE FUNCTION eventsourced.feed_start(token text, max_count integer,
                                        OUT shards integer[], OUT positions bigint[])
    LANGUAGE plpgsql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    given jsonb := '{}';
    pair text;
    unknown text;
BEGIN
    IF max_count IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22004', MESSAGE = 'max_count must not be null';
    ELSIF max_count < 0 THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'max_count must not be negative',
            DETAIL = format('max_count was %s.', max_count);
    END IF;
    IF token IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22004', MESSAGE = 'token must not be null',
            HINT = 'Pass '''' to read from the beginning.';
    END IF;
    IF token <> '' AND token !~ '^[0-9]{1,9}:[0-9]{1,18}(,[0-9]{1,9}:[0-9]{1,18})*$' THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'malformed resume token',
            DETAIL = 'A token is a comma-separated list of shard:position pairs.',
            HINT = 'Pass the token of the last row you received, or '''' to start.';
    END IF;
    -- one pair per server at most (a longer token would only cost time:
    -- each pair is parsed into a growing object)
    IF token <> '' AND cardinality(string_to_array(token, ','))
                       > (SELECT count(*) FROM eventsourced.shards()) THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'resume token names more shards than the cluster has',
            DETAIL = format('The token has %s pairs; the cluster has %s servers.',
                            cardinality(string_to_array(token, ',')),
                            (SELECT count(*) FROM eventsourced.shards())),
            HINT = 'Pass the token of the last row or batch you received, or '''' to start.';
    END IF;
    IF token <> '' THEN
        FOREACH pair IN ARRAY string_to_array(token, ',') LOOP
            given := given || jsonb_build_object(split_part(pair, ':', 1)::integer::text,
                                                 split_part(pair, ':', 2)::bigint);
        END LOOP;
    END IF;
    SELECT array_agg(s.shard ORDER BY s.shard),
           array_agg(coalesce((given ->> s.shard::text)::bigint, 0) ORDER BY s.shard)
      INTO shards, positions
      FROM eventsourced.shards() s;
    IF shards IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '42704',
            MESSAGE = 'server "eventsourced_cluster" has no partitions',
            HINT = 'Define the cluster: CREATE SERVER eventsourced_cluster FOREIGN DATA WRAPPER plproxy OPTIONS (p0 ''...'', ...).';
    END IF;
    SELECT string_agg(k, ', ') INTO unknown
      FROM jsonb_object_keys(given) k
     WHERE k::integer <> ALL (shards);
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = 'resume token names shards the cluster does not have',
            DETAIL = format('Unknown shards: %s; the cluster''s shards: %s.', unknown,
                            array_to_string(shards, ', ')),
            HINT = 'The cluster''s partitions moved since the token was issued; see docs/scale-out.md, "Adding servers".';
    END IF;
END
$$;
