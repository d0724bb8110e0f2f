#include "aji/align/sft_train.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "aji/base/dist.h"
#include "aji/base/error.h"
#include "aji/base/rng.h"
#include "aji/train/trainer_run.h"

namespace aji::align {

using nlohmann::json;

json SftState::to_json() const { return {{"step", step}, {"epoch", epoch}, {"next_row", next_row}}; }

SftState SftState::from_json(const json& j) {
  SftState s;
  s.step = j.at("step");
  s.epoch = j.at("epoch");
  s.next_row = j.at("next_row");
  return s;
}

int64_t sft_total_steps(int64_t rows, const SftOptions& o) {
  if (o.steps && *o.steps > 0) return *o.steps;
  const double per_step = double(o.batch) * std::max(1, o.grad_accum);
  return std::max<int64_t>(1, (int64_t)std::ceil(o.epochs * double(rows) / per_step));
}

LossSum sft_validation_loss(model::Model& model, const std::vector<RenderedSequence>& seqs, int batch, int T,
                            uint32_t pad_id) {
  PackOptions po;
  po.T = T;
  po.layout = BatchLayout::kPad;
  PackReport rep;
  const std::vector<PackedRow> rows = plan_rows(seqs, po, &rep);
  LossSum total;
  for (size_t r = 0; r < rows.size(); r += size_t(batch)) {
    const int B = int(std::min<size_t>(size_t(batch), rows.size() - r));
    TokenBatch tb = make_batch(seqs, rows, r, B, T, pad_id, /*shrink_to_longest=*/true);
    LossSum s = sft_eval_loss(model, tb);
    total.sum += s.sum;
    total.count += s.count;
  }
  return total;
}

namespace {
// Row order of an epoch: the planned rows shuffled by a stream of (seed, epoch).
std::vector<PackedRow> epoch_rows(const std::vector<PackedRow>& planned, uint64_t seed, int64_t epoch) {
  std::vector<PackedRow> rows = planned;
  uint64_t mix = seed ^ (0x9E3779B97F4A7C15ULL * uint64_t(epoch + 1));
  shuffle_rows(rows, splitmix64(mix));
  return rows;
}
}  // namespace

SftResult sft_train(model::Model& model, train::AdamW& optimizer, const std::vector<RenderedSequence>& train_seqs,
                    const std::vector<RenderedSequence>& val, const SftOptions& o, SftState state,
                    const SftHooks& hooks) {
  if (o.batch <= 0 || o.grad_accum <= 0) throw Error("SFT batch size and gradient accumulation must be positive");
  // Data parallelism (base/dist.h): --grad-accum micro-batches per step over all ranks;
  // rank r builds and runs micro-batches r, r+N, ... of each step (train::rank_takes).
  dist::Communicator& comm = dist::world();
  const int ranks = comm.size();
  train::require_rank_split(o.grad_accum, "--grad-accum");
  const int T = o.T(model.config().max_seq_len);
  if (T > model.config().max_seq_len)
    throw Error("--seq-len " + std::to_string(T) + " is longer than the model's context (" +
                std::to_string(model.config().max_seq_len) + ")")
        .fix("use --seq-len <= " + std::to_string(model.config().max_seq_len));
  SftResult result;
  PackOptions po;
  po.T = T;
  po.layout = o.layout;
  const std::vector<PackedRow> planned = plan_rows(train_seqs, po, &result.pack);
  if (planned.empty())
    throw Error("no training conversation is left after rendering (" + result.pack.describe() + ")")
        .fix("check that the data has assistant turns and that --seq-len leaves room for them");
  const int64_t steps = sft_total_steps((int64_t)planned.size(), o);
  train::LrSchedule sched;
  sched.lr = o.lr;
  sched.total = steps;
  sched.warmup = o.warmup;
  sched.min_lr_frac = o.min_lr_frac;
  sched.decay = train::LrSchedule::parse_decay(o.decay);
  const std::vector<train::ParamGroup> groups = {train::ParamGroup::whole_model(model, optimizer)};

  std::vector<PackedRow> rows = epoch_rows(planned, o.seed, state.epoch);
  std::vector<TokenBatch> micro;
  while (state.step < steps) {
    const auto t0 = std::chrono::steady_clock::now();
    // The step's micro-batches first: the loss is the token mean over all of them.
    micro.clear();
    int64_t step_targets = 0, step_tokens = 0;
    for (int a = 0; a < o.grad_accum; ++a) {
      if (state.next_row >= (int64_t)rows.size()) {
        ++state.epoch;
        state.next_row = 0;
        rows = epoch_rows(planned, o.seed, state.epoch);
      }
      const int B = (int)std::min<int64_t>(o.batch, (int64_t)rows.size() - state.next_row);
      if (train::rank_takes(a)) {
        micro.push_back(make_batch(train_seqs, rows, (size_t)state.next_row, B, T, o.pad_id, /*shrink_to_longest=*/true));
        step_targets += micro.back().n_targets;
        step_tokens += (int64_t)micro.back().B * micro.back().T;
      }
      state.next_row += B;
    }
    if (ranks > 1) {  // the step's counts over every rank
      double counts[2] = {(double)step_targets, (double)step_tokens};
      comm.allreduce_sum(counts, 2);
      step_targets = (int64_t)counts[0];
      step_tokens = (int64_t)counts[1];
    }
    const train::StepStats ss = train::train_step(groups, sched.at(state.step), o.grad_clip, "SFT", o.run_dir, [&] {
      double loss = 0.0;
      for (const TokenBatch& tb : micro) {
        if (tb.n_targets == 0) continue;
        // Times the ranks: train_step takes the mean over them, the step's loss is the sum.
        const double share = double(tb.n_targets) / double(step_targets) * ranks;
        loss += share * sft_forward_backward(model, tb, (float)share);
      }
      return loss;
    }, state.step);
    const double loss = ss.loss, norm = ss.grad_norm;
    const float lr = ss.lr;
    ++state.step;
    result.step_losses.push_back((float)loss);
    SftStepInfo info;
    info.step = state.step;
    info.steps = steps;
    info.loss = loss;
    info.grad_norm = norm;
    info.lr = lr;
    info.targets = step_targets;
    info.tokens = step_tokens;
    info.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (hooks.on_step) hooks.on_step(info);
    const bool last = state.step == steps;
    if (!val.empty() && comm.rank() == 0 && ((o.eval_every > 0 && state.step % o.eval_every == 0) || last)) {
      LossSum v = sft_validation_loss(model, val, o.batch, T, o.pad_id);
      result.last_val_loss = v.mean();
      if (hooks.on_eval) hooks.on_eval(state.step, v);
    }
    if (hooks.after_step && hooks.after_step(state) && !last) {
      result.stopped_early = true;
      break;
    }
  }
  result.state = state;
  return result;
}

}  // namespace aji::align
