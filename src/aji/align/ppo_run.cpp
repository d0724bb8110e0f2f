#include "aji/align/ppo_run.h"

#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <sstream>

#include <nlohmann/json.hpp>

#include "aji/base/json_number.h"
#include "aji/align/conversation.h"
#include "aji/align/render.h"
#include "aji/align/verifiers.h"
#include "aji/base/atomic_file.h"
#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/base/threads.h"
#include "aji/tokenizer/chat_template.h"
#include "aji/tokenizer/tokenizer.h"
#include "aji/train/checkpoint.h"
#include "aji/train/safetensors.h"
#include "aji/train/scalar_head_io.h"
#include "aji/train/trainer_run.h"

namespace aji::align {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const std::vector<train::ResumeSetting> kOtherSettings = {{"--model", "base_model"},
                                                          {"--reward", "reward"},
                                                          {"--prompts", "prompts"},
                                                          {"--skip-invalid", "skip_invalid"},
                                                          {"--true-verifier", "true_verifier"}};

std::string abs_or_empty(const fs::path& p) { return p.empty() ? std::string() : fs::absolute(p).string(); }

json other_settings_json(const PpoRunOptions& o) {
  return {{"base_model", abs_or_empty(o.model)},
          {"reward", abs_or_empty(o.reward)},
          {"prompts", abs_or_empty(o.prompts)},
          {"skip_invalid", o.skip_invalid},
          {"true_verifier", o.true_verifier}};
}

void save_weights(const fs::path& path, const model::Model& m) {
  std::vector<train::SafeTensorView> views;
  for (const auto& t : m.tensors()) views.push_back({t.name, t.shape, m.params() + t.offset});
  train::save_safetensors(path, views, {{"format", "pt"}, {"producer", "aji ppo (value model)"}});
}

std::string fmt(double x, int prec = 3) {
  char b[32];
  std::snprintf(b, sizeof b, "%.*f", prec, x);
  return b;
}

}  // namespace

std::vector<std::vector<int32_t>> read_ppo_prompts(const fs::path& path, const fs::path& model_dir, int max_seq_len,
                                                   bool skip_invalid, bool quiet, int32_t* stop_token,
                                                   int32_t* pad_id, std::vector<Task>* tasks) {
  const fs::path tok_path = train::require_tokenizer_file(model_dir);
  const tokenizer::Tokenizer tok = tokenizer::Tokenizer::load(tok_path);
  require_chat_tokens(tok);
  const int32_t im_end = int32_t(*tok.special_id(tokenizer::kImEnd));
  if (stop_token) *stop_token = im_end;
  if (pad_id) *pad_id = im_end;
  const OnInvalid policy = skip_invalid ? OnInvalid::kSkip : OnInvalid::kError;
  InputReport report;
  std::vector<std::vector<int32_t>> prompts;
  const std::string file = path.string();
  const std::string fix =
      "each line is {\"messages\":[{\"role\":\"user\",\"content\":\"...\"}]} ending with the user turn the policy "
      "answers";
  LineReader reader(path, size_t(256) << 20);
  std::string_view line;
  while (reader.next(line)) {
    if (line.find_first_not_of(" \t\r\n\f\v") == std::string_view::npos) continue;
    ++report.records_read;
    Conversation c;
    Task task;
    std::optional<RuleViolation> bad;
    if (tasks) {
      bad = parse_task_line(line, task);
      c.messages = task.messages;
    } else {
      bad = parse_conversation_line(line, c);
    }
    if (!bad) {
      bad = check_conversation(c, ConversationRules{false});
      if (bad && bad->kind == "no_assistant") bad.reset();  // a one-turn prompt has none
    }
    if (!bad && c.messages.back().role != Role::kUser)
      bad = RuleViolation{"not_a_prompt", "the conversation does not end with a user turn"};
    if (bad) {
      report.reject(policy, file, reader.line_number(), bad->kind, bad->detail, fix);
      continue;
    }
    const std::vector<uint32_t> ids = render_generation_prompt(tok, c.messages);
    if (int(ids.size()) > max_seq_len - 2) {
      report.reject(policy, file, reader.line_number(), "prompt_too_long",
                    "the prompt has " + std::to_string(ids.size()) + " tokens; the model's context is " +
                        std::to_string(max_seq_len) + " and the reply needs at least 2",
                    "shorten the prompt or pass --skip-invalid to skip it");
      continue;
    }
    ++report.records_kept;
    prompts.emplace_back(ids.begin(), ids.end());
    if (tasks) {
      task.line = reader.line_number();
      tasks->push_back(std::move(task));
    }
  }
  if (prompts.empty())
    throw Error("no usable prompt").at(path.string()).fix("give conversations ending with a user turn: {\"messages\":[{\"role\":\"user\",\"content\":\"...\"}]}");
  if (!quiet && report.skipped_count() > 0) std::printf("ppo: prompts %s\n", report.summary(3).c_str());
  return prompts;
}

PpoRunResult run_ppo(const PpoRunOptions& in, const PpoReward& reward) {
  PpoRunOptions o = in;
  PpoRunResult result;
  const fs::path run = o.out_dir;
  validate_options(o);
  (void)train::resolve_precision(o.precision);  // an unknown --precision: refused before any work
  if (!reward.score) throw Error("ppo: no reward function").fix("load a reward model (--reward RM_DIR)");

  train::TrainerRun::Options ro;
  ro.dir.dir = run;
  ro.dir.resume = o.resume;
  ro.dir.force = o.force;
  ro.dir.quiet = o.quiet;
  ro.dir.command = "aji ppo";
  ro.dir.fresh_command = "aji ppo --model SFT_DIR --reward RM_DIR --prompts PROMPTS.jsonl --out " + run.string();
  ro.dir.state_key = "ppo";
  ro.dir.outputs = {"run.json", "metrics.jsonl", "loss.svg", "summary.json"};
  ro.plot_title = "aji ppo: " + run.filename().string();
  ro.plot_labels.y_axis = "reward";
  ro.plot_labels.train = "rlhf reward (score - beta*KL)";
  ro.plot_labels.accuracy_name = "true metric";
  // Each rank samples its share of every step's prompts and trains on its share of every
  // minibatch's rows (ppo.cpp); rank 0 writes.
  ro.splits_data = true;
  train::TrainerRun trun(ro);
  const std::optional<fs::path> ckpt = trun.checkpoint();
  RewardHackWatch watch;
  int64_t step = 0;
  if (ckpt) {
    const json& s = trun.section();
    const std::string where = trun.state_file();
    try {
      o.model = s.at("base_model").get<std::string>();
      o.reward = s.value("reward", std::string());
      o.prompts = s.at("prompts").get<std::string>();
      o.skip_invalid = s.at("skip_invalid");
      o.true_verifier = s.value("true_verifier", std::string());
      step = json_int<int64_t>(trun.state().at("step"), "the saved \"step\"", where);
      watch.score = s.at("watch_score").get<std::vector<double>>();
      watch.truth = s.at("watch_truth").get<std::vector<double>>();
    } catch (const json::exception& e) {
      throw Error(std::string("the run's saved settings are not readable: ") + e.what())
          .at(where)
          .fix("resume from a checkpoint written by `aji ppo`, or start a new run");
    }
    const train::GivenFlags given = train::split_given_flags(in.given, kOtherSettings);
    train::check_resume_settings(kOtherSettings, given.other, other_settings_json(in), other_settings_json(o), run);
    const SavedOptionsReport rep = apply_saved_options(o, s.value("options", json::object()), given.declared, where);
    train::report_resumed_options(rep, run, trun.quiet());
  }
  if (o.rollouts_per_step % o.ppo.group_size != 0)
    throw Error("--rollouts-per-step " + std::to_string(o.rollouts_per_step) + " is not a multiple of --group-size " +
                std::to_string(o.ppo.group_size))
        .fix("e.g. --rollouts-per-step 64 --group-size 4 (16 prompts x 4 replies)");
  o.ppo.prompts_per_step = o.rollouts_per_step / o.ppo.group_size;
  o.ppo.run_dir = run;

  // --- models: policy (from the checkpoint on resume), frozen reference, value model -----
  fs::path model_dir;
  model::Model ref = train::load_model(o.model, &model_dir);
  model::Model policy = train::load_model(ckpt ? *ckpt : fs::path(o.model));
  model::Model value(reward.value_trunk ? reward.value_trunk->config() : ref.config());
  std::copy_n(reward.value_trunk ? reward.value_trunk->params() : ref.params(), value.num_params(), value.params());
  model::ScalarHead head = reward.value_head ? *reward.value_head : model::ScalarHead(value.config().d_model);
  head.grad.assign(head.w.size(), 0.0f);
  // Policy, frozen reference and value trunk in one precision (the old log-probs and the
  // trained ones come from the same forward); rollouts and the reward function as they are.
  const std::shared_ptr<kernels::Backend> run_device = train::open_run_device(o.device);
  train::apply_run_precision(o.precision, ckpt ? trun.section().value("options", json::object()) : json(), in.given,
                             trun.quiet(), "ppo", {&policy, &ref, &value}, run_device.get());
  train::apply_run_device(run_device, o.precision, trun.quiet(), "ppo", {&policy, &ref, &value});
  if (policy.config().vocab_size != ref.config().vocab_size)
    throw Error("the checkpoint's policy does not match --model").at(ckpt ? ckpt->string() : o.model.string());
  if (value.config().vocab_size != ref.config().vocab_size)
    throw Error("the reward model has a vocabulary of " + std::to_string(value.config().vocab_size) +
                " ids but the policy " + std::to_string(ref.config().vocab_size))
        .at(o.reward.string())
        .fix("train the reward model from the same SFT model (aji rm train --model SFT_DIR ...)");
  PpoOptimizers opt = make_ppo_optimizers(policy, value, head, o.ppo);
  if (ckpt) {
    opt.policy.load(*ckpt / "optimizer.bin");
    train::load_weights(value, *ckpt / "value.safetensors");
    head = train::load_scalar_head(*ckpt / "value_head.safetensors", value.config().d_model);
    head.grad.assign(head.w.size(), 0.0f);
    opt.value.load(*ckpt / "value_optimizer.bin");
    opt.head.load(*ckpt / "head_optimizer.bin");
  }
  PpoModels m{&policy, &ref, &value, &head, &opt.policy, &opt.value, &opt.head};
  trun.ship_tokenizer(model_dir);

  // --- prompts -------------------------------------------------------------------------
  std::vector<Task> tasks;
  const std::vector<std::vector<int32_t>> prompts =
      read_ppo_prompts(o.prompts, model_dir, policy.config().max_seq_len, o.skip_invalid, trun.quiet(), &o.ppo.stop_token,
                       &o.ppo.pad_id, o.true_verifier.empty() ? nullptr : &tasks);
  // The true-metric column from a verifier: the task of a prompt is found by its ids.
  RewardFn truth = reward.truth;
  std::unique_ptr<Verifier> verifier;
  std::unique_ptr<tokenizer::Tokenizer> tok;
  std::map<std::vector<int32_t>, size_t> task_of;
  VerifyStats vstats;
  if (!o.true_verifier.empty() && !truth) {
    verifier = make_verifier(o.true_verifier);
    tok = std::make_unique<tokenizer::Tokenizer>(tokenizer::Tokenizer::load(train::require_tokenizer_file(model_dir)));
    for (size_t i = 0; i < prompts.size(); ++i) task_of.emplace(prompts[i], i);
    truth = [&](const std::vector<int32_t>& prompt, const std::vector<int32_t>& reply) {
      const auto it = task_of.find(prompt);
      if (it == task_of.end()) return 0.0f;
      std::vector<tokenizer::TokenId> ids(reply.begin(), reply.end());
      if (!ids.empty() && int32_t(ids.back()) == o.ppo.stop_token) ids.pop_back();
      return verifier->score(tasks[it->second], tok->decode(ids), &vstats);
    };
  }

  {  // every rank the same settings on the same data (a rank that differs: a clear error)
    json same = options_to_json(o);
    same.update(other_settings_json(o));
    train::require_same_settings(same);
  }
  if (!ckpt && trun.root()) {
    json info = {{"stage", "ppo"},
                 {"options", options_to_json(o)},
                 {"reward_describe", reward.describe},
                 {"prompts", prompts.size()},
                 {"aji_version", AJI_VERSION}};
    info.update(other_settings_json(o));
    write_file_atomic(run / "run.json", info.dump(2) + "\n");
  }
  if (!trun.quiet()) {
    std::printf("ppo: policy %s | reward %s | %zu prompts | %lld steps of %d prompts x %d replies | beta %g | lr %.1e | "
                "%d x %d minibatches | threads %d\n",
                model_dir.c_str(), reward.describe.c_str(), prompts.size(), (long long)o.steps,
                o.ppo.prompts_per_step, o.ppo.group_size, o.ppo.kl_coef, o.ppo.lr, o.ppo.ppo_epochs,
                o.ppo.minibatches, num_threads());
    std::fflush(stdout);
  }

  trun.options().save_every = o.save_every;
  trun.options().keep = o.keep;
  trun.options().stop_after = o.stop_after;
  trun.start_metrics(ckpt ? step : -1);
  trun.set_checkpoint([&](int64_t) {
    train::CheckpointParts p;
    p.model = &policy;
    p.optimizer = &opt.policy;
    p.section = {{"options", options_to_json(o)}, {"watch_score", watch.score}, {"watch_truth", watch.truth}};
    p.section.update(other_settings_json(o));
    p.write = {{"value.safetensors", [&](const fs::path& f) { save_weights(f, value); }},
               {"value_head.safetensors", [&](const fs::path& f) { train::save_scalar_head(f, head); }},
               {"value_optimizer.bin", [&](const fs::path& f) { opt.value.save(f); }},
               {"head_optimizer.bin", [&](const fs::path& f) { opt.head.save(f); }}};
    return p;
  });

  const int64_t total = o.steps;
  {
    const train::TrainerRun::Steps stepping = trun.steps(step, total);
    while (step < total) {
      const PpoStepStats st = ppo_step(m, prompts, o.ppo, step, reward.score, truth);
      ++step;
      json line = st.to_json();
      line["loss"] = st.rlhf_reward;  // the plot's series (see ppo_run.h)
      if (st.true_metric >= 0) line["val_accuracy"] = st.true_metric;
      trun.log(line);
      std::string mid = "score " + fmt(st.score) + (st.true_metric >= 0 ? " | true " + fmt(st.true_metric) : "") +
                        " | KL " + fmt(st.kl) + " | entropy " + fmt(st.entropy) + " | clip " + fmt(st.clip_frac) +
                        " | vloss " + fmt(st.value_loss, 4) + " | EV " + fmt(st.explained_variance) + " | len " +
                        fmt(st.reply_length, 1);
      trun.print_step(step, total, st.seconds, mid);
      result.stats.push_back(st);
      const std::string warn = watch.add(st.score, st.true_metric);
      if (!warn.empty()) {
        ++result.hacking_warnings;
        if (trun.root()) std::fprintf(stderr, "warning: step %lld: %s\n", (long long)step, warn.c_str());
      }
      bool stop = false;
      if (o.max_kl > 0 && st.kl > o.max_kl) {  // st.kl is the whole step's: every rank stops here
        if (trun.root())
          std::fprintf(stderr,
                     "ppo: stopping at step %lld: KL to the reference %.3f > --max-kl %g (the policy is drifting "
                     "from the SFT model; raise --kl-coef or lower --lr)\n",
                     (long long)step, st.kl, o.max_kl);
        result.kl_stop = true;
        stop = true;
        trun.save(step);
      }
      if (trun.after_step(step, total) || stop) break;
    }
  }
  trun.finish(step, total);
  if (verifier && !trun.quiet()) std::printf("ppo: true verifier %s: %s\n", o.true_verifier.c_str(), vstats.summary().c_str());
  result.step = step;
  result.interrupted = trun.stopped();
  result.checkpoint = trun.last_checkpoint();
  if (!trun.root()) return result;  // rank 0 writes the summary
  write_file_atomic(run / "summary.json",
                    json{{"step", step},
                         {"kl_stop", result.kl_stop},
                         {"hacking_warnings", result.hacking_warnings},
                         {"last", result.stats.empty() ? json(nullptr) : result.stats.back().to_json()}}
                            .dump(2) +
                        "\n");
  return result;
}

}  // namespace aji::align
