/*
 * launcher.c
 *		The launcher (library preloaded): one background worker, connected to
 *		no database, that gives each database where the extension exists its
 *		workers (worker.c: a notifier and eventsourced.projection_workers
 *		projection workers), without any database being listed.
 *		eventsourced.worker_databases ('*' by default) only restricts which.
 *
 * A background worker is bound to one database, and only a session of a
 * database can see whether the extension exists there, so:
 *   - at its start the launcher *probes* each connectable, non-template,
 *     listed database: it starts the database's notifier, which looks for
 *     the extension and leaves at once (reporting ES_SLOT_NO_EXTENSION)
 *     when there is none.  A probe is one short-lived connection; at most
 *     ES_LAUNCHER_PROBES run at a time.  The catalog stays the only truth
 *     (nothing to go stale in a file when a database is copied, restored
 *     or replicated);
 *   - afterwards backends tell the launcher (dbwatch.c, at commit): the
 *     extension was created (start the workers) or dropped (stop them), a
 *     database was created (probe it: its template may have had the
 *     extension) or altered (renamed, made a template, closed to
 *     connections: look at it again);
 *   - a statement that needs a database to itself (DROP DATABASE, CREATE
 *     DATABASE ... TEMPLATE, ALTER DATABASE ... RENAME or SET TABLESPACE)
 *     first marks the database as being left and terminates its workers,
 *     as PostgreSQL does with autovacuum's (es_launcher_mark_leaving); the
 *     launcher starts none there until the mark goes at the end of that
 *     transaction.
 * A worker that stopped otherwise (killed, or its handler had to be
 * stopped) is started again after ES_WORKER_RESTART_SECS.  Worker slots
 * that cannot be had (max_worker_processes) leave databases without
 * workers: the launcher says which in a WARNING, and tries again each
 * ES_LAUNCHER_TICK_MS.
 *
 * Locking: one LWLock guards the request queue, the leaving marks, and each
 * slot's dboid, generation, pid and state.  A worker claims its slot (and
 * publishes its pid) under that lock before it connects, and gives up if
 * its database is being left; a leaving mark is set, and the workers of
 * the database signalled, under the same lock; so either the backend sees
 * the worker's pid, or the worker sees the mark.
 */
#include "launcher.h"

#include <signal.h>

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/fmgroids.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

#define ES_LAUNCHER_QUEUE		64	/* requests waiting for the launcher */
#define ES_LAUNCHER_LEAVING		32	/* databases being left at once */
#define ES_LAUNCHER_PROBES		2	/* probes at a time */
#define ES_LAUNCHER_TICK_MS		1000
#define ES_LAUNCHER_LEFTOVER_MS 10000	/* wait for a former launcher's workers */
#define ES_WORKER_RESTART_SECS	2
#define ES_LAUNCHER_WARN_MS		5000	/* a shortage of slots that lasts is reported */

PGDLLEXPORT void eventsourced_launcher_main(Datum arg);

typedef struct EsLaunchRequest
{
	int			what;			/* ES_LAUNCH_* */
	Oid			dboid;
} EsLaunchRequest;

/* A database being left, and by how many statements */
typedef struct EsLeaving
{
	Oid			dboid;
	int			count;
} EsLeaving;

typedef struct EsLauncherShared
{
	LWLock	   *lock;
	Latch	   *latch;			/* the launcher's, NULL when none runs */
	int			nrequests;
	bool		overflow;		/* requests were lost: look at every database */
	EsLaunchRequest requests[ES_LAUNCHER_QUEUE];
	EsLeaving	leaving[ES_LAUNCHER_LEAVING];
	int			nslots;
	EsWorkerSlot slots[FLEXIBLE_ARRAY_MEMBER];
} EsLauncherShared;

static EsLauncherShared *shared = NULL;

static char *worker_databases = NULL;
static int	projection_workers = 1;

/* The launcher's view of one database */
#define ES_DB_PROBE		0		/* not known to have the extension: its notifier looks */
#define ES_DB_SERVED	1		/* has the extension: all its workers run */
#define ES_DB_ABSENT	2		/* no extension: no worker */

typedef struct EsLaunchDb
{
	Oid			dboid;			/* hash key */
	char		name[NAMEDATALEN];
	int			state;
	int			slot[ES_WORKER_KINDS];	/* -1: none */
	bool		recheck;		/* look at its pg_database row again */
	bool		probe_again;	/* the extension was created while a probe ran */
	bool		no_table;		/* no free slot in our table on the last try */
	TimestampTz unserved_since; /* lacks a worker for want of a slot; 0: does not */
} EsLaunchDb;

/* The launcher's side of a slot */
typedef struct EsLaunchSlot
{
	bool		used;
	bool		released;		/* its database no longer wants it: free once stopped */
	Oid			dboid;
	BackgroundWorkerHandle *handle; /* NULL when no worker of it runs */
	TimestampTz stopped_at;		/* 0: start at once */
	bool		no_room;		/* the last registration found no worker slot */
} EsLaunchSlot;

static HTAB *dbs = NULL;
static EsLaunchSlot *lslots = NULL;
static List *listed = NIL;		/* eventsourced.worker_databases ("*": every one) */
static char *warned = NULL;		/* the databases named in the last WARNING */

/* Size of the shared part: a slot per possible background worker */
static Size
es_launcher_shmem_size(void)
{
	return add_size(offsetof(EsLauncherShared, slots),
					mul_size(Max(max_worker_processes, 1), sizeof(EsWorkerSlot)));
}

/* Create or attach to the shared part */
static void
es_launcher_shmem_attach(void *ptr, bool found)
{
	shared = ptr;
	if (found)
		return;
	memset(shared, 0, es_launcher_shmem_size());
	shared->lock = &(GetNamedLWLockTranche("eventsourced launcher"))->lock;
	shared->nslots = Max(max_worker_processes, 1);
}

static const EsShmemPart launcher_part = {
	"eventsourced launcher", es_launcher_shmem_size, 1, es_launcher_shmem_attach
};

/*
 * Split eventsourced.worker_databases; false on bad syntax.  The list
 * lives in TopMemoryContext (a background worker drops the postmaster's
 * context, where _PG_init ran).
 */
static bool
es_split_databases(const char *value, List **names)
{
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
	bool		ok;

	*names = NIL;
	ok = SplitIdentifierString(pstrdup(value), ',', names);
	MemoryContextSwitchTo(old);
	return ok;
}

/* Whether eventsourced.worker_databases lets a database have workers */
static bool
es_database_listed(const char *name)
{
	ListCell   *lc;

	if (listed == NIL)
		return false;
	foreach(lc, listed)
		if (strcmp((const char *) lfirst(lc), "*") == 0 ||
			strcmp((const char *) lfirst(lc), name) == 0)
			return true;
	return false;
}

/* eventsourced.projection_workers */
int
es_projection_workers(void)
{
	return projection_workers;
}

/* What the launcher and the workers have in common: ours, connected, after recovery */
static void
es_bgworker_init(BackgroundWorker *worker, const char *function, int restart_time,
				 const char *type)
{
	memset(worker, 0, sizeof(*worker));
	worker->bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker->bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker->bgw_restart_time = restart_time;
	strlcpy(worker->bgw_library_name, "eventsourced", BGW_MAXLEN);
	strlcpy(worker->bgw_function_name, function, BGW_MAXLEN);
	strlcpy(worker->bgw_type, type, BGW_MAXLEN);
}

/* Register the launcher itself: a static worker, started again if it fails */
static void
es_launcher_register(void)
{
	BackgroundWorker worker;

	es_bgworker_init(&worker, "eventsourced_launcher_main", ES_WORKER_RESTART_SECS,
					 "eventsourced launcher");
	strlcpy(worker.bgw_name, "eventsourced launcher", BGW_MAXLEN);
	RegisterBackgroundWorker(&worker);
}

/*
 * The settings of which databases get workers, the shared part and the
 * launcher.  Only while preloading: the settings need a restart, and
 * without preloading there are no workers.
 */
void
es_launcher_init(void)
{
	DefineCustomStringVariable("eventsourced.worker_databases",
							   "Databases whose projections and notifications background workers handle: '*' for every database where the extension exists, or a comma-separated list.",
							   NULL, &worker_databases, "*", PGC_POSTMASTER, GUC_LIST_INPUT,
							   NULL, NULL, NULL);
	DefineCustomIntVariable("eventsourced.projection_workers",
							"Projection workers per database (0: none); each database with the extension also gets one notifier.",
							NULL, &projection_workers, 1, 0, ES_MAX_WORKERS_PER_DB,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
	/* the server does not start (rather than falling back to every database) */
	if (!es_split_databases(worker_databases, &listed))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for parameter \"eventsourced.worker_databases\": \"%s\"",
						worker_databases),
				 errdetail("List syntax is invalid."),
				 errhint("Write '*' for every database, or database names separated by commas.")));
	es_shmem_register(&launcher_part);
	es_launcher_register();
}

/* Index of a database's leaving mark, or -1 (lock held) */
static int
es_leaving_index(Oid dboid)
{
	for (int i = 0; i < ES_LAUNCHER_LEAVING; i++)
		if (shared->leaving[i].dboid == dboid)
			return i;
	return -1;
}

/* Wake the launcher, if one runs */
static void
es_launcher_wake(void)
{
	Latch	   *latch;

	LWLockAcquire(shared->lock, LW_SHARED);
	latch = shared->latch;
	LWLockRelease(shared->lock);
	if (latch != NULL)
		SetLatch(latch);
}

/* Ask the launcher to act on a database (a backend, at commit) */
void
es_launcher_request(int what, Oid dboid)
{
	if (shared == NULL)
		return;
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	if (shared->nrequests < ES_LAUNCHER_QUEUE)
		shared->requests[shared->nrequests++] = (EsLaunchRequest) {what, dboid};
	else
		shared->overflow = true;
	LWLockRelease(shared->lock);
	es_launcher_wake();
}

/*
 * A statement is about to need a database to itself: mark it left (no
 * worker starts there) and terminate the workers it has.  Returns whether
 * it was marked (false when too many databases are being left at once;
 * its workers are terminated anyway).  Undo with es_launcher_unmark_leaving.
 */
bool
es_launcher_mark_leaving(Oid dboid)
{
	int			i;

	if (shared == NULL || !OidIsValid(dboid))
		return false;
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	i = es_leaving_index(dboid);
	if (i < 0 && (i = es_leaving_index(InvalidOid)) >= 0)
		shared->leaving[i].dboid = dboid;
	if (i >= 0)
		shared->leaving[i].count++;
	for (int s = 0; s < shared->nslots; s++)
		if (shared->slots[s].dboid == dboid && shared->slots[s].pid != 0)
			(void) kill(shared->slots[s].pid, SIGTERM);
	LWLockRelease(shared->lock);
	return i >= 0;
}

/* The statement that marked a database left ended */
void
es_launcher_unmark_leaving(Oid dboid)
{
	int			i;

	if (shared == NULL)
		return;
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	i = es_leaving_index(dboid);
	if (i >= 0 && --shared->leaving[i].count == 0)
		shared->leaving[i].dboid = InvalidOid;
	LWLockRelease(shared->lock);
}

/* Whether a database is being left */
static bool
es_launcher_leaving(Oid dboid)
{
	bool		result;

	LWLockAcquire(shared->lock, LW_SHARED);
	result = es_leaving_index(dboid) >= 0;
	LWLockRelease(shared->lock);
	return result;
}

/* A worker exits: its pid no longer stands for the slot */
static void
es_launcher_release_pid(int code, Datum arg)
{
	EsWorkerSlot *slot = &shared->slots[DatumGetInt32(arg)];

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	if (slot->pid == MyProcPid)
		slot->pid = 0;
	LWLockRelease(shared->lock);
}

/*
 * A worker, before it connects: take its slot (publish its pid there) if
 * the slot is still the one the launcher gave it and its database is not
 * being left; NULL means the worker must leave.
 */
EsWorkerSlot *
es_launcher_claim_slot(int slot, const EsWorkerExtra *extra)
{
	EsWorkerSlot *s;
	bool		mine;

	if (shared == NULL || slot < 0 || slot >= shared->nslots)
		return NULL;
	s = &shared->slots[slot];
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	mine = s->dboid == extra->dboid && s->kind == extra->kind &&
		s->generation == extra->generation && es_leaving_index(extra->dboid) < 0;
	if (mine)
		s->pid = MyProcPid;
	LWLockRelease(shared->lock);
	if (!mine)
		return NULL;
	before_shmem_exit(es_launcher_release_pid, Int32GetDatum(slot));
	return s;
}

/* A worker tells the launcher what it found (ES_SLOT_*) */
void
es_launcher_report(EsWorkerSlot *slot, int state)
{
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	slot->state = state;
	LWLockRelease(shared->lock);
	es_launcher_wake();
}

/* Free a slot of our table */
static void
es_slot_free(int i)
{
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	shared->slots[i].dboid = InvalidOid;
	shared->slots[i].pid = 0;
	LWLockRelease(shared->lock);
	memset(&lslots[i], 0, sizeof(EsLaunchSlot));
}

/* A slot for a worker of a database, or -1 when the table is full */
static int
es_slot_alloc(EsLaunchDb *db, int kind)
{
	for (int i = 0; i < shared->nslots; i++)
	{
		EsWorkerSlot *s = &shared->slots[i];

		if (lslots[i].used)
			continue;
		LWLockAcquire(shared->lock, LW_EXCLUSIVE);
		s->dboid = db->dboid;
		s->kind = kind;
		s->pid = 0;
		s->state = ES_SLOT_STARTING;
		s->running[0] = '\0';
		s->hard_stopped = false;
		LWLockRelease(shared->lock);
		lslots[i] = (EsLaunchSlot) {.used = true, .dboid = db->dboid};
		return i;
	}
	return -1;
}

/* Register the worker of a slot; false when no background worker slot was free */
static bool
es_slot_start(EsLaunchDb *db, int i)
{
	BackgroundWorker worker;
	EsWorkerSlot *s = &shared->slots[i];
	EsWorkerExtra extra;
	MemoryContext old;

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	s->generation++;
	s->state = ES_SLOT_STARTING;
	extra = (EsWorkerExtra) {s->dboid, s->kind, s->generation};
	LWLockRelease(shared->lock);
	/* restarted by the launcher, which knows whether the database still wants it */
	es_bgworker_init(&worker, "eventsourced_worker_main", BGW_NEVER_RESTART,
					 extra.kind == 0 ? "eventsourced notifier" : "eventsourced worker");
	if (extra.kind == 0)
		snprintf(worker.bgw_name, BGW_MAXLEN, "eventsourced notifier for %s", db->name);
	else
		snprintf(worker.bgw_name, BGW_MAXLEN, "eventsourced worker %d for %s", extra.kind, db->name);
	worker.bgw_main_arg = Int32GetDatum(i);
	memcpy(worker.bgw_extra, &extra, sizeof(extra));
	worker.bgw_notify_pid = MyProcPid;
	lslots[i].stopped_at = GetCurrentTimestamp();
	old = MemoryContextSwitchTo(TopMemoryContext);	/* the handle outlives the pass */
	lslots[i].no_room = !RegisterDynamicBackgroundWorker(&worker, &lslots[i].handle);
	MemoryContextSwitchTo(old);
	if (lslots[i].no_room)
		lslots[i].handle = NULL;
	return !lslots[i].no_room;
}

/* A database no longer wants a slot: stop its worker, free it once stopped */
static void
es_slot_release(int i)
{
	if (lslots[i].handle == NULL)
	{
		es_slot_free(i);
		return;
	}
	TerminateBackgroundWorker(lslots[i].handle);
	lslots[i].released = true;
}

/* Stop every worker of a database */
static void
es_db_release_slots(EsLaunchDb *db)
{
	for (int k = 0; k < ES_WORKER_KINDS; k++)
	{
		if (db->slot[k] >= 0)
			es_slot_release(db->slot[k]);
		db->slot[k] = -1;
	}
}

/* Whether a pg_database row may have workers */
static bool
es_database_eligible(Form_pg_database form)
{
	return form->datallowconn && !form->datistemplate &&
		es_database_listed(NameStr(form->datname));
}

/* The launcher's entry of a database, made (to be probed) if new */
static EsLaunchDb *
es_db_enter(Oid dboid, const char *name)
{
	bool		found;
	EsLaunchDb *db = hash_search(dbs, &dboid, HASH_ENTER, &found);

	if (!found)
	{
		db->state = ES_DB_PROBE;
		for (int k = 0; k < ES_WORKER_KINDS; k++)
			db->slot[k] = -1;
		db->recheck = db->probe_again = db->no_table = false;
		db->unserved_since = 0;
	}
	strlcpy(db->name, name, NAMEDATALEN);
	return db;
}

/* Forget a database: it was dropped, or may no longer have workers */
static void
es_db_forget(EsLaunchDb *db)
{
	Oid			dboid = db->dboid;

	es_db_release_slots(db);
	(void) hash_search(dbs, &dboid, HASH_REMOVE, NULL);
}

/*
 * Look at a database's pg_database row again: an entry for it if it may
 * have workers (made if new), else its entry is forgotten and NULL.  Read
 * with a fresh snapshot, not through the syscache: a backend asks just
 * after its commit, before it sends the invalidations.
 */
static EsLaunchDb *
es_db_recheck(Oid dboid)
{
	Relation	rel;
	TableScanDesc scan;
	ScanKeyData key;
	HeapTuple	tuple;
	EsLaunchDb *db = NULL;
	char		name[NAMEDATALEN] = "";
	bool		eligible = false;
	MemoryContext cxt = CurrentMemoryContext;

	StartTransactionCommand();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_database_oid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(dboid));
	scan = table_beginscan_catalog(rel, 1, &key);	/* no index: no database selected */
	if (HeapTupleIsValid(tuple = heap_getnext(scan, ForwardScanDirection)))
	{
		eligible = es_database_eligible((Form_pg_database) GETSTRUCT(tuple));
		strlcpy(name, NameStr(((Form_pg_database) GETSTRUCT(tuple))->datname), NAMEDATALEN);
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);
	if (eligible)
		return es_db_enter(dboid, name);
	db = hash_search(dbs, &dboid, HASH_FIND, NULL);
	if (db != NULL)
		es_db_forget(db);
	return NULL;
}

/*
 * Look at every database: each that may have workers and is new is probed;
 * those gone or no longer allowed are forgotten.
 */
static void
es_db_scan(void)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tuple;
	HASH_SEQ_STATUS seq;
	EsLaunchDb *db;
	List	   *keep = NIL;
	MemoryContext cxt = CurrentMemoryContext;

	StartTransactionCommand();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tuple = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database form = (Form_pg_database) GETSTRUCT(tuple);

		if (!es_database_eligible(form))
			continue;
		(void) es_db_enter(form->oid, NameStr(form->datname));
		keep = lappend_oid(keep, form->oid);
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	hash_seq_init(&seq, dbs);
	while ((db = hash_seq_search(&seq)) != NULL)
		if (!list_member_oid(keep, db->dboid))
			es_db_forget(db);
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);
}

/* Act on one request of a backend */
static void
es_launcher_handle(const EsLaunchRequest *r)
{
	EsLaunchDb *db = hash_search(dbs, &r->dboid, HASH_FIND, NULL);

	elog(DEBUG1, "eventsourced launcher: request %d for database %u (state %d)",
		 r->what, r->dboid, db ? db->state : -1);
	switch (r->what)
	{
		case ES_LAUNCH_START:
			if (db == NULL || db->state == ES_DB_ABSENT)
			{
				if ((db = es_db_recheck(r->dboid)) != NULL)
					db->state = ES_DB_PROBE;
			}
			else if (db->state == ES_DB_PROBE)
				db->probe_again = true; /* its probe may have looked too early */
			break;
		case ES_LAUNCH_STOP:
			if (db != NULL)
			{
				es_db_release_slots(db);
				db->state = ES_DB_ABSENT;
			}
			break;
		case ES_LAUNCH_RECHECK:
			(void) es_db_recheck(r->dboid);
			break;
	}
}

/* Take the backends' requests and act on them */
static void
es_launcher_take_requests(void)
{
	EsLaunchRequest requests[ES_LAUNCHER_QUEUE];
	int			n;
	bool		overflow;

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	n = shared->nrequests;
	memcpy(requests, shared->requests, n * sizeof(EsLaunchRequest));
	overflow = shared->overflow;
	shared->nrequests = 0;
	shared->overflow = false;
	LWLockRelease(shared->lock);
	for (int i = 0; i < n; i++)
		es_launcher_handle(&requests[i]);
	if (overflow)
		es_db_scan();
}

/* What the worker of a slot reported (ES_SLOT_*) */
static int
es_slot_state(int i)
{
	int			state;

	LWLockAcquire(shared->lock, LW_SHARED);
	state = shared->slots[i].state;
	LWLockRelease(shared->lock);
	return state;
}

/* What a stopped worker means for its database */
static void
es_launcher_stopped(EsLaunchDb *db, int i)
{
	int			state = es_slot_state(i);

	elog(DEBUG1, "eventsourced launcher: worker %d of database \"%s\" stopped (state %d)",
		 shared->slots[i].kind, db->name, state);
	if (db->slot[0] != i || state != ES_SLOT_NO_EXTENSION)
	{
		db->recheck = true;		/* dropped? made a template? else restart it */
		return;
	}
	if (db->probe_again)
	{
		db->probe_again = false;
		lslots[i].stopped_at = 0;
		return;
	}
	es_db_release_slots(db);
	db->state = ES_DB_ABSENT;
}

/* Notice the workers that stopped, and the notifiers that found the extension */
static void
es_launcher_observe(void)
{
	for (int i = 0; i < shared->nslots; i++)
	{
		EsLaunchSlot *ls = &lslots[i];
		EsLaunchDb *db;
		pid_t		pid;

		if (!ls->used || ls->handle == NULL)
			continue;
		db = ls->released ? NULL : hash_search(dbs, &ls->dboid, HASH_FIND, NULL);
		if (GetBackgroundWorkerPid(ls->handle, &pid) != BGWH_STOPPED)
		{
			if (db != NULL && db->state == ES_DB_PROBE && db->slot[0] == i &&
				es_slot_state(i) == ES_SLOT_SERVING)
			{
				db->state = ES_DB_SERVED;
				db->probe_again = false;
			}
			continue;
		}
		pfree(ls->handle);
		ls->handle = NULL;
		ls->stopped_at = GetCurrentTimestamp();
		if (db == NULL)
			es_slot_free(i);
		else
			es_launcher_stopped(db, i);
	}
}

/* Whether a stopped worker may be started (again) now */
static bool
es_slot_due(int i)
{
	return lslots[i].handle == NULL &&
		(lslots[i].stopped_at == 0 ||
		 TimestampDifferenceExceeds(lslots[i].stopped_at, GetCurrentTimestamp(),
									ES_WORKER_RESTART_SECS * 1000));
}

/* Start (or start again) one kind of worker of a database */
static void
es_db_serve_kind(EsLaunchDb *db, int kind)
{
	int			i = db->slot[kind];

	if (i < 0)
	{
		if ((i = es_slot_alloc(db, kind)) < 0)
		{
			db->no_table = true;
			return;
		}
		db->slot[kind] = i;
	}
	if (es_slot_due(i))
		(void) es_slot_start(db, i);
}

/* Give a database the workers it should have; *probes counts the probes running */
static void
es_db_serve(EsLaunchDb *db, int *probes)
{
	bool		probing;

	db->no_table = false;
	if (db->recheck)
	{
		db->recheck = false;
		if (es_db_recheck(db->dboid) == NULL)
			return;
	}
	if (db->state == ES_DB_ABSENT || es_launcher_leaving(db->dboid))
		return;
	probing = db->state == ES_DB_PROBE &&
		(db->slot[0] < 0 || lslots[db->slot[0]].handle == NULL);
	if (probing && *probes >= ES_LAUNCHER_PROBES)
		return;
	es_db_serve_kind(db, 0);
	if (probing && db->slot[0] >= 0 && lslots[db->slot[0]].handle != NULL)
		(*probes)++;
	if (db->state != ES_DB_SERVED)
		return;
	for (int k = 1; k <= projection_workers; k++)
		es_db_serve_kind(db, k);
}

/* Number of probes running: notifiers that have not found the extension yet */
static int
es_probes_running(void)
{
	HASH_SEQ_STATUS seq;
	EsLaunchDb *db;
	int			n = 0;

	hash_seq_init(&seq, dbs);
	while ((db = hash_seq_search(&seq)) != NULL)
		if (db->state == ES_DB_PROBE && db->slot[0] >= 0 && lslots[db->slot[0]].handle != NULL)
			n++;
	return n;
}

/* Serve every database (a list first: serving may forget entries) */
static void
es_launcher_serve_all(void)
{
	HASH_SEQ_STATUS seq;
	EsLaunchDb *db;
	List	   *oids = NIL;
	ListCell   *lc;
	int			probes = es_probes_running();

	hash_seq_init(&seq, dbs);
	while ((db = hash_seq_search(&seq)) != NULL)
		oids = lappend_oid(oids, db->dboid);
	foreach(lc, oids)
	{
		Oid			dboid = lfirst_oid(lc);

		if ((db = hash_search(dbs, &dboid, HASH_FIND, NULL)) != NULL)
			es_db_serve(db, &probes);
	}
	list_free(oids);
}

/*
 * Whether a database has lacked a worker it should have, for want of a
 * slot, for ES_LAUNCHER_WARN_MS (a moment's shortage, while probes end, is
 * not worth a WARNING).
 */
static bool
es_db_unserved(EsLaunchDb *db)
{
	bool		lacks = db->no_table;

	for (int k = 0; k < ES_WORKER_KINDS; k++)
		lacks |= (db->slot[k] >= 0 && lslots[db->slot[k]].no_room);
	if (!lacks)
		db->unserved_since = 0;
	else if (db->unserved_since == 0)
		db->unserved_since = GetCurrentTimestamp();
	return lacks && TimestampDifferenceExceeds(db->unserved_since, GetCurrentTimestamp(),
											   ES_LAUNCHER_WARN_MS);
}

/* Compare two names for list_sort */
static int
es_name_cmp(const ListCell *a, const ListCell *b)
{
	return strcmp((const char *) lfirst(a), (const char *) lfirst(b));
}

/*
 * Say which databases have no (or not all of their) workers for want of a
 * background worker slot, whenever that set changes.
 */
static void
es_launcher_warn(void)
{
	HASH_SEQ_STATUS seq;
	EsLaunchDb *db;
	List	   *names = NIL;
	StringInfoData buf;
	ListCell   *lc;

	hash_seq_init(&seq, dbs);
	while ((db = hash_seq_search(&seq)) != NULL)
		if (es_db_unserved(db))
			names = lappend(names, db->name);
	list_sort(names, es_name_cmp);
	initStringInfo(&buf);
	foreach(lc, names)
		appendStringInfo(&buf, "%s%s", buf.len > 0 ? ", " : "", quote_identifier(lfirst(lc)));
	if (strcmp(buf.data, warned ? warned : "") != 0)
	{
		if (buf.len > 0)
			ereport(WARNING,
					(errmsg("eventsourced: no background worker slot for database%s %s",
							list_length(names) > 1 ? "s" : "", buf.data),
					 errdetail("Each has the extension or has not been checked for it yet (the check needs a slot too). Until a slot is free, appends there send their notifications themselves and projections run only when run_projection() is called; the launcher tries again every second."),
					 errhint("Raise max_worker_processes (a restart): each database with the extension needs 1 + eventsourced.projection_workers (%d) slots, the launcher one, and parallel queries share them; or restrict eventsourced.worker_databases.",
							 projection_workers)));
		else
			ereport(LOG, (errmsg("eventsourced: every database has its background workers again")));
		if (warned)
			pfree(warned);
		warned = MemoryContextStrdup(TopMemoryContext, buf.data);
	}
	pfree(buf.data);
	list_free(names);
}

/* Unpublish the launcher's latch when it exits */
static void
es_launcher_exit(int code, Datum arg)
{
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	if (shared->latch == MyLatch)
		shared->latch = NULL;
	LWLockRelease(shared->lock);
}

/*
 * A former launcher of this server (it failed, or was terminated) may have
 * left workers behind: stop them, so that no database has two notifiers,
 * and start afresh.
 */
static void
es_launcher_stop_leftovers(void)
{
	TimestampTz start = GetCurrentTimestamp();
	bool		alive = true;

	while (alive && !TimestampDifferenceExceeds(start, GetCurrentTimestamp(), ES_LAUNCHER_LEFTOVER_MS))
	{
		alive = false;
		LWLockAcquire(shared->lock, LW_EXCLUSIVE);
		for (int i = 0; i < shared->nslots; i++)
		{
			if (shared->slots[i].pid == 0)
				continue;
			alive = true;
			(void) kill(shared->slots[i].pid, SIGTERM);
		}
		LWLockRelease(shared->lock);
		if (alive)
			(void) WaitLatch(MyLatch, WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 100, PG_WAIT_EXTENSION);
	}
	if (alive)
		ereport(WARNING, (errmsg("eventsourced: workers of a former launcher did not stop")));
	for (int i = 0; i < shared->nslots; i++)
		es_slot_free(i);
}

/* The launcher's tables, its latch published, former workers stopped */
static void
es_launcher_setup(void)
{
	HASHCTL		ctl;

	if (listed == NIL)
		ereport(LOG, (errmsg("eventsourced: eventsourced.worker_databases is empty: no database gets workers")));
	ctl.keysize = sizeof(Oid);
	ctl.entrysize = sizeof(EsLaunchDb);
	dbs = hash_create("eventsourced launcher databases", 64, &ctl, HASH_ELEM | HASH_BLOBS);
	lslots = MemoryContextAllocZero(TopMemoryContext, shared->nslots * sizeof(EsLaunchSlot));
	es_launcher_stop_leftovers();
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	shared->latch = MyLatch;
	LWLockRelease(shared->lock);
	before_shmem_exit(es_launcher_exit, (Datum) 0);
}

/* Entry point of the launcher */
void
eventsourced_launcher_main(Datum arg)
{
	MemoryContext pass_cxt;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("eventsourced launcher");
	es_launcher_setup();
	es_db_scan();
	pass_cxt = AllocSetContextCreate(TopMemoryContext, "eventsourced launcher pass",
									 ALLOCSET_DEFAULT_SIZES);
	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		ResetLatch(MyLatch);
		MemoryContextSwitchTo(pass_cxt);
		es_launcher_take_requests();
		es_launcher_observe();
		es_launcher_serve_all();
		es_launcher_warn();
		MemoryContextSwitchTo(TopMemoryContext);
		MemoryContextReset(pass_cxt);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 ES_LAUNCHER_TICK_MS, PG_WAIT_EXTENSION);
	}
}
