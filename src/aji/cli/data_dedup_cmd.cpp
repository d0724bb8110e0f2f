// `aji data dedup …`: exact + MinHash deduplication as four file-based steps (so each
// runs as its own job: mpirun ranks or a Slurm job array), plus `run` for one machine.
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/cli/command.h"
#include "aji/data/dedup.h"

namespace {

namespace fs = std::filesystem;
using aji::data::DedupStats;
using aji::data::MinhashConfig;

struct DedupArgs {
  std::vector<std::string> inputs;
  std::string out, sigs, buckets, clusters, shard = "0/1", band = "all", config, hash = "sha1";
  bool no_exact = false;
};

MinhashConfig make_config(const DedupArgs& a) {
  MinhashConfig c;
  if (!a.config.empty()) {
    nlohmann::json j = nlohmann::json::parse(aji::read_file(a.config), nullptr, false);
    if (j.is_discarded()) throw aji::Error("not valid JSON").at(a.config).fix("see `aji data dedup --help`");
    if (j.contains("minhash")) j = j["minhash"];
    try {
      c = j.get<MinhashConfig>();
    } catch (aji::Error& e) {
      throw std::move(e.at(a.config));
    }
  } else {
    nlohmann::json j = {{"hash", a.hash}};
    c = j.get<MinhashConfig>();
  }
  if (a.no_exact) c.exact_dedup = false;
  return c;
}

// The signatures step records its config; later steps read it so they cannot disagree.
MinhashConfig config_from_sigs(const fs::path& sigs) {
  if (fs::is_directory(sigs))
    for (const auto& e : fs::directory_iterator(sigs))
      if (e.path().extension() == ".done") {
        nlohmann::json j = nlohmann::json::parse(aji::read_file(e.path()), nullptr, false);
        if (!j.is_discarded() && j.contains("config")) return j["config"].get<MinhashConfig>();
      }
  throw aji::Error("no finished signature shard in " + sigs.string())
      .fix("run `aji data dedup signatures --out " + sigs.string() + "` for every shard first");
}

std::vector<fs::path> inputs_of(const DedupArgs& a) {
  if (a.inputs.empty()) throw aji::Error("no --input given").fix("pass JSONL files, folders or globs");
  return aji::expand_inputs(a.inputs);
}

void print_stats(const char* step, const DedupStats& s) {
  std::printf("%s: %s\n", step, s.to_json().dump().c_str());
}

const char* kLayout =
    "Deduplication as FineWeb: exact duplicates (same text after lower-casing, removing punctuation and\n"
    "collapsing whitespace) and MinHash near-duplicates (word 5-grams, 112 hashes in 14 bands of 8: pairs\n"
    "with Jaccard similarity 0.8 are caught 92% of the time, 0.5 only 5%). One document per cluster is kept\n"
    "(the first in input order) with metadata.minhash_cluster_size.\n\n"
    "Input: JSONL (.gz/.zst) with a \"text\" field. Across machines run the four steps in order; every\n"
    "step reads and writes plain files (atomically) and skips work already done, so a rerun resumes:\n"
    "  aji data dedup signatures --input DATA/ --out W/sigs --shard $I/$N     # N jobs\n"
    "  aji data dedup buckets    --sigs W/sigs --out W/buckets --band $B      # 14 jobs (+ --band exact)\n"
    "  aji data dedup clusters   --buckets W/buckets --out W/clusters         # 1 job\n"
    "  aji data dedup filter     --input DATA/ --clusters W/clusters --out W/out --shard $I/$N\n"
    "On one machine: aji data dedup run --input DATA/ --out W\n";

}  // namespace

static aji::cli::CommandRegistrar reg(21, [](CLI::App& app) {
  CLI::App* data = aji::cli::subcommand_group(app, "data", "Build pretraining data: extract, filter, dedup, inspect");
  CLI::App* dedup = data->add_subcommand("dedup", "Remove exact and near-duplicate documents (MinHash, as FineWeb)");
  dedup->footer(kLayout);
  dedup->require_subcommand(1);
  auto args = std::make_shared<DedupArgs>();

  auto* sig = dedup->add_subcommand("signatures", "Step 1 (per input shard): MinHash + exact-text signatures");
  sig->add_option("--input,-i", args->inputs, "JSONL files, folders or globs (the same list in every job)")->required();
  sig->add_option("--out,-o", args->out, "signature folder, e.g. W/sigs")->required();
  sig->add_option("--shard", args->shard, "I/N: this job handles input files k with k % N == I")
      ->capture_default_str();
  sig->add_option("--hash", args->hash, "shingle hash: sha1 (FineWeb) or xxhash (FineWeb-2, faster)")
      ->check(CLI::IsMember({"sha1", "xxhash"}))
      ->capture_default_str();
  sig->add_option("--config", args->config, "JSON with MinHash settings (n_grams, num_buckets, hashes_per_bucket, "
                                            "seed, hash, exact_dedup), or a pipeline config with a \"minhash\" key");
  sig->add_flag("--no-exact", args->no_exact, "skip exact-text dedup");
  sig->callback([args] {
    DedupStats s = aji::data::dedup_signatures(inputs_of(*args), aji::data::parse_shard(args->shard), args->out,
                                               make_config(*args));
    print_stats("signatures", s);
  });

  auto* bk = dedup->add_subcommand("buckets", "Step 2 (per band): find documents with an identical band");
  bk->add_option("--sigs", args->sigs, "signature folder from step 1")->required();
  bk->add_option("--out,-o", args->out, "bucket folder, e.g. W/buckets")->required();
  bk->add_option("--band", args->band, "band 0..13, 'exact', or 'all'")->capture_default_str();
  bk->callback([args] {
    MinhashConfig c = config_from_sigs(args->sigs);
    int band = -2;
    if (args->band == "exact") band = -1;
    else if (args->band != "all") {
      try {
        size_t used = 0;
        band = std::stoi(args->band, &used);
        if (used != args->band.size()) throw std::invalid_argument("");
      } catch (const std::logic_error&) {
        throw aji::Error("bad --band '" + args->band + "'").fix("use 0.." + std::to_string(c.num_buckets - 1) + ", exact or all");
      }
    }
    print_stats("buckets", aji::data::dedup_buckets(args->sigs, args->out, c, band));
  });

  auto* cl = dedup->add_subcommand("clusters", "Step 3 (one job): union-find clusters, choose what to remove");
  cl->add_option("--buckets", args->buckets, "bucket folder from step 2")->required();
  cl->add_option("--out,-o", args->out, "cluster folder, e.g. W/clusters")->required();
  cl->callback([args] { print_stats("clusters", aji::data::dedup_clusters(args->buckets, args->out)); });

  auto* fi = dedup->add_subcommand("filter", "Step 4 (per input shard): write the documents that survive");
  fi->add_option("--input,-i", args->inputs, "the same inputs as step 1")->required();
  fi->add_option("--clusters", args->clusters, "cluster folder from step 3")->required();
  fi->add_option("--out,-o", args->out, "output folder: SSSSS.jsonl.zst per shard")->required();
  fi->add_option("--shard", args->shard, "I/N, as in step 1")->capture_default_str();
  fi->callback([args] {
    print_stats("filter", aji::data::dedup_filter(inputs_of(*args), aji::data::parse_shard(args->shard),
                                                 args->clusters, args->out));
  });

  auto* run = dedup->add_subcommand("run", "All four steps on this machine (OUT/{sigs,buckets,clusters,out})");
  run->add_option("--input,-i", args->inputs, "JSONL files, folders or globs")->required();
  run->add_option("--out,-o", args->out, "work folder; deduplicated data goes to OUT/out/")->required();
  run->add_option("--hash", args->hash, "shingle hash: sha1 (FineWeb) or xxhash (FineWeb-2, faster)")
      ->check(CLI::IsMember({"sha1", "xxhash"}))
      ->capture_default_str();
  run->add_option("--config", args->config, "JSON with MinHash settings (see `signatures --help`)");
  run->add_flag("--no-exact", args->no_exact, "skip exact-text dedup");
  run->callback([args] {
    DedupStats s = aji::data::dedup_run(inputs_of(*args), args->out, make_config(*args));
    print_stats("dedup", s);
    std::fprintf(stderr, "kept %lld of %lld documents (%lld duplicates removed) -> %s/out/\n", (long long)s.kept,
                 (long long)s.documents, (long long)s.removed, args->out.c_str());
  });
});
