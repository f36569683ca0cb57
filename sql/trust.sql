-- Trust between roles (README, "Trust between roles"): handlers run as
-- their function's owner, restricted, with their registrant's search_path;
-- registrations and projections belong to their registrant; projections
-- check SELECT and EXECUTE on every run; the feed honours row-level
-- security; protobuf registration is the extension owner's act.
-- Roles: the superuser (extension owner), es_t_admin (registers the model),
-- es_t_app (application), es_t_reader (read-only), es_t_evil (attacker).
\set SHOW_CONTEXT never
SET client_min_messages = warning;
DROP ROLE IF EXISTS es_t_admin;
DROP ROLE IF EXISTS es_t_app;
DROP ROLE IF EXISTS es_t_reader;
DROP ROLE IF EXISTS es_t_evil;
DROP ROLE IF EXISTS es_t_gone;
RESET client_min_messages;
CREATE ROLE es_t_admin;
CREATE ROLE es_t_app;
CREATE ROLE es_t_reader;
CREATE ROLE es_t_evil;
CREATE SCHEMA es_t_model AUTHORIZATION es_t_admin;
CREATE SCHEMA es_t_evil AUTHORIZATION es_t_evil;
GRANT USAGE ON SCHEMA eventsourced TO es_t_admin, es_t_app, es_t_reader, es_t_evil;
GRANT USAGE ON SCHEMA es_t_model TO es_t_app, es_t_evil;
-- everybody may call every function (the worst case for us), but only the
-- admin and the application may read the events
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA eventsourced TO es_t_admin, es_t_app, es_t_evil;
GRANT SELECT ON eventsourced.events TO es_t_admin, es_t_app, es_t_reader, es_t_evil;
GRANT SELECT ON eventsourced.snapshots TO es_t_reader;
GRANT EXECUTE ON FUNCTION eventsourced.read_all(bigint, integer),
    eventsourced.events_by_type(text, bigint, integer),
    eventsourced.read_all_pb(bigint, integer),
    eventsourced.events_by_type_pb(text, bigint, integer),
    eventsourced.load_snapshot(text, text),
    eventsourced.load_snapshot_pb(text, text) TO es_t_reader;

-- The admin's model: a counter whose handlers record who they run as.
SET ROLE es_t_admin;
SET search_path = es_t_model;
CREATE TABLE audit (who text, caller text, what text);
GRANT SELECT ON audit TO PUBLIC;
CREATE FUNCTION apply(state jsonb, event_type text, payload jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO audit VALUES (current_user, eventsourced.caller(), 'fold ' || event_type);
    RETURN jsonb_build_object('n', (state->>'n')::int + 1);
END $$;
CREATE FUNCTION increase(entity_id text, state jsonb, args jsonb) RETURNS eventsourced.decision
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO audit VALUES (current_user, eventsourced.caller(), 'decide');
    RETURN eventsourced.emit('Increased', '{}');
END $$;
SELECT eventsourced.register_entity('t_counter', 'apply(jsonb,text,jsonb)', '{"n": 0}');
SELECT eventsourced.register_command('t_counter', 'Increase', 'increase(text,jsonb,jsonb)');
RESET search_path;
RESET ROLE;
-- they belong to the admin and remember its search_path, pg_temp last
SELECT entity_type, owner, search_path FROM eventsourced.entity_types WHERE entity_type = 't_counter';
SELECT command, owner, search_path FROM eventsourced.commands WHERE entity_type = 't_counter';

-- 1. Handlers run as their function's owner, never as the caller; the
-- caller is known through eventsourced.caller().
SELECT accepted, state FROM eventsourced.handle_command('t_counter', 'c1', 'Increase');
SET ROLE es_t_app;
SELECT accepted, state FROM eventsourced.handle_command('t_counter', 'c1', 'Increase');
RESET ROLE;
SELECT who, caller, what FROM es_t_model.audit;
SELECT eventsourced.caller() = current_user AS caller_outside_handlers;

-- A caller cannot steer what a handler's names resolve to: a table that
-- shadows "audit" on the caller's search_path and in pg_temp is never used.
CREATE TEMP TABLE audit (who text, caller text, what text);
SET search_path = pg_temp, es_t_evil, public;
SELECT accepted FROM eventsourced.handle_command('t_counter', 'c1', 'Increase');
RESET search_path;
SELECT count(*) AS temp_rows FROM pg_temp.audit;
SELECT count(*) AS model_rows FROM es_t_model.audit;
DROP TABLE pg_temp.audit;

-- 2. Another role cannot take over a registration, whatever EXECUTE it has.
SET ROLE es_t_evil;
CREATE FUNCTION es_t_evil.trojan(entity_id text, state jsonb, args jsonb)
RETURNS eventsourced.decision LANGUAGE sql
RETURN eventsourced.emit('Stolen', '{}');
CREATE FUNCTION es_t_evil.fold(state jsonb, event_type text, payload jsonb) RETURNS jsonb
LANGUAGE sql RETURN state;
SELECT eventsourced.register_command('t_counter', 'Increase', 'es_t_evil.trojan(text,jsonb,jsonb)');
SELECT eventsourced.register_command('t_counter', 'Steal', 'es_t_evil.trojan(text,jsonb,jsonb)');
SELECT eventsourced.register_entity('t_counter', 'es_t_evil.fold(jsonb,text,jsonb)');
-- nor register a function it does not own
SELECT eventsourced.register_entity('t_evil', 'es_t_model.apply(jsonb,text,jsonb)');
-- its own entity type is its own
SELECT eventsourced.register_entity('t_evil', 'es_t_evil.fold(jsonb,text,jsonb)');
RESET ROLE;
SELECT command, handler FROM eventsourced.commands WHERE entity_type = 't_counter';
-- the superuser's command runs the attacker's own handler as the attacker
SELECT eventsourced.register_command('t_evil', 'Do', 'es_t_evil.trojan(text,jsonb,jsonb)');
SELECT owner FROM eventsourced.commands WHERE entity_type = 't_evil';
-- (registered by the superuser, so the attacker cannot replace it now)
SET ROLE es_t_evil;
SELECT eventsourced.register_command('t_evil', 'Do', 'es_t_evil.trojan(text,jsonb,jsonb)');
-- a function in a temporary schema cannot be registered: another session
-- could create one of that name there later
CREATE FUNCTION pg_temp.tmp_fold(state jsonb, event_type text, payload jsonb) RETURNS jsonb
LANGUAGE sql RETURN state;
\set VERBOSITY sqlstate
SELECT eventsourced.register_entity('t_tmp', 'pg_temp.tmp_fold(jsonb,text,jsonb)');
\set VERBOSITY default
RESET ROLE;

-- At every use, a handler's owner must be a role whose rights its
-- registrant has: after ALTER FUNCTION ... OWNER (or REASSIGN OWNED) to a
-- stronger role, or when another role re-creates the function under the
-- same name, the registration is refused until it is registered again.
ALTER FUNCTION es_t_model.increase(text,jsonb,jsonb) OWNER TO postgres;
SELECT accepted FROM eventsourced.handle_command('t_counter', 'c1', 'Increase');
ALTER FUNCTION es_t_model.increase(text,jsonb,jsonb) OWNER TO es_t_admin;
SELECT accepted FROM eventsourced.handle_command('t_counter', 'c1', 'Increase');
CREATE SCHEMA es_t_shared;
GRANT USAGE, CREATE ON SCHEMA es_t_shared TO es_t_admin, es_t_evil;
SET ROLE es_t_admin;
CREATE FUNCTION es_t_shared.note(entity_id text, state jsonb, args jsonb)
RETURNS eventsourced.decision LANGUAGE sql RETURN eventsourced.reply('"admin"');
SELECT eventsourced.register_command('t_counter', 'Note', 'es_t_shared.note(text,jsonb,jsonb)');
SELECT reply FROM eventsourced.handle_command('t_counter', 'c1', 'Note');
DROP FUNCTION es_t_shared.note(text,jsonb,jsonb);
SET ROLE es_t_evil;
CREATE FUNCTION es_t_shared.note(entity_id text, state jsonb, args jsonb)
RETURNS eventsourced.decision LANGUAGE sql RETURN eventsourced.reply(state);
RESET ROLE;
SELECT reply FROM eventsourced.handle_command('t_counter', 'c1', 'Note');
DROP SCHEMA es_t_shared CASCADE;
DELETE FROM eventsourced.commands WHERE entity_type = 't_counter' AND command = 'Note';
-- a member of the function's owner registers it; once no longer a member,
-- its registration no longer runs
CREATE ROLE es_t_member IN ROLE es_t_admin;
SET ROLE es_t_member;
SET search_path = es_t_model;
SELECT eventsourced.register_command('t_counter', 'Inc2', 'es_t_model.increase(text,jsonb,jsonb)');
RESET search_path;
RESET ROLE;
SELECT accepted FROM eventsourced.handle_command('t_counter', 'c1', 'Inc2');
REVOKE es_t_admin FROM es_t_member;
SELECT accepted FROM eventsourced.handle_command('t_counter', 'c1', 'Inc2');
DELETE FROM eventsourced.commands WHERE entity_type = 't_counter' AND command = 'Inc2';
DROP ROLE es_t_member;

-- 3. Nothing a handler does outlives it in the session: no temporary
-- objects, prepared statements, LISTEN, SET ROLE, or setting changes.
SET ROLE es_t_evil;
CREATE FUNCTION es_t_evil.sneaky(entity_id text, state jsonb, args jsonb)
RETURNS eventsourced.decision LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE args->>'sql';
    RETURN eventsourced.reply('{}');
END $$;
SELECT eventsourced.register_command('t_evil', 'Sneak', 'es_t_evil.sneaky(text,jsonb,jsonb)');
RESET ROLE;
SELECT eventsourced.handle_command('t_evil', 'e1', 'Sneak', '{"sql": "CREATE TEMP TABLE audit_totals (n int)"}');
SELECT eventsourced.handle_command('t_evil', 'e1', 'Sneak', '{"sql": "PREPARE p AS SELECT 1"}');
SELECT eventsourced.handle_command('t_evil', 'e1', 'Sneak', '{"sql": "LISTEN x"}');
SELECT eventsourced.handle_command('t_evil', 'e1', 'Sneak', '{"sql": "SET ROLE postgres"}');
SELECT eventsourced.handle_command('t_evil', 'e1', 'Sneak', '{"sql": "DECLARE c CURSOR WITH HOLD FOR SELECT 1"}');
SELECT accepted FROM eventsourced.handle_command('t_evil', 'e1', 'Sneak', '{"sql": "SET search_path = es_t_evil"}');
SELECT accepted FROM eventsourced.handle_command('t_evil', 'e1', 'Sneak', '{"sql": "SELECT set_config(''work_mem'', ''1234kB'', false)"}');
SHOW search_path;
SHOW work_mem;
SELECT count(*) FROM pg_prepared_statements;

-- 4. Projections: handlers run as their owner, restricted, for every
-- caller; the creator must own the handler and may read the events.
SET ROLE es_t_admin;
SET search_path = es_t_model;
CREATE TABLE seen (pos bigint, who text, caller text, at_ok boolean);
CREATE FUNCTION see(entity_id text, seq_no bigint, event_type text,
                    payload jsonb, pos bigint) RETURNS void
LANGUAGE sql SECURITY DEFINER AS $$
    INSERT INTO seen SELECT pos, current_user, eventsourced.caller(),
        now() >= (SELECT recorded_at FROM eventsourced.events e WHERE e.position = pos)
$$;
REVOKE EXECUTE ON FUNCTION see(text,bigint,text,jsonb,bigint) FROM PUBLIC;
SELECT eventsourced.create_projection('t_see', 't_counter', 'see(text,bigint,text,jsonb,bigint)');
RESET search_path;
RESET ROLE;
SELECT eventsourced.run_projection('t_see');
SET ROLE es_t_admin;
SELECT eventsourced.run_projection('t_see');   -- nothing left
RESET ROLE;
SELECT who, caller, at_ok, count(*) FROM es_t_model.seen GROUP BY 1, 2, 3;
SELECT name, owner FROM eventsourced.projections WHERE name = 't_see';
-- another role can neither run, reset, stop, start nor drop it
SET ROLE es_t_evil;
SELECT eventsourced.run_projection('t_see');
SELECT eventsourced.reset_projection('t_see', 0);
SELECT eventsourced.stop_projection('t_see');
SELECT eventsourced.start_projection('t_see');
SELECT eventsourced.drop_projection('t_see');
-- a handler it does not own (a SECURITY DEFINER function of the admin) is refused
SELECT eventsourced.create_projection('t_steal', NULL, 'es_t_model.see(text,bigint,text,jsonb,bigint)');
-- a role without SELECT on the events cannot read them through a projection
RESET ROLE;
REVOKE SELECT ON eventsourced.events FROM es_t_evil;
SET ROLE es_t_evil;
CREATE FUNCTION es_t_evil.copy(entity_id text, seq_no bigint, event_type text,
                               payload jsonb, pos bigint) RETURNS void
LANGUAGE sql AS 'SELECT 1';
SELECT eventsourced.create_projection('t_copy', NULL, 'es_t_evil.copy(text,bigint,text,jsonb,bigint)');
RESET ROLE;
-- SELECT is checked on every run too: granted, then revoked
GRANT SELECT ON eventsourced.events TO es_t_evil;
SET ROLE es_t_evil;
SELECT eventsourced.create_projection('t_copy', NULL, 'es_t_evil.copy(text,bigint,text,jsonb,bigint)');
RESET ROLE;
REVOKE SELECT ON eventsourced.events FROM es_t_evil;
SELECT eventsourced.run_projection('t_copy');
-- EXECUTE of the handler's owner is checked on every run
GRANT SELECT ON eventsourced.events TO es_t_evil;
REVOKE EXECUTE ON FUNCTION es_t_evil.copy(text,bigint,text,jsonb,bigint) FROM PUBLIC, es_t_evil;
SELECT eventsourced.run_projection('t_copy');
GRANT EXECUTE ON FUNCTION es_t_evil.copy(text,bigint,text,jsonb,bigint) TO es_t_evil;
SELECT eventsourced.run_projection('t_copy', 0);
SELECT eventsourced.drop_projection('t_copy');
REVOKE SELECT ON eventsourced.events FROM es_t_evil;

-- The escalation of the issue: the attacker's projection plants a temporary
-- table with a trigger for the superuser's projection to write into.
CREATE SCHEMA es_t_app AUTHORIZATION es_t_app;
SET ROLE es_t_app;
CREATE FUNCTION es_t_app.pwn() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    ALTER ROLE es_t_app SUPERUSER;
    RETURN NEW;
END $$;
CREATE FUNCTION es_t_app.plant(entity_id text, seq_no bigint, event_type text,
                               payload jsonb, pos bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    CREATE TEMP TABLE IF NOT EXISTS audit_totals (n int);
    CREATE TRIGGER t BEFORE INSERT ON audit_totals FOR EACH ROW EXECUTE FUNCTION es_t_app.pwn();
END $$;
SELECT eventsourced.create_projection('a_evil', 't_counter', 'es_t_app.plant(text,bigint,text,jsonb,bigint)');
RESET ROLE;
CREATE TABLE public.audit_totals (n int);
CREATE FUNCTION public.count_all(entity_id text, seq_no bigint, event_type text,
                                 payload jsonb, pos bigint) RETURNS void
LANGUAGE sql AS 'INSERT INTO audit_totals VALUES (1)';
SELECT eventsourced.create_projection('z_admin', 't_counter', 'public.count_all(text,bigint,text,jsonb,bigint)');
SELECT eventsourced.run_projection('a_evil');
SELECT eventsourced.run_projection('z_admin') > 0 AS applied;
SELECT status, last_error FROM eventsourced.projections WHERE name = 'a_evil';
SELECT rolsuper FROM pg_roles WHERE rolname = 'es_t_app';
SELECT count(*) > 0 AS admin_rows FROM public.audit_totals;
SELECT count(*) AS temp_tables FROM pg_class WHERE relname = 'audit_totals' AND relpersistence = 't';
SELECT eventsourced.drop_projection('a_evil');
SELECT eventsourced.drop_projection('z_admin');

-- Runs do not nest: a handler that runs its own projection fails.
CREATE FUNCTION t_recurse(entity_id text, seq_no bigint, event_type text,
                          payload jsonb, pos bigint) RETURNS void
LANGUAGE sql AS $$SELECT eventsourced.run_projection('t_recurse')$$;
SELECT eventsourced.create_projection('t_recurse', 't_counter', 't_recurse(text,bigint,text,jsonb,bigint)');
SELECT eventsourced.run_projection('t_recurse');
SELECT status, last_error FROM eventsourced.projections WHERE name = 't_recurse';
SELECT eventsourced.drop_projection('t_recurse');
DROP FUNCTION t_recurse(text,bigint,text,jsonb,bigint);

-- A handler that raises query_canceled itself gets its error strategy, like
-- any other failing handler (only a real cancel of the session ends a run).
CREATE FUNCTION t_fake_cancel(entity_id text, seq_no bigint, event_type text,
                              payload jsonb, pos bigint) RETURNS void
LANGUAGE plpgsql AS $$BEGIN RAISE EXCEPTION 'not really' USING ERRCODE = 'query_canceled'; END$$;
SELECT eventsourced.create_projection('t_fake', 't_counter', 't_fake_cancel(text,bigint,text,jsonb,bigint)');
SELECT eventsourced.run_projection('t_fake');
SELECT status, last_error FROM eventsourced.projections WHERE name = 't_fake';
SELECT eventsourced.drop_projection('t_fake');
DROP FUNCTION t_fake_cancel(text,bigint,text,jsonb,bigint);

-- A transient error (serialization failure, deadlock, lock timeout) never
-- skips an event, whatever the strategy: the next run tries it again.
CREATE TABLE t_flaky_flag (on_ boolean);
INSERT INTO t_flaky_flag VALUES (true);
CREATE TABLE t_flaky_seen (pos bigint);
CREATE FUNCTION t_flaky(entity_id text, seq_no bigint, event_type text,
                        payload jsonb, pos bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT on_ FROM t_flaky_flag) THEN
        RAISE EXCEPTION 'try again' USING ERRCODE = '40001';
    END IF;
    INSERT INTO t_flaky_seen VALUES (pos);
END $$;
SELECT eventsourced.create_projection('t_flaky', 't_counter', 't_flaky(text,bigint,text,jsonb,bigint)', 'skip');
SELECT eventsourced.run_projection('t_flaky');
SELECT checkpoint, status, errors, last_error FROM eventsourced.projections WHERE name = 't_flaky';
UPDATE t_flaky_flag SET on_ = false;
SELECT eventsourced.run_projection('t_flaky');
SELECT count(*) FROM t_flaky_seen;
SELECT eventsourced.drop_projection('t_flaky');

-- 5. Row-level security on the events: feed reads and projections return
-- what a plain SELECT by that role returns; commands still see everything.
SELECT eventsourced.append('t_tenant', 'a1', NULL, 'Seen', '{"tenant": "a"}');
SELECT eventsourced.append('t_tenant', 'b1', NULL, 'Seen', '{"tenant": "b"}');
SELECT eventsourced.append('t_tenant', 'a2', NULL, 'Seen', '{"tenant": "a"}');
ALTER TABLE eventsourced.events ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_a ON eventsourced.events FOR SELECT TO es_t_reader, es_t_admin
    USING (entity_type <> 't_tenant' OR payload->>'tenant' = 'a');
SELECT min(position) - 1 AS before_tenants FROM eventsourced.events WHERE entity_type = 't_tenant' \gset
SET ROLE es_t_reader;
SELECT entity_id FROM eventsourced.events_by_type('t_tenant');
SELECT entity_id FROM eventsourced.read_all(:before_tenants) WHERE entity_type = 't_tenant';
SELECT count(*) FROM eventsourced.events WHERE entity_type = 't_tenant';
RESET ROLE;
-- the protobuf form returns the same rows
SET ROLE es_t_reader;
SELECT position(convert_to('b1', 'UTF8') IN eventsourced.events_by_type_pb('t_tenant')) = 0 AS no_b1,
       position(convert_to('a2', 'UTF8') IN eventsourced.events_by_type_pb('t_tenant')) > 0 AS has_a2;
RESET ROLE;
-- a role with no policy sees nothing; the owner sees everything
SET ROLE es_t_app;
SELECT count(*) FROM eventsourced.events_by_type('t_tenant');
RESET ROLE;
SELECT count(*) FROM eventsourced.events_by_type('t_tenant');
-- a projection reads with its handler owner's policies
SET ROLE es_t_admin;
CREATE TABLE es_t_model.tenant_seen (entity_id text);
CREATE FUNCTION es_t_model.tenant_see(entity_id text, seq_no bigint, event_type text,
                                      payload jsonb, pos bigint) RETURNS void
LANGUAGE sql AS 'INSERT INTO es_t_model.tenant_seen VALUES (entity_id)';
SELECT eventsourced.create_projection('t_tenant', 't_tenant', 'es_t_model.tenant_see(text,bigint,text,jsonb,bigint)');
RESET ROLE;
SELECT eventsourced.run_projection('t_tenant');
SELECT entity_id FROM es_t_model.tenant_seen ORDER BY 1;
SELECT eventsourced.drop_projection('t_tenant');
-- with row_security off, a read that policies would filter is refused
SET ROLE es_t_reader;
SET row_security = off;
SELECT count(*) FROM eventsourced.events_by_type('t_tenant');
RESET row_security;
RESET ROLE;
-- Handlers see every event of their entities, so a role that policies
-- restrict may not register them, and its registrations stop working while
-- policies restrict it.
SET ROLE es_t_admin;
SELECT eventsourced.register_entity('t_tenant', 'es_t_model.apply(jsonb,text,jsonb)', '{"n": 0}');
SELECT accepted FROM eventsourced.handle_command('t_counter', 'c1', 'Increase');
RESET ROLE;
-- nor may a handler whose function's owner is restricted be registered,
-- even by a role that is not
SELECT eventsourced.register_entity('t_tenant', 'es_t_model.apply(jsonb,text,jsonb)', '{"n": 0}');
-- commands registered by an unrestricted role fold the whole entity,
-- whatever the caller's policies
CREATE FUNCTION public.t_count(state jsonb, event_type text, payload jsonb) RETURNS jsonb
LANGUAGE sql RETURN jsonb_build_object('n', (state->>'n')::int + 1);
CREATE FUNCTION public.t_bump(entity_id text, state jsonb, args jsonb) RETURNS eventsourced.decision
LANGUAGE sql RETURN eventsourced.emit('Bumped', '{}');
SELECT eventsourced.register_entity('t_tenant', 'public.t_count(jsonb,text,jsonb)', '{"n": 0}');
SELECT eventsourced.register_command('t_tenant', 'Increase', 'public.t_bump(text,jsonb,jsonb)');
SELECT eventsourced.append('t_tenant', 'a1', NULL, 'Seen', '{"tenant": "b"}');
SET ROLE es_t_admin;
SELECT count(*) AS visible FROM eventsourced.events_by_id('t_tenant', 'a1');
SELECT seq_no, state FROM eventsourced.handle_command('t_tenant', 'a1', 'Increase');
RESET ROLE;
-- snapshots: load_snapshot and load_snapshot_pb honour policies too
SELECT eventsourced.save_snapshot('t_tenant', 'a2', 1, '{"secret": true}');
SELECT eventsourced.save_snapshot('t_tenant', 'b1', 1, '{"secret": false}');
ALTER TABLE eventsourced.snapshots ENABLE ROW LEVEL SECURITY;
CREATE POLICY not_secret ON eventsourced.snapshots FOR SELECT TO es_t_reader
    USING (state->>'secret' = 'false');
SET ROLE es_t_reader;
SELECT seq_no, state FROM eventsourced.load_snapshot('t_tenant', 'a2');
SELECT seq_no, state FROM eventsourced.load_snapshot('t_tenant', 'b1');
SELECT eventsourced.load_snapshot_pb('t_tenant', 'a2') IS NULL AS hidden,
       eventsourced.load_snapshot_pb('t_tenant', 'b1') IS NOT NULL AS shown;
RESET ROLE;
DROP POLICY not_secret ON eventsourced.snapshots;
ALTER TABLE eventsourced.snapshots DISABLE ROW LEVEL SECURITY;
DROP POLICY tenant_a ON eventsourced.events;
ALTER TABLE eventsourced.events DISABLE ROW LEVEL SECURITY;

-- 6. Protobuf message types are shared: only the extension's owner registers them.
SET ROLE es_t_app;
SELECT eventsourced.register_protobuf('\x0a00');
RESET ROLE;

-- 7. A registrant that is dropped: its handlers keep running as their
-- function's owner (PostgreSQL refuses to drop a role that owns one); only
-- the extension's owner may change what it left.
CREATE ROLE es_t_gone;
GRANT USAGE ON SCHEMA eventsourced TO es_t_gone;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA eventsourced TO es_t_gone;
GRANT SELECT ON eventsourced.events TO es_t_gone;
GRANT CREATE ON SCHEMA public TO es_t_gone;
CREATE TABLE public.gone_seen (who text);
GRANT INSERT ON public.gone_seen TO es_t_gone, es_t_admin;
SET ROLE es_t_gone;
CREATE FUNCTION public.gone_see(entity_id text, seq_no bigint, event_type text,
                                payload jsonb, pos bigint) RETURNS void
LANGUAGE sql AS 'INSERT INTO public.gone_seen VALUES (current_user)';
SELECT eventsourced.create_projection('t_gone', 't_tenant', 'public.gone_see(text,bigint,text,jsonb,bigint)');
RESET ROLE;
\set VERBOSITY terse
DROP ROLE es_t_gone;
REASSIGN OWNED BY es_t_gone TO es_t_admin;
DROP OWNED BY es_t_gone;
DROP ROLE es_t_gone;
SET ROLE es_t_admin;
SELECT eventsourced.run_projection('t_gone');
RESET ROLE;
\set VERBOSITY default
-- its handler now belongs to es_t_admin, whose rights no dropped role has
SELECT eventsourced.run_projection('t_gone');
SELECT count(*) FROM public.gone_seen;
SELECT eventsourced.drop_projection('t_gone');

-- clean up
DROP TABLE public.audit_totals, public.gone_seen;
DROP FUNCTION public.count_all(text,bigint,text,jsonb,bigint);
DROP FUNCTION public.gone_see(text,bigint,text,jsonb,bigint);
DROP FUNCTION t_flaky(text,bigint,text,jsonb,bigint);
DROP FUNCTION public.t_count(jsonb,text,jsonb), public.t_bump(text,jsonb,jsonb);
DROP TABLE t_flaky_flag, t_flaky_seen;
DELETE FROM eventsourced.commands WHERE entity_type IN ('t_counter', 't_evil', 't_tenant');
DELETE FROM eventsourced.entity_types WHERE entity_type IN ('t_counter', 't_evil', 't_tenant');
DROP OWNED BY es_t_admin, es_t_app, es_t_reader, es_t_evil;
DROP ROLE es_t_admin;
DROP ROLE es_t_app;
DROP ROLE es_t_reader;
DROP ROLE es_t_evil;
