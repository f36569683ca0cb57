-- eventsourced 0.1.0 -> 0.2.0: trust between roles (see README, "Trust
-- between roles").  New installations run 0.1.0 and then this script, so an
-- upgraded store and a new one have the same tables, column for column.
\echo Use "ALTER EXTENSION eventsourced UPDATE" to load this file. \quit

-- Registrations belong to the role that made them, and remember the search
-- path their handlers run with (the registrant's, pg_temp last) and the
-- role that owned the handler function when it was registered (a handler
-- whose function changed hands is refused until registered again).
-- Registrations made before 0.2.0 get the extension's owner and the default
-- path.  Projection handlers become text signatures like the others, so
-- that pg_upgrade accepts the table (it refuses regprocedure columns).
SET LOCAL search_path = pg_catalog;
DROP VIEW eventsourced.projections;
ALTER TABLE eventsourced.projection_state
    ALTER COLUMN handler TYPE text USING handler::regprocedure::text;
ALTER TABLE eventsourced.entity_types
    ADD COLUMN owner regrole,
    ADD COLUMN search_path text,
    ADD COLUMN handler_owner regrole;
ALTER TABLE eventsourced.commands
    ADD COLUMN owner regrole,
    ADD COLUMN search_path text,
    ADD COLUMN handler_owner regrole;
ALTER TABLE eventsourced.projection_state
    ADD COLUMN search_path text,
    ADD COLUMN handler_owner regrole;

CREATE FUNCTION eventsourced.upgrade_handler_owner(signature text) RETURNS regrole
LANGUAGE sql STABLE
RETURN COALESCE((SELECT p.proowner FROM pg_catalog.pg_proc p
                  WHERE p.oid OPERATOR(pg_catalog.=) pg_catalog.to_regprocedure(signature)),
                (SELECT x.extowner FROM pg_catalog.pg_extension x
                  WHERE x.extname OPERATOR(pg_catalog.=) 'eventsourced'))::pg_catalog.regrole;
UPDATE eventsourced.entity_types
   SET owner = (SELECT x.extowner FROM pg_catalog.pg_extension x
                 WHERE x.extname OPERATOR(pg_catalog.=) 'eventsourced')::pg_catalog.regrole,
       search_path = '"$user", public, pg_temp',
       handler_owner = eventsourced.upgrade_handler_owner(event_handler);
UPDATE eventsourced.commands
   SET owner = (SELECT x.extowner FROM pg_catalog.pg_extension x
                 WHERE x.extname OPERATOR(pg_catalog.=) 'eventsourced')::pg_catalog.regrole,
       search_path = '"$user", public, pg_temp',
       handler_owner = eventsourced.upgrade_handler_owner(handler);
-- Projections already had an owner: the role that created them.
UPDATE eventsourced.projection_state
   SET search_path = '"$user", public, pg_temp',
       handler_owner = eventsourced.upgrade_handler_owner(handler);
DROP FUNCTION eventsourced.upgrade_handler_owner(text);

ALTER TABLE eventsourced.entity_types
    ALTER COLUMN owner SET NOT NULL,
    ALTER COLUMN search_path SET NOT NULL,
    ALTER COLUMN handler_owner SET NOT NULL;
ALTER TABLE eventsourced.commands
    ALTER COLUMN owner SET NOT NULL,
    ALTER COLUMN search_path SET NOT NULL,
    ALTER COLUMN handler_owner SET NOT NULL;
ALTER TABLE eventsourced.projection_state
    ALTER COLUMN search_path SET NOT NULL,
    ALTER COLUMN handler_owner SET NOT NULL;

-- The projections view shows who owns each projection.
CREATE VIEW eventsourced.projections AS
SELECT p.name, p.entity_type, p.checkpoint, p.status, p.last_error,
       p.events_applied,
       (SELECT pg_catalog.count(*) FROM eventsourced.events e
         WHERE e.position OPERATOR(pg_catalog.>) p.checkpoint
           AND (p.entity_type IS NULL
                OR e.entity_type OPERATOR(pg_catalog.=) p.entity_type)) AS lag,
       p.error_strategy, p.handler, p.last_error_position, p.errors, p.retries,
       p.updated_at, p.owner
  FROM eventsourced.projection_state p;

-- The view runs with its reader's rights: its lag counts only the events
-- that reader may see.  Like every table, it is granted to nobody.
ALTER VIEW eventsourced.projections SET (security_invoker = true);
REVOKE ALL ON eventsourced.projections FROM PUBLIC;

-- Inside a handler: the role that called handle_command() or
-- run_projection(); elsewhere the current user.
CREATE FUNCTION eventsourced.caller()
    RETURNS name
    AS 'MODULE_PATHNAME', 'eventsourced_caller'
    LANGUAGE C STABLE PARALLEL RESTRICTED;
REVOKE ALL ON FUNCTION eventsourced.caller() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION eventsourced.caller() TO PUBLIC;

-- DDL that would change the shape of the extension's tables, or hang
-- triggers and rules on them that direct writes would never run, is
-- refused (see README, "Operating it").
CREATE FUNCTION eventsourced.ddl_guard() RETURNS event_trigger
    AS 'MODULE_PATHNAME', 'eventsourced_ddl_guard' LANGUAGE C;
REVOKE ALL ON FUNCTION eventsourced.ddl_guard() FROM PUBLIC;
CREATE EVENT TRIGGER eventsourced_ddl_guard ON ddl_command_start
    WHEN TAG IN ('ALTER TABLE', 'ALTER INDEX', 'ALTER VIEW', 'ALTER MATERIALIZED VIEW',
                 'ALTER FOREIGN TABLE', 'ALTER TYPE', 'CREATE TABLE',
                 'CREATE TRIGGER', 'CREATE RULE', 'DROP INDEX', 'DROP TRIGGER')
    EXECUTE FUNCTION eventsourced.ddl_guard();
