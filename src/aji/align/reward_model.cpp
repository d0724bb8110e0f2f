#include "aji/align/reward_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <numeric>
#include <unistd.h>

#include "aji/base/json_number.h"
#include "aji/align/classifier.h"
#include "aji/align/feedback_math.h"
#include "aji/base/atomic_file.h"
#include "aji/base/error.h"
#include "aji/base/rng.h"
#include "aji/train/checkpoint.h"
#include "aji/train/scalar_head_io.h"
#include "aji/train/trainer_run.h"

namespace aji::align {

namespace fs = std::filesystem;

int64_t rm_group_pairs(const RmGroup& g) { return int64_t(g.pairs.size()); }

RmGroup rm_group_from_scores(std::vector<std::vector<int32_t>> sequences, const std::vector<float>& scores) {
  if (scores.size() != sequences.size())
    throw Error("rm_group_from_scores: " + std::to_string(sequences.size()) + " completions but " +
                std::to_string(scores.size()) + " scores");
  fb::require_finite(scores, "score");
  RmGroup g;
  g.sequences = std::move(sequences);
  g.pairs = fb::ranking_pairs(scores);
  return g;
}

std::vector<int> rm_group_best(const RmGroup& g) {
  std::vector<char> wins(g.sequences.size(), 0), loses(g.sequences.size(), 0);
  for (const fb::RankPair& p : g.pairs) {
    wins[size_t(p.winner)] = 1;
    loses[size_t(p.loser)] = 1;
  }
  std::vector<int> best;
  for (size_t k = 0; k < wins.size(); ++k)
    if (wins[k] && !loses[k]) best.push_back(int(k));
  return best;
}

// ---- scoring ------------------------------------------------------------------------------

RewardModel::RewardModel(model::Model m, int32_t pad) : trunk(std::move(m)), head(trunk.config().d_model), pad_id(pad) {}

std::vector<float> RewardModel::raw_scores(const std::vector<std::vector<int32_t>>& seqs, int batch) {
  if (seqs.empty()) return {};
  // The trunk's features at each sequence's last token (classifier.h's last-non-pad pooling,
  // right padding), then the head on those rows. In fp32 whatever the training precision:
  // evaluations, the offset and PPO's rewards are then what the saved reward model gives.
  const train::Fp32Scope fp32(trunk);
  const std::vector<float> feats = pooled_features(trunk, seqs, Pooling::kLastToken, pad_id, std::max(batch, 1));
  std::vector<float> out(seqs.size());
  head.forward(feats.data(), int(seqs.size()), 1, nullptr, out.data());
  return out;
}

std::vector<float> RewardModel::scores(const std::vector<std::vector<int32_t>>& seqs, int batch) {
  std::vector<float> s = raw_scores(seqs, batch);
  for (float& x : s) x -= offset;
  return s;
}

float RewardModel::score(const std::vector<int32_t>& ids) { return scores({ids}, 1)[0]; }

// ---- one step -----------------------------------------------------------------------------

std::vector<train::DecayRange> rm_trunk_ranges(const model::Model& m) {
  return trainable_trunk_ranges(m, TrainableBlocks{TrainableBlocks::Kind::kAll, 0});
}

namespace {

void check_group(const RmGroup& g, int64_t index, int max_len) {
  const int64_t K = int64_t(g.sequences.size());
  for (const fb::RankPair& p : g.pairs)
    if (p.winner < 0 || p.winner >= K || p.loser < 0 || p.loser >= K || p.winner == p.loser)
      throw Error("preference group " + std::to_string(index) + " has a pair (" + std::to_string(p.winner) + ", " +
                  std::to_string(p.loser) + ") outside its " + std::to_string(K) + " completions")
          .fix("pairs index two different completions of their group");
  for (size_t k = 0; k < g.sequences.size(); ++k) {
    const size_t len = g.sequences[k].size();
    if (len == 0 || len > size_t(max_len))
      throw Error("preference group " + std::to_string(index) + ", completion " + std::to_string(k) + " has " +
                  std::to_string(len) + " tokens; the model takes 1.." + std::to_string(max_len))
          .fix("drop or shorten prompts longer than the model's context");
  }
  if (!std::isfinite(g.margin))
    throw Error("preference group " + std::to_string(index) + " has a non-finite margin").fix("give finite margins");
}

struct Range {
  double mn = std::numeric_limits<double>::infinity(), mx = -std::numeric_limits<double>::infinity(), sum = 0;
  int64_t n = 0;
  void add(double x) {
    mn = std::min(mn, x);
    mx = std::max(mx, x);
    sum += x;
    ++n;
  }
};

}  // namespace

void rm_forward_backward(RewardModel& rm, const std::vector<RmGroup>& groups, const int64_t* idx, int n,
                         const RmOptions& o, RmStepStats& st) {
  const int max_len = rm.trunk.config().max_seq_len;
  const int C = rm.trunk.config().d_model;
  // The groups with pairs, and their pairs.
  std::vector<int64_t> use;
  for (int i = 0; i < n; ++i) {
    const RmGroup& g = groups[size_t(idx[i])];
    check_group(g, idx[i], max_len);
    if (g.pairs.empty()) continue;
    use.push_back(idx[i]);
  }
  st = RmStepStats{};
  st.groups = int64_t(use.size());
  if (use.empty()) return;
  const double scale = 1.0 / double(use.size());
  const int micro = std::max(o.micro_rows, 1);
  Range rr;
  double acc_sum = 0, margin_sum = 0;
  std::vector<float> pooled;
  for (size_t gi = 0; gi < use.size();) {
    // A micro-batch of whole groups, up to `micro` sequences (a larger group goes alone).
    size_t ge = gi;
    int rows = 0;
    while (ge < use.size()) {
      const int k = int(groups[size_t(use[ge])].sequences.size());
      if (ge > gi && rows + k > micro) break;
      rows += k;
      ++ge;
    }
    std::vector<std::vector<int32_t>> seqs;  // borrowed copies would need an index; rows are short
    seqs.reserve(size_t(rows));
    for (size_t g = gi; g < ge; ++g)
      for (const auto& s : groups[size_t(use[g])].sequences) seqs.push_back(s);
    std::vector<int64_t> order(seqs.size());
    std::iota(order.begin(), order.end(), int64_t{0});
    pooled.resize(size_t(rows) * C);
    const int T = pooled_hidden(rm.trunk, seqs, order.data(), rows, Pooling::kLastToken, rm.pad_id, pooled.data());
    ++st.forwards;
    st.sequences_forwarded += rows;
    std::vector<int> pos(static_cast<size_t>(rows));
    for (int r = 0; r < rows; ++r) {
      pos[size_t(r)] = int(seqs[size_t(r)].size()) - 1;
      st.tokens += int64_t(seqs[size_t(r)].size());
    }
    std::vector<float> r(static_cast<size_t>(rows)), dr(static_cast<size_t>(rows), 0.0f);
    rm.head.forward(rm.trunk.hidden(), rows, T, pos.data(), r.data());
    if (fb::first_non_finite(r) >= 0) {  // diverged weights: train_step stops with its error
      st.loss = st.bt_loss = std::numeric_limits<double>::quiet_NaN();
      return;
    }
    int at = 0;
    for (size_t g = gi; g < ge; ++g) {
      const RmGroup& grp = groups[size_t(use[g])];
      const std::vector<fb::RankPair>& p = grp.pairs;
      std::vector<float> rw(p.size()), rl(p.size()), m(p.size(), grp.margin);
      for (size_t j = 0; j < p.size(); ++j) {
        rw[j] = r[size_t(at + p[j].winner)];
        rl[j] = r[size_t(at + p[j].loser)];
      }
      const fb::BtBatch bt = fb::bradley_terry_batch(rw, rl, grp.margin != 0.0f ? fb::FloatSpan(m) : fb::FloatSpan{},
                                                     o.center_coef);
      st.loss += bt.loss * scale;
      st.bt_loss += bt.bt_loss * scale;
      acc_sum += bt.accuracy * double(p.size());
      margin_sum += bt.mean_margin * double(p.size());
      st.pairs += int64_t(p.size());
      for (size_t j = 0; j < p.size(); ++j) {
        dr[size_t(at + p[j].winner)] += float(bt.d_chosen[j] * scale);
        dr[size_t(at + p[j].loser)] += float(bt.d_rejected[j] * scale);
      }
      for (size_t k = 0; k < grp.sequences.size(); ++k) rr.add(r[size_t(at) + k]);
      at += int(grp.sequences.size());
    }
    float* dh = rm.trunk.d_hidden_buffer();
    std::fill_n(dh, size_t(rows) * T * C, 0.0f);
    rm.head.backward(rm.trunk.hidden(), rows, T, pos.data(), dr.data(), dh);
    rm.trunk.backward(dh);
    gi = ge;
  }
  st.accuracy = acc_sum / double(st.pairs);
  st.margin = margin_sum / double(st.pairs);
  st.reward_min = rr.mn;
  st.reward_max = rr.mx;
  st.reward_mean = rr.sum / double(rr.n);
}

nlohmann::json RmProgress::to_json() const {
  return {{"step", step}, {"epoch", epoch}, {"next_batch", next_batch}};
}

void RmProgress::scalars_from_json(const nlohmann::json& j) {
  step = json_int<int64_t>(j.at("step"), "the reward-model state's \"step\"");
  epoch = json_int<int64_t>(j.at("epoch"), "the reward-model state's \"epoch\"");
  next_batch = json_int<int64_t>(j.at("next_batch"), "the reward-model state's \"next_batch\"");
}

namespace {
void size_optimizers(RewardModel& rm, const RmOptions& o, RmProgress& pg) {
  const train::AdamWConfig acfg{o.beta1, o.beta2, o.eps, o.weight_decay};
  if (pg.trunk_opt.size() == 0 && pg.head_opt.size() == 0) {
    pg.trunk_opt = train::AdamW(rm.trunk.num_params(), acfg);
    pg.head_opt = train::AdamW(rm.head.w.size(), acfg);
  }
  AJI_CHECK(pg.trunk_opt.size() == rm.trunk.num_params() && pg.head_opt.size() == rm.head.w.size(),
            "rm: the optimizer states do not fit the reward model");
}
}  // namespace

namespace {
// The step's parameter groups: the trunk (its decay ranges) and the head. Taking the trunk's
// params() and grads() brings a device's copies to the host and marks them changed, so a loop
// builds these once (rm_train), not per step.
std::vector<train::ParamGroup> rm_param_groups(RewardModel& rm, RmProgress& pg) {
  std::vector<train::ParamGroup> pgroups(2);
  pgroups[0] = {rm.trunk.params(), rm.trunk.grads(), &pg.trunk_opt, rm_trunk_ranges(rm.trunk), &rm.trunk};
  pgroups[1] = {rm.head.w.data(), rm.head.grad.data(), &pg.head_opt, {{0, rm.head.w.size(), true}}};
  return pgroups;
}

RmStepStats rm_step_in(RewardModel& rm, const std::vector<train::ParamGroup>& pgroups,
                       const std::vector<RmGroup>& groups, const int64_t* idx, int n, const RmOptions& o,
                       float lr, int64_t step_index) {
  RmStepStats st;
  const train::StepStats ss = train::train_step(pgroups, lr, o.grad_clip, "Reward-model training", o.run_dir, [&] {
    rm_forward_backward(rm, groups, idx, n, o, st);
    return st.loss;
  }, step_index);
  st.loss = ss.loss;  // the step's (under mpirun: over every rank's prompts)
  st.lr = ss.lr;
  st.grad_norm = ss.grad_norm;
  st.seconds = ss.seconds;
  return st;
}
}  // namespace

RmStepStats rm_step(RewardModel& rm, const std::vector<RmGroup>& groups, const int64_t* idx, int n,
                    const RmOptions& o, RmProgress& pg, float lr, int64_t step_index) {
  size_optimizers(rm, o, pg);
  return rm_step_in(rm, rm_param_groups(rm, pg), groups, idx, n, o, lr, step_index);
}

// ---- evaluation ---------------------------------------------------------------------------

RmEval rm_evaluate(RewardModel& rm, const std::vector<RmGroup>& groups, int batch) {
  RmEval ev;
  std::vector<std::vector<int32_t>> seqs;
  for (size_t i = 0; i < groups.size(); ++i) {
    check_group(groups[i], int64_t(i), rm.trunk.config().max_seq_len);
    for (const auto& s : groups[i].sequences) seqs.push_back(s);
  }
  if (seqs.empty()) return ev;
  const std::vector<float> r = rm.raw_scores(seqs, batch);
  std::vector<float> rw, rl;
  Range rr;
  double loss = 0;
  size_t at = 0;
  for (const RmGroup& g : groups) {
    const std::vector<fb::RankPair>& p = g.pairs;
    for (size_t k = 0; k < g.sequences.size(); ++k) rr.add(r[at + k]);
    if (!p.empty()) {
      std::vector<float> w(p.size()), l(p.size());
      for (size_t j = 0; j < p.size(); ++j) {
        w[j] = r[at + size_t(p[j].winner)];
        l[j] = r[at + size_t(p[j].loser)];
      }
      loss += fb::bradley_terry_batch(w, l).bt_loss;
      rw.insert(rw.end(), w.begin(), w.end());
      rl.insert(rl.end(), l.begin(), l.end());
      ++ev.groups;
    }
    at += g.sequences.size();
  }
  ev.pairs = int64_t(rw.size());
  ev.reward_min = rr.mn;
  ev.reward_max = rr.mx;
  ev.reward_mean = rr.sum / double(rr.n);
  if (ev.pairs > 0) {
    ev.loss = loss / double(ev.groups);
    ev.accuracy = fb::pairwise_accuracy(rw, rl);
    double m = 0;
    for (size_t j = 0; j < rw.size(); ++j) m += double(rw[j]) - double(rl[j]);
    ev.margin = m / double(rw.size());
  }
  return ev;
}

double rm_chosen_mean(RewardModel& rm, const std::vector<RmGroup>& groups, int batch) {
  std::vector<std::vector<int32_t>> best;
  for (const RmGroup& g : groups) {
    for (int k : rm_group_best(g)) best.push_back(g.sequences[size_t(k)]);
  }
  if (best.empty()) return 0.0;
  const std::vector<float> r = rm.raw_scores(best, batch);
  double s = 0;
  for (float x : r) s += x;
  return s / double(r.size());
}

// ---- the loop -----------------------------------------------------------------------------

int64_t rm_total_steps(size_t n_groups, const RmOptions& o) {
  if (o.steps > 0) return o.steps;
  return std::max<int64_t>(1, int64_t(std::ceil(o.epochs * double(n_groups) / double(std::max(o.batch, 1)))));
}

std::vector<std::vector<int64_t>> rm_epoch_batches(size_t n_groups, int batch, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order(n_groups);
  std::iota(order.begin(), order.end(), int64_t{0});
  Rng rng(seed + 7919ULL * uint64_t(epoch));
  for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[size_t(rng.below(i))]);
  std::vector<std::vector<int64_t>> out;
  for (size_t i = 0; i < order.size(); i += size_t(batch))
    out.emplace_back(order.begin() + long(i), order.begin() + long(std::min(order.size(), i + size_t(batch))));
  return out;
}

RmTrainResult rm_train(RewardModel& rm, const std::vector<RmGroup>& train_all, const std::vector<RmGroup>& val,
                       const RmOptions& o, const RmHooks& hooks, RmProgress* progress) {
  if (o.batch < 1) throw Error("--batch-size must be at least 1");
  RmTrainResult result;
  // Only groups with pairs train; the others (all completions tied) are counted skips.
  std::vector<RmGroup> kept;
  const std::vector<RmGroup>* train_ptr = &train_all;
  for (const RmGroup& g : train_all)
    if (rm_group_pairs(g) == 0) ++result.skipped_groups;
  if (result.skipped_groups > 0) {
    for (const RmGroup& g : train_all)
      if (rm_group_pairs(g) > 0) kept.push_back(g);
    train_ptr = &kept;
  }
  const std::vector<RmGroup>& train = *train_ptr;
  if (train.empty())
    throw Error("no preference pairs to train the reward model on")
        .fix("give pairs whose chosen and rejected differ (or rankings with at least two distinct ranks)");

  RmProgress local;
  RmProgress& pg = progress ? *progress : local;
  size_optimizers(rm, o, pg);
  const std::vector<train::ParamGroup> pgroups = rm_param_groups(rm, pg);

  train::LrSchedule sched;
  sched.lr = o.lr;
  sched.warmup = o.warmup;
  sched.total = rm_total_steps(train.size(), o);
  sched.min_lr_frac = o.min_lr_frac;
  sched.decay = train::LrSchedule::parse_decay(o.decay);

  auto run_eval = [&](int64_t step) {
    if (val.empty()) return;
    result.last_val = rm_evaluate(rm, val);
    if (hooks.on_eval) hooks.on_eval(step, result.last_val);
  };
  std::vector<std::vector<int64_t>> batches;
  if (pg.epoch >= 0) batches = rm_epoch_batches(train.size(), o.batch, o.seed, pg.epoch);
  result.steps_done = pg.step;
  for (int64_t step = pg.step; step < sched.total; ++step) {
    if (size_t(pg.next_batch) >= batches.size()) {
      ++pg.epoch;
      batches = rm_epoch_batches(train.size(), o.batch, o.seed, pg.epoch);
      pg.next_batch = 0;
    }
    const std::vector<int64_t> b = train::rank_share(batches[size_t(pg.next_batch++)]);
    const float lr = sched.at(step);
    const RmStepStats st = rm_step_in(rm, pgroups, train, b.data(), int(b.size()), o, lr, step);
    pg.step = step + 1;
    result.steps_done = step + 1;
    if (result.step_losses.empty()) result.first_step = st;
    result.step_losses.push_back(float(st.loss));
    if (hooks.on_step) hooks.on_step(step + 1, sched.total, st);
    const bool epoch_done = size_t(pg.next_batch) >= batches.size();
    if (step + 1 < sched.total && (o.eval_every > 0 ? (step + 1) % o.eval_every == 0 : epoch_done)) run_eval(step + 1);
    if (hooks.after_step && hooks.after_step(pg) && step + 1 < sched.total) {
      result.stopped_early = true;
      return result;
    }
  }
  run_eval(result.steps_done);
  rm.offset = float(rm_chosen_mean(rm, train));
  return result;
}

// ---- the directory ------------------------------------------------------------------------

bool is_reward_model_dir(const fs::path& dir) {
  std::error_code ec;
  const fs::path f = dir / kRewardModelFile;
  if (!fs::is_regular_file(f, ec)) return false;
  std::ifstream in(f);
  nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  return !j.is_discarded() && j.is_object() && j.value("kind", nlohmann::json()) == "reward_model";
}

void save_reward_model(const fs::path& dir, const RewardModel& rm, const std::vector<fs::path>& copy_files,
                       const nlohmann::json& extra) {
  // The head and rm.json go into a scratch dir, then the whole RM dir is written by
  // save_model_dir (temp dir + rename), so a reader never sees a torn one.
  fs::path parts = dir;
  parts += ".parts." + std::to_string(::getpid());
  std::error_code ec;
  fs::remove_all(parts, ec);
  fs::create_directories(parts);
  try {
    train::save_scalar_head(parts / kScoreHeadFile, rm.head);
    nlohmann::json j = extra.is_object() ? extra : nlohmann::json::object();
    j["kind"] = "reward_model";
    j["offset"] = rm.offset;
    j["pad_id"] = rm.pad_id;
    j["head"] = kScoreHeadFile;
    write_file_atomic(parts / kRewardModelFile, j.dump(2) + "\n");
    std::vector<fs::path> files = copy_files;
    files.push_back(parts / kScoreHeadFile);
    files.push_back(parts / kRewardModelFile);
    train::save_model_dir(dir, rm.trunk, files);
  } catch (...) {
    fs::remove_all(parts, ec);
    throw;
  }
  fs::remove_all(parts, ec);
}

RewardModel load_reward_model(const fs::path& dir) {
  std::error_code ec;
  const fs::path f = dir / kRewardModelFile;
  if (!fs::is_regular_file(f, ec))
    throw Error(dir.string() + " is not a reward model directory (no " + std::string(kRewardModelFile) + ")")
        .at(dir.string())
        .fix("train one with `aji rm train --model SFT_DIR --data PREFS.jsonl --out RM_DIR` and pass RM_DIR");
  std::ifstream in(f);
  nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  if (j.is_discarded() || !j.is_object() || j.value("kind", nlohmann::json()) != "reward_model" ||
      !j.contains("offset") || !j["offset"].is_number())
    throw Error("broken reward model file: expected a JSON object with \"kind\": \"reward_model\" and \"offset\"")
        .at(f.string())
        .fix("write the reward model again with `aji rm train`");
  model::ModelConfig cfg = train::load_model_config(dir);
  model::Model m(cfg);
  train::load_weights(m, dir / "model.safetensors");
  RewardModel rm(std::move(m), json_int_or<int>(j, "pad_id", 0, "\"pad_id\"", f.string()));
  rm.head = train::load_scalar_head(dir / kScoreHeadFile, cfg.d_model);
  rm.offset = j["offset"].get<float>();
  if (!std::isfinite(rm.offset))  // 1e39 fits a double, not a float: every reward would be infinite
    throw Error("broken reward model file: \"offset\" is " + j["offset"].dump() + ", not a finite float")
        .at(f.string())
        .fix("write the reward model again with `aji rm train`");
  rm.info = j;
  return rm;
}

}  // namespace aji::align
