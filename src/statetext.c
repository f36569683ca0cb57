/*
 * statetext.c
 *		How long a JSON snapshot state's text form is, so that a state whose
 *		text could never be read back is refused when it is saved.
 *
 * snapshot_changes() returns JSON states as their text (jsonb's output,
 * with ", " and ": " separators and JSON escapes): a jsonb of some hundred
 * megabytes can have a text form above PostgreSQL's 1 GB limit on one value
 * (a control character becomes six bytes, "\u0001"), and every page holding
 * it would then fail.  The length is counted walking the jsonb, without
 * building the text; states small enough that even six bytes per byte stay
 * below the limit are not walked.
 */
#include "eventsourced.h"

#include "access/detoast.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

/* The longest text form of a JSON state: one value, with room for its row */
#ifndef ES_MAX_STATE_TEXT		/* a test build may set it lower */
#define ES_MAX_STATE_TEXT	((Size) MaxAllocSize - 1024 * 1024)
#endif
/* No byte of a jsonb becomes more than this many bytes of text ("\u0001") */
#define ES_TEXT_PER_BYTE	6

/* The length of a string's JSON text, quotes and escapes included */
static Size
es_json_string_length(const char *s, int len)
{
	Size		n = 2;

	for (int i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) s[i];

		if (c == '"' || c == '\\' || c == '\b' || c == '\f' || c == '\n' || c == '\r' || c == '\t')
			n += 2;
		else if (c < ' ')
			n += 6;
		else
			n += 1;
	}
	return n;
}

/* The length of a scalar's JSON text */
static Size
es_json_scalar_length(const JsonbValue *v)
{
	switch (v->type)
	{
		case jbvString:
			return es_json_string_length(v->val.string.val, v->val.string.len);
		case jbvNumeric:
			{
				char	   *text = DatumGetCString(DirectFunctionCall1(numeric_out,
																	   NumericGetDatum(v->val.numeric)));
				Size		len = strlen(text);

				pfree(text);
				return len;
			}
		case jbvBool:
			return v->val.boolean ? 4 : 5;
		default:
			return 4;			/* null */
	}
}

/* The length of the jsonb's text form */
static Size
es_jsonb_text_length(Jsonb *jb)
{
	JsonbIterator *it = JsonbIteratorInit(&jb->root);
	JsonbIteratorToken tok;
	JsonbValue	v;
	Size		n = 0;
	bool		first = true;

	while ((tok = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
	{
		/* ", " before all but the first key or element of a container */
		Size		sep = first ? 0 : 2;

		CHECK_FOR_INTERRUPTS();
		switch (tok)
		{
			case WJB_BEGIN_ARRAY:
			case WJB_BEGIN_OBJECT:
				n += sep + 1;
				first = true;
				break;
			case WJB_END_ARRAY:
			case WJB_END_OBJECT:
				n += 1;
				first = false;
				break;
			case WJB_KEY:
				n += sep + es_json_scalar_length(&v) + 2;	/* ": " */
				first = true;	/* its value follows without a comma */
				break;
			case WJB_ELEM:
				n += sep + es_json_scalar_length(&v);
				first = false;
				break;
			default:			/* WJB_VALUE */
				n += es_json_scalar_length(&v);
				first = false;
				break;
		}
	}
	/* a scalar document is an array of one element, printed without brackets */
	return JB_ROOT_IS_SCALAR(jb) ? n - 2 : n;
}

/*
 * Refuse a JSON state whose text form is beyond what one value can hold:
 * snapshot_changes() could never return it.
 */
void
es_check_state_text(Datum state)
{
	Size		len;

	if (toast_raw_datum_size(state) <= ES_MAX_STATE_TEXT / ES_TEXT_PER_BYTE)
		return;
	len = es_jsonb_text_length(DatumGetJsonbP(state));
	if (len > ES_MAX_STATE_TEXT)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("snapshot state is too large as JSON text"),
				 errdetail("Its text form has %zu bytes; at most %zu can be read back.",
						   len, (Size) ES_MAX_STATE_TEXT),
				 errhint("Save a smaller state, or save it as bytes.")));
}
