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
 * Each database with workers (launcher.c) has one notifier, which sends; its
 * projection workers register too, only to be woken by commits.
 *
 * Locking: committers never take a lock.  A (database, type) entry is
 * claimed with a compare-and-swap on its state; its highest position is
 * raised with compare-and-swap and its "dirty" flag set afterwards, and the
 * notifier swaps the flag back before it reads the position, so a position
 * is notified at least once (maybe twice).  A committer counts itself in
 * the entry's users while it uses it; the notifier frees an entry of its
 * database that no committer used for a whole pass and that has nothing to
 * notify, by moving its state to FREEING and back to READY when a user
 * came in meanwhile (see es_notify_entry), so the 1,024 entries serve any
 * number of types over time.  Worker
 * registration (rare) takes one LWLock; committers read the registered
 * databases with atomics.  Appenders publish in XACT_EVENT_COMMIT, i.e.
 * after their commit is visible, so a listener woken by the notification
 * always finds the events.
 */
#include "eventsourced.h"

#include "access/xact.h"
#include "commands/async.h"
#include "common/hashfn.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/s_lock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/memutils.h"

#define ES_NOTIFY_CHANNEL		"eventsourced"
#define ES_NOTIFY_ENTRIES		1024	/* (database, type) pairs */
#define ES_PENDING_TYPES		16		/* types tracked per transaction */

/* States of a shared entry */
#define ES_ENTRY_FREE			0
#define ES_ENTRY_CLAIMED		1	/* its claimer is filling in the names */
#define ES_ENTRY_READY			2
#define ES_ENTRY_FREEING		3	/* the notifier is freeing it */

/* One (database, type) pair with the highest position appended */
typedef struct EsNotifyEntry
{
	pg_atomic_uint32 state;
	pg_atomic_uint32 users;		/* committers using it right now */
	pg_atomic_uint32 touched;	/* used since the notifier last looked */
	pg_atomic_uint32 dirty;		/* position not notified yet */
	pg_atomic_uint64 position;
	Oid			dboid;
	char		type[ES_MAX_TYPE_LEN + 1];
} EsNotifyEntry;

/* A worker that sends the notifications of its database */
typedef struct EsNotifyWorker
{
	pg_atomic_uint32 dboid;		/* InvalidOid: free */
	bool		sends;			/* the notifier, else a projection worker (woken only) */
	pg_atomic_uint32 overflow;	/* a type did not fit: notify "any type" */
	pg_atomic_uint64 overflow_position;
	Latch	   *latch;
} EsNotifyWorker;

typedef struct EsNotifyShared
{
	LWLock	   *lock;			/* serializes worker registration */
	int			nworkers;		/* max_worker_processes: a place for every worker */
	EsNotifyEntry entries[ES_NOTIFY_ENTRIES];
	EsNotifyWorker workers[FLEXIBLE_ARRAY_MEMBER];
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
	return add_size(offsetof(EsNotifyShared, workers),
					mul_size(Max(max_worker_processes, 1), sizeof(EsNotifyWorker)));
}

/* Create or attach to the shared table */
static void
es_notify_shmem_attach(void *ptr, bool found)
{
	notify_shared = ptr;
	if (found)
		return;
	memset(notify_shared, 0, es_notify_shmem_size());
	notify_shared->lock = &(GetNamedLWLockTranche("eventsourced notify"))->lock;
	notify_shared->nworkers = Max(max_worker_processes, 1);
	for (int i = 0; i < notify_shared->nworkers; i++)
	{
		pg_atomic_init_u32(&notify_shared->workers[i].dboid, InvalidOid);
		pg_atomic_init_u32(&notify_shared->workers[i].overflow, 0);
		pg_atomic_init_u64(&notify_shared->workers[i].overflow_position, 0);
	}
	for (int i = 0; i < ES_NOTIFY_ENTRIES; i++)
	{
		pg_atomic_init_u32(&notify_shared->entries[i].state, ES_ENTRY_FREE);
		pg_atomic_init_u32(&notify_shared->entries[i].users, 0);
		pg_atomic_init_u32(&notify_shared->entries[i].touched, 0);
		pg_atomic_init_u32(&notify_shared->entries[i].dirty, 0);
		pg_atomic_init_u64(&notify_shared->entries[i].position, 0);
	}
}

static const EsShmemPart notify_part = {
	"eventsourced notify", es_notify_shmem_size, 1, es_notify_shmem_attach
};

/* Raise an atomic to at least x */
static void
es_atomic_max_u64(pg_atomic_uint64 *v, uint64 x)
{
	uint64		cur = pg_atomic_read_u64(v);

	while (cur < x && !pg_atomic_compare_exchange_u64(v, &cur, x))
		;
}

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
	if (notify_shared == NULL)
		return false;
	for (int i = 0; i < notify_shared->nworkers; i++)
	{
		EsNotifyWorker *w = &notify_shared->workers[i];

		if (pg_atomic_read_u32(&w->dboid) == MyDatabaseId)
		{
			pg_read_barrier();
			if (w->sends)
				return true;
		}
	}
	return false;
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

/* Wait a little for an entry in a passing state (claimed, being freed) */
static void
es_notify_entry_wait(EsNotifyEntry *e)
{
	SpinDelayStatus delay;
	uint32		state;

	init_local_spin_delay(&delay);
	while ((state = pg_atomic_read_u32(&e->state)) == ES_ENTRY_CLAIMED ||
		   state == ES_ENTRY_FREEING)
		perform_spin_delay(&delay);
	finish_spin_delay(&delay);
	pg_read_barrier();
}

/* Whether a ready entry is (this database, type) */
static bool
es_notify_entry_is(EsNotifyEntry *e, const char *type)
{
	return e->dboid == MyDatabaseId && strcmp(e->type, type) == 0;
}

/*
 * The shared entry of (this database, type), claimed for our use (release
 * it with es_notify_entry_release), or NULL when the table is full.  An
 * entry in use cannot be freed: the user count is raised before the state
 * is checked again, and the notifier changes the state before it reads the
 * count (both with full barriers).
 */
static EsNotifyEntry *
es_notify_entry(const char *type)
{
	uint32		h = hash_combine(hash_bytes((const unsigned char *) type, strlen(type)),
								 MyDatabaseId);

	for (int probe = 0; probe < ES_NOTIFY_ENTRIES; probe++)
	{
		EsNotifyEntry *e = &notify_shared->entries[(h + probe) % ES_NOTIFY_ENTRIES];

		for (;;)
		{
			uint32		state = ES_ENTRY_FREE;

			if (pg_atomic_compare_exchange_u32(&e->state, &state, ES_ENTRY_CLAIMED))
			{
				e->dboid = MyDatabaseId;
				strlcpy(e->type, type, sizeof(e->type));
				pg_atomic_write_u32(&e->users, 1);
				pg_write_barrier();
				pg_atomic_write_u32(&e->state, ES_ENTRY_READY);
				return e;
			}
			es_notify_entry_wait(e);
			if (pg_atomic_read_u32(&e->state) != ES_ENTRY_READY)
				continue;		/* freed meanwhile: try to claim it */
			if (!es_notify_entry_is(e, type))
				break;			/* another pair's: next slot */
			pg_atomic_fetch_add_u32(&e->users, 1);
			if (pg_atomic_read_u32(&e->state) == ES_ENTRY_READY)
				return e;
			pg_atomic_fetch_sub_u32(&e->users, 1);
		}
	}
	return NULL;
}

/* Done with an entry: mark it used, let the notifier free it when idle */
static void
es_notify_entry_release(EsNotifyEntry *e)
{
	pg_atomic_write_u32(&e->touched, 1);
	pg_atomic_fetch_sub_u32(&e->users, 1);
}

/*
 * The notifier's part of freeing: an entry of its database that was not
 * used since its last look and has nothing to notify is freed, unless a
 * committer holds it.  Returns whether it was freed.
 */
static bool
es_notify_entry_try_free(EsNotifyEntry *e)
{
	uint32		state = ES_ENTRY_READY;

	if (pg_atomic_exchange_u32(&e->touched, 0) != 0)
		return false;
	if (!pg_atomic_compare_exchange_u32(&e->state, &state, ES_ENTRY_FREEING))
		return false;
	if (pg_atomic_read_u32(&e->users) != 0 || pg_atomic_read_u32(&e->dirty) != 0)
	{
		pg_atomic_write_u32(&e->state, ES_ENTRY_READY);
		return false;
	}
	pg_atomic_write_u64(&e->position, 0);
	e->dboid = InvalidOid;
	e->type[0] = '\0';
	pg_write_barrier();
	pg_atomic_write_u32(&e->state, ES_ENTRY_FREE);
	return true;
}

/* After commit: hand our types to the workers and wake them, which also runs their projections */
static void
es_notify_publish(void)
{
	for (int i = 0; i < npending; i++)
	{
		EsNotifyEntry *e = es_notify_entry(pending[i].type);

		if (e == NULL)
		{
			pending_overflow = true;
			continue;
		}
		es_atomic_max_u64(&e->position, (uint64) pending[i].position);
		pg_atomic_write_u32(&e->dirty, 1);
		es_notify_entry_release(e);
	}
	for (int i = 0; i < notify_shared->nworkers; i++)
	{
		EsNotifyWorker *w = &notify_shared->workers[i];
		Latch	   *latch;

		if (pg_atomic_read_u32(&w->dboid) != MyDatabaseId)
			continue;
		if (pending_overflow)
		{
			es_atomic_max_u64(&w->overflow_position, (uint64) pending_max_position);
			pg_atomic_write_u32(&w->overflow, 1);
		}
		pg_read_barrier();
		latch = w->latch;
		if (latch != NULL)
			SetLatch(latch);
	}
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
	pg_atomic_write_u32(&notify_shared->workers[my_worker_slot].dboid, InvalidOid);
	pg_write_barrier();
	notify_shared->workers[my_worker_slot].latch = NULL;
	LWLockRelease(notify_shared->lock);
	my_worker_slot = -1;
}

/*
 * A worker asks to be woken by this database's commits; the notifier
 * (sends) also sends their notifications.
 */
void
es_notify_register_worker(bool sends)
{
	if (notify_shared == NULL)
		return;
	LWLockAcquire(notify_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < notify_shared->nworkers; i++)
	{
		EsNotifyWorker *w = &notify_shared->workers[i];

		if (pg_atomic_read_u32(&w->dboid) == InvalidOid)
		{
			w->latch = MyLatch;
			w->sends = sends;
			pg_atomic_write_u32(&w->overflow, 0);
			pg_write_barrier();
			pg_atomic_write_u32(&w->dboid, MyDatabaseId);
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
	int64		any_position = 0;

	if (notify_shared == NULL)
		return 0;
	out = palloc(sizeof(EsPendingType) * ES_NOTIFY_ENTRIES);
	for (int i = 0; i < ES_NOTIFY_ENTRIES; i++)
	{
		EsNotifyEntry *e = &notify_shared->entries[i];

		if (pg_atomic_read_u32(&e->state) != ES_ENTRY_READY)
			continue;
		pg_read_barrier();
		if (e->dboid != MyDatabaseId)
			continue;
		if (pg_atomic_exchange_u32(&e->dirty, 0) == 0)
		{
			(void) es_notify_entry_try_free(e);
			continue;
		}
		strlcpy(out[nout].type, e->type, sizeof(out[nout].type));
		out[nout].position = (int64) pg_atomic_read_u64(&e->position);
		any_position = Max(any_position, out[nout].position);
		nout++;
	}
	if (my_worker_slot >= 0 &&
		pg_atomic_exchange_u32(&notify_shared->workers[my_worker_slot].overflow, 0) == 1)
	{
		any_type = true;
		any_position = Max(any_position,
						   (int64) pg_atomic_read_u64(&notify_shared->workers[my_worker_slot].overflow_position));
	}

	if (nout > 0 || any_type)
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		for (int i = 0; i < nout; i++)
			Async_Notify(ES_NOTIFY_CHANNEL, es_notify_payload(out[i].type, out[i].position));
		if (any_type)
			Async_Notify(ES_NOTIFY_CHANNEL, es_notify_payload(NULL, any_position));
		CommitTransactionCommand();
	}
	pfree(out);
	return nout + (any_type ? 1 : 0);
}
