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
    payload     jsonb,                             -- JSON events
    metadata    jsonb,
    event_id    uuid,
    recorded_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    payload_bytes bytea,                           -- binary events
    CONSTRAINT events_pkey PRIMARY KEY (entity_type, entity_id, seq_no),
    CONSTRAINT events_payload_check
        CHECK ((payload IS NULL) OPERATOR(pg_catalog.<>) (payload_bytes IS NULL)),
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
    state       jsonb,                             -- JSON state
    recorded_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    state_bytes bytea,                             -- binary state
    CONSTRAINT snapshots_pkey PRIMARY KEY (entity_type, entity_id),
    CONSTRAINT snapshots_state_check
        CHECK ((state IS NULL) OPERATOR(pg_catalog.<>) (state_bytes IS NULL)),
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

-- Any statement that writes the events table other than append() (a purge,
-- a restore's COPY) makes the shared seq_no cache forget every entity.
CREATE FUNCTION eventsourced.events_changed() RETURNS trigger
    AS 'MODULE_PATHNAME', 'eventsourced_events_changed' LANGUAGE C;
CREATE TRIGGER events_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON eventsourced.events
    FOR EACH STATEMENT EXECUTE FUNCTION eventsourced.events_changed();
ALTER TABLE eventsourced.events ENABLE ALWAYS TRIGGER events_changed;

-- This session's lookups of an entity's last seq_no by writers: answered
-- by the shared cache (hits) or by the index (misses).
CREATE FUNCTION eventsourced.seq_cache_stats(OUT hits bigint, OUT misses bigint)
    RETURNS record
    AS 'MODULE_PATHNAME', 'eventsourced_seq_cache_stats' LANGUAGE C VOLATILE STRICT;

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

-- Append one event with a binary payload; returns its seq_no.
CREATE FUNCTION eventsourced.append_binary(entity_type text, entity_id text,
                                           expected_seq_no bigint,
                                           event_type text, payload bytea,
                                           metadata jsonb DEFAULT NULL,
                                           event_id uuid DEFAULT NULL)
    RETURNS bigint
    AS 'MODULE_PATHNAME', 'eventsourced_append_binary'
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
                   recorded_at timestamptz, payload_bytes bytea)
    LANGUAGE sql STABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT e.seq_no, e.event_type, e.payload, e.metadata, e.event_id,
           e.position, e.recorded_at, e.payload_bytes
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
                   event_id uuid, recorded_at timestamptz, payload_bytes bytea)
    AS 'MODULE_PATHNAME', 'eventsourced_events_by_type'
    LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 1000;

-- The feed of every type, in position order, never skipping an event.
CREATE FUNCTION eventsourced.read_all(after_position bigint DEFAULT 0,
                                      max_count integer DEFAULT 1000)
    RETURNS TABLE ("position" bigint, entity_type text, entity_id text,
                   seq_no bigint, event_type text, payload jsonb,
                   metadata jsonb, event_id uuid, recorded_at timestamptz,
                   payload_bytes bytea)
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

CREATE FUNCTION eventsourced.save_snapshot_bytes(entity_type text, entity_id text,
                                                 seq_no bigint, state bytea)
    RETURNS void
    AS 'MODULE_PATHNAME', 'eventsourced_save_snapshot'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION eventsourced.load_snapshot_bytes(entity_type text, entity_id text,
                                                 OUT seq_no bigint, OUT state bytea)
    RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'eventsourced_load_snapshot'
    LANGUAGE C STABLE PARALLEL SAFE ROWS 1;

CREATE FUNCTION eventsourced.load_snapshot(entity_type text, entity_id text,
                                           OUT seq_no bigint, OUT state jsonb)
    RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'eventsourced_load_snapshot'
    LANGUAGE C STABLE PARALLEL SAFE ROWS 1;

-- The protobuf wire format (proto/eventsourced.proto).
CREATE FUNCTION eventsourced.events_by_type_pb(entity_type text,
                                               after_position bigint DEFAULT 0,
                                               max_count integer DEFAULT 1000)
    RETURNS bytea
    AS 'MODULE_PATHNAME', 'eventsourced_events_by_type_pb'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION eventsourced.read_all_pb(after_position bigint DEFAULT 0,
                                         max_count integer DEFAULT 1000)
    RETURNS bytea
    AS 'MODULE_PATHNAME', 'eventsourced_read_all_pb'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION eventsourced.append_pb(batch bytea, expected_seq_no bigint)
    RETURNS bigint
    AS 'MODULE_PATHNAME', 'eventsourced_append_pb'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION eventsourced.load_snapshot_pb(entity_type text, entity_id text)
    RETURNS bytea
    AS 'MODULE_PATHNAME', 'eventsourced_load_snapshot_pb'
    LANGUAGE C STABLE PARALLEL SAFE;

-- Descriptor sets that protobuf_to_jsonb() decodes binary payloads with.
CREATE TABLE eventsourced.protobuf_descriptors (
    id             bigint GENERATED ALWAYS AS IDENTITY,
    descriptor_set bytea NOT NULL,
    message_types  text[] NOT NULL,
    digest         bytea GENERATED ALWAYS AS (pg_catalog.sha256(descriptor_set)) STORED,
    registered_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT protobuf_descriptors_pkey PRIMARY KEY (id),
    CONSTRAINT protobuf_descriptors_digest_key UNIQUE (digest)
);
SELECT pg_catalog.pg_extension_config_dump('eventsourced.protobuf_descriptors', '');

CREATE FUNCTION eventsourced.register_protobuf(descriptor_set bytea)
    RETURNS SETOF text
    AS 'MODULE_PATHNAME', 'eventsourced_register_protobuf'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION eventsourced.protobuf_to_jsonb(payload bytea, message_type text)
    RETURNS jsonb
    AS 'MODULE_PATHNAME', 'eventsourced_protobuf_to_jsonb'
    LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;

-- Projections inside the database: a handler applied to each event of the
-- feed, the checkpoint stored in the same transaction as its effects.
CREATE TABLE eventsourced.projection_state (
    name                text COLLATE "C" NOT NULL,
    entity_type         text COLLATE "C",          -- NULL: every type
    handler             regprocedure NOT NULL,
    error_strategy      text NOT NULL,
    owner               regrole NOT NULL,          -- handlers run as this role
    checkpoint          bigint NOT NULL DEFAULT 0, -- last position applied or skipped
    status              text NOT NULL DEFAULT 'running',
    last_error          text,
    last_error_position bigint,
    events_applied      bigint NOT NULL DEFAULT 0,
    errors              bigint NOT NULL DEFAULT 0, -- events skipped after an error
    retries             integer NOT NULL DEFAULT 0,
    created_at          timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at          timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT projection_state_pkey PRIMARY KEY (name),
    CONSTRAINT projection_state_strategy_check
        CHECK (error_strategy OPERATOR(pg_catalog.=) ANY (ARRAY['stop', 'skip', 'retry'])),
    CONSTRAINT projection_state_status_check
        CHECK (status OPERATOR(pg_catalog.=) ANY (ARRAY['running', 'failed']))
);
SELECT pg_catalog.pg_extension_config_dump('eventsourced.projection_state', '');

CREATE VIEW eventsourced.projections AS
SELECT p.name, p.entity_type, p.checkpoint, p.status, p.last_error,
       p.events_applied,
       (SELECT pg_catalog.count(*) FROM eventsourced.events e
         WHERE e.position OPERATOR(pg_catalog.>) p.checkpoint
           AND (p.entity_type IS NULL
                OR e.entity_type OPERATOR(pg_catalog.=) p.entity_type)) AS lag,
       p.error_strategy, p.handler, p.last_error_position, p.errors, p.retries,
       p.updated_at
  FROM eventsourced.projection_state p;

CREATE FUNCTION eventsourced.create_projection(name text, entity_type text,
                                               handler regprocedure,
                                               error_strategy text DEFAULT 'stop')
    RETURNS void
    AS 'MODULE_PATHNAME', 'eventsourced_create_projection'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION eventsourced.run_projection(name text, max_events integer DEFAULT 1000)
    RETURNS integer
    AS 'MODULE_PATHNAME', 'eventsourced_run_projection'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION eventsourced.reset_projection(name text, pos bigint DEFAULT 0)
    RETURNS void
    AS 'MODULE_PATHNAME', 'eventsourced_reset_projection'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION eventsourced.drop_projection(name text)
    RETURNS void
    AS 'MODULE_PATHNAME', 'eventsourced_drop_projection'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;

-- Commands (see README, "Commands"): registered entity types and command
-- handlers, the decisions handlers return, handle_command() and the cache of
-- each entity's latest state.  Handler columns hold schema-qualified
-- signatures (text), so dumps restore them by name and pg_upgrade accepts
-- the tables.
CREATE SEQUENCE eventsourced.generation_seq AS bigint;

CREATE TABLE eventsourced.entity_types (
    entity_type        text COLLATE "C" NOT NULL,
    event_handler      text NOT NULL,
    event_handler_hash bigint NOT NULL,
    initial_state      jsonb NOT NULL,
    snapshot_after     integer,
    generation         bigint NOT NULL,
    CONSTRAINT entity_types_pkey PRIMARY KEY (entity_type),
    CONSTRAINT entity_types_snapshot_after_check
        CHECK (snapshot_after OPERATOR(pg_catalog.>=) 1)
);

CREATE TABLE eventsourced.commands (
    entity_type text COLLATE "C" NOT NULL,
    command     text COLLATE "C" NOT NULL,
    handler     text NOT NULL,
    CONSTRAINT commands_pkey PRIMARY KEY (entity_type, command)
);

-- Backends cache registrations; any write to these tables empties the caches.
CREATE FUNCTION eventsourced.registry_changed() RETURNS trigger
    AS 'MODULE_PATHNAME', 'eventsourced_registry_changed' LANGUAGE C;
CREATE TRIGGER entity_types_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON eventsourced.entity_types
    FOR EACH STATEMENT EXECUTE FUNCTION eventsourced.registry_changed();
CREATE TRIGGER commands_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON eventsourced.commands
    FOR EACH STATEMENT EXECUTE FUNCTION eventsourced.registry_changed();
ALTER TABLE eventsourced.entity_types ENABLE ALWAYS TRIGGER entity_types_changed;
ALTER TABLE eventsourced.commands ENABLE ALWAYS TRIGGER commands_changed;

-- The latest state of each entity, as handle_command() left it.  A cache:
-- it may be truncated at any time; states are then rebuilt from snapshots.
CREATE TABLE eventsourced.entity_states (
    entity_type text COLLATE "C" NOT NULL,
    entity_id   text COLLATE "C" NOT NULL,
    seq_no      bigint NOT NULL,
    state       jsonb NOT NULL,
    generation  bigint NOT NULL,
    CONSTRAINT entity_states_pkey PRIMARY KEY (entity_type, entity_id)
) WITH (fillfactor = 70);

-- The registration generation of the snapshots that handle_command() saved.
CREATE TABLE eventsourced.snapshot_generations (
    entity_type text COLLATE "C" NOT NULL,
    entity_id   text COLLATE "C" NOT NULL,
    seq_no      bigint NOT NULL,
    generation  bigint NOT NULL,
    CONSTRAINT snapshot_generations_pkey PRIMARY KEY (entity_type, entity_id)
) WITH (fillfactor = 70);

SELECT pg_catalog.pg_extension_config_dump('eventsourced.entity_types', '');
SELECT pg_catalog.pg_extension_config_dump('eventsourced.commands', '');
SELECT pg_catalog.pg_extension_config_dump('eventsourced.entity_states', '');
SELECT pg_catalog.pg_extension_config_dump('eventsourced.snapshot_generations', '');
SELECT pg_catalog.pg_extension_config_dump('eventsourced.generation_seq', '');

CREATE FUNCTION eventsourced.register_entity(entity_type text,
                                             event_handler regprocedure,
                                             initial_state jsonb DEFAULT 'null',
                                             snapshot_after integer DEFAULT NULL)
    RETURNS void
    AS 'MODULE_PATHNAME', 'eventsourced_register_entity'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION eventsourced.register_command(entity_type text, command text,
                                              handler regprocedure)
    RETURNS void
    AS 'MODULE_PATHNAME', 'eventsourced_register_command'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;

-- What a command handler decided: events to append and a reply, or a rejection.
CREATE TYPE eventsourced.decision AS (
    accepted  boolean,
    events    eventsourced.event_data[],
    reply     jsonb,
    rejection jsonb
);

CREATE FUNCTION eventsourced.emit(event_type text, payload jsonb,
                                  reply jsonb DEFAULT NULL)
    RETURNS eventsourced.decision
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT ROW(true,
               ARRAY[ROW(event_type, payload, NULL, NULL)::eventsourced.event_data],
               reply, NULL)::eventsourced.decision;
END;

CREATE FUNCTION eventsourced.emit(events eventsourced.event_data[],
                                  reply jsonb DEFAULT NULL)
    RETURNS eventsourced.decision
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT ROW(true, events, reply, NULL)::eventsourced.decision;
END;

CREATE FUNCTION eventsourced.reply(reply jsonb)
    RETURNS eventsourced.decision
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT ROW(true, NULL, reply, NULL)::eventsourced.decision;
END;

CREATE FUNCTION eventsourced.reject(rejection jsonb)
    RETURNS eventsourced.decision
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT ROW(false, NULL, NULL, rejection)::eventsourced.decision;
END;

CREATE TYPE eventsourced.command_result AS (
    accepted  boolean,
    reply     jsonb,
    rejection jsonb,
    seq_no    bigint,
    state     jsonb
);

CREATE FUNCTION eventsourced.handle_command(entity_type text, entity_id text,
                                            command text, args jsonb DEFAULT '{}')
    RETURNS eventsourced.command_result
    AS 'MODULE_PATHNAME', 'eventsourced_handle_command'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;

-- Nothing is usable by a role that was granted nothing (see README).
REVOKE ALL ON ALL TABLES IN SCHEMA eventsourced FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA eventsourced FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA eventsourced FROM PUBLIC;
-- Argument checks inlined into events_by_id() run with the caller's rights.
GRANT EXECUTE ON FUNCTION eventsourced.check_entity_read(text, text, bigint, integer) TO PUBLIC;
-- Command handlers run with the caller's rights and build their decisions
-- with these pure constructors.
GRANT EXECUTE ON FUNCTION eventsourced.emit(text, jsonb, jsonb),
    eventsourced.emit(eventsourced.event_data[], jsonb),
    eventsourced.reply(jsonb), eventsourced.reject(jsonb) TO PUBLIC;
