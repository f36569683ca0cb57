/*
 * decision.c
 *		Reading a command handler's eventsourced.decision and building the
 *		eventsourced.command_result that handle_command() returns.
 */
#include "eventsourced.h"

#include "access/htup_details.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/typcache.h"

/* Attribute numbers of eventsourced.decision */
#define Anum_es_decision_accepted	1
#define Anum_es_decision_events		2
#define Anum_es_decision_reply		3
#define Anum_es_decision_rejection	4
#define Natts_es_decision			4

/* Attribute numbers of eventsourced.command_result */
StaticAssertDecl(Natts_es_command_result == 5, "command_result has five columns");

/* A decision's fields, deformed once */
typedef struct EsDecisionFields
{
	Datum		values[Natts_es_decision];
	bool		nulls[Natts_es_decision];
} EsDecisionFields;

/* A decision field that must be present */
static Datum
es_required_field(const EsDecisionFields *f, int attno, const char *field,
				  Oid handler, const char *hint)
{
	if (f->nulls[attno - 1])
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s of the decision of command handler %s must not be null",
						field, format_procedure(handler)),
				 errhint("%s", hint)));
	return f->values[attno - 1];
}

/*
 * The fields of a decision of the shape this code reads (its type could
 * have been altered)
 */
static void
es_decision_fields(HeapTupleHeader decision, EsDecisionFields *f)
{
	TupleDesc	desc = lookup_rowtype_tupdesc(HeapTupleHeaderGetTypeId(decision),
											  HeapTupleHeaderGetTypMod(decision));
	HeapTupleData tuple;

	es_check_tupdesc(desc, "type eventsourced.decision", Natts_es_decision, NULL);
	tuple.t_len = HeapTupleHeaderGetDatumLength(decision);
	ItemPointerSetInvalid(&tuple.t_self);
	tuple.t_tableOid = InvalidOid;
	tuple.t_data = decision;
	heap_deform_tuple(&tuple, desc, f->values, f->nulls);
	ReleaseTupleDesc(desc);
}

/*
 * Read what a command handler returned (handler names it in messages).  The
 * events are validated as an append validates its argument (none when the
 * field is NULL or the array empty).
 */
void
es_read_decision(Datum result, bool isnull, Oid handler, EsDecision *d)
{
	EsDecisionFields f;

	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("command handler %s returned null", format_procedure(handler)),
				 errhint("Return eventsourced.emit(...), eventsourced.reply(...) or eventsourced.reject(...).")));
	es_decision_fields(DatumGetHeapTupleHeader(result), &f);
	d->accepted = DatumGetBool(es_required_field(&f, Anum_es_decision_accepted,
												 "accepted", handler,
												 "Build decisions with eventsourced.emit(), reply() or reject()."));
	d->reply = f.values[Anum_es_decision_reply - 1];
	d->reply_isnull = f.nulls[Anum_es_decision_reply - 1];
	d->rejection = (Datum) 0;
	d->events = NULL;
	d->nevents = 0;
	if (!d->accepted)
		d->rejection = es_required_field(&f, Anum_es_decision_rejection,
										 "rejection", handler,
										 "Use 'null'::jsonb for a rejection without details.");
	else if (!f.nulls[Anum_es_decision_events - 1])
	{
		d->events = es_events_from_array(DatumGetArrayTypeP(f.values[Anum_es_decision_events - 1]),
										 &d->nevents);
		es_check_event_ids(d->events, d->nevents);
	}
}

/*
 * The command_result columns of a decision: the reply defaults to the new
 * state; a rejection carries the handler's value and the unchanged state.
 */
void
es_command_result_values(const EsDecision *d, int64 seq_no, Datum state,
						 Datum *values, bool *nulls)
{
	values[0] = BoolGetDatum(d->accepted);
	nulls[0] = false;
	values[1] = d->reply_isnull ? state : d->reply;
	nulls[1] = !d->accepted;
	values[2] = d->rejection;
	nulls[2] = d->accepted;
	values[3] = Int64GetDatum(seq_no);
	nulls[3] = false;
	values[4] = state;
	nulls[4] = false;
}

/* handle_command's result, a command_result of those columns */
Datum
es_command_result(FunctionCallInfo fcinfo, const Datum *values, const bool *nulls)
{
	TupleDesc	desc;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "handle_command must return a composite type");
	es_check_tupdesc(desc, "type eventsourced.command_result", Natts_es_command_result, NULL);
	desc = BlessTupleDesc(desc);
	return HeapTupleGetDatum(heap_form_tuple(desc, (Datum *) values, (bool *) nulls));
}
