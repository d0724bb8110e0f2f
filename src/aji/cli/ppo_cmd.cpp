// `aji ppo`: PPO-RLHF of an SFT model against a reward model (src/aji/align/ppo_run.h).
#include <cstdio>
#include <fstream>
#include <memory>

#include <nlohmann/json.hpp>

#include "aji/align/ppo_run.h"
#include "aji/align/reward_model.h"
#include "aji/align/reward_model_run.h"
#include "aji/base/error.h"
#include "aji/cli/command.h"
#include "aji/cli/options.h"

namespace {

aji::cli::CommandRegistrar reg(48, [](CLI::App& app) {
  // The numeric options are declared once, in PpoRunOptions::for_each_option (align/ppo_run.h).
  auto o = std::make_shared<aji::align::PpoRunOptions>();
  auto model = std::make_shared<std::string>(), reward = std::make_shared<std::string>(),
       prompts = std::make_shared<std::string>(), out = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand("ppo", "PPO-RLHF: improve an SFT model against a reward model, with a KL leash");
  cmd->footer(
      "Each step samples --rollouts-per-step replies (--group-size per prompt, pure sampling at --temperature),\n"
      "scores them with the reward model (a reply that never ends gets --missing-stop-penalty), puts a per-token\n"
      "KL penalty (--kl-coef, k1) to the frozen SFT model into the reward, estimates advantages with a value model\n"
      "(initialised from the reward model) and GAE, and updates policy and value model with the clipped PPO loss.\n"
      "metrics.jsonl: score, KL, entropy, clip fraction, value loss, explained variance, reply length. The run\n"
      "stops when the KL exceeds --max-kl. Example:\n"
      "  aji ppo --model runs/sft --reward runs/rm --prompts data/prompts.jsonl --out runs/ppo --steps 100");
  cmd->add_option("--model", *model, "SFT policy (also the frozen reference): an aji run or model dir");
  cmd->add_option("--reward", *reward, "Reward model dir from `aji rm train`");
  cmd->add_option("--prompts", *prompts, "Prompts (JSONL: {\"messages\": [... ending with a user turn]})");
  cmd->add_option("--out", *out, "Run directory")->required();
  cmd->add_flag("--resume", o->resume, "Continue the run in --out from its latest checkpoint");
  cmd->add_flag("--force", o->force, "Start over in a run directory that already holds a run");
  cmd->add_flag("--skip-invalid", o->skip_invalid, "Count and skip invalid or too long prompts instead of stopping");
  cmd->add_option("--true-verifier", o->true_verifier,
                  "Log a true metric with this verifier (exact, number, choice, regex:P, command:P); --prompts is then "
                  "a task file with \"answer\" fields");
  auto declared = std::make_shared<aji::cli::DeclaredOptions>(aji::cli::add_declared_options(cmd, *o));
  cmd->callback([cmd, o, declared, model, reward, prompts, out] {
    o->given.clear();
    for (const std::string& name : declared->given()) o->given.push_back("--" + name);
    for (const char* flag : {"--model", "--reward", "--prompts", "--skip-invalid", "--true-verifier"})
      if (cmd->count(flag) > 0) o->given.push_back(flag);
    o->model = *model;
    o->reward = *reward;
    o->prompts = *prompts;
    o->out_dir = *out;
    o->quiet = aji::cli::global_options().quiet;
    if (!o->resume && (o->model.empty() || o->reward.empty() || o->prompts.empty()))
      throw aji::Error("--model, --reward and --prompts are required for a new run")
          .fix("e.g. aji ppo --model runs/sft --reward runs/rm --prompts data/prompts.jsonl --out runs/ppo");
    // On --resume the reward model is the run's own (saved in its run.json).
    std::filesystem::path rm_dir = o->reward;
    if (o->resume && rm_dir.empty()) {
      const std::filesystem::path info = std::filesystem::path(*out) / "run.json";
      std::ifstream f(info);
      nlohmann::json j = nlohmann::json::parse(f, nullptr, false);
      if (!j.is_discarded() && j.is_object()) rm_dir = j.value("reward", std::string());
      if (rm_dir.empty())
        throw aji::Error("cannot find the run's reward model").at(info.string()).fix("pass --reward RM_DIR");
    }
    rm_dir = aji::align::resolve_reward_model_dir(rm_dir);  // an `aji rm train` run dir or its rm/
    aji::align::RewardModel rm = aji::align::load_reward_model(rm_dir);  // refuses a plain model dir
    aji::align::PpoReward r;
    r.score = [&rm](const std::vector<int32_t>& prompt, const std::vector<int32_t>& reply) {
      std::vector<int32_t> seq = prompt;
      seq.insert(seq.end(), reply.begin(), reply.end());
      return rm.score(seq);
    };
    r.value_trunk = &rm.trunk;
    r.value_head = &rm.head;
    r.describe = "reward model " + rm_dir.string();
    auto res = aji::align::run_ppo(*o, r);
    if (!o->quiet && !res.interrupted && !res.stats.empty())
      std::printf("done: %lld steps | score %.3f -> %.3f | KL %.3f | checkpoint %s\n", (long long)res.step,
                  res.stats.front().score, res.stats.back().score, res.stats.back().kl, res.checkpoint.c_str());
  });
});

}  // namespace
