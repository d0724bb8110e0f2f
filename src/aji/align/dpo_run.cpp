#include "aji/align/dpo_run.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <optional>

#include <nlohmann/json.hpp>

#include "aji/align/preferences.h"
#include "aji/align/render.h"
#include "aji/base/dist.h"
#include "aji/base/atomic_file.h"
#include "aji/base/error.h"
#include "aji/base/threads.h"
#include "aji/tokenizer/chat_template.h"
#include "aji/tokenizer/tokenizer.h"
#include "aji/train/checkpoint.h"
#include "aji/train/loss_curve.h"
#include "aji/train/memory.h"
#include "aji/train/run_dir.h"
#include "aji/train/trainer_run.h"

namespace aji::align {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const std::vector<train::ResumeSetting> kOtherSettings = {
    {"--model", "model"}, {"--data", "data_files"}, {"--val", "val_file"}, {"--skip-invalid", "skip_invalid"}};

std::string abs_or_empty(const fs::path& p) { return p.empty() ? std::string() : fs::absolute(p).string(); }

json other_settings_json(const DpoRunOptions& o) {
  json files = json::array();
  for (const fs::path& f : o.data_files) files.push_back(abs_or_empty(f));
  return {{"model", abs_or_empty(o.model)},
          {"data_files", files},
          {"val_file", abs_or_empty(o.val_file)},
          {"skip_invalid", o.skip_invalid}};
}

// A reward-model (or value-model, classifier) dir has a head next to the trunk (score.safetensors,
// class_head.safetensors), an rm.json, or an "rm" section in its trainer state: it is not a policy.
void refuse_reward_model(const fs::path& model_dir, const fs::path& given) {
  bool rm = false;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(model_dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.find("head") != std::string::npos && name.find(".safetensors") != std::string::npos) rm = true;
    if (name == "score.safetensors" || name == "rm.json") rm = true;  // align/reward_model.h's files
  }
  if (fs::exists(model_dir / "trainer_state.json")) {
    try {
      std::ifstream in(model_dir / "trainer_state.json");
      const json st = json::parse(in);
      if (st.contains("rm") || st.contains("reward_model")) rm = true;
    } catch (const json::exception&) {
    }
  }
  if (rm)
    throw Error("--model " + given.string() + " is a reward model (or classifier: it has a score/class head), not a policy")
        .at(model_dir.string())
        .fix("give the SFT model the reward model was trained from as --model (DPO needs no reward model)");
}

std::vector<PreferenceIds> to_ids(const std::vector<RenderedPreference>& rendered) {
  std::vector<PreferenceIds> out;
  for (const PreferencePairIds& p : flatten_pairs(rendered)) {
    PreferenceIds ids;
    ids.prompt.assign(p.prompt_ids->begin(), p.prompt_ids->end());
    ids.chosen.assign(p.chosen_ids->begin(), p.chosen_ids->end());
    ids.rejected.assign(p.rejected_ids->begin(), p.rejected_ids->end());
    out.push_back(std::move(ids));
  }
  return out;
}

}  // namespace

DpoRunResult run_dpo(const DpoRunOptions& in) {
  DpoRunOptions o = in;
  DpoRunResult result;
  const fs::path run = o.out_dir;
  validate_options(o);
  train::LrSchedule::parse_decay(o.train.decay);
  (void)train::resolve_precision(o.precision);  // an unknown --precision: refused before any work

  train::TrainerRun::Options ro;
  ro.dir.dir = run;
  ro.dir.resume = o.resume;
  ro.dir.force = o.force;
  ro.dir.quiet = o.quiet;
  ro.dir.command = "aji dpo";
  ro.dir.fresh_command = "aji dpo --model SFT_DIR --data PREFS.jsonl --out " + run.string();
  ro.dir.state_key = "dpo";
  ro.dir.outputs = {"run.json", "metrics.jsonl", "loss.svg", "summary.json"};
  ro.dir.finished = "summary.json";
  ro.plot_title = "aji dpo: " + run.filename().string();
  ro.plot_labels.train = "train loss (DPO + NLL)";
  ro.plot_labels.val = "held-out loss";
  ro.plot_labels.accuracy_name = "held-out implicit-reward accuracy";
  ro.splits_data = true;  // each rank takes its share of every batch's pairs (train::rank_share)
  train::TrainerRun trun(ro);
  const std::optional<fs::path> resume_ckpt = trun.checkpoint();
  if (resume_ckpt) {
    const json& s = trun.section();
    const std::string where = trun.state_file();
    try {
      o.model = s.at("model").get<std::string>();
      o.data_files.clear();
      for (const auto& f : s.at("data_files")) o.data_files.push_back(f.get<std::string>());
      o.val_file = s.value("val_file", std::string());
      o.skip_invalid = s.at("skip_invalid");
    } catch (const json::exception& e) {
      throw Error(std::string("the run's saved settings are not readable: ") + e.what())
          .at(where)
          .fix("resume from a checkpoint written by `aji dpo`, or start a new run");
    }
    const train::GivenFlags given = train::split_given_flags(in.given, kOtherSettings);
    train::check_resume_settings(kOtherSettings, given.other, other_settings_json(in), other_settings_json(o), run);
    const SavedOptionsReport rep = apply_saved_options(o, s.value("options", json::object()), given.declared, where);
    train::report_resumed_options(rep, run, o.quiet);
    if (s.contains("first_loss") && s["first_loss"].is_number()) result.first_loss = s["first_loss"];
    if (s.contains("first_val_accuracy") && s["first_val_accuracy"].is_number())
      result.first_val_accuracy = s["first_val_accuracy"];
  }

  // --- policy, reference, tokenizer ------------------------------------------------------
  const fs::path ref_dir = train::resolve_model_dir(o.model);
  refuse_reward_model(ref_dir, o.model);
  const model::ModelConfig cfg = train::load_model_config(ref_dir);
  const std::shared_ptr<kernels::Backend> run_device = train::open_run_device(o.device);  // (null: the CPU)
  {
    const int64_t pairs_at_once = o.train.micro_batch > 0 ? std::min(o.train.micro_batch, o.train.batch) : o.train.batch;
    const bool bf16 = train::resolve_precision(o.precision, nullptr, run_device.get()) == model::Precision::kBf16;
    train::MemoryEstimate need = train::training_memory(cfg, cfg.num_params(), 2 * pairs_at_once * cfg.max_seq_len, bf16,
                                                        run_device != nullptr);
    if (bf16) need.extra += double(cfg.num_params()) * 2;  // the reference's bf16 copy
    need.extra += double(cfg.num_params()) * 4;  // the frozen reference: weights only
    train::require_memory(need,
                             "DPO on this model (" + std::to_string(cfg.num_params()) + " parameters, policy + reference)",
                             "lower --batch-size or use --micro-batch", run_device.get());
  }
  fs::path policy_dir;
  model::Model policy = train::load_model(resume_ckpt ? *resume_ckpt : o.model, &policy_dir);
  model::Model reference = train::load_model(ref_dir);
  // The policy and the frozen reference in the same precision: their log-ratios start at 0.
  train::apply_run_precision(o.precision, resume_ckpt ? trun.section().value("options", json::object()) : json(),
                             in.given, o.quiet, "dpo", {&policy, &reference}, run_device.get());
  train::apply_run_device(run_device, o.precision, o.quiet, "dpo", {&policy, &reference});
  const fs::path tok_path = train::require_tokenizer_file(ref_dir);
  const tokenizer::Tokenizer tok = tokenizer::Tokenizer::load(tok_path);
  require_chat_tokens(tok);
  trun.ship_tokenizer(ref_dir);  // travels with every checkpoint
  const int32_t im_end = (int32_t)*tok.special_id(tokenizer::kImEnd);
  o.train.pad_id = im_end;

  // --- data --------------------------------------------------------------------------------
  const OnInvalid policy_on_invalid = o.skip_invalid ? OnInvalid::kSkip : OnInvalid::kError;
  InputReport report;
  PreferenceRenderReport rrep;
  const int64_t max_tokens = int64_t(cfg.max_seq_len) + 1;  // inputs are the first n-1 tokens
  std::vector<RenderedPreference> train_r, val_r;
  for (const fs::path& f : o.data_files) {
    std::vector<PreferenceGroup> groups = read_preferences(f, policy_on_invalid, &report);
    std::vector<RenderedPreference> r = render_preferences(tok, groups, max_tokens, f.string(), &report, &rrep);
    train_r.insert(train_r.end(), std::make_move_iterator(r.begin()), std::make_move_iterator(r.end()));
  }
  if (!o.val_file.empty()) {
    std::vector<PreferenceGroup> groups = read_preferences(o.val_file, policy_on_invalid, &report);
    val_r = render_preferences(tok, groups, max_tokens, o.val_file.string(), &report, &rrep);
  } else if (o.val_fraction > 0 && train_r.size() >= 2) {
    // A seeded split by record (a ranking's pairs stay on one side).
    const std::vector<int64_t> order = dpo_epoch_order((int64_t)train_r.size(), o.train.seed ^ 0x7A1DA7E5ULL, 0);
    const size_t n_val = std::max<size_t>(1, (size_t)std::llround(o.val_fraction * double(train_r.size())));
    std::vector<char> is_val(train_r.size(), 0);
    for (size_t i = 0; i < n_val; ++i) is_val[(size_t)order[i]] = 1;
    std::vector<RenderedPreference> keep;
    for (size_t i = 0; i < train_r.size(); ++i) (is_val[i] ? val_r : keep).push_back(std::move(train_r[i]));
    train_r = std::move(keep);
  }
  const std::vector<PreferenceIds> train_pairs = to_ids(train_r), val_pairs = to_ids(val_r);
  if (train_pairs.empty())
    throw Error("no training pairs (" + report.summary(3) + ")")
        .at(o.data_files.empty() ? std::string() : o.data_files.front().string())
        .fix("check the files with their first lines: {\"prompt\":[...],\"chosen\":[...],\"rejected\":[...]}");
  check_preference_ids(train_pairs, policy.config());
  check_preference_ids(val_pairs, policy.config());
  result.train_pairs = (int64_t)train_pairs.size();
  result.val_pairs = (int64_t)val_pairs.size();
  std::vector<std::vector<int32_t>> kl_prompts;
  for (const RenderedPreference& r : val_r.empty() ? train_r : val_r) {
    if ((int)kl_prompts.size() >= o.kl_prompts) break;
    kl_prompts.emplace_back(r.prompt_ids.begin(), r.prompt_ids.end());
  }

  // --- reference log-probs (once), optimizer, state -----------------------------------------
  if (!o.quiet) {
    std::printf("dpo: %s | %zu train / %zu val pairs (%s; %s)\n", ref_dir.c_str(), train_pairs.size(),
                val_pairs.size(), report.summary(3).c_str(), rrep.describe().c_str());
    std::printf("dpo: reference log-probs of %zu pairs (one forward pass)...\n", train_pairs.size() + val_pairs.size());
    std::fflush(stdout);
  }
  const auto t_ref = std::chrono::steady_clock::now();
  const int ref_batch = o.train.micro_batch > 0 ? o.train.micro_batch : o.train.batch;
  const ReferenceLogps ref = dpo_reference_logps(reference, train_pairs, ref_batch, o.train.pad_id);
  const ReferenceLogps ref_val = dpo_reference_logps(reference, val_pairs, ref_batch, o.train.pad_id);
  const double ref_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_ref).count();
  train::AdamW optimizer(policy.num_params(), {o.train.beta1, o.train.beta2, o.train.eps, o.train.weight_decay});
  DpoState st;
  if (resume_ckpt) {
    optimizer.load(*resume_ckpt / "optimizer.bin");
    st = DpoState::from_json(trun.section().at("state"));
  }
  const int64_t steps = dpo_total_steps((int64_t)train_pairs.size(), o.train);
  train::require_rank_split(o.train.batch, "--batch-size");
  {  // every rank the same settings on the same data (a rank that differs: a clear error)
    json same = options_to_json(o);
    same.update(other_settings_json(o));
    train::require_same_settings(same);
  }
  if (!resume_ckpt && trun.root()) {
    json info = {{"stage", "dpo"}, {"options", options_to_json(o)}, {"steps", steps}, {"aji_version", AJI_VERSION}};
    info.update(other_settings_json(o));
    write_file_atomic(run / "run.json", info.dump(2) + "\n");
  }
  if (!o.quiet) {
    std::printf("dpo: %lld steps of %d pairs, beta %g, nll weight %g, lr %.2e (%s), threads %d; reference "
                "log-probs precomputed in %.1f s\n",
                (long long)steps, o.train.batch, o.train.beta, o.train.nll_weight, o.train.lr, o.train.decay.c_str(),
                num_threads(), ref_seconds);
    std::fflush(stdout);
  }

  // --- metrics, evaluation, checkpoints ---------------------------------------------------
  trun.options().save_every = o.save_every;
  trun.options().keep = o.keep;
  trun.options().stop_after = o.stop_after;
  o.train.run_dir = run;
  trun.start_metrics(resume_ckpt ? st.step : -1);
  auto evaluate = [&](int64_t step) {
    json j = {{"step", step}};
    if (!val_pairs.empty()) {
      const DpoEval e = dpo_evaluate(policy, val_pairs, ref_val, o.train);
      j.update({{"val_loss", e.loss}, {"val_accuracy", e.accuracy}, {"val_margin", e.margin},
                {"val_chosen_logratio", e.chosen_logratio}, {"val_rejected_logratio", e.rejected_logratio}});
      if (std::isnan(result.first_val_accuracy)) result.first_val_accuracy = e.accuracy;
      result.last_val_accuracy = e.accuracy;
      result.last_val_margin = e.margin;
    }
    if (!kl_prompts.empty()) {
      infer::RolloutOptions ro;
      ro.group_size = 2;
      ro.max_new_tokens = o.max_new_tokens;
      ro.temperature = 1.0f;
      ro.stop_tokens = {im_end};
      ro.seed = o.train.seed * 1000003ULL + (uint64_t)step;  // (run seed, step)
      const DpoSampleEval s = dpo_sample_eval(policy, reference, kl_prompts, ro);
      j.update({{"kl", s.kl}, {"sample_length", s.mean_length}, {"sample_stop_rate", s.stop_rate}});
      result.last_kl = s.kl;
    }
    trun.log(j);
    if (!o.quiet) {
      std::printf("step %lld | held-out loss %.4f accuracy %.3f margin %.3f | KL %.3f | reply length %.1f\n",
                  (long long)step, j.value("val_loss", NAN), j.value("val_accuracy", NAN), j.value("val_margin", NAN),
                  j.value("kl", NAN), j.value("sample_length", NAN));
      std::fflush(stdout);
    }
    trun.write_plot();
  };
  trun.set_checkpoint([&](int64_t) {
    json d = other_settings_json(o);
    d.update({{"options", options_to_json(o)},
              {"state", st.to_json()},
              {"first_loss", std::isnan(result.first_loss) ? json(nullptr) : json(result.first_loss)},
              {"first_val_accuracy",
               std::isnan(result.first_val_accuracy) ? json(nullptr) : json(result.first_val_accuracy)}});
    train::CheckpointParts p;
    p.model = &policy;
    p.optimizer = &optimizer;
    p.section = d;
    return p;
  });

  if (st.step == 0) evaluate(0);
  const auto t0 = std::chrono::steady_clock::now();
  DpoHooks hooks;
  hooks.on_step = [&](const DpoStepStats& mine) {
    DpoStepStats i = mine;  // this rank's pairs of the step: the means and counts over every rank
    if (dist::world().size() > 1) {
      double tokens = double(i.tokens);
      dist::world().allreduce_sum(&tokens, 1);
      i.tokens = int64_t(tokens);
      i.pairs = int(train::rank_means({&i.loss, &i.dpo_loss, &i.nll_loss, &i.accuracy, &i.margin, &i.chosen_logratio,
                                       &i.rejected_logratio},
                                      double(i.pairs)));
    }
    if (std::isnan(result.first_loss)) result.first_loss = i.loss;
    result.last_loss = i.loss;
    trun.log({{"step", i.step}, {"loss", i.loss}, {"dpo_loss", i.dpo_loss}, {"nll_loss", i.nll_loss},
              {"accuracy", i.accuracy}, {"margin", i.margin}, {"chosen_logratio", i.chosen_logratio},
              {"rejected_logratio", i.rejected_logratio}, {"grad_norm", i.grad_norm}, {"lr", i.lr}, {"pairs", i.pairs},
              {"tokens", i.tokens}, {"step_s", i.seconds}});
    char mid[200];
    std::snprintf(mid, sizeof mid, "loss %.4f | acc %.2f | margin %+.3f | chosen %+.3f rejected %+.3f | lr %.2e",
                  i.loss, i.accuracy, i.margin, i.chosen_logratio, i.rejected_logratio, i.lr);
    trun.print_step(i.step, i.steps, i.seconds, mid);
  };
  hooks.after_step = [&](const DpoState& s) {
    st = s;
    if (s.step == steps || (o.eval_every > 0 && s.step % o.eval_every == 0)) evaluate(s.step);
    return trun.after_step(s.step, steps);
  };

  DpoResult r;
  {
    const train::TrainerRun::Steps stepping = trun.steps(st.step, steps);
    r = dpo_train(policy, optimizer, train_pairs, ref, o.train, st, hooks);
  }
  trun.finish(r.state.step, steps);
  result.checkpoint = trun.last_checkpoint();
  result.step = r.state.step;
  result.interrupted = r.stopped_early;
  if (result.interrupted || !trun.root()) return result;  // rank 0 writes the summary
  const json summary = {
      {"stage", "dpo"},
      {"steps", result.step},
      {"train_pairs", result.train_pairs},
      {"val_pairs", result.val_pairs},
      {"beta", o.train.beta},
      {"nll_weight", o.train.nll_weight},
      {"first_loss", std::isnan(result.first_loss) ? json(nullptr) : json(result.first_loss)},
      {"last_loss", std::isnan(result.last_loss) ? json(nullptr) : json(result.last_loss)},
      {"val_accuracy_before", std::isnan(result.first_val_accuracy) ? json(nullptr) : json(result.first_val_accuracy)},
      {"val_accuracy_after", std::isnan(result.last_val_accuracy) ? json(nullptr) : json(result.last_val_accuracy)},
      {"val_margin_after", std::isnan(result.last_val_margin) ? json(nullptr) : json(result.last_val_margin)},
      {"kl_after", std::isnan(result.last_kl) ? json(nullptr) : json(result.last_kl)},
      {"seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()},
      {"checkpoint", result.checkpoint.string()}};
  write_file_atomic(run / "summary.json", summary.dump(2) + "\n");
  return result;
}

}  // namespace aji::align
