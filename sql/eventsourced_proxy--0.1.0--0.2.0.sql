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
-- A batch larger than value_limit does not travel (PL/Proxy carries bytea as
-- hex text, which must fit in 1 GB on the shard): its size comes instead.
CREATE FUNCTION eventsourced.read_all_pb_parts(parts text[], max_count integer, value_limit integer)
    RETURNS TABLE (shard integer, batch bytea, size integer)
    LANGUAGE plproxy
AS $$
    CLUSTER 'eventsourced_cluster';
    SPLIT parts;
    RUN ON eventsourced.token_route(parts);
    SELECT pg_catalog.split_part((parts)[1], ':', 1)::integer AS shard,
           CASE WHEN pg_catalog.octet_length(b.b) OPERATOR(pg_catalog.<=) value_limit THEN b.b END AS batch,
           pg_catalog.octet_length(b.b) AS size
      FROM (SELECT eventsourced.read_all_pb(pg_catalog.split_part((parts)[1], ':', 2)::bigint, max_count) AS b) b;
$$;

CREATE FUNCTION eventsourced.events_by_type_pb_parts(type_name text, parts text[], max_count integer,
                                                     value_limit integer)
    RETURNS TABLE (shard integer, batch bytea, size integer)
    LANGUAGE plproxy
AS $$
    CLUSTER 'eventsourced_cluster';
    SPLIT parts;
    RUN ON eventsourced.token_route(parts);
    SELECT pg_catalog.split_part((parts)[1], ':', 1)::integer AS shard,
           CASE WHEN pg_catalog.octet_length(b.b) OPERATOR(pg_catalog.<=) value_limit THEN b.b END AS batch,
           pg_catalog.octet_length(b.b) AS size
      FROM (SELECT eventsourced.events_by_type_pb(type_name,
                                                  pg_catalog.split_part((parts)[1], ':', 2)::bigint,
                                                  max_count) AS b) b;
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
    PERFORM eventsourced.feed_granted(CASE WHEN by_type
        THEN 'eventsourced.events_by_type_shards_pb(text, text, integer)'::regprocedure
        ELSE 'eventsourced.read_all_shards_pb(text, integer)'::regprocedure END);
    SELECT * INTO start FROM eventsourced.feed_start(after, page_size);
    positions := start.positions;
    parts := (SELECT array_agg(k || ':' || p ORDER BY o)
                FROM unnest(start.shards, start.positions) WITH ORDINALITY AS u(k, p, o));
    IF by_type THEN
        SELECT array_agg(x.shard ORDER BY x.shard) AS shards, array_agg(x.batch ORDER BY x.shard) AS batches,
               array_agg(x.size ORDER BY x.shard) AS sizes
          INTO got
          FROM eventsourced.events_by_type_pb_parts(type_name, parts,
                   eventsourced.shard_page(page_size, cardinality(parts)), eventsourced.feed_value_limit()) x;
    ELSE
        SELECT array_agg(x.shard ORDER BY x.shard) AS shards, array_agg(x.batch ORDER BY x.shard) AS batches,
               array_agg(x.size ORDER BY x.shard) AS sizes
          INTO got
          FROM eventsourced.read_all_pb_parts(parts,
                   eventsourced.shard_page(page_size, cardinality(parts)), eventsourced.feed_value_limit()) x;
    END IF;
    FOR n IN 1 .. coalesce(cardinality(got.shards), 0) LOOP
        i := array_position(start.shards, got.shards[n]);
        IF i IS NOT NULL AND got.batches[n] IS NULL AND got.sizes[n] IS NOT NULL THEN
            PERFORM eventsourced.feed_too_large(got.shards[n], positions[i], got.sizes[n], 'batch');
        END IF;
        IF i IS NULL OR got.batches[n] IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = '22P03', MESSAGE = 'invalid answer from a shard',
                DETAIL = format('Shard %s answered for a server the page did not ask, or without a batch.',
                                got.shards[n]);
        END IF;
        SELECT * INTO part FROM eventsourced.pb_batch_split(got.batches[n]);
        IF octet_length(events) + octet_length(part.events) > 1000000000 THEN
            RAISE EXCEPTION USING ERRCODE = '54000', MESSAGE = 'page of the feed is too large',
                DETAIL = format('The servers'' batches add up to more than 1,000,000,000 bytes (at shard %s).',
                                got.shards[n]),
                HINT = 'Ask for fewer events (max_count); a batch that one event fills is read on its server (docs/scale-out.md, "Limits").';
        END IF;
        events := events || part.events;
        positions[i] := greatest(positions[i], part.last_position);
    END LOOP;
    token := (SELECT string_agg(k || ':' || p, ',' ORDER BY o)
                FROM unnest(start.keys, positions) WITH ORDINALITY AS u(k, p, o));
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
    eventsourced.read_all_pb_parts(text[], integer, integer),
    eventsourced.events_by_type_pb_parts(text, text[], integer, integer),
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
-- Resume tokens keyed by server (docs/scale-out.md, "Resume tokens").
-- 0.1.0 keyed each position by the lowest partition its server held; after
-- a partition moved or a server was added, a key could name another server,
-- and a token then applied one server's position to another (its events
-- skipped or read again).  A token's key is now the server's own: a hash of
-- its connection string (shards().token_key), so a position is only ever
-- applied to the server that issued it; a server a token does not name is
-- read from its beginning, and pairs of servers no longer in the cluster
-- are dropped.  0.1.0 tokens are refused: their keys cannot be checked.
-- Pages take the servers' rows in turns (each server's first row, then
-- each one's second, ...), at least one per server, so every server that
-- has events moves on every page.
-- ---------------------------------------------------------------------

-- The key of a server in resume tokens: "s" and 16 hex digits of the MD5 of
-- its connection string, exactly as the cluster's option writes it.
CREATE FUNCTION eventsourced.token_key(connstr text)
    RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN 's' OPERATOR(pg_catalog.||) pg_catalog.substr(pg_catalog.md5(connstr), 1, 16);

-- shards() with each server's key in resume tokens.
DROP FUNCTION eventsourced.shards();
CREATE FUNCTION eventsourced.shards(OUT shard integer, OUT partitions integer[],
                                    OUT connstr text, OUT token_key text)
    RETURNS SETOF record
    LANGUAGE sql STABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT pg_catalog.min(p.part), pg_catalog.array_agg(p.part ORDER BY p.part), p.conn,
           eventsourced.token_key(p.conn)
      FROM (SELECT pg_catalog.regexp_replace(o.option_name, '^(p|partition_)', '')::integer AS part,
                   o.option_value AS conn
              FROM pg_catalog.pg_foreign_server s,
                   pg_catalog.pg_options_to_table(s.srvoptions) o
             WHERE s.srvname OPERATOR(pg_catalog.=) 'eventsourced_cluster'
               AND o.option_name OPERATOR(pg_catalog.~) '^(p|partition_)[0-9]+$') p
     GROUP BY p.conn
     ORDER BY 1;
END;

-- Checks a feed read's arguments and parses its resume token into the
-- positions of the current servers (shards: their lowest partitions, where
-- their part is sent; keys: their token keys).
DROP FUNCTION eventsourced.feed_start(text, integer);
CREATE FUNCTION eventsourced.feed_start(token text, max_count integer, OUT shards integer[],
                                        OUT keys text[], OUT positions bigint[])
    LANGUAGE plpgsql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    pairs text[];
    twice text;
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
    IF token ~ '^[0-9]{1,9}:[0-9]{1,18}(,[0-9]{1,9}:[0-9]{1,18})*$' THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'resume token of eventsourced_proxy 0.1.0',
            DETAIL = 'Its keys are partitions, whose servers may have changed since it was issued.',
            HINT = 'Read again from '''' and skip the events already applied, by (entity_type, entity_id, seq_no); see docs/scale-out.md, "Resume tokens".';
    END IF;
    IF token <> '' AND token !~ '^s[0-9a-f]{16}:[0-9]{1,18}(,s[0-9a-f]{16}:[0-9]{1,18})*$' THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'malformed resume token',
            DETAIL = 'A token is a comma-separated list of key:position pairs.',
            HINT = 'Pass the token of the last row or batch you received, or '''' to start.';
    END IF;
    pairs := CASE WHEN token = '' THEN '{}' ELSE string_to_array(token, ',') END;
    IF cardinality(pairs) > 4096 THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'resume token has too many pairs',
            DETAIL = format('The token has %s pairs; at most 4096 are read.', cardinality(pairs)),
            HINT = 'Pass the token of the last row or batch you received, or '''' to start.';
    END IF;
    SELECT string_agg(k, ', ') INTO twice
      FROM (SELECT split_part(p, ':', 1) AS k FROM unnest(pairs) p GROUP BY 1 HAVING count(*) > 1) d;
    IF twice IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'resume token names a server twice',
            DETAIL = format('Keys named more than once: %s.', twice),
            HINT = 'Pass the token of the last row or batch you received, or '''' to start.';
    END IF;
    -- pairs of servers no longer in the cluster are dropped: those servers
    -- are not read any more, and the events of their partitions are on the
    -- servers holding them now, read after their own positions
    SELECT array_agg(s.shard ORDER BY s.shard), array_agg(s.token_key ORDER BY s.shard),
           array_agg(coalesce(g.pos, 0) ORDER BY s.shard)
      INTO shards, keys, positions
      FROM eventsourced.shards() s
      LEFT JOIN (SELECT split_part(p, ':', 1) AS k, split_part(p, ':', 2)::bigint AS pos
                   FROM unnest(pairs) p) g ON g.k = s.token_key;
    IF shards IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '42704',
            MESSAGE = 'server "eventsourced_cluster" has no partitions',
            HINT = 'Define the cluster: CREATE SERVER eventsourced_cluster FOREIGN DATA WRAPPER plproxy OPTIONS (p0 ''...'', ...).';
    END IF;
    IF (SELECT count(DISTINCT k) FROM unnest(keys) k) < cardinality(keys) THEN
        RAISE EXCEPTION USING ERRCODE = '55000', MESSAGE = 'two servers of the cluster have one token key',
            DETAIL = 'The hashes of two connection strings agree in their first 64 bits.',
            HINT = 'Write one of them differently (say, with its options in another order).';
    END IF;
END
$$;

-- Refuses a caller without EXECUTE on the feed function a helper serves:
-- the helpers are PUBLIC (they run with the caller's rights, which PL/Proxy
-- needs to reach the shards as the caller), so they check the API's grant.
CREATE FUNCTION eventsourced.feed_granted(api regprocedure)
    RETURNS void
    LANGUAGE plpgsql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT has_function_privilege(api, 'EXECUTE') THEN
        RAISE EXCEPTION USING ERRCODE = '42501', MESSAGE = format('permission denied for function %s',
                                                                   (SELECT p.proname FROM pg_proc p WHERE p.oid = api)),
            DETAIL = format('The feed''s helpers serve the roles granted EXECUTE on %s.', api),
            HINT = 'Ask for EXECUTE on it; the shards decide again, as your role.';
    END IF;
END
$$;

-- The largest value a shard's answer carries to the proxy: PL/Proxy moves
-- bytea as hex text ("\x" and two digits a byte), which the shard renders
-- in one allocation of at most 1,073,741,823 bytes, and the row it sends
-- must fit in that too: 512 MiB less 1 MiB for the row's other columns.
CREATE FUNCTION eventsourced.feed_value_limit()
    RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN 535822336;

-- Refuses a page holding a value too large to travel, naming the server,
-- where it is, and the way past it.  what: 'payload_bytes' (row feed: pos
-- is the event's position) or 'batch' (protobuf: the page after pos).
CREATE FUNCTION eventsourced.feed_too_large(shard integer, pos bigint, size integer, what text)
    RETURNS bytea
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    server record;
BEGIN
    SELECT * INTO server FROM eventsourced.shards() s WHERE s.shard = feed_too_large.shard;
    IF what = 'payload_bytes' THEN
        RAISE EXCEPTION USING ERRCODE = '54000', MESSAGE = 'event too large to read through the proxy',
            DETAIL = format('The event at position %s of server %s (%s, shard %s) has %s bytes of payload_bytes; at most %s travel through PL/Proxy.',
                            pos, server.token_key, server.connstr, shard, size, eventsourced.feed_value_limit()),
            HINT = format('Read it on that server (events_by_id, binary results); to go past it, resume with %s:%s in the token.',
                          server.token_key, pos);
    END IF;
    RAISE EXCEPTION USING ERRCODE = '54000', MESSAGE = 'page of a server too large to read through the proxy',
        DETAIL = format('The batch of server %s (%s, shard %s) after position %s has %s bytes; at most %s travel through PL/Proxy.',
                        server.token_key, server.connstr, shard, pos, size, eventsourced.feed_value_limit()),
        HINT = 'Ask for fewer events (max_count); if one event fills it, read_all_shards with the same token names it.';
END
$$;

-- Each server's page of read_all (events_by_type) after its own position
-- (one element of parts per server, sent to that server); payload_bytes
-- larger than value_limit does not travel: payload_size says it is there.
DROP FUNCTION eventsourced.read_all_parts(text[], integer);
CREATE FUNCTION eventsourced.read_all_parts(parts text[], max_count integer, value_limit integer)
    RETURNS TABLE (shard integer, "position" bigint, entity_type text, entity_id text,
                   seq_no bigint, event_type text, payload jsonb, metadata jsonb,
                   event_id uuid, recorded_at timestamptz, payload_bytes bytea, payload_size integer)
    LANGUAGE plproxy
AS $$
    CLUSTER 'eventsourced_cluster';
    SPLIT parts;
    RUN ON eventsourced.token_route(parts);
    SELECT pg_catalog.split_part((parts)[1], ':', 1)::integer AS shard, r.position, r.entity_type,
           r.entity_id, r.seq_no, r.event_type, r.payload, r.metadata, r.event_id, r.recorded_at,
           CASE WHEN pg_catalog.octet_length(r.payload_bytes) OPERATOR(pg_catalog.<=) value_limit
                THEN r.payload_bytes END AS payload_bytes,
           pg_catalog.octet_length(r.payload_bytes) AS payload_size
      FROM eventsourced.read_all(pg_catalog.split_part((parts)[1], ':', 2)::bigint, max_count) r;
$$;

DROP FUNCTION eventsourced.events_by_type_parts(text, text[], integer);
CREATE FUNCTION eventsourced.events_by_type_parts(type_name text, parts text[], max_count integer,
                                                  value_limit integer)
    RETURNS TABLE (shard integer, "position" bigint, entity_id text, seq_no bigint,
                   event_type text, payload jsonb, metadata jsonb, event_id uuid,
                   recorded_at timestamptz, payload_bytes bytea, payload_size integer)
    LANGUAGE plproxy
AS $$
    CLUSTER 'eventsourced_cluster';
    SPLIT parts;
    RUN ON eventsourced.token_route(parts);
    SELECT pg_catalog.split_part((parts)[1], ':', 1)::integer AS shard, r.position,
           r.entity_id, r.seq_no, r.event_type, r.payload, r.metadata, r.event_id, r.recorded_at,
           CASE WHEN pg_catalog.octet_length(r.payload_bytes) OPERATOR(pg_catalog.<=) value_limit
                THEN r.payload_bytes END AS payload_bytes,
           pg_catalog.octet_length(r.payload_bytes) AS payload_size
      FROM eventsourced.events_by_type(type_name, pg_catalog.split_part((parts)[1], ':', 2)::bigint,
                                       max_count) r;
$$;

-- The SQL of one page of the feed over the servers' parts (the query of
-- the parts function PARTS, whose rows carry "shard" and "position"): the
-- servers' rows in turns (each server's first row in position order, then
-- each one's second, ...), at most $3 rows, each with the token after it,
-- from running maxima of each server's position (the start position where
-- a server has no row yet).  Shards and positions are integers parsed by
-- feed_start() and keys its hex keys, so formatting them in is safe.
DROP FUNCTION eventsourced.page_sql(text, text, integer[], bigint[]);
CREATE FUNCTION eventsourced.page_sql(parts text, columns text, shards integer[],
                                      keys text[], positions bigint[])
    RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT pg_catalog.format(
        'SELECT pg_catalog.concat_ws('','', %s) AS token, %s, x.shard
           FROM (SELECT y.*, pg_catalog.row_number() OVER (PARTITION BY y.shard ORDER BY y.position) AS turn
                   FROM %s y) x
         WINDOW w AS (ORDER BY x.turn, x.shard ROWS UNBOUNDED PRECEDING)
          ORDER BY x.turn, x.shard
          LIMIT $3',
        pg_catalog.string_agg(pg_catalog.format(
            '%s || '':'' || COALESCE(pg_catalog.max(x.position) FILTER (WHERE x.shard = %s) OVER w, %s)',
            pg_catalog.quote_literal(key), k, p), ', ' ORDER BY o),
        columns, parts)
      FROM ROWS FROM (pg_catalog.unnest(shards), pg_catalog.unnest(keys), pg_catalog.unnest(positions))
           WITH ORDINALITY AS u(k, key, p, o);
END;

-- One page of a row feed: the parts function PARTS (with $4 the type) over
-- the servers after the token's positions, at least one row per server.
CREATE FUNCTION eventsourced.feed_rows_sql(parts text, columns text, after text, page_size integer,
                                           OUT sql text, OUT parts_arg text[], OUT per_server integer,
                                           OUT page_limit integer)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    start record;
BEGIN
    SELECT * INTO start FROM eventsourced.feed_start(after, page_size);
    sql := eventsourced.page_sql(parts, columns, start.shards, start.keys, start.positions);
    parts_arg := (SELECT array_agg(k || ':' || p) FROM unnest(start.shards, start.positions) AS u(k, p));
    per_server := eventsourced.shard_page(page_size, cardinality(start.shards));
    page_limit := greatest(page_size, cardinality(start.shards));
END
$$;

-- The feed of every server, with the token to resume after each row
-- (read_all_shards(); a PL/pgSQL function cannot name an argument and a
-- result column alike).
CREATE OR REPLACE FUNCTION eventsourced.read_all_page(after text, page_size integer)
    RETURNS TABLE (token text, "position" bigint, entity_type text, entity_id text,
                   seq_no bigint, event_type text, payload jsonb, metadata jsonb,
                   event_id uuid, recorded_at timestamptz, payload_bytes bytea,
                   shard integer)
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    page record;
BEGIN
    PERFORM eventsourced.feed_granted('eventsourced.read_all_shards(text, integer)');
    SELECT * INTO page FROM eventsourced.feed_rows_sql(
        'eventsourced.read_all_parts($1, $2, eventsourced.feed_value_limit())',
        'x.position, x.entity_type, x.entity_id, x.seq_no, x.event_type, x.payload, x.metadata,
         x.event_id, x.recorded_at, CASE WHEN x.payload_size > eventsourced.feed_value_limit()
              THEN eventsourced.feed_too_large(x.shard, x.position, x.payload_size, ''payload_bytes'')
              ELSE x.payload_bytes END', after, page_size);
    RETURN QUERY EXECUTE page.sql USING page.parts_arg, page.per_server, page.page_limit;
END
$$;

CREATE OR REPLACE FUNCTION eventsourced.events_by_type_page(type_name text, after text, page_size integer)
    RETURNS TABLE (token text, "position" bigint, entity_id text, seq_no bigint,
                   event_type text, payload jsonb, metadata jsonb, event_id uuid,
                   recorded_at timestamptz, payload_bytes bytea, shard integer)
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    page record;
BEGIN
    PERFORM eventsourced.feed_granted('eventsourced.events_by_type_shards(text, text, integer)');
    SELECT * INTO page FROM eventsourced.feed_rows_sql(
        'eventsourced.events_by_type_parts($4, $1, $2, eventsourced.feed_value_limit())',
        'x.position, x.entity_id, x.seq_no, x.event_type, x.payload, x.metadata,
         x.event_id, x.recorded_at, CASE WHEN x.payload_size > eventsourced.feed_value_limit()
              THEN eventsourced.feed_too_large(x.shard, x.position, x.payload_size, ''payload_bytes'')
              ELSE x.payload_bytes END', after, page_size);
    RETURN QUERY EXECUTE page.sql USING page.parts_arg, page.per_server, page.page_limit, type_name;
END
$$;

GRANT EXECUTE ON FUNCTION eventsourced.token_key(text),
    eventsourced.feed_value_limit(),
    eventsourced.feed_too_large(integer, bigint, integer, text),
    eventsourced.read_all_parts(text[], integer, integer),
    eventsourced.events_by_type_parts(text, text[], integer, integer),
    eventsourced.shards(),
    eventsourced.feed_start(text, integer),
    eventsourced.feed_granted(regprocedure),
    eventsourced.page_sql(text, text, integer[], text[], bigint[]),
    eventsourced.feed_rows_sql(text, text, text, integer)
    TO PUBLIC;
