#include "aji/base/dist.h"

#include <algorithm>
#include <chrono>
#include <thread>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <vector>

#include "aji/base/error.h"

#ifdef AJI_MPI
// The C API only: OpenMPI's mpi.h otherwise pulls in the deprecated C++ bindings (libmpi_cxx).
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

namespace aji::dist {

void SingleProcess::abort(int code, const std::string& message) {
  std::fflush(stdout);
  std::fprintf(stderr, "%s\n", message.c_str());
  std::exit(code);
}

void SingleProcess::gather(const float* part, float* all, const std::vector<size_t>& counts, int) {
  if (!counts.empty() && part != all) std::copy_n(part, counts[0], all);
}

namespace {

int parse_count(const char* value, const char* variable, int min) {
  const std::string s = value;
  char* end = nullptr;
  const long v = std::strtol(s.c_str(), &end, 10);
  if (s.empty() || end == s.c_str() || *end != '\0' || v < min || v > INT_MAX)
    throw Error(std::string("the launcher's ") + variable + "=\"" + s + "\" is not a whole number >= " +
                std::to_string(min))
        .fix("start aji with mpirun -np N or srun -n N, or unset " + std::string(variable));
  return static_cast<int>(v);
}

}  // namespace

Launch launch_from_env(const std::function<const char*(const char*)>& getenv) {
  struct Source {
    const char* size;
    const char* rank;
    const char* launcher;
  };
  // OpenMPI's mpirun first, then PMI(x) (MPICH, srun --mpi=pmi2/pmix), then plain srun.
  static const Source kSources[] = {{"OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "mpirun"},
                                    {"PMI_SIZE", "PMI_RANK", "PMI"},
                                    {"PMIX_SIZE", "PMIX_RANK", "PMIx"},
                                    {"SLURM_STEP_NUM_TASKS", "SLURM_PROCID", "srun"}};
  Launch l;
  for (const Source& s : kSources) {
    const char* size = getenv(s.size);
    if (!size) continue;
    // srun sets SLURM_STEP_NUM_TASKS and SLURM_PROCID for each task of its job step. Not
    // SLURM_NTASKS: the sbatch script itself has it (the allocation's size) and is one process.
    const char* rank = getenv(s.rank);
    if (std::string(s.launcher) == "srun" && !rank) continue;
    l.size = parse_count(size, s.size, 1);
    l.rank = rank ? parse_count(rank, s.rank, 0) : 0;
    if (l.rank >= l.size)
      throw Error(std::string("the launcher's ") + s.rank + "=" + std::to_string(l.rank) + " is not below " + s.size +
                  "=" + std::to_string(l.size))
          .fix("start aji with mpirun -np N or srun -n N");
    l.variable = s.size;
    l.launcher = s.launcher;
    return l;
  }
  return l;
}

bool built_with_mpi() {
#ifdef AJI_MPI
  return true;
#else
  return false;
#endif
}

#ifdef AJI_MPI
namespace {

void check(int rc, const char* call) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  throw Error(std::string(call) + " failed: " + std::string(text, static_cast<size_t>(len)))
      .fix("check that every rank runs the same command and that the network between the hosts is up");
}

// MPI counts are int: larger buffers go in pieces of at most 2^30 elements.
constexpr size_t kPiece = size_t(1) << 30;

// How long a collective may wait for the other ranks before this rank gives up
// (AJI_COMM_TIMEOUT seconds; 0 = forever). A rank that dies is noticed by mpirun, which ends
// the job; a network that drops between hosts is not (TCP waits), so every collective is
// started non-blocking and waited on here. Generous by default: while rank 0 evaluates or
// writes a checkpoint the others wait at their next collective.
double comm_timeout_seconds() {
  static const double t = [] {
    const char* v = std::getenv("AJI_COMM_TIMEOUT");
    if (!v || !*v) return 600.0;
    char* end = nullptr;
    const double x = std::strtod(v, &end);
    if (end == v || *end || !(x >= 0))
      throw Error(std::string("AJI_COMM_TIMEOUT=") + v + " is not a number of seconds")
          .fix("set AJI_COMM_TIMEOUT to seconds (e.g. 600), or 0 to wait forever");
    return x;
  }();
  return t;
}

class Mpi final : public Communicator {
 public:
  Mpi() {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      int provided = 0;
      check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
      std::atexit([] {
        int finalized = 0;
        MPI_Finalized(&finalized);
        if (!finalized) MPI_Finalize();
      });
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    char version[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    MPI_Get_library_version(version, &len);
    std::string v(version, static_cast<size_t>(len));
    if (const size_t cut = v.find_first_of(",\n"); cut != std::string::npos) v.resize(cut);
    name_ = "MPI (" + v + ")";
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return name_; }

  void allreduce_mean(float* data, size_t n) override {
    const auto t0 = std::chrono::steady_clock::now();
    for (size_t off = 0; off < n; off += kPiece) {
      const int count = static_cast<int>(std::min(kPiece, n - off));
      MPI_Request r;
      check(MPI_Iallreduce(MPI_IN_PLACE, data + off, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &r), "MPI_Iallreduce");
      wait(&r, 1, "MPI_Allreduce");
    }
    if (size_ > 1) {
      const float scale = 1.0f / static_cast<float>(size_);
      for (size_t i = 0; i < n; ++i) data[i] *= scale;
    }
    comm_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  void allreduce_sum(double* data, size_t n) override {
    for (size_t off = 0; off < n; off += kPiece) {
      const int count = static_cast<int>(std::min(kPiece, n - off));
      MPI_Request r;
      check(MPI_Iallreduce(MPI_IN_PLACE, data + off, count, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD, &r), "MPI_Iallreduce");
      wait(&r, 1, "MPI_Allreduce");
    }
  }
  void broadcast(float* data, size_t n, int root) override {
    const auto t0 = std::chrono::steady_clock::now();
    for (size_t off = 0; off < n; off += kPiece) {
      const int count = static_cast<int>(std::min(kPiece, n - off));
      MPI_Request r;
      check(MPI_Ibcast(data + off, count, MPI_FLOAT, root, MPI_COMM_WORLD, &r), "MPI_Ibcast");
      wait(&r, 1, "MPI_Bcast");
    }
    comm_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  void broadcast(std::string& bytes, int root) override {
    unsigned long long n = bytes.size();
    MPI_Request r;
    check(MPI_Ibcast(&n, 1, MPI_UNSIGNED_LONG_LONG, root, MPI_COMM_WORLD, &r), "MPI_Ibcast");
    wait(&r, 1, "MPI_Bcast");
    bytes.resize(static_cast<size_t>(n));
    for (size_t off = 0; off < bytes.size(); off += kPiece) {
      const int count = static_cast<int>(std::min<size_t>(kPiece, bytes.size() - off));
      check(MPI_Ibcast(bytes.data() + off, count, MPI_CHAR, root, MPI_COMM_WORLD, &r), "MPI_Ibcast");
      wait(&r, 1, "MPI_Bcast");
    }
  }
  void barrier() override {
    MPI_Request r;
    check(MPI_Ibarrier(MPI_COMM_WORLD, &r), "MPI_Ibarrier");
    wait(&r, 1, "MPI_Barrier");
  }
  void start_allreduce_sum(float* data, size_t n) override {
    const auto t0 = std::chrono::steady_clock::now();
    for (size_t off = 0; off < n; off += kPiece) {
      const int count = static_cast<int>(std::min(kPiece, n - off));
      pending_.emplace_back();
      check(MPI_Iallreduce(MPI_IN_PLACE, data + off, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &pending_.back()),
            "MPI_Iallreduce");
    }
    comm_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  void poll() override {
    if (pending_.empty()) return;
    const auto t0 = std::chrono::steady_clock::now();
    int done = 0;
    check(MPI_Testall(static_cast<int>(pending_.size()), pending_.data(), &done, MPI_STATUSES_IGNORE), "MPI_Testall");
    if (done) pending_.clear();
    comm_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  void wait_all() override {
    if (pending_.empty()) return;
    const auto t0 = std::chrono::steady_clock::now();
    wait(pending_.data(), pending_.size(), "MPI_Waitall");
    pending_.clear();
    comm_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  void allgather(float* data, const std::vector<size_t>& counts) override {
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<int> cnt, disp;
    parts(counts, cnt, disp);
    MPI_Request r;
    check(MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, data, cnt.data(), disp.data(), MPI_FLOAT, MPI_COMM_WORLD,
                          &r),
          "MPI_Iallgatherv");
    wait(&r, 1, "MPI_Allgatherv");
    comm_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  void gather(const float* part, float* all, const std::vector<size_t>& counts, int root) override {
    std::vector<int> cnt, disp;
    parts(counts, cnt, disp);
    const size_t r = static_cast<size_t>(rank_);
    if (rank_ == root && part != all + disp[r]) std::copy_n(part, cnt[r], all + disp[r]);
    MPI_Request q;
    check(MPI_Igatherv(rank_ == root ? MPI_IN_PLACE : part, cnt[r], MPI_FLOAT, all, cnt.data(), disp.data(), MPI_FLOAT,
                       root, MPI_COMM_WORLD, &q),
          "MPI_Igatherv");
    wait(&q, 1, "MPI_Gatherv");
  }
  [[noreturn]] void abort(int code, const std::string& message) override {
    std::fflush(stdout);
    std::fprintf(stderr, "%s\n", message.c_str());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);  // MPI_Abort does not return; this keeps [[noreturn]] honest
  }

 private:
  // Waits for n requests: MPI_Testall in a loop (the first 20 ms without a pause, then 1 ms
  // apart), until done or comm_timeout_seconds() without completion: then this rank ends the
  // job with a message that says why and what to do.
  void wait(MPI_Request* reqs, size_t n, const char* what) {
    if (n == 0) return;
    const double limit = comm_timeout_seconds();
    const auto t0 = std::chrono::steady_clock::now();
    for (;;) {
      int done = 0;
      check(MPI_Testall(static_cast<int>(n), reqs, &done, MPI_STATUSES_IGNORE), what);
      if (done) return;
      const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (limit > 0 && waited > limit) {
        char msg[640];
        std::snprintf(msg, sizeof msg,
                      "[rank %d/%d] error: no answer from the other ranks for %.0f s (%s): a rank stopped or the "
                      "network between the hosts dropped\n  fix: nothing after the last checkpoint is lost: start "
                      "the job again with --resume (AJI_COMM_TIMEOUT sets this wait in seconds, 0 = forever)",
                      rank_, size_, waited, what);
        abort(3, msg);
      }
      if (waited > 0.02) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  // MPI's int counts and displacements of the parts (each part and the whole < 2^31).
  void parts(const std::vector<size_t>& counts, std::vector<int>& cnt, std::vector<int>& disp) const {
    if (counts.size() != static_cast<size_t>(size_))
      throw Error("allgather: " + std::to_string(counts.size()) + " parts for " + std::to_string(size_) + " ranks");
    size_t at = 0;
    for (size_t c : counts) {
      if (at + c > size_t(INT_MAX))
        throw Error("allgather: a buffer of more than 2^31 floats").fix("shard a smaller model, or use more ranks");
      cnt.push_back(static_cast<int>(c));
      disp.push_back(static_cast<int>(at));
      at += c;
    }
  }
  int rank_ = 0, size_ = 1;
  std::string name_;
  std::vector<MPI_Request> pending_;
};

}  // namespace
#endif

namespace {

std::unique_ptr<Communicator>& world_ptr() {
  static std::unique_ptr<Communicator> w;
  return w;
}

const Launch& env_launch() {
  static const Launch l = launch_from_env([](const char* k) { return std::getenv(k); });
  return l;
}

}  // namespace

int launch_size() { return env_launch().size; }
int launch_rank() { return env_launch().rank; }

Communicator& world() {
  static std::once_flag once;
  std::call_once(once, [] {
    const Launch& l = env_launch();
    if (l.size <= 1) {
      world_ptr() = std::make_unique<SingleProcess>();
      return;
    }
#ifdef AJI_MPI
    world_ptr() = std::make_unique<Mpi>();
    if (world_ptr()->size() != l.size)
      throw Error("the launcher says " + std::to_string(l.size) + " processes (" + l.variable + ") but MPI has " +
                  std::to_string(world_ptr()->size()))
          .fix("start aji with the MPI that built it (mpirun from openmpi-bin), or srun --mpi=pmix");
#else
    throw Error("aji was started as one of " + std::to_string(l.size) + " processes (" + l.variable + "=" +
                std::to_string(l.size) + ", " + l.launcher + ") but this build has no MPI: every process would " +
                "train the same model alone and write the same files")
        .fix("install libopenmpi-dev and rebuild (cmake -DAJI_MPI=ON), or run one process without " + l.launcher);
#endif
  });
  if (!world_ptr()) throw Error("internal: dist::world() failed to start before");
  return *world_ptr();
}

bool is_root() { return launch_size() <= 1 || world().rank() == 0; }

void abort_all_if_distributed(const std::string& message, int code) {
  if (launch_size() <= 1 || !built_with_mpi()) return;
  if (!world_ptr()) {  // failed before the first collective call: join the job to end it
    try {
      (void)world();
    } catch (const std::exception&) {
      return;
    }
  }
  if (world_ptr()->size() <= 1) return;
  Communicator& w = *world_ptr();
  w.abort(code, "[rank " + std::to_string(w.rank()) + "/" + std::to_string(w.size()) + "] " + message +
                    "\n[rank " + std::to_string(w.rank()) + "/" + std::to_string(w.size()) +
                    "] stopping every rank of the job (MPI_Abort)");
}

}  // namespace aji::dist
