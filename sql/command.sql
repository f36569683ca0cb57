-- Commands: registration, decisions, state rebuild (cached state, snapshots,
-- generations), errors that write nothing, and privileges.
\set SHOW_CONTEXT never
CREATE SCHEMA cmdtest;
CREATE SEQUENCE cmdtest.apply_calls;
-- event-handler calls since the last call of this function
CREATE FUNCTION cmdtest.calls() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    n bigint := nextval('cmdtest.apply_calls') - 1;
BEGIN
    PERFORM setval('cmdtest.apply_calls', 1, false);
    RETURN n;
END $$;
SELECT cmdtest.calls();

-- Event handler in PL/pgSQL; counts its calls.
CREATE FUNCTION cmdtest.apply(state jsonb, event_type text, payload jsonb)
    RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    PERFORM nextval('cmdtest.apply_calls');
    CASE event_type
        WHEN 'Added' THEN
            RETURN jsonb_set(state, '{total}', to_jsonb((state->>'total')::bigint + (payload->>'n')::bigint));
        WHEN 'Named' THEN
            RETURN jsonb_set(state, '{name}', payload->'name');
        WHEN 'Poison' THEN
            RAISE EXCEPTION 'poisoned state';
        WHEN 'Nothing' THEN
            RETURN NULL;
        ELSE
            RETURN state;
    END CASE;
END $$;
-- Event handler in plain SQL: counts every Added twice.
CREATE FUNCTION cmdtest.apply_double(state jsonb, event_type text, payload jsonb)
    RETURNS jsonb LANGUAGE sql
BEGIN ATOMIC
    SELECT CASE event_type
        WHEN 'Added' THEN jsonb_set(state, '{total}', to_jsonb((state->>'total')::bigint + 2 * (payload->>'n')::bigint))
        ELSE state END;
END;

-- Command handlers in plain SQL ...
CREATE FUNCTION cmdtest.add(entity_id text, state jsonb, args jsonb)
    RETURNS eventsourced.decision LANGUAGE sql
    RETURN CASE WHEN (args->>'n')::int < 0
                THEN eventsourced.reject(jsonb_build_object('error', 'negative', 'id', entity_id))
                ELSE eventsourced.emit('Added', jsonb_build_object('n', (args->>'n')::int)) END;
CREATE FUNCTION cmdtest.add_and_name(entity_id text, state jsonb, args jsonb)
    RETURNS eventsourced.decision LANGUAGE sql
    RETURN eventsourced.emit(ARRAY[eventsourced.event('Added', jsonb_build_object('n', args->'n')),
                                   eventsourced.event('Named', jsonb_build_object('name', args->'name'))],
                             '"added and named"');
CREATE FUNCTION cmdtest.peek(entity_id text, state jsonb, args jsonb)
    RETURNS eventsourced.decision LANGUAGE sql
    RETURN eventsourced.reply(jsonb_build_object('seen', state));
CREATE FUNCTION cmdtest.emit_type(entity_id text, state jsonb, args jsonb)
    RETURNS eventsourced.decision LANGUAGE sql
    RETURN eventsourced.emit(args->>'type', args->'payload');
CREATE FUNCTION cmdtest.malformed(entity_id text, state jsonb, args jsonb)
    RETURNS eventsourced.decision LANGUAGE sql
    RETURN CASE args->>'how'
        WHEN 'accepted' THEN ROW(NULL, NULL, NULL, NULL)::eventsourced.decision
        WHEN 'rejection' THEN eventsourced.reject(NULL)
        WHEN 'empty' THEN eventsourced.emit('{}'::eventsourced.event_data[], '"empty"')
        WHEN 'null_event' THEN eventsourced.emit(ARRAY[NULL::eventsourced.event_data]) END;
-- ... and in PL/pgSQL.
CREATE FUNCTION cmdtest.fail(entity_id text, state jsonb, args jsonb)
    RETURNS eventsourced.decision LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'command refused by %', entity_id USING ERRCODE = 'check_violation';
END $$;
CREATE FUNCTION cmdtest.nothing(entity_id text, state jsonb, args jsonb)
    RETURNS eventsourced.decision LANGUAGE plpgsql AS $$
BEGIN
    RETURN NULL;
END $$;
CREATE FUNCTION cmdtest.add_plpgsql(entity_id text, state jsonb, args jsonb)
    RETURNS eventsourced.decision LANGUAGE plpgsql AS $$
BEGIN
    IF (state->>'total')::bigint + (args->>'n')::bigint > 100 THEN
        RETURN eventsourced.reject('{"error": "too much"}');
    END IF;
    RETURN eventsourced.emit('Added', jsonb_build_object('n', args->'n'));
END $$;

-- Functions of the wrong shape.
CREATE FUNCTION cmdtest.wrong_args(state jsonb, event_type jsonb, payload jsonb)
    RETURNS jsonb LANGUAGE sql RETURN state;
CREATE FUNCTION cmdtest.two_args(state jsonb, event_type text)
    RETURNS jsonb LANGUAGE sql RETURN state;
CREATE FUNCTION cmdtest.returns_text(state jsonb, event_type text, payload jsonb)
    RETURNS text LANGUAGE sql RETURN event_type;
CREATE FUNCTION cmdtest.returns_set(state jsonb, event_type text, payload jsonb)
    RETURNS SETOF jsonb LANGUAGE sql RETURN state;
CREATE PROCEDURE cmdtest.proc(state jsonb, event_type text, payload jsonb)
    LANGUAGE sql BEGIN ATOMIC SELECT 1; END;
CREATE FUNCTION cmdtest.agg_step(acc jsonb, state jsonb, event_type text, payload jsonb)
    RETURNS jsonb LANGUAGE sql RETURN acc;
CREATE AGGREGATE cmdtest.agg(jsonb, text, jsonb) (SFUNC = cmdtest.agg_step, STYPE = jsonb);
CREATE FUNCTION cmdtest.cmd_returns_jsonb(entity_id text, state jsonb, args jsonb)
    RETURNS jsonb LANGUAGE sql RETURN state;

-- Registration
SELECT eventsourced.register_entity('ledger', 'cmdtest.apply(jsonb, text, jsonb)', '{"total": 0}');
SELECT eventsourced.register_command('ledger', 'Add', 'cmdtest.add(text, jsonb, jsonb)');
SELECT eventsourced.register_command('ledger', 'AddAndName', 'cmdtest.add_and_name(text, jsonb, jsonb)');
SELECT eventsourced.register_command('ledger', 'Peek', 'cmdtest.peek(text, jsonb, jsonb)');
SELECT eventsourced.register_command('ledger', 'Emit', 'cmdtest.emit_type(text, jsonb, jsonb)');
SELECT eventsourced.register_command('ledger', 'Malformed', 'cmdtest.malformed(text, jsonb, jsonb)');
SELECT eventsourced.register_command('ledger', 'Fail', 'cmdtest.fail(text, jsonb, jsonb)');
SELECT eventsourced.register_command('ledger', 'Nothing', 'cmdtest.nothing(text, jsonb, jsonb)');
SELECT entity_type, event_handler, initial_state, snapshot_after FROM eventsourced.entity_types;
SELECT entity_type, command, handler FROM eventsourced.commands ORDER BY command;

-- wrong signatures of every kind are refused, and nothing is registered
SELECT eventsourced.register_entity('bad', 'cmdtest.wrong_args(jsonb, jsonb, jsonb)');
SELECT eventsourced.register_entity('bad', 'cmdtest.two_args(jsonb, text)');
SELECT eventsourced.register_entity('bad', 'cmdtest.returns_text(jsonb, text, jsonb)');
SELECT eventsourced.register_entity('bad', 'cmdtest.returns_set(jsonb, text, jsonb)');
SELECT eventsourced.register_entity('bad', 'cmdtest.proc(jsonb, text, jsonb)');
SELECT eventsourced.register_entity('bad', 'cmdtest.agg(jsonb, text, jsonb)');
SELECT eventsourced.register_entity('bad', 'cmdtest.add(text, jsonb, jsonb)');
SELECT eventsourced.register_entity('bad', 0::oid::regprocedure);
SELECT eventsourced.register_command('ledger', 'Bad', 'cmdtest.cmd_returns_jsonb(text, jsonb, jsonb)');
SELECT eventsourced.register_command('ledger', 'Bad', 'cmdtest.apply(jsonb, text, jsonb)');
SELECT eventsourced.register_command('ledger', 'Bad', 'cmdtest.proc(jsonb, text, jsonb)');
-- NULLs and bad values
SELECT eventsourced.register_entity(NULL, 'cmdtest.apply(jsonb, text, jsonb)');
SELECT eventsourced.register_entity('', 'cmdtest.apply(jsonb, text, jsonb)');
SELECT eventsourced.register_entity(repeat('x', 256), 'cmdtest.apply(jsonb, text, jsonb)');
SELECT eventsourced.register_entity('bad', NULL);
SELECT eventsourced.register_entity('bad', 'cmdtest.apply(jsonb, text, jsonb)', NULL);
SELECT eventsourced.register_entity('bad', 'cmdtest.apply(jsonb, text, jsonb)', '{}', 0);
SELECT eventsourced.register_command(NULL, 'Add', 'cmdtest.add(text, jsonb, jsonb)');
SELECT eventsourced.register_command('ledger', NULL, 'cmdtest.add(text, jsonb, jsonb)');
SELECT eventsourced.register_command('ledger', 'Add', NULL);
-- commands of unknown entity types are refused
SELECT eventsourced.register_command('nosuch', 'Add', 'cmdtest.add(text, jsonb, jsonb)');
SELECT count(*) FROM eventsourced.entity_types WHERE entity_type <> 'ledger';
SELECT count(*) FROM eventsourced.commands WHERE entity_type <> 'ledger' OR command = 'Bad';

-- Accepted: the event is appended, the reply defaults to the new state
SELECT * FROM eventsourced.handle_command('ledger', 'l1', 'Add', '{"n": 5}');
SELECT * FROM eventsourced.handle_command('ledger', 'l1', 'Add', '{"n": 7}');
SELECT seq_no, event_type, payload, metadata, event_id FROM eventsourced.events_by_id('ledger', 'l1');
-- Rejected: the handler's rejection, the current state, nothing written
SELECT * FROM eventsourced.handle_command('ledger', 'l1', 'Add', '{"n": -1}');
-- Reply only: accepted, nothing written
SELECT * FROM eventsourced.handle_command('ledger', 'l1', 'Peek');
-- Several events and an explicit reply
SELECT * FROM eventsourced.handle_command('ledger', 'l1', 'AddAndName', '{"n": 1, "name": "first"}');
SELECT seq_no, event_type, payload FROM eventsourced.events_by_id('ledger', 'l1', 3);
-- an empty event list only replies
SELECT * FROM eventsourced.handle_command('ledger', 'l1', 'Malformed', '{"how": "empty"}');
-- commands of one statement see each other's events
SELECT r.seq_no, r.state FROM generate_series(1, 3) g,
       LATERAL eventsourced.handle_command('ledger', 'l2', 'Add', jsonb_build_object('n', g)) r;
SELECT eventsourced.last_seq_no('ledger', 'l1') AS l1, eventsourced.last_seq_no('ledger', 'l2') AS l2;

-- Errors write nothing
SELECT * FROM eventsourced.handle_command('ledger', 'l1', 'Fail');
SELECT * FROM eventsourced.handle_command('ledger', 'l1', 'Nothing');
SELECT * FROM eventsourced.handle_command('ledger', 'l1', 'Malformed', '{"how": "accepted"}');
SELECT * FROM eventsourced.handle_command('ledger', 'l1', 'Malformed', '{"how": "rejection"}');
SELECT * FROM eventsourced.handle_command('ledger', 'l1', 'Malformed', '{"how": "null_event"}');
SELECT * FROM eventsourced.handle_command('ledger', 'l1', 'Emit', '{"payload": {}}');
SELECT * FROM eventsourced.handle_command('ledger', 'l1', 'Emit', '{"type": "Added"}');
SELECT * FROM eventsourced.handle_command('ledger', 'l1', 'Emit', '{"type": "Poison", "payload": {}}');
SELECT * FROM eventsourced.handle_command('ledger', 'l1', 'Emit', '{"type": "Nothing", "payload": {}}');
SELECT * FROM eventsourced.handle_command('ledger', 'l1', 'Nope');
SELECT * FROM eventsourced.handle_command('nosuch', 'l1', 'Add');
SELECT * FROM eventsourced.handle_command(NULL, 'l1', 'Add');
SELECT * FROM eventsourced.handle_command('ledger', NULL, 'Add');
SELECT * FROM eventsourced.handle_command('ledger', '', 'Add');
SELECT * FROM eventsourced.handle_command('ledger', 'l1', NULL);
SELECT * FROM eventsourced.handle_command('ledger', 'l1', 'Add', NULL);
SELECT eventsourced.last_seq_no('ledger', 'l1');
SELECT seq_no, state FROM eventsourced.entity_states WHERE entity_id = 'l1';
-- an error caught in a savepoint leaves later commands working
DO $$
BEGIN
    BEGIN
        PERFORM eventsourced.handle_command('ledger', 'l1', 'Emit', '{"type": "Poison", "payload": {}}');
    EXCEPTION WHEN raise_exception THEN
        RAISE NOTICE 'caught: %', SQLERRM;
    END;
    PERFORM eventsourced.handle_command('ledger', 'l1', 'Add', '{"n": 100}');
END $$;
SELECT seq_no, state FROM eventsourced.handle_command('ledger', 'l1', 'Peek');

-- A handler dropped and re-created with another result type is refused
DROP FUNCTION cmdtest.peek(text, jsonb, jsonb);
CREATE FUNCTION cmdtest.peek(entity_id text, state jsonb, args jsonb)
    RETURNS jsonb LANGUAGE sql RETURN state;
SELECT * FROM eventsourced.handle_command('ledger', 'l1', 'Peek');
DROP FUNCTION cmdtest.peek(text, jsonb, jsonb);
SELECT * FROM eventsourced.handle_command('ledger', 'l1', 'Peek');
CREATE FUNCTION cmdtest.peek(entity_id text, state jsonb, args jsonb)
    RETURNS eventsourced.decision LANGUAGE sql
    RETURN eventsourced.reply(jsonb_build_object('seen', state));

-- Registering a command again replaces its handler (here with PL/pgSQL)
SELECT eventsourced.register_command('ledger', 'Add', 'cmdtest.add_plpgsql(text, jsonb, jsonb)');
SELECT accepted, rejection, seq_no FROM eventsourced.handle_command('ledger', 'l1', 'Add', '{"n": 1}');

-- Registrations are cached per backend: a registration rolled back is
-- forgotten, one written straight into the table is seen, and EXECUTE on
-- the handler is checked on every use, for the current user.
BEGIN;
SELECT eventsourced.register_command('ledger', 'Add', 'cmdtest.nothing(text, jsonb, jsonb)');
SELECT accepted FROM eventsourced.handle_command('ledger', 'l1', 'Add', '{"n": 1}');
ROLLBACK;
SELECT accepted, rejection FROM eventsourced.handle_command('ledger', 'l1', 'Add', '{"n": 1}');
UPDATE eventsourced.commands SET handler = 'cmdtest.nothing(text, jsonb, jsonb)'
 WHERE entity_type = 'ledger' AND command = 'Add';
SELECT accepted FROM eventsourced.handle_command('ledger', 'l1', 'Add', '{"n": 1}');
SELECT eventsourced.register_command('ledger', 'Add', 'cmdtest.add_plpgsql(text, jsonb, jsonb)');
CREATE ROLE es_cmd_user;
GRANT USAGE ON SCHEMA eventsourced, cmdtest TO es_cmd_user;
GRANT EXECUTE ON FUNCTION eventsourced.handle_command(text, text, text, jsonb) TO es_cmd_user;
REVOKE EXECUTE ON FUNCTION cmdtest.add_plpgsql(text, jsonb, jsonb) FROM PUBLIC;
SELECT accepted, rejection FROM eventsourced.handle_command('ledger', 'l1', 'Add', '{"n": 1}');
SET ROLE es_cmd_user;
SELECT accepted FROM eventsourced.handle_command('ledger', 'l1', 'Add', '{"n": 1}');
RESET ROLE;
GRANT EXECUTE ON FUNCTION cmdtest.add_plpgsql(text, jsonb, jsonb) TO PUBLIC;
DROP OWNED BY es_cmd_user;
DROP ROLE es_cmd_user;

-- The cached state: used when current, refolded from when stale
SELECT cmdtest.calls();
SELECT seq_no, state FROM eventsourced.handle_command('ledger', 'l2', 'Peek');
SELECT cmdtest.calls() AS calls_with_current_cache;
SELECT eventsourced.append('ledger', 'l2', 3, 'Added', '{"n": 1000}');
SELECT seq_no, state FROM eventsourced.entity_states WHERE entity_id = 'l2';
SELECT seq_no, state FROM eventsourced.handle_command('ledger', 'l2', 'Peek');
SELECT cmdtest.calls() AS calls_with_stale_cache;
SELECT accepted, seq_no, state FROM eventsourced.handle_command('ledger', 'l2', 'AddAndName', '{"n": 1, "name": "l2"}');
SELECT cmdtest.calls() AS calls_stale_then_two_events;
SELECT seq_no, state FROM eventsourced.entity_states WHERE entity_id = 'l2';

-- Generations: registering the same handler and initial state again keeps
-- them; another handler or initial state starts a new one
SELECT generation AS gen FROM eventsourced.entity_types WHERE entity_type = 'ledger' \gset
SELECT eventsourced.register_entity('ledger', 'cmdtest.apply(jsonb, text, jsonb)', '{"total": 0}', 1000);
SELECT generation = :gen AS same_generation FROM eventsourced.entity_types WHERE entity_type = 'ledger';
SELECT eventsourced.register_entity('ledger', 'cmdtest.apply(jsonb, text, jsonb)', '{"total": 0}');
SELECT generation = :gen AS same_generation FROM eventsourced.entity_types WHERE entity_type = 'ledger';
SELECT eventsourced.register_entity('ledger', 'cmdtest.apply(jsonb, text, jsonb)', '{"total": 10}');
SELECT generation > :gen AS new_generation FROM eventsourced.entity_types WHERE entity_type = 'ledger';
SELECT seq_no, state FROM eventsourced.handle_command('ledger', 'l2', 'Peek');
SELECT generation AS gen FROM eventsourced.entity_types WHERE entity_type = 'ledger' \gset
-- re-registration with another handler changes the rebuilt state
SELECT eventsourced.register_entity('ledger', 'cmdtest.apply_double(jsonb, text, jsonb)', '{"total": 10}');
SELECT generation > :gen AS new_generation FROM eventsourced.entity_types WHERE entity_type = 'ledger';
SELECT seq_no, state FROM eventsourced.handle_command('ledger', 'l2', 'Peek');
SELECT accepted, rejection, seq_no, state FROM eventsourced.handle_command('ledger', 'l2', 'Add', '{"n": 1}');
-- a changed body of the same function is a change too
CREATE OR REPLACE FUNCTION cmdtest.apply_double(state jsonb, event_type text, payload jsonb)
    RETURNS jsonb LANGUAGE sql
BEGIN ATOMIC
    SELECT CASE event_type
        WHEN 'Added' THEN jsonb_set(state, '{total}', to_jsonb((state->>'total')::bigint + 3 * (payload->>'n')::bigint))
        ELSE state END;
END;
SELECT generation AS gen FROM eventsourced.entity_types WHERE entity_type = 'ledger' \gset
SELECT eventsourced.register_entity('ledger', 'cmdtest.apply_double(jsonb, text, jsonb)', '{"total": 10}');
SELECT generation > :gen AS new_generation FROM eventsourced.entity_types WHERE entity_type = 'ledger';
SELECT seq_no, state FROM eventsourced.handle_command('ledger', 'l2', 'Peek');

-- Snapshots: with snapshot_after = 100, rebuilding an entity of 1,000
-- events calls the event handler at most about 100 + emitted times
SELECT eventsourced.register_entity('tally', 'cmdtest.apply(jsonb, text, jsonb)', '{"total": 0}', 100);
SELECT eventsourced.register_command('tally', 'Add', 'cmdtest.add(text, jsonb, jsonb)');
SELECT eventsourced.register_command('tally', 'Peek', 'cmdtest.peek(text, jsonb, jsonb)');
SELECT eventsourced.append('tally', 't1', 0,
    (SELECT array_agg(eventsourced.event('Added', '{"n": 1}')) FROM generate_series(1, 1000)));
SELECT cmdtest.calls();
-- no cached state and no snapshot yet: one full fold, which saves a snapshot
SELECT seq_no, state FROM eventsourced.handle_command('tally', 't1', 'Add', '{"n": 1}');
SELECT cmdtest.calls() AS calls_full_fold;
SELECT seq_no, state FROM eventsourced.load_snapshot('tally', 't1');
-- the cached state is current: only the emitted event is folded
SELECT seq_no, state FROM eventsourced.handle_command('tally', 't1', 'Add', '{"n": 1}');
SELECT cmdtest.calls() AS calls_cached;
-- 98 more commands cross seq_no 1100: a snapshot there
SELECT count(*) FROM generate_series(1, 98) g,
       LATERAL eventsourced.handle_command('tally', 't1', 'Add', jsonb_build_object('n', 1 + 0 * g)) r;
SELECT cmdtest.calls() AS calls_98;
SELECT seq_no, state FROM eventsourced.load_snapshot('tally', 't1');
SELECT seq_no, generation = (SELECT generation FROM eventsourced.entity_types WHERE entity_type = 'tally') AS current
  FROM eventsourced.snapshot_generations WHERE entity_id = 't1';
-- without the cached state (it is only a cache), rebuilding starts at the snapshot
TRUNCATE eventsourced.entity_states;
SELECT eventsourced.append('tally', 't1', 1100,
    (SELECT array_agg(eventsourced.event('Added', '{"n": 1}')) FROM generate_series(1, 99)));
SELECT seq_no, state FROM eventsourced.handle_command('tally', 't1', 'Add', '{"n": 1}');
SELECT cmdtest.calls() AS calls_from_snapshot;
-- a snapshot saved by hand is not trusted: handle_command did not write it
TRUNCATE eventsourced.entity_states;
SELECT eventsourced.append('tally', 't1', 1200, 'Added', '{"n": 1}');
SELECT eventsourced.save_snapshot('tally', 't1', 1201, '{"total": -1}');
SELECT seq_no, state FROM eventsourced.handle_command('tally', 't1', 'Peek');
SELECT cmdtest.calls() AS calls_untrusted_snapshot;
-- a new generation (here: another initial state): old cached states and
-- snapshots are ignored; the full fold saves a snapshot of the new
-- generation, and later rebuilds start there
SELECT eventsourced.register_entity('tally', 'cmdtest.apply(jsonb, text, jsonb)', '{"total": 1}', 100);
SELECT seq_no, state FROM eventsourced.handle_command('tally', 't1', 'Add', '{"n": 1}');
SELECT cmdtest.calls() AS calls_new_generation;
SELECT seq_no, state FROM eventsourced.load_snapshot('tally', 't1');
TRUNCATE eventsourced.entity_states;
SELECT seq_no, state FROM eventsourced.handle_command('tally', 't1', 'Add', '{"n": 1}');
SELECT cmdtest.calls() AS calls_after_new_snapshot;

-- Privileges: EXECUTE on handle_command and USAGE on the schema suffice;
-- handlers run as their function's owner and learn the caller from
-- eventsourced.caller(); our tables are written as their owner
SET client_min_messages = warning;
DROP ROLE IF EXISTS es_cmd_app;
DROP ROLE IF EXISTS es_cmd_nobody;
RESET client_min_messages;
CREATE ROLE es_cmd_app;
CREATE ROLE es_cmd_nobody;
GRANT USAGE ON SCHEMA eventsourced TO es_cmd_app;
GRANT EXECUTE ON FUNCTION eventsourced.handle_command(text, text, text, jsonb) TO es_cmd_app;
CREATE FUNCTION cmdtest.whoami(entity_id text, state jsonb, args jsonb)
    RETURNS eventsourced.decision LANGUAGE sql
    RETURN eventsourced.emit('Named', jsonb_build_object('name', current_user::text,
                                                         'caller', eventsourced.caller()::text));
SELECT eventsourced.register_entity('book', 'cmdtest.apply_double(jsonb, text, jsonb)', '{"total": 0}', 1);
SELECT eventsourced.register_command('book', 'Add', 'cmdtest.add(text, jsonb, jsonb)');
SELECT eventsourced.register_command('book', 'WhoAmI', 'cmdtest.whoami(text, jsonb, jsonb)');
SELECT 'cmdtest.apply(jsonb, text, jsonb)'::regprocedure::oid AS apply_oid \gset
SET ROLE es_cmd_app;
SELECT * FROM eventsourced.handle_command('book', 'b1', 'Add', '{"n": 2}');
SELECT * FROM eventsourced.handle_command('book', 'b1', 'Add', '{"n": -2}');
SELECT accepted, seq_no FROM eventsourced.handle_command('book', 'b1', 'WhoAmI');
-- but no direct access to the tables
SELECT * FROM eventsourced.entity_states;
SELECT eventsourced.register_entity('book', :apply_oid::oid::regprocedure);
RESET ROLE;
SELECT seq_no, event_type, payload FROM eventsourced.events_by_id('book', 'b1');
SELECT seq_no, state FROM eventsourced.load_snapshot('book', 'b1');
-- a handler the caller may not execute is refused
REVOKE EXECUTE ON FUNCTION cmdtest.add(text, jsonb, jsonb) FROM PUBLIC;
SET ROLE es_cmd_app;
SELECT * FROM eventsourced.handle_command('book', 'b1', 'Add', '{"n": 2}');
RESET ROLE;
SET ROLE es_cmd_nobody;
SELECT * FROM eventsourced.handle_command('book', 'b1', 'Add', '{"n": 2}');
RESET ROLE;
SELECT eventsourced.last_seq_no('book', 'b1');

-- search_path tricks change nothing
CREATE SCHEMA cmdevil;
CREATE FUNCTION cmdevil.texteq_always(text, text) RETURNS boolean
    LANGUAGE sql IMMUTABLE AS 'SELECT true';
CREATE OPERATOR cmdevil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = cmdevil.texteq_always);
CREATE TABLE cmdevil.entity_types (LIKE eventsourced.entity_types);
SET search_path = cmdevil, pg_catalog, public;
SELECT eventsourced.register_entity('book', 'cmdtest.apply_double(jsonb, text, jsonb)', '{"total": 0}', 1);
SELECT eventsourced.register_command('book', 'Peek2', 'cmdtest.whoami(text, jsonb, jsonb)');
SELECT seq_no, state FROM eventsourced.handle_command('book', 'b1', 'Peek2');
SELECT count(*) FROM cmdevil.entity_types;
RESET search_path;
DROP SCHEMA cmdevil CASCADE;

-- Command ids: a retry with the same id returns the first attempt's result
-- without its handler deciding again (whatever its args), a rejection too;
-- ids are per entity; a rolled-back command keeps nothing.
SELECT accepted, seq_no, state FROM eventsourced.handle_command('book', 'cid', 'Add', '{"n": 2}', 'req-1');
SELECT accepted, seq_no, state FROM eventsourced.handle_command('book', 'cid', 'Add', '{"n": 5}', 'req-1');
SELECT eventsourced.last_seq_no('book', 'cid');
SELECT accepted, rejection, seq_no FROM eventsourced.handle_command('book', 'cid', 'Add', '{"n": -1}', 'req-2');
SELECT accepted, rejection, seq_no FROM eventsourced.handle_command('book', 'cid', 'Add', '{"n": 3}', 'req-2');
SELECT accepted, seq_no FROM eventsourced.handle_command('book', 'cid2', 'Add', '{"n": 1}', 'req-1');
SELECT accepted, seq_no FROM eventsourced.handle_command('book', 'cid', 'Add', '{"n": 1}', NULL);
BEGIN;
SELECT seq_no FROM eventsourced.handle_command('book', 'cid', 'Add', '{"n": 1}', 'req-3');
ROLLBACK;
SELECT seq_no FROM eventsourced.handle_command('book', 'cid', 'Add', '{"n": 1}', 'req-3');
SELECT entity_id, command_id, command, accepted, reply IS NOT NULL AS has_reply, rejection, seq_no
  FROM eventsourced.command_results ORDER BY entity_id, command_id;
-- an id used for another command, and bad ids
SELECT * FROM eventsourced.handle_command('book', 'cid', 'Peek2', '{}', 'req-1');
SELECT * FROM eventsourced.handle_command('book', 'cid', 'Add', '{"n": 1}', '');
SELECT * FROM eventsourced.handle_command('book', 'cid', 'Add', '{"n": 1}', repeat('x', 256));
SELECT eventsourced.last_seq_no('book', 'cid');

-- A handler that truncates the state cache and writes another entity's
-- row there: the command's own row is written by its key, the other row
-- stays.
CREATE FUNCTION cmdtest.truncating(entity_id text, state jsonb, args jsonb)
RETURNS eventsourced.decision LANGUAGE plpgsql AS $$
BEGIN
    IF args ? 't' THEN
        TRUNCATE eventsourced.entity_states;
        INSERT INTO eventsourced.entity_states VALUES ('book', 'zz', 1, '{"total": 42}', 1);
    END IF;
    RETURN eventsourced.emit('Added', '{"n": 1}');
END $$;
SELECT eventsourced.register_command('book', 'Truncating', 'cmdtest.truncating(text,jsonb,jsonb)');
TRUNCATE eventsourced.entity_states;
SELECT seq_no FROM eventsourced.handle_command('book', 'tr1', 'Truncating', '{}');
SELECT seq_no FROM eventsourced.handle_command('book', 'tr1', 'Truncating', '{"t": 1}');
SELECT entity_id, seq_no FROM eventsourced.entity_states ORDER BY entity_id;

DROP OWNED BY es_cmd_app, es_cmd_nobody;
DROP ROLE es_cmd_app;
DROP ROLE es_cmd_nobody;
