// NCCL for the CUDA backend's collectives (backend.h collective_id / join_collective /
// allreduce_mean: data parallelism with one GPU per rank, the gradients averaged on the GPUs).
// libnccl is opened at run time (dlopen libnccl.so.2, the first time a job of several ranks
// asks for it), so the plugin loads, and one-GPU runs work, on machines without NCCL; there
// the trainers average through the host (MPI) and say why. On the CUDA emulator (tests) the
// stand-in of tests/kernels/cuda_emu/nccl_emu.cpp is linked in instead.
// Built without NCCL's header (AJI_HAVE_NCCL unset: the CUDA toolkit does not ship NCCL), the
// plugin has no device collectives and says so; the trainers then average through the host.
#include <cuda_runtime.h>

#include <cstring>
#include <string>

#include "aji/base/error.h"
#include "aji/kernels/cuda/check.h"
#include "aji/kernels/cuda/launch.h"

#if !AJI_HAVE_NCCL

namespace aji::kernels::cuda {

struct NcclComm {};

std::string nccl_unique_id(std::string* why_not) {
  if (why_not) *why_not = "this CUDA plugin was built without NCCL's header (nccl.h; libnccl-dev)";
  return {};
}
NcclComm* nccl_join(Context&, const std::string&, int, int) {
  throw Error("this CUDA plugin was built without NCCL (nccl.h was not found at build time)")
      .fix("install NCCL's development files (libnccl-dev) and rebuild, or train one process per machine");
}
void nccl_allreduce_mean(Context&, NcclComm*, float*, size_t) {
  throw Error("allreduce_mean: this CUDA plugin was built without NCCL");
}
void nccl_leave(NcclComm*) noexcept {}

}  // namespace aji::kernels::cuda

#else

#include <nccl.h>
#ifndef AJI_CUDA_EMU
#include <dlfcn.h>
#endif

namespace aji::kernels::cuda {
namespace {

// The NCCL entry points aji calls, resolved once.
struct NcclApi {
  decltype(&ncclGetVersion) get_version = nullptr;
  decltype(&ncclGetUniqueId) get_unique_id = nullptr;
  decltype(&ncclCommInitRank) comm_init_rank = nullptr;
  decltype(&ncclAllReduce) all_reduce = nullptr;
  decltype(&ncclCommDestroy) comm_destroy = nullptr;
  decltype(&ncclGetErrorString) error_string = nullptr;
  std::string missing;  // why NCCL cannot be used ("" when it can)
};

const NcclApi& nccl() {
  static const NcclApi api = [] {
    NcclApi a;
#ifdef AJI_CUDA_EMU
    a.get_version = &ncclGetVersion;
    a.get_unique_id = &ncclGetUniqueId;
    a.comm_init_rank = &ncclCommInitRank;
    a.all_reduce = &ncclAllReduce;
    a.comm_destroy = &ncclCommDestroy;
    a.error_string = &ncclGetErrorString;
#else
    void* h = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!h) h = dlopen("libnccl.so", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
      const char* e = dlerror();
      a.missing = std::string("NCCL is not installed (libnccl.so.2: ") + (e ? e : "not found") + ")";
      return a;
    }
    auto sym = [&](const char* name) {
      void* p = dlsym(h, name);
      if (!p && a.missing.empty()) a.missing = std::string("libnccl.so.2 has no ") + name + " (too old a NCCL)";
      return p;
    };
    a.get_version = reinterpret_cast<decltype(a.get_version)>(sym("ncclGetVersion"));
    a.get_unique_id = reinterpret_cast<decltype(a.get_unique_id)>(sym("ncclGetUniqueId"));
    a.comm_init_rank = reinterpret_cast<decltype(a.comm_init_rank)>(sym("ncclCommInitRank"));
    a.all_reduce = reinterpret_cast<decltype(a.all_reduce)>(sym("ncclAllReduce"));
    a.comm_destroy = reinterpret_cast<decltype(a.comm_destroy)>(sym("ncclCommDestroy"));
    a.error_string = reinterpret_cast<decltype(a.error_string)>(sym("ncclGetErrorString"));
    if (!a.missing.empty()) return a;
#endif
    int version = 0;  // a first call: the library answers
    if (a.get_version(&version) != ncclSuccess) a.missing = "ncclGetVersion failed";
    return a;
  }();
  return api;
}

void check(ncclResult_t r, const char* what) {
  if (r == ncclSuccess) return;
  throw Error(std::string("NCCL error in ") + what + ": " + nccl().error_string(r) + " (code " + std::to_string(r) +
              ")")
      .fix("NCCL_DEBUG=INFO prints NCCL's own account; each rank needs a GPU of its own (--device cuda with mpirun "
           "picks cuda:<local rank>)");
}

}  // namespace

struct NcclComm {
  ncclComm_t comm = nullptr;
  int size = 1;
};

std::string nccl_unique_id(std::string* why_not) {
  const NcclApi& a = nccl();
  if (!a.missing.empty()) {
    if (why_not) *why_not = a.missing;
    return {};
  }
  ncclUniqueId id;
  check(a.get_unique_id(&id), "ncclGetUniqueId");
  return std::string(id.internal, sizeof id.internal);
}

NcclComm* nccl_join(Context& ctx, const std::string& id, int rank, int size) {
  const NcclApi& a = nccl();
  if (!a.missing.empty()) throw Error("this rank cannot join the job's NCCL communicator: " + a.missing);
  if (id.size() != sizeof(ncclUniqueId))
    throw Error("join_collective: an NCCL id is " + std::to_string(sizeof(ncclUniqueId)) + " bytes, not " +
                std::to_string(id.size()) + " (rank 0 and this rank run different builds?)");
  if (size < 1 || rank < 0 || rank >= size)
    throw Error("join_collective: rank " + std::to_string(rank) + " of " + std::to_string(size));
  ncclUniqueId uid;
  std::memcpy(uid.internal, id.data(), sizeof uid.internal);
  AJI_CUDA_CHECK(cudaSetDevice(ctx.device));
  auto* c = new NcclComm;
  c->size = size;
  const ncclResult_t r = a.comm_init_rank(&c->comm, size, uid, rank);
  if (r != ncclSuccess) {
    delete c;
    check(r, "ncclCommInitRank");
  }
  return c;
}

// The sum over the ranks (NCCL: every rank receives the same reduced bits), then the one float
// multiplication by 1/size of dist.h's allreduce_mean, on the stream after it.
void nccl_allreduce_mean(Context& ctx, NcclComm* c, float* data, size_t n) {
  if (!c) throw Error("allreduce_mean: this device joined no NCCL communicator");
  if (n == 0) return;
  check(nccl().all_reduce(data, data, n, ncclFloat32, ncclSum, c->comm, ctx.stream), "ncclAllReduce");
  ctx.launched("ncclAllReduce");
  if (c->size > 1) scale(ctx, data, 1.0f / static_cast<float>(c->size), n);
}

void nccl_leave(NcclComm* c) noexcept {
  if (!c) return;
  if (c->comm) nccl().comm_destroy(c->comm);
  delete c;
}

}  // namespace aji::kernels::cuda

#endif  // AJI_HAVE_NCCL
