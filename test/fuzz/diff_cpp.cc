// diff_cpp.cc
//	Differential check of pbjson against protobuf's own C++ JSON printer
//	(google::protobuf::util::MessageToJsonString): decode every payload file
//	given on the command line as pbtest.Test with both, and report where they
//	disagree.  Optional (needs libprotobuf-dev and a C++ compiler):
//	make diff [DIFF_INPUTS=dir...].
//
//	Timestamp is renamed out of google.protobuf first, as pbjson renders
//	well-known types as ordinary messages.  Inputs C++ cannot parse are
//	skipped; those only pbjson refuses (C++ keeps fields of the wrong wire
//	type as unknown fields) are counted.  Maps with several entries are
//	skipped: C++ prints them in hash order.
#include <dirent.h>
#include <sys/stat.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/dynamic_message.h>
#include <google/protobuf/util/json_util.h>

extern "C" {
#include "pbjson.h"
}

namespace pb = google::protobuf;

// Read a whole file
static std::string slurp(const std::string &path)
{
	std::ifstream in(path, std::ios::binary);
	std::ostringstream s;
	s << in.rdbuf();
	return s.str();
}

// malloc-backed PbAllocator hooks
static void *c_alloc(void *, size_t n) { return malloc(n); }
static void c_free(void *, void *p) { free(p); }
static const PbAllocator alloc = {c_alloc, c_free, nullptr};

// Whether the message has a map field with more than one entry, at any depth
static bool has_big_map(const pb::Message &m)
{
	const pb::Reflection *r = m.GetReflection();
	std::vector<const pb::FieldDescriptor *> fields;
	r->ListFields(m, &fields);
	for (const pb::FieldDescriptor *f : fields)
	{
		if (f->cpp_type() != pb::FieldDescriptor::CPPTYPE_MESSAGE)
			continue;
		if (f->is_map() && r->FieldSize(m, f) > 1)
			return true;
		if (f->is_repeated())
		{
			for (int i = 0; i < r->FieldSize(m, f); i++)
				if (has_big_map(r->GetRepeatedMessage(m, f, i)))
					return true;
		}
		else if (has_big_map(r->GetMessage(m, f)))
			return true;
	}
	return false;
}

// Equal, but numbers compare by value (float spelling differs: C++ prints
// %.9g where %.6g does not round-trip, pbjson the shortest form)
static bool same_json(const char *a, const char *b)
{
	if (*a != '{' || *b != '{')
		return strcmp(a, b) == 0;
	a++, b++;
	while (*a && *b)
	{
		bool num_a = (*a == '-' || (*a >= '0' && *a <= '9'));
		bool num_b = (*b == '-' || (*b >= '0' && *b <= '9'));
		if (num_a && num_b && a[-1] != '"' && b[-1] != '"')
		{
			char *ea, *eb;
			double x = strtod(a, &ea), y = strtod(b, &eb);
			if (ea != a && eb != b)
			{
				if (x != y && (float) x != (float) y)
					return false;
				a = ea;
				b = eb;
				continue;
			}
		}
		if (*a++ != *b++)
			return false;
	}
	return *a == *b;
}

static int counts[5];			// same, differ, only pbjson failed, skipped, both failed

// Decode one payload with both and compare
static void check(const pb::Message *proto, const PbSchema *schema,
				  const std::string &path)
{
	std::string data = slurp(path), cpp_json;
	std::unique_ptr<pb::Message> m(proto->New());
	PbBuf out;
	char err[256];

	pb_buf_init(&out, &alloc);
	int rc = pb_to_json(schema, "pbtest.Test",
						reinterpret_cast<const uint8_t *>(data.data()),
						data.size(), &out, err, sizeof(err));
	bool parsed = m->ParseFromString(data);
	if (!parsed || has_big_map(*m) ||
		!pb::util::MessageToJsonString(*m, &cpp_json).ok())
	{
		counts[rc == 0 ? 3 : 4]++;
		if (rc == 0 && !parsed && getenv("DIFF_VERBOSE"))
			std::cout << "only c++ failed: " << path << "\n";
	}
	else if (rc != 0)
	{
		counts[2]++;
		if (getenv("DIFF_VERBOSE"))
			std::cout << "only pbjson failed: " << path << ": " << err << "\n";
	}
	else if (same_json(cpp_json.c_str(), out.data))
		counts[0]++;
	else
	{
		counts[1]++;
		std::cout << "DIFFER " << path << "\n  c++:    " << cpp_json
				  << "\n  pbjson: " << out.data << "\n";
	}
	pb_buf_free(&out);
}

int main(int argc, char **argv)
{
	pb::FileDescriptorSet set;
	if (argc < 3 || !set.ParseFromString(slurp(argv[1])))
	{
		std::cerr << "usage: diff_cpp schema.pb payload-or-dir...\n";
		return 2;
	}
	for (pb::FileDescriptorProto &f : *set.mutable_file())
	{
		if (f.package() == "google.protobuf")
			f.set_package("notwkt");
		for (pb::DescriptorProto &m : *f.mutable_message_type())
			for (pb::FieldDescriptorProto &fd : *m.mutable_field())
				if (fd.type_name() == ".google.protobuf.Timestamp")
					fd.set_type_name(".notwkt.Timestamp");
	}
	pb::SetLogHandler(nullptr);
	pb::DescriptorPool pool;
	for (const pb::FileDescriptorProto &f : set.file())
		if (!pool.BuildFile(f))
			return 2;
	std::string bytes = set.SerializeAsString();
	PbSchema *schema = nullptr;
	char err[256];
	if (pb_schema_add(&schema, reinterpret_cast<const uint8_t *>(bytes.data()),
					  bytes.size(), &alloc, err, sizeof(err)) != 0)
	{
		std::cerr << err << "\n";
		return 2;
	}
	pb::DynamicMessageFactory factory(&pool);
	const pb::Message *proto =
		factory.GetPrototype(pool.FindMessageTypeByName("pbtest.Test"));

	for (int i = 2; i < argc; i++)
	{
		struct stat st;
		if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode))
		{
			DIR *d = opendir(argv[i]);
			for (struct dirent *e; d && (e = readdir(d)) != nullptr;)
				if (e->d_name[0] != '.')
					check(proto, schema, std::string(argv[i]) + "/" + e->d_name);
			if (d)
				closedir(d);
		}
		else
			check(proto, schema, argv[i]);
	}
	pb_schema_free(schema);
	printf("same %d, differ %d, only pbjson failed %d, skipped %d, both failed %d\n",
		   counts[0], counts[1], counts[2], counts[3], counts[4]);
	return counts[1] ? 1 : 0;
}
