// Classification fine-tuning (post-training spec §2, the LLMs-from-scratch ch06 recipe):
// the pretrained trunk plus a class head Linear(C, n_classes) read at one position.
//
// Data flow
//   token ids (one sequence per example, no padding) --make rows of a batch, right-padded
//   with pad_id--> Model::forward (B,T) --> hidden (B,T,C) after the final norm
//   --pool: the last non-pad position (kLastToken; with a causal mask only it has seen the
//   whole input) or position 0 (kFirstToken, a negative control)--> (B,C)
//   --ClassHead--> logits (B,n) --softmax cross-entropy vs the class id--> loss
//   backward: dlogits --head--> d pooled (B,C), scattered into d_hidden (B,T,C) at the pooled
//   rows --Model::backward(first_trainable_layer)--> trunk grads of the trainable blocks.
// Which parameters train (TrainableBlocks): the head only, the last N blocks + the final
// norm + the head (ch06 default: N = 1), or everything. Frozen parameters are never handed
// to AdamW, so they stay bit-identical. With the head only, the trunk is a fixed feature
// extractor: the pooled features are computed once and the epochs run on them.
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "aji/model/model.h"
#include "aji/train/optimizer.h"

namespace aji::align {

enum class Pooling { kLastToken, kFirstToken };
Pooling parse_pooling(const std::string& name);  // "last" | "first"
std::string pooling_name(Pooling p);

struct TrainableBlocks {
  enum class Kind { kHead, kLastBlocks, kAll };
  Kind kind = Kind::kLastBlocks;
  int n = 1;  // kLastBlocks: how many of the top blocks

  // "head", "last" (= last:1), "last:N", "all"; throws aji::Error with the accepted forms.
  static TrainableBlocks parse(const std::string& spec);
  std::string name() const;
  // The lowest block that trains: n_layer for the head only, n_layer - N, or 0.
  int first_layer(const model::ModelConfig& config) const;
};

// The trunk parameters that train under `blocks`, as AdamW ranges (decay flags from the
// tensor table): blocks >= first_layer, plus the final norm unless head-only, plus the
// embeddings under kAll. An untied lm_head is never included (classification does not use it).
std::vector<train::DecayRange> trainable_trunk_ranges(const model::Model& model, const TrainableBlocks& blocks);

// Linear(C, n) with bias, stored like nn.Linear / Hugging Face "score": weight (n,C)
// row-major, then bias (n), in ONE buffer (the unit AdamW steps), gradients beside it.
struct ClassHead {
  int n_classes = 0;
  int d_model = 0;
  std::vector<float> params;  // weight (n,C) | bias (n)
  std::vector<float> grads;   // same layout

  ClassHead() = default;
  ClassHead(int n_classes, int d_model);
  size_t weight_size() const { return size_t(n_classes) * size_t(d_model); }
  float* weight() { return params.data(); }
  const float* weight() const { return params.data(); }
  float* bias() { return params.data() + weight_size(); }
  const float* bias() const { return params.data() + weight_size(); }
  // nn.Linear's default: U(-1/sqrt(C), 1/sqrt(C)) for weight and bias, from a seeded Rng.
  void init(uint64_t seed);
  void zero_grads();
  size_t num_params() const { return params.size(); }
  // pooled (B,C) -> logits (B,n)
  void forward(const float* pooled, int B, float* logits) const;
  // Given d logits (B,n): accumulates grads and writes d pooled (B,C) (may be null).
  void backward(const float* pooled, const float* d_logits, int B, float* d_pooled);

  // class_head.safetensors: "score.weight" (n,C), "score.bias" (n).
  void save(const std::string& path) const;
  static ClassHead load(const std::string& path);  // errors name the file
};

// Labeled token sequences: ids[i] (no padding) with class labels[i] (or -1 when unknown).
struct LabeledIds {
  std::vector<std::vector<int32_t>> ids;
  std::vector<int> labels;
  size_t size() const { return ids.size(); }
};

// The pooled position of one unpadded sequence of length len (>= 1).
inline int pooled_position(int len, Pooling p) { return p == Pooling::kLastToken ? len - 1 : 0; }

// Forward over the examples seqs[index[0..B)], right-padded to the batch's longest with
// pad_id; writes their pooled hidden states (B,C) and returns the padded length T. The
// model keeps the activations for backward. Every sequence needs 1..max_seq_len ids.
int pooled_hidden(model::Model& model, const std::vector<std::vector<int32_t>>& seqs, const int64_t* index, int B,
                  Pooling pooling, int32_t pad_id, float* pooled);

// Pooled features (N,C) of every sequence, `batch` at a time (batched longest first, returned
// in input order): the trunk's half of inference.
// progress (may be empty) is called with (examples done, total) after every batch.
std::vector<float> pooled_features(model::Model& model, const std::vector<std::vector<int32_t>>& seqs,
                                   Pooling pooling, int32_t pad_id, int batch,
                                   const std::function<void(size_t, size_t)>& progress = {});

// Softmax cross-entropy of logits (B,n) vs labels; mean over the batch. Writes
// d(mean loss)/d logits into d_logits when not null; counts argmax hits into *correct.
double class_xent(const float* logits, const int* labels, int B, int n, float* d_logits, int64_t* correct);

// One training batch, seqs[index[0..B)] with class ids labels (B): forward through trunk and
// head, softmax CE (batch mean), backward. Accumulates into head.grads and, unless only the
// head trains, into model.grads() down to blocks.first_layer (callers zero both first; for
// the trunk, trainable_trunk_ranges covers every gradient this writes).
struct BatchLoss {
  double loss = 0;
  int64_t correct = 0;  // argmax hits
  int T = 0;            // padded length the trunk ran
};
BatchLoss classify_forward_backward(model::Model& model, ClassHead& head, const std::vector<std::vector<int32_t>>& seqs,
                                    const int64_t* index, int B, const int* labels, Pooling pooling, int32_t pad_id,
                                    const TrainableBlocks& blocks);

// Logits (N,n) of every sequence (eval).
std::vector<float> classifier_logits(model::Model& model, const ClassHead& head,
                                     const std::vector<std::vector<int32_t>>& seqs, Pooling pooling, int32_t pad_id,
                                     int batch);

struct ClassifyEval {
  std::vector<int> predictions;  // argmax per example
  std::vector<float> probabilities;  // (N,n) softmax
  double loss = NAN;     // mean CE over labeled examples (NaN if none)
  double accuracy = NAN; // over labeled examples
};
ClassifyEval classify_evaluate(model::Model& model, const ClassHead& head, const LabeledIds& data, Pooling pooling,
                               int32_t pad_id, int batch);
// The same from precomputed features (N,C) and labels (-1: unlabeled).
ClassifyEval evaluate_features(const ClassHead& head, const std::vector<float>& features, const std::vector<int>& labels);

struct ClassifyOptions {
  int batch = 8;
  double epochs = 5;          // used when steps == 0
  int64_t steps = 0;
  float lr = 5e-5f;           // ch06: AdamW lr 5e-5, wd 0.1, PyTorch's betas
  float weight_decay = 0.1f;
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  int64_t warmup = 0;
  std::string decay = "constant";
  float min_lr_frac = 0.0f;
  float grad_clip = 1.0f;     // over trunk + head grads; <= 0 disables
  Pooling pooling = Pooling::kLastToken;
  TrainableBlocks trainable;
  int32_t pad_id = 0;
  uint64_t seed = 1234;       // shuffling
  // Hugging Face's group_by_length: each epoch's shuffled order is cut into chunks of 50
  // batches, each chunk sorted by length and cut into batches, and the batches shuffled, so
  // a batch holds inputs of similar length and little padding.
  bool group_by_length = true;
  // Keep the weights of the evaluation with the best validation accuracy (the first of
  // equals), restored at the end; needs a validation set. Off: the last step's weights.
  bool keep_best = false;
  int eval_every = 0;         // validation every N steps (0: at the end of every epoch)
  std::filesystem::path run_dir;  // named in a divergence error (train_step); may be empty
};

struct ClassifyStepInfo {
  int64_t step = 0, steps = 0;  // step is 1-based, after the update
  int64_t epoch = 0;
  double loss = 0;              // batch mean CE
  double batch_accuracy = 0;
  double grad_norm = 0;
  float lr = 0;
  int64_t examples = 0, tokens = 0;  // tokens: real input ids of the batch
  int64_t padded_tokens = 0;          // B*T positions the trunk ran (0 for head-only)
  double seconds = 0;
};

// Everything of a classification run besides the model's and the head's weights that
// decides what the next step computes: the data cursor, both AdamW states and, with
// keep_best, the best weights so far. Saved in a checkpoint and handed back to
// classify_train, a run continues bit for bit (same thread count).
struct ClassifyProgress {
  int64_t step = 0;        // optimizer steps done
  int64_t epoch = -1;      // the epoch whose batches are in use (-1: none yet)
  int64_t next_batch = 0;  // the next of that epoch's batches (plan_epoch_batches)
  train::AdamW trunk_opt, head_opt;  // empty at step 0: classify_train sizes them
  // keep_best: the best evaluation so far and a copy of what trains at it
  int64_t best_step = -1;
  double best_val_accuracy = NAN, best_val_loss = NAN;
  std::vector<float> best_head, best_trunk;
  nlohmann::json to_json() const;  // the scalars (the buffers travel as files)
  void scalars_from_json(const nlohmann::json& j);
};

struct ClassifyHooks {
  std::function<void(const ClassifyStepInfo&)> on_step;
  std::function<void(int64_t step, const ClassifyEval& val)> on_eval;
  // Called after every step (evaluations included) with the run's progress; return true to
  // stop (Ctrl-C). The place to save a checkpoint.
  std::function<bool(const ClassifyProgress&)> after_step;
  std::function<void(size_t, size_t)> on_features;  // head-only: feature extraction progress (done, total)
};

struct ClassifyTrainResult {
  int64_t steps_done = 0;
  std::vector<float> step_losses;
  ClassifyEval last_val;        // the final weights' validation (the restored ones with keep_best)
  int64_t best_step = -1;       // keep_best: the step whose weights were kept
  double best_val_accuracy = NAN;
  bool stopped_early = false;
  bool cached_features = false;  // head-only: features computed once
};

// One epoch's batches of example indices: a seeded shuffle (Rng(seed + 7919·epoch)), then,
// with group_by_length, chunks of 50 batches sorted by length (longest first), cut into
// batches, and the batches shuffled. Every example appears exactly once.
std::vector<std::vector<int64_t>> plan_epoch_batches(const std::vector<std::vector<int32_t>>& seqs, int batch,
                                                     uint64_t seed, int64_t epoch, bool group_by_length);

int64_t classify_total_steps(size_t n_train, const ClassifyOptions& options);

// Trains head (and the trainable trunk blocks of model) on train; validates on val (may be
// empty). Examples with label -1 are not allowed in train. Throws aji::Error on a NaN loss.
// progress (may be null): where to start (a resumed run: model and head hold the
// checkpoint's weights) and, at return, where the run stands.
ClassifyTrainResult classify_train(model::Model& model, ClassHead& head, const LabeledIds& train,
                                   const LabeledIds& val, const ClassifyOptions& options,
                                   const ClassifyHooks& hooks = {}, ClassifyProgress* progress = nullptr);

}  // namespace aji::align
