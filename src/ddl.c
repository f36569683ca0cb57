/*
 * ddl.c
 *		An event trigger that refuses DDL which would change the shape of
 *		the extension's tables, or hang code on them that our direct writes
 *		would never run.
 *
 * append() and handle_command() write rows straight into the heap and its
 * indexes, sized for the columns the extension created: an added column,
 * default or constraint would be ignored by them, and a trigger or rule
 * would silently not fire.  ALTER TABLE on one of our tables is therefore
 * limited to what operations need and what cannot change a row's shape:
 * enabling and disabling triggers (the documented purge), row-level
 * security, storage parameters, statistics, clustering, replica identity
 * and attaching or detaching partitions.  CREATE TRIGGER, CREATE RULE and
 * renames are refused.  CREATE INDEX, GRANT/REVOKE and policies are other
 * statements and stay allowed.  The extension's own scripts (CREATE and
 * ALTER EXTENSION) are not checked.  A superuser who knows better can
 * disable the event trigger (ALTER EVENT TRIGGER eventsourced_ddl_guard
 * DISABLE); the C code still refuses a table of the wrong shape (55000).
 */
#include "eventsourced.h"

#include "catalog/namespace.h"
#include "commands/event_trigger.h"
#include "commands/extension.h"
#include "nodes/parsenodes.h"
#include "utils/lsyscache.h"

/* The extension's tables: the ones this guard protects */
static bool
es_is_our_table(Oid relid)
{
	const EsCatalog *cat = es_catalog();

	return relid == cat->events || relid == cat->snapshots ||
		relid == cat->projection_state || relid == cat->protobuf_descriptors ||
		relid == cat->entity_types || relid == cat->commands ||
		relid == cat->entity_states || relid == cat->snapshot_generations;
}

/* The table a statement names, if it is one of ours; InvalidOid otherwise */
static Oid
es_our_table(RangeVar *rv)
{
	Oid			relid;

	if (rv == NULL)
		return InvalidOid;
	relid = RangeVarGetRelid(rv, NoLock, true);
	return OidIsValid(relid) && es_is_our_table(relid) ? relid : InvalidOid;
}

/* ALTER TABLE subcommands that leave a table's rows as our writers make them */
static bool
es_alter_allowed(AlterTableType subtype)
{
	switch (subtype)
	{
		case AT_EnableTrig:
		case AT_EnableAlwaysTrig:
		case AT_EnableReplicaTrig:
		case AT_DisableTrig:
		case AT_EnableTrigAll:
		case AT_DisableTrigAll:
		case AT_EnableTrigUser:
		case AT_DisableTrigUser:
		case AT_EnableRowSecurity:
		case AT_DisableRowSecurity:
		case AT_ForceRowSecurity:
		case AT_NoForceRowSecurity:
		case AT_SetRelOptions:
		case AT_ResetRelOptions:
		case AT_ReplaceRelOptions:
		case AT_SetStatistics:
		case AT_ClusterOn:
		case AT_DropCluster:
		case AT_ReplicaIdentity:
		case AT_AttachPartition:
		case AT_DetachPartition:
		case AT_DetachPartitionFinalize:
			return true;
		default:
			return false;
	}
}

/* Refuse a statement on one of our tables */
static void
es_refuse_ddl(Oid relid, const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("%s is not supported on eventsourced.%s", what, get_rel_name(relid)),
			 errdetail("The extension writes this table directly: added columns, defaults, "
					   "constraints, triggers and rules would be ignored by its writes."),
			 errhint("Enabling and disabling triggers, row-level security, storage parameters, "
					 "CREATE INDEX and GRANT are allowed; build other logic from the event feed.")));
}

/* Check an ALTER TABLE statement */
static void
es_check_alter_table(AlterTableStmt *stmt)
{
	Oid			relid = es_our_table(stmt->relation);
	ListCell   *lc;

	if (!OidIsValid(relid))
		return;
	foreach(lc, stmt->cmds)
	{
		AlterTableCmd *cmd = lfirst_node(AlterTableCmd, lc);

		if (!es_alter_allowed(cmd->subtype))
			es_refuse_ddl(relid, "this ALTER TABLE");
	}
}

PG_FUNCTION_INFO_V1(eventsourced_ddl_guard);

/* Event trigger at ddl_command_start */
Datum
eventsourced_ddl_guard(PG_FUNCTION_ARGS)
{
	EventTriggerData *trigdata = (EventTriggerData *) fcinfo->context;
	Node	   *stmt;

	if (!CALLED_AS_EVENT_TRIGGER(fcinfo))
		elog(ERROR, "eventsourced_ddl_guard: not called as an event trigger");
	if (creating_extension)
		PG_RETURN_VOID();
	stmt = trigdata->parsetree;
	if (IsA(stmt, AlterTableStmt))
		es_check_alter_table((AlterTableStmt *) stmt);
	else if (IsA(stmt, CreateTrigStmt) && OidIsValid(es_our_table(((CreateTrigStmt *) stmt)->relation)))
		es_refuse_ddl(es_our_table(((CreateTrigStmt *) stmt)->relation), "CREATE TRIGGER");
	else if (IsA(stmt, RuleStmt) && OidIsValid(es_our_table(((RuleStmt *) stmt)->relation)))
		es_refuse_ddl(es_our_table(((RuleStmt *) stmt)->relation), "CREATE RULE");
	else if (IsA(stmt, RenameStmt) && OidIsValid(es_our_table(((RenameStmt *) stmt)->relation)))
		es_refuse_ddl(es_our_table(((RenameStmt *) stmt)->relation), "renaming");
	else if (IsA(stmt, AlterObjectSchemaStmt) &&
			 OidIsValid(es_our_table(((AlterObjectSchemaStmt *) stmt)->relation)))
		es_refuse_ddl(es_our_table(((AlterObjectSchemaStmt *) stmt)->relation), "SET SCHEMA");
	PG_RETURN_VOID();
}
