// `aji sft convert | check | mix`: getting chat data into aji's conversation JSONL.
//   convert  public data-set shapes (korean_chatbot, oasst, self_instruct, gsm8k) → JSONL
//   check    validate a conversation file and print its statistics
//   mix      sample from several conversation files and split into train / val
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "aji/align/conversation.h"
#include "aji/align/converters.h"
#include "aji/align/packing.h"
#include "aji/align/render.h"
#include "aji/base/error.h"
#include "aji/cli/command.h"
#include "aji/tokenizer/tokenizer.h"

namespace {

using namespace aji::align;

struct ConvertArgs {
  std::string from, input, out, system_prompt, source_tag;
  bool skip_invalid = false, keep_calculator = false;
};

struct CheckArgs {
  std::string input, tokenizer;
  std::vector<std::string> specials;  // TEXT or TEXT=ID, as in `aji tokenizer encode`
  int seq_len = 512;
  bool skip_invalid = false, allow_trailing_user = false;
};

struct MixArgs {
  std::vector<std::string> inputs;  // FILE or FILE:N
  std::string train_out, val_out;
  double val_fraction = 0.05;  // with --val; without it 0 (nothing held out)
  bool val_fraction_given = false;
  uint64_t seed = 1234;
};

void print_report(const char* what, const InputReport& rep) {
  std::fprintf(stderr, "%s: %s\n", what, rep.summary(20).c_str());
}

void run_convert(const ConvertArgs& a) {
  auto format = parse_source_format(a.from);
  if (!format)
    throw aji::Error("unknown --from format '" + a.from + "'").fix("choose one of: " + source_format_list());
  ConvertOptions opt;
  opt.on_invalid = a.skip_invalid ? OnInvalid::kSkip : OnInvalid::kError;
  opt.keep_calculator_annotations = a.keep_calculator;
  opt.system_prompt = a.system_prompt;
  opt.source_tag = a.source_tag;
  InputReport rep;
  auto convs = convert_file(*format, a.input, opt, &rep);
  write_conversations(a.out, convs);
  print_report(a.input.c_str(), rep);
  std::fprintf(stderr, "wrote %s: %s\n", a.out.c_str(), conversation_stats(convs).describe().c_str());
}

void run_check(const CheckArgs& a) {
  InputReport rep;
  ConversationRules rules;
  rules.require_final_assistant = !a.allow_trailing_user;
  auto convs = read_conversations(a.input, a.skip_invalid ? OnInvalid::kSkip : OnInvalid::kError, &rep, rules);
  print_report(a.input.c_str(), rep);
  std::printf("%s\n", conversation_stats(convs).describe().c_str());
  if (a.tokenizer.empty()) return;
  // Rendered with the chat template: token counts and how the two batch layouts fill rows.
  auto tok = aji::tokenizer::Tokenizer::load(a.tokenizer);
  for (const std::string& spec : a.specials) {
    size_t eq = spec.rfind('=');
    bool has_id = eq != std::string::npos && eq > 0 && eq + 1 < spec.size() &&
                  spec.find_first_not_of("0123456789", eq + 1) == std::string::npos;
    if (has_id) tok.add_special(spec.substr(0, eq), static_cast<uint32_t>(std::stoul(spec.substr(eq + 1))));
    else tok.add_special(spec);
  }
  auto seqs = render_conversations(tok, convs, LossOn::kAssistant, !aji::cli::global_options().quiet);
  int64_t tokens = 0, supervised = 0;
  size_t longest = 0;
  for (const auto& s : seqs) {
    tokens += static_cast<int64_t>(s.ids.size());
    longest = std::max(longest, s.ids.size());
    for (uint8_t m : s.loss_mask) supervised += m;
  }
  std::printf("tokens: %lld (%.1f per conversation, longest %zu), supervised %lld (%.1f%%)\n", (long long)tokens,
              seqs.empty() ? 0.0 : double(tokens) / seqs.size(), longest, (long long)supervised,
              tokens ? 100.0 * supervised / tokens : 0.0);
  for (BatchLayout layout : {BatchLayout::kPad, BatchLayout::kPack}) {
    PackReport pr;
    plan_rows(seqs, {a.seq_len, layout}, &pr);
    std::printf("%s: %s\n", layout == BatchLayout::kPad ? "pad " : "pack", pr.describe().c_str());
  }
}

void run_mix(MixArgs a) {
  // Without --val nothing is held out (every conversation goes to --train); holding some
  // out needs somewhere to write them, checked before anything is read.
  if (a.val_out.empty()) {
    if (a.val_fraction_given && a.val_fraction > 0)
      throw aji::Error("--val-fraction " + std::to_string(a.val_fraction) +
                       " holds conversations out, but no --val file was given to write them to")
          .fix("pass --val FILE, or leave --val-fraction out to put every conversation in --train");
    a.val_fraction = 0;
  }
  std::vector<Conversation> all;
  uint64_t k = 0;
  for (const auto& spec : a.inputs) {
    std::string path = spec;
    int64_t n = -1;
    if (auto colon = spec.rfind(':'); colon != std::string::npos) {
      std::string count = spec.substr(colon + 1);
      if (!count.empty() && count.find_first_not_of("0123456789") == std::string::npos) {
        path = spec.substr(0, colon);
        n = std::stoll(count);
      }
    }
    InputReport rep;
    auto convs = read_conversations(path, OnInvalid::kError, &rep);
    if (n > static_cast<int64_t>(convs.size()))
      throw aji::Error("asked for " + std::to_string(n) + " conversations from " + path + " but it has only " +
                       std::to_string(convs.size()))
          .fix("lower the count after ':' or leave it out to take all");
    auto picked = sample_conversations(std::move(convs), n, a.seed + 1000003 * (++k));
    std::fprintf(stderr, "%s: took %zu of %lld\n", path.c_str(), picked.size(), (long long)rep.records_kept);
    for (auto& c : picked) all.push_back(std::move(c));
  }
  auto [train, val] = split_conversations(std::move(all), a.val_fraction, a.seed);
  write_conversations(a.train_out, train);
  std::fprintf(stderr, "wrote %s: %s\n", a.train_out.c_str(), conversation_stats(train).describe().c_str());
  if (!a.val_out.empty()) {
    write_conversations(a.val_out, val);
    std::fprintf(stderr, "wrote %s: %s\n", a.val_out.c_str(), conversation_stats(val).describe().c_str());
  }
}

aji::cli::CommandRegistrar reg(40, [](CLI::App& app) {
  auto* sft = aji::cli::subcommand_group(app, "sft", "Supervised fine-tuning: convert, check and mix chat sets; train an instruct model");

  auto ca = std::make_shared<ConvertArgs>();
  auto* convert = sft->add_subcommand(
      "convert",
      "Convert a public chat/instruction data set to aji's conversation JSONL\n"
      "({\"messages\":[{\"role\":\"user\",\"content\":...},{\"role\":\"assistant\",\"content\":...}]} per line).\n"
      "  korean_chatbot  songys/Chatbot_data ChatbotData.csv (Q,A,label)\n"
      "  oasst           OpenAssistant message trees (best-ranked branch: rank-0 reply at each level)\n"
      "  self_instruct   {instruction, instances:[{input, output}]} (one conversation per instance)\n"
      "  gsm8k           {question, answer} (calculator annotations <<..>> removed)");
  convert->add_option("--from", ca->from, "Input shape: " + source_format_list())->required();
  convert->add_option("--input", ca->input, "Input file (.gz/.zst ok)")->required()->check(CLI::ExistingFile);
  convert->add_option("--out", ca->out, "Output JSONL (written atomically)")->required();
  convert->add_flag("--skip-invalid", ca->skip_invalid,
                    "Skip records that cannot be converted and list them (default: stop at the first one)");
  convert->add_flag("--keep-calculator", ca->keep_calculator, "gsm8k: keep the <<a*b=c>> calculator annotations");
  convert->add_option("--system", ca->system_prompt, "Prepend this system message to every conversation");
  convert->add_option("--source-tag", ca->source_tag, "Prefix of each conversation's \"source\" (default: the format)");
  convert->callback([ca] { run_convert(*ca); });

  auto ka = std::make_shared<CheckArgs>();
  auto* check = sft->add_subcommand("check",
                                    "Validate a conversation JSONL file (roles, alternation, empty content, UTF-8) "
                                    "and print statistics");
  check->add_option("--input", ka->input, "Conversation JSONL")->required()->check(CLI::ExistingFile);
  check->add_flag("--skip-invalid", ka->skip_invalid, "Report every invalid line instead of stopping at the first");
  check->add_flag("--allow-trailing-user", ka->allow_trailing_user,
                  "Accept conversations that end with a user turn (prompt files)");
  check->add_option("--tokenizer", ka->tokenizer,
                    "Also render with this tokenizer's chat template and report tokens, truncation and row fill "
                    "for padded vs packed batches")
      ->check(CLI::ExistingFile);
  check->add_option("--special", ka->specials,
                    "Add a special token TEXT[=ID] to the tokenizer, e.g. --special '<|im_start|>=100264' "
                    "--special '<|im_end|>=100265' for cl100k_base (repeatable)");
  check->add_option("--seq-len", ka->seq_len, "Context length T for the row-fill report")->check(CLI::Range(2, 1 << 20));
  check->callback([ka] { run_check(*ka); });

  auto ma = std::make_shared<MixArgs>();
  auto* mix = sft->add_subcommand("mix",
                                  "Sample conversations from several JSONL files (FILE:N takes N at random, FILE takes "
                                  "all), shuffle, and split into train / validation — deterministic for a seed");
  mix->add_option("--in", ma->inputs, "Conversation JSONL, optionally FILE:N")->required();
  mix->add_option("--train", ma->train_out, "Output training JSONL")->required();
  mix->add_option("--val", ma->val_out, "Output validation JSONL");
  auto* vf = mix->add_option("--val-fraction", ma->val_fraction,
                              "Share of conversations held out for --val (default 0.05 with --val; without --val "
                              "every conversation goes to --train)")
                  ->check(CLI::Range(0.0, 0.99));
  mix->add_option("--seed", ma->seed, "Random seed");
  mix->callback([ma, vf] {
    ma->val_fraction_given = vf->count() > 0;
    run_mix(*ma);
  });
});

}  // namespace
