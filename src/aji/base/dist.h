// Data-parallel communication: the seam between the trainers and whatever moves gradients
// between processes. A trainer never calls MPI (or, later, NCCL) itself: it asks world()
// for the Communicator of this process and uses the few collective calls below.
//
//   SingleProcess   rank 0 of 1: every collective is a no-op (the mean of one rank is
//                   itself). What every run without a launcher gets.
//   MPI             (built with -DAJI_MPI=ON, OpenMPI from Debian) rank r of N when the
//                   process was started by mpirun / srun: MPI_Init_thread (FUNNELED: only
//                   the main thread calls MPI; OpenMP threads compute) on first use,
//                   MPI_Finalize at exit, MPI_Abort when one rank fails (abort_all).
//   NCCL (later)    the same interface over device buffers; train_step does not change.
//
// Launch detection (launch_from_env): OMPI_COMM_WORLD_SIZE (OpenMPI's mpirun),
// PMI_SIZE / PMI_RANK (MPICH, Slurm's PMI-2), SLURM_STEP_NUM_TASKS with SLURM_PROCID (a task of
// srun; SLURM_NTASKS alone is also set in the sbatch script itself, one process). A size
// of 1, or no such variable: SingleProcess, whatever the build. A launch of N > 1 in a
// build without MPI is an aji::Error naming the variable and the fix (never N copies of
// the same run, each writing the same files).
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace aji::dist {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // "single process", "MPI (Open MPI v4.1.4)".
  virtual std::string name() const = 0;

  // In place: data[i] = the mean of data[i] over the ranks (a sum, then one float
  // multiplication by 1/size; the same result on every rank).
  virtual void allreduce_mean(float* data, size_t n) = 0;
  // In place: data[i] = the sum over the ranks (losses, counts, flags of the log).
  virtual void allreduce_sum(double* data, size_t n) = 0;
  // data on every rank = data on `root`.
  virtual void broadcast(float* data, size_t n, int root = 0) = 0;
  virtual void broadcast(std::string& bytes, int root = 0) = 0;
  virtual void barrier() = 0;

  // Overlapping communication with computation (train_step's all-reduce during the
  // backward pass): start_allreduce_sum starts an in-place sum of data over the ranks and
  // returns at once; data must not be touched until wait_all() has returned, which
  // completes every started reduction. poll() lets the library move started reductions
  // along (MPI_Testall) between pieces of computation. The sums are those allreduce_mean
  // would compute before its 1/size scale.
  virtual void start_allreduce_sum(float* data, size_t n) = 0;
  virtual void poll() {}
  virtual void wait_all() {}
  // In place: the buffer is split into size() consecutive parts of counts[r] elements;
  // afterwards every rank holds every rank's part (ZeRO-1's parameter all-gather).
  virtual void allgather(float* data, const std::vector<size_t>& counts) = 0;
  // The parts as above, gathered on root only: every rank gives its part (counts[rank()]
  // elements); root receives the whole buffer in `all` (which may hold root's part in place
  // already); `all` is not used on the other ranks.
  virtual void gather(const float* part, float* all, const std::vector<size_t>& counts, int root = 0) = 0;

  // Ends every rank of the job (exit status `code`) after printing `message` on stderr.
  [[noreturn]] virtual void abort(int code, const std::string& message) = 0;

  // Wall seconds spent in allreduce_mean / broadcast(float) so far (communication time).
  double comm_seconds() const { return comm_seconds_; }

 protected:
  double comm_seconds_ = 0;
};

// Rank 0 of 1, no communication.
class SingleProcess final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string name() const override { return "single process"; }
  void allreduce_mean(float*, size_t) override {}
  void allreduce_sum(double*, size_t) override {}
  void broadcast(float*, size_t, int) override {}
  void broadcast(std::string&, int) override {}
  void barrier() override {}
  void start_allreduce_sum(float*, size_t) override {}
  void allgather(float*, const std::vector<size_t>&) override {}
  void gather(const float* part, float* all, const std::vector<size_t>& counts, int) override;
  [[noreturn]] void abort(int code, const std::string& message) override;
};

// What the environment says about the launch.
struct Launch {
  int size = 1;          // 1: no launcher (or a launch of one process)
  int rank = 0;
  std::string variable;  // the variable that told the size ("OMPI_COMM_WORLD_SIZE"), empty if none
  std::string launcher;  // "mpirun", "srun", "PMI"
};
// getenv is the environment to read (std::getenv in the program; a map in tests). A variable
// that is set but not a whole number >= 1 is an aji::Error naming it.
Launch launch_from_env(const std::function<const char*(const char*)>& getenv);

// True when this binary was built with MPI (-DAJI_MPI=ON).
bool built_with_mpi();

// The process's communicator, created on first use from launch_from_env(std::getenv):
// SingleProcess, or MPI (initialised now, finalised at exit). Throws aji::Error for a
// launch of N > 1 in a build without MPI.
Communicator& world();
// world().rank() == 0 (no MPI initialisation when no launcher is detected). The rank that
// writes: run directory, checkpoints, metrics, plots, progress, samples.
bool is_root();
// The size of the launch (1 without a launcher), without initialising anything.
int launch_size();
// This process's rank in the launch (0 without a launcher), without initialising anything.
int launch_rank();

// For the program's top level after an error: when this process is one rank of several,
// prints "[rank r/N] " + message and ends every rank (MPI_Abort), so the others do not wait
// forever in a collective call; otherwise returns (the caller prints and exits as usual).
void abort_all_if_distributed(const std::string& message, int code = 1);

}  // namespace aji::dist
