-- The counter example: an entity "counter" whose state is {"value": n},
-- with the commands Increase and Decrease ({"n": k}) and the events
-- Increased and Decreased ({"n": k}).  Increase is rejected with
-- {"error": "Overflow"} past the bigint maximum, Decrease with
-- {"error": "Underflow"} below 0.  Safe to load more than once.
CREATE EXTENSION IF NOT EXISTS eventsourced;
CREATE SCHEMA IF NOT EXISTS counter;

-- The event handler: the state after one more event.
CREATE OR REPLACE FUNCTION counter.apply(state jsonb, event_type text, payload jsonb)
    RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    CASE event_type
        WHEN 'Increased' THEN
            RETURN jsonb_build_object('value', (state->>'value')::bigint + (payload->>'n')::bigint);
        WHEN 'Decreased' THEN
            RETURN jsonb_build_object('value', (state->>'value')::bigint - (payload->>'n')::bigint);
    END CASE;
END
$$;

-- The amount of a command: {"n": k} with k a non-negative bigint.
CREATE OR REPLACE FUNCTION counter.amount(args jsonb)
    RETURNS numeric
    LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    n numeric;
BEGIN
    IF jsonb_typeof(args->'n') IS DISTINCT FROM 'number' THEN
        RAISE EXCEPTION 'counter commands take {"n": <number>}, not %', args
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    n := (args->>'n')::numeric;
    IF n < 0 OR n <> trunc(n) OR n > 9223372036854775807 THEN
        RAISE EXCEPTION 'n must be a whole number from 0 to 9223372036854775807, not %', n
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN n;
END
$$;

-- Both commands: the event, or a rejection when the value would leave
-- 0 .. bigint maximum.  Handlers are in PL/pgSQL, which keeps compiled
-- functions per backend; SQL-language handlers are planned on every call.
CREATE OR REPLACE FUNCTION counter.change(state jsonb, args jsonb, sign integer,
                                          event_type text, error text)
    RETURNS eventsourced.decision
    LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    n numeric := counter.amount(args);
    v numeric := (state->>'value')::numeric + sign * n;
BEGIN
    IF v < 0 OR v > 9223372036854775807 THEN
        RETURN eventsourced.reject(jsonb_build_object('error', error));
    END IF;
    RETURN eventsourced.emit(event_type, jsonb_build_object('n', n));
END
$$;

-- Command handler Increase: rejected with {"error": "Overflow"}.
CREATE OR REPLACE FUNCTION counter.increase(entity_id text, state jsonb, args jsonb)
    RETURNS eventsourced.decision
    LANGUAGE plpgsql IMMUTABLE
AS $$ BEGIN RETURN counter.change(state, args, 1, 'Increased', 'Overflow'); END $$;

-- Command handler Decrease: rejected with {"error": "Underflow"}.
CREATE OR REPLACE FUNCTION counter.decrease(entity_id text, state jsonb, args jsonb)
    RETURNS eventsourced.decision
    LANGUAGE plpgsql IMMUTABLE
AS $$ BEGIN RETURN counter.change(state, args, -1, 'Decreased', 'Underflow'); END $$;

SELECT eventsourced.register_entity('counter', 'counter.apply(jsonb, text, jsonb)',
                                    '{"value": 0}', 100);
SELECT eventsourced.register_command('counter', 'Increase', 'counter.increase(text, jsonb, jsonb)');
SELECT eventsourced.register_command('counter', 'Decrease', 'counter.decrease(text, jsonb, jsonb)');
