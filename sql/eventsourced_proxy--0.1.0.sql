\echo Use "CREATE EXTENSION eventsourced_proxy CASCADE" to load this file. \quit

-- The proxy side of a sharded deployment (docs/scale-out.md).  Schema
-- eventsourced holds the functions of the eventsourced extension with the
-- same names, arguments and results; each entity-scoped call runs, through
-- PL/Proxy, on the shard that holds the entity, chosen by entity_hash()
-- over the partitions p0 ... pN-1 of the SQL/MED server
-- eventsourced_cluster.  Nothing here stores data.

-- entity_hash() hashes the bytes of the names, which are UTF-8 on the
-- shards; a proxy database in another encoding would route differently from
-- every documented client.
DO $$
BEGIN
    IF pg_catalog.getdatabaseencoding() OPERATOR(pg_catalog.<>) 'UTF8' THEN
        RAISE EXCEPTION USING ERRCODE = '0A000',
            MESSAGE = 'eventsourced_proxy needs a UTF8 database',
            DETAIL = pg_catalog.format('This database''s encoding is %s; entity_hash() is defined on UTF-8 bytes.',
                                       pg_catalog.getdatabaseencoding()),
            HINT = 'Create the proxy database with ENCODING ''UTF8''.';
    END IF;
END
$$;

-- The composite types of the extension, so that arguments and results keep
-- their types (PL/Proxy sends them as text with the type's name).
CREATE TYPE eventsourced.event_data AS (
    event_type text,
    payload    jsonb,
    metadata   jsonb,
    event_id   uuid
);

CREATE TYPE eventsourced.command_result AS (
    accepted  boolean,
    reply     jsonb,
    rejection jsonb,
    seq_no    bigint,
    state     jsonb
);

-- The constructor of event_data, evaluated on the proxy as on a server.
CREATE FUNCTION eventsourced.event(event_type text, payload jsonb,
                                   metadata jsonb DEFAULT NULL,
                                   event_id uuid DEFAULT NULL)
    RETURNS eventsourced.event_data
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT ROW(event_type, payload, metadata, event_id)::eventsourced.event_data;
END;

-- The documented, stable hash of an entity: the first four bytes of the MD5
-- of "<byte length of entity_type>:<entity_type><entity_id>" (UTF-8), read
-- as a big-endian signed 32-bit integer.  The partition is its low bits
-- (hash & (partitions - 1)), as PL/Proxy maps it.
CREATE FUNCTION eventsourced.entity_hash(entity_type text, entity_id text)
    RETURNS integer
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN ('x' OPERATOR(pg_catalog.||) pg_catalog.substr(pg_catalog.md5(
                pg_catalog.octet_length(entity_type)::text OPERATOR(pg_catalog.||) ':'
                OPERATOR(pg_catalog.||) entity_type OPERATOR(pg_catalog.||) entity_id), 1, 8)
           )::pg_catalog.bit(32)::integer;

-- Routing of a call: a NULL name goes to partition 0, whose server then
-- refuses it with the extension's own error (22004), as a direct call would.
CREATE FUNCTION eventsourced.route(entity_type text, entity_id text)
    RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN COALESCE(eventsourced.entity_hash(entity_type, entity_id), 0);

-- The partition of an entity under the cluster's current partition count.
CREATE FUNCTION eventsourced.entity_partition(entity_type text, entity_id text)
    RETURNS integer
    LANGUAGE sql STABLE STRICT PARALLEL SAFE
BEGIN ATOMIC
    SELECT eventsourced.entity_hash(entity_type, entity_id)
           OPERATOR(pg_catalog.&) (pg_catalog.count(*)::integer OPERATOR(pg_catalog.-) 1)
      FROM pg_catalog.pg_foreign_server s,
           pg_catalog.pg_options_to_table(s.srvoptions) o
     WHERE s.srvname OPERATOR(pg_catalog.=) 'eventsourced_cluster'
       AND o.option_name OPERATOR(pg_catalog.~) '^(p|partition_)[0-9]+$';
END;

-- The servers of the cluster: one row per distinct connection string, keyed
-- by the lowest partition it holds (the key of the feed's token).  PL/Proxy
-- names partitions pN or partition_N.
CREATE FUNCTION eventsourced.shards(OUT shard integer, OUT partitions integer[],
                                    OUT connstr text)
    RETURNS SETOF record
    LANGUAGE sql STABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT pg_catalog.min(p.part), pg_catalog.array_agg(p.part ORDER BY p.part), p.conn
      FROM (SELECT pg_catalog.regexp_replace(o.option_name, '^(p|partition_)', '')::integer AS part,
                   o.option_value AS conn
              FROM pg_catalog.pg_foreign_server s,
                   pg_catalog.pg_options_to_table(s.srvoptions) o
             WHERE s.srvname OPERATOR(pg_catalog.=) 'eventsourced_cluster'
               AND o.option_name OPERATOR(pg_catalog.~) '^(p|partition_)[0-9]+$') p
     GROUP BY p.conn
     ORDER BY 1;
END;

-- Appending: each form runs on the entity's shard.
CREATE FUNCTION eventsourced.append(entity_type text, entity_id text,
                                    expected_seq_no bigint,
                                    event_type text, payload jsonb,
                                    metadata jsonb DEFAULT NULL,
                                    event_id uuid DEFAULT NULL)
    RETURNS bigint
    LANGUAGE plproxy
AS $$
    CLUSTER 'eventsourced_cluster';
    RUN ON eventsourced.route(entity_type, entity_id);
$$;

CREATE FUNCTION eventsourced.append(entity_type text, entity_id text,
                                    expected_seq_no bigint,
                                    events eventsourced.event_data[])
    RETURNS bigint
    LANGUAGE plproxy
AS $$
    CLUSTER 'eventsourced_cluster';
    RUN ON eventsourced.route(entity_type, entity_id);
$$;

CREATE FUNCTION eventsourced.append_binary(entity_type text, entity_id text,
                                           expected_seq_no bigint,
                                           event_type text, payload bytea,
                                           metadata jsonb DEFAULT NULL,
                                           event_id uuid DEFAULT NULL)
    RETURNS bigint
    LANGUAGE plproxy
AS $$
    CLUSTER 'eventsourced_cluster';
    RUN ON eventsourced.route(entity_type, entity_id);
$$;

-- Reads one unsigned varint of a protobuf message at offset pos (0-based);
-- returns the value and the offset after it, NULL when malformed.
CREATE FUNCTION eventsourced.pb_varint(buf bytea, pos integer,
                                       OUT value bigint, OUT next integer)
    LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    b integer;
    shift integer := 0;
BEGIN
    value := 0;
    LOOP
        -- at most 10 bytes, as the shards' parsers read them
        IF pos >= octet_length(buf) OR shift > 63 THEN
            value := NULL;
            next := NULL;
            RETURN;
        END IF;
        b := get_byte(buf, pos);
        pos := pos + 1;
        value := value | ((b & 127)::bigint << shift);
        shift := shift + 7;
        EXIT WHEN b < 128;
    END LOOP;
    next := pos;
END
$$;

-- The entity of an EventBatch (proto/eventsourced.proto): entity_type (2)
-- and entity_id (3) of its first Event (field 1).  NULLs when the bytes do
-- not say; the shard then refuses the batch with the extension's error.
CREATE FUNCTION eventsourced.pb_batch_entity(batch bytea,
                                             OUT entity_type text, OUT entity_id text)
    LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    pos integer := 0;
    tag bigint;
    len bigint;
    ev bytea;
BEGIN
    -- find the first Event: skip other fields of the batch
    LOOP
        SELECT v.value, v.next INTO tag, pos FROM eventsourced.pb_varint(batch, pos) v;
        IF tag IS NULL THEN RETURN; END IF;
        IF tag & 7 = 0 THEN
            SELECT v.next INTO pos FROM eventsourced.pb_varint(batch, pos) v;
        ELSIF tag & 7 = 2 THEN
            SELECT v.value, v.next INTO len, pos FROM eventsourced.pb_varint(batch, pos) v;
            IF len IS NULL OR len > octet_length(batch) - pos THEN RETURN; END IF;
            IF tag = 10 THEN
                ev := substring(batch FROM pos + 1 FOR len::integer);
                EXIT;
            END IF;
            pos := pos + len::integer;
        ELSIF tag & 7 = 1 THEN
            pos := pos + 8;
        ELSIF tag & 7 = 5 THEN
            pos := pos + 4;
        ELSE
            RETURN;
        END IF;
        IF pos IS NULL OR pos > octet_length(batch) THEN RETURN; END IF;
    END LOOP;
    -- its names (the last occurrence wins, as protobuf merges)
    pos := 0;
    WHILE pos < octet_length(ev) LOOP
        SELECT v.value, v.next INTO tag, pos FROM eventsourced.pb_varint(ev, pos) v;
        IF tag IS NULL THEN RETURN; END IF;
        CASE tag & 7
            WHEN 0 THEN
                SELECT v.next INTO pos FROM eventsourced.pb_varint(ev, pos) v;
            WHEN 1 THEN pos := pos + 8;
            WHEN 5 THEN pos := pos + 4;
            WHEN 2 THEN
                SELECT v.value, v.next INTO len, pos FROM eventsourced.pb_varint(ev, pos) v;
                IF len IS NULL OR len > octet_length(ev) - pos THEN RETURN; END IF;
                IF tag = 18 THEN
                    entity_type := convert_from(substring(ev FROM pos + 1 FOR len::integer), 'UTF8');
                ELSIF tag = 26 THEN
                    entity_id := convert_from(substring(ev FROM pos + 1 FOR len::integer), 'UTF8');
                END IF;
                pos := pos + len::integer;
            ELSE RETURN;
        END CASE;
        IF pos IS NULL THEN RETURN; END IF;
    END LOOP;
EXCEPTION WHEN character_not_in_repertoire OR untranslatable_character THEN
    entity_type := NULL;
    entity_id := NULL;
END
$$;

-- Routing of an EventBatch by its entity.
CREATE FUNCTION eventsourced.route_pb(batch bytea)
    RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT eventsourced.route(b.entity_type, b.entity_id)
      FROM eventsourced.pb_batch_entity(batch) b;
END;

CREATE FUNCTION eventsourced.append_pb(batch bytea, expected_seq_no bigint)
    RETURNS bigint
    LANGUAGE plproxy
AS $$
    CLUSTER 'eventsourced_cluster';
    RUN ON eventsourced.route_pb(batch);
$$;

-- Reading one entity.
CREATE FUNCTION eventsourced.last_seq_no(entity_type text, entity_id text)
    RETURNS bigint
    LANGUAGE plproxy
AS $$
    CLUSTER 'eventsourced_cluster';
    RUN ON eventsourced.route(entity_type, entity_id);
$$;

CREATE FUNCTION eventsourced.events_by_id(entity_type text, entity_id text,
                                          from_seq_no bigint DEFAULT 1,
                                          max_count integer DEFAULT NULL)
    RETURNS TABLE (seq_no bigint, event_type text, payload jsonb,
                   metadata jsonb, event_id uuid, "position" bigint,
                   recorded_at timestamptz, payload_bytes bytea)
    LANGUAGE plproxy
AS $$
    CLUSTER 'eventsourced_cluster';
    RUN ON eventsourced.route(entity_type, entity_id);
$$;

-- Snapshots.
CREATE FUNCTION eventsourced.save_snapshot(entity_type text, entity_id text,
                                           seq_no bigint, state jsonb)
    RETURNS void
    LANGUAGE plproxy
AS $$
    CLUSTER 'eventsourced_cluster';
    RUN ON eventsourced.route(entity_type, entity_id);
$$;

CREATE FUNCTION eventsourced.save_snapshot_bytes(entity_type text, entity_id text,
                                                 seq_no bigint, state bytea)
    RETURNS void
    LANGUAGE plproxy
AS $$
    CLUSTER 'eventsourced_cluster';
    RUN ON eventsourced.route(entity_type, entity_id);
$$;

CREATE FUNCTION eventsourced.load_snapshot(entity_type text, entity_id text,
                                           OUT seq_no bigint, OUT state jsonb)
    RETURNS SETOF record
    LANGUAGE plproxy
AS $$
    CLUSTER 'eventsourced_cluster';
    RUN ON eventsourced.route(entity_type, entity_id);
$$;

CREATE FUNCTION eventsourced.load_snapshot_bytes(entity_type text, entity_id text,
                                                 OUT seq_no bigint, OUT state bytea)
    RETURNS SETOF record
    LANGUAGE plproxy
AS $$
    CLUSTER 'eventsourced_cluster';
    RUN ON eventsourced.route(entity_type, entity_id);
$$;

CREATE FUNCTION eventsourced.load_snapshot_pb(entity_type text, entity_id text)
    RETURNS bytea
    LANGUAGE plproxy
AS $$
    CLUSTER 'eventsourced_cluster';
    RUN ON eventsourced.route(entity_type, entity_id);
$$;

-- Commands run on the entity's shard, with the handlers registered there.
CREATE FUNCTION eventsourced.handle_command(entity_type text, entity_id text,
                                            command text, args jsonb DEFAULT '{}')
    RETURNS eventsourced.command_result
    LANGUAGE plproxy
AS $$
    CLUSTER 'eventsourced_cluster';
    RUN ON eventsourced.route(entity_type, entity_id);
$$;

-- With a command id (eventsourced 0.4.0 on the shards): a retry gets the
-- first attempt's result, kept on the entity's shard.
CREATE FUNCTION eventsourced.handle_command(entity_type text, entity_id text,
                                            command text, args jsonb, command_id text)
    RETURNS eventsourced.command_result
    LANGUAGE plproxy
AS $$
    CLUSTER 'eventsourced_cluster';
    RUN ON eventsourced.route(entity_type, entity_id);
$$;

-- Administrative calls run on every server (PL/Proxy's RUN ON ALL calls
-- each distinct connection string once) and return one row per server,
-- named by the server itself (its cluster_name when set, its database and
-- port).  Handler signatures are text, resolved on each server.
CREATE FUNCTION eventsourced.register_entity(entity_type text, event_handler text,
                                             initial_state jsonb DEFAULT 'null',
                                             snapshot_after integer DEFAULT NULL)
    RETURNS TABLE (shard text)
    LANGUAGE plproxy
AS $$
    CLUSTER 'eventsourced_cluster';
    RUN ON ALL;
    SELECT pg_catalog.concat_ws(' ', NULLIF(pg_catalog.current_setting('cluster_name'), ''),
                                pg_catalog.current_database(), 'port', pg_catalog.current_setting('port')) AS shard
      FROM eventsourced.register_entity(entity_type, event_handler::pg_catalog.regprocedure,
                                        initial_state, snapshot_after);
$$;

CREATE FUNCTION eventsourced.register_command(entity_type text, command text, handler text)
    RETURNS TABLE (shard text)
    LANGUAGE plproxy
AS $$
    CLUSTER 'eventsourced_cluster';
    RUN ON ALL;
    SELECT pg_catalog.concat_ws(' ', NULLIF(pg_catalog.current_setting('cluster_name'), ''),
                                pg_catalog.current_database(), 'port', pg_catalog.current_setting('port')) AS shard
      FROM eventsourced.register_command(entity_type, command, handler::pg_catalog.regprocedure);
$$;

CREATE FUNCTION eventsourced.register_protobuf(descriptor_set bytea)
    RETURNS TABLE (shard text, message_types text[])
    LANGUAGE plproxy
AS $$
    CLUSTER 'eventsourced_cluster';
    RUN ON ALL;
    SELECT pg_catalog.concat_ws(' ', NULLIF(pg_catalog.current_setting('cluster_name'), ''),
                                pg_catalog.current_database(), 'port', pg_catalog.current_setting('port')) AS shard,
           ARRAY(SELECT eventsourced.register_protobuf(descriptor_set)) AS message_types;
$$;

-- create_projection on a server that already has this very projection (a
-- re-run after a failure elsewhere) reports created = false instead of
-- failing, so re-running converges.
CREATE FUNCTION eventsourced.create_projection(name text, entity_type text, handler text,
                                               error_strategy text DEFAULT 'stop')
    RETURNS TABLE (shard text, created boolean)
    LANGUAGE plproxy
AS $$
    CLUSTER 'eventsourced_cluster';
    RUN ON ALL;
    SELECT pg_catalog.concat_ws(' ', NULLIF(pg_catalog.current_setting('cluster_name'), ''),
                                pg_catalog.current_database(), 'port', pg_catalog.current_setting('port')) AS shard,
           pg_catalog.count(x.*) OPERATOR(pg_catalog.>) 0 AS created
      FROM (SELECT eventsourced.create_projection(name, entity_type,
                                                  handler::pg_catalog.regprocedure, error_strategy)
             WHERE NOT EXISTS (SELECT FROM eventsourced.projections p
                                WHERE p.name OPERATOR(pg_catalog.=) name
                                  AND p.entity_type OPERATOR(pg_catalog.=) entity_type
                                  AND (p.handler::pg_catalog.regprocedure)::pg_catalog.oid
                                      OPERATOR(pg_catalog.=) (handler::pg_catalog.regprocedure)::pg_catalog.oid
                                  AND p.error_strategy OPERATOR(pg_catalog.=) error_strategy)) x;
$$;

CREATE FUNCTION eventsourced.run_projection(name text, max_events integer DEFAULT 1000)
    RETURNS TABLE (shard text, applied integer)
    LANGUAGE plproxy
AS $$
    CLUSTER 'eventsourced_cluster';
    RUN ON ALL;
    SELECT pg_catalog.concat_ws(' ', NULLIF(pg_catalog.current_setting('cluster_name'), ''),
                                pg_catalog.current_database(), 'port', pg_catalog.current_setting('port')) AS shard,
           eventsourced.run_projection(name, max_events) AS applied;
$$;

CREATE FUNCTION eventsourced.reset_projection(name text, pos bigint DEFAULT 0)
    RETURNS TABLE (shard text)
    LANGUAGE plproxy
AS $$
    CLUSTER 'eventsourced_cluster';
    RUN ON ALL;
    SELECT pg_catalog.concat_ws(' ', NULLIF(pg_catalog.current_setting('cluster_name'), ''),
                                pg_catalog.current_database(), 'port', pg_catalog.current_setting('port')) AS shard
      FROM eventsourced.reset_projection(name, pos);
$$;

CREATE FUNCTION eventsourced.drop_projection(name text)
    RETURNS TABLE (shard text)
    LANGUAGE plproxy
AS $$
    CLUSTER 'eventsourced_cluster';
    RUN ON ALL;
    SELECT pg_catalog.concat_ws(' ', NULLIF(pg_catalog.current_setting('cluster_name'), ''),
                                pg_catalog.current_database(), 'port', pg_catalog.current_setting('port')) AS shard
      FROM eventsourced.drop_projection(name);
$$;

-- The feed across servers.  Positions are per server, so a reader's resume
-- token carries one position per server: "shard:position" pairs, comma
-- separated, in shard order, where shard is the lowest partition the server
-- holds (eventsourced.shards()); '' starts at the beginning everywhere, and
-- a server missing from a token is read from its beginning.

-- Checks a feed read's arguments and parses its resume token into the
-- positions of the current servers.
CREATE FUNCTION eventsourced.feed_start(token text, max_count integer,
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

-- The partition a "shard:position" element of a token is sent to.
CREATE FUNCTION eventsourced.token_route(part text)
    RETURNS integer
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN pg_catalog.split_part(part, ':', 1)::integer;

-- Each server's page of read_all after its own position (one element of
-- parts per server, sent to that server).
CREATE FUNCTION eventsourced.read_all_parts(parts text[], max_count integer)
    RETURNS TABLE (shard integer, "position" bigint, entity_type text, entity_id text,
                   seq_no bigint, event_type text, payload jsonb, metadata jsonb,
                   event_id uuid, recorded_at timestamptz, payload_bytes bytea)
    LANGUAGE plproxy
AS $$
    CLUSTER 'eventsourced_cluster';
    SPLIT parts;
    RUN ON eventsourced.token_route(parts);
    SELECT pg_catalog.split_part((parts)[1], ':', 1)::integer AS shard, r.position, r.entity_type,
           r.entity_id, r.seq_no, r.event_type, r.payload, r.metadata, r.event_id,
           r.recorded_at, r.payload_bytes
      FROM eventsourced.read_all(pg_catalog.split_part((parts)[1], ':', 2)::bigint, max_count) r;
$$;

CREATE FUNCTION eventsourced.events_by_type_parts(type_name text, parts text[], max_count integer)
    RETURNS TABLE (shard integer, "position" bigint, entity_id text, seq_no bigint,
                   event_type text, payload jsonb, metadata jsonb, event_id uuid,
                   recorded_at timestamptz, payload_bytes bytea)
    LANGUAGE plproxy
AS $$
    CLUSTER 'eventsourced_cluster';
    SPLIT parts;
    RUN ON eventsourced.token_route(parts);
    SELECT pg_catalog.split_part((parts)[1], ':', 1)::integer AS shard, r.position,
           r.entity_id, r.seq_no, r.event_type, r.payload, r.metadata, r.event_id,
           r.recorded_at, r.payload_bytes
      FROM eventsourced.events_by_type(type_name, pg_catalog.split_part((parts)[1], ':', 2)::bigint,
                                       max_count) r;
$$;

-- The per-server limit of a page: max_count spread over the servers
-- (rounded up), so that a page moves every server that has events.
CREATE FUNCTION eventsourced.shard_page(max_count integer, servers integer)
    RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE WHEN max_count OPERATOR(pg_catalog.>) 0
                THEN ((max_count::bigint OPERATOR(pg_catalog.+) servers OPERATOR(pg_catalog.-) 1)
                      OPERATOR(pg_catalog./) servers)::integer
                ELSE max_count END;

-- The SQL of one page of the feed over the servers' parts (the query of
-- the parts function PARTS, whose rows carry "shard" and "position"): each
-- server's rows in position order, server after server, at most $3 rows,
-- each with the token after it, from running maxima of each server's
-- position (the start position where a server has no row yet).  Shards and
-- positions are integers parsed by feed_start(), so formatting them in is
-- safe.
CREATE FUNCTION eventsourced.page_sql(parts text, columns text, shards integer[],
                                      positions bigint[])
    RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT pg_catalog.format(
        'SELECT pg_catalog.concat_ws('','', %s) AS token, %s, x.shard
           FROM %s x
         WINDOW w AS (ORDER BY x.shard, x.position ROWS UNBOUNDED PRECEDING)
          ORDER BY x.shard, x.position
          LIMIT $3',
        pg_catalog.string_agg(pg_catalog.format(
            '%s || '':'' || COALESCE(pg_catalog.max(x.position) FILTER (WHERE x.shard = %s) OVER w, %s)',
            pg_catalog.quote_literal(k::text), k, p), ', ' ORDER BY o),
        columns, parts)
      FROM ROWS FROM (pg_catalog.unnest(shards), pg_catalog.unnest(positions)) WITH ORDINALITY AS u(k, p, o);
END;

-- The feed of every server, with the token to resume after each row
-- (read_all_shards() below; a PL/pgSQL function cannot name an argument and
-- a result column alike).
CREATE FUNCTION eventsourced.read_all_page(after text, page_size integer)
    RETURNS TABLE (token text, "position" bigint, entity_type text, entity_id text,
                   seq_no bigint, event_type text, payload jsonb, metadata jsonb,
                   event_id uuid, recorded_at timestamptz, payload_bytes bytea,
                   shard integer)
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    start record;
BEGIN
    SELECT * INTO start FROM eventsourced.feed_start(after, page_size);
    RETURN QUERY EXECUTE eventsourced.page_sql(
        'eventsourced.read_all_parts($1, $2)',
        'x.position, x.entity_type, x.entity_id, x.seq_no, x.event_type, x.payload, x.metadata,
         x.event_id, x.recorded_at, x.payload_bytes',
        start.shards, start.positions)
    USING (SELECT array_agg(k || ':' || p) FROM unnest(start.shards, start.positions) AS u(k, p)),
          eventsourced.shard_page(page_size, cardinality(start.shards)), page_size;
END
$$;

CREATE FUNCTION eventsourced.events_by_type_page(type_name text, after text, page_size integer)
    RETURNS TABLE (token text, "position" bigint, entity_id text, seq_no bigint,
                   event_type text, payload jsonb, metadata jsonb, event_id uuid,
                   recorded_at timestamptz, payload_bytes bytea, shard integer)
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    start record;
BEGIN
    SELECT * INTO start FROM eventsourced.feed_start(after, page_size);
    RETURN QUERY EXECUTE eventsourced.page_sql(
        'eventsourced.events_by_type_parts($4, $1, $2)',
        'x.position, x.entity_id, x.seq_no, x.event_type, x.payload, x.metadata,
         x.event_id, x.recorded_at, x.payload_bytes',
        start.shards, start.positions)
    USING (SELECT array_agg(k || ':' || p) FROM unnest(start.shards, start.positions) AS u(k, p)),
          eventsourced.shard_page(page_size, cardinality(start.shards)), page_size, type_name;
END
$$;

-- The feed of every server with its resume token (docs/scale-out.md).
CREATE FUNCTION eventsourced.read_all_shards(token text DEFAULT '',
                                             max_count integer DEFAULT 1000)
    RETURNS TABLE (token text, "position" bigint, entity_type text, entity_id text,
                   seq_no bigint, event_type text, payload jsonb, metadata jsonb,
                   event_id uuid, recorded_at timestamptz, payload_bytes bytea,
                   shard integer)
    LANGUAGE sql VOLATILE
BEGIN ATOMIC
    SELECT * FROM eventsourced.read_all_page(token, max_count);
END;

-- The feed of one entity type on every server, with its resume token.
CREATE FUNCTION eventsourced.events_by_type_shards(entity_type text, token text DEFAULT '',
                                                   max_count integer DEFAULT 1000)
    RETURNS TABLE (token text, "position" bigint, entity_id text, seq_no bigint,
                   event_type text, payload jsonb, metadata jsonb, event_id uuid,
                   recorded_at timestamptz, payload_bytes bytea, shard integer)
    LANGUAGE sql VOLATILE
BEGIN ATOMIC
    SELECT * FROM eventsourced.events_by_type_page(entity_type, token, max_count);
END;

-- PostgreSQL lets a role with USAGE on a foreign server create its own user
-- mapping, naming any user: here that would let it reach the shards as
-- another role wherever the shards trust the proxy's connections.  In the
-- proxy database only superusers create or change user mappings.
CREATE FUNCTION eventsourced.mapping_guard()
    RETURNS event_trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT (SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = current_user) THEN
        RAISE EXCEPTION USING ERRCODE = '42501',
            MESSAGE = format('permission denied to %s', lower(tg_tag)),
            DETAIL = 'In a database with eventsourced_proxy only superusers create or change user mappings.',
            HINT = 'Ask a superuser to map your role to itself on the shards (docs/scale-out.md, "Roles").';
    END IF;
END
$$;
REVOKE ALL ON FUNCTION eventsourced.mapping_guard() FROM PUBLIC;
CREATE EVENT TRIGGER eventsourced_proxy_mapping_guard ON ddl_command_start
    WHEN TAG IN ('CREATE USER MAPPING', 'ALTER USER MAPPING')
    EXECUTE FUNCTION eventsourced.mapping_guard();

-- As on a server: the API is usable only by roles granted EXECUTE on it
-- (and every call is checked again on the shard, as the calling role).  The
-- helpers the API calls with the caller's rights are pure, read the
-- cluster's definition (which pg_foreign_server shows to everyone) or reach
-- the shards only through functions the shards check, so PUBLIC has them.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA eventsourced FROM PUBLIC;
GRANT EXECUTE ON FUNCTION eventsourced.event(text, jsonb, jsonb, uuid),
    eventsourced.entity_hash(text, text),
    eventsourced.route(text, text),
    eventsourced.entity_partition(text, text),
    eventsourced.shards(),
    eventsourced.pb_varint(bytea, integer),
    eventsourced.pb_batch_entity(bytea),
    eventsourced.route_pb(bytea),
    eventsourced.feed_start(text, integer),
    eventsourced.token_route(text),
    eventsourced.shard_page(integer, integer),
    eventsourced.page_sql(text, text, integer[], bigint[]),
    eventsourced.read_all_parts(text[], integer),
    eventsourced.events_by_type_parts(text, text[], integer),
    eventsourced.read_all_page(text, integer),
    eventsourced.events_by_type_page(text, text, integer)
    TO PUBLIC;
