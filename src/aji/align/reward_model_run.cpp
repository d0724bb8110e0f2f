#include "aji/align/reward_model_run.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "aji/align/conversation.h"
#include "aji/align/preferences.h"
#include "aji/align/render.h"
#include "aji/base/dist.h"
#include "aji/base/atomic_file.h"
#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/base/rng.h"
#include "aji/base/threads.h"
#include "aji/tokenizer/chat_template.h"
#include "aji/tokenizer/tokenizer.h"
#include "aji/train/checkpoint.h"
#include "aji/train/memory.h"
#include "aji/train/scalar_head_io.h"
#include "aji/train/trainer_run.h"

namespace aji::align {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kHeadOptimizerFile = "head_optimizer.bin";
constexpr const char* kRmSubdir = "rm";

std::string abs_or_empty(const fs::path& p) { return p.empty() ? std::string() : fs::absolute(p).string(); }

json data_json(const std::vector<fs::path>& files) {
  json j = json::array();
  for (const fs::path& f : files) j.push_back(abs_or_empty(f));
  return j;
}

// Settings outside the declared options: none may change on resume.
const std::vector<train::ResumeSetting> kOtherSettings = {
    {"--model", "base_model"}, {"--data", "data"}, {"--skip-invalid", "skip_invalid"},
    {"--beta1", "beta1"},      {"--beta2", "beta2"}, {"--eps", "eps"},
};

json other_settings_json(const RmRunOptions& o) {
  return {{"base_model", abs_or_empty(o.model)}, {"data", data_json(o.data)}, {"skip_invalid", o.skip_invalid},
          {"beta1", o.train.beta1},             {"beta2", o.train.beta2},    {"eps", o.train.eps}};
}

json settings_json(const RmRunOptions& o) {
  json j = other_settings_json(o);
  j.update(options_to_json(o));
  return j;
}

json eval_json(const RmEval& e) {
  auto num = [](double x) { return std::isfinite(x) ? json(x) : json(nullptr); };
  return {{"accuracy", num(e.accuracy)},       {"loss", num(e.loss)},
          {"margin", num(e.margin)},           {"reward_min", num(e.reward_min)},
          {"reward_mean", num(e.reward_mean)}, {"reward_max", num(e.reward_max)},
          {"prompts", e.groups},               {"pairs", e.pairs}};
}

// Rendered preference groups -> RmGroups (prompt + completion ids, the pairs).
std::vector<RmGroup> to_rm_groups(const std::vector<RenderedPreference>& rendered) {
  std::vector<RmGroup> out;
  out.reserve(rendered.size());
  for (const RenderedPreference& r : rendered) {
    RmGroup g;
    for (const auto& c : r.completion_ids) {
      std::vector<int32_t> s(r.prompt_ids.begin(), r.prompt_ids.end());
      s.insert(s.end(), c.begin(), c.end());
      g.sequences.push_back(std::move(s));
    }
    for (const PreferencePair& p : r.pairs) g.pairs.push_back({p.better, p.worse});
    g.source_line = r.line;
    out.push_back(std::move(g));
  }
  return out;
}

}  // namespace

const std::vector<std::string>& rm_setting_flags() {
  static const std::vector<std::string> flags = train::resume_setting_flags<RmRunOptions>(kOtherSettings);
  return flags;
}

fs::path resolve_reward_model_dir(const fs::path& path) {
  std::error_code ec;
  if (fs::exists(path / kRewardModelFile, ec)) return path;
  if (fs::exists(path / kRmSubdir / kRewardModelFile, ec)) return path / kRmSubdir;
  if (fs::exists(path / "latest", ec) && is_reward_model_dir(train::resolve_model_dir(path)))
    throw Error(path.string() + " is a reward-model run without a finished reward model (no rm/)")
        .at(path.string())
        .fix("finish it with `aji rm train --out " + path.string() + " --resume`");
  throw Error(path.string() + " is not a reward model directory (no " + std::string(kRewardModelFile) + ")")
      .at(path.string())
      .fix("train one with `aji rm train --model SFT_DIR --data PREFS.jsonl --out RM_DIR` and pass RM_DIR");
}

RmRunResult run_rm_train(const RmRunOptions& in) {
  RmRunOptions o = in;
  RmRunResult result;
  const fs::path out = o.out_dir;
  train::TrainerRun::Options ro;
  train::RunDirRequest& rq = ro.dir;
  rq.dir = out;
  rq.resume = o.resume;
  rq.force = o.force;
  rq.quiet = o.quiet;
  rq.command = "aji rm train";
  rq.fresh_command = "aji rm train --model SFT_DIR --data PREFS.jsonl --out " + out.string();
  rq.state_key = "rm";
  rq.outputs = {"run.json", "metrics.jsonl", "loss.svg", "summary.json", kRmSubdir, train::kAjiTokenizerFile,
                "tokenizer.json"};
  rq.finished = kRmSubdir;
  validate_options(o);
  train::LrSchedule::parse_decay(o.train.decay);
  (void)train::resolve_precision(o.precision);  // an unknown --precision: refused before any work
  ro.plot_title = "aji rm: " + out.filename().string();
  ro.plot_labels.y_axis = "loss (nats/prompt)";
  ro.plot_labels.train = "train loss (batch mean)";
  ro.plot_labels.val = "held-out loss";
  ro.progress_lines = 30;
  ro.splits_data = true;  // each rank takes its share of every batch's prompts (train::rank_share)
  train::TrainerRun trun(ro);
  const std::optional<fs::path>& resume_ckpt = trun.checkpoint();
  RmProgress progress;
  if (resume_ckpt) {
    const json& s = trun.section();
    const std::string where = trun.state_file();
    json settings = s.at("settings");
    try {
      o.model = settings.at("base_model").get<std::string>();
      o.data.clear();
      for (const auto& f : settings.at("data")) o.data.emplace_back(f.get<std::string>());
      o.skip_invalid = settings.at("skip_invalid");
      o.train.beta1 = settings.at("beta1");
      o.train.beta2 = settings.at("beta2");
      o.train.eps = settings.at("eps");
      progress.scalars_from_json(s.at("progress"));
    } catch (const json::exception& e) {
      throw Error(std::string("the run's saved settings are not readable: ") + e.what())
          .at(where)
          .fix("resume from a checkpoint written by `aji rm train`, or start a new run");
    }
    const train::GivenFlags given = train::split_given_flags(in.given, kOtherSettings);
    train::check_resume_settings(kOtherSettings, given.other, other_settings_json(in), other_settings_json(o), out);
    train::report_resumed_options(apply_saved_options(o, settings, given.declared, where), out, o.quiet);
  }
  if (o.data.empty()) throw Error("no preference files given").fix("pass --data PREFS.jsonl (one or more)");

  // --- the model: a policy/SFT dir (load_model refuses a reward model dir), or the checkpoint ---
  fs::path model_dir;
  if (!resume_ckpt) {
    model_dir = train::resolve_model_dir(o.model);
    if (is_reward_model_dir(model_dir))
      throw Error(model_dir.string() + " is already a reward model; `aji rm train --model` takes the SFT model")
          .at(model_dir.string())
          .fix("pass the SFT model directory the reward model should start from");
  } else {
    model_dir = *resume_ckpt;
  }
  const model::ModelConfig cfg = train::load_model_config(model_dir);
  const int len = o.max_len > 0 ? std::min(o.max_len, cfg.max_seq_len) : cfg.max_seq_len;
  const std::shared_ptr<kernels::Backend> run_device = train::open_run_device(o.device);  // (null: the CPU)
  train::require_memory(
      train::training_memory(cfg, cfg.num_params(), int64_t(o.train.micro_rows) * len,
                             train::resolve_precision(o.precision, nullptr, run_device.get()) ==
                                 model::Precision::kBf16,
                             run_device != nullptr),
      "training a reward model on this model (" + std::to_string(cfg.num_params()) + " parameters) with forwards of " +
          std::to_string(o.train.micro_rows) + " x " + std::to_string(len) + " tokens",
      "lower --micro-rows or --max-len, or use a smaller model", run_device.get());
  RewardModel rm = resume_ckpt ? load_reward_model(*resume_ckpt) : RewardModel(train::load_model(model_dir));
  // Training steps in the run's precision; scoring (evaluations, the offset) stays fp32.
  train::apply_run_precision(o.precision, resume_ckpt ? trun.section().at("settings") : json(), in.given, o.quiet, "rm",
                             {&rm.trunk}, run_device.get());
  train::apply_run_device(run_device, o.precision, o.quiet, "rm", {&rm.trunk});
  const fs::path tok_path = train::require_tokenizer_file(model_dir);
  const tokenizer::Tokenizer tok = tokenizer::Tokenizer::load(tok_path);
  require_chat_tokens(tok);
  rm.pad_id = int32_t(*tok.special_id(tokenizer::kImEnd));

  // --- data ---
  const OnInvalid policy = o.skip_invalid ? OnInvalid::kSkip : OnInvalid::kError;
  InputReport report;
  std::vector<RmGroup> all;
  PreferenceRenderReport rrep_total;
  for (const fs::path& f : o.data) {
    const std::vector<PreferenceGroup> groups = read_preferences(f, policy, &report);
    PreferenceRenderReport rrep;
    const std::vector<RenderedPreference> rendered = render_preferences(tok, groups, len, f.string(), &report, &rrep);
    rrep_total.groups_in += rrep.groups_in;
    rrep_total.groups_kept += rrep.groups_kept;
    rrep_total.pairs_in += rrep.pairs_in;
    rrep_total.pairs_kept += rrep.pairs_kept;
    rrep_total.responses_dropped += rrep.responses_dropped;
    rrep_total.longest = std::max(rrep_total.longest, rrep.longest);
    for (RmGroup& g : to_rm_groups(rendered)) all.push_back(std::move(g));
  }
  if (all.empty())
    throw Error("no preference pairs left after reading " + std::to_string(o.data.size()) + " file(s): " +
                report.summary(5))
        .at(o.data.front().string())
        .fix("give pairs whose sides fit the context (--max-len) and differ");
  // The held-out prompts: a seeded shuffle, the first round(val_fraction * n) of it.
  std::vector<size_t> order(all.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  Rng rng(o.train.seed ^ 0x5eedULL);
  for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[size_t(rng.below(i))]);
  size_t n_val = size_t(std::llround(o.val_fraction * double(all.size())));
  if (n_val >= all.size()) n_val = all.size() - 1;
  std::vector<RmGroup> train_groups, val_groups;
  for (size_t i = 0; i < order.size(); ++i) (i < n_val ? val_groups : train_groups).push_back(std::move(all[order[i]]));
  for (const RmGroup& g : train_groups) result.pairs_train += rm_group_pairs(g);
  for (const RmGroup& g : val_groups) result.pairs_val += rm_group_pairs(g);
  result.n_train = int64_t(train_groups.size());
  result.n_val = int64_t(val_groups.size());
  if (!o.quiet) {
    std::fprintf(stderr, "data: %s\n", report.summary(10).c_str());
    std::fprintf(stderr, "data: %s\n", rrep_total.describe().c_str());
    std::fprintf(stderr, "prompts: %lld train (%lld pairs), %lld held out (%lld pairs)\n", (long long)result.n_train,
                 (long long)result.pairs_train, (long long)result.n_val, (long long)result.pairs_val);
  }

  RmOptions to = o.train;
  to.run_dir = out;
  if (resume_ckpt) {
    const train::AdamWConfig acfg{to.beta1, to.beta2, to.eps, to.weight_decay};
    progress.trunk_opt = train::AdamW(rm.trunk.num_params(), acfg);
    progress.trunk_opt.load(*resume_ckpt / "optimizer.bin");
    progress.head_opt = train::AdamW(rm.head.w.size(), acfg);
    progress.head_opt.load(*resume_ckpt / kHeadOptimizerFile);
    if (trun.section().contains("first_loss") && trun.section()["first_loss"].is_number())
      result.first_loss = trun.section()["first_loss"];
    if (!o.quiet) std::fprintf(stderr, "resuming %s at step %lld\n", resume_ckpt->c_str(), (long long)progress.step);
  }
  const int64_t steps = rm_total_steps(train_groups.size(), to);
  train::require_rank_split(to.batch, "--batch-size");
  train::require_same_settings(settings_json(o));  // every rank the same settings on the same data
  if (!resume_ckpt && trun.root()) {
    json info = {{"stage", "rm"},
                 {"base_model", abs_or_empty(o.model)},
                 {"data", data_json(o.data)},
                 {"options", options_to_json(o)},
                 {"steps", steps},
                 {"n_train", result.n_train},
                 {"n_val", result.n_val},
                 {"threads", num_threads()},
                 {"aji_version", AJI_VERSION}};
    write_file_atomic(out / "run.json", info.dump(2) + "\n");
  }
  trun.options().save_every = o.save_every;
  trun.options().keep = o.keep;
  trun.options().stop_after = o.stop_after;
  trun.start_metrics(resume_ckpt ? progress.step : -1);
  const std::vector<fs::path> tokenizer_files = trun.ship_tokenizer(model_dir);

  // Before step 1: the zero head ties every pair (accuracy 0.5, loss ln 2).
  if (!val_groups.empty() && progress.step == 0) {
    result.val_before = rm_evaluate(rm, val_groups);
    trun.log({{"step", 0},
              {"val_loss", result.val_before.loss},
              {"val_accuracy", result.val_before.accuracy},
              {"val_margin", result.val_before.margin}});
    if (!o.quiet)
      std::printf("step 0 | held-out pairwise accuracy %.4f | loss %.4f (zero head)\n", result.val_before.accuracy,
                  result.val_before.loss);
  }

  RmHooks hooks;
  hooks.on_step = [&](int64_t step, int64_t total, const RmStepStats& mine) {
    RmStepStats s = mine;  // this rank's part of the step: the means and counts over every rank
    if (dist::world().size() > 1) {
      const double pairs = double(s.pairs), seqs = double(s.sequences_forwarded);
      double rmin = -s.reward_min, rmax = s.reward_max, tokens = double(s.tokens);
      dist::world().allreduce_sum(&tokens, 1);
      s.tokens = int64_t(tokens);
      s.groups = int64_t(train::rank_means({&s.loss, &s.bt_loss}, double(s.groups)));
      s.pairs = int64_t(train::rank_means({&s.accuracy, &s.margin}, pairs));
      s.sequences_forwarded = int64_t(train::rank_means({&s.reward_mean}, seqs));
      // The extremes: each rank's in its own slot of a sum.
      const int n = dist::world().size(), r = dist::world().rank();
      std::vector<double> ext(2 * size_t(n), 0.0);
      ext[2 * size_t(r)] = seqs > 0 ? rmin : -INFINITY;
      ext[2 * size_t(r) + 1] = seqs > 0 ? rmax : -INFINITY;
      dist::world().allreduce_sum(ext.data(), ext.size());
      rmin = rmax = -INFINITY;
      for (int k = 0; k < n; ++k) {
        rmin = std::max(rmin, ext[2 * size_t(k)]);
        rmax = std::max(rmax, ext[2 * size_t(k) + 1]);
      }
      s.reward_min = -rmin;
      s.reward_max = rmax;
    }
    if (std::isnan(result.first_loss)) result.first_loss = s.loss;
    trun.log({{"step", step},         {"loss", s.loss},           {"bt_loss", s.bt_loss},
              {"accuracy", s.accuracy}, {"margin", s.margin},       {"reward_min", s.reward_min},
              {"reward_mean", s.reward_mean}, {"reward_max", s.reward_max}, {"lr", s.lr},
              {"grad_norm", s.grad_norm}, {"prompts", s.groups},    {"pairs", s.pairs},
              {"sequences", s.sequences_forwarded}, {"tokens", s.tokens}, {"step_s", s.seconds}});
    char mid[200];
    std::snprintf(mid, sizeof mid, "loss %.4f | pair acc %.2f | margin %.2f | lr %.2e | norm %.2f", s.loss,
                  s.accuracy, s.margin, s.lr, s.grad_norm);
    trun.print_step(step, total, s.seconds, mid);
  };
  hooks.on_eval = [&](int64_t step, const RmEval& e) {
    trun.log({{"step", step},
              {"val_loss", e.loss},
              {"val_accuracy", e.accuracy},
              {"val_margin", e.margin},
              {"val_reward_min", e.reward_min},
              {"val_reward_mean", e.reward_mean},
              {"val_reward_max", e.reward_max}});
    if (!o.quiet)
      std::printf("step %lld | held-out pairwise accuracy %.4f | loss %.4f | margin %.3f\n", (long long)step,
                  e.accuracy, e.loss, e.margin);
  };
  const RmProgress* at = &progress;
  trun.set_checkpoint([&](int64_t) {
    train::CheckpointParts c;
    c.model = &rm.trunk;
    c.optimizer = &at->trunk_opt;
    c.write.push_back({kScoreHeadFile, [&](const fs::path& f) { train::save_scalar_head(f, rm.head); }});
    c.write.push_back({kHeadOptimizerFile, [&](const fs::path& f) { at->head_opt.save(f); }});
    // rm.json marks a checkpoint as a reward model (a policy loader refuses it); its offset is
    // the one of a finished run only.
    c.write.push_back({kRewardModelFile, [&](const fs::path& f) {
                         const json j = {{"kind", "reward_model"}, {"offset", 0.0}, {"pad_id", rm.pad_id},
                                         {"head", kScoreHeadFile}, {"checkpoint", true}};
                         write_file_atomic(f, j.dump(2) + "\n");
                       }});
    c.section = {{"settings", settings_json(o)},
                 {"progress", at->to_json()},
                 {"first_loss", std::isnan(result.first_loss) ? json(nullptr) : json(result.first_loss)}};
    return c;
  });
  hooks.after_step = [&](const RmProgress& p) {
    at = &p;
    return trun.after_step(p.step, steps);
  };
  if (!o.quiet)
    std::printf("training a reward model: %lld steps of %d prompts, lr %.2e (%s), threads %d\n", (long long)steps,
                to.batch, to.lr, to.decay.c_str(), num_threads());
  std::fflush(stdout);
  const auto t0 = std::chrono::steady_clock::now();
  RmTrainResult r;
  {
    const train::TrainerRun::Steps stepping = trun.steps(progress.step, steps);
    r = rm_train(rm, train_groups, val_groups, to, hooks, &progress);
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  result.steps = r.steps_done;
  result.step_losses = r.step_losses;
  result.interrupted = r.stopped_early;
  result.val_after = r.last_val;
  trun.finish(result.steps, steps);
  if (result.interrupted || !trun.root()) return result;  // rank 0 writes the RM directory

  // --- the RM directory and the summary ---
  result.offset = rm.offset;
  json summary = {{"steps", result.steps},
                  {"first_loss", std::isnan(result.first_loss) ? json(nullptr) : json(result.first_loss)},
                  {"last_loss", result.step_losses.empty() ? json(nullptr) : json(result.step_losses.back())},
                  {"offset", rm.offset},
                  {"prompts_train", result.n_train},
                  {"pairs_train", result.pairs_train},
                  {"prompts_val", result.n_val},
                  {"pairs_val", result.pairs_val},
                  {"skipped_records", report.skipped_count()},
                  {"responses_dropped_too_long", rrep_total.responses_dropped},
                  {"val_before", eval_json(result.val_before)},
                  {"val_after", eval_json(result.val_after)},
                  {"base_model", abs_or_empty(o.model)},
                  {"data", data_json(o.data)},
                  {"seconds_this_session", seconds},
                  {"threads", num_threads()}};
  result.rm_dir = out / kRmSubdir;
  save_reward_model(result.rm_dir, rm, tokenizer_files, {{"training", summary}});
  write_file_atomic(out / "summary.json", summary.dump(2) + "\n");
  if (!o.quiet)
    std::printf("reward model: %s | offset %.4f (chosen replies now score 0 on average)\n", result.rm_dir.c_str(),
                rm.offset);
  return result;
}

int64_t run_rm_score(const RmScoreOptions& o, std::FILE* out) {
  const fs::path dir = resolve_reward_model_dir(o.model);
  RewardModel rm = load_reward_model(dir);
  const tokenizer::Tokenizer tok = tokenizer::Tokenizer::load(train::require_tokenizer_file(dir));
  require_chat_tokens(tok);
  InputReport report;
  const std::vector<Conversation> convs =
      read_conversations(o.input, o.skip_invalid ? OnInvalid::kSkip : OnInvalid::kError, &report);
  const int max_len = rm.trunk.config().max_seq_len;
  std::vector<std::vector<int32_t>> seqs;
  std::vector<int64_t> lines;
  for (const Conversation& c : convs) {
    const RenderedSequence r = render_conversation(tok, c);
    if (r.ids.size() > size_t(max_len)) {
      if (!o.skip_invalid)
        throw Error("the conversation has " + std::to_string(r.ids.size()) + " tokens; the reward model reads at most " +
                    std::to_string(max_len))
            .at(o.input.string(), c.line)
            .fix("shorten it, or pass --skip-invalid to skip (counted) what does not fit");
      report.reject(OnInvalid::kSkip, o.input.string(), c.line, "too_long",
                    std::to_string(r.ids.size()) + " tokens > " + std::to_string(max_len), "shorten it");
      continue;
    }
    seqs.emplace_back(r.ids.begin(), r.ids.end());
    lines.push_back(c.line);
  }
  const std::vector<float> s = rm.scores(seqs, o.batch);
  for (size_t i = 0; i < s.size(); ++i) {
    const json j = {{"line", lines[i]}, {"score", s[i]}};
    std::fprintf(out, "%s\n", j.dump().c_str());
  }
  std::fflush(out);
  if (report.skipped_count() > 0) std::fprintf(stderr, "rm score: %s\n", report.summary(10).c_str());
  return int64_t(s.size());
}

}  // namespace aji::align
