// Small HDF5 (C API) helpers shared by datasets and checkpoints: RAII identifiers, scalar
// attributes, and 1-D datasets read whole or by element range. Every call is checked
// (KTO_H5_CHECK): failures raise kto::Error with HDF5's error stack.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "kto/util/check_h5.h"

namespace kto::h5 {

// An HDF5 identifier released with H5Idec_ref when the handle goes out of scope.
class Handle {
 public:
  Handle() = default;
  explicit Handle(hid_t id) : id_(id) {}
  ~Handle() { reset(); }
  Handle(Handle&& o) noexcept : id_(std::exchange(o.id_, H5I_INVALID_HID)) {}
  Handle& operator=(Handle&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = std::exchange(o.id_, H5I_INVALID_HID);
    }
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;

  hid_t get() const { return id_; }
  operator hid_t() const { return id_; }  // NOLINT: handles pass straight into H5* calls
  void reset() {
    if (id_ >= 0) H5Idec_ref(id_);
    id_ = H5I_INVALID_HID;
  }

 private:
  hid_t id_ = H5I_INVALID_HID;
};

// Creates (truncates) `path` in the HDF5 1.10 file format: the superblock, object headers and
// chunk indexes carry checksums, so libhdf5 refuses a damaged file before it parses its
// metadata (libhdf5 is not memory-safe on corrupt metadata it has no checksum for). Readable by
// HDF5 >= 1.10 (h5py included).
hid_t create_file(const std::string& path);

// The superblock version of an HDF5 file without a user block (0..3), or -1 when unknown. Below
// 2 its metadata carries no checksums.
int superblock_version(const std::string& path);

bool has_link(hid_t location, const char* name);
bool has_attr(hid_t object, const char* name);
int64_t read_int_attr(hid_t object, const char* name, int64_t fallback);
std::string read_string_attr(hid_t object, const char* name);  // "" when absent
void write_int_attr(hid_t object, const char* name, int64_t value);
void write_string_attr(hid_t object, const char* name, const std::string& value);

// Throws naming `where` when the dataset's type is not an integer (float labels, say).
void check_integer_dataset(hid_t dataset, const std::string& where);

// Length of a 1-D dataset; throws naming `where` when it is not 1-D.
int64_t dataset_length(hid_t dataset, const std::string& where);

// A whole 1-D dataset (`expected` >= 0: its required length); errors name `where`.
void read_vector(hid_t location, const char* name, hid_t mem_type, void* out, int64_t count,
                 const std::string& where);
// Integer element types must be stored as integers too (HDF5 would convert floats silently).
template <class T>
std::vector<T> read_vector(hid_t location, const char* name, hid_t mem_type, int64_t expected,
                           const std::string& where) {
  if (!has_link(location, name)) throw Error(where + ": missing dataset " + name);
  Handle dset(KTO_H5_CHECK(H5Dopen2(location, name, H5P_DEFAULT)));
  if constexpr (std::is_integral_v<T>) check_integer_dataset(dset, where + ": dataset " + name);
  const int64_t n = dataset_length(dset, where + ": " + name);
  if (expected >= 0 && n != expected) {
    throw Error(detail::str_cat(where, ": dataset ", name, " has ", n, " entries, expected ", expected));
  }
  std::vector<T> out(static_cast<size_t>(n));
  if (n > 0) KTO_H5_CHECK(H5Dread(dset, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()));
  return out;
}
// Elements [begin, begin + count) of a 1-D dataset into `out` (a hyperslab read).
void read_range(hid_t dataset, hid_t mem_type, int64_t begin, int64_t count, void* out);
// A 1-D dataset holding `count` elements at `data`.
void write_vector(hid_t location, const char* name, hid_t file_type, hid_t mem_type, const void* data,
                  int64_t count);

}  // namespace kto::h5
