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

-- (Earlier versions had a helper counter.change() and a numeric amount().)
DROP FUNCTION IF EXISTS counter.change(jsonb, jsonb, integer, text, text);
DROP FUNCTION IF EXISTS counter.amount(jsonb);

-- The amount of a command {"n": k}: k when it is a whole number from 0 to
-- the bigint maximum, else NULL.  One SQL expression, which the planner
-- inlines into the handlers: in PL/pgSQL every nested function call costs
-- about as much as the rest of a handler.
CREATE OR REPLACE FUNCTION counter.amount(args jsonb)
    RETURNS bigint
    LANGUAGE sql IMMUTABLE
RETURN CASE WHEN jsonb_typeof(args->'n') = 'number'
             AND (args->'n')::numeric BETWEEN 0 AND 9223372036854775807
             AND (args->'n')::numeric = trunc((args->'n')::numeric)
            THEN (args->'n')::numeric::bigint END;

-- Raised for an amount that counter.amount() refuses (called only then).
CREATE OR REPLACE FUNCTION counter.bad_amount(args jsonb)
    RETURNS bigint
    LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    RAISE EXCEPTION 'n must be a whole number from 0 to 9223372036854775807, not %', args->'n'
        USING ERRCODE = 'invalid_parameter_value';
END
$$;

-- Command handler Increase: emits Increased {"n": k}; rejected with
-- {"error": "Overflow"} when the value would pass the bigint maximum.
CREATE OR REPLACE FUNCTION counter.increase(entity_id text, state jsonb, args jsonb)
    RETURNS eventsourced.decision
    LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    n bigint := coalesce(counter.amount(args), counter.bad_amount(args));
BEGIN
    IF (state->>'value')::bigint > 9223372036854775807 - n THEN
        RETURN eventsourced.reject('{"error": "Overflow"}');
    END IF;
    RETURN eventsourced.emit('Increased', jsonb_build_object('n', n));
END
$$;

-- Command handler Decrease: emits Decreased {"n": k}; rejected with
-- {"error": "Underflow"} when the value would go below 0.
CREATE OR REPLACE FUNCTION counter.decrease(entity_id text, state jsonb, args jsonb)
    RETURNS eventsourced.decision
    LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    n bigint := coalesce(counter.amount(args), counter.bad_amount(args));
BEGIN
    IF (state->>'value')::bigint < n THEN
        RETURN eventsourced.reject('{"error": "Underflow"}');
    END IF;
    RETURN eventsourced.emit('Decreased', jsonb_build_object('n', n));
END
$$;

SELECT eventsourced.register_entity('counter', 'counter.apply(jsonb, text, jsonb)',
                                    '{"value": 0}', 100);
SELECT eventsourced.register_command('counter', 'Increase', 'counter.increase(text, jsonb, jsonb)');
SELECT eventsourced.register_command('counter', 'Decrease', 'counter.decrease(text, jsonb, jsonb)');
