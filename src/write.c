/*
 * write.c
 *		Direct writes into the extension's own tables: a heap insert,
 *		update or delete plus the index entries, with no SQL parsed or
 *		planned.  The one way the extension writes events, cached states
 *		and snapshots.  The callers hold the entity lock, so no other
 *		writer of ours touches the rows.
 */
#include "eventsourced.h"

#include "access/genam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/index.h"
#include "executor/executor.h"
#include "nodes/makefuncs.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/snapmgr.h"

/* Insert the index entries of a tuple just written to the heap */
void
es_table_index(EsTableWriter *w, TupleTableSlot *slot)
{
	ResetPerTupleExprContext(w->estate);
	(void) ExecInsertIndexTuples(w->rri, slot, w->estate, false, false, NULL, NIL);
}

/*
 * Open a table and its indexes for writing, as ExecOpenIndices() does, but
 * leave out the index "skip" (InvalidOid: none): a partial index whose
 * predicate the caller knows to be false for every row it will write.
 */
void
es_table_open(EsTableWriter *w, Oid relid, Oid skip)
{
	ResultRelInfo *rri = makeNode(ResultRelInfo);
	List	   *indexes;
	ListCell   *lc;
	int			n = 0;

	w->rel = table_open(relid, RowExclusiveLock);
	w->estate = CreateExecutorState();
	w->rri = rri;
	w->skipped = skip;
	InitResultRelInfo(rri, w->rel, 1, NULL, 0);
	indexes = RelationGetIndexList(w->rel);
	rri->ri_IndexRelationDescs = palloc(sizeof(Relation) * Max(list_length(indexes), 1));
	rri->ri_IndexRelationInfo = palloc(sizeof(IndexInfo *) * Max(list_length(indexes), 1));
	foreach(lc, indexes)
	{
		Relation	index;

		if (lfirst_oid(lc) == skip)
			continue;
		index = index_open(lfirst_oid(lc), RowExclusiveLock);
		rri->ri_IndexRelationDescs[n] = index;
		rri->ri_IndexRelationInfo[n] = BuildIndexInfo(index);
		n++;
	}
	rri->ri_NumIndices = n;
	list_free(indexes);
}

/* One of the indexes es_table_open opened, by OID */
Relation
es_table_index_rel(EsTableWriter *w, Oid indexid)
{
	for (int i = 0; i < w->rri->ri_NumIndices; i++)
		if (RelationGetRelid(w->rri->ri_IndexRelationDescs[i]) == indexid)
			return w->rri->ri_IndexRelationDescs[i];
	elog(ERROR, "eventsourced: index %u of table %u is not open", indexid,
		 RelationGetRelid(w->rel));
	return NULL;				/* keep compiler quiet */
}

/* A virtual slot of the table's row type, freed with the writer */
TupleTableSlot *
es_table_slot(EsTableWriter *w)
{
	return ExecInitExtraTupleSlot(w->estate, RelationGetDescr(w->rel), &TTSOpsVirtual);
}

/*
 * A slot for a row of a table keyed by entity (its first two columns), the
 * names filled in and no column null yet; the caller fills the others and
 * stores it.
 */
TupleTableSlot *
es_table_entity_slot(EsTableWriter *w, const EsEntity *entity)
{
	TupleTableSlot *slot = es_table_slot(w);

	ExecClearTuple(slot);
	memset(slot->tts_isnull, 0, sizeof(bool) * slot->tts_tupleDescriptor->natts);
	slot->tts_values[0] = PointerGetDatum(entity->type);
	slot->tts_values[1] = PointerGetDatum(entity->id);
	return slot;
}

/* Insert a row and its index entries */
void
es_table_insert(EsTableWriter *w, TupleTableSlot *slot)
{
	table_tuple_insert(w->rel, slot, GetCurrentCommandId(true), 0, NULL);
	es_table_index(w, slot);
}

/*
 * The row the keys find through one of the open indexes, rows of
 * transactions in flight counted (their writer is waited for), in a slot
 * freed with the writer; NULL when there is none.  For a writer holding the
 * entity lock, as every writer of the row does: it stays the current row.
 */
TupleTableSlot *
es_table_find(EsTableWriter *w, Oid indexid, ScanKey keys, int nkeys)
{
	TupleTableSlot *slot = table_slot_create(w->rel, &w->estate->es_tupleTable);

	if (es_fetch_latest(w->rel, es_table_index_rel(w, indexid), keys, nkeys,
						ForwardScanDirection, slot))
		return slot;
	return NULL;
}

/*
 * Replace the row at tid unless another transaction changed or deleted it
 * meanwhile (a hand-made change; it is waited for): whether it was
 * replaced.  New index entries only when the update is not HOT.
 */
bool
es_table_try_update(EsTableWriter *w, ItemPointer tid, TupleTableSlot *slot)
{
	TM_FailureData tmfd;
	LockTupleMode lockmode;
	bool		update_indexes;

	/* the row's old version may satisfy the left-out index's predicate */
	if (OidIsValid(w->skipped))
		elog(ERROR, "eventsourced: cannot update through a writer that left index %u closed",
			 w->skipped);
	if (table_tuple_update(w->rel, tid, slot, GetCurrentCommandId(true), GetActiveSnapshot(),
						   InvalidSnapshot, true, &tmfd, &lockmode, &update_indexes) != TM_Ok)
		return false;
	if (update_indexes)
		es_table_index(w, slot);
	return true;
}

/* Replace the row at tid, which must still be the current one */
void
es_table_update(EsTableWriter *w, ItemPointer tid, TupleTableSlot *slot)
{
	if (!es_table_try_update(w, tid, slot))
		elog(ERROR, "eventsourced: a row of %s was concurrently updated or deleted",
			 RelationGetRelationName(w->rel));
}

/* Replace the row es_table_find found (old), or insert one when it found none */
void
es_table_put(EsTableWriter *w, TupleTableSlot *old, TupleTableSlot *slot)
{
	if (old != NULL)
		es_table_update(w, &old->tts_tid, slot);
	else
		es_table_insert(w, slot);
}

/* Delete the row at tid */
void
es_table_delete(EsTableWriter *w, ItemPointer tid)
{
	simple_table_tuple_delete(w->rel, tid, GetActiveSnapshot());
}

/* Close what es_table_open opened; the table stays locked until the end of the transaction */
void
es_table_close(EsTableWriter *w)
{
	ExecCloseIndices(w->rri);
	ExecResetTupleTable(w->estate->es_tupleTable, false);
	FreeExecutorState(w->estate);
	table_close(w->rel, NoLock);
}
