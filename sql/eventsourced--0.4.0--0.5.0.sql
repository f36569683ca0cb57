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
-- the same way, through a function that exists only during the update.
ALTER TABLE eventsourced.snapshots ADD COLUMN change bigint;
CREATE FUNCTION eventsourced.draw_snapshot_change() RETURNS bigint
    AS 'MODULE_PATHNAME', 'eventsourced_draw_snapshot_change' LANGUAGE C VOLATILE;
UPDATE eventsourced.snapshots SET change = eventsourced.draw_snapshot_change();
DROP FUNCTION eventsourced.draw_snapshot_change();
ALTER TABLE eventsourced.snapshots ALTER COLUMN change SET NOT NULL;
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
