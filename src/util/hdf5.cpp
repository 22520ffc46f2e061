#include "kto/util/hdf5.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

namespace kto::h5 {

hid_t create_file(const std::string& path) {
  Handle access(KTO_H5_CHECK(H5Pcreate(H5P_FILE_ACCESS)));
  KTO_H5_CHECK(H5Pset_libver_bounds(access, H5F_LIBVER_V110, H5F_LIBVER_LATEST));
  return KTO_H5_CHECK(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, access));
}

int superblock_version(const std::string& path) {
  unsigned char head[9] = {};
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return -1;
  const size_t got = std::fread(head, 1, sizeof(head), f);
  std::fclose(f);
  static const unsigned char signature[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
  if (got != sizeof(head) || std::memcmp(head, signature, 8) != 0) return -1;
  return head[8];
}

// A failed lookup (damaged metadata) is an error, not "absent": it must not turn into a
// misleading "missing attribute" or a default value.
bool has_link(hid_t location, const char* name) {
  return KTO_H5_CHECK(H5Lexists(location, name, H5P_DEFAULT)) > 0;
}
bool has_attr(hid_t object, const char* name) { return KTO_H5_CHECK(H5Aexists(object, name)) > 0; }

int64_t read_int_attr(hid_t object, const char* name, int64_t fallback) {
  if (!has_attr(object, name)) return fallback;
  Handle attr(KTO_H5_CHECK(H5Aopen(object, name, H5P_DEFAULT)));
  Handle type(KTO_H5_CHECK(H5Aget_type(attr)));
  Handle space(KTO_H5_CHECK(H5Aget_space(attr)));
  if (H5Tget_class(type) != H5T_INTEGER || H5Sget_simple_extent_npoints(space) != 1) {
    throw Error(std::string("attribute '") + name + "' must be one integer, but holds " +
                (H5Tget_class(type) == H5T_INTEGER ? "several values" : "a non-integer type"));
  }
  int64_t value = 0;
  KTO_H5_CHECK(H5Aread(attr, H5T_NATIVE_INT64, &value));
  return value;
}

std::string read_string_attr(hid_t object, const char* name) {
  if (!has_attr(object, name)) return "";
  Handle attr(KTO_H5_CHECK(H5Aopen(object, name, H5P_DEFAULT)));
  Handle type(KTO_H5_CHECK(H5Aget_type(attr)));
  if (H5Tget_class(type) != H5T_STRING) return "";
  Handle mem(KTO_H5_CHECK(H5Tcopy(H5T_C_S1)));
  KTO_H5_CHECK(H5Tset_cset(mem, H5Tget_cset(type)));
  if (H5Tis_variable_str(type) > 0) {
    char* text = nullptr;
    KTO_H5_CHECK(H5Tset_size(mem, H5T_VARIABLE));
    KTO_H5_CHECK(H5Aread(attr, mem, &text));
    std::string out = text ? text : "";
    H5free_memory(text);
    return out;
  }
  const size_t size = H5Tget_size(type);
  std::string out(size, '\0');
  KTO_H5_CHECK(H5Tset_size(mem, size));
  KTO_H5_CHECK(H5Aread(attr, mem, out.data()));
  out.resize(std::strlen(out.c_str()));
  return out;
}

void write_int_attr(hid_t object, const char* name, int64_t value) {
  Handle space(KTO_H5_CHECK(H5Screate(H5S_SCALAR)));
  Handle attr(KTO_H5_CHECK(H5Acreate2(object, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT)));
  KTO_H5_CHECK(H5Awrite(attr, H5T_NATIVE_INT64, &value));
}

void write_string_attr(hid_t object, const char* name, const std::string& value) {
  Handle space(KTO_H5_CHECK(H5Screate(H5S_SCALAR)));
  Handle type(KTO_H5_CHECK(H5Tcopy(H5T_C_S1)));
  KTO_H5_CHECK(H5Tset_size(type, std::max<size_t>(1, value.size())));
  KTO_H5_CHECK(H5Tset_cset(type, H5T_CSET_UTF8));
  Handle attr(KTO_H5_CHECK(H5Acreate2(object, name, type, space, H5P_DEFAULT, H5P_DEFAULT)));
  std::string padded = value;
  padded.resize(std::max<size_t>(1, value.size()), '\0');
  KTO_H5_CHECK(H5Awrite(attr, type, padded.data()));
}

void check_integer_dataset(hid_t dataset, const std::string& where) {
  Handle type(KTO_H5_CHECK(H5Dget_type(dataset)));
  if (H5Tget_class(type) != H5T_INTEGER) {
    throw Error(where + " must hold integers, but its type is " +
                (H5Tget_class(type) == H5T_FLOAT ? "floating point" : "not an integer type"));
  }
}

int64_t dataset_length(hid_t dataset, const std::string& where) {
  Handle space(KTO_H5_CHECK(H5Dget_space(dataset)));
  if (H5Sget_simple_extent_ndims(space) != 1) throw Error(where + " must be one-dimensional");
  hsize_t n = 0;
  KTO_H5_CHECK(H5Sget_simple_extent_dims(space, &n, nullptr));
  return static_cast<int64_t>(n);
}

void read_range(hid_t dataset, hid_t mem_type, int64_t begin, int64_t count, void* out) {
  if (count == 0) return;
  const hsize_t b = static_cast<hsize_t>(begin), c = static_cast<hsize_t>(count);
  Handle file_space(KTO_H5_CHECK(H5Dget_space(dataset)));
  KTO_H5_CHECK(H5Sselect_hyperslab(file_space, H5S_SELECT_SET, &b, nullptr, &c, nullptr));
  Handle mem_space(KTO_H5_CHECK(H5Screate_simple(1, &c, nullptr)));
  KTO_H5_CHECK(H5Dread(dataset, mem_type, mem_space, file_space, H5P_DEFAULT, out));
}

void write_vector(hid_t location, const char* name, hid_t file_type, hid_t mem_type, const void* data,
                  int64_t count) {
  const hsize_t n = static_cast<hsize_t>(count);
  Handle space(KTO_H5_CHECK(H5Screate_simple(1, &n, nullptr)));
  Handle dset(
      KTO_H5_CHECK(H5Dcreate2(location, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)));
  if (n > 0) KTO_H5_CHECK(H5Dwrite(dset, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data));
}

}  // namespace kto::h5
