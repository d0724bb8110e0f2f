// `aji classify train | predict | eval` end to end on a micro model: the files a run
// writes, learning a separable task, a saved classifier that predicts what it reported,
// and clear errors (file and line) for bad input.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

#include <nlohmann/json.hpp>

#include "aji/align/classify_run.h"
#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/base/threads.h"
#include "aji/train/checkpoint.h"
#include "micro_base.h"
#include "test_util.h"

namespace fs = std::filesystem;
using aji::test::TempDir;
using nlohmann::json;

namespace {

const char* kSpamWords[] = {"free", "cash", "call", "now", "win", "txt", "offer", "claim"};
const char* kHamWords[] = {"see", "you", "at", "home", "later", "love", "dinner", "ok"};

// Label readable from the last word (spam ends with "prize!", ham with "tonight."), so even
// a nearly untrained trunk separates it at the last token.
std::string make_text(aji::Rng& rng, bool spam) {
  std::string s;
  const int n = 3 + int(rng.below(5));
  for (int i = 0; i < n; ++i) s += std::string(spam ? kSpamWords[rng.below(8)] : kHamWords[rng.below(8)]) + " ";
  return s + (spam ? "prize!" : "tonight.");
}

struct ClassifyFixture {
  TempDir dir;
  fs::path base, data;
  ClassifyFixture() {
    aji::set_num_threads(1);
    aji::Rng rng(5);
    {
      std::ofstream c(dir.path() / "corpus.txt");
      for (int i = 0; i < 300; ++i) c << make_text(rng, i % 2) << "\n\n";
      std::ofstream d(dir.path() / "data.tsv");
      for (int i = 0; i < 120; ++i) {
        const bool spam = i % 3 == 0;
        d << (spam ? "spam" : "ham") << "\t" << make_text(rng, spam) << "\n";
      }
    }
    data = dir.path() / "data.tsv";
    aji::test::MicroBaseOptions mb;
    mb.vocab_size = 300;
    mb.steps = 20;
    mb.batch = 4;
    mb.lr = 3e-3f;
    base = aji::test::build_micro_base(dir.path(), dir.path() / "corpus.txt", mb);
  }
  std::string cli(const std::string& args, int* rc) const {
    std::string out;
    *rc = aji::test::run_command(std::string(AJI_BINARY) + " -q --threads 1 " + args + " 2>&1", &out);
    return out;
  }
  aji::align::ClassifyRunOptions options(const std::string& out) const {
    aji::align::ClassifyRunOptions o;
    o.model = base;
    o.out_dir = dir.path() / out;
    o.data = data;
    o.read.format = aji::align::LabeledFormat::kTsv;
    o.read.header = false;
    o.read.label_column = "0";
    o.read.text_column = "1";
    o.quiet = true;
    o.train.epochs = 6;
    o.train.batch = 8;
    o.train.lr = 3e-3f;
    o.train.trainable = aji::align::TrainableBlocks::parse("all");
    return o;
  }
};

ClassifyFixture& fixture() {
  static ClassifyFixture f;
  return f;
}

}  // namespace

// In bf16 (fp32 on a CPU without bf16 products): the test report is computed in fp32, as the
// saved classifier predicts, so the two agree item for item.
TEST(ClassifyRun, TrainsWritesAndTheSavedClassifierPredictsWhatItReported) {
  auto& f = fixture();
  auto o = f.options("run");
  o.precision = "bf16";
  const auto r = aji::align::run_classify_train(o);
  ASSERT_TRUE(r.has_test);
  EXPECT_EQ(r.labels.joined(), "ham, spam");
  EXPECT_EQ(r.n_train + r.n_val + r.n_test, 120);
  EXPECT_NEAR(r.test.majority_baseline, 2.0 / 3.0, 0.05);
  EXPECT_GE(r.test.accuracy, 0.95) << "a task readable at the last token must be learned";
  for (const char* file : {"classifier/model.safetensors", "classifier/class_head.safetensors",
                           "classifier/classifier.json", "classifier/labels.json", "classifier/aji_tokenizer.json",
                           "metrics.jsonl", "loss.svg", "report.txt", "report.json", "run.json", "split/train.jsonl",
                           "split/val.jsonl", "split/test.jsonl"})
    EXPECT_TRUE(fs::exists(o.out_dir / file)) << file;
  EXPECT_FALSE(fs::exists(o.out_dir / ".classifier-files"));

  // `aji classify eval` on the saved test split reproduces the reported accuracy.
  int rc = 0;
  const fs::path json_out = f.dir.path() / "eval.json";
  std::string out = f.cli("classify eval --model " + o.out_dir.string() + " --data " + (o.out_dir / "split/test.jsonl").string() +
                              " --json " + json_out.string(),
                          &rc);
  ASSERT_EQ(rc, 0) << out;
  const json ej = json::parse(aji::read_file(json_out));
  EXPECT_NEAR(ej["accuracy"].get<double>(), r.test.accuracy, 1e-9);
  EXPECT_NE(out.find("confusion"), std::string::npos) << out;

  // `aji classify predict`: one JSON line per input, labels from the model's set.
  {
    std::ofstream in(f.dir.path() / "new.jsonl");
    in << R"({"text": "win free cash now prize!"})" << "\n" << R"({"text": "see you at home tonight."})" << "\n";
  }
  const fs::path preds = f.dir.path() / "preds.jsonl";
  out = f.cli("classify predict --model " + (o.out_dir / "classifier").string() + " --input " +
                  (f.dir.path() / "new.jsonl").string() + " --out " + preds.string(),
              &rc);
  ASSERT_EQ(rc, 0) << out;
  std::ifstream p(preds);
  std::string line;
  std::vector<std::string> labels;
  while (std::getline(p, line)) {
    const json j = json::parse(line);
    labels.push_back(j["label"]);
    EXPECT_GT(j["confidence"].get<double>(), 0.5);
    EXPECT_NEAR(j["probabilities"]["ham"].get<double>() + j["probabilities"]["spam"].get<double>(), 1.0, 1e-5);
  }
  EXPECT_EQ(labels, (std::vector<std::string>{"spam", "ham"}));

  // With --skip-invalid a bad row is skipped (and listed); the others keep their line numbers.
  {
    std::ofstream in(f.dir.path() / "gappy.jsonl");
    in << R"({"text": "win free cash now prize!"})" << "\n" << R"({"note": "no text"})" << "\n"
       << R"({"text": "see you at home tonight."})" << "\n";
  }
  out = f.cli("classify predict --skip-invalid --model " + o.out_dir.string() + " --input " +
                  (f.dir.path() / "gappy.jsonl").string() + " --out " + preds.string(),
              &rc);
  ASSERT_EQ(rc, 0) << out;
  std::ifstream g(preds);
  std::vector<int64_t> lines;
  while (std::getline(g, line)) lines.push_back(json::parse(line)["line"].get<int64_t>());
  EXPECT_EQ(lines, (std::vector<int64_t>{1, 3}));

  // A second train into the same --out needs --force.
  EXPECT_THROW(aji::align::run_classify_train(o), aji::Error);
}

TEST(ClassifyRun, HeadOnlyAndLastBlockTrainToo) {
  auto& f = fixture();
  for (const char* spec : {"head", "last:1"}) {
    auto o = f.options(std::string("run-") + (spec[0] == 'h' ? "head" : "last"));
    o.train.trainable = aji::align::TrainableBlocks::parse(spec);
    o.train.epochs = 10;
    o.train.lr = 1e-2f;
    const auto r = aji::align::run_classify_train(o);
    EXPECT_GE(r.test.accuracy, 0.9) << spec;
  }
}

TEST(ClassifyRun, BadInputIsAClearErrorOrACountedSkip) {
  auto& f = fixture();
  const fs::path bad = f.dir.path() / "bad.tsv";
  {
    std::ofstream b(bad);
    b << "spam\tfree cash prize!\nham\tsee you tonight.\n\tno label here\nham\tok later tonight.\nspam\twin now prize!\n";
  }
  auto o = f.options("bad");
  o.data = bad;
  o.val_fraction = 0;
  o.test_fraction = 0;
  try {
    aji::align::run_classify_train(o);
    FAIL() << "a row without a label must stop the run";
  } catch (const aji::Error& e) {
    EXPECT_NE(e.location().find("bad.tsv:3"), std::string::npos) << e.describe();
  }
  o.read.on_invalid = aji::align::OnInvalid::kSkip;
  o.force = true;
  EXPECT_NO_THROW(aji::align::run_classify_train(o));

  // Predict/eval against a classifier with another label set: an error naming the file (and line).
  auto g = f.options("labels");
  g.train.epochs = 1;
  aji::align::run_classify_train(g);
  {
    std::ofstream other(f.dir.path() / "other.jsonl");
    other << R"({"text": "free cash prize!", "label": "spam"})" << "\n" << R"({"text": "hi", "label": "phishing"})" << "\n";
  }
  int rc = 0;
  std::string out = f.cli("classify predict --model " + (f.dir.path() / "labels").string() + " --input " +
                              (f.dir.path() / "other.jsonl").string(),
                          &rc);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("phishing"), std::string::npos) << out;
  EXPECT_NE(out.find("other.jsonl"), std::string::npos) << out;
  out = f.cli("classify eval --model " + (f.dir.path() / "labels").string() + " --data " +
                  (f.dir.path() / "other.jsonl").string(),
              &rc);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("other.jsonl:2"), std::string::npos) << out;
  // Not a classifier at all.
  out = f.cli("classify eval --model " + f.base.string() + " --data " + (f.dir.path() / "other.jsonl").string(), &rc);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("not a classifier"), std::string::npos) << out;
}

namespace {
size_t count_of(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) ++n;
  return n;
}
}  // namespace

// Issue #13: the classifier's plot was labelled "nats/token" and showed no accuracy. Its
// loss is a mean per example, and the validation accuracy is drawn on a right axis: one
// marker per evaluation logged in metrics.jsonl.
TEST(ClassifyRun, LossPlotIsPerExampleAndShowsValidationAccuracy) {
  auto& f = fixture();
  auto o = f.options("plot");
  o.train.epochs = 2;
  o.train.eval_every = 4;
  aji::align::run_classify_train(o);
  const std::string svg = aji::read_file(o.out_dir / "loss.svg");
  EXPECT_NE(svg.find("loss (nats/example)"), std::string::npos);
  EXPECT_EQ(svg.find("nats/token"), std::string::npos);
  EXPECT_NE(svg.find("validation accuracy"), std::string::npos);
  std::ifstream m(o.out_dir / "metrics.jsonl");
  std::string line;
  size_t evals = 0;
  while (std::getline(m, line)) evals += json::parse(line).contains("val_accuracy");
  EXPECT_GE(evals, 3u);
  EXPECT_EQ(count_of(svg, "fill=\"#2ca02c\"/>"), evals);
}

// classify train --resume (issue #13): a run stopped after some steps and resumed from its
// checkpoint ends with the same classifier, bit for bit, as a straight run (trunk blocks +
// keep-best copies + both AdamW states; and head-only, where the features are recomputed).
TEST(ClassifyRun, ResumeIsBitIdentical) {
  auto& f = fixture();
  for (const char* spec : {"last:1", "head"}) {
    const std::string tag = spec[0] == 'h' ? "head" : "last";
    auto o = f.options("straight-" + tag);
    o.train.trainable = aji::align::TrainableBlocks::parse(spec);
    o.train.epochs = 2;
    o.train.lr = 1e-2f;
    o.train.keep_best = true;
    o.train.eval_every = 4;
    const auto straight = aji::align::run_classify_train(o);
    auto first = o;
    first.out_dir = f.dir.path() / ("split-" + tag);
    first.stop_after = 7;
    first.save_every = 3;
    const auto a = aji::align::run_classify_train(first);
    EXPECT_TRUE(a.interrupted);
    EXPECT_EQ(a.steps, 7);
    aji::align::ClassifyRunOptions again;
    again.out_dir = first.out_dir;
    again.resume = true;
    again.quiet = true;
    aji::align::ClassifyRunResult b;
    try {
      b = aji::align::run_classify_train(again);
    } catch (const aji::Error& e) {
      FAIL() << spec << ": " << e.describe();
    }
    EXPECT_FALSE(b.interrupted);
    EXPECT_EQ(b.steps, straight.steps);
    std::vector<float> joined = a.step_losses;
    joined.insert(joined.end(), b.step_losses.begin(), b.step_losses.end());
    ASSERT_EQ(joined.size(), straight.step_losses.size()) << spec;
    for (size_t i = 0; i < joined.size(); ++i) EXPECT_EQ(joined[i], straight.step_losses[i]) << spec << " step " << i + 1;
    for (const char* file : {"classifier/model.safetensors", "classifier/class_head.safetensors", "classifier/labels.json"})
      EXPECT_EQ(aji::read_file(o.out_dir / file), aji::read_file(first.out_dir / file)) << spec << " " << file;
    EXPECT_EQ(b.test.accuracy, straight.test.accuracy);
    EXPECT_EQ(b.val_accuracy, straight.val_accuracy);
  }
}

// The run-dir rule and the settings rule of classify train (the same as sft train's).
TEST(ClassifyRun, RunDirAndResumeSettingsRules) {
  auto& f = fixture();
  auto o = f.options("rules");
  o.train.epochs = 1;
  aji::align::ClassifyRunOptions again;
  again.out_dir = o.out_dir;
  again.resume = true;
  again.quiet = true;
  try {  // nothing there yet
    aji::align::run_classify_train(again);
    ADD_FAILURE() << "no error";
  } catch (const aji::Error& e) {
    EXPECT_NE(std::string(e.what()).find("nothing to resume"), std::string::npos) << e.describe();
    EXPECT_NE(e.how_to_fix().find("aji classify train --model"), std::string::npos) << e.describe();
  }
  fs::create_directories(o.out_dir);
  std::ofstream(o.out_dir / "run.json") << "{}";  // what a run killed before its first checkpoint leaves
  std::ofstream(o.out_dir / "metrics.jsonl") << R"({"step": 1, "loss": 9})" << "\n";
  auto stop = o;
  stop.stop_after = 2;
  EXPECT_EQ(aji::align::run_classify_train(stop).steps, 2);  // a fresh start, no --force
  auto changed = again;
  changed.train.lr = 1.0f;
  changed.given = {"--lr"};
  try {
    aji::align::run_classify_train(changed);
    ADD_FAILURE() << "no error";
  } catch (const aji::Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind("--lr 1", 0), 0u) << e.describe();
    EXPECT_NE(e.how_to_fix().find("leave --lr out"), std::string::npos) << e.describe();
  }
  {  // through the CLI: the flags given are the ones compared
    int rc = 0;
    const std::string log = f.cli("classify train --out " + o.out_dir.string() + " --resume --batch-size 3", &rc);
    EXPECT_EQ(rc, 1) << log;
    EXPECT_NE(log.find("--batch-size 3 differs from the run's 8"), std::string::npos) << log;
  }
  changed = again;
  changed.given = {"--keep"};  // safe
  changed.keep = 0;
  const auto r = aji::align::run_classify_train(changed);
  EXPECT_FALSE(r.interrupted);
  EXPECT_EQ(aji::train::list_checkpoints(o.out_dir).size(), 2u) << "--keep 0 (all) was taken";
  try {  // finished: a fresh start needs --force
    aji::align::run_classify_train(o);
    ADD_FAILURE() << "no error";
  } catch (const aji::Error& e) {
    EXPECT_NE(e.how_to_fix().find("--force"), std::string::npos) << e.describe();
  }
}

// A checkpoint written before the options were declared once (base/options.h) saved
// --batch-size as "batch": it is still read (a changed value is refused naming the run's),
// and the run resumes to its end.
TEST(ClassifyRun, CheckpointWithTheOldSettingsKeysStillResumes) {
  auto& f = fixture();
  auto o = f.options("oldkeys");
  o.train.epochs = 1;
  o.stop_after = 2;
  EXPECT_EQ(aji::align::run_classify_train(o).steps, 2);
  const fs::path ts = aji::train::list_checkpoints(o.out_dir).back().second / "trainer_state.json";
  nlohmann::json j = nlohmann::json::parse(std::ifstream(ts));
  nlohmann::json& settings = j["classify"]["settings"];
  ASSERT_TRUE(settings.contains("batch_size")) << settings.dump();
  settings["batch"] = settings["batch_size"];
  settings.erase("batch_size");
  std::ofstream(ts) << j.dump(2);
  aji::align::ClassifyRunOptions again;
  again.out_dir = o.out_dir;
  again.resume = true;
  again.quiet = true;
  auto changed = again;
  changed.train.batch = 3;
  changed.given = {"--batch-size"};
  try {
    aji::align::run_classify_train(changed);
    ADD_FAILURE() << "no error";
  } catch (const aji::Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind("--batch-size 3 differs from the run's 8", 0), 0u) << e.describe();
  }
  const auto r = aji::align::run_classify_train(again);
  EXPECT_FALSE(r.interrupted);
  EXPECT_TRUE(fs::exists(o.out_dir / "classifier" / "classifier.json"));
}

// Issue #13: numeric options of classify train are checked at parse time.
TEST(ClassifyRun, BadNumbersAreRefusedAtParseTime) {
  auto& f = fixture();
  const fs::path out = f.dir.path() / "never";
  for (const char* bad : {"--steps 0", "--epochs 0", "--lr -1", "--batch-size 0", "--warmup -5", "--weight-decay -1",
                          "--grad-clip -1", "--eval-every -1", "--max-len 0", "--decay sqrt", "--trainable last:x",
                          "--pooling middle", "--val-fraction 0.95", "--save-every -1"}) {
    int rc = 0;
    const std::string log =
        f.cli("classify train --model /nonexistent/m --data /nonexistent/d.tsv --out " + out.string() + " " + bad, &rc);
    EXPECT_NE(rc, 0) << bad;
    const std::string flag = std::string(bad).substr(0, std::string(bad).find(' '));
    EXPECT_NE(log.find(flag), std::string::npos) << bad << "\n" << log;
    EXPECT_EQ(log.find("nonexistent"), std::string::npos) << bad << ": checked after loading?\n" << log;
  }
  EXPECT_FALSE(fs::exists(out));
}

// Issue #13: a batch that does not fit is refused before allocating, with the estimate and the fix.
TEST(ClassifyRun, TooLittleMemoryIsAClearError) {
  auto& f = fixture();
  auto o = f.options("mem");
  ::setenv("AJI_MEMORY_LIMIT_MB", "0.05", 1);
  try {
    aji::align::run_classify_train(o);
    ADD_FAILURE() << "no error";
  } catch (const aji::Error& e) {
    EXPECT_NE(std::string(e.what()).find("GiB"), std::string::npos) << e.describe();
    EXPECT_NE(e.how_to_fix().find("--batch-size"), std::string::npos) << e.describe();
  }
  ::unsetenv("AJI_MEMORY_LIMIT_MB");
  EXPECT_FALSE(fs::exists(o.out_dir / "classifier"));
}
