\echo Use "CREATE EXTENSION eventsourced" to load this file. \quit

-- The event log.  Rows are only ever inserted, by eventsourced.append().
-- Text columns use the "C" collation: identifiers compare bytewise, which is
-- deterministic across locales and fast in the indexes.  The position index
-- carries entity_type, so the feed of one type is read from that index alone
-- (other types' entries are skipped without visiting the table) and no
-- second feed index has to be maintained on every append.
CREATE SEQUENCE eventsourced.events_position_seq AS bigint;

CREATE TABLE eventsourced.events (
    entity_type text COLLATE "C" NOT NULL,
    entity_id   text COLLATE "C" NOT NULL,
    seq_no      bigint NOT NULL,
    position    bigint NOT NULL,
    event_type  text COLLATE "C" NOT NULL,
    payload     jsonb NOT NULL,
    metadata    jsonb,
    event_id    uuid,
    recorded_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT events_pkey PRIMARY KEY (entity_type, entity_id, seq_no),
    CONSTRAINT events_position_key UNIQUE (position) INCLUDE (entity_type),
    CONSTRAINT events_seq_no_check CHECK (seq_no OPERATOR(pg_catalog.>=) 1)
);
CREATE UNIQUE INDEX events_event_id_key
    ON eventsourced.events (event_id) WHERE event_id IS NOT NULL;

-- The snapshot store: the newest snapshot of each entity.
CREATE TABLE eventsourced.snapshots (
    entity_type text COLLATE "C" NOT NULL,
    entity_id   text COLLATE "C" NOT NULL,
    seq_no      bigint NOT NULL,
    state       jsonb NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT snapshots_pkey PRIMARY KEY (entity_type, entity_id),
    CONSTRAINT snapshots_seq_no_check CHECK (seq_no OPERATOR(pg_catalog.>=) 1)
);

-- pg_dump keeps the user data and the position sequence.
SELECT pg_catalog.pg_extension_config_dump('eventsourced.events', '');
SELECT pg_catalog.pg_extension_config_dump('eventsourced.snapshots', '');
SELECT pg_catalog.pg_extension_config_dump('eventsourced.events_position_seq', '');

-- Events are immutable: UPDATE, DELETE and TRUNCATE are refused for every
-- role, superusers included, and in replica sessions too.
CREATE FUNCTION eventsourced.refuse_change() RETURNS trigger
    AS 'MODULE_PATHNAME', 'eventsourced_refuse_change' LANGUAGE C;
CREATE TRIGGER events_immutable
    BEFORE UPDATE OR DELETE ON eventsourced.events
    FOR EACH STATEMENT EXECUTE FUNCTION eventsourced.refuse_change();
CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON eventsourced.events
    FOR EACH STATEMENT EXECUTE FUNCTION eventsourced.refuse_change();
ALTER TABLE eventsourced.events ENABLE ALWAYS TRIGGER events_immutable;
ALTER TABLE eventsourced.events ENABLE ALWAYS TRIGGER events_no_truncate;

-- One event to append, as a composite.
CREATE TYPE eventsourced.event_data AS (
    event_type text,
    payload    jsonb,
    metadata   jsonb,
    event_id   uuid
);

CREATE FUNCTION eventsourced.event(event_type text, payload jsonb,
                                   metadata jsonb DEFAULT NULL,
                                   event_id uuid DEFAULT NULL)
    RETURNS eventsourced.event_data
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT ROW(event_type, payload, metadata, event_id)::eventsourced.event_data;
END;

-- Append one event; returns its seq_no.
CREATE FUNCTION eventsourced.append(entity_type text, entity_id text,
                                    expected_seq_no bigint,
                                    event_type text, payload jsonb,
                                    metadata jsonb DEFAULT NULL,
                                    event_id uuid DEFAULT NULL)
    RETURNS bigint
    AS 'MODULE_PATHNAME', 'eventsourced_append'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;

-- Append several events atomically; returns the last seq_no.
CREATE FUNCTION eventsourced.append(entity_type text, entity_id text,
                                    expected_seq_no bigint,
                                    events eventsourced.event_data[])
    RETURNS bigint
    AS 'MODULE_PATHNAME', 'eventsourced_append_batch'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;

-- Validates reader arguments; returns max_count so it can sit in a LIMIT.
CREATE FUNCTION eventsourced.check_entity_read(entity_type text, entity_id text,
                                               from_seq_no bigint,
                                               max_count integer)
    RETURNS integer
    AS 'MODULE_PATHNAME', 'eventsourced_check_entity_read'
    LANGUAGE C STABLE PARALLEL SAFE;

CREATE FUNCTION eventsourced.last_seq_no(entity_type text, entity_id text)
    RETURNS bigint
    LANGUAGE sql STABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT e.seq_no
      FROM eventsourced.events e
     WHERE e.entity_type = last_seq_no.entity_type COLLATE "C"
       AND e.entity_id = last_seq_no.entity_id COLLATE "C"
     ORDER BY e.seq_no DESC
     LIMIT eventsourced.check_entity_read(last_seq_no.entity_type,
                                          last_seq_no.entity_id, 1, 1);
END;

-- One entity's events in seq_no order.  A plain SQL function, so the planner
-- inlines it into the caller's query.
CREATE FUNCTION eventsourced.events_by_id(entity_type text, entity_id text,
                                          from_seq_no bigint DEFAULT 1,
                                          max_count integer DEFAULT NULL)
    RETURNS TABLE (seq_no bigint, event_type text, payload jsonb,
                   metadata jsonb, event_id uuid, "position" bigint,
                   recorded_at timestamptz)
    LANGUAGE sql STABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT e.seq_no, e.event_type, e.payload, e.metadata, e.event_id,
           e.position, e.recorded_at
      FROM eventsourced.events e
     WHERE e.entity_type = events_by_id.entity_type COLLATE "C"
       AND e.entity_id = events_by_id.entity_id COLLATE "C"
       AND e.seq_no >= events_by_id.from_seq_no
     ORDER BY e.seq_no
     LIMIT eventsourced.check_entity_read(events_by_id.entity_type,
                                          events_by_id.entity_id,
                                          events_by_id.from_seq_no,
                                          events_by_id.max_count);
END;

-- The feed of one entity type, in position order, never skipping an event.
CREATE FUNCTION eventsourced.events_by_type(entity_type text,
                                            after_position bigint DEFAULT 0,
                                            max_count integer DEFAULT 1000)
    RETURNS TABLE ("position" bigint, entity_id text, seq_no bigint,
                   event_type text, payload jsonb, metadata jsonb,
                   event_id uuid, recorded_at timestamptz)
    AS 'MODULE_PATHNAME', 'eventsourced_events_by_type'
    LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 1000;

-- The feed of every type, in position order, never skipping an event.
CREATE FUNCTION eventsourced.read_all(after_position bigint DEFAULT 0,
                                      max_count integer DEFAULT 1000)
    RETURNS TABLE ("position" bigint, entity_type text, entity_id text,
                   seq_no bigint, event_type text, payload jsonb,
                   metadata jsonb, event_id uuid, recorded_at timestamptz)
    AS 'MODULE_PATHNAME', 'eventsourced_read_all'
    LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 1000;

-- The position below which the feed is complete right now (exclusive).
CREATE FUNCTION eventsourced.feed_horizon()
    RETURNS bigint
    AS 'MODULE_PATHNAME', 'eventsourced_feed_horizon'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION eventsourced.save_snapshot(entity_type text, entity_id text,
                                           seq_no bigint, state jsonb)
    RETURNS void
    AS 'MODULE_PATHNAME', 'eventsourced_save_snapshot'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION eventsourced.load_snapshot(entity_type text, entity_id text,
                                           OUT seq_no bigint, OUT state jsonb)
    RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'eventsourced_load_snapshot'
    LANGUAGE C STABLE PARALLEL SAFE ROWS 1;

-- Nothing is usable by a role that was granted nothing (see README).
REVOKE ALL ON ALL TABLES IN SCHEMA eventsourced FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA eventsourced FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA eventsourced FROM PUBLIC;
-- Argument checks inlined into events_by_id() run with the caller's rights.
GRANT EXECUTE ON FUNCTION eventsourced.check_entity_read(text, text, bigint, integer) TO PUBLIC;
