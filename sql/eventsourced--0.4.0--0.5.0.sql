\echo Use "ALTER EXTENSION eventsourced UPDATE TO '0.5.0'" to load this file. \quit

-- 0.5.0: what the NATS relay and the sharded deployment need from a store:
-- a no-skip feed of snapshot changes, and fencing of the entities a shard
-- no longer owns.
SET LOCAL search_path = pg_catalog;
