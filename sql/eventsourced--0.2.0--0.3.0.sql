\echo Use "ALTER EXTENSION eventsourced UPDATE TO '0.3.0'" to load this file. \quit

-- 0.3.0: the feed of one entity type costs what it returns.
SET LOCAL search_path = pg_catalog;

-- The feed of one type (events_by_type, a projection of one type) reads
-- this index: a poll of a rare type no longer walks every event of the
-- other types after its position.  Building it on a large store takes as
-- long as any CREATE INDEX of the table (the update holds the table's
-- lock meanwhile).
CREATE INDEX events_type_position_idx ON eventsourced.events (entity_type, position);

-- A projection's lag counts its own type's events after its checkpoint
-- through that index (it used to scan every event after the checkpoint).
-- The row comparison is what only that index can serve, so the planner
-- cannot prefer the position index and filter every other type's events.
CREATE OR REPLACE VIEW eventsourced.projections WITH (security_invoker = true) AS
SELECT p.name, p.entity_type, p.checkpoint, p.status, p.last_error,
       p.events_applied,
       CASE WHEN p.entity_type IS NULL
            THEN (SELECT pg_catalog.count(*) FROM eventsourced.events e
                   WHERE e.position OPERATOR(pg_catalog.>) p.checkpoint)
            ELSE (SELECT pg_catalog.count(*) FROM eventsourced.events e
                   WHERE e.entity_type OPERATOR(pg_catalog.=) p.entity_type
                     AND (e.entity_type, e.position) OPERATOR(pg_catalog.>)
                         (p.entity_type, p.checkpoint))
       END AS lag,
       p.error_strategy, p.handler, p.last_error_position, p.errors, p.retries,
       p.updated_at, p.owner
  FROM eventsourced.projection_state p;
