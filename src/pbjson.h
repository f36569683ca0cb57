/*
 * pbjson.h
 *		Protobuf payload to JSON text, driven by FileDescriptorSets.
 *
 * PostgreSQL-independent: plain C99 plus protobuf-c.  All memory comes from
 * a caller-supplied allocator, so the extension can hand in palloc and the
 * fuzzers malloc.  An allocator's alloc may return NULL (reported as an
 * error) or not return at all (palloc's ereport); either way no global state
 * is left behind.
 *
 * Mapping (protobuf's canonical proto3 JSON mapping):
 *	- keys are json_name from the descriptor, else lowerCamelCase of the name,
 *	  in descriptor field order; output is compact ({"a":1,"b":[2]});
 *	- int32, sint32, sfixed32, uint32, fixed32: JSON numbers;
 *	  int64, sint64, sfixed64, uint64, fixed64: JSON strings ("-5");
 *	- float, double: shortest round-trip numbers; "NaN", "Infinity",
 *	  "-Infinity" as strings;
 *	- bool: true/false; string: must be valid UTF-8, escaped per RFC 8259
 *	  (U+0000 comes out as \u0000, which jsonb refuses);
 *	- bytes: standard base64 with padding;
 *	- enum: value name, the number when the value is not declared;
 *	- message: an object; repeated: an array (packed and unpacked encodings
 *	  both accepted for scalar numeric types);
 *	- map<K,V>: an object keyed by the key's string form, keys sorted
 *	  (numerically for integer keys), the last entry wins for a duplicate key;
 *	- fields at their default value are omitted, as protobuf's JSON printer
 *	  does by default: absent fields, empty repeated fields, and proto3
 *	  implicit-presence scalars present on the wire with value 0, "" or false;
 *	- a non-repeated field that occurs more than once: the last one wins,
 *	  except that occurrences of a message field (or of a map value in one
 *	  entry) merge, as protobuf's parser does; for a oneof, the last member
 *	  set wins;
 *	- every occurrence is checked (wire type, UTF-8, nested messages), also
 *	  those a later one replaces: what protobuf's parser rejects, pbjson
 *	  rejects, and a wire type that does not fit the declared type is an
 *	  error (protobuf's parser would keep it as an unknown field); a 10-byte
 *	  varint whose last byte exceeds 1 is an error (as in Go, not C++);
 *	- unknown field numbers are skipped, whatever their wire type (groups
 *	  included); fields declared as groups are an error;
 *	- proto2: required fields are not enforced, [default = ...] values of
 *	  absent fields are not printed;
 *	- well-known types (Timestamp, Duration, wrappers, Struct, Any) are
 *	  rendered as ordinary messages ({"seconds":"1","nanos":5}).
 *
 * Schemas: type names are resolved across every file of every set added to
 * the schema when the set is added (an unresolvable name fails the add, so
 * a set must be self-contained, i.e. made with protoc --include_imports, or
 * its dependencies added first).  When a type name is defined more than once
 * the first definition wins (sets made with --include_imports commonly share
 * files such as google/protobuf/timestamp.proto).  Type names in fields are
 * taken as fully qualified (protoc always writes them so); names must be
 * identifiers.
 *
 * Hostile input never crashes, hangs or reads out of bounds; limits below.
 * Output formatting uses printf %g, which assumes LC_NUMERIC "C" (as in a
 * PostgreSQL backend).
 */
#ifndef PBJSON_H
#define PBJSON_H

#include <stddef.h>
#include <stdint.h>

/* Deepest message nesting in a payload (and group nesting when skipping) */
#define PB_MAX_DEPTH 64
/* Deepest message nesting inside a serialized FileDescriptorSet */
#define PB_MAX_DESCRIPTOR_DEPTH 100
/* Largest JSON text pb_to_json produces (overridable for tests) */
#ifndef PB_MAX_OUTPUT
#define PB_MAX_OUTPUT ((size_t) 256 * 1024 * 1024)
#endif

typedef struct PbAllocator
{
	void	   *(*alloc) (void *ctx, size_t n);
	void		(*free) (void *ctx, void *p);
	void	   *ctx;
} PbAllocator;

/* Growable output; data is NUL-terminated whenever it is non-NULL */
typedef struct PbBuf
{
	char	   *data;
	size_t		len;
	size_t		cap;
	const PbAllocator *a;
} PbBuf;

/* Opaque: the types of one or more decoded FileDescriptorSets */
typedef struct PbSchema PbSchema;

/*
 * Decode a serialized google.protobuf.FileDescriptorSet into *schema: a new
 * schema when *schema is NULL, else added to it.  For a new schema the
 * allocator is copied and used for the schema's whole life (a is ignored
 * when adding to an existing schema).  Returns 0, or -1 with a message in err
 * (NUL-terminated, at most errlen bytes); on error *schema is unchanged.
 */
extern int	pb_schema_add(PbSchema **schema, const uint8_t *data, size_t len,
						  const PbAllocator *a, char *err, size_t errlen);

/* Whether the schema knows a message type ("pkg.Msg", leading dot optional) */
extern int	pb_schema_has_message(const PbSchema *schema, const char *full_name);

/* Number of message types in the schema (map entry types not counted) */
extern size_t pb_schema_message_count(const PbSchema *schema);

/* Full name (no leading dot) of message type i, in name order; NULL if none */
extern const char *pb_schema_message_name(const PbSchema *schema, size_t i);

/* Release a schema and everything it allocated (NULL is fine) */
extern void pb_schema_free(PbSchema *schema);

/* Make an empty output buffer that allocates with a */
extern void pb_buf_init(PbBuf *buf, const PbAllocator *a);

/* Release an output buffer's memory */
extern void pb_buf_free(PbBuf *buf);

/*
 * Decode payload as message_type into JSON text appended to out.  Returns 0,
 * or -1 with a message in err; on error out->len is restored to its value at
 * entry.  Temporary memory comes from out->a (which must be set: see
 * pb_buf_init).  out->len may not exceed PB_MAX_OUTPUT.
 */
extern int	pb_to_json(const PbSchema *schema, const char *message_type,
					   const uint8_t *payload, size_t len, PbBuf *out,
					   char *err, size_t errlen);

#endif							/* PBJSON_H */
