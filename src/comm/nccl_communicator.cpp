#include "nccl_communicator.h"

#include <ATen/ATen.h>
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <vector>

#include "kto/util/check_cuda.h"
#include "kto/util/check_nccl.h"
#include "kto/util/log.h"

#if KTO_TORCH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace kto::comm {
namespace {

using detail::str_cat;

ncclDataType_t nccl_type(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return ncclFloat32;
    case at::kDouble: return ncclFloat64;
    case at::kHalf: return ncclFloat16;
    case at::kBFloat16: return ncclBfloat16;
    case at::kLong: return ncclInt64;
    case at::kInt: return ncclInt32;
    case at::kChar: return ncclInt8;
    case at::kByte:
    case at::kBool: return ncclUint8;
    default: throw Error(str_cat("NcclCommunicator: unsupported dtype ", c10::toString(t)));
  }
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum: return ncclSum;
    case ReduceOp::avg: return ncclAvg;
    case ReduceOp::max: return ncclMax;
    case ReduceOp::min: return ncclMin;
  }
  return ncclSum;
}

// The stream compute runs on: LibTorch's current stream, or the legacy default stream when
// this build has no CUDA LibTorch (then no CUDA tensor can reach this code).
cudaStream_t compute_stream() {
#if KTO_TORCH_CUDA
  return at::cuda::getCurrentCUDAStream().stream();
#else
  return cudaStreamLegacy;
#endif
}

// Tells LibTorch's caching allocator that `t` is in use on `stream`, so its memory is not
// reused by compute before the collective finishes.
void record_on_stream(const at::Tensor& t, cudaStream_t stream) {
#if KTO_TORCH_CUDA
  c10::cuda::CUDACachingAllocator::recordStream(t.storage().data_ptr(),
                                                c10::cuda::getStreamFromExternal(stream, t.device().index()));
#else
  (void)t;
  (void)stream;
#endif
}

class NcclWork : public Work {
 public:
  NcclWork(cudaEvent_t done, std::vector<at::Tensor> tensors) : done_(done), tensors_(std::move(tensors)) {}
  ~NcclWork() override {
    if (done_ != nullptr) cudaEventDestroy(done_);
  }
  void wait() override {
    // Orders the compute stream after the collective; the host does not block.
    KTO_CUDA_CHECK(cudaStreamWaitEvent(compute_stream(), done_, 0));
    tensors_.clear();
  }
  bool test() override { return cudaEventQuery(done_) == cudaSuccess; }

 private:
  cudaEvent_t done_;
  std::vector<at::Tensor> tensors_;
};

class NcclCommunicator : public Communicator {
 public:
  NcclCommunicator(const ProcessGroup& group, int device)
      : rank_(group.rank()), size_(group.size()), device_(device) {
    KTO_CUDA_CHECK(cudaSetDevice(device_));
    ncclUniqueId id;
    if (group.is_root()) KTO_NCCL_CHECK(ncclGetUniqueId(&id));
    group.broadcast(&id, sizeof(id), 0);  // bootstrap over the MPI control plane
    KTO_NCCL_CHECK(ncclCommInitRank(&comm_, size_, id, rank_));
    KTO_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    int version = 0;
    KTO_NCCL_CHECK(ncclGetVersion(&version));
    log::debug("comm", "NCCL ", version, " communicator on cuda:", device_);
  }
  ~NcclCommunicator() override {
    if (comm_ != nullptr) ncclCommDestroy(comm_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char* backend() const override { return "nccl"; }

  WorkHandle all_gather(const at::Tensor& shard, at::Tensor& full) override {
    check(shard, "all_gather");
    check(full, "all_gather");
    KTO_CHECK(full.numel() == shard.numel() * size_ && full.scalar_type() == shard.scalar_type(),
              "all_gather: full has ", full.numel(), " elements for ", size_, " shards of ", shard.numel());
    begin();
    KTO_NCCL_CHECK(ncclAllGather(shard.data_ptr(), full.data_ptr(), static_cast<size_t>(shard.numel()),
                                 nccl_type(shard.scalar_type()), comm_, stream_));
    return end({shard, full});
  }

  WorkHandle reduce_scatter(const at::Tensor& full, at::Tensor& shard, ReduceOp op) override {
    check(shard, "reduce_scatter");
    check(full, "reduce_scatter");
    KTO_CHECK(full.numel() == shard.numel() * size_ && full.scalar_type() == shard.scalar_type(),
              "reduce_scatter: full has ", full.numel(), " elements for ", size_, " shards of ",
              shard.numel());
    begin();
    KTO_NCCL_CHECK(ncclReduceScatter(full.data_ptr(), shard.data_ptr(), static_cast<size_t>(shard.numel()),
                                     nccl_type(full.scalar_type()), nccl_op(op), comm_, stream_));
    return end({full, shard});
  }

  WorkHandle all_reduce(at::Tensor& tensor, ReduceOp op) override {
    check(tensor, "all_reduce");
    begin();
    KTO_NCCL_CHECK(ncclAllReduce(tensor.data_ptr(), tensor.data_ptr(), static_cast<size_t>(tensor.numel()),
                                 nccl_type(tensor.scalar_type()), nccl_op(op), comm_, stream_));
    return end({tensor});
  }

  WorkHandle broadcast(at::Tensor& tensor, int root) override {
    check(tensor, "broadcast");
    begin();
    KTO_NCCL_CHECK(ncclBroadcast(tensor.data_ptr(), tensor.data_ptr(), static_cast<size_t>(tensor.numel()),
                                 nccl_type(tensor.scalar_type()), root, comm_, stream_));
    return end({tensor});
  }

 private:
  void check(const at::Tensor& t, const char* what) const {
    KTO_CHECK(t.is_cuda() && t.device().index() == device_, "NcclCommunicator::", what, ": tensor on ",
              t.device(), ", expected cuda:", device_);
    KTO_CHECK(t.is_contiguous(), "NcclCommunicator::", what, ": tensor must be contiguous");
  }
  // The communication stream waits for everything compute has queued so far.
  void begin() {
    cudaEvent_t ready = nullptr;
    KTO_CUDA_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
    KTO_CUDA_CHECK(cudaEventRecord(ready, compute_stream()));
    KTO_CUDA_CHECK(cudaStreamWaitEvent(stream_, ready, 0));
    KTO_CUDA_CHECK(cudaEventDestroy(ready));
  }
  WorkHandle end(std::vector<at::Tensor> tensors) {
    for (const at::Tensor& t : tensors) record_on_stream(t, stream_);
    cudaEvent_t done = nullptr;
    KTO_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
    KTO_CUDA_CHECK(cudaEventRecord(done, stream_));
    return std::make_unique<NcclWork>(done, std::move(tensors));
  }

  int rank_, size_, device_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(const ProcessGroup& group, int device_index) {
  return std::make_unique<NcclCommunicator>(group, device_index);
}

}  // namespace kto::comm
