// `aji eval memorize`: the memorization probe (src/aji/eval/memorize.h). Clusters the
// training documents with `aji data dedup`'s MinHash, greedy-decodes a suffix from a
// prefix of each cluster's document, and reports the extraction rate per duplication
// bucket: table on stdout, OUT/results.json, OUT/memorization.svg.
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "aji/base/atomic_file.h"
#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/cli/command.h"
#include "aji/cli/model_loader.h"
#include "aji/eval/memorize.h"
#include "aji/tokenizer/tokenizer.h"
#include "aji/train/checkpoint.h"

namespace {

namespace fs = std::filesystem;

struct MemorizeArgs {
  std::string model;
  std::string tokenizer;
  std::vector<std::string> data;
  std::string out = "out/memorize";
  std::string title;
  bool no_bos = false;
  bool force = false;
  aji::eval::MemorizeOptions o;
};

void run_memorize(const MemorizeArgs& a) {
  const std::vector<fs::path> inputs = aji::expand_inputs(a.data);
  for (const fs::path& p : inputs) {
    const std::string s = p.string();
    if (!(s.ends_with(".jsonl") || s.ends_with(".jsonl.gz") || s.ends_with(".jsonl.zst")))
      throw aji::Error("--data takes JSONL documents ({\"text\": ...} per line), as `aji data dedup` does")
          .at(s)
          .fix("convert the training text to JSONL, one document per line");
  }
  const fs::path out(a.out);
  const fs::path work = out / "dedup";
  if (fs::exists(work)) {
    if (!a.force)
      throw aji::Error("the output folder " + out.string() + " already holds a probe")
          .fix("pass --force to replace it, or another --out");
    fs::remove_all(work);
  }
  fs::create_directories(out);

  // The model, its tokenizer and the BOS rule of `aji generate` / `aji data tokenize`
  // (the config's BOS, else <|endoftext|>; --no-bos: none), from cli/model_loader.h.
  aji::cli::LoadedModel loaded = aji::cli::load_model_for_inference({a.model, a.tokenizer, a.no_bos});
  aji::model::Model& model = loaded.model;
  const aji::tokenizer::Tokenizer& tok = loaded.tok;
  aji::eval::MemorizeOptions o = a.o;
  o.bos = loaded.bos;

  const std::vector<aji::eval::ProbeDocument> docs = aji::eval::count_duplicates(inputs, work);
  const aji::eval::MemorizeResult r = aji::eval::memorize_probe(model, tok, docs, o);
  std::fputs(aji::eval::memorize_table(r).c_str(), stdout);
  nlohmann::json j = aji::eval::memorize_json(r);
  j["model"] = a.model;
  std::vector<std::string> data_names;
  for (const fs::path& p : inputs) data_names.push_back(p.string());
  j["data"] = data_names;
  aji::write_file_atomic(out / "results.json", j.dump(1) + "\n");
  const std::string title = a.title.empty() ? "memorization: extraction rate by duplication" : a.title;
  aji::write_file_atomic(out / "memorization.svg", aji::eval::memorize_svg(r, title));
  std::fprintf(stderr, "wrote %s and %s\n", (out / "results.json").c_str(), (out / "memorization.svg").c_str());
}

aji::cli::CommandRegistrar reg(70, [](CLI::App& app) {
  CLI::App* group = aji::cli::subcommand_group(app, "eval", "Evaluate a model (tasks, comparisons, memorization)");
  static MemorizeArgs a;
  CLI::App* cmd = group->add_subcommand(
      "memorize", "Memorization probe: greedy-decode a suffix from a prefix of each training document and count exact "
                  "reproductions, by how often the document (or a near-duplicate) occurs in the training data");
  cmd->add_option("--model", a.model, "Model: aji run dir, checkpoint dir or Hugging Face model dir")->required();
  cmd->add_option("--tokenizer", a.tokenizer, "Tokenizer file (default: the one in the model directory)");
  cmd->add_option("--data", a.data, "Training documents: JSONL files ({\"text\": ...}), folders or globs")
      ->required();
  cmd->add_option("--prefix-tokens", a.o.prefix_tokens, "Tokens of the document given as the prompt")
      ->capture_default_str();
  cmd->add_option("--suffix-tokens", a.o.suffix_tokens, "Tokens decoded greedily and compared with the document")
      ->capture_default_str();
  cmd->add_option("--offset", a.o.offset, "Token position of the prefix in each document")->capture_default_str();
  cmd->add_option("--max-per-bucket", a.o.max_per_bucket,
                  "Probe at most N documents per duplication bucket, drawn with --seed (0 = all)")
      ->capture_default_str();
  cmd->add_option("--seed", a.o.seed, "Seed of the per-bucket sample")->capture_default_str();
  cmd->add_option("--batch", a.o.max_batch, "Greedy decodes run together")->capture_default_str();
  cmd->add_option("--out", a.out, "Output folder: results.json, memorization.svg, dedup/ (the clustering)")
      ->capture_default_str();
  cmd->add_option("--title", a.title, "Title of the plot");
  cmd->add_flag("--no-bos", a.no_bos, "Do not put the model's BOS / <|endoftext|> before the prefix");
  cmd->add_flag("--force", a.force, "Replace an earlier probe in --out");
  cmd->callback([] { run_memorize(a); });
});

}  // namespace
