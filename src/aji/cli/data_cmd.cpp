// `aji data run`, `aji data config`, `aji data report`: the data pipeline from the
// command line. (`aji data dedup` and `aji data tokenize` live in their own files.)
#include <cstdio>
#include <cstdlib>

#include <nlohmann/json.hpp>

#include "aji/base/error.h"
#include "aji/base/threads.h"
#include "aji/cli/command.h"
#include "aji/data/pipeline.h"

namespace {

namespace data = aji::data;

// Shard from the environment when --shard is not given: Slurm job arrays and Open MPI
// ranks, so the same command line runs unchanged on every machine.
bool shard_from_env(int& index, int& count) {
  auto get = [](const char* name) -> const char* { return std::getenv(name); };
  if (get("SLURM_ARRAY_TASK_ID") && get("SLURM_ARRAY_TASK_COUNT")) {
    index = std::atoi(get("SLURM_ARRAY_TASK_ID")) - (get("SLURM_ARRAY_TASK_MIN") ? std::atoi(get("SLURM_ARRAY_TASK_MIN")) : 0);
    count = std::atoi(get("SLURM_ARRAY_TASK_COUNT"));
    return true;
  }
  if (get("OMPI_COMM_WORLD_RANK") && get("OMPI_COMM_WORLD_SIZE")) {
    index = std::atoi(get("OMPI_COMM_WORLD_RANK"));
    count = std::atoi(get("OMPI_COMM_WORLD_SIZE"));
    return true;
  }
  return false;
}

aji::cli::CommandRegistrar reg(20, [](CLI::App& app) {
  auto* group = aji::cli::subcommand_group(app, "data", "Data pipeline: raw web pages in, clean text out");

  // ---- run ----
  auto* run = group->add_subcommand(
      "run",
      "Run the pipeline: read (WARC/WET, JSONL, HTML, text) → URL filter → HTML extraction → language ID → "
      "quality filters → PII scrubbing → JSONL.zst per language in --out. Resumable: finished input files are "
      "skipped on rerun while the file (size, mtime, head/tail hash) and the config are unchanged, else redone. "
      "Without --config: FineWeb's defaults keeping English and Korean.");
  struct RunOpts {
    std::string config;
    std::vector<std::string> inputs;
    std::string out;
    std::string shard;
    bool env_shard = false;
    bool no_progress = false;
  };
  auto ro = std::make_shared<RunOpts>();
  run->add_option("--config", ro->config, "Pipeline config (JSON); `aji data config` prints the default");
  run->add_option("--input", ro->inputs, "Input files, directories or globs (repeatable)")->required();
  run->add_option("--out", ro->out, "Output directory")->required();
  run->add_option("--shard", ro->shard, "Process only shard I of N (I/N, 0-based): input files whose index ≡ I mod N");
  run->add_flag("--shard-from-env", ro->env_shard,
                "Take the shard from SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT or OMPI_COMM_WORLD_RANK/SIZE");
  run->add_flag("--no-progress", ro->no_progress, "Do not show a progress bar");
  run->callback([ro] {
    data::PipelineConfig config =
        ro->config.empty() ? data::PipelineConfig::fineweb_default() : data::load_pipeline_config(ro->config);
    data::RunOptions opt;
    opt.inputs = ro->inputs;
    opt.out_dir = ro->out;
    opt.progress = !ro->no_progress && !aji::cli::global_options().quiet;
    opt.notes = !aji::cli::global_options().quiet;
    if (!ro->shard.empty()) {
      data::parse_shard(ro->shard, opt.shard_index, opt.shard_count);
    } else if (ro->env_shard && !shard_from_env(opt.shard_index, opt.shard_count)) {
      throw aji::Error("--shard-from-env: no SLURM_ARRAY_TASK_ID/COUNT or OMPI_COMM_WORLD_RANK/SIZE in the environment")
          .fix("run under sbatch --array or mpirun, or pass --shard I/N");
    }
    if (opt.shard_count < 1 || opt.shard_index < 0 || opt.shard_index >= opt.shard_count)
      throw aji::Error("bad shard from the environment").fix("pass --shard I/N explicitly");
    data::RunReport report = data::run_pipeline(config, opt);
    if (!aji::cli::global_options().quiet) std::printf("%s", data::format_report(report).c_str());
  });

  // ---- config ----
  auto* config = group->add_subcommand("config", "Print the default pipeline config (FineWeb defaults, English and "
                                                 "Korean each with its own settings) as a starting point for --config");
  config->callback([] {
    nlohmann::json j = data::PipelineConfig::fineweb_default();
    std::printf("%s\n", j.dump(2).c_str());
  });

  // ---- report ----
  auto* report = group->add_subcommand("report", "Merge the stats of every finished input file in DIR (e.g. after a "
                                                 "sharded run on many machines) into DIR/report.json and report.txt");
  auto dir = std::make_shared<std::string>();
  auto samples = std::make_shared<size_t>(5);
  report->add_option("dir", *dir, "Output directory of `aji data run`")->required();
  report->add_option("--samples", *samples, "Dropped documents kept per reason")->capture_default_str();
  report->callback([dir, samples] {
    data::RunReport r = data::merge_reports(*dir, *samples);
    std::printf("%s", data::format_report(r).c_str());
  });
});

}  // namespace
