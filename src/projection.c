/*
 * projection.c
 *		Projections inside the database: a handler function applied to each
 *		event of the feed, with the checkpoint stored in the same transaction
 *		as the handler's effects, so every event is applied exactly once.
 *
 * run_projection() locks the projection (a transaction-level advisory lock
 * keyed by its name), reads its row with a snapshot taken after the lock is
 * held, reads the next events from the feed (which never passes an event
 * still in flight), applies them and stores the new checkpoint.  A second
 * run of the same projection waits for the first to commit and continues
 * from its checkpoint.  The batch runs in one subtransaction; when a handler
 * fails, the batch is rolled back and replayed event by event to find the
 * failing event, which is then handled by the error strategy.
 */
#include "eventsourced.h"

#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/xact.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"

#define ES_MAX_NAME_LEN			255
#define ES_DEFAULT_BATCH		1000
#define ES_PROJECTION_CHUNK		1000	/* events a run holds in memory at once */

/* Attribute numbers of eventsourced.projection_state */
#define Anum_es_proj_name			1
#define Anum_es_proj_entity_type	2
#define Anum_es_proj_handler		3
#define Anum_es_proj_strategy		4
#define Anum_es_proj_owner			5
#define Anum_es_proj_checkpoint		6
#define Anum_es_proj_status			7
#define Anum_es_proj_retries		12
#define Anum_es_proj_updated_at		14
#define Anum_es_proj_search_path	15
#define Anum_es_proj_handler_owner	16
#define Anum_es_proj_retry_delay	17
#define Natts_es_proj				17

/*
 * A run that finds nothing new stores its checkpoint's advance over empty
 * positions only once it is this large: an idle pass then writes once per
 * this many events of other types, not once per wake-up.
 */
#define ES_PROJECTION_IDLE_STEP	1000

int			es_projection_max_retries = 3;
static int	projection_timeout_ms = 60000;

/* The worker's limit on a batch's handler calls (es_projection_worker_setup) */
static TimeoutId timeout_id = MAX_TIMEOUTS;
static TimeoutId hard_timeout_id = MAX_TIMEOUTS;
static volatile sig_atomic_t timeout_fired = false;

/* A projection run is in progress in this session (runs do not nest) */
static bool run_in_progress = false;

/* A projection's row, as run_projection needs it */
typedef struct EsProjection
{
	text	   *name;
	text	   *entity_type;	/* NULL: every type */
	Datum		handler_signature;	/* text, as stored */
	Oid			handler;		/* resolved by es_check_run() */
	Oid			handler_owner;	/* the function's owner when the projection was created */
	char		strategy;		/* 's'top, 'k' skip, 'r'etry */
	Oid			owner;			/* the role that created it */
	EsRunAs		run_as;			/* the handler's owner and the creator's search_path */
	int64		checkpoint;
	bool		failed;
	bool		stopped;
	int32		retries;
	TimestampTz retry_after;	/* a failed event is not retried before (0: now) */
	FmgrInfo	flinfo;
} EsProjection;

/* One event to apply */
typedef struct EsFeedEvent
{
	Datum		entity_id;
	int64		seq_no;
	Datum		event_type;
	Datum		payload;		/* jsonb; binary events pass NULL */
	bool		payload_isnull;
	int64		position;
} EsFeedEvent;

/* What a run did, to be stored in the projection's row */
typedef struct EsRunOutcome
{
	int32		applied;
	int64		checkpoint;
	int32		errors;			/* events skipped after an error */
	bool		failed;
	int32		retries;
	char	   *last_error;
	int64		last_error_position;
} EsRunOutcome;

static EsStatement insert_projection = {
	"INSERT INTO eventsourced.projection_state (name, entity_type, handler, "
	"error_strategy, owner, search_path, handler_owner, retry_delay) "
	"VALUES ($1, $2, $3, $4, $5::pg_catalog.regrole, $6, $7::pg_catalog.regrole, $8)",
	8, {TEXTOID, TEXTOID, TEXTOID, TEXTOID, OIDOID, TEXTOID, OIDOID, INTERVALOID}
};

static EsStatement update_projection = {
	"UPDATE eventsourced.projection_state SET checkpoint = $2, "
	"events_applied = events_applied OPERATOR(pg_catalog.+) $3, "
	"errors = errors OPERATOR(pg_catalog.+) $4, "
	"status = CASE WHEN $5 THEN 'failed' ELSE 'running' END, retries = $6, "
	"last_error = COALESCE($7, last_error), "
	"last_error_position = COALESCE($8, last_error_position), "
	"updated_at = pg_catalog.now() "
	"WHERE name OPERATOR(pg_catalog.=) $1 COLLATE pg_catalog.\"C\"",
	8, {TEXTOID, INT8OID, INT8OID, INT8OID, BOOLOID, INT4OID, TEXTOID, INT8OID}
};

static EsStatement reset_projection = {
	"UPDATE eventsourced.projection_state SET checkpoint = $2, "
	"status = CASE status WHEN 'stopped' THEN 'stopped' ELSE 'running' END, "
	"retries = 0, last_error = NULL, last_error_position = NULL, updated_at = pg_catalog.now() "
	"WHERE name OPERATOR(pg_catalog.=) $1 COLLATE pg_catalog.\"C\"",
	2, {TEXTOID, INT8OID}
};

static EsStatement delete_projection = {
	"DELETE FROM eventsourced.projection_state "
	"WHERE name OPERATOR(pg_catalog.=) $1 COLLATE pg_catalog.\"C\"",
	1, {TEXTOID}
};

static Oid es_check_projection_handler(Oid fn);

/* 's' for stop, 'k' for skip, 'r' for retry, 0 for anything else */
static char
es_strategy_code(const char *strategy)
{
	if (strcmp(strategy, "stop") == 0)
		return 's';
	if (strcmp(strategy, "skip") == 0)
		return 'k';
	if (strcmp(strategy, "retry") == 0)
		return 'r';
	return 0;
}

/* Serialize runs of one projection until the end of the transaction */
static bool
es_lock_projection(text *name, bool nowait)
{
	LOCKTAG		tag;
	uint64		h = hash_any_extended((unsigned char *) VARDATA_ANY(name),
									  VARSIZE_ANY_EXHDR(name), 0);

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) (h >> 32), (uint32) h,
						 ES_LOCK_PROJECTION);
	return LockAcquire(&tag, ExclusiveLock, false, nowait) != LOCKACQUIRE_NOT_AVAIL;
}

/* The projection's row as of now (a snapshot newer than our lock); false if none */
static bool
es_read_projection(text *name, EsProjection *p)
{
	const EsCatalog *cat = es_catalog();
	ScanKeyData key;
	Datum		values[Natts_es_proj];
	bool		nulls[Natts_es_proj];
	bool		found;

	ScanKeyEntryInitialize(&key, 0, 1, BTEqualStrategyNumber, InvalidOid,
						   C_COLLATION_OID, F_TEXTEQ, PointerGetDatum(name));
	PushActiveSnapshot(GetLatestSnapshot());
	found = es_fetch_by_key(cat->projection_state, cat->projection_state_pkey,
							&key, 1, Natts_es_proj, values, nulls, NULL);
	PopActiveSnapshot();
	if (!found)
		return false;
	p->name = name;
	p->entity_type = nulls[Anum_es_proj_entity_type - 1] ? NULL :
		DatumGetTextPP(values[Anum_es_proj_entity_type - 1]);
	p->handler_signature = values[Anum_es_proj_handler - 1];
	p->handler = InvalidOid;
	p->handler_owner = DatumGetObjectId(values[Anum_es_proj_handler_owner - 1]);
	p->strategy = es_strategy_code(TextDatumGetCString(values[Anum_es_proj_strategy - 1]));
	p->owner = DatumGetObjectId(values[Anum_es_proj_owner - 1]);
	p->run_as.owner = InvalidOid;	/* es_check_run() */
	p->run_as.search_path = TextDatumGetCString(values[Anum_es_proj_search_path - 1]);
	p->checkpoint = DatumGetInt64(values[Anum_es_proj_checkpoint - 1]);
	p->failed = (*VARDATA_ANY(DatumGetTextPP(values[Anum_es_proj_status - 1])) == 'f');
	p->stopped = (*VARDATA_ANY(DatumGetTextPP(values[Anum_es_proj_status - 1])) == 's');
	p->retries = DatumGetInt32(values[Anum_es_proj_retries - 1]);
	p->retry_after = (p->retries == 0 || nulls[Anum_es_proj_retry_delay - 1]) ? 0 :
		DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
												values[Anum_es_proj_updated_at - 1],
												values[Anum_es_proj_retry_delay - 1]));
	return true;
}

/* A name argument that must identify an existing projection */
static void
es_report_no_projection(text *name)
{
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("projection \"%s\" does not exist", text_to_cstring(name)),
			 errhint("Create it with eventsourced.create_projection().")));
}

/* The events read for one run */
typedef struct EsFeedEvents
{
	EsFeedEvent *events;
	int			n;
} EsFeedEvents;

/* Copy one feed event into the run's array (sized for max_events) */
static void
es_keep_event(TupleTableSlot *slot, void *arg)
{
	EsFeedEvents *out = (EsFeedEvents *) arg;
	EsFeedEvent *ev = &out->events[out->n++];
	Datum	   *v = slot->tts_values;

	ev->position = DatumGetInt64(v[Anum_es_events_position - 1]);
	ev->entity_id = datumCopy(v[Anum_es_events_entity_id - 1], false, -1);
	ev->seq_no = DatumGetInt64(v[Anum_es_events_seq_no - 1]);
	ev->event_type = datumCopy(v[Anum_es_events_event_type - 1], false, -1);
	ev->payload_isnull = slot->tts_isnull[Anum_es_events_payload - 1];
	ev->payload = ev->payload_isnull ? (Datum) 0 :
		datumCopy(v[Anum_es_events_payload - 1], false, -1);
}

/*
 * Read the next events of the projection's feed, after position after, into
 * an array; *resume is where the feed resumes after them (es_feed_scan).
 */
static EsFeedEvent *
es_next_events(const EsProjection *p, int64 after, int32 max_events, int *nevents,
			   int64 *resume)
{
	EsFeedRequest req = {p->entity_type, after, max_events};
	EsFeedEvents out;

	out.events = palloc(sizeof(EsFeedEvent) * Max(max_events, 1));
	out.n = 0;
	(void) es_feed_scan(&req, es_keep_event, &out, resume);
	*nevents = out.n;
	return out.events;
}

/* Call the handler for one event (in the projection's sandbox) */
static void
es_call_handler(EsProjection *p, const EsFeedEvent *ev)
{
	LOCAL_FCINFO(fcinfo, 5);

	if (ev->payload_isnull && p->flinfo.fn_strict)
		return;					/* a strict handler ignores binary events */
	InitFunctionCallInfoData(*fcinfo, &p->flinfo, 5, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = ev->entity_id;
	fcinfo->args[1].value = Int64GetDatum(ev->seq_no);
	fcinfo->args[2].value = ev->event_type;
	fcinfo->args[3].value = ev->payload;
	fcinfo->args[4].value = Int64GetDatum(ev->position);
	for (int i = 0; i < 5; i++)
		fcinfo->args[i].isnull = false;
	fcinfo->args[3].isnull = ev->payload_isnull;
	(void) FunctionCallInvoke(fcinfo);
}

/* Timeout handler: cancel the handler call, as a statement timeout would */
static void
es_projection_timeout(void)
{
	timeout_fired = true;
	InterruptPending = true;
	QueryCancelPending = true;
	SetLatch(MyLatch);
}

/*
 * Second timeout handler: the handler went on after its cancel (it caught
 * query_canceled).  The worker exits (FATAL, which no handler can catch);
 * its successor marks the projection failed (worker.c).
 */
static void
es_projection_hard_timeout(void)
{
	es_worker_note_hard_stop();
	InterruptPending = true;
	ProcDiePending = true;
	SetLatch(MyLatch);
}

/*
 * In the background worker: handler calls are limited by
 * eventsourced.projection_timeout (no statement_timeout applies there), and
 * stopped for good at twice that.
 */
void
es_projection_worker_setup(void)
{
	timeout_id = RegisterTimeout(USER_TIMEOUT, es_projection_timeout);
	hard_timeout_id = RegisterTimeout(USER_TIMEOUT, es_projection_hard_timeout);
}

/* Start the limits for the handler calls that follow, if there are */
static void
es_timeout_start(void)
{
	EnableTimeoutParams limits[2];

	timeout_fired = false;
	if (timeout_id == MAX_TIMEOUTS || projection_timeout_ms <= 0)
		return;
	limits[0].id = timeout_id;
	limits[0].type = TMPARAM_AFTER;
	limits[0].delay_ms = projection_timeout_ms;
	limits[1].id = hard_timeout_id;
	limits[1].type = TMPARAM_AFTER;
	limits[1].delay_ms = projection_timeout_ms > INT_MAX / 2 ? INT_MAX : 2 * projection_timeout_ms;
	enable_timeouts(limits, 2);
}

/* Stop the limits; whether the first one fired */
static bool
es_timeout_stop(void)
{
	if (timeout_id != MAX_TIMEOUTS && projection_timeout_ms > 0)
	{
		disable_timeout(timeout_id, false);
		disable_timeout(hard_timeout_id, false);
	}
	return timeout_fired;
}

/*
 * Whether an error is a cancel or shutdown of this session (which ends the
 * run), not a handler raising that SQLSTATE itself (which is a handler
 * error like any other).
 */
static bool
es_interrupted(const ErrorData *err)
{
	return (err->sqlerrcode == ERRCODE_QUERY_CANCELED ||
			err->sqlerrcode == ERRCODE_ADMIN_SHUTDOWN) &&
		err->funcname != NULL && strcmp(err->funcname, "ProcessInterrupts") == 0;
}

/* Whether a run must stop taking new events: its time slice is used up */
static bool
es_past_deadline(TimestampTz deadline)
{
	return deadline != 0 && GetCurrentTimestamp() >= deadline;
}

/*
 * Apply events[from..to) in one subtransaction, stopping early (after at
 * least one event) once the deadline has passed; *done is set to the end
 * of what was applied.  On a handler error the subtransaction is rolled
 * back, *err set, and false returned; a cancel or shutdown is re-thrown.
 */
static bool
es_apply_range(EsProjection *p, const EsFeedEvent *events, int from, int to,
			   TimestampTz deadline, int *done, ErrorData **err)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	volatile bool ok = true;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	es_timeout_start();
	PG_TRY();
	{
		int			i = from;

		do
			es_call_handler(p, &events[i++]);
		while (i < to && !es_past_deadline(deadline));
		*done = i;
		if (es_timeout_stop())
			QueryCancelPending = false; /* fired after the last call returned */
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		bool		timed_out = es_timeout_stop();

		MemoryContextSwitchTo(oldcxt);
		*err = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		if ((*err)->sqlerrcode == ERRCODE_QUERY_CANCELED && timed_out)
			(*err)->message = psprintf("projection handler ran longer than eventsourced.projection_timeout (%d ms)",
									   projection_timeout_ms);
		else if (es_interrupted(*err))
			ReThrowError(*err);
		ok = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcxt);
	CurrentResourceOwner = oldowner;
	return ok;
}

/*
 * Errors that say nothing about the event: a deadlock, a serialization
 * failure, a lock timeout.  The event is tried again by the next run,
 * whatever the error strategy.
 */
static bool
es_transient_error(int sqlerrcode)
{
	return ERRCODE_TO_CATEGORY(sqlerrcode) == ERRCODE_TRANSACTION_ROLLBACK ||
		sqlerrcode == ERRCODE_LOCK_NOT_AVAILABLE;
}

/* Apply events one by one, following the error strategy at a failure */
static void
es_apply_each(EsProjection *p, const EsFeedEvent *events, int n, TimestampTz deadline,
			  EsRunOutcome *out)
{
	for (int i = 0; i < n && (i == 0 || !es_past_deadline(deadline)); i++)
	{
		ErrorData  *err;
		int			done;

		if (es_apply_range(p, events, i, i + 1, 0, &done, &err))
		{
			out->applied++;
			out->checkpoint = events[i].position;
			out->retries = 0;
			continue;
		}
		out->last_error = psprintf("%s (SQLSTATE %s)", err->message,
								   unpack_sql_state(err->sqlerrcode));
		out->last_error_position = events[i].position;
		if (es_transient_error(err->sqlerrcode))
			return;
		if (p->strategy == 'k')
		{
			out->errors++;
			out->checkpoint = events[i].position;
			continue;
		}
		out->retries = (p->strategy == 'r') ? p->retries + (p->retries < PG_INT32_MAX) : 0;
		out->failed = (p->strategy == 's' ||
					   (es_projection_max_retries > 0 && out->retries >= es_projection_max_retries));
		return;
	}
}

/* Store a run's outcome in the projection's row */
static void
es_store_outcome(const EsProjection *p, const EsRunOutcome *out)
{
	Datum		values[8];
	bool		nulls[8] = {false, false, false, false, false, false,
	out->last_error == NULL, out->last_error == NULL};

	values[0] = PointerGetDatum(p->name);
	values[1] = Int64GetDatum(out->checkpoint);
	values[2] = Int64GetDatum(out->applied);
	values[3] = Int64GetDatum(out->errors);
	values[4] = BoolGetDatum(out->failed);
	values[5] = Int32GetDatum(out->retries);
	values[6] = out->last_error ? CStringGetTextDatum(out->last_error) : (Datum) 0;
	values[7] = Int64GetDatum(out->last_error_position);
	(void) es_exec_as_owner(es_catalog()->projection_state, &update_projection, values, nulls);
}

/* One run of a projection: what it was asked and what it did */
typedef struct EsProjectionRun
{
	EsProjection *p;
	int32		max_events;
	TimestampTz deadline;
	EsRunOutcome out;
	bool		read_any;		/* it read events (and stored its outcome) */
} EsProjectionRun;

/* Apply one chunk of events; whether the run may go on with the next one */
static bool
es_apply_chunk(EsProjection *p, const EsFeedEvent *events, int n, EsProjectionRun *run)
{
	int			done;
	ErrorData  *err;

	if (es_apply_range(p, events, 0, n, run->deadline, &done, &err))
	{
		run->out.applied += done;
		run->out.checkpoint = events[done - 1].position;
		run->out.retries = 0;
		return done == n;
	}
	es_apply_each(p, events, n, run->deadline, &run->out);
	return false;
}

/*
 * Read the next events and apply them, ES_PROJECTION_CHUNK at a time so
 * that memory does not grow with max_events (runs in the projection's
 * sandbox: the feed is read with its handler owner's rights, row-level
 * security included).  A run that reaches the end of its feed moves the
 * checkpoint on to where the feed resumes, past positions that held nothing
 * for it; one that read nothing stores that only once it is
 * ES_PROJECTION_IDLE_STEP ahead.
 */
static void
es_projection_batch(void *arg)
{
	EsProjectionRun *run = (EsProjectionRun *) arg;
	EsProjection *p = run->p;
	MemoryContext outer = CurrentMemoryContext;
	MemoryContext chunk_cxt;
	int64		consumed = 0;
	int64		resume = p->checkpoint;
	bool		more = true;
	bool		at_end = false;

	fmgr_info(p->handler, &p->flinfo);
	run->out.checkpoint = p->checkpoint;
	run->out.retries = p->retries;
	chunk_cxt = AllocSetContextCreate(outer, "eventsourced projection chunk", ALLOCSET_DEFAULT_SIZES);
	while (more && consumed < run->max_events)
	{
		int32		want = (int32) Min(ES_PROJECTION_CHUNK, run->max_events - consumed);
		EsFeedEvent *events;
		int			n;

		MemoryContextSwitchTo(chunk_cxt);
		events = es_next_events(p, run->out.checkpoint, want, &n, &resume);
		if (n > 0)
			more = es_apply_chunk(p, events, n, run) && n == want &&
				!es_past_deadline(run->deadline);
		/* a short page whose every event was applied or skipped */
		at_end = n < want && !run->out.failed &&
			(n == 0 || run->out.checkpoint == events[n - 1].position);
		MemoryContextSwitchTo(outer);
		if (run->out.last_error)
			run->out.last_error = pstrdup(run->out.last_error);
		MemoryContextReset(chunk_cxt);
		if (n == 0)
			break;
		consumed += n;
		run->read_any = true;
	}
	MemoryContextDelete(chunk_cxt);
	if (at_end)
		run->out.checkpoint = Max(run->out.checkpoint, resume);
	if (run->read_any || run->out.checkpoint - p->checkpoint >= ES_PROJECTION_IDLE_STEP)
		es_store_outcome(p, &run->out);
}

/*
 * What every run checks of a projection's registration: its handler still
 * exists with the right signature, and the handler's owner, whom it runs
 * as, is the registered one, may execute it and read the events.
 */
static void
es_check_run(EsProjection *p)
{
	p->handler = es_check_projection_handler(es_resolve_projection_handler(p->handler_signature));
	p->run_as.owner = es_function_owner(p->handler);
	es_check_run_as(p->handler, p->owner, p->run_as.owner, p->handler_owner);
	es_check_execute(p->handler, p->run_as.owner);
	es_check_select_by(es_catalog()->events, p->run_as.owner);
}

/* A run in the sandbox of the projection's handler; never nested */
static void
es_projection_run_once(EsProjectionRun *run)
{
	run_in_progress = true;
	PG_TRY();
	{
		es_sandbox_run(&run->p->run_as, es_projection_batch, run);
	}
	PG_FINALLY();
	{
		run_in_progress = false;
	}
	PG_END_TRY();
}

/*
 * Whether a projection is not to run now: it is stopped, or the retry
 * delay after its failed event has not passed.  A run asked for by a
 * user says so with a NOTICE.
 */
static bool
es_projection_waits(const EsProjection *p, bool background)
{
	if (p->stopped)
	{
		if (!background)
			ereport(NOTICE,
					(errmsg("projection \"%s\" is stopped", text_to_cstring(p->name)),
					 errhint("Start it with eventsourced.start_projection().")));
		return true;
	}
	if (p->retry_after == 0 || GetCurrentTimestamp() >= p->retry_after)
		return false;
	if (!background)
		ereport(NOTICE,
				(errmsg("projection \"%s\" waits for its retry_delay before it tries its failed event again",
						text_to_cstring(p->name)),
				 errdetail("The next try is at %s.", timestamptz_to_str(p->retry_after)),
				 errhint("eventsourced.start_projection() tries it at once.")));
	return true;
}

/*
 * Run a projection once: apply up to max_events events in the caller's
 * transaction, stopping early once deadline (if not 0) has passed.
 * Returns the number applied and fills *outcome (if given): whether the
 * checkpoint moved, and, while its registration is checked, that an error
 * would be the registration's.  For the background worker (background):
 * -1 when another run holds the projection (it does not wait), 0 when it no
 * longer exists, and no check that the caller may manage it (the worker
 * runs every projection).
 */
int32
es_run_projection(text *name, int32 max_events, bool background, TimestampTz deadline,
				  EsRunStatus *outcome)
{
	EsProjection p;
	EsProjectionRun run = {&p, max_events, deadline, {0}, false};
	EsRunStatus ignored;

	if (outcome == NULL)
		outcome = &ignored;
	outcome->progressed = false;
	outcome->checking = false;
	outcome->checked = false;
	if (!es_lock_projection(name, background))
		return -1;
	if (!es_read_projection(name, &p))
	{
		if (background)
			return 0;
		es_report_no_projection(name);
	}
	if (!background)
		es_check_manage(p.owner, es_catalog()->projection_state,
						psprintf("projection \"%s\"", text_to_cstring(name)));
	outcome->checking = true;
	es_check_run(&p);
	outcome->checking = false;
	outcome->checked = true;
	if (p.failed || es_projection_waits(&p, background))
		return 0;
	if (run_in_progress)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_IN_USE),
				 errmsg("run_projection cannot be called while a projection runs in this session"),
				 errdetail("It was called from a projection handler, or from code it runs.")));
	es_projection_run_once(&run);
	outcome->progressed = run.read_any && run.out.checkpoint != p.checkpoint;
	return run.out.applied;
}

/* A projection handler: (text, bigint, text, jsonb, bigint) RETURNS void */
static Oid
es_check_projection_handler(Oid fn)
{
	static const Oid argtypes[5] = {TEXTOID, INT8OID, TEXTOID, JSONBOID, INT8OID};
	HeapTuple	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
	Form_pg_proc proc;
	bool		ok;

	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("projection handler with OID %u does not exist", fn)));
	proc = (Form_pg_proc) GETSTRUCT(tup);
	ok = proc->prokind == PROKIND_FUNCTION && !proc->proretset &&
		proc->prorettype == VOIDOID && proc->pronargs == 5 &&
		memcmp(proc->proargtypes.values, argtypes, sizeof(argtypes)) == 0;
	ReleaseSysCache(tup);
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
				 errmsg("function %s cannot be a projection handler", format_procedure(fn)),
				 errdetail("A projection handler must be a function (entity_id text, seq_no bigint, event_type text, payload jsonb, pos bigint) RETURNS void.")));
	return fn;
}

/* The error_strategy argument: stop, skip or retry */
static text *
es_strategy_arg(FunctionCallInfo fcinfo, int argno)
{
	text	   *t = es_name_arg(fcinfo, argno, "error_strategy", ES_MAX_NAME_LEN);

	if (es_strategy_code(text_to_cstring(t)) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid error_strategy \"%s\"", text_to_cstring(t)),
				 errhint("Use 'stop', 'skip' or 'retry'.")));
	return t;
}

/*
 * The retry_delay argument: NULL (retry at the next run) or a positive
 * interval, for the retry strategy only.
 */
static Datum
es_retry_delay_arg(FunctionCallInfo fcinfo, int argno, const char *strategy)
{
	Interval   *delay;
	Interval	zero = {0};
	Interval	longest = {.day = 366};

	if (PG_NARGS() <= argno || PG_ARGISNULL(argno))
		return (Datum) 0;
	delay = PG_GETARG_INTERVAL_P(argno);
	if (strcmp(strategy, "retry") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("retry_delay applies only to the 'retry' error_strategy"),
				 errdetail("error_strategy is '%s'.", strategy)));
	if (DatumGetInt32(DirectFunctionCall2(interval_cmp, IntervalPGetDatum(delay),
										  IntervalPGetDatum(&zero))) <= 0 ||
		DatumGetInt32(DirectFunctionCall2(interval_cmp, IntervalPGetDatum(delay),
										  IntervalPGetDatum(&longest))) > 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("retry_delay must be positive and at most 366 days"),
				 errdetail("retry_delay was %s.",
						   DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum(delay)))),
				 errhint("Pass NULL to retry at the next run.")));
	return IntervalPGetDatum(delay);
}

PG_FUNCTION_INFO_V1(eventsourced_create_projection);

/*
 * create_projection(name, entity_type, handler, error_strategy,
 * retry_delay).  The
 * creator must own the handler; it runs as its owner, who must be allowed
 * to read the events and execute it.
 */
Datum
eventsourced_create_projection(PG_FUNCTION_ARGS)
{
	text	   *name = es_name_arg(fcinfo, 0, "projection name", ES_MAX_NAME_LEN);
	text	   *type = PG_ARGISNULL(1) ? NULL :
		es_name_arg(fcinfo, 1, "entity_type", ES_MAX_TYPE_LEN);
	Oid			handler;
	Oid			runner;
	Datum		values[8];
	bool		nulls[8] = {false, type == NULL, false, false, false, false, false, false};

	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("projection handler must not be null")));
	handler = es_check_projection_handler(PG_GETARG_OID(2));
	values[3] = PointerGetDatum(es_strategy_arg(fcinfo, 3));
	values[7] = es_retry_delay_arg(fcinfo, 4, TextDatumGetCString(values[3]));
	nulls[7] = (values[7] == (Datum) 0);
	PreventCommandIfReadOnly("eventsourced.create_projection()");
	es_check_handler_owner(handler, "a projection handler");
	runner = es_function_owner(handler);
	es_check_execute(handler, runner);
	es_check_select_by(es_catalog()->events, runner);
	values[0] = PointerGetDatum(name);
	values[1] = type ? PointerGetDatum(type) : (Datum) 0;
	values[2] = CStringGetTextDatum(format_procedure_qualified(handler));
	values[4] = ObjectIdGetDatum(GetUserId());
	values[5] = CStringGetTextDatum(es_registrant_search_path());
	values[6] = ObjectIdGetDatum(runner);
	if (!es_lock_projection(name, false) || es_read_projection(name, &(EsProjection) {0}))
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("projection \"%s\" already exists", text_to_cstring(name)),
				 errhint("Drop it first, or reset it with eventsourced.reset_projection().")));
	(void) es_exec_as_owner(es_catalog()->projection_state, &insert_projection, values, nulls);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(eventsourced_run_projection);

/* run_projection(name, max_events): events applied */
Datum
eventsourced_run_projection(PG_FUNCTION_ARGS)
{
	text	   *name = es_name_arg(fcinfo, 0, "projection name", ES_MAX_NAME_LEN);
	int32		max_events = PG_ARGISNULL(1) ? ES_DEFAULT_BATCH : PG_GETARG_INT32(1);

	if (max_events < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_events must not be negative"),
				 errdetail("max_events was %d.", max_events)));
	PreventCommandIfReadOnly("eventsourced.run_projection()");
	PG_RETURN_INT32(es_run_projection(name, max_events, false, 0, NULL));
}

/*
 * Lock a projection and read its row for a change by the current user,
 * who must be allowed to manage it.
 */
static void
es_projection_for_change(text *name)
{
	EsProjection p;

	if (run_in_progress)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_IN_USE),
				 errmsg("a projection cannot be changed while a projection runs in this session"),
				 errdetail("It was called from a projection handler, or from code it runs.")));
	(void) es_lock_projection(name, false);
	if (!es_read_projection(name, &p))
		es_report_no_projection(name);
	es_check_manage(p.owner, es_catalog()->projection_state,
					psprintf("projection \"%s\"", text_to_cstring(name)));
}

PG_FUNCTION_INFO_V1(eventsourced_reset_projection);

/* reset_projection(name, pos): move the checkpoint, clear a failure */
Datum
eventsourced_reset_projection(PG_FUNCTION_ARGS)
{
	text	   *name = es_name_arg(fcinfo, 0, "projection name", ES_MAX_NAME_LEN);
	Datum		values[2];

	if (PG_ARGISNULL(1) || PG_GETARG_INT64(1) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("pos must be a position, 0 or more"),
				 errhint("Pass 0 to replay the whole feed.")));
	es_projection_for_change(name);
	values[0] = PointerGetDatum(name);
	values[1] = PG_GETARG_DATUM(1);
	(void) es_exec_as_owner(es_catalog()->projection_state, &reset_projection, values, NULL);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(eventsourced_drop_projection);

/* drop_projection(name) */
Datum
eventsourced_drop_projection(PG_FUNCTION_ARGS)
{
	text	   *name = es_name_arg(fcinfo, 0, "projection name", ES_MAX_NAME_LEN);
	Datum		values[1];

	es_projection_for_change(name);
	values[0] = PointerGetDatum(name);
	(void) es_exec_as_owner(es_catalog()->projection_state, &delete_projection, values, NULL);
	PG_RETURN_VOID();
}

static EsStatement stop_projection = {
	"UPDATE eventsourced.projection_state SET status = 'stopped', updated_at = pg_catalog.now() "
	"WHERE name OPERATOR(pg_catalog.=) $1 COLLATE pg_catalog.\"C\" "
	"AND status OPERATOR(pg_catalog.<>) 'stopped'",
	1, {TEXTOID}
};

static EsStatement start_projection = {
	"UPDATE eventsourced.projection_state SET status = 'running', retries = 0, "
	"updated_at = pg_catalog.now() "
	"WHERE name OPERATOR(pg_catalog.=) $1 COLLATE pg_catalog.\"C\" "
	"AND (status OPERATOR(pg_catalog.<>) 'running' OR retries OPERATOR(pg_catalog.>) 0)",
	1, {TEXTOID}
};

/* Set a projection's status by one of the statements above */
static void
es_projection_set_status(FunctionCallInfo fcinfo, EsStatement *stmt)
{
	text	   *name = es_name_arg(fcinfo, 0, "projection name", ES_MAX_NAME_LEN);
	Datum		values[1] = {PointerGetDatum(name)};

	es_projection_for_change(name);
	(void) es_exec_as_owner(es_catalog()->projection_state, stmt, values, NULL);
}

PG_FUNCTION_INFO_V1(eventsourced_stop_projection);

/* stop_projection(name): no run applies events until it is started again */
Datum
eventsourced_stop_projection(PG_FUNCTION_ARGS)
{
	es_projection_set_status(fcinfo, &stop_projection);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(eventsourced_start_projection);

/*
 * start_projection(name): a stopped or failed projection runs again from
 * its checkpoint; a failed event is tried again at once, also by one
 * waiting for its retry_delay
 */
Datum
eventsourced_start_projection(PG_FUNCTION_ARGS)
{
	es_projection_set_status(fcinfo, &start_projection);
	PG_RETURN_VOID();
}

static EsStatement fail_projection = {
	"UPDATE eventsourced.projection_state SET status = 'failed', last_error = $2, "
	"updated_at = pg_catalog.now() "
	"WHERE name OPERATOR(pg_catalog.=) $1 COLLATE pg_catalog.\"C\" "
	"AND status OPERATOR(pg_catalog.=) 'running'",
	2, {TEXTOID, TEXTOID}
};

/*
 * Whether an error of a projection's registration checks says the
 * projection cannot run as registered (a syntax or access rule violation,
 * class 42: handler gone, changed hands, no EXECUTE or SELECT), rather
 * than something passing (a cancel, a lock timeout).
 */
bool
es_projection_refused(int sqlerrcode)
{
	return ERRCODE_TO_CATEGORY(sqlerrcode) == ERRCODE_SYNTAX_ERROR_OR_ACCESS_RULE_VIOLATION;
}

/*
 * The error a projection's registration raises in its checks, if it still
 * does (a syntax or access rule violation, class 42), in the caller's
 * memory context; NULL when the checks pass now or fail otherwise.  The
 * checks run in a subtransaction, so the caller's transaction goes on.
 */
static char *
es_projection_refusal(EsProjection *p)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	char	   *volatile refusal = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		es_check_run(p);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		if (es_projection_refused(edata->sqlerrcode))
			refusal = psprintf("%s (SQLSTATE %s)", edata->message, unpack_sql_state(edata->sqlerrcode));
		FreeErrorData(edata);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	return refusal;
}

/*
 * Mark a running projection failed when its registration still fails its
 * checks (the background worker, after they failed for a while); under the
 * projection's lock, so that a run, reset or drop in between wins.  Returns
 * the error it was marked failed with, or NULL.
 */
char *
es_projection_fail_refused(text *name)
{
	EsProjection p;
	char	   *refusal;

	if (!es_lock_projection(name, true) || !es_read_projection(name, &p) || p.failed)
		return NULL;
	refusal = es_projection_refusal(&p);
	if (refusal == NULL || !es_projection_mark_failed(name, refusal))
		return NULL;
	return refusal;
}

/* Mark a running projection failed, with a message; whether it was running */
bool
es_projection_mark_failed(text *name, const char *message)
{
	Datum		values[2] = {PointerGetDatum(name), CStringGetTextDatum(message)};

	return es_exec_as_owner(es_catalog()->projection_state, &fail_projection, values, NULL) > 0;
}

/* GUCs of projections */
void
es_projection_init(void)
{
	DefineCustomIntVariable("eventsourced.projection_max_retries",
							"Handler failures in a row after which a 'retry' projection stops (0: retry forever).",
							NULL, &es_projection_max_retries, 3, 0, 1000000,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("eventsourced.projection_timeout",
							"Longest time the background worker lets a batch's handler calls run before the event counts as failed (0: no limit).",
							NULL, &projection_timeout_ms, 60000, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
}
