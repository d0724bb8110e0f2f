#include "aji/align/grpo_run.h"

#include <algorithm>
#include <cstdio>
#include <memory>
#include <optional>

#include <nlohmann/json.hpp>

#include "aji/base/json_number.h"
#include "aji/align/render.h"
#include "aji/align/rl_tasks.h"
#include "aji/align/verifiers.h"
#include "aji/base/atomic_file.h"
#include "aji/base/error.h"
#include "aji/base/threads.h"
#include "aji/tokenizer/chat_template.h"
#include "aji/tokenizer/tokenizer.h"
#include "aji/train/checkpoint.h"
#include "aji/train/memory.h"
#include "aji/train/trainer_run.h"

namespace aji::align {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// The settings outside the declared options that a resumed run compares; none may change.
const std::vector<train::ResumeSetting> kOtherSettings = {
    {"--model", "model"},           {"--tasks", "tasks_file"},         {"--eval-tasks", "eval_file"},
    {"--verifier", "verifier"},     {"--mask-truncated", "mask_truncated"}, {"--skip-invalid", "skip_invalid"},
};

std::string abs_or_empty(const fs::path& p) { return p.empty() ? std::string() : fs::absolute(p).string(); }

json other_settings_json(const GrpoRunOptions& o) {
  return {{"model", abs_or_empty(o.model)},       {"tasks_file", abs_or_empty(o.tasks_file)},
          {"eval_file", abs_or_empty(o.eval_file)}, {"verifier", o.verifier},
          {"mask_truncated", o.mask_truncated},   {"skip_invalid", o.skip_invalid}};
}

fb::GrpoScale parse_scale(const std::string& s) {
  if (s == "group") return fb::GrpoScale::group;
  if (s == "none") return fb::GrpoScale::none;
  if (s == "batch") return fb::GrpoScale::batch;
  throw Error("--scale-rewards " + s + " is not known").fix("use group, none or batch");
}

fb::GrpoLossType parse_loss_type(const std::string& s) {
  if (s == "dapo") return fb::GrpoLossType::dapo;
  if (s == "grpo") return fb::GrpoLossType::grpo;
  if (s == "bnpo") return fb::GrpoLossType::bnpo;
  if (s == "dr_grpo") return fb::GrpoLossType::dr_grpo;
  throw Error("--loss-type " + s + " is not known").fix("use dapo, grpo, bnpo or dr_grpo");
}

// A reward-model directory (aji rm train) has a scalar head beside the trunk: not a policy.
void refuse_reward_model(const fs::path& given, const fs::path& resolved) {
  for (const fs::path& d : {given, resolved})
    for (const char* f : {"score.safetensors", "rm.json"})
      if (!d.empty() && fs::exists(d / f))
        throw Error("this is a reward model (it has " + std::string(f) + "), not a policy")
            .at(d.string())
            .fix("give --model the SFT (instruct) model; GRPO's rewards come from --verifier");
}

// Tasks rendered into generation prompts; a prompt that leaves no room for one new token is a
// file:line error, or a counted skip with --skip-invalid.
std::vector<GrpoTask> render_tasks(const tokenizer::Tokenizer& tok, const std::vector<Task>& tasks, int context,
                                   OnInvalid policy, InputReport* report, const fs::path& file) {
  std::vector<GrpoTask> out;
  out.reserve(tasks.size());
  for (size_t i = 0; i < tasks.size(); ++i) {
    const Task& t = tasks[i];
    std::vector<uint32_t> ids = render_generation_prompt(tok, t.messages);
    const std::string where = file.string() + ":" + std::to_string(t.line);
    if ((int)ids.size() + 1 > context) {
      report->reject(policy, file.string(), t.line, "prompt_too_long",
                     "the prompt is " + std::to_string(ids.size()) + " tokens; the model's context is " +
                         std::to_string(context),
                     "shorten the task's messages, or use a model with a longer context");
      continue;
    }
    GrpoTask g;
    g.prompt.assign(ids.begin(), ids.end());
    g.answer = t.answer;
    g.source = where;
    g.id = (int64_t)i;
    out.push_back(std::move(g));
  }
  if (out.empty())
    throw Error("no task is left after rendering (" + report->summary(3) + ")")
        .at(file.string())
        .fix("check the tasks' prompts against the model's context");
  return out;
}

std::string eval_line(const GrpoEval& e) {
  char b[200];
  std::snprintf(b, sizeof b, "pass@1 %.3f | pass@%d %.3f | reward %.3f | stop %.2f | len %.1f | KL %.3f", e.pass_at_1,
                e.samples, e.pass_at_k, e.mean_reward, e.stop_rate, e.mean_length, e.kl);
  return b;
}

json eval_json(const GrpoEval& e) {
  if (e.n_tasks == 0) return nullptr;
  json j = e.to_json("");
  j["tasks"] = e.n_tasks;
  j["samples"] = e.samples;
  return j;
}

}  // namespace

GrpoRunResult run_grpo(const GrpoRunOptions& in) {
  GrpoRunOptions o = in;
  GrpoRunResult result;
  const fs::path run = o.out_dir;
  validate_options(o);
  (void)train::resolve_precision(o.precision);  // an unknown --precision: refused before any work
  (void)parse_scale(o.scale);
  (void)parse_loss_type(o.loss_type);

  train::TrainerRun::Options ro;
  ro.dir.dir = run;
  ro.dir.resume = o.resume;
  ro.dir.force = o.force;
  ro.dir.quiet = o.quiet;
  ro.dir.command = "aji grpo";
  ro.dir.fresh_command = "aji grpo --model SFT_DIR --tasks TASKS.jsonl --verifier NAME --out " + run.string();
  ro.dir.state_key = "grpo";
  ro.dir.outputs = {"run.json", "metrics.jsonl", "loss.svg", "summary.json"};
  ro.plot_title = "aji grpo: " + run.filename().string();
  ro.plot_labels.y_axis = "GRPO loss";
  ro.plot_labels.train = "loss";
  ro.plot_labels.accuracy_name = "eval pass@1";
  // Each rank rolls out and trains on its share of every step's prompts (grpo_step) and
  // evaluates its share of the evaluation tasks (grpo_evaluate); rank 0 writes.
  ro.splits_data = true;
  train::TrainerRun trun(ro);
  const std::optional<fs::path> resume_ckpt = trun.checkpoint();
  int64_t step = 0;
  json eval_before = nullptr;  // the run's first evaluation (kept in checkpoints for summary.json)
  if (resume_ckpt) {
    const json& s = trun.section();
    const std::string where = trun.state_file();
    try {
      o.model = s.at("model").get<std::string>();
      o.tasks_file = s.at("tasks_file").get<std::string>();
      o.eval_file = s.value("eval_file", std::string());
      o.verifier = s.at("verifier").get<std::string>();
      o.mask_truncated = s.at("mask_truncated");
      o.skip_invalid = s.at("skip_invalid");
      step = json_int<int64_t>(s.at("step"), "the saved \"step\"", where);
      if (s.contains("first_reward") && s["first_reward"].is_number()) result.first_reward = s["first_reward"];
      eval_before = s.value("eval_before", json(nullptr));
    } catch (const json::exception& e) {
      throw Error(std::string("the run's saved settings are not readable: ") + e.what())
          .at(where)
          .fix("resume from a checkpoint written by `aji grpo`, or start a new run");
    }
    const train::GivenFlags given = train::split_given_flags(in.given, kOtherSettings);
    train::check_resume_settings(kOtherSettings, given.other, other_settings_json(in), other_settings_json(o), run);
    const SavedOptionsReport rep =
        apply_saved_options(o, s.value("options", json::object()), given.declared, where);
    train::report_resumed_options(rep, run, trun.quiet());
  }
  if (o.model.empty() || o.tasks_file.empty() || o.verifier.empty())
    throw Error("--model, --tasks and --verifier are required for a new run")
        .fix("e.g. aji grpo --model runs/sft --tasks tasks.jsonl --verifier number --out runs/grpo");

  // --- models, tokenizer, verifier ------------------------------------------------------
  const fs::path given_model_dir = train::resolve_model_dir(o.model);
  refuse_reward_model(o.model, given_model_dir);
  const fs::path policy_src = resume_ckpt ? *resume_ckpt : o.model;
  fs::path policy_dir;
  model::Model policy = train::load_model(policy_src, &policy_dir);
  model::Model reference = train::load_model(o.model);  // frozen: no gradients, saved nowhere
  // The policy's and the reference's training forwards in the same precision (the k3 KL term
  // starts at 0); rollouts run the inference path (fp32) either way.
  const std::shared_ptr<kernels::Backend> run_device = train::open_run_device(o.device);
  train::apply_run_precision(o.precision, resume_ckpt ? trun.section().value("options", json::object()) : json(),
                             in.given, trun.quiet(), "grpo", {&policy, &reference}, run_device.get());
  train::apply_run_device(run_device, o.precision, trun.quiet(), "grpo", {&policy, &reference});
  {
    const int64_t T = policy.config().max_seq_len;
    train::require_memory(train::training_memory(policy.config(), (int64_t)policy.num_params(),
                                                    (int64_t)o.group_size * o.prompts_per_step * T,
                                                    policy.precision() == model::Precision::kBf16,
                                                    run_device != nullptr),
                             "GRPO on this model (" + std::to_string(policy.num_params()) + " parameters, " +
                                 std::to_string(o.group_size * o.prompts_per_step) + " completions per step)",
                             "lower --group-size or --prompts-per-step, or use a smaller model", run_device.get());
  }
  const fs::path tok_path = train::require_tokenizer_file(given_model_dir);
  tokenizer::Tokenizer tok = tokenizer::Tokenizer::load(tok_path);
  require_chat_tokens(tok);
  trun.ship_tokenizer(given_model_dir);
  const int32_t stop = (int32_t)*tok.special_id(tokenizer::kImEnd);
  VerifierOptions vo;
  vo.command_timeout_s = o.verifier_timeout;
  const std::unique_ptr<Verifier> verifier = make_verifier(o.verifier, vo);

  // --- tasks ------------------------------------------------------------------------------
  const OnInvalid policy_on_invalid = o.skip_invalid ? OnInvalid::kSkip : OnInvalid::kError;
  InputReport report;
  const std::vector<Task> raw_tasks = read_tasks(o.tasks_file, policy_on_invalid, &report);
  const std::vector<GrpoTask> tasks =
      render_tasks(tok, raw_tasks, policy.config().max_seq_len, policy_on_invalid, &report, o.tasks_file);
  std::vector<Task> raw_eval;
  std::vector<GrpoTask> eval_tasks;
  if (!o.eval_file.empty()) {
    raw_eval = read_tasks(o.eval_file, policy_on_invalid, &report);
    eval_tasks = render_tasks(tok, raw_eval, policy.config().max_seq_len, policy_on_invalid, &report, o.eval_file);
    if (o.eval_limit > 0 && (int64_t)eval_tasks.size() > o.eval_limit) eval_tasks.resize(size_t(o.eval_limit));
  }
  VerifyStats vstats;
  auto make_reward = [&](const std::vector<Task>& raw) {
    return [&tok, &verifier, &vstats, &raw, stop](const GrpoTask& t, const infer::Rollout& r) -> double {
      std::vector<tokenizer::TokenId> ids;
      for (int32_t id : r.tokens) {
        if (id == stop) break;
        ids.push_back((tokenizer::TokenId)id);
      }
      return verifier->score(raw[size_t(t.id)], tok.decode(ids), &vstats);
    };
  };
  const GrpoRewardFn reward = make_reward(raw_tasks);
  const GrpoRewardFn eval_reward = make_reward(raw_eval);

  GrpoOptions go;
  go.group_size = o.group_size;
  go.prompts_per_step = o.prompts_per_step;
  go.max_new_tokens = o.max_new_tokens;
  go.temperature = o.temperature;
  go.beta = o.kl_coef;
  go.scale = parse_scale(o.scale);
  go.loss_type = parse_loss_type(o.loss_type);
  go.mask_truncated = o.mask_truncated;
  go.stop_tokens = {stop};
  go.lr = o.lr;
  go.warmup = o.warmup;
  go.decay = "constant";
  go.weight_decay = o.weight_decay;
  go.grad_clip = o.grad_clip;
  go.steps = o.steps;
  go.seed = o.seed;
  go.run_dir = run;
  validate_grpo_options(go, policy, &reference);
  GrpoEvalOptions eo;
  eo.samples = o.eval_samples > 0 ? o.eval_samples : o.group_size;
  eo.max_new_tokens = o.max_new_tokens;
  eo.temperature = o.temperature;
  eo.stop_tokens = {stop};
  eo.seed = o.seed ^ 0xE7A1ULL;

  train::AdamW optimizer(policy.num_params(), {go.beta1, go.beta2, go.eps, go.weight_decay});
  if (resume_ckpt) optimizer.load(*resume_ckpt / "optimizer.bin");

  const bool quiet = trun.quiet();  // asked, or not rank 0
  {  // every rank the same settings on the same data (a rank that differs: a clear error)
    json same = options_to_json(o);
    same.update(other_settings_json(o));
    train::require_same_settings(same);
  }
  if (!resume_ckpt && trun.root()) {
    json info = {{"stage", "grpo"},
                 {"options", options_to_json(o)},
                 {"settings", other_settings_json(o)},
                 {"tasks", tasks.size()},
                 {"eval_tasks", eval_tasks.size()},
                 {"aji_version", AJI_VERSION}};
    write_file_atomic(run / "run.json", info.dump(2) + "\n");
  }
  if (!quiet) {
    std::printf("grpo: %s | %zu tasks, %zu eval tasks (%s) | verifier %s\n", policy_dir.c_str(), tasks.size(),
                eval_tasks.size(), report.summary(3).c_str(), verifier->name().c_str());
    std::printf("grpo: %lld steps x %d prompts x G=%d, max %d new tokens, T=%.2f, kl-coef %g, %s scaling, %s loss, "
                "lr %.2e, threads %d\n",
                (long long)o.steps, o.prompts_per_step, o.group_size, o.max_new_tokens, o.temperature, o.kl_coef,
                o.scale.c_str(), o.loss_type.c_str(), o.lr, num_threads());
    std::fflush(stdout);
  }

  // --- metrics, checkpoints, evaluation ------------------------------------------------------
  trun.options().save_every = o.save_every;
  trun.options().keep = o.keep;
  trun.options().stop_after = o.stop_after;
  trun.start_metrics(resume_ckpt ? step : -1);
  trun.set_checkpoint([&](int64_t s) {
    train::CheckpointParts p;
    p.model = &policy;
    p.optimizer = &optimizer;
    json sec = other_settings_json(o);
    sec["options"] = options_to_json(o);
    sec["step"] = s;
    sec["first_reward"] = std::isnan(result.first_reward) ? json(nullptr) : json(result.first_reward);
    sec["eval_before"] = eval_before;
    p.section = sec;
    return p;
  });
  auto evaluate = [&](int64_t at) {
    GrpoEval e = grpo_evaluate(policy, &reference, eval_tasks, eval_reward, eo);
    json line = e.to_json("eval_");
    line["step"] = at;
    line["val_accuracy"] = e.pass_at_1;  // the plot's right axis
    trun.log(line);
    if (!quiet) std::printf("step %lld | eval %s\n", (long long)at, eval_line(e).c_str());
    std::fflush(stdout);
    return e;
  };
  if (!eval_tasks.empty() && !resume_ckpt) {  // a resumed run has its first evaluation already
    result.eval_before = evaluate(step);
    eval_before = eval_json(result.eval_before);
  }

  int64_t warned_at = -1, zero_std_steps = 0;
  GrpoHooks hooks;
  hooks.on_step = [&](const GrpoStepStats& s) {
    if (std::isnan(result.first_reward)) result.first_reward = s.mean_reward;
    result.last_reward = s.mean_reward;
    result.stats.push_back(s);
    trun.log(s.to_json());
    char mid[256];
    std::snprintf(mid, sizeof mid,
                  "reward %.3f | pass %.2f | zero-std %.2f | len %.1f | KL %.3f | loss %+.4f | norm %.3f | rollout %.0f%%",
                  s.mean_reward, s.pass_rate, s.frac_zero_std, s.mean_length, s.kl, s.loss, s.grad_norm,
                  100.0 * s.rollout_seconds / std::max(s.seconds, 1e-9));
    trun.print_step(s.step, o.steps, s.seconds, mid);
    if (s.frac_zero_std > 0.5) {
      ++zero_std_steps;
      if (!quiet && (warned_at < 0 || s.step - warned_at >= 50)) {
        std::fprintf(stderr,
                     "warning: step %lld: %.0f%% of the groups had the same reward for every completion: they teach "
                     "nothing (tasks too easy or too hard for this model; try other tasks, a larger --group-size, or "
                     "a higher --temperature)\n",
                     (long long)s.step, 100.0 * s.frac_zero_std);
        warned_at = s.step;
      }
    }
    if (!eval_tasks.empty() && o.eval_every > 0 && s.step % o.eval_every == 0 && s.step < o.steps)
      evaluate(s.step);
  };
  hooks.after_step = [&](int64_t s) { return trun.after_step(s, o.steps); };

  GrpoTrainResult r;
  {
    const train::TrainerRun::Steps stepping = trun.steps(step, o.steps);
    r = grpo_train(policy, &reference, optimizer, tasks, reward, go, step, hooks);
  }
  result.step = r.step;
  result.interrupted = r.stopped_early;
  if (!eval_tasks.empty() && !r.stopped_early) result.eval_after = evaluate(r.step);
  trun.finish(r.step, o.steps);
  result.checkpoint = trun.last_checkpoint();
  if (!r.stopped_early && trun.root()) {  // rank 0's verifier counts (every rank verifies its share)
    json summary = {{"stage", "grpo"},
                    {"steps", r.step},
                    {"first_reward", std::isnan(result.first_reward) ? json(nullptr) : json(result.first_reward)},
                    {"last_reward", std::isnan(result.last_reward) ? json(nullptr) : json(result.last_reward)},
                    {"eval_before", eval_before},
                    {"eval_after", eval_json(result.eval_after)},
                    {"steps_mostly_zero_std", zero_std_steps},
                    {"verifier", verifier->name()},
                    {"verifier_calls", vstats.calls},
                    {"verifier_failures", vstats.failures},
                    {"verifier_summary", vstats.summary()},
                    {"skipped_tasks", report.skipped_count()},
                    {"checkpoint", result.checkpoint.string()}};
    write_file_atomic(run / "summary.json", summary.dump(2) + "\n");
  }
  if (!quiet && vstats.failures > 0) std::fprintf(stderr, "verifier: %s\n", vstats.summary().c_str());
  return result;
}

}  // namespace aji::align
