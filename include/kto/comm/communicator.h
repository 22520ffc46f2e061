// The tensor data plane (DESIGN §6): collectives on tensors, asynchronous, one implementation
// per device kind, chosen by one factory.
//
//   auto comm = make_communicator(world, device);
//   auto work = comm->all_gather(shard, full);   // returns at once
//   ... compute ...
//   work->wait();                                // full is ready (for the compute stream)
//
// MpiCommunicator serves CPU tensors (non-blocking MPI; fp32, fp64, integers; bf16/fp16 through
// fp32 staging so reductions accumulate in fp32). NcclCommunicator serves CUDA tensors on its
// own stream, ordered against the compute stream with events; wait() makes the compute stream
// wait, without blocking the host. Tensors must stay alive until wait() returns.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>

#include "kto/comm/process_group.h"

namespace kto::comm {

class Work {
 public:
  virtual ~Work() = default;
  // Completes the operation for the caller: the outputs may be used after this returns.
  virtual void wait() = 0;
  // Advances the operation without blocking; true once it has completed on this side (wait()
  // is still what makes the outputs usable). MPI moves a non-blocking collective only inside
  // MPI calls, so callers test their collectives in flight between compute operations.
  virtual bool test() { return false; }
};
using WorkHandle = std::unique_ptr<Work>;

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual const char* backend() const = 0;

  // full = concat over ranks of shard (rank r's shard at [r*n, (r+1)*n)); full.numel() must be
  // size() * shard.numel(); both contiguous, same dtype.
  [[nodiscard]] virtual WorkHandle all_gather(const at::Tensor& shard, at::Tensor& full) = 0;
  // shard = reduction over ranks of full[r*n, (r+1)*n) for this rank r.
  [[nodiscard]] virtual WorkHandle reduce_scatter(const at::Tensor& full, at::Tensor& shard, ReduceOp op) = 0;
  // In place.
  [[nodiscard]] virtual WorkHandle all_reduce(at::Tensor& tensor, ReduceOp op) = 0;
  [[nodiscard]] virtual WorkHandle broadcast(at::Tensor& tensor, int root) = 0;
};

// The communicator for tensors on `device`: MPI for CPU, NCCL for CUDA (when built with NCCL
// and a CUDA LibTorch). Collective: every rank of `group` must call it.
std::unique_ptr<Communicator> make_communicator(const ProcessGroup& group, at::Device device);

// Whether this build can communicate CUDA tensors (NCCL compiled in and a CUDA LibTorch).
bool nccl_available();

}  // namespace kto::comm
