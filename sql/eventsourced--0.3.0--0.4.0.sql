\echo Use "ALTER EXTENSION eventsourced UPDATE TO '0.4.0'" to load this file. \quit

-- 0.4.0: readers resume past what held nothing for them; projections can
-- be stopped and started, and retried after a delay; the projections view
-- costs O(projections).
SET LOCAL search_path = pg_catalog;

-- Where a reader of a type (NULL: of every type) at after_position resumes
-- without missing an event: just below the next event it has not read, or
-- just below the horizon.
CREATE FUNCTION eventsourced.feed_checkpoint(entity_type text, after_position bigint DEFAULT 0)
    RETURNS bigint
    AS 'MODULE_PATHNAME', 'eventsourced_feed_checkpoint'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
REVOKE ALL ON FUNCTION eventsourced.feed_checkpoint(text, bigint) FROM PUBLIC;

-- A stopped projection keeps its checkpoint and is not run; a 'retry'
-- projection may wait retry_delay after a failure before it tries again.
ALTER TABLE eventsourced.projection_state
    ADD COLUMN retry_delay interval,
    DROP CONSTRAINT projection_state_status_check,
    ADD CONSTRAINT projection_state_status_check
        CHECK (status OPERATOR(pg_catalog.=) ANY (ARRAY['running', 'failed', 'stopped']));

-- The retry delay is a fifth argument of an overload without defaults, so
-- that calls with three or four arguments, grants on the four-argument
-- function and functions that call it stay as they are.
CREATE FUNCTION eventsourced.create_projection(name text, entity_type text,
                                               handler regprocedure,
                                               error_strategy text,
                                               retry_delay interval)
    RETURNS void
    AS 'MODULE_PATHNAME', 'eventsourced_create_projection'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
REVOKE ALL ON FUNCTION eventsourced.create_projection(text, text, regprocedure, text, interval) FROM PUBLIC;

CREATE FUNCTION eventsourced.stop_projection(name text)
    RETURNS void
    AS 'MODULE_PATHNAME', 'eventsourced_stop_projection'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
REVOKE ALL ON FUNCTION eventsourced.stop_projection(text) FROM PUBLIC;

CREATE FUNCTION eventsourced.start_projection(name text)
    RETURNS void
    AS 'MODULE_PATHNAME', 'eventsourced_start_projection'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
REVOKE ALL ON FUNCTION eventsourced.start_projection(text) FROM PUBLIC;

-- lag is now in positions: from the checkpoint to the newest event the
-- projection reads (0: caught up), one index probe per projection instead
-- of a count of the events behind.  retry_at: when a failed event is
-- tried again, for a 'retry' projection with a retry_delay.
CREATE OR REPLACE VIEW eventsourced.projections WITH (security_invoker = true) AS
SELECT p.name, p.entity_type, p.checkpoint, p.status, p.last_error,
       p.events_applied,
       GREATEST(0::bigint, CASE WHEN p.entity_type IS NULL
            THEN (SELECT pg_catalog.max(e.position) FROM eventsourced.events e)
            ELSE (SELECT pg_catalog.max(e.position) FROM eventsourced.events e
                   WHERE e.entity_type OPERATOR(pg_catalog.=) p.entity_type)
       END OPERATOR(pg_catalog.-) p.checkpoint) AS lag,
       p.error_strategy, p.handler, p.last_error_position, p.errors, p.retries,
       p.updated_at, p.owner, p.retry_delay,
       CASE WHEN p.retries OPERATOR(pg_catalog.>) 0 AND p.status OPERATOR(pg_catalog.=) 'running'
            THEN p.updated_at OPERATOR(pg_catalog.+) p.retry_delay END AS retry_at
  FROM eventsourced.projection_state p;

-- Commands sent with a command id (handle_command's fifth argument) keep
-- their result here, written in the command's transaction under the
-- entity's lock; a retry with the same id gets it back without its handler
-- deciding again.  Rows stay until deleted (see README, "Operating it").
CREATE TABLE eventsourced.command_results (
    entity_type text COLLATE "C" NOT NULL,
    entity_id   text COLLATE "C" NOT NULL,
    command_id  text COLLATE "C" NOT NULL,
    command     text COLLATE "C" NOT NULL,
    accepted    boolean NOT NULL,
    reply       jsonb,
    rejection   jsonb,
    seq_no      bigint NOT NULL,
    state       jsonb,
    recorded_at timestamptz NOT NULL,
    CONSTRAINT command_results_pkey PRIMARY KEY (entity_type, entity_id, command_id)
);
SELECT pg_catalog.pg_extension_config_dump('eventsourced.command_results', '');
REVOKE ALL ON eventsourced.command_results FROM PUBLIC;

-- An overload without defaults, so that grants on the four-argument
-- function and functions that call it stay as they are.
CREATE FUNCTION eventsourced.handle_command(entity_type text, entity_id text, command text,
                                            args jsonb, command_id text)
    RETURNS eventsourced.command_result
    AS 'MODULE_PATHNAME', 'eventsourced_handle_command'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
REVOKE ALL ON FUNCTION eventsourced.handle_command(text, text, text, jsonb, text) FROM PUBLIC;
