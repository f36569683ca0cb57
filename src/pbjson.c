/*
 * pbjson.c
 *		Protobuf payload to JSON text, driven by FileDescriptorSets.
 *
 * See pbjson.h for the mapping and its limits.  No PostgreSQL headers: this
 * file is compiled into the extension and into the fuzzers (test/fuzz).
 *
 * A set is decoded with protobuf-c's generated descriptor.proto code, then
 * compiled into a compact form (PbMessage, PbField, PbEnum) kept in an arena
 * owned by the schema; the protobuf-c structures are freed right away.
 * Payloads are walked on the wire format: each message is scanned once,
 * its known fields collected and sorted into declaration order, then
 * printed; nested messages recurse, bounded by PB_MAX_DEPTH.
 */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <protobuf-c/protobuf-c.h>
#include "google/protobuf/descriptor.pb-c.h"
#include "pbjson.h"

#if defined(__GNUC__) || defined(__clang__)
#define PB_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define PB_PRINTF(f, a)
#endif

#define PB_MAX_FIELD_NUMBER 536870911	/* 2^29 - 1 */
#define PB_ARENA_BLOCK 16384
#define PB_ALIGN 16

/* Field types, numbered as in FieldDescriptorProto.Type */
enum
{
	PBT_DOUBLE = 1, PBT_FLOAT, PBT_INT64, PBT_UINT64, PBT_INT32, PBT_FIXED64,
	PBT_FIXED32, PBT_BOOL, PBT_STRING, PBT_GROUP, PBT_MESSAGE, PBT_BYTES,
	PBT_UINT32, PBT_ENUM, PBT_SFIXED32, PBT_SFIXED64, PBT_SINT32, PBT_SINT64
};

/* Wire types */
enum
{
	WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_SGROUP = 3, WT_EGROUP = 4,
	WT_I32 = 5
};

static const char *const type_names[] = {
	"unset", "double", "float", "int64", "uint64", "int32", "fixed64",
	"fixed32", "bool", "string", "group", "message", "bytes", "uint32",
	"enum", "sfixed32", "sfixed64", "sint32", "sint64"
};

enum
{
	PB_KIND_MESSAGE, PB_KIND_ENUM
};

typedef struct PbArenaBlock
{
	struct PbArenaBlock *next;
	size_t		used;
	size_t		size;
} PbArenaBlock;

#define PB_BLOCK_HEADER \
	(((sizeof(PbArenaBlock) + PB_ALIGN - 1) / PB_ALIGN) * PB_ALIGN)

/* Common head of PbMessage and PbEnum */
typedef struct PbType
{
	const char *name;			/* full name with leading dot */
	int			kind;
	bool		shadowed;		/* an earlier definition has this name */
	uint64_t	seq;			/* definition order across the schema */
} PbType;

typedef struct PbMessage PbMessage;
typedef struct PbEnum PbEnum;

typedef struct PbField
{
	const char *name;
	const char *json_name;
	const char *type_name;		/* as in the descriptor; may be NULL */
	uint32_t	number;
	int			type;			/* PBT_*, 0 when unset until resolved */
	bool		repeated;
	bool		implicit;		/* proto3 implicit presence */
	bool		is_map;
	int32_t		oneof;			/* -1 when not in a oneof */
	const PbMessage *msg;
	const PbEnum *enm;
} PbField;

struct PbMessage
{
	PbType		hdr;
	PbField    *fields;			/* declaration order */
	PbField   **by_number;		/* sorted by field number */
	uint32_t	nfields;
	uint32_t	noneofs;
	bool		map_entry;
	const PbField *map_key;
	const PbField *map_value;
};

typedef struct PbEnumValue
{
	const char *name;
	int32_t		number;
	uint32_t	order;			/* declaration order, for aliases */
} PbEnumValue;

struct PbEnum
{
	PbType		hdr;
	PbEnumValue *values;		/* sorted by number, then order */
	uint32_t	nvalues;
};

struct PbSchema
{
	PbAllocator a;
	PbArenaBlock *blocks;
	PbType	  **types;			/* sorted by name, no duplicates */
	size_t		ntypes;
	const PbMessage **messages; /* listing: sorted, no map entries */
	size_t		nmessages;
	uint64_t	seq;
};

/* State while compiling one FileDescriptorSet */
typedef struct PbBuild
{
	const PbAllocator *a;
	PbArenaBlock *blocks;		/* this set's memory until installed */
	PbType	  **types;			/* this set's types in definition order */
	size_t		ntypes;
	size_t		cap;
	uint64_t	seq;
	char	   *err;
	size_t		errlen;
} PbBuild;

/* State while decoding one payload */
typedef struct PbDecoder
{
	const uint8_t *base;		/* start of the payload, for offsets */
	PbBuf	   *out;
	const PbAllocator *a;		/* temporary memory */
	char	   *err;
	size_t		errlen;
} PbDecoder;

/* One field occurrence on the wire */
typedef struct PbEntry
{
	const uint8_t *p;			/* value start (data for WT_LEN) */
	uint64_t	v;				/* varint/fixed value, or length */
	uint32_t	field;			/* index into PbMessage.fields */
	int			wt;
	bool		dropped;		/* a later oneof member replaced it */
} PbEntry;

/* One map entry, keyed for sorting */
typedef struct PbMapItem
{
	PbEntry		key;
	PbEntry    *entries;		/* the entry's fields, owned */
	const PbEntry *values;		/* occurrences of the value field */
	size_t		nvalues;
	bool		str_key;
	uint64_t	sortkey;		/* integer keys, order-preserving */
	size_t		ord;
} PbMapItem;

#define OFFSET(d, ptr) ((size_t) ((ptr) - (d)->base))

static int	emit_message(PbDecoder *d, const PbMessage *m, const PbEntry *segs,
						 size_t nsegs, int depth);
static int	read_value(PbDecoder *d, const uint8_t **pp, const uint8_t *end,
					   uint32_t num, int wt, int depth, PbEntry *e);


/* ---------------------------------------------------------------------
 * Errors and memory
 * --------------------------------------------------------------------- */

/* Format an error message into the caller's buffer, if it gave one */
static void
pb_verror(char *err, size_t errlen, const char *fmt, va_list ap)
PB_PRINTF(3, 0);

static void
pb_verror(char *err, size_t errlen, const char *fmt, va_list ap)
{
	if (err != NULL && errlen > 0)
		vsnprintf(err, errlen, fmt, ap);
}

/* Report an error outside a build or decode; returns -1 for tail calls */
static int	pb_error(char *err, size_t errlen, const char *fmt,...) PB_PRINTF(3, 4);

static int
pb_error(char *err, size_t errlen, const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	pb_verror(err, errlen, fmt, ap);
	va_end(ap);
	return -1;
}

/* Report an error while compiling a descriptor set */
static int	build_error(PbBuild *b, const char *fmt,...) PB_PRINTF(2, 3);

static int
build_error(PbBuild *b, const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	pb_verror(b->err, b->errlen, fmt, ap);
	va_end(ap);
	return -1;
}

/* Report an error while decoding a payload */
static int	dec_error(PbDecoder *d, const char *fmt,...) PB_PRINTF(2, 3);

static int
dec_error(PbDecoder *d, const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	pb_verror(d->err, d->errlen, fmt, ap);
	va_end(ap);
	return -1;
}

/* Allocate through a PbAllocator; never asks for 0 bytes */
static void *
mem_alloc(const PbAllocator *a, size_t n)
{
	return a->alloc(a->ctx, n ? n : 1);
}

/* Free through a PbAllocator; NULL is fine (pfree would not accept it) */
static void
mem_free(const PbAllocator *a, void *p)
{
	if (p != NULL)
		a->free(a->ctx, p);
}

/* Grow an array to hold need elements; NULL (old array kept) on failure */
static void *
array_grow(const PbAllocator *a, void *arr, size_t *cap, size_t used,
		   size_t need, size_t elem)
{
	size_t		newcap = *cap ? *cap : 16;
	void	   *p;

	while (newcap < need && newcap <= SIZE_MAX / 2)
		newcap *= 2;
	if (newcap < need || newcap > SIZE_MAX / elem)
		return NULL;
	p = mem_alloc(a, newcap * elem);
	if (p == NULL)
		return NULL;
	if (used > 0)
		memcpy(p, arr, used * elem);
	mem_free(a, arr);
	*cap = newcap;
	return p;
}

/* Take memory from a build's arena, so a whole schema frees in one walk */
static void *
arena_alloc(PbBuild *b, size_t n)
{
	PbArenaBlock *blk = b->blocks;
	size_t		size;
	void	   *p;

	if (n > SIZE_MAX / 2)
		return NULL;
	n = (n + PB_ALIGN - 1) & ~(size_t) (PB_ALIGN - 1);
	if (blk == NULL || blk->size - blk->used < n)
	{
		size = n > PB_ARENA_BLOCK ? n : PB_ARENA_BLOCK;
		blk = mem_alloc(b->a, PB_BLOCK_HEADER + size);
		if (blk == NULL)
		{
			build_error(b, "out of memory");
			return NULL;
		}
		blk->next = b->blocks;
		blk->used = 0;
		blk->size = size;
		b->blocks = blk;
	}
	p = (char *) blk + PB_BLOCK_HEADER + blk->used;
	blk->used += n;
	return p;
}

/* Release a chain of arena blocks */
static void
arena_free(const PbAllocator *a, PbArenaBlock *blk)
{
	PbArenaBlock *next;

	for (; blk != NULL; blk = next)
	{
		next = blk->next;
		mem_free(a, blk);
	}
}

/* Copy scope "." name (or just name when scope is NULL) into the arena */
static char *
arena_name(PbBuild *b, const char *scope, const char *name)
{
	size_t		sl = scope ? strlen(scope) + 1 : 0;
	size_t		nl = strlen(name);
	char	   *p = arena_alloc(b, sl + nl + 1);

	if (p == NULL)
		return NULL;
	if (scope != NULL)
	{
		memcpy(p, scope, sl - 1);
		p[sl - 1] = '.';
	}
	memcpy(p + sl, name, nl + 1);
	return p;
}

/* protoc's default json_name: drop underscores, capitalize what follows */
static char *
arena_camel(PbBuild *b, const char *name)
{
	char	   *p = arena_alloc(b, strlen(name) + 1);
	char	   *q = p;
	bool		up = false;

	if (p == NULL)
		return NULL;
	for (; *name; name++)
	{
		if (*name == '_')
		{
			up = true;
			continue;
		}
		*q++ = (up && *name >= 'a' && *name <= 'z') ? *name - 'a' + 'A' : *name;
		up = false;
	}
	*q = '\0';
	return p;
}

/* ProtobufCAllocator hook so protobuf-c allocates through a PbAllocator */
static void *
pc_alloc(void *data, size_t n)
{
	return mem_alloc((const PbAllocator *) data, n);
}

/* ProtobufCAllocator hook for frees */
static void
pc_free(void *data, void *p)
{
	mem_free((const PbAllocator *) data, p);
}


/* ---------------------------------------------------------------------
 * UTF-8
 * --------------------------------------------------------------------- */

/* Length of the well-formed UTF-8 sequence at p (RFC 3629), 0 if invalid */
static int
utf8_char_len(const uint8_t *p, size_t n)
{
	uint8_t		c = p[0];
	uint8_t		lo = 0x80,
				hi = 0xBF;
	int			len,
				i;

	if (c < 0x80)
		return 1;
	if (c >= 0xC2 && c <= 0xDF)
		len = 2;
	else if (c >= 0xE0 && c <= 0xEF)
		len = 3;
	else if (c >= 0xF0 && c <= 0xF4)
		len = 4;
	else
		return 0;
	if (c == 0xE0)
		lo = 0xA0;
	else if (c == 0xED)
		hi = 0x9F;				/* no surrogates */
	else if (c == 0xF0)
		lo = 0x90;
	else if (c == 0xF4)
		hi = 0x8F;				/* nothing above U+10FFFF */
	if (n < (size_t) len || p[1] < lo || p[1] > hi)
		return 0;
	for (i = 2; i < len; i++)
		if (p[i] < 0x80 || p[i] > 0xBF)
			return 0;
	return len;
}

/* Length of the valid UTF-8 prefix of p: len when all of it is valid */
static size_t
utf8_prefix(const uint8_t *p, size_t len)
{
	size_t		i = 0;
	int			n;

	while (i < len)
	{
		n = utf8_char_len(p + i, len - i);
		if (n == 0)
			return i;
		i += n;
	}
	return len;
}

/* Whether a NUL-terminated name is valid UTF-8 */
static bool
utf8_valid_name(const char *s)
{
	size_t		len = strlen(s);

	return utf8_prefix((const uint8_t *) s, len) == len;
}


/* ---------------------------------------------------------------------
 * Compiling descriptor sets
 * --------------------------------------------------------------------- */

/* Whether s is an identifier, or dot-separated identifiers when dotted */
static bool
valid_identifier(const char *s, bool dotted)
{
	bool		start = true;

	for (; *s; s++)
	{
		if (*s == '.' && dotted && !start)
			start = true;
		else if ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
				 *s == '_' || (!start && *s >= '0' && *s <= '9'))
			start = false;
		else
			return false;
	}
	return !start;
}

/* Order types by name, earlier definitions first */
static int
type_cmp(const void *x, const void *y)
{
	const PbType *a = *(PbType *const *) x;
	const PbType *b = *(PbType *const *) y;
	int			c = strcmp(a->name, b->name);

	if (c != 0)
		return c;
	return a->seq < b->seq ? -1 : a->seq > b->seq;
}

/* Order a message's fields by number */
static int
field_number_cmp(const void *x, const void *y)
{
	const PbField *a = *(PbField *const *) x;
	const PbField *b = *(PbField *const *) y;

	return a->number < b->number ? -1 : a->number > b->number;
}

/* Order enum values by number, first declared first */
static int
enum_value_cmp(const void *x, const void *y)
{
	const PbEnumValue *a = x;
	const PbEnumValue *b = y;

	if (a->number != b->number)
		return a->number < b->number ? -1 : 1;
	return a->order < b->order ? -1 : a->order > b->order;
}

/* Find a type by full name given without its leading dot */
static PbType *
find_type(PbType *const *types, size_t n, const char *name)
{
	size_t		lo = 0,
				hi = n,
				mid;
	int			c;

	while (lo < hi)
	{
		mid = lo + (hi - lo) / 2;
		c = strcmp(name, types[mid]->name + 1);
		if (c == 0)
			return types[mid];
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

/* Drop the optional leading dot of a type name */
static const char *
skip_dot(const char *name)
{
	return name[0] == '.' ? name + 1 : name;
}

/* Find a field of a message by number */
static const PbField *
find_field(const PbMessage *m, uint32_t num)
{
	size_t		lo = 0,
				hi = m->nfields,
				mid;

	while (lo < hi)
	{
		mid = lo + (hi - lo) / 2;
		if (m->by_number[mid]->number == num)
			return m->by_number[mid];
		if (m->by_number[mid]->number > num)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

/* Record a new type of the set being compiled */
static int
push_type(PbBuild *b, PbType *t, const char *name, int kind)
{
	PbType	  **grown;

	t->name = name;
	t->kind = kind;
	t->shadowed = false;
	t->seq = b->seq++;
	if (b->ntypes == b->cap)
	{
		grown = array_grow(b->a, b->types, &b->cap, b->ntypes, b->ntypes + 1,
						   sizeof(PbType *));
		if (grown == NULL)
			return build_error(b, "out of memory");
		b->types = grown;
	}
	b->types[b->ntypes++] = t;
	return 0;
}

/* Copy one field's descriptor into f, checking what decoding relies on */
static int
compile_field(PbBuild *b, const PbMessage *m,
			  const Google__Protobuf__FieldDescriptorProto *fp, bool proto3,
			  uint32_t noneofs, PbField *f)
{
	const char *mname = m->hdr.name + 1;

	if (fp->name == NULL || !valid_identifier(fp->name, false))
		return build_error(b, "message \"%s\": field without a valid name", mname);
	if (!fp->has_number || fp->number < 1 || fp->number > PB_MAX_FIELD_NUMBER)
		return build_error(b, "field %s.%s: invalid number", mname, fp->name);
	if (fp->type_name &&
		!valid_identifier(fp->type_name + (fp->type_name[0] == '.'), true))
		return build_error(b, "field %s.%s: invalid type name", mname, fp->name);
	if (fp->has_type ? ((int) fp->type < PBT_DOUBLE || (int) fp->type > PBT_SINT64) :
		fp->type_name == NULL)
		return build_error(b, "field %s.%s: invalid type", mname, fp->name);
	if (fp->has_oneof_index &&
		(fp->oneof_index < 0 || (uint32_t) fp->oneof_index >= noneofs))
		return build_error(b, "field %s.%s: invalid oneof index", mname, fp->name);
	f->name = arena_name(b, NULL, fp->name);
	f->json_name = fp->json_name ? arena_name(b, NULL, fp->json_name) :
		arena_camel(b, fp->name);
	f->type_name = fp->type_name ? arena_name(b, NULL, fp->type_name) : NULL;
	if (f->name == NULL || f->json_name == NULL ||
		(fp->type_name && f->type_name == NULL))
		return -1;
	if (!utf8_valid_name(f->json_name))
		return build_error(b, "field %s.%s: json_name is not valid UTF-8", mname, fp->name);
	f->number = (uint32_t) fp->number;
	f->type = fp->has_type ? (int) fp->type : 0;
	f->repeated = fp->has_label &&
		fp->label == GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__LABEL__LABEL_REPEATED;
	f->oneof = (fp->has_oneof_index && !f->repeated) ? fp->oneof_index : -1;
	f->implicit = proto3 && !f->repeated && f->oneof < 0 &&
		f->type != PBT_MESSAGE && f->type != PBT_GROUP;
	f->is_map = false;
	f->msg = NULL;
	f->enm = NULL;
	return 0;
}

/* Whether a field type may be a map key */
static bool
valid_map_key(int type)
{
	return type != 0 && type != PBT_DOUBLE && type != PBT_FLOAT &&
		type != PBT_GROUP && type != PBT_MESSAGE && type != PBT_BYTES &&
		type != PBT_ENUM;
}

/* Sort a message's fields by number, rejecting duplicates, find map fields */
static int
index_fields(PbBuild *b, PbMessage *m)
{
	uint32_t	i;

	for (i = 0; i < m->nfields; i++)
		m->by_number[i] = &m->fields[i];
	if (m->nfields > 1)
		qsort(m->by_number, m->nfields, sizeof(PbField *), field_number_cmp);
	for (i = 1; i < m->nfields; i++)
		if (m->by_number[i]->number == m->by_number[i - 1]->number)
			return build_error(b, "message \"%s\": field number %u used twice",
							   m->hdr.name + 1, m->by_number[i]->number);
	if (!m->map_entry)
		return 0;
	m->map_key = find_field(m, 1);
	m->map_value = find_field(m, 2);
	if (m->map_key == NULL || m->map_value == NULL || m->map_key->repeated ||
		m->map_value->repeated || !valid_map_key(m->map_key->type))
		return build_error(b, "map entry \"%s\": invalid key or value field",
						   m->hdr.name + 1);
	return 0;
}

/* Compile an enum type */
static int
compile_enum(PbBuild *b, const char *scope,
			 const Google__Protobuf__EnumDescriptorProto *ep)
{
	PbEnum	   *e;
	const Google__Protobuf__EnumValueDescriptorProto *vp;
	const char *name;
	size_t		i;

	if (ep->name == NULL || !valid_identifier(ep->name, false) ||
		ep->n_value > UINT32_MAX)
		return build_error(b, "enum without a valid name in \"%s\"", scope[0] ? scope + 1 : "");
	e = arena_alloc(b, sizeof(PbEnum));
	if (e == NULL)
		return -1;
	e->nvalues = (uint32_t) ep->n_value;
	e->values = arena_alloc(b, ep->n_value * sizeof(PbEnumValue));
	if (e->values == NULL)
		return -1;
	for (i = 0; i < ep->n_value; i++)
	{
		vp = ep->value[i];
		if (vp->name == NULL || !utf8_valid_name(vp->name))
			return build_error(b, "enum \"%s.%s\": value without a valid name",
							   scope, ep->name);
		e->values[i].name = arena_name(b, NULL, vp->name);
		if (e->values[i].name == NULL)
			return -1;
		e->values[i].number = vp->has_number ? vp->number : 0;
		e->values[i].order = (uint32_t) i;
	}
	if (e->nvalues > 1)
		qsort(e->values, e->nvalues, sizeof(PbEnumValue), enum_value_cmp);
	name = arena_name(b, scope, ep->name);
	if (name == NULL)
		return -1;
	return push_type(b, &e->hdr, name, PB_KIND_ENUM);
}

/* Compile a message type, its fields, and its nested types */
static int
compile_message(PbBuild *b, const char *scope,
				const Google__Protobuf__DescriptorProto *dp, bool proto3,
				int depth)
{
	PbMessage  *m;
	size_t		i;

	if (depth > PB_MAX_DESCRIPTOR_DEPTH)
		return build_error(b, "message types nested deeper than %d", PB_MAX_DESCRIPTOR_DEPTH);
	if (dp->name == NULL || !valid_identifier(dp->name, false) ||
		dp->n_field > UINT32_MAX || dp->n_oneof_decl > UINT32_MAX)
		return build_error(b, "message without a valid name in \"%s\"", scope[0] ? scope + 1 : "");
	m = arena_alloc(b, sizeof(PbMessage));
	if (m == NULL)
		return -1;
	memset(m, 0, sizeof(PbMessage));
	m->hdr.name = arena_name(b, scope, dp->name);
	m->nfields = (uint32_t) dp->n_field;
	m->noneofs = (uint32_t) dp->n_oneof_decl;
	m->map_entry = dp->options && dp->options->has_map_entry &&
		dp->options->map_entry;
	m->fields = arena_alloc(b, m->nfields * sizeof(PbField));
	m->by_number = arena_alloc(b, m->nfields * sizeof(PbField *));
	if (m->hdr.name == NULL || m->fields == NULL || m->by_number == NULL)
		return -1;
	for (i = 0; i < dp->n_field; i++)
		if (compile_field(b, m, dp->field[i], proto3, m->noneofs, &m->fields[i]) < 0)
			return -1;
	if (index_fields(b, m) < 0 ||
		push_type(b, &m->hdr, m->hdr.name, PB_KIND_MESSAGE) < 0)
		return -1;
	for (i = 0; i < dp->n_nested_type; i++)
		if (compile_message(b, m->hdr.name, dp->nested_type[i], proto3, depth + 1) < 0)
			return -1;
	for (i = 0; i < dp->n_enum_type; i++)
		if (compile_enum(b, m->hdr.name, dp->enum_type[i]) < 0)
			return -1;
	return 0;
}

/* Compile every top-level type of every file of a set */
static int
compile_set(PbBuild *b, const Google__Protobuf__FileDescriptorSet *set)
{
	const Google__Protobuf__FileDescriptorProto *fp;
	const char *scope;
	bool		proto3;
	size_t		i,
				j;

	for (i = 0; i < set->n_file; i++)
	{
		fp = set->file[i];
		proto3 = fp->syntax != NULL && strcmp(fp->syntax, "proto3") == 0;
		if (fp->package && fp->package[0] && !valid_identifier(fp->package, true))
			return build_error(b, "invalid package name");
		scope = (fp->package && fp->package[0]) ?
			arena_name(b, "", fp->package) : "";
		if (scope == NULL)
			return -1;
		for (j = 0; j < fp->n_message_type; j++)
			if (compile_message(b, scope, fp->message_type[j], proto3, 0) < 0)
				return -1;
		for (j = 0; j < fp->n_enum_type; j++)
			if (compile_enum(b, scope, fp->enum_type[j]) < 0)
				return -1;
	}
	return 0;
}

/* Point a message or enum field at its type, found in the merged index */
static int
resolve_field(PbBuild *b, PbType *const *index, size_t n, const PbMessage *m,
			  PbField *f)
{
	const PbType *t;

	if (f->type != 0 && f->type != PBT_MESSAGE && f->type != PBT_ENUM &&
		f->type != PBT_GROUP)
		return 0;
	t = f->type_name ? find_type(index, n, skip_dot(f->type_name)) : NULL;
	if (t == NULL)
		return build_error(b, "field %s.%s: type \"%s\" not found", m->hdr.name + 1,
						   f->name, f->type_name ? f->type_name : "");
	if (t->kind == PB_KIND_ENUM && (f->type == 0 || f->type == PBT_ENUM))
	{
		f->type = PBT_ENUM;
		f->enm = (const PbEnum *) t;
		return 0;
	}
	if (t->kind != PB_KIND_MESSAGE || f->type == PBT_ENUM)
		return build_error(b, "field %s.%s: type \"%s\" is of the wrong kind",
						   m->hdr.name + 1, f->name, f->type_name);
	if (f->type == 0)
		f->type = PBT_MESSAGE;
	f->msg = (const PbMessage *) t;
	f->implicit = false;
	f->is_map = f->repeated && f->type == PBT_MESSAGE && f->msg->map_entry;
	return 0;
}

/* Resolve the fields of the set's messages that made it into the index */
static int
resolve_set(PbBuild *b, PbType *const *index, size_t n)
{
	PbMessage  *m;
	size_t		i;
	uint32_t	j;

	for (i = 0; i < b->ntypes; i++)
	{
		if (b->types[i]->shadowed || b->types[i]->kind != PB_KIND_MESSAGE)
			continue;
		m = (PbMessage *) b->types[i];
		for (j = 0; j < m->nfields; j++)
			if (resolve_field(b, index, n, m, &m->fields[j]) < 0)
				return -1;
	}
	return 0;
}

/* Build the listing of message types (no map entries) from the index */
static const PbMessage **
list_messages(PbBuild *b, PbType *const *index, size_t n, size_t *count)
{
	const PbMessage **list = mem_alloc(b->a, n * sizeof(PbMessage *));
	size_t		i;

	*count = 0;
	if (list == NULL)
	{
		build_error(b, "out of memory");
		return NULL;
	}
	for (i = 0; i < n; i++)
		if (index[i]->kind == PB_KIND_MESSAGE &&
			!((const PbMessage *) index[i])->map_entry)
			list[(*count)++] = (const PbMessage *) index[i];
	return list;
}

/* Merge the compiled set into the schema: index, resolve, take the arena */
static int
install_set(PbSchema *s, PbBuild *b)
{
	size_t		total = s->ntypes + b->ntypes;
	size_t		i,
				n = 0,
				nmsg;
	PbType	  **index = mem_alloc(b->a, total * sizeof(PbType *));
	const PbMessage **list;

	if (index == NULL)
		return build_error(b, "out of memory");
	if (s->ntypes > 0)
		memcpy(index, s->types, s->ntypes * sizeof(PbType *));
	if (b->ntypes > 0)
		memcpy(index + s->ntypes, b->types, b->ntypes * sizeof(PbType *));
	if (total > 1)
		qsort(index, total, sizeof(PbType *), type_cmp);
	for (i = 0; i < total; i++)
	{
		if (n > 0 && strcmp(index[n - 1]->name, index[i]->name) == 0)
			index[i]->shadowed = true;	/* the first definition wins */
		else
			index[n++] = index[i];
	}
	list = resolve_set(b, index, n) < 0 ? NULL : list_messages(b, index, n, &nmsg);
	if (list == NULL)
	{
		mem_free(b->a, index);
		return -1;
	}
	mem_free(b->a, s->types);
	mem_free(b->a, (void *) s->messages);
	s->types = index;
	s->ntypes = n;
	s->messages = list;
	s->nmessages = nmsg;
	s->seq = b->seq;
	return 0;
}


/* ---------------------------------------------------------------------
 * Wire format reading
 * --------------------------------------------------------------------- */

/* Read a base-128 varint of at most 10 bytes that fits 64 bits */
static int
read_varint(PbDecoder *d, const uint8_t **pp, const uint8_t *end, uint64_t *v)
{
	const uint8_t *p = *pp;
	uint64_t	r = 0;
	size_t		i;

	for (i = 0; i < 10; i++)
	{
		if ((size_t) (end - p) <= i)
			return dec_error(d, "truncated varint at offset %zu", OFFSET(d, p));
		r |= (uint64_t) (p[i] & 0x7f) << (7 * i);
		if ((p[i] & 0x80) == 0)
		{
			if (i == 9 && p[i] > 1)
				return dec_error(d, "varint at offset %zu overflows 64 bits",
								 OFFSET(d, p));
			*v = r;
			*pp = p + i + 1;
			return 0;
		}
	}
	return dec_error(d, "varint at offset %zu is longer than 10 bytes", OFFSET(d, p));
}

/* Read a little-endian fixed32 or fixed64 */
static int
read_fixed(PbDecoder *d, const uint8_t **pp, const uint8_t *end, int size,
		   uint64_t *v)
{
	const uint8_t *p = *pp;
	int			i;

	if (end - p < size)
		return dec_error(d, "truncated fixed%d at offset %zu", size * 8, OFFSET(d, p));
	*v = 0;
	for (i = size - 1; i >= 0; i--)
		*v = (*v << 8) | p[i];
	*pp = p + size;
	return 0;
}

/* Read a field tag, rejecting field number 0 and numbers above 2^29-1 */
static int
read_tag(PbDecoder *d, const uint8_t **pp, const uint8_t *end, uint32_t *num,
		 int *wt)
{
	const uint8_t *start = *pp;
	uint64_t	v;

	if (read_varint(d, pp, end, &v) < 0)
		return -1;
	if ((v >> 3) == 0 || (v >> 3) > PB_MAX_FIELD_NUMBER)
		return dec_error(d, "invalid field number %" PRIu64 " at offset %zu",
						 v >> 3, OFFSET(d, start));
	*num = (uint32_t) (v >> 3);
	*wt = (int) (v & 7);
	return 0;
}

/* Step over a group's fields up to its matching end-group tag */
static int
skip_group(PbDecoder *d, const uint8_t **pp, const uint8_t *end, uint32_t num,
		   int depth, PbEntry *e)
{
	const uint8_t *tag;
	uint32_t	n;
	int			wt;
	PbEntry		inner;

	if (depth > PB_MAX_DEPTH)
		return dec_error(d, "groups nested deeper than %d at offset %zu",
						 PB_MAX_DEPTH, OFFSET(d, e->p));
	for (;;)
	{
		tag = *pp;
		if (tag == end)
			return dec_error(d, "unterminated group (field %u) at offset %zu",
							 num, OFFSET(d, e->p));
		if (read_tag(d, pp, end, &n, &wt) < 0)
			return -1;
		if (wt == WT_EGROUP)
		{
			if (n != num)
				return dec_error(d, "end-group tag of field %u at offset %zu closes group of field %u",
								 n, OFFSET(d, tag), num);
			e->v = (uint64_t) (tag - e->p);
			return 0;
		}
		if (read_value(d, pp, end, n, wt, depth, &inner) < 0)
			return -1;
	}
}

/* Read (or step over) the value that follows a tag */
static int
read_value(PbDecoder *d, const uint8_t **pp, const uint8_t *end, uint32_t num,
		   int wt, int depth, PbEntry *e)
{
	e->wt = wt;
	e->p = *pp;
	switch (wt)
	{
		case WT_VARINT:
			return read_varint(d, pp, end, &e->v);
		case WT_I64:
			return read_fixed(d, pp, end, 8, &e->v);
		case WT_I32:
			return read_fixed(d, pp, end, 4, &e->v);
		case WT_LEN:
			if (read_varint(d, pp, end, &e->v) < 0)
				return -1;
			if (e->v > (uint64_t) (end - *pp))
				return dec_error(d, "length %" PRIu64 " at offset %zu runs past the end of the data",
								 e->v, OFFSET(d, e->p));
			e->p = *pp;
			*pp += e->v;
			return 0;
		case WT_SGROUP:
			return skip_group(d, pp, end, num, depth + 1, e);
		default:
			return dec_error(d, "unexpected wire type %d (field %u) at offset %zu",
							 wt, num, OFFSET(d, e->p));
	}
}

/* Order entries by declaration order, then position */
static int
entry_cmp(const void *x, const void *y)
{
	const PbEntry *a = x;
	const PbEntry *b = y;

	if (a->field != b->field)
		return a->field < b->field ? -1 : 1;
	return a->p < b->p ? -1 : a->p > b->p;
}

/* Per oneof while dropping losers: the winning member, and whether another
 * member came between (which clears earlier occurrences of the winner) */
typedef struct PbOneofState
{
	uint32_t	winner;			/* field index + 1; 0 when none seen yet */
	bool		closed;
} PbOneofState;

/* Within each oneof, keep only the member that occurs last on the wire */
static int
drop_oneof_losers(PbDecoder *d, const PbMessage *m, PbEntry *e, size_t n)
{
	PbOneofState *st;
	PbOneofState *o;
	size_t		i;

	if (m->noneofs == 0 || n < 2)
		return 0;
	st = mem_alloc(d->a, m->noneofs * sizeof(PbOneofState));
	if (st == NULL)
		return dec_error(d, "out of memory");
	memset(st, 0, m->noneofs * sizeof(PbOneofState));
	for (i = n; i-- > 0;)
	{
		if (m->fields[e[i].field].oneof < 0)
			continue;
		o = &st[m->fields[e[i].field].oneof];
		if (o->winner == 0)
			o->winner = e[i].field + 1;
		else if (o->closed || o->winner != e[i].field + 1)
		{
			o->closed = true;	/* another member was set after this one */
			e[i].dropped = true;
		}
	}
	mem_free(d->a, st);
	return 0;
}

/* Read the fields of one encoded message, appending the known ones */
static int
scan_segment(PbDecoder *d, const PbMessage *m, const uint8_t *p,
			 const uint8_t *end, int depth, PbEntry **arr, size_t *cap,
			 size_t *n)
{
	PbEntry    *grown;
	PbEntry		e;
	uint32_t	num;
	int			wt;
	const PbField *f;

	while (p < end)
	{
		if (read_tag(d, &p, end, &num, &wt) < 0 ||
			read_value(d, &p, end, num, wt, depth, &e) < 0)
			return -1;
		if ((f = find_field(m, num)) == NULL)
			continue;			/* unknown field: skipped */
		if (*n == *cap)
		{
			grown = array_grow(d->a, *arr, cap, *n, *n + 1, sizeof(PbEntry));
			if (grown == NULL)
				return dec_error(d, "out of memory");
			*arr = grown;
		}
		e.field = (uint32_t) (f - m->fields);
		e.dropped = false;
		(*arr)[(*n)++] = e;
	}
	return 0;
}

/*
 * Read every field of a message given as one or more encoded segments (a
 * singular message field that occurs more than once merges them, as
 * protobuf does); keep the known fields, in output order.
 */
static int
scan_message(PbDecoder *d, const PbMessage *m, const PbEntry *segs,
			 size_t nsegs, int depth, PbEntry **entries, size_t *count)
{
	PbEntry    *arr = NULL;
	size_t		cap = 0,
				n = 0,
				i;

	for (i = 0; i < nsegs; i++)
	{
		if (scan_segment(d, m, segs[i].p, segs[i].p + segs[i].v, depth,
						 &arr, &cap, &n) < 0)
		{
			mem_free(d->a, arr);
			return -1;
		}
	}
	if (drop_oneof_losers(d, m, arr, n) < 0)
	{
		mem_free(d->a, arr);
		return -1;
	}
	if (n > 1)
		qsort(arr, n, sizeof(PbEntry), entry_cmp);
	*entries = arr;
	*count = n;
	return 0;
}


/* ---------------------------------------------------------------------
 * JSON output
 * --------------------------------------------------------------------- */

/* Make room for n more bytes plus the terminating NUL, within the limit */
static int
buf_reserve(PbDecoder *d, size_t n)
{
	PbBuf	   *b = d->out;
	size_t		cap;
	char	   *p;

	if (n > PB_MAX_OUTPUT || b->len > PB_MAX_OUTPUT - n)
		return dec_error(d, "JSON output would exceed %zu bytes", (size_t) PB_MAX_OUTPUT);
	if (b->data != NULL && b->len + n < b->cap)
		return 0;
	for (cap = b->cap ? b->cap : 256; cap <= b->len + n; cap *= 2)
		;
	p = mem_alloc(b->a, cap);
	if (p == NULL)
		return dec_error(d, "out of memory");
	if (b->len > 0)
		memcpy(p, b->data, b->len);
	mem_free(b->a, b->data);
	b->data = p;
	b->cap = cap;
	return 0;
}

/* Append bytes to the output */
static int
buf_append(PbDecoder *d, const void *p, size_t n)
{
	if (buf_reserve(d, n) < 0)
		return -1;
	if (n > 0)
		memcpy(d->out->data + d->out->len, p, n);
	d->out->len += n;
	d->out->data[d->out->len] = '\0';
	return 0;
}

/* Append a C string to the output */
static int
buf_puts(PbDecoder *d, const char *s)
{
	return buf_append(d, s, strlen(s));
}

/* Append one character to the output */
static int
buf_putc(PbDecoder *d, char c)
{
	return buf_append(d, &c, 1);
}

/* JSON escape for a byte that cannot appear raw in a string */
static const char *
json_escape(uint8_t c, char *buf, size_t size)
{
	switch (c)
	{
		case '"':
			return "\\\"";
		case '\\':
			return "\\\\";
		case '\b':
			return "\\b";
		case '\f':
			return "\\f";
		case '\n':
			return "\\n";
		case '\r':
			return "\\r";
		case '\t':
			return "\\t";
		default:
			snprintf(buf, size, "\\u%04x", c);
			return buf;
	}
}

/* Append valid UTF-8 as a quoted JSON string */
static int
emit_escaped(PbDecoder *d, const uint8_t *p, size_t len)
{
	size_t		i,
				run = 0;
	char		esc[8];

	if (buf_putc(d, '"') < 0)
		return -1;
	for (i = 0; i < len; i++)
	{
		if (p[i] >= 0x20 && p[i] != '"' && p[i] != '\\')
			continue;
		if (buf_append(d, p + run, i - run) < 0 ||
			buf_puts(d, json_escape(p[i], esc, sizeof(esc))) < 0)
			return -1;
		run = i + 1;
	}
	if (buf_append(d, p + run, len - run) < 0)
		return -1;
	return buf_putc(d, '"');
}

/* Append a NUL-terminated name (validated at compile time) as a string */
static int
emit_name(PbDecoder *d, const char *s)
{
	return emit_escaped(d, (const uint8_t *) s, strlen(s));
}

/* Append bytes as standard base64 with padding, in quotes */
static int
emit_base64(PbDecoder *d, const uint8_t *p, size_t len)
{
	static const char tbl[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t		i;
	uint32_t	v;
	char	   *q;

	if (len > PB_MAX_OUTPUT / 4 * 3)
		return dec_error(d, "JSON output would exceed %zu bytes", (size_t) PB_MAX_OUTPUT);
	if (buf_reserve(d, (len + 2) / 3 * 4 + 2) < 0)
		return -1;
	q = d->out->data + d->out->len;
	*q++ = '"';
	for (i = 0; i + 2 < len; i += 3, q += 4)
	{
		v = (uint32_t) p[i] << 16 | (uint32_t) p[i + 1] << 8 | p[i + 2];
		q[0] = tbl[v >> 18];
		q[1] = tbl[(v >> 12) & 63];
		q[2] = tbl[(v >> 6) & 63];
		q[3] = tbl[v & 63];
	}
	if (i < len)
	{
		v = (uint32_t) p[i] << 16 | (i + 1 < len ? (uint32_t) p[i + 1] << 8 : 0);
		q[0] = tbl[v >> 18];
		q[1] = tbl[(v >> 12) & 63];
		q[2] = i + 1 < len ? tbl[(v >> 6) & 63] : '=';
		q[3] = '=';
		q += 4;
	}
	*q++ = '"';
	*q = '\0';
	d->out->len = (size_t) (q - d->out->data);
	return 0;
}

/* Append a double: shortest round-trip form, or "NaN"/"Infinity" strings */
static int
emit_double(PbDecoder *d, uint64_t bits)
{
	double		v;
	char		buf[40];
	int			prec;

	memcpy(&v, &bits, sizeof(v));
	if (isnan(v))
		return buf_puts(d, "\"NaN\"");
	if (isinf(v))
		return buf_puts(d, v < 0 ? "\"-Infinity\"" : "\"Infinity\"");
	for (prec = 15; prec < 17; prec++)
	{
		snprintf(buf, sizeof(buf), "%.*g", prec, v);
		if (strtod(buf, NULL) == v)
			return buf_puts(d, buf);
	}
	snprintf(buf, sizeof(buf), "%.17g", v);
	return buf_puts(d, buf);
}

/* Append a float: shortest round-trip form, or "NaN"/"Infinity" strings */
static int
emit_float(PbDecoder *d, uint32_t bits)
{
	float		v;
	char		buf[40];
	int			prec;

	memcpy(&v, &bits, sizeof(v));
	if (isnan(v))
		return buf_puts(d, "\"NaN\"");
	if (isinf(v))
		return buf_puts(d, v < 0 ? "\"-Infinity\"" : "\"Infinity\"");
	for (prec = 6; prec < 9; prec++)
	{
		snprintf(buf, sizeof(buf), "%.*g", prec, (double) v);
		if (strtof(buf, NULL) == v)
			return buf_puts(d, buf);
	}
	snprintf(buf, sizeof(buf), "%.9g", (double) v);
	return buf_puts(d, buf);
}

/* Whether an integer type is printed as a JSON string (64-bit types) */
static bool
is_64bit(int type)
{
	return type == PBT_INT64 || type == PBT_UINT64 || type == PBT_FIXED64 ||
		type == PBT_SFIXED64 || type == PBT_SINT64;
}

/* Decode an integral wire value; true when the result is signed (in *s) */
static bool
int_value(int type, uint64_t raw, int64_t *s, uint64_t *u)
{
	uint32_t	r32 = (uint32_t) raw;

	switch (type)
	{
		case PBT_INT32:
		case PBT_SFIXED32:
		case PBT_ENUM:
			*s = (int32_t) r32;
			return true;
		case PBT_SINT32:
			*s = (int32_t) ((r32 >> 1) ^ (0u - (r32 & 1)));
			return true;
		case PBT_INT64:
		case PBT_SFIXED64:
			*s = (int64_t) raw;
			return true;
		case PBT_SINT64:
			*s = (int64_t) ((raw >> 1) ^ (0 - (raw & 1)));
			return true;
		case PBT_UINT32:
		case PBT_FIXED32:
			*u = r32;
			return false;
		case PBT_BOOL:
			*u = raw != 0;
			return false;
		default:
			*u = raw;
			return false;
	}
}

/* Append an integer, quoted when requested */
static int
emit_integer(PbDecoder *d, int type, uint64_t raw, bool quote)
{
	char		buf[32];
	int64_t		s;
	uint64_t	u;

	if (int_value(type, raw, &s, &u))
		snprintf(buf, sizeof(buf), quote ? "\"%" PRId64 "\"" : "%" PRId64, s);
	else
		snprintf(buf, sizeof(buf), quote ? "\"%" PRIu64 "\"" : "%" PRIu64, u);
	return buf_puts(d, buf);
}

/* Append an enum value by name, or its number when it is not declared */
static int
emit_enum(PbDecoder *d, const PbEnum *e, int32_t number)
{
	size_t		lo = 0,
				hi = e->nvalues,
				mid;

	while (lo < hi)				/* first value >= number */
	{
		mid = lo + (hi - lo) / 2;
		if (e->values[mid].number < number)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < e->nvalues && e->values[lo].number == number)
		return emit_name(d, e->values[lo].name);
	return emit_integer(d, PBT_INT32, (uint32_t) number, false);
}

/* The wire type a field type is encoded with (unpacked) */
static int
wire_type_of(int type)
{
	switch (type)
	{
		case PBT_DOUBLE:
		case PBT_FIXED64:
		case PBT_SFIXED64:
			return WT_I64;
		case PBT_FLOAT:
		case PBT_FIXED32:
		case PBT_SFIXED32:
			return WT_I32;
		case PBT_STRING:
		case PBT_BYTES:
		case PBT_MESSAGE:
			return WT_LEN;
		case PBT_GROUP:
			return WT_SGROUP;
		default:
			return WT_VARINT;
	}
}

/* Reject an occurrence whose wire type does not fit the declared type */
static int
check_wire_type(PbDecoder *d, const PbField *f, const PbEntry *e)
{
	if (f->type == PBT_GROUP)
		return dec_error(d, "field %u (%s): groups are not supported",
						 f->number, f->name);
	if (e->wt != wire_type_of(f->type))
		return dec_error(d, "field %u (%s): wire type %d does not match %s",
						 f->number, f->name, e->wt, type_names[f->type]);
	return 0;
}

/*
 * Check one occurrence before anything of it is printed: its wire type, and
 * for strings their UTF-8 (every occurrence, as protobuf's parser would,
 * even those a later one replaces).
 */
static int
check_occurrence(PbDecoder *d, const PbField *f, const PbEntry *e)
{
	size_t		ok;

	if (check_wire_type(d, f, e) < 0)
		return -1;
	if (f->type != PBT_STRING)
		return 0;
	ok = utf8_prefix(e->p, (size_t) e->v);
	if (ok < e->v)
		return dec_error(d, "field %u (%s): invalid UTF-8 at offset %zu",
						 f->number, f->name, OFFSET(d, e->p + ok));
	return 0;
}

/* Whether a value equals its type's default (for implicit presence) */
static bool
is_default(const PbField *f, const PbEntry *e)
{
	switch (f->type)
	{
		case PBT_INT32:
		case PBT_UINT32:
		case PBT_SINT32:
		case PBT_ENUM:
		case PBT_FIXED32:
		case PBT_SFIXED32:
		case PBT_FLOAT:
			return (uint32_t) e->v == 0;
		default:
			return e->v == 0;	/* 64-bit, bool, and lengths */
	}
}

/* Append one field value (already checked against the field's type) */
static int
emit_value(PbDecoder *d, const PbField *f, const PbEntry *e, int depth)
{
	switch (f->type)
	{
		case PBT_DOUBLE:
			return emit_double(d, e->v);
		case PBT_FLOAT:
			return emit_float(d, (uint32_t) e->v);
		case PBT_BOOL:
			return buf_puts(d, e->v ? "true" : "false");
		case PBT_STRING:		/* UTF-8 checked by check_occurrence */
			return emit_escaped(d, e->p, (size_t) e->v);
		case PBT_BYTES:
			return emit_base64(d, e->p, (size_t) e->v);
		case PBT_ENUM:
			return emit_enum(d, f->enm, (int32_t) (uint32_t) e->v);
		case PBT_MESSAGE:
			return emit_message(d, f->msg, e, 1, depth + 1);
		default:
			return emit_integer(d, f->type, e->v, is_64bit(f->type));
	}
}

/* Append a non-repeated field's value: messages merge, else the last wins */
static int
emit_occurrences(PbDecoder *d, const PbField *f, const PbEntry *e, size_t n,
				 int depth)
{
	if (f->type == PBT_MESSAGE)
		return emit_message(d, f->msg, e, n, depth + 1);
	return emit_value(d, f, &e[n - 1], depth);
}

/*
 * Check a message value that is not printed (replaced by a later oneof
 * member or map entry), as protobuf's parser would still reject it: print
 * it, then take the text back.
 */
static int
check_unprinted(PbDecoder *d, const PbField *f, const PbEntry *e, size_t n,
				int depth)
{
	size_t		mark = d->out->len;
	int			rc;

	if (f->type != PBT_MESSAGE || n == 0)
		return 0;
	rc = emit_message(d, f->msg, e, n, depth + 1);
	if (d->out->data != NULL)
	{
		d->out->len = mark;
		d->out->data[mark] = '\0';
	}
	return rc;
}

/* Append the value a field has when absent (map entries without a value) */
static int
emit_default(PbDecoder *d, const PbField *f)
{
	switch (f->type)
	{
		case PBT_BOOL:
			return buf_puts(d, "false");
		case PBT_STRING:
		case PBT_BYTES:
			return buf_puts(d, "\"\"");
		case PBT_ENUM:
			return emit_enum(d, f->enm, 0);
		case PBT_MESSAGE:
			return buf_puts(d, "{}");
		default:
			return buf_puts(d, is_64bit(f->type) ? "\"0\"" : "0");
	}
}

/* Append "key": for a field, with the comma that separates it */
static int
emit_key(PbDecoder *d, const PbField *f, bool *first)
{
	if (!*first && buf_putc(d, ',') < 0)
		return -1;
	*first = false;
	if (emit_name(d, f->json_name) < 0)
		return -1;
	return buf_putc(d, ':');
}

/* Append one array element, with the comma that separates it */
static int
emit_element(PbDecoder *d, const PbField *f, const PbEntry *e, size_t *count,
			 int depth)
{
	if ((*count)++ > 0 && buf_putc(d, ',') < 0)
		return -1;
	return emit_value(d, f, e, depth);
}

/* Whether a field type may use packed encoding */
static bool
is_packable(int type)
{
	return type != PBT_STRING && type != PBT_BYTES && type != PBT_MESSAGE &&
		type != PBT_GROUP;
}

/* Append the elements of one packed run */
static int
emit_packed(PbDecoder *d, const PbField *f, const PbEntry *run, size_t *count)
{
	const uint8_t *p = run->p;
	const uint8_t *end = run->p + run->v;
	int			wt = wire_type_of(f->type);
	int			size = wt == WT_I32 ? 4 : wt == WT_I64 ? 8 : 0;
	PbEntry		el;

	if (size > 0 && run->v % size != 0)
		return dec_error(d, "field %u (%s): packed length %" PRIu64 " at offset %zu is not a multiple of %d",
						 f->number, f->name, run->v, OFFSET(d, run->p), size);
	el.wt = wt;
	while (p < end)
	{
		el.p = p;
		if ((size > 0 ? read_fixed(d, &p, end, size, &el.v) :
			 read_varint(d, &p, end, &el.v)) < 0 ||
			emit_element(d, f, &el, count, 0) < 0)
			return -1;
	}
	return 0;
}

/* Append a repeated field as an array; nothing when it has no elements */
static int
emit_repeated(PbDecoder *d, const PbField *f, const PbEntry *e, size_t n,
			  bool *first, int depth)
{
	size_t		mark = d->out->len;
	bool		was_first = *first;
	size_t		count = 0,
				i;
	int			rc = 0;

	if (emit_key(d, f, first) < 0 || buf_putc(d, '[') < 0)
		return -1;
	for (i = 0; i < n && rc == 0; i++)
	{
		if (e[i].wt == WT_LEN && is_packable(f->type))
			rc = emit_packed(d, f, &e[i], &count);
		else if ((rc = check_occurrence(d, f, &e[i])) == 0)
			rc = emit_element(d, f, &e[i], &count, depth);
	}
	if (rc < 0)
		return -1;
	if (count > 0)
		return buf_putc(d, ']');
	d->out->len = mark;			/* empty: omitted */
	d->out->data[mark] = '\0';
	*first = was_first;
	return 0;
}

/* Compare two map items' keys */
static int
map_key_cmp(const PbMapItem *a, const PbMapItem *b)
{
	size_t		n = a->key.v < b->key.v ? (size_t) a->key.v : (size_t) b->key.v;
	int			c;

	if (!a->str_key)
		return a->sortkey < b->sortkey ? -1 : a->sortkey > b->sortkey;
	c = memcmp(a->key.p, b->key.p, n);
	if (c != 0)
		return c;
	return a->key.v < b->key.v ? -1 : a->key.v > b->key.v;
}

/* Order map items by key, then wire position */
static int
map_item_cmp(const void *x, const void *y)
{
	const PbMapItem *a = x;
	const PbMapItem *b = y;
	int			c = map_key_cmp(a, b);

	if (c != 0)
		return c;
	return a->ord < b->ord ? -1 : a->ord > b->ord;
}

/* Give a map item a key that sorts in the key type's natural order */
static void
map_item_key(const PbField *kf, PbMapItem *it)
{
	int64_t		s;
	uint64_t	u;

	it->str_key = kf->type == PBT_STRING;
	if (int_value(kf->type, it->key.v, &s, &u))
		u = (uint64_t) s ^ ((uint64_t) 1 << 63);
	it->sortkey = it->str_key ? 0 : u;
}

/* Decode one map entry message into its key and value */
static int
read_map_entry(PbDecoder *d, const PbField *mf, const PbEntry *e, int depth,
			   PbMapItem *it)
{
	const PbMessage *em = mf->msg;
	PbEntry    *ee;
	size_t		n,
				i;
	int			rc = 0;

	if (depth > PB_MAX_DEPTH)
		return dec_error(d, "messages nested deeper than %d at offset %zu",
						 PB_MAX_DEPTH, OFFSET(d, e->p));
	if (scan_message(d, em, e, 1, depth, &ee, &n) < 0)
		return -1;
	it->entries = ee;
	it->key.p = (const uint8_t *) "";
	it->key.v = 0;
	it->values = NULL;
	it->nvalues = 0;
	for (i = 0; i < n && rc == 0; i++)
	{
		const PbField *f = &em->fields[ee[i].field];

		if ((rc = check_occurrence(d, f, &ee[i])) < 0 || ee[i].dropped)
			continue;
		if (f == em->map_key)
			it->key = ee[i];	/* sorted by position: the last wins */
		else if (f == em->map_value && it->nvalues++ == 0)
			it->values = &ee[i];	/* all of them: messages merge */
	}
	map_item_key(em->map_key, it);
	return rc;
}

/* Append a map key in its JSON string form */
static int
emit_map_key(PbDecoder *d, const PbField *kf, const PbMapItem *it)
{
	if (kf->type == PBT_STRING)
		return emit_escaped(d, it->key.p, (size_t) it->key.v);
	if (kf->type == PBT_BOOL)
		return buf_puts(d, it->key.v ? "\"true\"" : "\"false\"");
	return emit_integer(d, kf->type, it->key.v, true);
}

/* Append sorted map items as an object, the last one for a repeated key */
static int
emit_map_items(PbDecoder *d, const PbField *f, const PbMapItem *it, size_t n,
			   bool *first, int depth)
{
	const PbMessage *em = f->msg;
	size_t		i,
				count = 0;

	if (emit_key(d, f, first) < 0 || buf_putc(d, '{') < 0)
		return -1;
	for (i = 0; i < n; i++)
	{
		if (i + 1 < n && map_key_cmp(&it[i], &it[i + 1]) == 0)
		{
			if (check_unprinted(d, em->map_value, it[i].values,
								it[i].nvalues, depth + 1) < 0)
				return -1;
			continue;			/* a later entry has the same key */
		}
		if ((count++ > 0 && buf_putc(d, ',') < 0) ||
			emit_map_key(d, em->map_key, &it[i]) < 0 || buf_putc(d, ':') < 0)
			return -1;
		if ((it[i].nvalues > 0 ?
			 emit_occurrences(d, em->map_value, it[i].values, it[i].nvalues,
							  depth + 1) :
			 emit_default(d, em->map_value)) < 0)
			return -1;
	}
	return buf_putc(d, '}');
}

/* Append a map field as a JSON object */
static int
emit_map(PbDecoder *d, const PbField *f, const PbEntry *e, size_t n,
		 bool *first, int depth)
{
	PbMapItem  *items = mem_alloc(d->a, n * sizeof(PbMapItem));
	size_t		i;
	int			rc = 0;

	if (items == NULL)
		return dec_error(d, "out of memory");
	for (i = 0; i < n; i++)
		items[i].entries = NULL;
	for (i = 0; i < n && rc == 0; i++)
	{
		items[i].ord = i;
		if ((rc = check_wire_type(d, f, &e[i])) == 0)
			rc = read_map_entry(d, f, &e[i], depth + 1, &items[i]);
	}
	if (rc == 0)
	{
		if (n > 1)
			qsort(items, n, sizeof(PbMapItem), map_item_cmp);
		rc = emit_map_items(d, f, items, n, first, depth);
	}
	for (i = 0; i < n; i++)
		mem_free(d->a, items[i].entries);
	mem_free(d->a, items);
	return rc;
}

/* Append all occurrences of one field (sorted by position) */
static int
emit_field(PbDecoder *d, const PbField *f, const PbEntry *e, size_t n,
		   bool *first, int depth)
{
	size_t		i;

	if (f->is_map)
		return emit_map(d, f, e, n, first, depth);
	if (f->repeated)
		return emit_repeated(d, f, e, n, first, depth);
	for (i = 0; i < n; i++)
		if (check_occurrence(d, f, &e[i]) < 0)
			return -1;
	for (i = 0; i < n && e[i].dropped; i++)
		continue;				/* oneof: replaced by another member */
	if (check_unprinted(d, f, e, i, depth) < 0)
		return -1;
	e += i;
	n -= i;
	if (n == 0 || (f->implicit && is_default(f, &e[n - 1])))
		return 0;
	if (emit_key(d, f, first) < 0)
		return -1;
	return emit_occurrences(d, f, e, n, depth);
}

/* Append a message as a JSON object, fields in declaration order */
static int
emit_message(PbDecoder *d, const PbMessage *m, const PbEntry *segs,
			 size_t nsegs, int depth)
{
	PbEntry    *e;
	size_t		n,
				i,
				j;
	bool		first = true;
	int			rc;

	if (depth > PB_MAX_DEPTH)
		return dec_error(d, "messages nested deeper than %d at offset %zu",
						 PB_MAX_DEPTH, OFFSET(d, segs[0].p));
	if (scan_message(d, m, segs, nsegs, depth, &e, &n) < 0)
		return -1;
	rc = buf_putc(d, '{');
	for (i = 0; rc == 0 && i < n; i = j)
	{
		for (j = i + 1; j < n && e[j].field == e[i].field; j++)
			continue;
		rc = emit_field(d, &m->fields[e[i].field], e + i, j - i, &first, depth);
	}
	if (rc == 0)
		rc = buf_putc(d, '}');
	mem_free(d->a, e);
	return rc;
}


/* ---------------------------------------------------------------------
 * Public API
 * --------------------------------------------------------------------- */

/* Reject descriptor sets nested deeper than protobuf-c's recursion can take */
static int
check_nesting(PbDecoder *d, const ProtobufCMessageDescriptor *desc,
			  const uint8_t *p, const uint8_t *end, int depth)
{
	const ProtobufCFieldDescriptor *f;
	uint32_t	num;
	int			wt;
	PbEntry		e;

	if (depth > PB_MAX_DESCRIPTOR_DEPTH)
		return dec_error(d, "nested deeper than %d", PB_MAX_DESCRIPTOR_DEPTH);
	while (p < end)
	{
		if (read_tag(d, &p, end, &num, &wt) < 0 ||
			read_value(d, &p, end, num, wt, 0, &e) < 0)
			return -1;
		f = protobuf_c_message_descriptor_get_field(desc, num);
		if (f != NULL && f->type == PROTOBUF_C_TYPE_MESSAGE && wt == WT_LEN &&
			check_nesting(d, f->descriptor, e.p, e.p + e.v, depth + 1) < 0)
			return -1;
	}
	return 0;
}

/* Check and unpack a serialized FileDescriptorSet with protobuf-c */
static Google__Protobuf__FileDescriptorSet *
unpack_set(const uint8_t *data, size_t len, ProtobufCAllocator *pa,
		   char *err, size_t errlen)
{
	Google__Protobuf__FileDescriptorSet *set;
	PbDecoder	d;
	char		why[200];

	memset(&d, 0, sizeof(d));
	d.base = data;
	d.err = why;
	d.errlen = sizeof(why);
	if (check_nesting(&d, &google__protobuf__file_descriptor_set__descriptor,
					  data, data + len, 0) < 0)
	{
		pb_error(err, errlen, "invalid FileDescriptorSet: %s", why);
		return NULL;
	}
	set = google__protobuf__file_descriptor_set__unpack(pa, len, data);
	if (set == NULL)
		pb_error(err, errlen, "invalid FileDescriptorSet");
	return set;
}

/* Load a descriptor set into a new or existing schema (see pbjson.h) */
int
pb_schema_add(PbSchema **schema, const uint8_t *data, size_t len,
			  const PbAllocator *a, char *err, size_t errlen)
{
	PbSchema   *s = *schema;
	PbSchema   *fresh = NULL;
	Google__Protobuf__FileDescriptorSet *set;
	ProtobufCAllocator pa;
	PbBuild		b;
	PbArenaBlock *tail;
	int			rc;

	if (data == NULL)
		data = (const uint8_t *) "", len = 0;
	if (s == NULL)
	{
		fresh = s = mem_alloc(a, sizeof(PbSchema));
		if (s == NULL)
			return pb_error(err, errlen, "out of memory");
		memset(s, 0, sizeof(PbSchema));
		s->a = *a;
	}
	pa.alloc = pc_alloc;
	pa.free = pc_free;
	pa.allocator_data = &s->a;
	set = unpack_set(data, len, &pa, err, errlen);
	memset(&b, 0, sizeof(b));
	b.a = &s->a;
	b.seq = s->seq;
	b.err = err;
	b.errlen = errlen;
	rc = set == NULL ? -1 : compile_set(&b, set);
	if (set != NULL)
		google__protobuf__file_descriptor_set__free_unpacked(set, &pa);
	if (rc == 0)
		rc = install_set(s, &b);
	mem_free(b.a, b.types);
	if (rc < 0)
	{
		arena_free(b.a, b.blocks);
		if (fresh != NULL)
			mem_free(a, fresh);
		return -1;
	}
	for (tail = b.blocks; tail != NULL && tail->next != NULL; tail = tail->next)
		continue;
	if (tail != NULL)
	{
		tail->next = s->blocks;
		s->blocks = b.blocks;
	}
	*schema = s;
	return 0;
}

/* Whether a message type is known, so callers can validate names early */
int
pb_schema_has_message(const PbSchema *schema, const char *full_name)
{
	const PbType *t;

	if (schema == NULL || full_name == NULL)
		return 0;
	t = find_type(schema->types, schema->ntypes, skip_dot(full_name));
	return t != NULL && t->kind == PB_KIND_MESSAGE;
}

/* Number of listable message types */
size_t
pb_schema_message_count(const PbSchema *schema)
{
	return schema ? schema->nmessages : 0;
}

/* Name of listable message type i */
const char *
pb_schema_message_name(const PbSchema *schema, size_t i)
{
	if (schema == NULL || i >= schema->nmessages)
		return NULL;
	return schema->messages[i]->hdr.name + 1;
}

/* Release a schema: its arena, index and listing */
void
pb_schema_free(PbSchema *schema)
{
	PbAllocator a;

	if (schema == NULL)
		return;
	a = schema->a;
	arena_free(&a, schema->blocks);
	mem_free(&a, schema->types);
	mem_free(&a, (void *) schema->messages);
	mem_free(&a, schema);
}

/* Start an empty output buffer */
void
pb_buf_init(PbBuf *buf, const PbAllocator *a)
{
	buf->data = NULL;
	buf->len = 0;
	buf->cap = 0;
	buf->a = a;
}

/* Release an output buffer and leave it empty */
void
pb_buf_free(PbBuf *buf)
{
	mem_free(buf->a, buf->data);
	pb_buf_init(buf, buf->a);
}

/* Decode a payload as a message type into JSON text (see pbjson.h) */
int
pb_to_json(const PbSchema *schema, const char *message_type,
		   const uint8_t *payload, size_t len, PbBuf *out, char *err,
		   size_t errlen)
{
	const PbType *t = NULL;
	PbDecoder	d;
	PbEntry		whole;
	size_t		mark = out->len;
	int			rc;

	if (schema != NULL && message_type != NULL)
		t = find_type(schema->types, schema->ntypes, skip_dot(message_type));
	if (t == NULL || t->kind != PB_KIND_MESSAGE)
		return pb_error(err, errlen, "message type \"%s\" not found in registered descriptor sets",
						message_type ? message_type : "");
	if (payload == NULL)
		payload = (const uint8_t *) "", len = 0;
	whole.p = payload;
	whole.v = len;
	whole.wt = WT_LEN;
	whole.field = 0;
	d.base = payload;
	d.out = out;
	d.a = out->a;
	d.err = err;
	d.errlen = errlen;
	rc = emit_message(&d, (const PbMessage *) t, &whole, 1, 1);
	if (rc < 0 && out->data != NULL)
	{
		out->len = mark;
		out->data[mark] = '\0';
	}
	return rc;
}
