/*-------------------------------------------------------------------------
 *
 * snapshots.c
 *		--snapshots: the store's snapshot changes into NATS KV.
 *
 * The relay pages through eventsourced.snapshot_changes() (extension
 * 0.5.0) from its snapshot checkpoint (the snapshot_change column of its
 * checkpoint row), which never skips a change: every snapshot write draws
 * a change number from the event positions, below the same horizon.  A
 * snapshot is mirrored only once the event it covers is in the stream
 * (its position at or below the events' checkpoint, which moves only after
 * JetStream acknowledged), because its Snapshot.seq_no is that event's
 * stream sequence (locate.c).  The snapshot checkpoint moves after the KV
 * puts of a page were acknowledged; after a crash the puts since are made
 * again, which is harmless (a put replaces the key's value).
 *
 *-------------------------------------------------------------------------
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay.h"

/* Snapshot changes per page: states may be large (up to max_payload each). */
#define SNAPSHOT_BATCH			64
/* PostgreSQL's binary int8. */
#define INT8_BYTES				8

#define HAS_CHANGES_SQL \
	"SELECT pg_catalog.to_regprocedure('eventsourced.snapshot_changes(bigint,integer)')" \
	" IS NOT NULL"
#define LOAD_SQL \
	"SELECT snapshot_change FROM eventsourced_nats.relays WHERE name = $1"
/* The feed horizon, or "unchecked" for a role without EXECUTE on it */
#define HORIZON_SQL \
	"SELECT COALESCE(CASE WHEN pg_catalog.has_function_privilege(" \
	"'eventsourced.feed_horizon()', 'EXECUTE') THEN eventsourced.feed_horizon()::pg_catalog.text" \
	" END, 'unchecked')"
/* The covered event's position, read again (see covered_position). */
#define POSITION_SQL \
	"SELECT position FROM eventsourced.events" \
	" WHERE entity_type OPERATOR(pg_catalog.=) $1 AND entity_id OPERATOR(pg_catalog.=) $2" \
	" AND seq_no OPERATOR(pg_catalog.=) $3::pg_catalog.int8"
#define SAVE_SQL \
	"UPDATE eventsourced_nats.relays SET snapshot_change = $2, updated_at = pg_catalog.now()" \
	" WHERE name = $1"
/*
 * A page of changes with the position of the event each covers (NULL when
 * it is gone); states larger than NATS takes stay in the store (NULL),
 * their length comes along.
 */
#define PAGE_SQL \
	"SELECT c.change, c.entity_type, c.entity_id, e.position," \
	" c.seq_no," \
	" CASE WHEN pg_catalog.octet_length(c.state) OPERATOR(pg_catalog.<=) $3" \
	" THEN c.state END, pg_catalog.octet_length(c.state)::pg_catalog.int8" \
	" FROM eventsourced.snapshot_changes($1, $2) c" \
	" LEFT JOIN eventsourced.events e" \
	" ON e.entity_type OPERATOR(pg_catalog.=) c.entity_type COLLATE \"C\"" \
	" AND e.entity_id OPERATOR(pg_catalog.=) c.entity_id COLLATE \"C\"" \
	" AND e.seq_no OPERATOR(pg_catalog.=) c.seq_no" \
	" ORDER BY c.change"

/* Columns of a snapshot page. */
enum
{
	SCOL_CHANGE,
	SCOL_ENTITY_TYPE,
	SCOL_ENTITY_ID,
	SCOL_POSITION,
	SCOL_SEQ_NO,
	SCOL_STATE,
	SCOL_STATE_LENGTH,
	SNAPSHOT_PAGE_COLUMNS
};

/*
 * Refuses a snapshot checkpoint at or above the store's feed horizon: every
 * change read was below it, so the store is not the one the checkpoint was
 * made with (a database restored from a backup); going on would skip every
 * change up to the checkpoint.
 */
static Outcome
check_checkpoint(Relay *r)
{
	char	   *text = store_query_value(r->store.conn, "reading the feed horizon", HORIZON_SQL,
										 0, NULL);
	int64_t		horizon;

	if (text == NULL)
		return OUTCOME_RETRY;
	if (strcmp(text, "unchecked") == 0)
	{
		fprintf(stderr, PROGRAM_NAME ": no EXECUTE on eventsourced.feed_horizon(): the snapshot"
				" checkpoint is not checked against the store\n");
		free(text);
		return OUTCOME_OK;
	}
	horizon = strtoll(text, NULL, 10);
	free(text);
	if (r->snapshot_checkpoint < horizon)
		return OUTCOME_OK;
	fprintf(stderr, PROGRAM_NAME ": snapshot checkpoint \"%s\" is at change %lld, but the store's"
			" feed horizon is %lld (was the database restored from a backup?); refusing to go on:"
			" purge the snapshots_* buckets and set eventsourced_nats.relays.snapshot_change to 0\n",
			r->opt.name, (long long) r->snapshot_checkpoint, (long long) horizon);
	return OUTCOME_FATAL;
}

/*
 * Checks that the store has snapshot changes (extension 0.5.0) and loads
 * the snapshot checkpoint (refused above the feed horizon).  A store
 * without them is a refusal (exit).
 */
Outcome
snapshots_connect(Relay *r)
{
	const char *params[] = {r->opt.name};
	char	   *has = store_query_value(r->store.conn, "looking for snapshot_changes",
										HAS_CHANGES_SQL, 0, NULL);
	char	   *change;

	if (has == NULL)
		return OUTCOME_RETRY;
	if (strcmp(has, "t") != 0)
	{
		fprintf(stderr, PROGRAM_NAME ": --snapshots needs eventsourced.snapshot_changes()"
				" (extension version 0.5.0); run ALTER EXTENSION eventsourced UPDATE\n");
		free(has);
		return OUTCOME_FATAL;
	}
	free(has);
	change = store_query_value(r->store.conn, "loading the snapshot checkpoint", LOAD_SQL, 1,
							   params);
	if (change == NULL)
		return OUTCOME_RETRY;
	r->snapshot_checkpoint = strtoll(change, NULL, 10);
	free(change);
	return check_checkpoint(r);
}

/* Whether every row's change (int8, never NULL) can be read. */
static bool
changes_readable(const PGresult *res)
{
	for (int row = 0; row < PQntuples(res); row++)
		if (PQgetlength(res, row, SCOL_CHANGE) != INT8_BYTES ||
			PQgetlength(res, row, SCOL_SEQ_NO) != INT8_BYTES ||
			(!PQgetisnull(res, row, SCOL_POSITION) &&
			 PQgetlength(res, row, SCOL_POSITION) != INT8_BYTES))
			return false;
	return true;
}

/* Reads the next page of snapshot changes (binary results); NULL on failure. */
static PGresult *
read_page(Relay *r)
{
	char		after[NUMBER_TEXT_LEN];
	char		count[NUMBER_TEXT_LEN];
	char		max_state[NUMBER_TEXT_LEN];
	const char *params[] = {after, count, max_state};
	PGresult   *res;

	snprintf(after, sizeof(after), "%lld", (long long) r->snapshot_checkpoint);
	snprintf(count, sizeof(count), "%d", SNAPSHOT_BATCH);
	snprintf(max_state, sizeof(max_state), "%lld", (long long) r->stream.max_payload);
	res = store_query(r->store.conn, "reading snapshot changes", PAGE_SQL, 3, params, 1);
	if (res && (PQnfields(res) != SNAPSHOT_PAGE_COLUMNS || !changes_readable(res)))
	{
		fprintf(stderr, PROGRAM_NAME ": the snapshot page is not what the relay reads (%d columns)\n",
				PQnfields(res));
		PQclear(res);
		return NULL;
	}
	return res;
}

/*
 * The position of the event a row's snapshot covers: from the page, or
 * when the page's join did not see it, read again.  The join runs with the
 * statement's snapshot, taken before snapshot_changes() takes its own, so
 * a snapshot and its event committed in between come without the event;
 * a new statement sees it.  0: the event is gone; -1: the query failed.
 */
static int64_t
covered_position(Relay *r, const PGresult *page, int row)
{
	char		seq_no[NUMBER_TEXT_LEN];
	const char *params[] = {PQgetvalue(page, row, SCOL_ENTITY_TYPE),
	PQgetvalue(page, row, SCOL_ENTITY_ID), seq_no};
	PGresult   *res;
	int64_t		position;

	if (!PQgetisnull(page, row, SCOL_POSITION))
		return read_int64(PQgetvalue(page, row, SCOL_POSITION));
	snprintf(seq_no, sizeof(seq_no), "%lld",
			 (long long) read_int64(PQgetvalue(page, row, SCOL_SEQ_NO)));
	res = store_query(r->store.conn, "reading a snapshot's event", POSITION_SQL, 3, params, 0);
	if (res == NULL)
		return -1;
	position = PQntuples(res) == 1 ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : 0;
	PQclear(res);
	return position;
}

/*
 * Mirrors one snapshot change.  *wait is set when the event it covers is
 * not acknowledged in the stream yet (the page stops there).  A snapshot
 * that cannot be mirrored for good (its event gone from the store or the
 * stream, or too large for NATS) is skipped with a message.
 */
static Outcome
mirror(Relay *r, const PGresult *page, int row, bool *wait)
{
	int64_t		change = read_int64(PQgetvalue(page, row, SCOL_CHANGE));
	int64_t		position;
	uint64_t	stream_seq = 0;
	char	   *subject;
	Outcome		outcome;

	*wait = false;
	if (!follows_type(&r->opt, PQgetvalue(page, row, SCOL_ENTITY_TYPE)))
		return OUTCOME_OK;
	if (PQgetlength(page, row, SCOL_STATE_LENGTH) != INT8_BYTES)
	{
		fprintf(stderr, PROGRAM_NAME ": skipping snapshot change %lld: it has no state\n",
				(long long) change);
		return OUTCOME_OK;
	}
	position = covered_position(r, page, row);
	if (position < 0)
		return OUTCOME_RETRY;
	if (position == 0)
	{
		fprintf(stderr, PROGRAM_NAME ": skipping snapshot change %lld: the event it covers"
				" is not in the store\n", (long long) change);
		return OUTCOME_OK;
	}
	if (position > r->store.checkpoint)
	{
		*wait = true;
		return OUTCOME_OK;
	}
	subject = entity_subject(r->opt.stream, PQgetvalue(page, row, SCOL_ENTITY_TYPE),
							 PQgetlength(page, row, SCOL_ENTITY_TYPE),
							 PQgetvalue(page, row, SCOL_ENTITY_ID),
							 PQgetlength(page, row, SCOL_ENTITY_ID));
	outcome = locate_event(r, subject, position, &stream_seq);
	free(subject);
	if (outcome != OUTCOME_OK)
		return outcome;
	if (stream_seq == 0)
	{
		fprintf(stderr, PROGRAM_NAME ": skipping snapshot change %lld: stream \"%s\" does not"
				" hold the event at position %lld it covers\n", (long long) change,
				r->opt.stream, (long long) position);
		return OUTCOME_OK;
	}
	return kv_put_snapshot(r, PQgetvalue(page, row, SCOL_ENTITY_TYPE),
						   PQgetlength(page, row, SCOL_ENTITY_TYPE),
						   PQgetvalue(page, row, SCOL_ENTITY_ID),
						   PQgetlength(page, row, SCOL_ENTITY_ID), stream_seq,
						   PQgetisnull(page, row, SCOL_STATE) ? NULL :
						   PQgetvalue(page, row, SCOL_STATE),
						   (size_t) read_int64(PQgetvalue(page, row, SCOL_STATE_LENGTH)), change);
}

/* Moves the snapshot checkpoint; only after the puts up to it were acknowledged. */
static bool
save_checkpoint(Relay *r, int64_t change)
{
	char		text[NUMBER_TEXT_LEN];
	const char *params[] = {r->opt.name, text};

	if (change <= r->snapshot_checkpoint)
		return true;
	snprintf(text, sizeof(text), "%lld", (long long) change);
	if (!store_run(r->store.conn, "saving the snapshot checkpoint", SAVE_SQL, 2, params))
		return false;
	r->snapshot_checkpoint = change;
	return true;
}

/*
 * Mirrors the next page of snapshot changes, in change order, up to the
 * first whose event is not in the stream yet.  *more: a full page went
 * through (read again without waiting).
 */
Outcome
snapshots_step(Relay *r, bool *more)
{
	PGresult   *page = read_page(r);
	int			rows;
	int64_t		done = r->snapshot_checkpoint;
	Outcome		outcome = OUTCOME_OK;
	bool		wait = false;

	*more = false;
	if (page == NULL)
		return OUTCOME_RETRY;
	rows = PQntuples(page);
	for (int row = 0; row < rows && outcome == OUTCOME_OK && !wait; row++)
	{
		outcome = mirror(r, page, row, &wait);
		if (outcome == OUTCOME_OK && !wait)
			done = read_int64(PQgetvalue(page, row, SCOL_CHANGE));
	}
	PQclear(page);
	if (outcome == OUTCOME_FATAL)
		return outcome;
	if (!save_checkpoint(r, done))
		return OUTCOME_RETRY;
	if (outcome == OUTCOME_OK && rows > 0)
		verbose(r, "snapshots: %d changes, checkpoint %lld", rows, (long long) done);
	/* a page of large states ends early (64 MB): any rows, read on */
	*more = outcome == OUTCOME_OK && !wait && rows > 0;
	return outcome;
}
