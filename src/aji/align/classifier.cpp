#include "aji/align/classifier.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <numeric>

#include "aji/base/error.h"
#include "aji/base/rng.h"
#include "aji/train/safetensors.h"
#include "aji/train/trainer_run.h"

namespace aji::align {

Pooling parse_pooling(const std::string& name) {
  if (name == "last") return Pooling::kLastToken;
  if (name == "first") return Pooling::kFirstToken;
  throw Error("unknown pooling '" + name + "'").fix("use 'last' (the last non-pad token) or 'first'");
}

std::string pooling_name(Pooling p) { return p == Pooling::kLastToken ? "last" : "first"; }

TrainableBlocks TrainableBlocks::parse(const std::string& spec) {
  TrainableBlocks t;
  if (spec == "head") {
    t.kind = Kind::kHead;
    t.n = 0;
  } else if (spec == "all") {
    t.kind = Kind::kAll;
    t.n = 0;
  } else if (spec == "last") {
    t.kind = Kind::kLastBlocks;
    t.n = 1;
  } else if (spec.rfind("last:", 0) == 0) {
    t.kind = Kind::kLastBlocks;
    const std::string num = spec.substr(5);
    char* end = nullptr;
    const long v = std::strtol(num.c_str(), &end, 10);
    if (num.empty() || *end != '\0' || v < 1)
      throw Error("bad trainable blocks '" + spec + "'").fix("write last:N with N >= 1, e.g. last:2");
    t.n = (int)v;
  } else {
    throw Error("unknown trainable blocks '" + spec + "'")
        .fix("use head (the class head only), last or last:N (the top N blocks + final norm + head), or all");
  }
  return t;
}

std::string TrainableBlocks::name() const {
  switch (kind) {
    case Kind::kHead: return "head";
    case Kind::kAll: return "all";
    case Kind::kLastBlocks: return "last:" + std::to_string(n);
  }
  return "?";
}

int TrainableBlocks::first_layer(const model::ModelConfig& c) const {
  switch (kind) {
    case Kind::kHead: return c.n_layer;
    case Kind::kAll: return 0;
    case Kind::kLastBlocks:
      if (n > c.n_layer)
        throw Error("--trainable last:" + std::to_string(n) + " but the model has only " + std::to_string(c.n_layer) +
                    " blocks")
            .fix("use last:N with N <= " + std::to_string(c.n_layer) + ", or all");
      return c.n_layer - n;
  }
  return 0;
}

namespace {

// The block index of a tensor name ("transformer.h.3.attn..." / "model.layers.3.mlp..."), or -1.
int block_of(const std::string& name) {
  for (const char* prefix : {"transformer.h.", "model.layers."}) {
    const size_t len = std::strlen(prefix);
    if (name.compare(0, len, prefix) == 0) return std::atoi(name.c_str() + len);
  }
  return -1;
}

bool is_final_norm(const std::string& name) {
  return name.rfind("transformer.ln_f.", 0) == 0 || name.rfind("model.norm.", 0) == 0;
}

}  // namespace

std::vector<train::DecayRange> trainable_trunk_ranges(const model::Model& model, const TrainableBlocks& blocks) {
  std::vector<train::DecayRange> ranges;
  if (blocks.kind == TrainableBlocks::Kind::kHead) return ranges;
  const int first = blocks.first_layer(model.config());
  for (const auto& t : model.tensors()) {
    if (t.name == "lm_head.weight") continue;
    const int b = block_of(t.name);
    const bool take = blocks.kind == TrainableBlocks::Kind::kAll || (b >= 0 && b >= first) || is_final_norm(t.name);
    if (take) ranges.push_back({t.offset, t.numel, t.decay});
  }
  return ranges;
}

// ---- the head ------------------------------------------------------------------------------

ClassHead::ClassHead(int n, int C) : n_classes(n), d_model(C) {
  if (n < 2) throw Error("a class head needs at least 2 classes, got " + std::to_string(n));
  params.assign(size_t(n) * C + size_t(n), 0.0f);
  grads.assign(params.size(), 0.0f);
}

void ClassHead::init(uint64_t seed) {
  Rng rng(seed);
  const float bound = 1.0f / std::sqrt(float(d_model));
  for (float& p : params) p = (2.0f * rng.uniform_float() - 1.0f) * bound;  // weight, then bias
}

void ClassHead::zero_grads() { std::fill(grads.begin(), grads.end(), 0.0f); }

void ClassHead::forward(const float* pooled, int B, float* logits) const {
  const int C = d_model;
  for (int b = 0; b < B; ++b)
    for (int k = 0; k < n_classes; ++k) {
      const float* w = weight() + size_t(k) * C;
      const float* x = pooled + size_t(b) * C;
      double acc = 0;
      for (int i = 0; i < C; ++i) acc += double(w[i]) * x[i];
      logits[size_t(b) * n_classes + k] = float(acc) + bias()[k];
    }
}

void ClassHead::backward(const float* pooled, const float* d_logits, int B, float* d_pooled) {
  const int C = d_model;
  float* d_weight = grads.data();
  float* d_bias = grads.data() + weight_size();
  if (d_pooled) std::fill_n(d_pooled, size_t(B) * C, 0.0f);
  for (int b = 0; b < B; ++b) {
    const float* x = pooled + size_t(b) * C;
    for (int k = 0; k < n_classes; ++k) {
      const float g = d_logits[size_t(b) * n_classes + k];
      d_bias[k] += g;
      float* dw = d_weight + size_t(k) * C;
      const float* w = weight() + size_t(k) * C;
      for (int i = 0; i < C; ++i) dw[i] += g * x[i];
      if (d_pooled) {
        float* dx = d_pooled + size_t(b) * C;
        for (int i = 0; i < C; ++i) dx[i] += g * w[i];
      }
    }
  }
}

void ClassHead::save(const std::string& path) const {
  train::save_safetensors(path,
                          {{"score.weight", {n_classes, d_model}, weight()}, {"score.bias", {n_classes}, bias()}},
                          {{"format", "aji-class-head"}});
}

ClassHead ClassHead::load(const std::string& path) {
  const train::SafeTensorsFile f = train::SafeTensorsFile::load(path);
  if (!f.has("score.weight") || !f.has("score.bias"))
    throw Error("not a class head: score.weight or score.bias is missing").at(path).fix("point --model at a directory "
                                                                                        "written by `aji classify train`");
  const auto& w = f.tensors.at("score.weight");
  const auto& b = f.tensors.at("score.bias");
  if (w.shape.size() != 2 || b.shape.size() != 1 || b.shape[0] != w.shape[0])
    throw Error("class head shapes do not fit: score.weight must be (n,C) and score.bias (n)").at(path);
  ClassHead h((int)w.shape[0], (int)w.shape[1]);
  std::copy(w.data.begin(), w.data.end(), h.weight());
  std::copy(b.data.begin(), b.data.end(), h.bias());
  return h;
}

// ---- forward / eval -------------------------------------------------------------------------

int pooled_hidden(model::Model& model, const std::vector<std::vector<int32_t>>& seqs, const int64_t* index, int B,
                  Pooling pooling, int32_t pad_id, float* pooled) {
  const int Tmax = model.config().max_seq_len;
  int T = 1;
  for (int b = 0; b < B; ++b) {
    const size_t len = seqs[size_t(index[b])].size();
    if (len == 0 || len > size_t(Tmax))
      throw Error("classification input " + std::to_string(index[b]) + " has " + std::to_string(len) +
                  " tokens; it needs 1.." + std::to_string(Tmax))
          .fix("truncate inputs to the model's context (--max-len)");
    T = std::max(T, int(len));
  }
  std::vector<int32_t> tokens(size_t(B) * T, pad_id);
  for (int b = 0; b < B; ++b) {
    const auto& s = seqs[size_t(index[b])];
    std::copy(s.begin(), s.end(), tokens.begin() + size_t(b) * T);
  }
  model.forward(tokens.data(), B, T);
  const int C = model.config().d_model;
  const float* h = model.hidden();
  for (int b = 0; b < B; ++b) {
    const int pos = pooled_position(int(seqs[size_t(index[b])].size()), pooling);
    std::memcpy(pooled + size_t(b) * C, h + (size_t(b) * T + pos) * C, sizeof(float) * C);
  }
  return T;
}

std::vector<float> pooled_features(model::Model& model, const std::vector<std::vector<int32_t>>& seqs,
                                   Pooling pooling, int32_t pad_id, int batch,
                                   const std::function<void(size_t, size_t)>& progress) {
  const int C = model.config().d_model;
  std::vector<float> out(seqs.size() * size_t(C)), rows(size_t(batch) * C);
  // Longest first, so each batch holds similar lengths and little padding; the features go
  // back to the inputs' order (pooling at the last non-pad token makes them padding-invariant).
  std::vector<int64_t> index(seqs.size());
  std::iota(index.begin(), index.end(), int64_t{0});
  std::stable_sort(index.begin(), index.end(),
                   [&](int64_t a, int64_t b) { return seqs[size_t(a)].size() > seqs[size_t(b)].size(); });
  for (size_t i = 0; i < seqs.size(); i += size_t(batch)) {
    const int B = int(std::min(seqs.size() - i, size_t(batch)));
    pooled_hidden(model, seqs, index.data() + i, B, pooling, pad_id, rows.data());
    for (int b = 0; b < B; ++b)
      std::memcpy(out.data() + size_t(index[i + size_t(b)]) * C, rows.data() + size_t(b) * C, sizeof(float) * C);
    if (progress) progress(i + size_t(B), seqs.size());
  }
  return out;
}

double class_xent(const float* logits, const int* labels, int B, int n, float* d_logits, int64_t* correct) {
  double total = 0;
  for (int b = 0; b < B; ++b) {
    const float* z = logits + size_t(b) * n;
    const int y = labels[b];
    AJI_CHECK(y >= 0 && y < n, "class_xent: label outside [0, n)");
    float zmax = z[0];
    int arg = 0;
    for (int k = 1; k < n; ++k)
      if (z[k] > zmax) zmax = z[k], arg = k;
    double sum = 0;
    for (int k = 0; k < n; ++k) sum += std::exp(double(z[k]) - zmax);
    const double lse = zmax + std::log(sum);
    total += lse - z[y];
    if (correct && arg == y) ++*correct;
    if (d_logits)
      for (int k = 0; k < n; ++k)
        d_logits[size_t(b) * n + k] = float((std::exp(double(z[k]) - lse) - (k == y ? 1.0 : 0.0)) / B);
  }
  return total / B;
}

namespace {

// The head's half of a training batch: logits, CE, and d logits back through the head
// (accumulating its grads; d pooled (B,C) when not null).
BatchLoss head_forward_backward(ClassHead& head, const float* pooled, const int* labels, int B, float* d_pooled) {
  const int n = head.n_classes;
  std::vector<float> logits(size_t(B) * n), d_logits(size_t(B) * n);
  head.forward(pooled, B, logits.data());
  BatchLoss out;
  out.loss = class_xent(logits.data(), labels, B, n, d_logits.data(), &out.correct);
  head.backward(pooled, d_logits.data(), B, d_pooled);
  return out;
}

}  // namespace

BatchLoss classify_forward_backward(model::Model& model, ClassHead& head, const std::vector<std::vector<int32_t>>& seqs,
                                    const int64_t* index, int B, const int* labels, Pooling pooling, int32_t pad_id,
                                    const TrainableBlocks& blocks) {
  const int C = model.config().d_model;
  const bool train_trunk = blocks.kind != TrainableBlocks::Kind::kHead;
  std::vector<float> pooled(size_t(B) * C), d_pooled(train_trunk ? size_t(B) * C : 0);
  const int T = pooled_hidden(model, seqs, index, B, pooling, pad_id, pooled.data());
  BatchLoss out = head_forward_backward(head, pooled.data(), labels, B, train_trunk ? d_pooled.data() : nullptr);
  out.T = T;
  if (!train_trunk) return out;
  // d hidden is zero except at each row's pooled position.
  float* dh = model.d_hidden_buffer();
  std::fill_n(dh, size_t(B) * T * C, 0.0f);
  for (int b = 0; b < B; ++b) {
    const int pos = pooled_position(int(seqs[size_t(index[b])].size()), pooling);
    std::memcpy(dh + (size_t(b) * T + pos) * C, d_pooled.data() + size_t(b) * C, sizeof(float) * C);
  }
  model.backward(dh, blocks.first_layer(model.config()));
  return out;
}

std::vector<float> classifier_logits(model::Model& model, const ClassHead& head,
                                     const std::vector<std::vector<int32_t>>& seqs, Pooling pooling, int32_t pad_id,
                                     int batch) {
  const std::vector<float> feats = pooled_features(model, seqs, pooling, pad_id, batch);
  std::vector<float> logits(seqs.size() * size_t(head.n_classes));
  head.forward(feats.data(), int(seqs.size()), logits.data());
  return logits;
}

ClassifyEval evaluate_features(const ClassHead& head, const std::vector<float>& features, const std::vector<int>& labels) {
  const int n = head.n_classes;
  const int N = int(labels.size());
  AJI_CHECK(features.size() == size_t(N) * head.d_model, "evaluate_features: features and labels disagree");
  std::vector<float> logits(size_t(N) * n);
  head.forward(features.data(), N, logits.data());
  ClassifyEval ev;
  ev.predictions.resize(size_t(N));
  ev.probabilities.resize(logits.size());
  double loss = 0;
  int64_t labeled = 0, hits = 0;
  for (int i = 0; i < N; ++i) {
    const float* z = logits.data() + size_t(i) * n;
    const int arg = int(std::max_element(z, z + n) - z);
    ev.predictions[size_t(i)] = arg;
    double sum = 0;
    for (int k = 0; k < n; ++k) sum += std::exp(double(z[k]) - z[arg]);
    for (int k = 0; k < n; ++k) ev.probabilities[size_t(i) * n + k] = float(std::exp(double(z[k]) - z[arg]) / sum);
    if (labels[size_t(i)] >= 0) {
      ++labeled;
      loss += class_xent(z, &labels[size_t(i)], 1, n, nullptr, &hits);
    }
  }
  if (labeled > 0) {
    ev.loss = loss / double(labeled);
    ev.accuracy = double(hits) / double(labeled);
  }
  return ev;
}

ClassifyEval classify_evaluate(model::Model& model, const ClassHead& head, const LabeledIds& data, Pooling pooling,
                               int32_t pad_id, int batch) {
  return evaluate_features(head, pooled_features(model, data.ids, pooling, pad_id, batch), data.labels);
}

// ---- training ---------------------------------------------------------------------------------

std::vector<std::vector<int64_t>> plan_epoch_batches(const std::vector<std::vector<int32_t>>& seqs, int batch,
                                                     uint64_t seed, int64_t epoch, bool group_by_length) {
  const size_t N = seqs.size();
  std::vector<int64_t> order(N);
  std::iota(order.begin(), order.end(), int64_t{0});
  Rng rng(seed + 7919 * uint64_t(epoch));
  for (size_t i = N; i > 1; --i) std::swap(order[i - 1], order[size_t(rng.below(i))]);
  std::vector<std::vector<int64_t>> batches;
  const size_t chunk = group_by_length ? size_t(batch) * 50 : std::max<size_t>(N, 1);
  for (size_t c = 0; c < N; c += chunk) {
    const size_t end = std::min(N, c + chunk);
    if (group_by_length)
      std::stable_sort(order.begin() + long(c), order.begin() + long(end),
                       [&](int64_t a, int64_t b) { return seqs[size_t(a)].size() > seqs[size_t(b)].size(); });
    for (size_t b = c; b < end; b += size_t(batch))
      batches.emplace_back(order.begin() + long(b), order.begin() + long(std::min(end, b + size_t(batch))));
  }
  if (group_by_length)
    for (size_t i = batches.size(); i > 1; --i) std::swap(batches[i - 1], batches[size_t(rng.below(i))]);
  return batches;
}

int64_t classify_total_steps(size_t n_train, const ClassifyOptions& o) {
  if (o.steps > 0) return o.steps;
  return std::max<int64_t>(1, (int64_t)std::ceil(o.epochs * double(n_train) / double(o.batch)));
}

nlohmann::json ClassifyProgress::to_json() const {
  auto num = [](double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); };
  return {{"step", step},           {"epoch", epoch},
          {"next_batch", next_batch}, {"best_step", best_step},
          {"best_val_accuracy", num(best_val_accuracy)}, {"best_val_loss", num(best_val_loss)}};
}

void ClassifyProgress::scalars_from_json(const nlohmann::json& j) {
  auto num = [&](const char* k) { return j.contains(k) && j[k].is_number() ? j[k].get<double>() : double(NAN); };
  step = j.at("step");
  epoch = j.at("epoch");
  next_batch = j.at("next_batch");
  best_step = j.at("best_step");
  best_val_accuracy = num("best_val_accuracy");
  best_val_loss = num("best_val_loss");
}

ClassifyTrainResult classify_train(model::Model& model, ClassHead& head, const LabeledIds& train,
                                   const LabeledIds& val, const ClassifyOptions& o, const ClassifyHooks& hooks,
                                   ClassifyProgress* progress) {
  using clock = std::chrono::steady_clock;
  if (train.size() == 0) throw Error("no training examples for the classifier");
  if (o.batch < 1) throw Error("--batch-size must be at least 1");
  if (head.d_model != model.config().d_model)
    throw Error("the class head has width " + std::to_string(head.d_model) + " but the model " +
                std::to_string(model.config().d_model));
  for (size_t i = 0; i < train.size(); ++i)
    AJI_CHECK(train.labels[i] >= 0 && train.labels[i] < head.n_classes, "classify_train: a training label is unknown");

  const model::ModelConfig& cfg = model.config();
  const int C = cfg.d_model;
  const bool head_only = o.trainable.kind == TrainableBlocks::Kind::kHead;
  const std::vector<train::DecayRange> trunk_ranges = trainable_trunk_ranges(model, o.trainable);
  const std::vector<train::DecayRange> head_ranges = {{0, head.weight_size(), true},
                                                      {head.weight_size(), size_t(head.n_classes), false}};
  const train::AdamWConfig acfg{o.beta1, o.beta2, o.eps, o.weight_decay};
  ClassifyProgress local;
  ClassifyProgress& pg = progress ? *progress : local;
  if (pg.step == 0) {
    pg = ClassifyProgress{};
    pg.trunk_opt = train::AdamW(head_only ? 0 : model.num_params(), acfg);
    pg.head_opt = train::AdamW(head.num_params(), acfg);
  }
  AJI_CHECK(pg.head_opt.size() == head.num_params() &&
                pg.trunk_opt.size() == (head_only ? 0 : model.num_params()),
            "classify_train: the optimizer states do not fit the model and head");
  // Everything that trains, clipped over one global norm (head first, then the trunk).
  std::vector<train::ParamGroup> groups = {{head.params.data(), head.grads.data(), &pg.head_opt, head_ranges}};
  if (!head_only) groups.push_back({model.params(), model.grads(), &pg.trunk_opt, trunk_ranges, &model});  // &model: its bf16 copy follows

  train::LrSchedule sched;
  sched.lr = o.lr;
  sched.warmup = o.warmup;
  sched.total = classify_total_steps(train.size(), o);
  sched.min_lr_frac = o.min_lr_frac;
  sched.decay = train::LrSchedule::parse_decay(o.decay);

  ClassifyTrainResult result;
  result.cached_features = head_only;
  result.steps_done = pg.step;
  result.best_step = pg.best_step;
  result.best_val_accuracy = pg.best_val_accuracy;
  std::vector<float> train_feats, val_feats;
  if (head_only) {
    const size_t total = train.size() + val.size();
    train_feats = pooled_features(model, train.ids, o.pooling, o.pad_id, std::max(o.batch, 16), [&](size_t d, size_t) {
      if (hooks.on_features) hooks.on_features(d, total);
    });
    if (val.size())
      val_feats = pooled_features(model, val.ids, o.pooling, o.pad_id, std::max(o.batch, 16), [&](size_t d, size_t) {
        if (hooks.on_features) hooks.on_features(train.size() + d, total);
      });
  }
  // keep_best: a copy of everything that trains, taken at the best evaluation so far.
  ClassifyEval best_eval;
  best_eval.accuracy = pg.best_val_accuracy;
  best_eval.loss = pg.best_val_loss;
  auto run_eval = [&](int64_t step) {
    if (val.size() == 0) return;
    result.last_val = head_only ? evaluate_features(head, val_feats, val.labels)
                                : classify_evaluate(model, head, val, o.pooling, o.pad_id, std::max(o.batch, 16));
    if (hooks.on_eval) hooks.on_eval(step, result.last_val);
    if (o.keep_best && !(result.last_val.accuracy <= result.best_val_accuracy)) {  // NaN best: the first
      result.best_val_accuracy = result.last_val.accuracy;
      result.best_step = step;
      best_eval = result.last_val;
      pg.best_step = step;
      pg.best_val_accuracy = result.last_val.accuracy;
      pg.best_val_loss = result.last_val.loss;
      pg.best_head = head.params;
      pg.best_trunk.clear();
      for (const auto& r : trunk_ranges)
        pg.best_trunk.insert(pg.best_trunk.end(), model.params() + r.offset, model.params() + r.offset + r.size);
    }
  };

  std::vector<std::vector<int64_t>> batches;  // this epoch's
  if (pg.epoch >= 0) batches = plan_epoch_batches(train.ids, o.batch, o.seed, pg.epoch, o.group_by_length);
  std::vector<float> pooled(head_only ? size_t(o.batch) * C : 0);
  std::vector<int> labels(size_t(o.batch));
  for (int64_t step = pg.step; step < sched.total; ++step) {
    const auto t0 = clock::now();
    if (size_t(pg.next_batch) >= batches.size()) {
      ++pg.epoch;
      batches = plan_epoch_batches(train.ids, o.batch, o.seed, pg.epoch, o.group_by_length);
      pg.next_batch = 0;
    }
    const int64_t epoch = pg.epoch;
    const std::vector<int64_t> batch_idx = train::rank_share(batches[size_t(pg.next_batch++)]);
    const int B = int(batch_idx.size());
    const int64_t* idx = batch_idx.data();
    for (int b = 0; b < B; ++b) labels[size_t(b)] = train.labels[size_t(idx[b])];

    BatchLoss bl;
    const train::StepStats ss = train::train_step(groups, sched.at(step), o.grad_clip, "Classification", o.run_dir, [&] {
      if (head_only) {  // the trunk is frozen: its cached features stand in for the forward
        for (int b = 0; b < B; ++b)
          std::memcpy(pooled.data() + size_t(b) * C, train_feats.data() + size_t(idx[b]) * C, sizeof(float) * C);
        bl = head_forward_backward(head, pooled.data(), labels.data(), B, nullptr);
      } else {
        // train_step zeroes only the trainable ranges: backward writes nothing else, and
        // nothing else is read (the whole buffer is a measurable memset every step).
        bl = classify_forward_backward(model, head, train.ids, idx, B, labels.data(), o.pooling, o.pad_id, o.trainable);
      }
      return bl.loss;
    }, step);
    const double loss = ss.loss, norm = ss.grad_norm;
    const float lr = ss.lr;

    result.steps_done = step + 1;
    pg.step = step + 1;
    result.step_losses.push_back(float(loss));
    if (hooks.on_step) {
      ClassifyStepInfo info;
      info.step = step + 1;
      info.steps = sched.total;
      info.epoch = epoch;
      info.loss = loss;
      info.batch_accuracy = double(bl.correct) / B;
      info.grad_norm = norm;
      info.lr = lr;
      info.examples = B;
      for (int b = 0; b < B; ++b) info.tokens += int64_t(train.ids[size_t(idx[b])].size());
      info.padded_tokens = int64_t(B) * bl.T;
      info.seconds = std::chrono::duration<double>(clock::now() - t0).count();
      hooks.on_step(info);
    }
    // Evaluations inside the run: every eval_every steps, or (0) at the end of every epoch;
    // the last step's comes after the loop. Before after_step, so a checkpoint holds them.
    const bool epoch_done = size_t(pg.next_batch) >= batches.size();
    if (step + 1 < sched.total && (o.eval_every > 0 ? (step + 1) % o.eval_every == 0 : epoch_done)) run_eval(step + 1);
    if (hooks.after_step && hooks.after_step(pg) && step + 1 < sched.total) {
      result.stopped_early = true;
      break;
    }
  }
  run_eval(result.steps_done);
  if (o.keep_best && result.best_step >= 0 && result.best_step != result.steps_done) {
    AJI_CHECK(pg.best_head.size() == head.params.size(), "classify_train: the best weights were not kept");
    head.params = pg.best_head;
    size_t at = 0;
    for (const auto& r : trunk_ranges) {
      std::copy_n(pg.best_trunk.begin() + long(at), r.size, model.params() + r.offset);
      at += r.size;
    }
    if (!best_eval.predictions.empty()) {
      result.last_val = best_eval;
    } else {  // the best was in an earlier session (resumed run): evaluate its weights again
      result.last_val = head_only ? evaluate_features(head, val_feats, val.labels)
                                  : classify_evaluate(model, head, val, o.pooling, o.pad_id, std::max(o.batch, 16));
    }
  }
  return result;
}

}  // namespace aji::align
