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

/* Attribute numbers of eventsourced.event_data */
#define Anum_es_event_data_event_type	1
#define Anum_es_event_data_payload		2

/* Attribute numbers of eventsourced.command_result */
#define Natts_es_command_result		5

/* A decision field that must be present */
static Datum
es_required_field(HeapTupleHeader decision, int attno, const char *field,
				  Oid handler, const char *hint)
{
	bool		isnull;
	Datum		value = GetAttributeByNum(decision, attno, &isnull);

	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s of the decision of command handler %s must not be null",
						field, format_procedure(handler)),
				 errhint("%s", hint)));
	return value;
}

/* The decision's events, deconstructed; none when the field is NULL */
static void
es_decision_events(HeapTupleHeader decision, EsDecision *d)
{
	bool		isnull;
	Datum		events = GetAttributeByNum(decision, Anum_es_decision_events, &isnull);
	ArrayType  *arr;
	int16		typlen;
	bool		typbyval;
	char		typalign;

	d->events = (Datum) 0;
	d->nevents = 0;
	if (isnull)
		return;
	arr = DatumGetArrayTypeP(events);
	get_typlenbyvalalign(ARR_ELEMTYPE(arr), &typlen, &typbyval, &typalign);
	deconstruct_array(arr, ARR_ELEMTYPE(arr), typlen, typbyval, typalign,
					  &d->elems, &d->elem_nulls, &d->nevents);
	d->events = PointerGetDatum(arr);
}

/* A decision of the shape this code reads (its type could have been altered) */
static void
es_check_decision_type(HeapTupleHeader decision)
{
	TupleDesc	desc = lookup_rowtype_tupdesc(HeapTupleHeaderGetTypeId(decision),
											  HeapTupleHeaderGetTypMod(decision));

	es_check_tupdesc(desc, "type eventsourced.decision", Natts_es_decision, NULL);
	ReleaseTupleDesc(desc);
}

/*
 * Read what a command handler returned (handler names it in messages).
 * Events are validated later, by the append.
 */
void
es_read_decision(Datum result, bool isnull, Oid handler, EsDecision *d)
{
	HeapTupleHeader decision;

	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("command handler %s returned null", format_procedure(handler)),
				 errhint("Return eventsourced.emit(...), eventsourced.reply(...) or eventsourced.reject(...).")));
	decision = DatumGetHeapTupleHeader(result);
	es_check_decision_type(decision);
	d->accepted = DatumGetBool(es_required_field(decision, Anum_es_decision_accepted,
												 "accepted", handler,
												 "Build decisions with eventsourced.emit(), reply() or reject()."));
	d->reply = GetAttributeByNum(decision, Anum_es_decision_reply, &d->reply_isnull);
	d->rejection = (Datum) 0;
	if (d->accepted)
		es_decision_events(decision, d);
	else
	{
		d->rejection = es_required_field(decision, Anum_es_decision_rejection,
										 "rejection", handler,
										 "Use 'null'::jsonb for a rejection without details.");
		d->nevents = 0;
	}
}

/* Event i of an accepted decision (validated by the append): type and payload */
void
es_decision_event(const EsDecision *d, int i, text **event_type, Datum *payload)
{
	HeapTupleHeader ev = DatumGetHeapTupleHeader(d->elems[i]);
	bool		isnull;

	*event_type = DatumGetTextPP(GetAttributeByNum(ev, Anum_es_event_data_event_type, &isnull));
	*payload = GetAttributeByNum(ev, Anum_es_event_data_payload, &isnull);
}

/*
 * The command_result of a decision: the reply defaults to the new state;
 * a rejection carries the handler's value and the unchanged state.
 */
Datum
es_command_result(FunctionCallInfo fcinfo, const EsDecision *d, int64 seq_no, Datum state)
{
	TupleDesc	desc;
	Datum		values[Natts_es_command_result];
	bool		nulls[Natts_es_command_result] = {false, false, false, false, false};

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "handle_command must return a composite type");
	es_check_tupdesc(desc, "type eventsourced.command_result", Natts_es_command_result, NULL);
	desc = BlessTupleDesc(desc);
	values[0] = BoolGetDatum(d->accepted);
	values[1] = d->reply_isnull ? state : d->reply;
	nulls[1] = !d->accepted;
	values[2] = d->rejection;
	nulls[2] = d->accepted;
	values[3] = Int64GetDatum(seq_no);
	values[4] = state;
	return HeapTupleGetDatum(heap_form_tuple(desc, values, nulls));
}
