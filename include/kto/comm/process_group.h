// The MPI control plane (DESIGN §6): who is in the job, and small host-side collectives.
//
//   kto::comm::Runtime runtime(&argc, &argv);      // MPI_Init (singleton without mpirun)
//   const ProcessGroup& world = runtime.world();
//   double loss_sum = world.all_reduce(local, ReduceOp::sum);
//
// Every decision that ends or branches a job is taken collectively through this class (reduce
// first, then every rank takes the same branch). Errors return from MPI (MPI_ERRORS_RETURN) and
// become kto::Error through KTO_MPI_CHECK. Tensor collectives are in communicator.h.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace kto::comm {

enum class ReduceOp { sum, avg, max, min };

class ProcessGroup {
 public:
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  // Rank and size among the processes on this host (MPI_Comm_split_type SHARED).
  int local_rank() const { return local_rank_; }
  int local_size() const { return local_size_; }
  bool is_root() const { return rank_ == 0; }

  void barrier() const;
  // Element-wise reductions of small host arrays, in place. avg divides the sum by size().
  void all_reduce(double* values, int count, ReduceOp op) const;
  void all_reduce(int64_t* values, int count, ReduceOp op) const;
  double all_reduce(double value, ReduceOp op) const;
  int64_t all_reduce(int64_t value, ReduceOp op) const;
  // True on every rank iff `value` is true on every rank (a collective decision).
  bool all_true(bool value) const;
  void broadcast(void* data, int64_t bytes, int root) const;
  void broadcast(std::string& text, int root) const;
  // Every rank's string, in rank order (for rank-ordered start-up facts).
  std::vector<std::string> all_gather(const std::string& text) const;

  // The ranks of this group with the same `color`, ordered by `key` (then by rank here): a new
  // group (MPI_Comm_split). Host facts (local_rank, local_size) stay this process's. Collective.
  std::unique_ptr<ProcessGroup> split(int color, int key) const;
  // The ranks of this group on this host (MPI_Comm_split_type SHARED), in rank order. Collective.
  std::unique_ptr<ProcessGroup> split_by_host() const;

  // Opaque MPI_Comm of this group, for communicators built on it.
  const void* mpi_comm() const { return comm_.get(); }

 private:
  friend class Runtime;
  ProcessGroup() = default;
  static std::unique_ptr<ProcessGroup> from_world();
  // A group owning the new MPI_Comm at `comm` (a part of this one), with this process's host facts.
  std::unique_ptr<ProcessGroup> part_of_this(const void* comm) const;

  std::shared_ptr<void> comm_;  // MPI_Comm, freed on destruction
  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1;
};

// Owns MPI for the life of main(): initialises it (thread level FUNNELED) unless already
// initialised, and finalises it on destruction if it initialised it.
class Runtime {
 public:
  Runtime(int* argc, char*** argv);
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;
  const ProcessGroup& world() const { return *world_; }

 private:
  bool finalize_ = false;
  std::unique_ptr<ProcessGroup> world_;
};

// Ends the whole job: prints `why` with rank and host, then MPI_Abort (or exit without MPI).
[[noreturn]] void abort_job(int code, const std::string& why);

// Marks a scope whose failures are every rank's alike: checks that every rank computes from the
// same inputs (the config, the data's headers, a checkpoint's manifest). An exception that leaves
// such a scope is reported once, by rank 0, and every rank ends in order (no MPI_Abort). Use it
// only where no rank can fail alone: a rank that did not throw would wait for the others.
class SameOnEveryRank {
 public:
  SameOnEveryRank();
  ~SameOnEveryRank();
  SameOnEveryRank(const SameOnEveryRank&) = delete;
  SameOnEveryRank& operator=(const SameOnEveryRank&) = delete;

 private:
  int uncaught_;
};

// main() for distributed binaries: runs `body`; an exception on any rank prints the cause with
// rank and host and aborts every rank (MPI_Abort), so a failure never becomes a hang — except one
// thrown inside a SameOnEveryRank scope, which rank 0 alone reports before every rank exits.
// Usage errors exit with 2, other errors with 1.
int run_distributed_main(const char* program, int argc, char** argv,
                         const std::function<int(const ProcessGroup& world)>& body);

}  // namespace kto::comm
