#include "kto/comm/process_group.h"

#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <exception>

#include "kto/util/check_mpi.h"
#include "kto/util/cli.h"
#include "kto/util/log.h"
#include "kto/util/process.h"
#include "mpi_op.h"

namespace kto::comm {
namespace {

MPI_Comm as_comm(const void* handle) { return *static_cast<const MPI_Comm*>(handle); }

std::shared_ptr<void> own_comm(MPI_Comm comm) {
  return std::shared_ptr<void>(new MPI_Comm(comm), [](void* p) {
    auto* c = static_cast<MPI_Comm*>(p);
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized && *c != MPI_COMM_NULL) MPI_Comm_free(c);
    delete c;
  });
}

}  // namespace

ProcessGroup::~ProcessGroup() = default;

std::unique_ptr<ProcessGroup> ProcessGroup::from_world() {
  std::unique_ptr<ProcessGroup> pg(new ProcessGroup());
  MPI_Comm world = MPI_COMM_NULL;
  KTO_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &world));
  KTO_MPI_CHECK(MPI_Comm_set_errhandler(world, MPI_ERRORS_RETURN));
  pg->comm_ = own_comm(world);
  KTO_MPI_CHECK(MPI_Comm_rank(world, &pg->rank_));
  KTO_MPI_CHECK(MPI_Comm_size(world, &pg->size_));
  MPI_Comm local = MPI_COMM_NULL;
  KTO_MPI_CHECK(MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, pg->rank_, MPI_INFO_NULL, &local));
  KTO_MPI_CHECK(MPI_Comm_rank(local, &pg->local_rank_));
  KTO_MPI_CHECK(MPI_Comm_size(local, &pg->local_size_));
  KTO_MPI_CHECK(MPI_Comm_free(&local));
  set_process_identity(pg->rank_, pg->size_, pg->local_rank_);
  return pg;
}

std::unique_ptr<ProcessGroup> ProcessGroup::part_of_this(const void* handle) const {
  std::unique_ptr<ProcessGroup> pg(new ProcessGroup());
  const MPI_Comm part = as_comm(handle);
  KTO_MPI_CHECK(MPI_Comm_set_errhandler(part, MPI_ERRORS_RETURN));
  pg->comm_ = own_comm(part);
  KTO_MPI_CHECK(MPI_Comm_rank(part, &pg->rank_));
  KTO_MPI_CHECK(MPI_Comm_size(part, &pg->size_));
  pg->local_rank_ = local_rank_;  // host facts stay this process's
  pg->local_size_ = local_size_;
  return pg;
}

std::unique_ptr<ProcessGroup> ProcessGroup::split(int color, int key) const {
  MPI_Comm part = MPI_COMM_NULL;
  KTO_MPI_CHECK(MPI_Comm_split(as_comm(mpi_comm()), color, key, &part));
  return part_of_this(&part);
}

std::unique_ptr<ProcessGroup> ProcessGroup::split_by_host() const {
  MPI_Comm host = MPI_COMM_NULL;
  KTO_MPI_CHECK(MPI_Comm_split_type(as_comm(mpi_comm()), MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &host));
  return part_of_this(&host);
}

void ProcessGroup::barrier() const { KTO_MPI_CHECK(MPI_Barrier(as_comm(mpi_comm()))); }

void ProcessGroup::all_reduce(double* values, int count, ReduceOp op) const {
  KTO_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, values, count, MPI_DOUBLE, mpi_op(op), as_comm(mpi_comm())));
  if (op == ReduceOp::avg) {
    for (int i = 0; i < count; ++i) values[i] /= size_;
  }
}

void ProcessGroup::all_reduce(int64_t* values, int count, ReduceOp op) const {
  KTO_CHECK(op != ReduceOp::avg, "integer all_reduce has no avg; reduce sum and divide");
  KTO_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, values, count, MPI_INT64_T, mpi_op(op), as_comm(mpi_comm())));
}

double ProcessGroup::all_reduce(double value, ReduceOp op) const {
  all_reduce(&value, 1, op);
  return value;
}

int64_t ProcessGroup::all_reduce(int64_t value, ReduceOp op) const {
  all_reduce(&value, 1, op);
  return value;
}

bool ProcessGroup::all_true(bool value) const {
  return all_reduce(static_cast<int64_t>(value ? 1 : 0), ReduceOp::min) == 1;
}

void ProcessGroup::broadcast(void* data, int64_t bytes, int root) const {
  KTO_CHECK(bytes >= 0 && bytes <= INT32_MAX, "broadcast of ", bytes,
            " bytes: use the Communicator for large data");
  KTO_MPI_CHECK(MPI_Bcast(data, static_cast<int>(bytes), MPI_BYTE, root, as_comm(mpi_comm())));
}

void ProcessGroup::broadcast(std::string& text, int root) const {
  int64_t length = static_cast<int64_t>(text.size());
  broadcast(&length, sizeof(length), root);
  text.resize(static_cast<size_t>(length));
  broadcast(text.data(), length, root);
}

std::vector<std::string> ProcessGroup::all_gather(const std::string& text) const {
  const int length = static_cast<int>(text.size());
  std::vector<int> lengths(static_cast<size_t>(size_)), offsets(static_cast<size_t>(size_));
  KTO_MPI_CHECK(MPI_Allgather(&length, 1, MPI_INT, lengths.data(), 1, MPI_INT, as_comm(mpi_comm())));
  int total = 0;
  for (int r = 0; r < size_; ++r) {
    offsets[static_cast<size_t>(r)] = total;
    total += lengths[static_cast<size_t>(r)];
  }
  std::string all(static_cast<size_t>(total), '\0');
  KTO_MPI_CHECK(MPI_Allgatherv(text.data(), length, MPI_CHAR, all.data(), lengths.data(), offsets.data(),
                               MPI_CHAR, as_comm(mpi_comm())));
  std::vector<std::string> out;
  for (int r = 0; r < size_; ++r) {
    out.push_back(all.substr(static_cast<size_t>(offsets[static_cast<size_t>(r)]),
                             static_cast<size_t>(lengths[static_cast<size_t>(r)])));
  }
  return out;
}

Runtime::Runtime(int* argc, char*** argv) {
  int initialized = 0;
  KTO_MPI_CHECK(MPI_Initialized(&initialized));
  if (!initialized) {
    int provided = 0;
    KTO_MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided));
    finalize_ = true;
  }
  KTO_MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
  world_ = ProcessGroup::from_world();
}

Runtime::~Runtime() {
  world_.reset();
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalize_ && !finalized) MPI_Finalize();
}

void abort_job(int code, const std::string& why) {
  log::error("abort", why);
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) {
    // Other ranks may wait in a collective that will never complete: take them down too.
    if (process_identity().world_size > 1) MPI_Abort(MPI_COMM_WORLD, code);
    MPI_Finalize();
  }
  // No atexit handlers: after a failure, library teardown (HDF5 closing a file whose write
  // failed) can crash and hide the exit status.
  std::fflush(stdout);
  std::fflush(stderr);
  std::_Exit(code);
}

namespace {
bool g_failed_on_every_rank = false;  // an exception left a SameOnEveryRank scope
}  // namespace

SameOnEveryRank::SameOnEveryRank() : uncaught_(std::uncaught_exceptions()) {}
SameOnEveryRank::~SameOnEveryRank() {
  if (std::uncaught_exceptions() > uncaught_) g_failed_on_every_rank = true;
}

int run_distributed_main(const char* program, int argc, char** argv,
                         const std::function<int(const ProcessGroup& world)>& body) {
  int code = 0;
  std::string why;
  // Declared outside the try: unwinding must not run MPI_Finalize (it could block on ranks
  // stuck in a collective); abort_job ends every rank instead.
  std::unique_ptr<Runtime> runtime;
  try {
    runtime = std::make_unique<Runtime>(&argc, &argv);
    return body(runtime->world());
  } catch (const cli::UsageError& e) {
    code = 2;
    why = e.what();
  } catch (const std::exception& e) {
    code = 1;
    why = e.what();
    // LibTorch errors append a C++ backtrace; the first part is the message users need.
    if (const size_t cut = why.find("\nException raised from"); cut != std::string::npos) why.resize(cut);
  }
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (g_failed_on_every_rank && initialized && !finalized) {
    // Every rank failed the same check: rank 0 says why once, then all end together.
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (rank == 0) log::error(program, why);
    MPI_Barrier(MPI_COMM_WORLD);
    MPI_Finalize();
    std::fflush(stdout);
    std::fflush(stderr);
    std::_Exit(code);
  }
  // The other ranks may be blocked in a collective: abort them all rather than hang.
  abort_job(code, std::string(program) + ": " + why);
}

}  // namespace kto::comm
