/*
 * fence.c
 *		Fencing of partitions a shard no longer owns (docs/scale-out.md,
 *		"Moving a partition"), and the documented entity hash the
 *		partitions are cut by.
 *
 * A fence is a row (partitions, partition) of eventsourced.fences: every
 * write to an entity whose hash falls into that partition is refused, with
 * 40001, under the entity lock (es_lock_entity calls es_check_fence).
 *
 * Protocol.  A writer, holding its entity lock, consults this backend's
 * list of fences; with no fence that is a test of a flag, and the hash is
 * computed only while some fence exists.  Every write to the fences table
 * sends a relcache invalidation for it (a trigger), which empties the list;
 * it is read again, with a new snapshot, on the next write.  A transaction
 * processes pending invalidations when it starts, and a fence's
 * invalidations are sent after its commit became visible, so a writer
 * whose transaction starts after the fence's commit has returned sees the
 * fence.  A writer whose transaction began earlier may still write:
 * fence_wait(), called in a new transaction after the fence committed,
 * waits for every transaction of the database that is running then (as
 * CREATE INDEX CONCURRENTLY waits for older snapshots; prepared ones too),
 * so after it returns no write to the partition can still commit; it
 * leaves lazy VACUUMs out (PROC_IN_VACUUM), which write no events.  Writers
 * never wait for a fence.  Concurrent fence_wait() calls (moves of several
 * partitions) leave each other out: each holds a lock that marks it, and a
 * transaction that called fence_wait() may not write, nor may one that
 * wrote call it.
 */
#include "eventsourced.h"

#include "access/table.h"
#include "access/xact.h"
#include "access/tableam.h"
#include "catalog/pg_type.h"
#include "common/md5.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

/* The largest partition count: a power of two that an integer holds */
#define ES_MAX_PARTITIONS	(1 << 30)

/* Columns of eventsourced.fences: partitions, partition, fenced_at, target */
#define Natts_es_fences			4
#define Anum_es_fences_partitions	1
#define Anum_es_fences_partition	2
static const Oid es_fences_types[Natts_es_fences] = {INT4OID, INT4OID, TIMESTAMPTZOID, TEXTOID};

/* One fence: the partition's number and the partition count it belongs to */
typedef struct EsFence
{
	uint32		partitions;
	uint32		partition;
} EsFence;

/* This backend's copy of the fences table, valid until an invalidation */
static EsFence *fences = NULL;
static int	nfences = 0;
static bool fences_valid = false;
static Oid	fences_relid = InvalidOid;	/* the table the list was read from */
static uint64 fence_invals = 0;

/* The local transaction that called fence_wait(), which may not write */
static LocalTransactionId fence_wait_lxid = InvalidLocalTransactionId;

/* Relcache callback: the fences table (or every relation) changed */
static void
es_fence_invalidate(Datum arg, Oid relid)
{
	if (relid != InvalidOid && relid != fences_relid)
		return;
	fences_valid = false;
	fence_invals++;
}

/* Register the invalidation callback */
void
es_fence_init(void)
{
	CacheRegisterRelcacheCallback(es_fence_invalidate, (Datum) 0);
}

/*
 * The documented hash of an entity: the first four bytes, big-endian, of
 * the MD5 of "<byte length of type>:<type><id>" in UTF-8, as the proxy's
 * entity_hash() computes it.
 */
int32
es_entity_hash(text *type, text *id)
{
	int			tlen = VARSIZE_ANY_EXHDR(type);
	int			ilen = VARSIZE_ANY_EXHDR(id);
	const char *t = pg_server_to_any(VARDATA_ANY(type), tlen, PG_UTF8);
	const char *i = pg_server_to_any(VARDATA_ANY(id), ilen, PG_UTF8);
	StringInfoData buf;
	uint8		sum[16];
	const char *errstr = NULL;

	/* a conversion returns a NUL-terminated copy, no conversion the datum */
	if (t != VARDATA_ANY(type))
		tlen = strlen(t);
	if (i != VARDATA_ANY(id))
		ilen = strlen(i);
	initStringInfo(&buf);
	appendStringInfo(&buf, "%d:", tlen);
	appendBinaryStringInfo(&buf, t, tlen);
	appendBinaryStringInfo(&buf, i, ilen);
	if (!pg_md5_binary(buf.data, buf.len, sum, &errstr))
		elog(ERROR, "eventsourced: could not compute an MD5 hash: %s", errstr);
	pfree(buf.data);
	return (int32) (((uint32) sum[0] << 24) | ((uint32) sum[1] << 16) |
					((uint32) sum[2] << 8) | (uint32) sum[3]);
}

PG_FUNCTION_INFO_V1(eventsourced_entity_hash);

/* entity_hash(entity_type, entity_id): the hash the proxy routes by */
Datum
eventsourced_entity_hash(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(es_entity_hash(PG_GETARG_TEXT_PP(0), PG_GETARG_TEXT_PP(1)));
}

/*
 * Read the fences table with a new snapshot into this backend's list
 * (locking it processes pending invalidations); the list is kept unless
 * an invalidation arrived meanwhile.
 */
static void
es_fence_load(Oid relid)
{
	Relation	rel;
	uint64		invals;
	Snapshot	snap;
	TableScanDesc scan;
	TupleTableSlot *slot;
	int			cap = 8;
	EsFence    *list;

	/* from here on, invalidations of this table count against the list */
	fences_relid = relid;
	fences_valid = false;
	rel = table_open(relid, AccessShareLock);
	invals = fence_invals;
	es_check_shape(rel, Natts_es_fences, es_fences_types);
	list = MemoryContextAlloc(CacheMemoryContext, sizeof(EsFence) * cap);
	nfences = 0;
	snap = RegisterSnapshot(GetLatestSnapshot());
	scan = table_beginscan(rel, snap, 0, NULL);
	slot = table_slot_create(rel, NULL);
	while (table_scan_getnextslot(scan, ForwardScanDirection, slot))
	{
		bool		isnull;

		if (nfences == cap)
			list = repalloc(list, sizeof(EsFence) * (cap *= 2));
		list[nfences].partitions = DatumGetInt32(slot_getattr(slot, Anum_es_fences_partitions, &isnull));
		list[nfences].partition = DatumGetInt32(slot_getattr(slot, Anum_es_fences_partition, &isnull));
		nfences++;
	}
	ExecDropSingleTupleTableSlot(slot);
	table_endscan(scan);
	UnregisterSnapshot(snap);
	table_close(rel, AccessShareLock);
	if (fences)
		pfree(fences);
	fences = list;
	fences_valid = (invals == fence_invals);
}

/* Refuse a write to an entity of a fenced partition */
static void
es_refuse_fenced(const EsEntity *entity, const EsFence *f)
{
	ereport(ERROR,
			(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
			 errmsg("partition %u of %u is fenced on this server", f->partition, f->partitions),
			 errdetail("Entity %s is in that partition, which is moving or has moved to another server.",
					   es_entity_string(entity)),
			 errhint("Retry: once the move is done the proxy sends the call to the partition's new server. "
					 "If this persists, the proxy's cluster configuration is stale.")));
}

/*
 * The fence check of every write, called with the entity lock held (see
 * the protocol above).  A store without the fences table (before 0.5.0)
 * has no fences.
 */
void
es_check_fence(const EsEntity *entity)
{
	Oid			relid = es_catalog()->fences;
	uint32		hash;

	if (!OidIsValid(relid))
		return;
	if (fence_wait_lxid == MyProc->lxid && fence_wait_lxid != InvalidLocalTransactionId)
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("a transaction that called fence_wait() cannot write"),
				 errdetail("Other callers of fence_wait() do not wait for it.")));
	if (!fences_valid || relid != fences_relid)
		es_fence_load(relid);
	if (nfences == 0)
		return;
	hash = (uint32) es_entity_hash(entity->type, entity->id);
	for (int i = 0; i < nfences; i++)
		if ((hash & (fences[i].partitions - 1)) == fences[i].partition)
			es_refuse_fenced(entity, &fences[i]);
}

/* The fences table, which needs 0.5.0 */
static Oid
es_fences_relid(void)
{
	Oid			relid = es_catalog()->fences;

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("this store has no fences table"),
				 errhint("Run ALTER EXTENSION eventsourced UPDATE.")));
	return relid;
}

/* Only the extension's owner (the owner of its tables) or a superuser fences */
static void
es_check_fence_owner(Oid relid, const char *function)
{
	if (has_privs_of_role(GetUserId(), es_relation_owner(relid)))
		return;
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("permission denied for %s", function),
			 errdetail("Only the owner of the eventsourced extension or a superuser may fence partitions.")));
}

/* A partition argument pair, checked: a power-of-two count, a number below it */
static void
es_partition_args(FunctionCallInfo fcinfo, int32 *partitions, int32 *partition)
{
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("partitions and partition must not be null")));
	*partitions = PG_GETARG_INT32(0);
	*partition = PG_GETARG_INT32(1);
	if (*partitions < 1 || *partitions > ES_MAX_PARTITIONS || (*partitions & (*partitions - 1)) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("partitions must be a power of two between 1 and %d", ES_MAX_PARTITIONS),
				 errdetail("partitions was %d.", *partitions)));
	if (*partition < 0 || *partition >= *partitions)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("partition must be between 0 and partitions - 1"),
				 errdetail("partition was %d, partitions %d.", *partition, *partitions)));
}

/*
 * Add (fence; argument 2 is the server it moves to, or NULL) or remove a
 * fence row: whether a row was added or removed
 */
static bool
es_fence_change(FunctionCallInfo fcinfo, bool fence, const char *function)
{
	static const char *const sql[2] = {
		"DELETE FROM eventsourced.fences WHERE partitions OPERATOR(pg_catalog.=) $1 "
		"AND partition OPERATOR(pg_catalog.=) $2",
		"INSERT INTO eventsourced.fences (partitions, partition, target) VALUES ($1, $2, $3) "
		"ON CONFLICT DO NOTHING"
	};
	Oid			relid = es_fences_relid();
	int32		partitions;
	int32		partition;
	Oid			types[3] = {INT4OID, INT4OID, TEXTOID};
	Datum		values[3];
	char		nulls[3] = {' ', ' ', 'n'};
	uint64		changed;

	es_check_fence_owner(relid, function);
	es_partition_args(fcinfo, &partitions, &partition);
	PreventCommandIfReadOnly(function);
	values[0] = Int32GetDatum(partitions);
	values[1] = Int32GetDatum(partition);
	values[2] = (Datum) 0;
	if (fence && !PG_ARGISNULL(2))
	{
		values[2] = PG_GETARG_DATUM(2);
		nulls[2] = ' ';
	}
	SPI_connect();
	if (SPI_execute_with_args(sql[fence ? 1 : 0], fence ? 3 : 2, types, values, nulls, false, 0) !=
		(fence ? SPI_OK_INSERT : SPI_OK_DELETE))
		elog(ERROR, "eventsourced: could not change a fence");
	changed = SPI_processed;
	SPI_finish();
	return changed > 0;
}

PG_FUNCTION_INFO_V1(eventsourced_fence_partition);

/*
 * fence_partition(partitions, partition, target): refuse writes to its
 * entities here; target names the server it moves to (for the mover)
 */
Datum
eventsourced_fence_partition(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(es_fence_change(fcinfo, true, "eventsourced.fence_partition()"));
}

PG_FUNCTION_INFO_V1(eventsourced_unfence_partition);

/* unfence_partition(partitions, partition): accept writes to its entities again */
Datum
eventsourced_unfence_partition(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(es_fence_change(fcinfo, false, "eventsourced.unfence_partition()"));
}

PG_FUNCTION_INFO_V1(eventsourced_fence_wait);

/* Whether vxid is one of the list's, which ends with an invalid one */
static bool
es_vxid_listed(VirtualTransactionId vxid, const VirtualTransactionId *list)
{
	for (; VirtualTransactionIdIsValid(*list); list++)
		if (VirtualTransactionIdEquals(vxid, *list))
			return true;
	return false;
}

/*
 * fence_wait(): wait for every transaction of this database running now
 * (but other callers of fence_wait and VACUUMs), so that afterwards no write that
 * missed a fence committed so far can commit.  It must run in a
 * transaction of its own, after the fence's.
 */
Datum
eventsourced_fence_wait(PG_FUNCTION_ARGS)
{
	LOCKTAG		tag;
	VirtualTransactionId *running;
	VirtualTransactionId *waiters;
	int			n;

	es_check_fence_owner(es_fences_relid(), "eventsourced.fence_wait()");
	if (TransactionIdIsValid(GetTopTransactionIdIfAny()))
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("fence_wait() cannot run in a transaction that wrote"),
				 errdetail("Other callers of fence_wait() leave it out, and a fence it made is not committed yet."),
				 errhint("Commit the fence, then call fence_wait() in a new transaction.")));
	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, 0, 0, ES_LOCK_FENCE_WAIT);
	(void) LockAcquire(&tag, ShareLock, false, false);
	fence_wait_lxid = MyProc->lxid;
	/* a lazy VACUUM writes no events: left out, as CREATE INDEX CONCURRENTLY does */
	running = GetCurrentVirtualXIDs(InvalidTransactionId, false, false, PROC_IN_VACUUM, &n);
	waiters = GetLockConflicts(&tag, ExclusiveLock, NULL);
	for (int i = 0; i < n; i++)
	{
		CHECK_FOR_INTERRUPTS();
		if (!es_vxid_listed(running[i], waiters))
			(void) VirtualXactLock(running[i], true);
	}
	pfree(running);
	PG_RETURN_VOID();
}
