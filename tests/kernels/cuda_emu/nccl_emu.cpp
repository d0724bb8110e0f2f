// A stand-in NCCL for the CUDA emulator (README.md): the calls kernels/cuda/nccl.cpp makes,
// checked as the real library checks them (a unique id from ncclGetUniqueId, ranks within the
// communicator, a live communicator, float sums, a stream), for a communicator of ONE rank
// (the emulator runs one device; several ranks need several GPUs): the all-reduce of one rank
// is its own data. It is not NCCL: rings, protocols and the order of a real reduction are not
// emulated. AJI_CUDA_EMU_NCCL_FAIL=1 makes ncclCommInitRank fail (the error path).
#include <nccl.h>

#include <cstdlib>
#include <cstring>
#include <set>

namespace {
const char kIdTag[] = "aji-emu-nccl-id";
int g_next_id = 0;
std::set<const void*> g_comms;  // live communicators
}  // namespace

extern "C" {
ncclResult_t ncclGetVersion(int* version) {
  if (!version) return ncclInvalidArgument;
  *version = NCCL_VERSION_CODE;
  return ncclSuccess;
}
ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  if (!id) return ncclInvalidArgument;
  std::memset(id->internal, 0, sizeof id->internal);
  std::memcpy(id->internal, kIdTag, sizeof kIdTag);
  const int n = ++g_next_id;
  std::memcpy(id->internal + sizeof kIdTag, &n, sizeof n);
  return ncclSuccess;
}
ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank) {
  if (!comm || nranks < 1 || rank < 0 || rank >= nranks) return ncclInvalidArgument;
  if (std::memcmp(id.internal, kIdTag, sizeof kIdTag) != 0) return ncclInvalidArgument;  // not from ncclGetUniqueId
  if (nranks != 1) return ncclInvalidUsage;  // one emulated device
  if (const char* f = std::getenv("AJI_CUDA_EMU_NCCL_FAIL"); f && std::atoi(f) == 1) return ncclSystemError;
  auto* token = new int(rank);
  *comm = reinterpret_cast<ncclComm_t>(token);
  g_comms.insert(token);
  return ncclSuccess;
}
ncclResult_t ncclAllReduce(const void* send, void* recv, size_t count, ncclDataType_t type, ncclRedOp_t op,
                           ncclComm_t comm, cudaStream_t stream) {
  if (!g_comms.count(comm)) return ncclInvalidArgument;
  if (type != ncclFloat32 || op != ncclSum || !stream || !send || !recv) return ncclInvalidArgument;
  if (send != recv) std::memmove(recv, send, count * sizeof(float));  // one rank: the sum is its data
  return ncclSuccess;
}
ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  if (!g_comms.erase(comm)) return ncclInvalidArgument;
  delete reinterpret_cast<int*>(comm);
  return ncclSuccess;
}
const char* ncclGetErrorString(ncclResult_t r) {
  switch (r) {
    case ncclSuccess: return "no error";
    case ncclInvalidArgument: return "invalid argument (emulated NCCL)";
    case ncclInvalidUsage: return "invalid usage (emulated NCCL: one rank only)";
    case ncclSystemError: return "unhandled system error (emulated failure)";
    default: return "emulated NCCL error";
  }
}
}
