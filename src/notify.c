/*
 * notify.c
 *		Notifications on channel "eventsourced" after a transaction that
 *		appended commits: payload {"entity_type": ..., "position": ...}, the
 *		highest position appended of that type, at most one per type.
 *
 * A plain NOTIFY serializes committing transactions on a global lock.  When
 * the library is preloaded and a worker runs for the database, committing
 * appenders only record (type, position) in a shared table and set the
 * worker's latch; the worker sends one coalesced NOTIFY per type.  Without a
 * worker, the appending transaction itself NOTIFYs just before it commits.
 *
 * Locking: the shared table and the worker registrations are protected by
 * one LWLock, held only to copy a few entries in or out.  Appenders publish
 * in XACT_EVENT_COMMIT, i.e. after their commit is visible, so a listener
 * woken by the notification always finds the events.
 */
#include "eventsourced.h"

#include "access/xact.h"
#include "commands/async.h"
#include "common/hashfn.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/memutils.h"

#define ES_NOTIFY_CHANNEL		"eventsourced"
#define ES_NOTIFY_ENTRIES		1024	/* (database, type) pairs pending */
#define ES_NOTIFY_MAX_WORKERS	64		/* registered notifying workers */
#define ES_PENDING_TYPES		16		/* types tracked per transaction */

/* One (database, type) pair with the highest position not yet notified */
typedef struct EsNotifyEntry
{
	Oid			dboid;			/* InvalidOid: free */
	bool		dirty;
	int64		position;
	char		type[ES_MAX_TYPE_LEN + 1];
} EsNotifyEntry;

typedef struct EsNotifyShared
{
	LWLock	   *lock;
	Oid			worker_db[ES_NOTIFY_MAX_WORKERS];
	Latch	   *worker_latch[ES_NOTIFY_MAX_WORKERS];
	bool		overflow_db_dirty;	/* a pair did not fit: notify "any type" */
	Oid			overflow_db;
	EsNotifyEntry entries[ES_NOTIFY_ENTRIES];
} EsNotifyShared;

/* A type this transaction appended to */
typedef struct EsPendingType
{
	char		type[ES_MAX_TYPE_LEN + 1];
	int64		position;
} EsPendingType;

bool		es_notify_enabled = true;

static EsNotifyShared *notify_shared = NULL;
static EsPendingType pending[ES_PENDING_TYPES];
static int	npending = 0;
static bool pending_overflow = false;	/* more types than tracked */
static int64 pending_max_position = 0;
static bool deferred = false;	/* publish to the worker at commit */
static int	my_worker_slot = -1;

/* Size of the shared table */
static Size
es_notify_shmem_size(void)
{
	return sizeof(EsNotifyShared);
}

/* Create or attach to the shared table */
static void
es_notify_shmem_attach(void *ptr, bool found)
{
	notify_shared = ptr;
	if (found)
		return;
	memset(notify_shared, 0, sizeof(EsNotifyShared));
	notify_shared->lock = &(GetNamedLWLockTranche("eventsourced notify"))->lock;
}

static const EsShmemPart notify_part = {
	"eventsourced notify", es_notify_shmem_size, 1, es_notify_shmem_attach
};

/* The JSON payload of one notification; type NULL means "some type" */
static char *
es_notify_payload(const char *type, int64 position)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"entity_type\": ");
	if (type)
		escape_json(&buf, type);
	else
		appendStringInfoString(&buf, "null");
	appendStringInfo(&buf, ", \"position\": " INT64_FORMAT "}", position);
	return buf.data;
}

/* Remember that this transaction appended up to position to a type */
void
es_notify_note(text *entity_type, int64 position)
{
	int			len = VARSIZE_ANY_EXHDR(entity_type);
	const char *data = VARDATA_ANY(entity_type);

	pending_max_position = Max(pending_max_position, position);
	for (int i = 0; i < npending; i++)
	{
		if (strlen(pending[i].type) == len && memcmp(pending[i].type, data, len) == 0)
		{
			pending[i].position = Max(pending[i].position, position);
			return;
		}
	}
	if (npending == ES_PENDING_TYPES)
	{
		pending_overflow = true;
		return;
	}
	memcpy(pending[npending].type, data, len);
	pending[npending].type[len] = '\0';
	pending[npending].position = position;
	npending++;
}

/* Whether a worker of this database will send our notifications */
static bool
es_notify_worker_present(void)
{
	bool		present = false;

	if (notify_shared == NULL)
		return false;
	LWLockAcquire(notify_shared->lock, LW_SHARED);
	for (int i = 0; i < ES_NOTIFY_MAX_WORKERS && !present; i++)
		present = (notify_shared->worker_db[i] == MyDatabaseId &&
				   notify_shared->worker_latch[i] != NULL);
	LWLockRelease(notify_shared->lock);
	return present;
}

/* Queue NOTIFYs in this transaction (no worker to coalesce them) */
static void
es_notify_direct(void)
{
	for (int i = 0; i < npending; i++)
		Async_Notify(ES_NOTIFY_CHANNEL, es_notify_payload(pending[i].type, pending[i].position));
	if (pending_overflow)
		Async_Notify(ES_NOTIFY_CHANNEL, es_notify_payload(NULL, pending_max_position));
}

/* The shared entry of (this database, type), or NULL when the table is full */
static EsNotifyEntry *
es_notify_entry(const char *type)
{
	uint32		h = hash_combine(hash_bytes((const unsigned char *) type, strlen(type)),
								 MyDatabaseId);

	for (int probe = 0; probe < ES_NOTIFY_ENTRIES; probe++)
	{
		EsNotifyEntry *e = &notify_shared->entries[(h + probe) % ES_NOTIFY_ENTRIES];

		if (e->dboid == InvalidOid)
		{
			e->dboid = MyDatabaseId;
			strlcpy(e->type, type, sizeof(e->type));
			e->position = 0;
			return e;
		}
		if (e->dboid == MyDatabaseId && strcmp(e->type, type) == 0)
			return e;
	}
	return NULL;
}

/* After commit: hand our types to the worker and wake it, which also runs its projections */
static void
es_notify_publish(void)
{
	LWLockAcquire(notify_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < npending; i++)
	{
		EsNotifyEntry *e = es_notify_entry(pending[i].type);

		if (e == NULL)
		{
			pending_overflow = true;
			continue;
		}
		e->position = Max(e->position, pending[i].position);
		e->dirty = true;
	}
	if (pending_overflow)
	{
		notify_shared->overflow_db = MyDatabaseId;
		notify_shared->overflow_db_dirty = true;
	}
	for (int i = 0; i < ES_NOTIFY_MAX_WORKERS; i++)
		if (notify_shared->worker_db[i] == MyDatabaseId && notify_shared->worker_latch[i])
			SetLatch(notify_shared->worker_latch[i]);
	LWLockRelease(notify_shared->lock);
}

/* Forget this transaction's types */
static void
es_notify_reset(void)
{
	npending = 0;
	pending_overflow = false;
	pending_max_position = 0;
	deferred = false;
}

/* Send or hand over the notifications at the end of a transaction */
static void
es_notify_xact_callback(XactEvent event, void *arg)
{
	if (npending == 0 && !pending_overflow)
		return;
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			if (!es_notify_enabled)
			{
				es_notify_reset();	/* no NOTIFY, no wake-up: workers poll */
				break;
			}
			deferred = es_notify_worker_present();
			if (!deferred)
				es_notify_direct();
			break;
		case XACT_EVENT_COMMIT:
			if (deferred)
				es_notify_publish();
			es_notify_reset();
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PARALLEL_COMMIT:
			es_notify_reset();
			break;
		default:
			break;
	}
}

/* GUC, shared memory and transaction hooks */
void
es_notify_init(void)
{
	DefineCustomBoolVariable("eventsourced.notify",
							 "Sends a notification on channel \"eventsourced\" after each committed append.",
							 NULL, &es_notify_enabled, true, PGC_USERSET, 0,
							 NULL, NULL, NULL);
	RegisterXactCallback(es_notify_xact_callback, NULL);
	if (process_shared_preload_libraries_in_progress)
		es_shmem_register(&notify_part);
}

/* Unregister the worker's latch when it exits */
static void
es_notify_worker_exit(int code, Datum arg)
{
	if (my_worker_slot < 0 || notify_shared == NULL)
		return;
	LWLockAcquire(notify_shared->lock, LW_EXCLUSIVE);
	notify_shared->worker_latch[my_worker_slot] = NULL;
	notify_shared->worker_db[my_worker_slot] = InvalidOid;
	LWLockRelease(notify_shared->lock);
	my_worker_slot = -1;
}

/* A worker announces that it sends this database's notifications */
void
es_notify_register_worker(void)
{
	if (notify_shared == NULL)
		return;
	LWLockAcquire(notify_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < ES_NOTIFY_MAX_WORKERS; i++)
	{
		if (notify_shared->worker_latch[i] == NULL)
		{
			notify_shared->worker_db[i] = MyDatabaseId;
			notify_shared->worker_latch[i] = MyLatch;
			my_worker_slot = i;
			break;
		}
	}
	LWLockRelease(notify_shared->lock);
	if (my_worker_slot >= 0)
		before_shmem_exit(es_notify_worker_exit, (Datum) 0);
}

/*
 * The worker's part: take this database's pending pairs and NOTIFY them in
 * one transaction.  Returns how many notifications were sent.
 */
int
es_notify_flush(void)
{
	EsPendingType *out;
	int			nout = 0;
	bool		any_type = false;
	int64		max_position = 0;

	if (notify_shared == NULL)
		return 0;
	out = palloc(sizeof(EsPendingType) * ES_NOTIFY_ENTRIES);
	LWLockAcquire(notify_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < ES_NOTIFY_ENTRIES; i++)
	{
		EsNotifyEntry *e = &notify_shared->entries[i];

		if (e->dboid != MyDatabaseId || !e->dirty)
			continue;
		strlcpy(out[nout].type, e->type, sizeof(out[nout].type));
		out[nout].position = e->position;
		max_position = Max(max_position, e->position);
		nout++;
		e->dirty = false;
	}
	if (notify_shared->overflow_db_dirty && notify_shared->overflow_db == MyDatabaseId)
	{
		any_type = true;
		notify_shared->overflow_db_dirty = false;
	}
	LWLockRelease(notify_shared->lock);

	if (nout > 0 || any_type)
	{
		StartTransactionCommand();
		for (int i = 0; i < nout; i++)
			Async_Notify(ES_NOTIFY_CHANNEL, es_notify_payload(out[i].type, out[i].position));
		if (any_type)
			Async_Notify(ES_NOTIFY_CHANNEL, es_notify_payload(NULL, max_position));
		CommitTransactionCommand();
	}
	pfree(out);
	return nout + (any_type ? 1 : 0);
}
