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
 * security, storage parameters and tablespaces, statistics, clustering,
 * replica identity, owner.  CREATE TRIGGER, CREATE RULE, renames, SET
 * SCHEMA, changes to the extension's view and composite
 * types, making one of its tables a partition or a parent, and dropping its
 * indexes or triggers are refused.  CREATE INDEX, GRANT/REVOKE and policies
 * stay allowed, and so does ALTER SEQUENCE of the position sequence (the
 * documented TRUNCATE and RESTART of an emptied store).  The extension's own scripts (CREATE and
 * ALTER EXTENSION) are not checked.  A superuser who knows better can
 * disable the event trigger (ALTER EVENT TRIGGER eventsourced_ddl_guard
 * DISABLE); the C code still refuses a table of the wrong shape (55000).
 */
#include "eventsourced.h"

#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "commands/event_trigger.h"
#include "commands/extension.h"
#include "nodes/makefuncs.h"
#include "nodes/parsenodes.h"
#include "utils/lsyscache.h"

/* Whether relid is a relation of the extension's schema (table, index, view, type, sequence) */
static bool
es_is_ours(Oid relid)
{
	Oid			nsp = get_namespace_oid("eventsourced", true);

	return OidIsValid(relid) && OidIsValid(nsp) && get_rel_namespace(relid) == nsp;
}

/* The relation a statement names, if it is one of ours; InvalidOid otherwise */
static Oid
es_our_relation(RangeVar *rv)
{
	Oid			relid;

	if (rv == NULL)
		return InvalidOid;
	relid = RangeVarGetRelid(rv, NoLock, true);
	return es_is_ours(relid) ? relid : InvalidOid;
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
		case AT_SetOptions:
		case AT_ResetOptions:
		case AT_SetStatistics:
		case AT_SetStorage:
		case AT_SetCompression:
		case AT_SetTableSpace:
		case AT_ClusterOn:
		case AT_DropCluster:
		case AT_ReplicaIdentity:
		case AT_ValidateConstraint:
		case AT_ChangeOwner:
		case AT_DetachPartition:
		case AT_DetachPartitionFinalize:
			return true;
		default:
			return false;
	}
}

/* Refuse a statement on one of our relations */
static void
es_refuse_ddl(Oid relid, const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("%s is not supported on eventsourced.%s", what, get_rel_name(relid)),
			 errdetail("The extension reads and writes its tables and types directly: added columns, defaults, "
					   "constraints, triggers, rules, partitions and renames would be ignored or break it."),
			 errhint("Enabling and disabling triggers, row-level security, storage parameters, "
					 "CREATE INDEX and GRANT are allowed; build other logic from the event feed.")));
}

/* Refuse what a statement does to the relation rv names, if it is one of ours */
static void
es_refuse_if_ours(RangeVar *rv, const char *what)
{
	Oid			relid = es_our_relation(rv);

	if (OidIsValid(relid))
		es_refuse_ddl(relid, what);
}

/*
 * Check an ALTER TABLE (also ALTER INDEX, VIEW, TYPE ... ADD ATTRIBUTE):
 * on our tables and indexes only the allowed subcommands, on our views and
 * composite types nothing; and none of our tables may become another
 * table's partition.
 */
static void
es_check_alter_table(AlterTableStmt *stmt)
{
	Oid			relid = es_our_relation(stmt->relation);
	char		relkind = OidIsValid(relid) ? get_rel_relkind(relid) : RELKIND_RELATION;
	ListCell   *lc;

	foreach(lc, stmt->cmds)
	{
		AlterTableCmd *cmd = lfirst_node(AlterTableCmd, lc);

		if (cmd->subtype == AT_AttachPartition && cmd->def != NULL)
			es_refuse_if_ours(((PartitionCmd *) cmd->def)->name, "attaching as a partition");
		if (!OidIsValid(relid))
			continue;
		if (relkind == RELKIND_VIEW || relkind == RELKIND_COMPOSITE_TYPE ||
			!es_alter_allowed(cmd->subtype))
			es_refuse_ddl(relid, "this ALTER");
	}
}

/* Refuse CREATE TABLE ... INHERITS (ours) or PARTITION OF ours */
static void
es_check_create_table(CreateStmt *stmt)
{
	ListCell   *lc;

	foreach(lc, stmt->inhRelations)
		es_refuse_if_ours(lfirst_node(RangeVar, lc), "inheriting from or partitioning");
}

/* Refuse DROP INDEX of the extension's own indexes and DROP TRIGGER on its tables */
static void
es_check_drop(DropStmt *stmt)
{
	ListCell   *lc;

	foreach(lc, stmt->objects)
	{
		List	   *names = (List *) lfirst(lc);
		Oid			relid;

		if (stmt->removeType == OBJECT_TRIGGER && list_length(names) > 1)
			es_refuse_if_ours(makeRangeVarFromNameList(list_truncate(list_copy(names),
																	 list_length(names) - 1)),
							  "DROP TRIGGER");
		else if (stmt->removeType == OBJECT_INDEX)
		{
			relid = es_our_relation(makeRangeVarFromNameList(names));
			if (OidIsValid(relid) && es_is_catalog_relation(relid))
				es_refuse_ddl(relid, "DROP INDEX");
		}
	}
}

/* Refuse a utility statement that would change one of our relations in a way we do not allow */
static void
es_check_statement(Node *stmt)
{
	switch (nodeTag(stmt))
	{
		case T_AlterTableStmt:
			es_check_alter_table((AlterTableStmt *) stmt);
			break;
		case T_CreateStmt:
			es_check_create_table((CreateStmt *) stmt);
			break;
		case T_DropStmt:
			es_check_drop((DropStmt *) stmt);
			break;
		case T_CreateTrigStmt:
			es_refuse_if_ours(((CreateTrigStmt *) stmt)->relation, "CREATE TRIGGER");
			break;
		case T_RuleStmt:
			es_refuse_if_ours(((RuleStmt *) stmt)->relation, "CREATE RULE");
			break;
		case T_RenameStmt:
			es_refuse_if_ours(((RenameStmt *) stmt)->relation, "renaming");
			break;
		case T_AlterObjectSchemaStmt:
			es_refuse_if_ours(((AlterObjectSchemaStmt *) stmt)->relation, "SET SCHEMA");
			break;
		default:
			break;
	}
}

PG_FUNCTION_INFO_V1(eventsourced_ddl_guard);

/* Event trigger at ddl_command_start */
Datum
eventsourced_ddl_guard(PG_FUNCTION_ARGS)
{
	EventTriggerData *trigdata = (EventTriggerData *) fcinfo->context;

	if (!CALLED_AS_EVENT_TRIGGER(fcinfo))
		elog(ERROR, "eventsourced_ddl_guard: not called as an event trigger");
	if (!creating_extension)
		es_check_statement(trigdata->parsetree);
	PG_RETURN_VOID();
}
