/*
 * command.c
 *		eventsourced.handle_command(): rebuild an entity's state, let the
 *		registered command handler decide, append what it emitted.
 *
 * The entity lock is taken first, so commands to one entity run one after
 * the other and each sees every event committed before it; commands to
 * different entities never wait for each other.  The state is rebuilt from
 * the cached latest state (eventsourced.entity_states) or the newest
 * snapshot, whichever is usable, plus the events after it, folded with the
 * event handler.  Cached states and command-side snapshots carry the
 * registration generation; those of another generation are ignored.
 * Handlers run in their sandbox (sandbox.c: as their function's owner,
 * restricted, with their registration's search_path).  Our own writes take
 * the one path append uses: the events through the internal append
 * (es_append_locked, under the entity lock taken here once), the cached
 * state and snapshots directly into their tables (write.c).
 */
#include "eventsourced.h"

#include "access/genam.h"
#include "access/relscan.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/snapmgr.h"

/* The larger of entity_states and snapshot_generations, whose rows es_state_row reads */
#define Natts_es_state_rows			Natts_es_entity_states

StaticAssertDecl(Anum_es_entity_states_seq_no == Anum_es_snapshot_generations_seq_no,
				 "es_row_current reads the seq_no of both tables at one attribute number");

/* The column types of eventsourced.entity_states, which is written directly */
static const Oid es_entity_states_types[Natts_es_entity_states] = {
	TEXTOID, TEXTOID, INT8OID, JSONBOID, INT8OID
};

/* Everything handle_command() knows about the entity while it decides */
typedef struct EsCommand
{
	EsEntity	entity;
	EsEntityType reg;
	FmgrInfo	event_handler;
	int64		seq_no;			/* last event folded into state */
	Datum		state;			/* jsonb */
	int64		folded;			/* stored events folded to rebuild it */
	MemoryContext fold_cxt[2];	/* state lives in one, the next one is built in the other */
	int			cur;
	bool		has_state_row;	/* entity_states has a row for it, at state_tid */
	ItemPointerData state_tid;
	Oid			state_relfilenode;	/* of entity_states when the row was read */
} EsCommand;


/*
 * Make everything committed before the entity lock was granted, and this
 * transaction's own earlier writes, visible to the reads that follow.
 * Under REPEATABLE READ the transaction snapshot stays; a command that
 * would miss events then fails with a serialization error.
 */
static void
es_push_command_snapshot(void)
{
	CommandCounterIncrement();
	PushCopiedSnapshot(IsolationUsesXactSnapshot() ? GetTransactionSnapshot() :
					   GetLatestSnapshot());
	UpdateActiveSnapshotCommandId();
}

/* Call a handler with three non-null arguments; the result may be null */
static Datum
es_call_handler(FmgrInfo *fn, Datum a, Datum b, Datum c, bool c_isnull, bool *isnull)
{
	LOCAL_FCINFO(fcinfo, 3);
	Datum		result;

	InitFunctionCallInfoData(*fcinfo, fn, 3, C_COLLATION_OID, NULL, NULL);
	fcinfo->args[0].value = a;
	fcinfo->args[0].isnull = false;
	fcinfo->args[1].value = b;
	fcinfo->args[1].isnull = false;
	fcinfo->args[2].value = c;
	fcinfo->args[2].isnull = c_isnull;
	result = FunctionCallInvoke(fcinfo);
	*isnull = fcinfo->isnull;
	return result;
}

/*
 * Fold one event into the state.  The new state is built in the other
 * fold context, then the old one is freed, so folding many events keeps
 * memory flat.  Binary events come with a NULL payload; a strict event
 * handler leaves the state as it is for them.
 */
static void
es_apply_event(EsCommand *c, int64 seq_no, text *event_type, Datum payload,
			   bool payload_isnull)
{
	MemoryContext old;
	bool		isnull;
	Datum		state;

	if (payload_isnull && c->event_handler.fn_strict)
	{
		c->seq_no = seq_no;
		return;
	}
	old = MemoryContextSwitchTo(c->fold_cxt[1 - c->cur]);
	state = es_call_handler(&c->event_handler, c->state, PointerGetDatum(event_type),
							payload, payload_isnull, &isnull);

	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("event handler %s returned null", format_procedure(c->reg.event_handler.fn)),
				 errdetail("It was applying event " INT64_FORMAT " (%s) of entity %s.",
						   seq_no, es_quote_name(text_to_cstring(event_type)), es_entity_string(&c->entity)),
				 errhint("Return 'null'::jsonb for an empty state.")));
	state = datumCopy(state, false, -1);
	MemoryContextSwitchTo(old);
	MemoryContextReset(c->fold_cxt[c->cur]);
	c->cur = 1 - c->cur;
	c->state = state;
	c->seq_no = seq_no;
}

/*
 * Fold the stored events after c->seq_no, in order, as the active snapshot
 * sees them (runs in the event handler's sandbox).
 */
static void
es_fold_stored_events(void *arg)
{
	EsCommand  *c = (EsCommand *) arg;
	const EsCatalog *cat = es_catalog();
	Relation	events = table_open(cat->events, AccessShareLock);
	Relation	pkey = index_open(cat->events_pkey, AccessShareLock);
	TupleTableSlot *slot = table_slot_create(events, NULL);
	ScanKeyData keys[3];
	IndexScanDesc scan;

	es_check_shape(events, Natts_es_events, es_events_types);
	es_entity_scankeys(keys, &c->entity);
	ScanKeyInit(&keys[2], Anum_es_events_seq_no, BTGreaterStrategyNumber, F_INT8GT,
				Int64GetDatum(c->seq_no));
	scan = index_beginscan(events, pkey, GetActiveSnapshot(), 3, 0);
	index_rescan(scan, keys, 3, NULL, 0);
	while (index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		bool		isnull;
		int64		seq_no = DatumGetInt64(slot_getattr(slot, Anum_es_events_seq_no, &isnull));
		text	   *event_type = DatumGetTextPP(slot_getattr(slot, Anum_es_events_event_type, &isnull));

		Datum		payload = slot_getattr(slot, Anum_es_events_payload, &isnull);

		CHECK_FOR_INTERRUPTS();
		es_apply_event(c, seq_no, event_type, payload, isnull);
		c->folded++;
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(pkey, AccessShareLock);
	table_close(events, AccessShareLock);
}

/* The entity's row of entity_states or snapshot_generations (natts columns); false if none */
static bool
es_state_row(EsCommand *c, Oid heap, Oid index, int natts, Datum *values, ItemPointer tid)
{
	ScanKeyData keys[2];
	bool		nulls[Natts_es_state_rows];

	es_entity_scankeys(keys, &c->entity);
	return es_fetch_by_key(heap, index, keys, 2, natts, values, nulls, tid);
}

/*
 * Whether such a row belongs to the current registration generation and to
 * at most the last seq_no (a purged log leaves rows that point beyond it).
 */
static bool
es_row_current(EsCommand *c, const Datum *values, int gen_attno, int64 last)
{
	return DatumGetInt64(values[gen_attno - 1]) == c->reg.generation &&
		DatumGetInt64(values[Anum_es_entity_states_seq_no - 1]) <= last;
}

/*
 * Start from the cached state (already fetched, or NULL), else a snapshot
 * of this generation, else the initial state.
 */
static void
es_start_state(EsCommand *c, int64 last, const Datum *cached)
{
	const EsCatalog *cat = es_catalog();
	Datum		values[Natts_es_state_rows];
	int64		snap_seq_no;
	Datum		snap_state;

	c->seq_no = 0;
	c->state = c->reg.initial_state;
	if (cached && es_row_current(c, cached, Anum_es_entity_states_generation, last))
	{
		c->seq_no = DatumGetInt64(cached[Anum_es_entity_states_seq_no - 1]);
		c->state = cached[Anum_es_entity_states_state - 1];
	}
	else if (es_load_snapshot(&c->entity, &snap_seq_no, &snap_state) &&
			 es_state_row(c, cat->snapshot_generations, cat->snapshot_generations_pkey,
						  Natts_es_snapshot_generations, values, NULL) &&
			 es_row_current(c, values, Anum_es_snapshot_generations_generation, last) &&
			 DatumGetInt64(values[Anum_es_snapshot_generations_seq_no - 1]) == snap_seq_no)
	{
		c->seq_no = snap_seq_no;
		c->state = snap_state;
	}
}

/* The storage of a table we hold a lock on (TRUNCATE gives it new storage) */
static Oid
es_relfilenode(Oid relid)
{
	Relation	rel = table_open(relid, NoLock);
	Oid			node = rel->rd_node.relNode;

	table_close(rel, NoLock);
	return node;
}

/*
 * Rebuild the entity's state up to its last event.  The cached state's
 * seq_no is the hint for finding the last seq_no with point lookups.
 */
static void
es_rebuild_state(EsCommand *c)
{
	const EsCatalog *cat = es_catalog();
	Datum		cached[Natts_es_state_rows];
	int64		last;

	/*
	 * The lock the update will take, taken now and kept: no TRUNCATE of the
	 * cache can come between reading the row's TID and updating it.
	 */
	LockRelationOid(cat->entity_states, RowExclusiveLock);
	c->has_state_row = es_state_row(c, cat->entity_states, cat->entity_states_pkey,
									Natts_es_state_rows, cached, &c->state_tid);
	c->state_relfilenode = es_relfilenode(cat->entity_states);
	last = es_locked_last_seq_no(&c->entity, c->has_state_row ?
								 DatumGetInt64(cached[Anum_es_entity_states_seq_no - 1]) : 0);
	es_start_state(c, last, c->has_state_row ? cached : NULL);
	if (c->seq_no < last)
		es_sandbox_run(&c->reg.event_handler.run_as, es_fold_stored_events, c);
	if (c->seq_no != last)
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("could not serialize access due to a concurrent command on entity %s",
						es_entity_string(&c->entity)),
				 errdetail("Events up to seq_no " INT64_FORMAT " were committed after this transaction's snapshot was taken; it sees up to " INT64_FORMAT ".",
						   last, c->seq_no),
				 errhint("Retry the transaction.")));
}

/* A command handler's call: what it is given and what it returns */
typedef struct EsDecideCall
{
	EsCommand  *c;
	Oid			handler;
	Datum		args;
	Datum		result;
	bool		isnull;
} EsDecideCall;

/* Call the command handler (runs in its sandbox) */
static void
es_decide_call(void *arg)
{
	EsDecideCall *call = (EsDecideCall *) arg;
	FmgrInfo	fn;

	fmgr_info(call->handler, &fn);
	call->result = es_call_handler(&fn, PointerGetDatum(call->c->entity.id), call->c->state,
								   call->args, false, &call->isnull);
}

/* Ask the command handler what to do */
static void
es_decide(EsCommand *c, const EsHandler *handler, Datum args, EsDecision *d)
{
	EsDecideCall call = {c, handler->fn, args, (Datum) 0, true};

	es_sandbox_run(&handler->run_as, es_decide_call, &call);
	es_read_decision(call.result, call.isnull, handler->fn, d);
}

/*
 * Keep the new state with the entity: its entity_states row is updated in
 * place (usually a HOT update) or inserted.  We hold the entity lock, so
 * the row found when the state was rebuilt is normally still the current
 * one; when a handler truncated the table meanwhile, or a hand-made UPDATE
 * or DELETE changed the row, it is looked up again.
 */
static void
es_write_state(EsCommand *c)
{
	EsTableWriter w;
	TupleTableSlot *slot;
	ScanKeyData keys[2];

	es_table_open(&w, es_catalog()->entity_states, InvalidOid);
	es_check_shape(w.rel, Natts_es_entity_states, es_entity_states_types);
	slot = es_table_entity_slot(&w, &c->entity);
	slot->tts_values[Anum_es_entity_states_seq_no - 1] = Int64GetDatum(c->seq_no);
	slot->tts_values[Anum_es_entity_states_state - 1] = c->state;
	slot->tts_values[Anum_es_entity_states_generation - 1] = Int64GetDatum(c->reg.generation);
	ExecStoreVirtualTuple(slot);
	if (!c->has_state_row)
		es_table_insert(&w, slot);
	else if (w.rel->rd_node.relNode != c->state_relfilenode ||
			 !es_table_try_update(&w, &c->state_tid, slot))
	{
		es_entity_scankeys(keys, &c->entity);
		es_table_put(&w, es_table_find(&w, es_catalog()->entity_states_pkey, keys, 2), slot);
	}
	es_table_close(&w);
}

/* Keep the new state with the entity, and save a snapshot when one is due */
static void
es_store_state(EsCommand *c, int64 before)
{
	int32		n = c->reg.snapshot_after;

	es_write_state(c);
	if (n == 0 || (c->seq_no / n == before / n && c->folded < n))
		return;
	es_save_command_snapshot(&c->entity, c->seq_no, c->state, c->reg.generation);
}

/* The events of a decision to fold, after seq_no before */
typedef struct EsFoldDecision
{
	EsCommand  *c;
	const EsDecision *d;
	int64		before;
} EsFoldDecision;

/* Fold a decision's events into the state (runs in the event handler's sandbox) */
static void
es_fold_decision(void *arg)
{
	EsFoldDecision *f = (EsFoldDecision *) arg;

	for (int i = 0; i < f->d->nevents; i++)
		es_apply_event(f->c, f->before + i + 1, f->d->events[i].event_type,
					   f->d->events[i].payload, false);
}

/*
 * Append the decision's events (validated when the decision was read) with
 * the entity lock the command holds, and fold them into the state.  Events
 * whose ids the entity already holds were appended by an earlier attempt:
 * then nothing changes.
 */
static void
es_apply_decision(EsCommand *c, const EsDecision *d)
{
	EsFoldDecision f = {c, d, c->seq_no};

	if (es_append_locked(&c->entity, f.before, d->events, d->nevents) !=
		f.before + d->nevents)
		return;
	es_sandbox_run(&c->reg.event_handler.run_as, es_fold_decision, &f);
	es_store_state(c, f.before);
}

/* Set up the command: lock the entity, read its registration */
static void
es_command_init(EsCommand *c)
{
	PreventCommandIfReadOnly("eventsourced.handle_command()");
	PreventCommandIfParallelMode("eventsourced.handle_command()");
	es_lock_entity(&c->entity);
	es_push_command_snapshot();
	es_cached_entity_type(c->entity.type, &c->reg);
	fmgr_info(c->reg.event_handler.fn, &c->event_handler);
	c->folded = 0;
	c->cur = 0;
	for (int i = 0; i < 2; i++)
		c->fold_cxt[i] = AllocSetContextCreate(CurrentMemoryContext, "eventsourced fold",
											   ALLOCSET_DEFAULT_SIZES);
}

/* Columns of eventsourced.command_results: the key, the command, its result, when */
#define Natts_es_command_results	10
#define Anum_es_command_results_command 4
#define Anum_es_command_results_result	5	/* the first of the command_result's columns */
static const Oid es_command_results_types[Natts_es_command_results] = {
	TEXTOID, TEXTOID, TEXTOID, TEXTOID, BOOLOID, JSONBOID, JSONBOID, INT8OID, JSONBOID, TIMESTAMPTZOID
};

/*
 * The result stored for the entity's command with this id, if any: a
 * retry gets the first attempt's result (we hold the entity lock, so the
 * first attempt has ended).  The id must have been used for the same
 * command, whose handler the caller may run (checked before).
 */
static bool
es_stored_result(EsCommand *c, text *command, text *command_id, Datum *values, bool *nulls)
{
	const EsCatalog *cat = es_catalog();
	ScanKeyData keys[3];
	Datum		row[Natts_es_command_results];
	bool		rnulls[Natts_es_command_results];
	text	   *stored;

	if (!OidIsValid(cat->command_results))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("command ids need version 0.4.0 of the extension in this database"),
				 errhint("Run ALTER EXTENSION eventsourced UPDATE.")));
	es_entity_scankeys(keys, &c->entity);
	ScanKeyEntryInitialize(&keys[2], 0, 3, BTEqualStrategyNumber, InvalidOid,
						   C_COLLATION_OID, F_TEXTEQ, PointerGetDatum(command_id));
	if (!es_fetch_by_key(cat->command_results, cat->command_results_pkey, keys, 3,
						 Natts_es_command_results, row, rnulls, NULL))
		return false;
	stored = DatumGetTextPP(row[Anum_es_command_results_command - 1]);
	if (!DatumGetBool(DirectFunctionCall2Coll(texteq, C_COLLATION_OID, PointerGetDatum(stored),
											  PointerGetDatum(command))))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("command_id %s of entity %s was used for another command",
						es_quote_name(text_to_cstring(command_id)), es_entity_string(&c->entity)),
				 errdetail("It was used for command %s.", es_quote_name(text_to_cstring(stored))),
				 errhint("Use a new command_id for each command.")));
	memcpy(values, &row[Anum_es_command_results_result - 1], sizeof(Datum) * Natts_es_command_result);
	memcpy(nulls, &rnulls[Anum_es_command_results_result - 1], sizeof(bool) * Natts_es_command_result);
	return true;
}

/* Keep a command's result under its id, in the command's transaction */
static void
es_store_result(EsCommand *c, text *command, text *command_id, const Datum *values,
				const bool *nulls)
{
	EsTableWriter w;
	TupleTableSlot *slot;

	es_table_open(&w, es_catalog()->command_results, InvalidOid);
	es_check_shape(w.rel, Natts_es_command_results, es_command_results_types);
	slot = es_table_entity_slot(&w, &c->entity);
	slot->tts_values[2] = PointerGetDatum(command_id);
	slot->tts_values[Anum_es_command_results_command - 1] = PointerGetDatum(command);
	for (int i = 0; i < Natts_es_command_result; i++)
	{
		slot->tts_values[Anum_es_command_results_result - 1 + i] = values[i];
		slot->tts_isnull[Anum_es_command_results_result - 1 + i] = nulls[i];
	}
	slot->tts_values[Natts_es_command_results - 1] =
		TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
	ExecStoreVirtualTuple(slot);
	es_table_insert(&w, slot);
	es_table_close(&w);
}

PG_FUNCTION_INFO_V1(eventsourced_handle_command);

/*
 * handle_command(entity_type, entity_id, command, args [, command_id]).
 * With a command_id, the result is kept, and a retry with that id returns
 * it without deciding again.
 */
Datum
eventsourced_handle_command(PG_FUNCTION_ARGS)
{
	EsCommand	c;
	text	   *command;
	text	   *command_id = NULL;
	EsHandler	handler;
	EsDecision	d;
	Datum		values[Natts_es_command_result];
	bool		nulls[Natts_es_command_result];
	Datum		result;

	c.entity = es_entity_arg(fcinfo, 0, 1);
	command = es_name_arg(fcinfo, 2, "command", ES_MAX_TYPE_LEN);
	if (PG_ARGISNULL(3))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("args must not be null"),
				 errhint("Pass '{}' for a command without arguments.")));
	if (PG_NARGS() > 4 && !PG_ARGISNULL(4))
		command_id = es_name_arg(fcinfo, 4, "command_id", ES_MAX_TYPE_LEN);
	es_command_init(&c);
	es_cached_command(c.entity.type, command, &handler);
	if (command_id == NULL || !es_stored_result(&c, command, command_id, values, nulls))
	{
		es_rebuild_state(&c);
		es_decide(&c, &handler, PG_GETARG_DATUM(3), &d);
		if (d.accepted && d.nevents > 0)
			es_apply_decision(&c, &d);
		es_command_result_values(&d, c.seq_no, c.state, values, nulls);
		if (command_id != NULL)
			es_store_result(&c, command, command_id, values, nulls);
	}
	result = es_command_result(fcinfo, values, nulls);
	PopActiveSnapshot();
	PG_RETURN_DATUM(result);
}
