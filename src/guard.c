/*
 * guard.c
 *		Keeps the event log append-only.
 */
#include "eventsourced.h"

#include "commands/trigger.h"

PG_FUNCTION_INFO_V1(eventsourced_refuse_change);

/* Statement trigger that refuses UPDATE, DELETE and TRUNCATE of events */
Datum
eventsourced_refuse_change(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	const char *op;

	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "eventsourced_refuse_change: not called as a trigger");
	if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
		op = "UPDATE";
	else if (TRIGGER_FIRED_BY_DELETE(trigdata->tg_event))
		op = "DELETE";
	else
		op = "TRUNCATE";
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("events are immutable: %s of eventsourced.events is not allowed", op),
			 errdetail("The event log is append-only; events are added with eventsourced.append()."),
			 errhint("To purge data on purpose, a superuser may disable the trigger \"%s\" in a transaction of its own.",
					 trigdata->tg_trigger->tgname)));
	PG_RETURN_NULL();
}
