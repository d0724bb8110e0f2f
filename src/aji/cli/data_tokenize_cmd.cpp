// `aji data tokenize`: text -> token shards for pretraining (src/aji/train/tokenize_data.h).
#include <cstdio>
#include <memory>

#include "aji/base/progress.h"
#include "aji/base/threads.h"
#include "aji/cli/command.h"
#include "aji/data/pipeline.h"
#include "aji/train/tokenize_data.h"

namespace {

aji::cli::CommandRegistrar reg(21, [](CLI::App& app) {
  CLI::App* group = aji::cli::subcommand_group(app, "data", "Prepare training data: extract, filter, tokenize");
  auto o = std::make_shared<aji::train::TokenizeDataOptions>();
  auto out = std::make_shared<std::string>();
  auto tok = std::make_shared<std::string>();
  CLI::App* cmd = group->add_subcommand("tokenize", "Encode text into token shards for `aji pretrain`");
  cmd->footer(
      "Documents are separated by <|endoftext|>. Plain text: files with blank lines split into paragraphs,\n"
      "other files give one document per line; JSONL: one document per line (--jsonl-field).\n"
      "The --out folder of `aji data run` is read as such: its kept documents only (never dropped_samples/,\n"
      "reports or markers), as JSONL field \"text\".\n"
      "Example: aji data tokenize --tokenizer tok.json --input data/corpus/train --out data/shards");
  cmd->add_option("--tokenizer", *tok, "Tokenizer file (aji, .tiktoken or Hugging Face tokenizer.json)")->required();
  cmd->add_option("--input", o->inputs, "Text or JSONL files, directories or globs (.gz/.zst read transparently)")
      ->required();
  cmd->add_option("--jsonl-field", o->jsonl_field, "Inputs are JSONL; each line's string field is one document");
  cmd->add_flag("--skip-bad-lines", o->skip_bad_lines, "JSONL: count and skip malformed lines instead of stopping");
  cmd->add_option("--out", *out, "Output directory (shards, manifest.json, aji_tokenizer.json)")->required();
  cmd->add_option("--val-fraction", o->val_fraction, "Fraction of documents held out for validation")
      ->capture_default_str();
  cmd->add_option("--shard-tokens", o->shard_tokens, "Tokens per shard file (cut at document boundaries)")
      ->capture_default_str();
  cmd->add_option("--seed", o->seed, "Seed of the deterministic train/val split")->capture_default_str();
  cmd->add_flag("--force", o->force, "Replace the shards of an existing output directory");
  cmd->callback([o, out, tok] {
    o->out_dir = *out;
    o->tokenizer = *tok;
    o->progress = !aji::cli::global_options().quiet;
    aji::data::TextInputs in = aji::data::resolve_text_inputs(o->inputs, o->jsonl_field);
    o->files = in.files;
    o->jsonl_field = in.jsonl_field;
    auto r = aji::train::tokenize_data(*o);
    uint64_t train_tok = 0, val_tok = 0, val_docs = 0;
    for (const auto& s : r.manifest.train) train_tok += s.tokens;
    for (const auto& s : r.manifest.val) val_tok += s.tokens, val_docs += s.documents;
    std::printf("%llu documents, %s -> %llu tokens (%.2f bytes/token) in %.1fs with %d threads\n",
                (unsigned long long)r.documents, aji::Progress::format_count(double(r.bytes), "B").c_str(),
                (unsigned long long)r.tokens, r.tokens ? double(r.bytes) / double(r.tokens) : 0.0, r.seconds,
                aji::num_threads());
    std::printf("train: %llu tokens in %zu shards | val: %llu tokens, %llu documents in %zu shards\n",
                (unsigned long long)train_tok, r.manifest.train.size(), (unsigned long long)val_tok,
                (unsigned long long)val_docs, r.manifest.val.size());
    if (r.skipped_empty + r.skipped_invalid_utf8 + r.skipped_bad_lines > 0)
      std::printf("skipped: %llu empty, %llu not valid UTF-8, %llu malformed JSONL lines\n",
                  (unsigned long long)r.skipped_empty, (unsigned long long)r.skipped_invalid_utf8,
                  (unsigned long long)r.skipped_bad_lines);
    std::printf("wrote %s/manifest.json\n", out->c_str());
  });
});

}  // namespace
