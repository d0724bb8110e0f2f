// `aji classify train | predict | eval`: a text classifier fine-tuned from a pretrained
// model (classifier.h), saved as a model directory that carries its labels.
//
//   labeled JSONL/CSV/TSV --read_labeled (file:line errors / counted skips)--> LabeledExample
//   [--data: stratified_split into train/val/test, optional balancing of train]
//   --encode_for_classifier: [BOS] + tokens, cut to max_len (counted)--> LabeledIds
//   --classify_train--> OUT/classifier/ (trunk weights, tokenizer, class_head.safetensors,
//   classifier.json, labels.json) + OUT/metrics.jsonl, loss.svg, report.{txt,json}
//
// Checkpoints (OUT/ckpt-N: trunk weights and AdamW, class head and its AdamW, keep-best
// copies, the run's settings and cursor in trainer_state.json) every --save-every steps and
// at the end; --resume continues from the latest bit for bit (same threads), keeping the
// run's settings (the run-dir rule and the settings rule are run_dir.h's). The classifier
// directory is written atomically (temp dir + rename); Ctrl-C saves a checkpoint, stops and
// still writes it, marked as interrupted in classifier.json.
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "aji/align/classifier.h"
#include "aji/align/classify_data.h"
#include "aji/base/options.h"
#include "aji/align/classification_metrics.h"
#include "aji/model/model.h"
#include "aji/tokenizer/tokenizer.h"

namespace aji::align {

// How text becomes classifier input: [bos] + ordinary tokens (special-token text is encoded
// as plain bytes), the first max_len ids kept; padded on the right with pad_id.
struct ClassifierInput {
  int32_t bos_id = -1;  // -1: no BOS
  int32_t pad_id = 0;
  int max_len = 0;
};

// kept (if not null) receives, for each encoded sequence, the index of its example (skipped
// examples have none).
LabeledIds encode_for_classifier(const tokenizer::Tokenizer& tok, const std::vector<LabeledExample>& examples,
                                 const LabelSet* labels, const ClassifierInput& input, const std::string& file,
                                 OnInvalid policy, InputReport* report, int64_t* truncated,
                                 std::vector<size_t>* kept = nullptr);

struct ClassifyRunOptions {
  std::filesystem::path model;  // base: aji run/checkpoint dir or Hugging Face dir
  std::filesystem::path out_dir;
  // Either one labeled file split here, or ready-made splits.
  std::filesystem::path data;
  double val_fraction = 0.1, test_fraction = 0.2;
  bool balance = false;         // undersample the train split's classes to the smallest
  std::filesystem::path train_file, val_file, test_file;
  LabeledDataOptions read;
  int max_len = 0;              // 0 = the model's context
  uint64_t head_seed = 1;
  bool force = false;
  bool resume = false;   // continue the run in out_dir from its latest checkpoint
  int save_every = 0;    // checkpoint every N steps (0: only at the end)
  int keep = 1;          // checkpoints kept (0: all)
  std::string precision = "auto";  // auto | fp32 | bf16 (train/trainer_run.h apply_run_precision)
  std::string device = "cpu";      // cpu | cuda | cuda:N (train/trainer_run.h apply_run_device)
  int64_t stop_after = 0;  // end this session after N steps (checkpoint saved)
  bool quiet = false;
  ClassifyOptions train;
  // With resume: the CLI flags the user gave ("--lr", ...), checked against the run's saved
  // settings (classify_setting_flags()); the values are the ones in this struct.
  std::vector<std::string> given;

  // The numeric and text settings, declared once (base/options.h): the CLI's flags, help,
  // defaults and range checks (cli/options.h), run_classify_train's validation, and the
  // run's saved settings (what --resume keeps, accepts with a note, or refuses). --steps and
  // --max-len take 0 for "unset" here; the CLI asks for >= 1 when they are given.
  template <class V>
  void for_each_option(V&& v) {
    using R = Range;
    const auto keep_ = OnResume::kKeep;
    const auto change = OnResume::kChange;
    v(val_fraction, OptionInfo{"val-fraction", "With --data: validation share per class", R::between(0, 0.9), keep_});
    v(test_fraction, OptionInfo{"test-fraction", "With --data: test share per class", R::between(0, 0.9), keep_});
    v(max_len, OptionInfo{"max-len", "Tokens per input, longer ones cut (default: the model's context)",
                          R::between(0, 1 << 24), keep_});
    v(train.epochs, OptionInfo{"epochs", "Passes over the training split", R::above(0), keep_});
    v(train.steps, OptionInfo{"steps", "Optimizer steps (instead of --epochs)", R::between(0, 1e12), keep_});
    v(train.batch, OptionInfo{"batch-size", "Examples per step", R::between(1, 1 << 20), keep_});
    v(train.lr, OptionInfo{"lr", "Learning rate", R::above(0), keep_});
    v(train.warmup, OptionInfo{"warmup", "Warmup steps", R::at_least(0), keep_});
    v(train.decay, OptionInfo{"decay", "constant, linear or cosine", R::any(), keep_});
    v(train.weight_decay, OptionInfo{"weight-decay", "AdamW weight decay", R::at_least(0), keep_});
    v(train.grad_clip, OptionInfo{"grad-clip", "Global gradient-norm clip (0 = off)", R::at_least(0), keep_});
    // With --keep-best it decides which weights are kept: not a safe change.
    v(train.eval_every, OptionInfo{"eval-every", "Validation every N steps (0 = every epoch)", R::at_least(0), keep_});
    v(train.seed, OptionInfo{"seed", "Seed of the split and the data order", R::any(), keep_});
    v(head_seed, OptionInfo{"head-seed", "Seed of the head's initialisation", R::any(), keep_});
    v(save_every, OptionInfo{"save-every", "Checkpoint every N steps for --resume (0 = only at the end)",
                             R::at_least(0), change});
    v(keep, OptionInfo{"keep", "Keep the last K checkpoints (0 = all)", R::at_least(0), change});
    v(precision, precision_option());
    v(device, device_option());
    v(stop_after, OptionInfo{"stop-after", "End this session after N steps with a checkpoint (resume later)",
                             R::at_least(0), OnResume::kNotSaved});
  }
};

// The flags of `aji classify train` a resumed run compares with its saved settings.
const std::vector<std::string>& classify_setting_flags();

struct ClassifyRunResult {
  int64_t steps = 0;
  bool interrupted = false;
  std::vector<float> step_losses;  // this session's steps
  double seconds = 0;            // training (features + steps), not data loading
  double val_accuracy = NAN;
  bool has_test = false;
  ClassificationReport test;  // on the test split (when there is one)
  LabelSet labels;
  int64_t n_train = 0, n_val = 0, n_test = 0, truncated = 0;
  std::filesystem::path classifier_dir;
};

ClassifyRunResult run_classify_train(const ClassifyRunOptions& options);

// A trained classifier loaded from OUT or OUT/classifier.
struct LoadedClassifier {
  model::Model model;
  ClassHead head;
  LabelSet labels;
  tokenizer::Tokenizer tokenizer;
  ClassifierInput input;
  Pooling pooling = Pooling::kLastToken;
  std::filesystem::path dir;
};
LoadedClassifier load_classifier(const std::filesystem::path& path);

}  // namespace aji::align
