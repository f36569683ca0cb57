/*
 * worker.c
 *		Background workers (library preloaded): for each database where the
 *		extension exists, started by the launcher (launcher.c), one notifier
 *		sends the coalesced commit notifications, and eventsourced.projection_workers workers
 *		keep every running projection current.  Committing appenders wake
 *		them through their latch; eventsourced.worker_naptime is only the
 *		fallback poll.
 *
 * Notifications have a process of their own, so no projection handler,
 * however slow, delays them.  Projection workers take the projections in
 * turns, one batch each, and a batch ends once it has run for
 * ES_WORKER_SLICE_MS (after at least one event), so one slow projection
 * holds the others back for at most one handler call plus the slice.
 * Handlers run in their sandbox (sandbox.c), so nothing one owner's handler
 * does in the worker's session reaches another owner's (the session-level
 * advisory locks a handler may take, which restricted operations allow,
 * are released after each batch).  Like a client
 * session, a worker sets the statement start time of each transaction
 * (now() in handlers) and reports its table statistics (autovacuum).
 *
 * The notifier starts by looking for the extension and leaves when there is
 * none (the launcher's probe); the launcher stops the workers when the
 * extension is dropped, and before a statement that needs the database to
 * itself.  Each transaction still checks that the extension exists (it may
 * be dropped in the middle of a pass).  Runs of one projection by several
 * workers never overlap (run_projection's lock, taken without waiting).
 */
#include "launcher.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lock.h"
#include "storage/shmem.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

#define ES_WORKER_BATCH			1000
#define ES_WORKER_SLICE_MS		100		/* a batch's time before it yields */

static EsWorkerSlot *my_slot = NULL;	/* see launcher.h */

/*
 * How long a projection's registration must keep failing its checks
 * (handler dropped, changed hands or lost EXECUTE) before the worker marks
 * the projection failed instead of failing on it every pass.
 */
#define ES_WORKER_REFUSAL_GRACE_MS	10000

/* A projection whose registration fails its checks in this worker, and since when */
typedef struct EsRefusal
{
	char		name[ES_MAX_TYPE_LEN + 1];
	TimestampTz since;
} EsRefusal;

static List *refusals = NIL;	/* of EsRefusal, in TopMemoryContext */
static EsRunStatus batch_status;	/* the current batch's (static: read after longjmp) */

static int	worker_naptime_ms = 1000;
static int	worker_delay_ms = 2;

/* The handler running in this worker ignored its cancel: it is being stopped (signal-safe) */
void
es_worker_note_hard_stop(void)
{
	if (my_slot != NULL)
		my_slot->hard_stopped = true;
}

/* Work the worker does in a transaction of its own: returns a message or NULL */
typedef const char *(*EsWorkerWork) (const char *name, const char *message);

/*
 * Run work in a transaction of its own (if the extension exists); an error
 * in it is logged and rolled back instead of ending the worker.  Returns
 * work's result, copied into TopMemoryContext (the caller frees it).
 */
static char *
es_worker_transaction(EsWorkerWork work, const char *name, const char *message)
{
	char	   *volatile result = NULL;

	PG_TRY();
	{
		const char *r = NULL;

		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());
		if (OidIsValid(get_extension_oid("eventsourced", true)))
			r = work(name, message);
		if (r != NULL)
			result = MemoryContextStrdup(TopMemoryContext, r);
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		EmitErrorReport();
		AbortCurrentTransaction();
		FlushErrorState();
		if (result != NULL)
			pfree(result);
		result = NULL;
	}
	PG_END_TRY();
	return result;
}

/* Mark a projection failed with message (its handler had to be stopped) */
static const char *
es_worker_mark_stopped(const char *name, const char *message)
{
	return es_projection_mark_failed(cstring_to_text(name), message) ? message : NULL;
}

/* Mark a projection failed if its registration still fails its checks */
static const char *
es_worker_mark_refused(const char *name, const char *message)
{
	return es_projection_fail_refused(cstring_to_text(name));
}

/*
 * At start: if this worker's predecessor had to be stopped inside a
 * projection's handler, mark that projection failed, so that it is not
 * run again before its owner looks at it.
 */
static void
es_worker_fail_stopped_projection(void)
{
	char	   *message;

	if (my_slot == NULL || !my_slot->hard_stopped || my_slot->running[0] == '\0')
		return;
	message = es_worker_transaction(es_worker_mark_stopped, my_slot->running,
									"projection handler did not stop when cancelled at eventsourced.projection_timeout; the worker was restarted");
	if (message != NULL)
	{
		ereport(WARNING,
				(errmsg("projection \"%s\" is marked failed: its handler ignored the cancel at eventsourced.projection_timeout",
						my_slot->running)));
		pfree(message);
	}
	my_slot->running[0] = '\0';
	my_slot->hard_stopped = false;
}

/*
 * GUCs of the workers; while preloading, the launcher's too (launcher.c),
 * which starts the workers.
 */
void
es_worker_init(void)
{
	DefineCustomIntVariable("eventsourced.worker_naptime",
							"How long a worker sleeps when no commit wakes it.",
							NULL, &worker_naptime_ms, 1000, 10, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("eventsourced.worker_delay",
							"How long a woken worker waits, so that the commits of that time are handled in one pass.",
							NULL, &worker_delay_ms, 2, 0, 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	if (process_shared_preload_libraries_in_progress)
		es_launcher_init();
}

/* Names of the running projections, if the extension exists (own transaction) */
static List *
es_worker_projection_names(MemoryContext cxt)
{
	List	   *names = NIL;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (OidIsValid(get_extension_oid("eventsourced", true)))
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		if (SPI_execute("SELECT name FROM eventsourced.projection_state "
						"WHERE status OPERATOR(pg_catalog.=) 'running' ORDER BY name",
						true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not list projections");
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			MemoryContext old = MemoryContextSwitchTo(cxt);

			names = lappend(names, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1));
			MemoryContextSwitchTo(old);
		}
		SPI_finish();
	}
	PopActiveSnapshot();
	CommitTransactionCommand();
	return names;
}

/* Name the projection in the errors of its batch */
static void
es_worker_batch_context(void *arg)
{
	errcontext("eventsourced worker running projection \"%s\"", (const char *) arg);
}

/*
 * One batch of one projection in its own transaction, at most one time
 * slice long; fills *outcome.
 */
static void
es_worker_run_batch(const char *name, EsRunStatus *outcome)
{
	ErrorContextCallback context = {error_context_stack, es_worker_batch_context, (void *) name};

	error_context_stack = &context;
	if (my_slot != NULL)
		strlcpy(my_slot->running, name, sizeof(my_slot->running));
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, name);
	(void) es_run_projection(cstring_to_text(name), ES_WORKER_BATCH, true,
							 TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ES_WORKER_SLICE_MS),
							 outcome);
	PopActiveSnapshot();
	CommitTransactionCommand();
	error_context_stack = context.previous;
	/* a handler's session-level advisory locks would outlive it here */
	LockReleaseSession(USER_LOCKMETHOD);
	pgstat_report_activity(STATE_IDLE, NULL);
	pgstat_report_stat(false);
}

static bool relist = true;		/* list the running projections again */

/* Forget the refusals of projections no longer running (dropped, failed) */
static void
es_worker_forget_refusals(List *running)
{
	ListCell   *lc;

	foreach(lc, refusals)
	{
		EsRefusal  *r = lfirst(lc);
		ListCell   *n;
		bool		found = false;

		foreach(n, running)
			found |= (strcmp((const char *) lfirst(n), r->name) == 0);
		if (found)
			continue;
		refusals = foreach_delete_current(refusals, lc);
		pfree(r);
	}
}

/* The running projections, listed again at most once per naptime */
static List *
es_worker_running(void)
{
	static MemoryContext cxt = NULL;
	static List *names = NIL;
	static TimestampTz listed_at = 0;
	TimestampTz now = GetCurrentTimestamp();

	if (!relist && !TimestampDifferenceExceeds(listed_at, now, worker_naptime_ms))
		return names;
	if (cxt == NULL)
		cxt = AllocSetContextCreate(TopMemoryContext, "eventsourced worker projections",
									ALLOCSET_SMALL_SIZES);
	MemoryContextReset(cxt);
	names = NIL;
	relist = true;
	names = es_worker_projection_names(cxt);
	es_worker_forget_refusals(names);
	relist = false;
	listed_at = now;
	return names;
}

/*
 * Note whether a projection's registration failed its checks in this
 * batch.  One that has kept failing them for ES_WORKER_REFUSAL_GRACE_MS is
 * marked failed, with the error, if it still fails them under the
 * projection's lock, instead of failing on every pass; a momentary state
 * (a function dropped and created again, a schema renamed back) passes.
 */
static void
es_worker_note_refusal(const char *name, bool refused)
{
	EsRefusal  *r = NULL;
	ListCell   *lc;
	char	   *message;
	MemoryContext old;

	foreach(lc, refusals)
		if (strcmp(((EsRefusal *) lfirst(lc))->name, name) == 0)
			r = lfirst(lc);
	if (r == NULL && refused)
	{
		old = MemoryContextSwitchTo(TopMemoryContext);
		r = palloc0(sizeof(EsRefusal));
		strlcpy(r->name, name, sizeof(r->name));
		r->since = GetCurrentTimestamp();
		refusals = lappend(refusals, r);
		MemoryContextSwitchTo(old);
		return;
	}
	if (r == NULL ||
		(refused && !TimestampDifferenceExceeds(r->since, GetCurrentTimestamp(), ES_WORKER_REFUSAL_GRACE_MS)))
		return;
	refusals = list_delete_ptr(refusals, r);
	pfree(r);
	if (!refused)
		return;
	message = es_worker_transaction(es_worker_mark_refused, name, NULL);
	if (message == NULL)
		return;
	ereport(WARNING,
			(errmsg("projection \"%s\" is marked failed: it can no longer run", name),
			 errdetail("%s", message),
			 errhint("Fix the cause, then resume it with eventsourced.reset_projection().")));
	pfree(message);
}

/*
 * A batch whose error is logged instead of ending the worker; whether it
 * progressed.  An error of the projection's registration checks (class
 * 42) is noted (es_worker_note_refusal).
 */
static bool
es_worker_try_batch(const char *name)
{
	volatile bool refused = false;

	batch_status = (EsRunStatus) {0};	/* also if the batch fails before its run */
	PG_TRY();
	{
		es_worker_run_batch(name, &batch_status);
	}
	PG_CATCH();
	{
		refused = batch_status.checking && es_projection_refused(geterrcode());
		EmitErrorReport();
		AbortCurrentTransaction();
		FlushErrorState();
		LockReleaseSession(USER_LOCKMETHOD);
		relist = true;
	}
	PG_END_TRY();
	if (my_slot != NULL)
		my_slot->running[0] = '\0';	/* the batch ended, however */
	/* a run that did not get to the checks (its lock was busy) says nothing */
	if (refused || batch_status.checked)
		es_worker_note_refusal(name, refused);
	return batch_status.progressed;
}

/* Reload the configuration when asked to */
static void
es_worker_reload(void)
{
	if (!ConfigReloadPending)
		return;
	ConfigReloadPending = false;
	ProcessConfigFile(PGC_SIGHUP);
}

/*
 * Bring every running projection up to date: rounds of one batch each,
 * until a round moves no checkpoint.
 */
static void
es_worker_pass(void)
{
	bool		more = true;

	while (more)
	{
		ListCell   *lc;
		List	   *names = es_worker_running();

		more = false;
		foreach(lc, names)
		{
			CHECK_FOR_INTERRUPTS();
			es_worker_reload();
			if (es_worker_try_batch((const char *) lfirst(lc)))
				more = true;
		}
	}
}

static volatile sig_atomic_t sleeping = false;	/* in es_worker_sleep */

/*
 * SIGTERM (the launcher stops the worker, a statement needs the database,
 * the server shuts down): a sleeping worker leaves quietly after its sleep;
 * a busy one is interrupted as any backend (a FATAL message), so that no
 * handler holds it up.
 */
static void
es_worker_sigterm(SIGNAL_ARGS)
{
	int			save_errno = errno;

	if (!sleeping)
		die(postgres_signal_arg);
	else
	{
		ShutdownRequestPending = true;
		SetLatch(MyLatch);
	}
	errno = save_errno;
}

/* Sleep until a commit wakes us (then the delay) or the naptime passes */
static void
es_worker_sleep(void)
{
	pgstat_report_stat(true);
	sleeping = true;
	if (!ShutdownRequestPending &&
		WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
				  worker_naptime_ms, PG_WAIT_EXTENSION) & WL_LATCH_SET &&
		worker_delay_ms > 0 && !ShutdownRequestPending)
		(void) WaitLatch(MyLatch, WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 worker_delay_ms, PG_WAIT_EXTENSION);
	sleeping = false;
	if (ShutdownRequestPending)
		proc_exit(0);
}

/*
 * The worker connects as the bootstrap superuser, but its database's
 * settings apply to it too: undo a role or session_authorization set
 * there (by the database's owner, say), so that no role can make the
 * worker act as itself.
 */
static void
es_worker_as_superuser(void)
{
	StartTransactionCommand();
	SetConfigOption("session_authorization", GetUserNameFromId(BOOTSTRAP_SUPERUSERID, false),
					PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("role", "none", PGC_SUSET, PGC_S_OVERRIDE);
	CommitTransactionCommand();
	if (GetUserId() != BOOTSTRAP_SUPERUSERID)
		elog(FATAL, "eventsourced worker could not run as the bootstrap superuser");
}

/* Whether the extension exists in the worker's database (own transaction) */
static bool
es_worker_extension_exists(void)
{
	bool		exists;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	exists = OidIsValid(get_extension_oid("eventsourced", true));
	CommitTransactionCommand();
	return exists;
}

/*
 * Connect to the worker's database, once its slot is claimed (launcher.h);
 * returns whether it is the notifier.  A worker whose slot was given away
 * or whose database is being left exits at once.
 */
static bool
es_worker_connect(Datum arg)
{
	EsWorkerExtra extra;

	memcpy(&extra, MyBgworkerEntry->bgw_extra, sizeof(extra));
	my_slot = es_launcher_claim_slot(DatumGetInt32(arg), &extra);
	if (my_slot == NULL)
		proc_exit(0);
	BackgroundWorkerInitializeConnectionByOid(extra.dboid, InvalidOid, 0);
	es_worker_as_superuser();
	return extra.kind == 0;
}

/*
 * The notifier first tells the launcher whether the extension exists here;
 * without it, it leaves (the launcher starts it again when the extension
 * is created).
 */
static void
es_worker_probe(void)
{
	if (es_worker_extension_exists())
	{
		es_launcher_report(my_slot, ES_SLOT_SERVING);
		return;
	}
	es_launcher_report(my_slot, ES_SLOT_NO_EXTENSION);
	proc_exit(0);
}

/* Entry point of a worker: the notifier of a database or one of its projection workers */
void
eventsourced_worker_main(Datum arg)
{
	MemoryContext pass_cxt;
	bool		notifier;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, es_worker_sigterm);
	BackgroundWorkerUnblockSignals();
	notifier = es_worker_connect(arg);
	pgstat_report_appname(notifier ? "eventsourced notifier" : "eventsourced worker");
	if (notifier)
		es_worker_probe();
	es_notify_register_worker(notifier);
	if (!notifier)
	{
		es_projection_worker_setup();
		es_worker_fail_stopped_projection();
	}
	pass_cxt = AllocSetContextCreate(TopMemoryContext, "eventsourced worker pass",
									 ALLOCSET_DEFAULT_SIZES);
	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		es_worker_reload();
		ResetLatch(MyLatch);
		MemoryContextSwitchTo(pass_cxt);
		if (notifier)
			(void) es_notify_flush();
		else
			es_worker_pass();
		MemoryContextSwitchTo(TopMemoryContext);
		MemoryContextReset(pass_cxt);
		es_worker_sleep();
	}
}
