/*
 * model.c
 *		Model-based test of the event store: several clients (threads, one
 *		connection each) run random operations against three entity types
 *		and record every outcome in an in-memory model; at the end the store
 *		must equal the model.
 *
 * The operations: appends with right, stale and wrong expectations, batches
 * with and without event ids, exact and re-expected retries of earlier
 * batches, appends rolled back (whole transaction or savepoint), commands
 * (accepted, rejected, invalid), hand-saved (forged) snapshots, TRUNCATE of
 * the cached states, purges of events by README's procedure, reads by
 * entity, a no-skip feed reader per client, and a projection run by every
 * client (and by the background worker, when it serves the database).
 *
 * Every client's operations come from its own random generator, seeded from
 * --seed and its number, so a seed replays the same operations; with
 * several clients the interleaving is the scheduler's, so only
 * --clients 1 replays a run exactly.  The checks do not depend on the
 * interleaving: an append that succeeds must own its seq_nos (no seq_no is
 * ever handed out twice), a conflict must name an actual seq_no other than
 * the expected one, an append expecting less than a seq_no already known
 * must conflict, a retry must return the first attempt's seq_no and write
 * nothing, and the final store (events, last seq_nos, command states,
 * snapshots, the projection's table, what each feed reader saw) must equal
 * the model exactly.
 *
 * Usage: model [--seed N] [--clients N] [--ops N | --seconds N]
 *              [--entities N] [--memory-check] [--verbose]
 * The connection comes from the PG* environment variables; the database
 * must have the extension and be otherwise unused by these entity types.
 * Prints "model: ..." lines and exits 0 when the store equals the model.
 */
#include <libpq-fe.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_CLIENTS		64
#define MAX_ENTITIES	64
#define MAX_BATCH		5
#define MAX_RETRIES		64		/* batches with ids a client may retry */

enum kind
{
	K_LOG,						/* appends, retries, reads, the feed, the projection */
	K_CNT,						/* commands and direct appends, forged snapshots */
	K_PUR,						/* appends, purges, hand-saved snapshots */
	N_KINDS
};

static const char *kind_suffix[N_KINDS] = {"log", "cnt", "pur"};

/* One seq_no of one entity in the model */
typedef struct
{
	int			state;			/* 0 unknown, 1 written, 2 purged */
	char		type[16];
	long		n;
	char		id[37];			/* event_id, "" when none */
} MEvent;

/* A state that handle_command reported after writing seq_no */
typedef struct
{
	long		seq_no;
	long		value;
} MState;

typedef struct
{
	MEvent	   *ev;				/* indexed by seq_no */
	long		cap;
	long		known_last;		/* highest seq_no known to be written */
	MState	   *states;
	int			nstates;
	int			capstates;
	long		snap_seq;		/* highest hand-saved snapshot of a K_PUR entity */
	long		snap_value[8];	/* values saved at snap_seq (concurrent saves) */
	int			nsnap;
} MEntity;

/* A batch that was appended with ids, to retry */
typedef struct
{
	int			entity;
	long		expected;
	long		last;
	int			n;
	long		op;				/* the first attempt's op number (in its payloads) */
	char		type[MAX_BATCH][16];
	long		val[MAX_BATCH];
	char		id[MAX_BATCH][37];
} Retry;

/* One event a feed reader received */
typedef struct
{
	long		position;
	int			entity;
	long		seq_no;
} Seen;

typedef struct
{
	int			no;
	uint64_t	rng;
	PGconn	   *conn;
	long		ops_done;
	long		counts[32];
	Retry		retries[MAX_RETRIES];
	int			nretries;
	long		feed_pos;
	Seen	   *seen;
	long		nseen;
	long		capseen;
	long		mem_warm;
	long		mem_end;
} Client;

static struct
{
	unsigned long seed;
	int			clients;
	long		ops;
	int			seconds;
	int			entities;
	bool		memory_check;
	bool		verbose;
} opt = {1, 4, 1500, 0, 8, false, false};

static MEntity model[N_KINDS][MAX_ENTITIES];
static pthread_mutex_t model_lock = PTHREAD_MUTEX_INITIALIZER;
static char prefix[32];
static volatile int failures;
static time_t deadline;

/* Counters printed at the end: what the run exercised */
enum
{
	C_APPEND_OK, C_CONFLICT, C_STALE_CONFLICT, C_BATCH, C_UNCHECKED, C_RETRY,
	C_ROLLBACK, C_CMD_OK, C_CMD_REJECT, C_FORGE, C_TRUNCATE, C_PURGE,
	C_SNAPSHOT, C_READ, C_FEED, C_PROJECT, N_COUNTS
};
static const char *count_name[N_COUNTS] = {
	"appends", "conflicts", "stale-conflicts", "batches", "unchecked", "retries",
	"rollbacks", "commands", "rejections", "forged-snapshots", "truncates",
	"purges", "snapshots", "reads", "feed-reads", "projection-runs"
};

/* Report a failed check (the run goes on, the exit status says it) */
static void
fail(Client *c, const char *fmt,...)
{
	va_list		ap;

	__sync_fetch_and_add(&failures, 1);
	fprintf(stdout, "model: FAIL (seed %lu, client %d, op %ld): ", opt.seed,
			c ? c->no : -1, c ? c->ops_done : -1L);
	va_start(ap, fmt);
	vfprintf(stdout, fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
	fflush(stdout);
}

/* splitmix64: small, fast, and the same on every platform */
static uint64_t
next_rand(Client *c)
{
	uint64_t	z = (c->rng += 0x9E3779B97F4A7C15ULL);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	return z ^ (z >> 31);
}

/* A random number in [0, n) */
static long
rnd(Client *c, long n)
{
	return (long) (next_rand(c) % (uint64_t) n);
}

/* A random event id (a version-4 UUID from the client's generator) */
static void
random_uuid(Client *c, char *out)
{
	uint64_t	a = next_rand(c),
				b = next_rand(c);

	snprintf(out, 37, "%08x-%04x-4%03x-8%03x-%012llx",
			 (unsigned) (a >> 32), (unsigned) (a >> 16) & 0xffff,
			 (unsigned) a & 0xfff, (unsigned) (b >> 48) & 0xfff,
			 (unsigned long long) (b & 0xffffffffffffULL));
}

static void
entity_type(int kind, char *out)
{
	snprintf(out, 64, "%s_%s", prefix, kind_suffix[kind]);
}

static void
entity_id(int e, char *out)
{
	snprintf(out, 32, "e%d", e);
}

/* Run SQL with text parameters (NULL: SQL NULL); without any, several statements */
static PGresult *
run(Client *c, const char *sql, int nparams, const char *const *params)
{
	if (nparams == 0)
		return PQexec(c->conn, sql);
	return PQexecParams(c->conn, sql, nparams, NULL, params, NULL, NULL, 0);
}

/* Run a statement that must succeed; false (and a failure) otherwise */
static bool
run_ok(Client *c, const char *sql, int nparams, const char *const *params)
{
	PGresult   *r = run(c, sql, nparams, params);
	ExecStatusType st = PQresultStatus(r);
	bool		ok = (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK);

	if (!ok)
		fail(c, "%s: %s", sql, PQresultErrorMessage(r));
	PQclear(r);
	return ok;
}

static const char *
sqlstate(PGresult *r)
{
	const char *s = PQresultErrorField(r, PG_DIAG_SQLSTATE);

	return s ? s : "";
}

/* The model's entity, locked by the caller */
static MEntity *
entity(int kind, int e)
{
	return &model[kind][e];
}

/* Make room for seq_no in an entity's event array */
static void
reserve(MEntity *m, long seq_no)
{
	if (seq_no < m->cap)
		return;
	long		cap = m->cap ? m->cap : 16;

	while (cap <= seq_no)
		cap *= 2;
	m->ev = realloc(m->ev, cap * sizeof(MEvent));
	memset(m->ev + m->cap, 0, (cap - m->cap) * sizeof(MEvent));
	m->cap = cap;
}

/* What the model knows as the entity's last seq_no now */
static long
known_last(int kind, int e)
{
	long		v;

	pthread_mutex_lock(&model_lock);
	v = entity(kind, e)->known_last;
	pthread_mutex_unlock(&model_lock);
	return v;
}

/*
 * Record events written at seq_nos first..first+n-1: each seq_no must be
 * unknown so far (an optimistic-concurrency store never hands one out twice).
 */
static void
record(Client *c, int kind, int e, long first, int n, char types[][16],
	   const long *vals, char ids[][37])
{
	pthread_mutex_lock(&model_lock);
	MEntity    *m = entity(kind, e);

	reserve(m, first + n);
	for (int i = 0; i < n; i++)
	{
		MEvent	   *ev = &m->ev[first + i];

		if (ev->state != 0)
			fail(c, "%s/e%d seq_no %ld written twice", kind_suffix[kind], e, first + i);
		ev->state = 1;
		snprintf(ev->type, sizeof(ev->type), "%s", types[i]);
		ev->n = vals[i];
		snprintf(ev->id, sizeof(ev->id), "%s", ids ? ids[i] : "");
	}
	if (first + n - 1 > m->known_last)
		m->known_last = first + n - 1;
	pthread_mutex_unlock(&model_lock);
}

/* The events argument of a batch append: an array literal of event_data */
static void
batch_sql(char *out, size_t size, int n, char types[][16], const long *vals,
		  char ids[][37], int client, long op)
{
	size_t		len = snprintf(out, size, "SELECT eventsourced.append($1, $2, $3::bigint, ARRAY[");

	for (int i = 0; i < n; i++)
		len += snprintf(out + len, size - len,
						"%seventsourced.event('%s', '{\"n\": %ld, \"c\": %d, \"o\": %ld}'%s%s%s)",
						i ? ", " : "", types[i], vals[i], client, op,
						ids && ids[i][0] ? ", NULL, '" : "", ids && ids[i][0] ? ids[i] : "",
						ids && ids[i][0] ? "'" : "");
	snprintf(out + len, size - len, "])");
}

/*
 * Append n events with the given expectation (-1: none); checks the outcome
 * against what the model knew before; returns the last seq_no, or 0 on a
 * conflict.
 */
static long
append_batch(Client *c, int kind, int e, long expected, int n, char types[][16],
			 const long *vals, char ids[][37])
{
	char		sql[4096],
				type[64],
				id[32],
				exp[32];
	const char *params[3] = {type, id, expected >= 0 ? exp : NULL};
	long		before = known_last(kind, e);
	PGresult   *r;
	long		last = 0;

	entity_type(kind, type);
	entity_id(e, id);
	snprintf(exp, sizeof(exp), "%ld", expected);
	batch_sql(sql, sizeof(sql), n, types, vals, ids, c->no, c->ops_done);
	r = run(c, sql, 3, params);
	if (PQresultStatus(r) == PGRES_TUPLES_OK)
	{
		last = atol(PQgetvalue(r, 0, 0));
		if (expected >= 0 && last != expected + n)
			fail(c, "append expecting %ld with %d events returned %ld", expected, n, last);
		else if (expected >= 0 && expected < before)
			fail(c, "append expecting %ld succeeded although seq_no %ld was known", expected, before);
		else
			record(c, kind, e, last - n + 1, n, types, vals, ids);
		c->counts[C_APPEND_OK]++;
	}
	else if (strcmp(sqlstate(r), "SC001") == 0 && expected >= 0)
	{
		const char *detail = PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL);
		const char *p = detail ? strstr(detail, "actual last seq_no ") : NULL;
		long		actual = p ? atol(p + strlen("actual last seq_no ")) : -1;

		if (p == NULL || actual == expected || actual < before)
			fail(c, "conflict expecting %ld (known %ld) says: %s", expected, before,
				 detail ? detail : "(no detail)");
		c->counts[expected < before ? C_STALE_CONFLICT : C_CONFLICT]++;
	}
	else
		fail(c, "append to %s/%s expecting %ld: %s", type, id, expected, PQresultErrorMessage(r));
	PQclear(r);
	return last;
}

/* Random events for a batch of kind; with ids when with_ids */
static int
random_events(Client *c, int kind, char types[][16], long *vals, char ids[][37], bool with_ids)
{
	int			n = 1 + (int) rnd(c, MAX_BATCH);

	for (int i = 0; i < n; i++)
	{
		if (kind == K_CNT)
			snprintf(types[i], 16, "Added");
		else
			snprintf(types[i], 16, "E%ld", rnd(c, 3));
		vals[i] = 1 + rnd(c, 9);
		if (ids)
		{
			ids[i][0] = '\0';
			if (with_ids && rnd(c, 4) != 0)
				random_uuid(c, ids[i]);
		}
	}
	return n;
}

/* An append with a fresh, stale, future or no expectation */
static void
op_append(Client *c, int kind)
{
	int			e = (int) rnd(c, opt.entities);
	char		types[MAX_BATCH][16];
	long		vals[MAX_BATCH];
	char		ids[MAX_BATCH][37];
	bool		with_ids = (kind == K_LOG && rnd(c, 2) == 0);
	int			n = random_events(c, kind, types, vals, ids, with_ids);
	long		known = known_last(kind, e);
	long		expected;
	long		how = rnd(c, 10);

	if (kind == K_CNT || how < 2)
	{
		expected = -1;
		c->counts[C_UNCHECKED]++;
	}
	else if (how < 3 && known > 0)
		expected = known - 1 - rnd(c, known);	/* stale: must conflict */
	else if (how < 4)
		expected = known + 1 + rnd(c, 3);	/* ahead: conflicts unless others caught up */
	else
		expected = known;
	if (n > 1)
		c->counts[C_BATCH]++;
	long		last = append_batch(c, kind, e, expected, n, types, vals, with_ids ? ids : NULL);

	/* remember a batch with ids, to retry it later */
	if (last > 0 && with_ids && c->nretries < MAX_RETRIES)
	{
		bool		any = false;

		for (int i = 0; i < n; i++)
			any |= (ids[i][0] != '\0');
		if (any)
		{
			Retry	   *rt = &c->retries[c->nretries++];

			rt->entity = e;
			rt->expected = expected;
			rt->last = last;
			rt->n = n;
			rt->op = c->ops_done;
			memcpy(rt->type, types, sizeof(types));
			memcpy(rt->val, vals, sizeof(vals));
			memcpy(rt->id, ids, sizeof(ids));
		}
	}
}

/*
 * Retry a batch appended earlier, exactly or with another expectation:
 * it must return the first attempt's last seq_no and write nothing.
 */
static void
op_retry(Client *c)
{
	char		sql[4096],
				type[64],
				id[32],
				exp[32];
	const char *params[3] = {type, id, exp};
	Retry	   *rt;
	PGresult   *r;

	if (c->nretries == 0)
		return;
	rt = &c->retries[rnd(c, c->nretries)];
	entity_type(K_LOG, type);
	entity_id(rt->entity, id);
	if (rt->expected < 0 || rnd(c, 2) == 0)
		snprintf(exp, sizeof(exp), "%ld", known_last(K_LOG, rt->entity));
	else
		snprintf(exp, sizeof(exp), "%ld", rt->expected);
	batch_sql(sql, sizeof(sql), rt->n, rt->type, rt->val, rt->id, c->no, rt->op);
	r = run(c, sql, 3, params);
	if (PQresultStatus(r) != PGRES_TUPLES_OK)
		fail(c, "retry of %s/%s (first last seq_no %ld, expecting %s): %s", type, id,
			 rt->last, exp, PQresultErrorMessage(r));
	else if (atol(PQgetvalue(r, 0, 0)) != rt->last)
		fail(c, "retry of %s/%s returned %s, the first attempt %ld", type, id,
			 PQgetvalue(r, 0, 0), rt->last);
	PQclear(r);
	c->counts[C_RETRY]++;
}

/* An append rolled back, by ROLLBACK or ROLLBACK TO SAVEPOINT: nothing stays */
static void
op_rollback(Client *c)
{
	int			e = (int) rnd(c, opt.entities);
	bool		savepoint = rnd(c, 2);
	char		type[64],
				id[32];
	const char *params[2] = {type, id};

	entity_type(K_LOG, type);
	entity_id(e, id);
	if (!run_ok(c, savepoint ? "BEGIN; SAVEPOINT s" : "BEGIN", 0, NULL))
		return;
	run_ok(c, "SELECT eventsourced.append($1, $2, NULL, 'Gone', '{\"n\": 0}')", 2, params);
	run_ok(c, savepoint ? "ROLLBACK TO SAVEPOINT s" : "ROLLBACK", 0, NULL);
	if (savepoint)
		run_ok(c, "COMMIT", 0, NULL);
	c->counts[C_ROLLBACK]++;
}

/* A command to a K_CNT entity: Add or Take, with valid or invalid arguments */
static void
op_command(Client *c)
{
	int			e = (int) rnd(c, opt.entities);
	char		type[64],
				id[32],
				args[64];
	const char *cmd = rnd(c, 3) ? "Add" : "Take";
	long		n = 1 + rnd(c, 9);
	bool		invalid = (rnd(c, 10) == 0);
	const char *params[4] = {type, id, cmd, args};
	PGresult   *r;

	entity_type(K_CNT, type);
	entity_id(e, id);
	if (invalid)
		snprintf(args, sizeof(args), rnd(c, 2) ? "{}" : "{\"n\": %ld}", -n);
	else
		snprintf(args, sizeof(args), "{\"n\": %ld}", n);
	r = run(c, "SELECT accepted, seq_no, (state->>'value')::bigint, rejection IS NOT NULL "
			"FROM eventsourced.handle_command($1, $2, $3, $4::jsonb)", 4, params);
	if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
		fail(c, "handle_command(%s, %s, %s, %s): %s", type, id, cmd, args, PQresultErrorMessage(r));
	else if (strcmp(PQgetvalue(r, 0, 0), "t") == 0)
	{
		long		seq_no = atol(PQgetvalue(r, 0, 1));
		char		types[1][16];

		if (invalid)
			fail(c, "command %s %s with invalid arguments %s was accepted", cmd, id, args);
		snprintf(types[0], 16, "%s", strcmp(cmd, "Add") == 0 ? "Added" : "Taken");
		record(c, K_CNT, e, seq_no, 1, types, &n, NULL);
		pthread_mutex_lock(&model_lock);
		{
			MEntity    *m = entity(K_CNT, e);

			if (m->nstates == m->capstates)
			{
				m->capstates = m->capstates ? 2 * m->capstates : 16;
				m->states = realloc(m->states, m->capstates * sizeof(MState));
			}
			m->states[m->nstates++] = (MState) {seq_no, atol(PQgetvalue(r, 0, 2))};
		}
		pthread_mutex_unlock(&model_lock);
		c->counts[C_CMD_OK]++;
	}
	else
	{
		if (strcmp(PQgetvalue(r, 0, 3), "t") != 0)
			fail(c, "command %s %s rejected without a rejection", cmd, id);
		if (strcmp(cmd, "Add") == 0 && !invalid)
			fail(c, "Add %s %s was rejected", id, args);
		c->counts[C_CMD_REJECT]++;
	}
	PQclear(r);
}

/* A forged snapshot of a K_CNT entity, saved by hand: commands must ignore it */
static void
op_forge(Client *c)
{
	int			e = (int) rnd(c, opt.entities);
	long		known = known_last(K_CNT, e);
	char		type[64],
				id[32],
				seq[32];
	const char *params[3] = {type, id, seq};

	if (known == 0)
		return;
	entity_type(K_CNT, type);
	entity_id(e, id);
	snprintf(seq, sizeof(seq), "%ld", 1 + rnd(c, known));
	run_ok(c, "SELECT eventsourced.save_snapshot($1, $2, $3::bigint, '{\"value\": 1000000}')", 3, params);
	c->counts[C_FORGE]++;
}

/* TRUNCATE of the cached states (README: allowed at any time) */
static void
op_truncate(Client *c)
{
	run_ok(c, "TRUNCATE eventsourced.entity_states", 0, NULL);
	c->counts[C_TRUNCATE]++;
}

/* README's purge of one event that is not an entity's last */
static void
op_purge(Client *c)
{
	int			e = (int) rnd(c, opt.entities);
	long		known = known_last(K_PUR, e);
	long		seq_no;
	bool		written;
	char		type[64],
				id[32],
				seq[32];
	const char *params[3] = {type, id, seq};
	PGresult   *r;

	if (known < 2)
		return;
	seq_no = 1 + rnd(c, known - 1);
	pthread_mutex_lock(&model_lock);
	written = (entity(K_PUR, e)->ev[seq_no].state == 1);
	pthread_mutex_unlock(&model_lock);
	if (!written)
		return;					/* being recorded by its writer, or purged */
	entity_type(K_PUR, type);
	entity_id(e, id);
	snprintf(seq, sizeof(seq), "%ld", seq_no);
	if (!run_ok(c, "BEGIN; ALTER TABLE eventsourced.events DISABLE TRIGGER events_immutable", 0, NULL))
		return;
	r = run(c, "DELETE FROM eventsourced.events WHERE entity_type = $1 AND entity_id = $2 "
			"AND seq_no = $3::bigint", 3, params);
	if (PQresultStatus(r) != PGRES_COMMAND_OK)
		fail(c, "purge: %s", PQresultErrorMessage(r));
	PQclear(r);
	if (!run_ok(c, "ALTER TABLE eventsourced.events ENABLE ALWAYS TRIGGER events_immutable; COMMIT", 0, NULL))
		return;
	pthread_mutex_lock(&model_lock);
	entity(K_PUR, e)->ev[seq_no].state = 2;
	pthread_mutex_unlock(&model_lock);
	c->counts[C_PURGE]++;
}

/* A hand-saved snapshot of a K_PUR entity; the newest seq_no wins */
static void
op_snapshot(Client *c)
{
	int			e = (int) rnd(c, opt.entities);
	long		known = known_last(K_PUR, e);
	long		seq_no,
				value = rnd(c, 1000);
	char		type[64],
				id[32],
				seq[32],
				state[64];
	const char *params[4] = {type, id, seq, state};

	if (known == 0)
		return;
	seq_no = 1 + rnd(c, known);
	entity_type(K_PUR, type);
	entity_id(e, id);
	snprintf(seq, sizeof(seq), "%ld", seq_no);
	snprintf(state, sizeof(state), "{\"value\": %ld}", value);
	if (!run_ok(c, "SELECT eventsourced.save_snapshot($1, $2, $3::bigint, $4::jsonb)", 4, params))
		return;
	pthread_mutex_lock(&model_lock);
	{
		MEntity    *m = entity(K_PUR, e);

		if (seq_no > m->snap_seq)
		{
			m->snap_seq = seq_no;
			m->nsnap = 0;
		}
		if (seq_no == m->snap_seq)
			m->snap_value[m->nsnap++ % 8] = value;	/* the last saves at it */
	}
	pthread_mutex_unlock(&model_lock);
	c->counts[C_SNAPSHOT]++;
}

/* Compare an entity's events with the model; complete: nothing unknown allowed */
static void
check_entity(Client *c, int kind, int e, bool complete)
{
	char		type[64],
				id[32];
	const char *params[2] = {type, id};
	PGresult   *r;
	MEntity		snap;
	MEvent	   *ev;

	entity_type(kind, type);
	entity_id(e, id);
	pthread_mutex_lock(&model_lock);
	snap = *entity(kind, e);
	ev = malloc((snap.cap + 1) * sizeof(MEvent));
	if (snap.cap)
		memcpy(ev, snap.ev, snap.cap * sizeof(MEvent));
	pthread_mutex_unlock(&model_lock);

	r = run(c, "SELECT seq_no, event_type, (payload->>'n')::bigint, coalesce(event_id::text, '') "
			"FROM eventsourced.events_by_id($1, $2)", 2, params);
	if (PQresultStatus(r) != PGRES_TUPLES_OK)
		fail(c, "events_by_id(%s, %s): %s", type, id, PQresultErrorMessage(r));
	else
	{
		long		row = 0;

		for (long s = 1; s < snap.cap; s++)
		{
			bool		have = (row < PQntuples(r) && atol(PQgetvalue(r, row, 0)) == s);

			if (ev[s].state == 1 && !have)
				fail(c, "%s/%s seq_no %ld is missing", type, id, s);
			else if (ev[s].state == 2 && have)
				fail(c, "%s/%s seq_no %ld was purged but is read", type, id, s);
			else if (ev[s].state == 0 && have && complete)
				fail(c, "%s/%s seq_no %ld is in the store but no client wrote it", type, id, s);
			else if (ev[s].state == 1 &&
					 (strcmp(PQgetvalue(r, row, 1), ev[s].type) != 0 ||
					  atol(PQgetvalue(r, row, 2)) != ev[s].n ||
					  strcmp(PQgetvalue(r, row, 3), ev[s].id) != 0))
				fail(c, "%s/%s seq_no %ld is %s %s %s, the model has %s %ld %s", type, id, s,
					 PQgetvalue(r, row, 1), PQgetvalue(r, row, 2), PQgetvalue(r, row, 3),
					 ev[s].type, ev[s].n, ev[s].id);
			if (have)
				row++;
		}
		if (complete && row != PQntuples(r))
			fail(c, "%s/%s has %d events beyond the model's", type, id, PQntuples(r) - (int) row);
	}
	PQclear(r);
	free(ev);
	c->counts[C_READ]++;
}

/* Read the next page of the log type's feed; every event once, in order */
static long
op_feed(Client *c)
{
	char		type[64],
				after[32];
	const char *params[2] = {type, after};
	PGresult   *r;
	long		got = 0;

	entity_type(K_LOG, type);
	snprintf(after, sizeof(after), "%ld", c->feed_pos);
	r = run(c, "SELECT position, entity_id, seq_no FROM eventsourced.events_by_type($1, $2::bigint, 200)",
			2, params);
	if (PQresultStatus(r) != PGRES_TUPLES_OK)
		fail(c, "events_by_type: %s", PQresultErrorMessage(r));
	else
		for (int i = 0; i < PQntuples(r); i++)
		{
			long		pos = atol(PQgetvalue(r, i, 0));

			if (pos <= c->feed_pos)
			{
				fail(c, "feed position %ld after %ld", pos, c->feed_pos);
				continue;		/* not progress: the final read-to-the-end stops */
			}
			c->feed_pos = pos;
			if (c->nseen == c->capseen)
			{
				c->capseen = c->capseen ? 2 * c->capseen : 256;
				c->seen = realloc(c->seen, c->capseen * sizeof(Seen));
			}
			c->seen[c->nseen++] = (Seen) {pos, atoi(PQgetvalue(r, i, 1) + 1), atol(PQgetvalue(r, i, 2))};
			got++;
		}
	PQclear(r);
	c->counts[C_FEED]++;
	return got;
}

/* Run the projection a little (concurrent runs serialize) */
static long
op_project(Client *c, const char *max)
{
	char		name[64];
	const char *params[2] = {name, max};
	PGresult   *r;
	long		n = 0;

	snprintf(name, sizeof(name), "%s_proj", prefix);
	r = run(c, "SELECT eventsourced.run_projection($1, $2::integer)", 2, params);
	if (PQresultStatus(r) != PGRES_TUPLES_OK)
		fail(c, "run_projection: %s", PQresultErrorMessage(r));
	else
		n = atol(PQgetvalue(r, 0, 0));
	PQclear(r);
	c->counts[C_PROJECT]++;
	return n;
}

/* This backend's memory, all contexts */
static long
backend_memory(Client *c)
{
	PGresult   *r = run(c, "SELECT sum(total_bytes) FROM pg_backend_memory_contexts", 0, NULL);
	long		v = PQresultStatus(r) == PGRES_TUPLES_OK ? atol(PQgetvalue(r, 0, 0)) : -1;

	PQclear(r);
	return v;
}

/* One random operation */
static void
one_op(Client *c)
{
	long		x = rnd(c, 100);

	if (x < 30)
		op_append(c, K_LOG);
	else if (x < 38)
		op_append(c, K_PUR);
	else if (x < 43)
		op_append(c, K_CNT);
	else if (x < 60)
		op_command(c);
	else if (x < 65)
		op_retry(c);
	else if (x < 68)
		op_rollback(c);
	else if (x < 70)
		op_forge(c);
	else if (x < 71)
		op_truncate(c);
	else if (x < 73)
		op_purge(c);
	else if (x < 76)
		op_snapshot(c);
	else if (x < 84)
		check_entity(c, (int) rnd(c, 2) ? K_LOG : K_CNT, (int) rnd(c, opt.entities), false);
	else if (x < 94)
		op_feed(c);
	else
		op_project(c, "20");
}

/* A client: its operations, until --ops or --seconds */
static void *
client_main(void *arg)
{
	Client	   *c = arg;
	long		warm = opt.seconds ? 0 : opt.ops / 4;
	time_t		warm_at = time(NULL) + opt.seconds / 4;

	for (c->ops_done = 0;; c->ops_done++)
	{
		if (opt.seconds ? time(NULL) >= deadline : c->ops_done >= opt.ops)
			break;
		if (opt.memory_check && c->mem_warm == 0 &&
			(opt.seconds ? time(NULL) >= warm_at : c->ops_done >= warm))
			c->mem_warm = backend_memory(c);
		one_op(c);
		if (PQstatus(c->conn) != CONNECTION_OK)
		{
			fail(c, "connection lost: %s", PQerrorMessage(c->conn));
			break;
		}
	}
	if (opt.memory_check)
		c->mem_end = backend_memory(c);
	return NULL;
}

/* The entity types, commands and projection of this run */
static bool
set_up(Client *c)
{
	char		sql[8192];

	snprintf(sql, sizeof(sql),
			 "SET client_min_messages = warning;"
			 "CREATE TABLE %1$s_proj_t (id text PRIMARY KEY, events bigint NOT NULL, total bigint NOT NULL);"
			 "CREATE FUNCTION %1$s_fold(state jsonb, event_type text, payload jsonb) RETURNS jsonb "
			 "LANGUAGE plpgsql AS $$ BEGIN RETURN jsonb_build_object('value', (state->>'value')::bigint "
			 "+ CASE event_type WHEN 'Taken' THEN -1 ELSE 1 END * (payload->>'n')::bigint); END $$;"
			 "CREATE FUNCTION %1$s_add(entity_id text, state jsonb, args jsonb) RETURNS eventsourced.decision "
			 "LANGUAGE plpgsql AS $$ BEGIN "
			 "IF jsonb_typeof(args->'n') IS DISTINCT FROM 'number' OR (args->>'n')::bigint <= 0 THEN "
			 "RETURN eventsourced.reject('{\"error\": \"n must be a positive number\"}'); END IF; "
			 "RETURN eventsourced.emit('Added', jsonb_build_object('n', args->'n')); END $$;"
			 "CREATE FUNCTION %1$s_take(entity_id text, state jsonb, args jsonb) RETURNS eventsourced.decision "
			 "LANGUAGE plpgsql AS $$ BEGIN "
			 "IF jsonb_typeof(args->'n') IS DISTINCT FROM 'number' OR (args->>'n')::bigint <= 0 THEN "
			 "RETURN eventsourced.reject('{\"error\": \"n must be a positive number\"}'); END IF; "
			 "IF (state->>'value')::bigint < (args->>'n')::bigint THEN "
			 "RETURN eventsourced.reject('{\"error\": \"insufficient\"}'); END IF; "
			 "RETURN eventsourced.emit('Taken', jsonb_build_object('n', args->'n')); END $$;"
			 "CREATE FUNCTION %1$s_get(entity_id text, state jsonb, args jsonb) RETURNS eventsourced.decision "
			 "LANGUAGE sql AS $$ SELECT eventsourced.reply(state) $$;"
			 "CREATE FUNCTION %1$s_apply(entity_id text, seq_no bigint, event_type text, payload jsonb, pos bigint) "
			 "RETURNS void LANGUAGE plpgsql AS $$ BEGIN "
			 "INSERT INTO public.%1$s_proj_t VALUES (entity_id, 1, (payload->>'n')::bigint) "
			 "ON CONFLICT (id) DO UPDATE SET events = %1$s_proj_t.events + 1, "
			 "total = %1$s_proj_t.total + excluded.total; END $$;"
			 "SELECT eventsourced.register_entity('%1$s_cnt', '%1$s_fold(jsonb,text,jsonb)', '{\"value\": 0}', 5);"
			 "SELECT eventsourced.register_command('%1$s_cnt', 'Add', '%1$s_add(text,jsonb,jsonb)');"
			 "SELECT eventsourced.register_command('%1$s_cnt', 'Take', '%1$s_take(text,jsonb,jsonb)');"
			 "SELECT eventsourced.register_command('%1$s_cnt', 'Get', '%1$s_get(text,jsonb,jsonb)');"
			 "SELECT eventsourced.create_projection('%1$s_proj', '%1$s_log', "
			 "'%1$s_apply(text,bigint,text,jsonb,bigint)');",
			 prefix);
	return run_ok(c, sql, 0, NULL);
}

/* Final checks: the store equals the model */
static void
check_final(Client *c, Client *clients)
{
	char		type[64],
				id[32];
	const char *params[3] = {type, id, "Get"};

	for (int k = 0; k < N_KINDS; k++)
		for (int e = 0; e < opt.entities; e++)
		{
			MEntity    *m = entity(k, e);
			PGresult   *r;

			check_entity(c, k, e, true);
			entity_type(k, type);
			entity_id(e, id);
			r = run(c, "SELECT coalesce(eventsourced.last_seq_no($1, $2), 0)", 2, params);
			if (PQresultStatus(r) != PGRES_TUPLES_OK || atol(PQgetvalue(r, 0, 0)) != m->known_last)
				fail(c, "last_seq_no(%s, %s) is %s, the model's %ld", type, id,
					 PQresultStatus(r) == PGRES_TUPLES_OK ? PQgetvalue(r, 0, 0) : PQresultErrorMessage(r),
					 m->known_last);
			PQclear(r);
		}

	/* every state a command reported is the fold of the events up to it */
	for (int e = 0; e < opt.entities; e++)
	{
		MEntity    *m = entity(K_CNT, e);
		long	   *sum = calloc(m->known_last + 2, sizeof(long));
		PGresult   *r;

		for (long s = 1; s <= m->known_last; s++)
			sum[s] = sum[s - 1] + (m->ev[s].state == 1 ?
								   (strcmp(m->ev[s].type, "Taken") == 0 ? -m->ev[s].n : m->ev[s].n) : 0);
		for (int i = 0; i < m->nstates; i++)
			if (m->states[i].value != sum[m->states[i].seq_no])
				fail(c, "cnt/e%d: a command reported value %ld at seq_no %ld; the events sum to %ld",
					 e, m->states[i].value, m->states[i].seq_no, sum[m->states[i].seq_no]);
		entity_type(K_CNT, type);
		entity_id(e, id);
		r = run(c, "SELECT (reply->>'value')::bigint, seq_no FROM eventsourced.handle_command($1, $2, $3)", 3, params);
		if (PQresultStatus(r) != PGRES_TUPLES_OK ||
			atol(PQgetvalue(r, 0, 0)) != sum[m->known_last] || atol(PQgetvalue(r, 0, 1)) != m->known_last)
			fail(c, "cnt/e%d: Get says %s at %s, the model %ld at %ld", e,
				 PQresultStatus(r) == PGRES_TUPLES_OK ? PQgetvalue(r, 0, 0) : PQresultErrorMessage(r),
				 PQresultStatus(r) == PGRES_TUPLES_OK ? PQgetvalue(r, 0, 1) : "", sum[m->known_last],
				 m->known_last);
		PQclear(r);
		free(sum);
	}

	/* hand-saved snapshots: the newest seq_no, with a value saved at it */
	for (int e = 0; e < opt.entities; e++)
	{
		MEntity    *m = entity(K_PUR, e);
		PGresult   *r;
		bool		match = false;

		entity_type(K_PUR, type);
		entity_id(e, id);
		r = run(c, "SELECT seq_no, (state->>'value')::bigint FROM eventsourced.load_snapshot($1, $2)", 2, params);
		if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != (m->snap_seq > 0))
			fail(c, "load_snapshot(%s, %s): %s", type, id, PQresultErrorMessage(r));
		else if (m->snap_seq > 0)
		{
			for (int i = 0; i < m->nsnap && i < 8; i++)
				match |= (atol(PQgetvalue(r, 0, 1)) == m->snap_value[i]);
			if (atol(PQgetvalue(r, 0, 0)) != m->snap_seq || !match)
				fail(c, "load_snapshot(%s, %s) is %s at %s, the model's newest at %ld", type, id,
					 PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 0), m->snap_seq);
		}
		PQclear(r);
	}

	/* each feed reader, read to the end, saw every event of the type once */
	long		total = 0;

	for (int e = 0; e < opt.entities; e++)
		for (long s = 1; s <= entity(K_LOG, e)->known_last; s++)
			total += (entity(K_LOG, e)->ev[s].state == 1);
	for (int i = 0; i < opt.clients; i++)
	{
		Client	   *r = &clients[i];
		char	   *seen = NULL;
		long		cap = 0;

		while (op_feed(r) > 0)
			;
		for (int e = 0; e < opt.entities; e++)
			cap += entity(K_LOG, e)->known_last + 1;
		seen = calloc(cap + 1, 1);
		for (long j = 0; j < r->nseen; j++)
		{
			Seen	   *s = &r->seen[j];
			long		base = 0;

			if (s->entity < 0 || s->entity >= opt.entities || s->seq_no < 1 ||
				s->seq_no > entity(K_LOG, s->entity)->known_last)
			{
				fail(r, "the feed returned an unknown event e%d/%ld", s->entity, s->seq_no);
				continue;
			}
			for (int e = 0; e < s->entity; e++)
				base += entity(K_LOG, e)->known_last + 1;
			if (seen[base + s->seq_no]++)
				fail(r, "the feed returned e%d/%ld twice", s->entity, s->seq_no);
		}
		if (r->nseen != total)
			fail(r, "the feed reader saw %ld events of %ld", r->nseen, total);
		free(seen);
	}

	/* the projection, run to the end, applied every event once */
	{
		PGresult   *r;
		int			idle = 0;

		for (int i = 0; i < 100000 && idle < 2; i++)
			idle = op_project(c, "1000") == 0 ? idle + 1 : 0;
		snprintf(type, sizeof(type), "%s_proj_t", prefix);
		for (int e = 0; e < opt.entities; e++)
		{
			long		events = 0,
						sum = 0;
			char		q[256];

			for (long s = 1; s <= entity(K_LOG, e)->known_last; s++)
				if (entity(K_LOG, e)->ev[s].state == 1)
				{
					events++;
					sum += entity(K_LOG, e)->ev[s].n;
				}
			entity_id(e, id);
			snprintf(q, sizeof(q), "SELECT coalesce((SELECT events || ' ' || total FROM public.%s WHERE id = $1), '0 0')", type);
			params[0] = id;
			r = run(c, q, 1, params);
			if (PQresultStatus(r) != PGRES_TUPLES_OK)
				fail(c, "projection table: %s", PQresultErrorMessage(r));
			else
			{
				char		want[64];

				snprintf(want, sizeof(want), "%ld %ld", events, sum);
				if (strcmp(PQgetvalue(r, 0, 0), want) != 0)
					fail(c, "projection row e%d is %s, the model's %s", e, PQgetvalue(r, 0, 0), want);
			}
			PQclear(r);
		}
	}
}

/* Connect one client */
static bool
connect_client(Client *c)
{
	c->conn = PQconnectdb("");
	if (PQstatus(c->conn) != CONNECTION_OK)
	{
		fail(c, "connect: %s", PQerrorMessage(c->conn));
		return false;
	}
	PQclear(PQexec(c->conn, "SET client_min_messages = warning"));
	return true;
}

static void
usage(void)
{
	fprintf(stderr, "usage: model [--seed N] [--clients N] [--ops N | --seconds N] "
			"[--entities N] [--memory-check] [--verbose]\n");
	exit(2);
}

/* Parse a bounded integer option */
static long
int_arg(const char *s, long lo, long hi)
{
	char	   *end;
	long		v = strtol(s, &end, 10);

	if (*s == '\0' || *end != '\0' || v < lo || v > hi)
		usage();
	return v;
}

int
main(int argc, char **argv)
{
	static Client clients[MAX_CLIENTS];
	pthread_t	threads[MAX_CLIENTS];
	Client		checker = {.no = -1};

	for (int i = 1; i < argc; i++)
	{
		bool		more = i + 1 < argc;

		if (strcmp(argv[i], "--seed") == 0 && more)
			opt.seed = (unsigned long) int_arg(argv[++i], 0, 1L << 62);
		else if (strcmp(argv[i], "--clients") == 0 && more)
			opt.clients = (int) int_arg(argv[++i], 1, MAX_CLIENTS);
		else if (strcmp(argv[i], "--ops") == 0 && more)
			opt.ops = int_arg(argv[++i], 1, 100000000);
		else if (strcmp(argv[i], "--seconds") == 0 && more)
			opt.seconds = (int) int_arg(argv[++i], 1, 86400);
		else if (strcmp(argv[i], "--entities") == 0 && more)
			opt.entities = (int) int_arg(argv[++i], 1, MAX_ENTITIES);
		else if (strcmp(argv[i], "--memory-check") == 0)
			opt.memory_check = true;
		else if (strcmp(argv[i], "--verbose") == 0)
			opt.verbose = true;
		else
			usage();
	}
	snprintf(prefix, sizeof(prefix), "m%lu", opt.seed);
	if (!connect_client(&checker) || !set_up(&checker))
		return 1;
	deadline = time(NULL) + opt.seconds;
	for (int i = 0; i < opt.clients; i++)
	{
		clients[i].no = i;
		clients[i].rng = opt.seed * 1000003ULL + (uint64_t) i;
		if (!connect_client(&clients[i]))
			return 1;
	}
	for (int i = 0; i < opt.clients; i++)
		pthread_create(&threads[i], NULL, client_main, &clients[i]);
	for (int i = 0; i < opt.clients; i++)
		pthread_join(threads[i], NULL);

	check_final(&checker, clients);

	long		counts[N_COUNTS] = {0},
				ops = 0;

	for (int i = 0; i < opt.clients; i++)
	{
		ops += clients[i].ops_done;
		for (int k = 0; k < N_COUNTS; k++)
			counts[k] += clients[i].counts[k];
	}
	printf("model: seed %lu, %d clients, %ld operations:", opt.seed, opt.clients, ops);
	for (int k = 0; k < N_COUNTS; k++)
		printf(" %s %ld", count_name[k], counts[k]);
	printf("\n");
	/* a run that exercised too little proves nothing */
	if (ops >= 1000 && (counts[C_APPEND_OK] == 0 || counts[C_STALE_CONFLICT] == 0 ||
						counts[C_RETRY] == 0 || counts[C_CMD_OK] == 0 || counts[C_CMD_REJECT] == 0 ||
						counts[C_PURGE] == 0 || counts[C_FORGE] == 0 || counts[C_PROJECT] == 0))
		fail(NULL, "the run did not exercise every kind of operation");
	if (opt.memory_check)
		for (int i = 0; i < opt.clients; i++)
		{
			printf("model: client %d backend memory %ld bytes after warm-up, %ld at the end\n",
				   i, clients[i].mem_warm, clients[i].mem_end);
			/* flat: at most 25 % and 1 MB more than after the warm-up */
			if (clients[i].mem_warm <= 0 ||
				clients[i].mem_end > clients[i].mem_warm + clients[i].mem_warm / 4 + (1 << 20))
				fail(&clients[i], "backend memory grew from %ld to %ld bytes",
					 clients[i].mem_warm, clients[i].mem_end);
		}
	printf("model: %s (replay: --seed %lu --clients %d %s %ld --entities %d)\n",
		   failures ? "FAILED" : "store equals model", opt.seed, opt.clients,
		   opt.seconds ? "--seconds" : "--ops", opt.seconds ? (long) opt.seconds : opt.ops,
		   opt.entities);
	return failures ? 1 : 0;
}
