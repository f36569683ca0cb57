/*
 * scan.c
 *		Index lookups on the events table shared by the writers.
 */
#include "eventsourced.h"

#include "access/genam.h"
#include "access/relscan.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/pg_collation.h"
#include "executor/tuptable.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

/* Scan keys "entity_type = $type AND entity_id = $id" on the primary key */
void
es_entity_scankeys(ScanKey keys, const EsEntity *entity)
{
	ScanKeyEntryInitialize(&keys[0], 0, 1, BTEqualStrategyNumber, InvalidOid,
						   C_COLLATION_OID, F_TEXTEQ, PointerGetDatum(entity->type));
	ScanKeyEntryInitialize(&keys[1], 0, 2, BTEqualStrategyNumber, InvalidOid,
						   C_COLLATION_OID, F_TEXTEQ, PointerGetDatum(entity->id));
}

/*
 * Fetch the first row that matches the keys in the given direction,
 * counting rows of transactions still in progress: their inserter (or the
 * transaction deleting or updating the row) is waited for and the lookup
 * repeated, as a unique check does.  The slot keeps its own buffer pin, so
 * the row stays readable after the scan ends.  Writers hold the entity
 * lock, so only rows written around eventsourced.append() (or by hand: a
 * purge, a DELETE from the snapshots) can make us wait.
 */
bool
es_fetch_latest(Relation heap, Relation index, ScanKey keys, int nkeys,
				ScanDirection dir, TupleTableSlot *slot)
{
	for (;;)
	{
		SnapshotData dirty;
		IndexScanDesc scan;
		bool		found;
		TransactionId wait_for = InvalidTransactionId;

		InitDirtySnapshot(dirty);
		scan = index_beginscan(heap, index, &dirty, nkeys, 0);
		index_rescan(scan, keys, nkeys, NULL, 0);
		found = index_getnext_slot(scan, dir, slot);
		if (found && TransactionIdIsValid(dirty.xmin))
			wait_for = dirty.xmin;
		else if (found && TransactionIdIsValid(dirty.xmax))
			wait_for = dirty.xmax;
		index_endscan(scan);
		if (!TransactionIdIsValid(wait_for))
			return found;
		XactLockTableWait(wait_for, heap, NULL, XLTW_InsertIndex);
	}
}

/* The entity's last seq_no, 0 when it has no events */
int64
es_last_seq_no(Relation events, Relation pkey, const EsEntity *entity)
{
	ScanKeyData keys[2];
	TupleTableSlot *slot = table_slot_create(events, NULL);
	int64		last = 0;

	es_entity_scankeys(keys, entity);
	if (es_fetch_latest(events, pkey, keys, 2, BackwardScanDirection, slot))
	{
		bool		isnull;

		last = DatumGetInt64(slot_getattr(slot, Anum_es_events_seq_no, &isnull));
	}
	ExecDropSingleTupleTableSlot(slot);
	return last;
}

/*
 * Fetch into slot the entity's first event whose seq_no is in the range
 * given by strategy and proc (equal to, or greater than, seq_no), rows in
 * flight counted; false when there is none.
 */
bool
es_fetch_seq_no(Relation events, Relation pkey, const EsEntity *entity,
				StrategyNumber strategy, RegProcedure proc, int64 seq_no,
				TupleTableSlot *slot)
{
	ScanKeyData keys[3];

	es_entity_scankeys(keys, entity);
	ScanKeyInit(&keys[2], Anum_es_events_seq_no, strategy, proc, Int64GetDatum(seq_no));
	return es_fetch_latest(events, pkey, keys, 3, ForwardScanDirection, slot);
}

/*
 * The entity's first seq_no in the range given by strategy (equal to, or
 * greater than, seq_no), rows in flight counted; 0 when there is none.
 */
static int64
es_seq_no_probe(Relation events, Relation pkey, const EsEntity *entity,
				StrategyNumber strategy, RegProcedure proc, int64 seq_no)
{
	TupleTableSlot *slot = table_slot_create(events, NULL);
	int64		found = 0;

	if (es_fetch_seq_no(events, pkey, entity, strategy, proc, seq_no, slot))
	{
		bool		isnull;

		found = DatumGetInt64(slot_getattr(slot, Anum_es_events_seq_no, &isnull));
	}
	ExecDropSingleTupleTableSlot(slot);
	return found;
}

/*
 * The entity's last seq_no, found from a likely value (the writer's
 * expected_seq_no, a cached state's seq_no) with index probes: hint is the
 * last one when it exists and no seq_no follows it.  Seq_nos after the hint
 * are found with a range probe, not by trying hint + 1, so a log with gaps
 * (a purge) gives the index's answer too.  A backward scan reads every
 * entry of the entity on the last index page; this costs two index probes
 * whatever the entity's size.  A wrong hint falls back to the scan.
 */
int64
es_last_seq_no_hinted(Relation events, Relation pkey, const EsEntity *entity, int64 hint)
{
	int64		last = hint;
	int64		next;

	if (hint < 0 ||
		(hint > 0 && es_seq_no_probe(events, pkey, entity, BTEqualStrategyNumber,
									 F_INT8EQ, hint) == 0))
		return es_last_seq_no(events, pkey, entity);
	for (int step = 0;
		 (next = es_seq_no_probe(events, pkey, entity, BTGreaterStrategyNumber,
								 F_INT8GT, last)) != 0;
		 step++)
	{
		if (step == ES_MAX_HINT_STEPS)
			return es_last_seq_no(events, pkey, entity);
		last = next;
	}
	return last;
}
