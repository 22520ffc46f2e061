// Collectives under mpirun -np 2 / -np 4 with inputs crafted so every result is exact
// (nccl-tests style): the process group's host collectives and the MPI tensor communicator.
#include <ATen/ATen.h>
#include <mpi.h>

#include <catch2/catch.hpp>

#include "kto/comm/communicator.h"
#include "kto/util/check_mpi.h"
#include "kto/util/process.h"
#include "mpi_world.h"

using kto::comm::ReduceOp;
using kto::test::world;

TEST_CASE("process group: identity and host collectives", "[mpi]") {
  const auto& w = world();
  const int R = w.size(), r = w.rank();
  CHECK(kto::process_identity().rank == r);
  CHECK(kto::process_identity().world_size == R);
  CHECK(w.local_rank() >= 0);
  CHECK(w.local_rank() < w.local_size());
  CHECK(w.all_reduce(static_cast<double>(r), ReduceOp::sum) == R * (R - 1) / 2.0);
  CHECK(w.all_reduce(static_cast<double>(r), ReduceOp::avg) == (R - 1) / 2.0);
  CHECK(w.all_reduce(static_cast<int64_t>(r), ReduceOp::max) == R - 1);
  CHECK(w.all_reduce(static_cast<int64_t>(r) + 5, ReduceOp::min) == 5);
  double pair[2] = {1.0, static_cast<double>(r)};
  w.all_reduce(pair, 2, ReduceOp::sum);
  CHECK(pair[0] == R);
  CHECK(w.all_true(true));
  CHECK_FALSE(w.all_true(r != R - 1));  // one rank says no: everyone hears no
  const auto names = w.all_gather("rank-" + std::to_string(r));
  REQUIRE(names.size() == static_cast<size_t>(R));
  for (int i = 0; i < R; ++i) CHECK(names[static_cast<size_t>(i)] == "rank-" + std::to_string(i));
  std::string text = r == R - 1 ? "from the last rank" : "";
  w.broadcast(text, R - 1);
  CHECK(text == "from the last rank");
  w.barrier();
}

TEST_CASE("MPI communicator: all_gather places rank r's shard at [r*n, (r+1)*n)", "[mpi]") {
  auto comm = kto::comm::make_communicator(world(), at::kCPU);
  const int R = comm->size(), r = comm->rank();
  CHECK(std::string(comm->backend()) == "mpi");
  for (at::ScalarType dtype : {at::kFloat, at::kDouble, at::kLong, at::kBFloat16, at::kInt}) {
    const int64_t n = 7;
    const at::Tensor shard = (at::arange(n, at::kDouble) + 16 * r).to(dtype);  // exact in bf16
    at::Tensor full = at::empty({R * n}, shard.options());
    comm->all_gather(shard, full)->wait();
    const at::Tensor expected =
        (at::arange(n, at::kDouble).repeat({R}) + 16 * at::arange(R, at::kDouble).repeat_interleave(n))
            .to(dtype);
    INFO(c10::toString(dtype));
    CHECK(at::equal(full, expected));
  }
}

TEST_CASE("MPI communicator: reduce_scatter sums or averages each rank's block", "[mpi]") {
  auto comm = kto::comm::make_communicator(world(), at::kCPU);
  const int R = comm->size(), r = comm->rank();
  const int64_t n = 5;
  for (at::ScalarType dtype : {at::kFloat, at::kDouble, at::kBFloat16}) {
    // Rank k contributes (k + 1) * j at position j; the sum is j * R(R+1)/2, exact.
    const at::Tensor full = (at::arange(R * n, at::kDouble) * (r + 1)).to(dtype);
    const at::Tensor block = at::arange(r * n, (r + 1) * n, at::kDouble);
    at::Tensor shard = at::empty({n}, full.options());
    comm->reduce_scatter(full, shard, ReduceOp::sum)->wait();
    INFO(c10::toString(dtype));
    CHECK(at::equal(shard, (block * (R * (R + 1) / 2)).to(dtype)));
    comm->reduce_scatter(full, shard, ReduceOp::avg)->wait();
    CHECK(at::equal(shard, (block * (R + 1) / 2.0).to(dtype)));
    comm->reduce_scatter(full, shard, ReduceOp::max)->wait();
    CHECK(at::equal(shard, (block * R).to(dtype)));
  }
}

TEST_CASE("MPI communicator: all_reduce, broadcast, and overlapping requests", "[mpi]") {
  auto comm = kto::comm::make_communicator(world(), at::kCPU);
  const int R = comm->size(), r = comm->rank();
  at::Tensor a = at::full({3}, static_cast<double>(r + 1), at::kFloat);
  at::Tensor b = at::full({4}, static_cast<int64_t>(r), at::kLong);
  at::Tensor c = at::full({2}, static_cast<double>(r), at::kBFloat16);
  auto wa = comm->all_reduce(a, ReduceOp::sum);
  auto wb = comm->all_reduce(b, ReduceOp::max);
  auto wc = comm->all_reduce(c, ReduceOp::min);
  wc->wait();  // completion order need not match issue order
  wb->wait();
  wa->wait();
  CHECK(at::equal(a, at::full({3}, R * (R + 1) / 2.0, at::kFloat)));
  CHECK(at::equal(b, at::full({4}, static_cast<int64_t>(R - 1), at::kLong)));
  CHECK(at::equal(c, at::zeros({2}, at::kBFloat16)));
  at::Tensor x = r == R - 1 ? at::arange(6, at::kBFloat16) : at::zeros({6}, at::kBFloat16);
  comm->broadcast(x, R - 1)->wait();
  CHECK(at::equal(x, at::arange(6, at::kBFloat16)));
}

TEST_CASE("MPI communicator rejects mismatched buffers; MPI errors become kto::Error", "[mpi]") {
  auto comm = kto::comm::make_communicator(world(), at::kCPU);
  at::Tensor shard = at::zeros({4});
  at::Tensor wrong = at::zeros({4 * comm->size() + 1});
  CHECK_THROWS_WITH(comm->all_gather(shard, wrong), Catch::Contains("all_gather"));
  at::Tensor strided = at::zeros({4, 4}).t();
  CHECK_THROWS_WITH(comm->all_reduce(strided, ReduceOp::sum), Catch::Contains("contiguous"));
  // A send to a rank that does not exist: MPI returns an error instead of aborting.
  int value = 0;
  CHECK_THROWS_WITH(KTO_MPI_CHECK(MPI_Send(&value, 1, MPI_INT, world().size() + 3, 0, MPI_COMM_WORLD)),
                    Catch::Contains("MPI call failed") && Catch::Contains("MPI_Send") &&
                        Catch::Contains("rank " + std::to_string(world().rank())));
}
