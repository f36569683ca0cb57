\echo Use "ALTER EXTENSION eventsourced UPDATE TO '0.5.0'" to load this file. \quit

-- 0.5.0: what the NATS relay and the sharded deployment need from a store:
-- a no-skip feed of snapshot changes, and fencing of the entities a shard
-- no longer owns.
SET LOCAL search_path = pg_catalog;

-- ---------------------------------------------------------------------
-- Snapshot changes (the NATS relay's --snapshots).  Every snapshot write
-- draws a change number from the same machinery as event positions, so a
-- reader paging by change below the feed horizon never skips one (see
-- src/snapchanges.c).  Snapshots already stored get one each here, drawn
-- the same way by the column's default, which also numbers the rows of a
-- 0.4.0 dump restored into 0.5.0 (their COPY has no change column).
CREATE FUNCTION eventsourced.draw_snapshot_change() RETURNS bigint
    AS 'MODULE_PATHNAME', 'eventsourced_draw_snapshot_change'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
REVOKE ALL ON FUNCTION eventsourced.draw_snapshot_change() FROM PUBLIC;
ALTER TABLE eventsourced.snapshots ADD COLUMN change bigint NOT NULL
    DEFAULT eventsourced.draw_snapshot_change();
CREATE UNIQUE INDEX snapshots_change_key ON eventsourced.snapshots (change);

-- The snapshot changes after after_change, in change order, below the
-- feed horizon: each entity's current snapshot (JSON states as their
-- text's bytes).  EXECUTE and SELECT on eventsourced.snapshots needed.
CREATE FUNCTION eventsourced.snapshot_changes(after_change bigint DEFAULT 0,
        max_count integer DEFAULT 1000)
    RETURNS TABLE (change bigint, entity_type text, entity_id text, seq_no bigint,
                   state bytea, binary_state boolean)
    AS 'MODULE_PATHNAME', 'eventsourced_snapshot_changes'
    LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 1000;
REVOKE ALL ON FUNCTION eventsourced.snapshot_changes(bigint, integer) FROM PUBLIC;

-- Fencing (the sharded deployment's move_partition, docs/scale-out.md):
-- the hash the proxy routes by, computed here too, and the partitions this
-- server no longer owns.  Every write to an entity of a fenced partition is
-- refused (40001) under the entity lock.
CREATE FUNCTION eventsourced.entity_hash(entity_type text, entity_id text)
    RETURNS integer
    AS 'MODULE_PATHNAME', 'eventsourced_entity_hash'
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE TABLE eventsourced.fences (
    partitions integer NOT NULL,
    partition  integer NOT NULL,
    fenced_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    target     text,                               -- where the partition moves
    CONSTRAINT fences_pkey PRIMARY KEY (partitions, partition),
    CONSTRAINT fences_partitions_check
        CHECK (partitions OPERATOR(pg_catalog.>=) 1
               AND partitions OPERATOR(pg_catalog.<=) 1073741824
               AND (partitions OPERATOR(pg_catalog.&) (partitions OPERATOR(pg_catalog.-) 1))
                   OPERATOR(pg_catalog.=) 0),
    CONSTRAINT fences_partition_check
        CHECK (partition OPERATOR(pg_catalog.>=) 0
               AND partition OPERATOR(pg_catalog.<) partitions)
);
SELECT pg_catalog.pg_extension_config_dump('eventsourced.fences', '');
REVOKE ALL ON eventsourced.fences FROM PUBLIC;
-- Backends cache the fences; any write to the table empties the caches.
CREATE TRIGGER fences_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON eventsourced.fences
    FOR EACH STATEMENT EXECUTE FUNCTION eventsourced.registry_changed();
ALTER TABLE eventsourced.fences ENABLE ALWAYS TRIGGER fences_changed;

-- Only the extension's owner or a superuser fences (checked in C too).
CREATE FUNCTION eventsourced.fence_partition(partitions integer, partition integer,
                                             target text DEFAULT NULL)
    RETURNS boolean
    AS 'MODULE_PATHNAME', 'eventsourced_fence_partition'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
CREATE FUNCTION eventsourced.unfence_partition(partitions integer, partition integer)
    RETURNS boolean
    AS 'MODULE_PATHNAME', 'eventsourced_unfence_partition'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
CREATE FUNCTION eventsourced.fence_wait()
    RETURNS void
    AS 'MODULE_PATHNAME', 'eventsourced_fence_wait'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
REVOKE ALL ON FUNCTION eventsourced.fence_partition(integer, integer, text),
    eventsourced.unfence_partition(integer, integer),
    eventsourced.fence_wait() FROM PUBLIC;
-- The hash is pure and documented: anyone may compute it, as on the proxy.
GRANT EXECUTE ON FUNCTION eventsourced.entity_hash(text, text) TO PUBLIC;
