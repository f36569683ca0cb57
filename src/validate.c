/*
 * validate.c
 *		Checks of the arguments that come from SQL, before anything is written.
 */
#include "eventsourced.h"

#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"

/* A name must be present, non-empty and bounded */
void
es_check_name(text *t, const char *what, int maxlen)
{
	int			len;

	if (t == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", what)));
	len = VARSIZE_ANY_EXHDR(t);
	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be empty", what)));
	if (len > maxlen)
		ereport(ERROR,
				(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
				 errmsg("%s is too long", what),
				 errdetail("It is %d bytes long; the limit is %d bytes.", len, maxlen)));
}

/* A required name argument (entity type, entity id, event type) */
text *
es_name_arg(FunctionCallInfo fcinfo, int argno, const char *what, int maxlen)
{
	text	   *t = PG_ARGISNULL(argno) ? NULL : PG_GETARG_TEXT_PP(argno);

	es_check_name(t, what, maxlen);
	return t;
}

/* The entity named by two arguments */
EsEntity
es_entity_arg(FunctionCallInfo fcinfo, int type_arg, int id_arg)
{
	EsEntity	entity;

	entity.type = es_name_arg(fcinfo, type_arg, "entity_type", ES_MAX_TYPE_LEN);
	entity.id = es_name_arg(fcinfo, id_arg, "entity_id", ES_MAX_ID_LEN);
	return entity;
}

/* expected_seq_no: NULL means "no check" (-1), otherwise it must be >= 0 */
int64
es_expected_arg(FunctionCallInfo fcinfo, int argno)
{
	int64		expected;

	if (PG_ARGISNULL(argno))
		return -1;
	expected = PG_GETARG_INT64(argno);
	if (expected < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("expected_seq_no must not be negative"),
				 errdetail("expected_seq_no was " INT64_FORMAT ".", expected),
				 errhint("Pass 0 for a new entity, the last seq_no you saw, or NULL to skip the check.")));
	return expected;
}

/* Payloads are required; JSON null is the way to say "nothing" */
void
es_check_payload(bool isnull)
{
	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("payload must not be null"),
				 errhint("Use '{}' or 'null'::jsonb for an event without data.")));
}

/*
 * Append s to buf in double quotes, doubling each double quote in it and
 * writing control characters as \xNN, so that a name can neither be
 * confused with another nor forge lines of a message.
 */
static void
es_append_quoted(StringInfo buf, const char *s)
{
	appendStringInfoChar(buf, '"');
	for (; *s; s++)
	{
		unsigned char c = (unsigned char) *s;

		if (c < 0x20 || c == 0x7f)
		{
			appendStringInfo(buf, "\\x%02x", c);
			continue;
		}
		if (c == '"')
			appendStringInfoChar(buf, '"');
		appendStringInfoChar(buf, c);
	}
	appendStringInfoChar(buf, '"');
}

/* A name for messages, quoted as es_append_quoted does */
char *
es_quote_name(const char *s)
{
	StringInfoData buf;

	initStringInfo(&buf);
	es_append_quoted(&buf, s);
	return buf.data;
}

/*
 * An entity for messages: "type"/"id", each name in double quotes with its
 * double quotes doubled, so that ('a/b', 'c') and ('a', 'b/c') read apart.
 */
char *
es_entity_cstring(const char *type, const char *id)
{
	StringInfoData buf;

	initStringInfo(&buf);
	es_append_quoted(&buf, type);
	appendStringInfoChar(&buf, '/');
	es_append_quoted(&buf, id);
	return buf.data;
}

/* es_entity_cstring of an EsEntity */
char *
es_entity_string(const EsEntity *entity)
{
	return es_entity_cstring(text_to_cstring(entity->type), text_to_cstring(entity->id));
}

PG_FUNCTION_INFO_V1(eventsourced_check_entity_read);

/* Validates events_by_id's arguments and passes max_count through to LIMIT */
Datum
eventsourced_check_entity_read(PG_FUNCTION_ARGS)
{
	int64		from_seq_no;

	(void) es_entity_arg(fcinfo, 0, 1);
	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("from_seq_no must not be null")));
	from_seq_no = PG_GETARG_INT64(2);
	if (from_seq_no < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("from_seq_no must be at least 1"),
				 errdetail("from_seq_no was " INT64_FORMAT ".", from_seq_no)));
	if (PG_ARGISNULL(3))
		PG_RETURN_NULL();
	if (PG_GETARG_INT32(3) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_count must not be negative"),
				 errdetail("max_count was %d.", PG_GETARG_INT32(3)),
				 errhint("Pass NULL to read every event.")));
	PG_RETURN_INT32(PG_GETARG_INT32(3));
}
