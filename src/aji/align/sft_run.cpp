#include "aji/align/sft_run.h"

#include <cstdio>
#include <fstream>
#include <optional>

#include <nlohmann/json.hpp>

#include "aji/align/conversation.h"
#include "aji/base/atomic_file.h"
#include "aji/base/error.h"
#include "aji/base/interrupt.h"
#include "aji/base/io.h"
#include "aji/base/progress.h"
#include "aji/base/threads.h"
#include "aji/tokenizer/chat_template.h"
#include "aji/tokenizer/tokenizer.h"
#include "aji/train/checkpoint.h"
#include "aji/train/loss_curve.h"

namespace aji::align {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

json read_json_file(const fs::path& p) {
  try {
    return json::parse(read_file(p));
  } catch (const json::exception& e) {
    throw Error(std::string("not valid JSON: ") + e.what()).at(p.string()).fix("resume from an earlier checkpoint");
  }
}

bool holds_run(const fs::path& dir) {
  std::error_code ec;
  return fs::exists(dir / "run.json", ec) || fs::exists(dir / "latest", ec) || !train::list_checkpoints(dir).empty();
}

}  // namespace

SftRunResult run_sft(const SftRunOptions& in) {
  SftRunOptions o = in;
  SftRunResult result;
  const fs::path run = o.out_dir;
  if (o.resume && o.force) throw Error("--resume and --force contradict each other").fix("pass one of them");

  std::optional<fs::path> resume_ckpt;
  json state;
  if (o.resume) {
    if (train::list_checkpoints(run).empty())
      throw Error("nothing to resume: no checkpoint in " + run.string())
          .at(run.string())
          .fix("start a new run without --resume");
    resume_ckpt = train::resolve_model_dir(run);
    state = read_json_file(*resume_ckpt / "trainer_state.json");
    if (!state.contains("sft"))
      throw Error("the latest checkpoint was not written by `aji sft train`")
          .at(resume_ckpt->string())
          .fix("resume pretraining runs with `aji pretrain --resume`");
    const json& s = state["sft"];
    o.train = SftOptions::from_json(s.at("options"));
    o.train_file = s.at("train_file").get<std::string>();
    o.val_file = s.value("val_file", std::string());
    o.val_fraction = s.at("val_fraction");
    o.loss_on = s.at("loss_on") == "all" ? LossOn::kAll : LossOn::kAssistant;
    o.skip_invalid = s.at("skip_invalid");
  } else if (holds_run(run)) {
    if (!o.force)
      throw Error("the run directory already holds a run")
          .at(run.string())
          .fix("continue it with --resume, overwrite it with --force, or choose another --out");
    for (const auto& [step, path] : train::list_checkpoints(run)) fs::remove_all(path);
    for (const char* f : {"run.json", "latest", "metrics.jsonl", "loss.svg"}) fs::remove(run / f);
  }
  fs::create_directories(run);

  // --- model and tokenizer -----------------------------------------------------------
  fs::path model_dir;
  model::Model model = train::load_model(resume_ckpt ? *resume_ckpt : o.model, &model_dir);
  const fs::path tok_path = train::require_tokenizer_file(model_dir);
  tokenizer::Tokenizer tok = tokenizer::Tokenizer::load(tok_path);
  require_chat_tokens(tok);
  if (tok.vocab_size() > (size_t)model.config().vocab_size)
    throw Error("the tokenizer has " + std::to_string(tok.vocab_size()) + " ids but the model only " +
                std::to_string(model.config().vocab_size))
        .at(tok_path.string())
        .fix("use the tokenizer the model was pretrained with");
  std::vector<fs::path> ship;  // both tokenizer files travel with every checkpoint
  for (const char* name : {train::kAjiTokenizerFile, "tokenizer.json"})
    if (fs::exists(model_dir / name)) {
      train::copy_file_atomic(model_dir / name, run / name);
      ship.push_back(run / name);
    }
  o.train.pad_id = (uint32_t)*tok.special_id(tokenizer::kImEnd);  // never a target at padding

  // --- data ------------------------------------------------------------------------------
  const OnInvalid policy = o.skip_invalid ? OnInvalid::kSkip : OnInvalid::kError;
  InputReport report;
  std::vector<Conversation> train_convs = read_conversations(o.train_file, policy, &report), val_convs;
  if (!o.val_file.empty()) {
    val_convs = read_conversations(o.val_file, policy, &report);
  } else if (o.val_fraction > 0) {
    auto split = split_conversations(std::move(train_convs), o.val_fraction, o.train.seed);
    train_convs = std::move(split.first);
    val_convs = std::move(split.second);
  }
  if (train_convs.empty())
    throw Error("no training conversations").at(o.train_file.string()).fix("check the file with `aji sft check`");
  const std::vector<RenderedSequence> train_seqs = render_conversations(tok, train_convs, o.loss_on, !o.quiet);
  const std::vector<RenderedSequence> val_seqs = render_conversations(tok, val_convs, LossOn::kAssistant, false);
  const int T = o.train.seq_len > 0 ? o.train.seq_len : model.config().max_seq_len;
  o.train.seq_len = T;

  // --- optimizer and state --------------------------------------------------------------
  train::AdamW optimizer(model.num_params(), {o.train.beta1, o.train.beta2, o.train.eps, o.train.weight_decay});
  SftState st;
  if (resume_ckpt) {
    optimizer.load(*resume_ckpt / "optimizer.bin");
    st = SftState::from_json(state.at("sft").at("state"));
    if (state["sft"].value("threads", 0) != num_threads() && !o.quiet)
      std::fprintf(stderr, "note: the run used %d threads, now %d: losses will not match a straight run bit for bit\n",
                   state["sft"].value("threads", 0), num_threads());
  }
  PackOptions po;
  po.T = T;
  po.layout = o.train.layout;
  PackReport pack;
  const int64_t n_rows = (int64_t)plan_rows(train_seqs, po, &pack).size();
  const int64_t steps = sft_total_steps(n_rows, o.train);
  if (!resume_ckpt) {
    json info = {{"stage", "sft"},
                 {"base_model", fs::absolute(o.model).string()},
                 {"train_file", fs::absolute(o.train_file).string()},
                 {"options", o.train.to_json()},
                 {"steps", steps},
                 {"aji_version", AJI_VERSION}};
    write_file_atomic(run / "run.json", info.dump(2) + "\n");
  }
  if (!o.quiet) {
    std::printf("sft: %s | %zu train / %zu val conversations (%s)\n", model_dir.c_str(), train_convs.size(),
                val_convs.size(), report.summary(3).c_str());
    std::printf("sft: %s\n", pack.describe().c_str());
    std::printf("sft: %lld steps of %d x %d %s, lr %.2e (%s), threads %d\n", (long long)steps, o.train.batch,
                o.train.grad_accum,
                o.train.layout == BatchLayout::kPack ? "packed rows" : "conversations (one per row)", o.train.lr,
                o.train.decay.c_str(), num_threads());
    std::fflush(stdout);
  }

  // --- metrics, checkpoints -------------------------------------------------------------
  std::vector<train::CurvePoint> curve_train, curve_val;
  {  // keep what a resumed run already logged up to its step
    std::string kept;
    std::ifstream in(run / "metrics.jsonl");
    std::string line;
    while (resume_ckpt && std::getline(in, line)) {
      json j;
      try {
        j = json::parse(line);
      } catch (const json::exception&) {
        continue;
      }
      if (j.value("step", int64_t(1) << 62) > st.step) continue;
      kept += line + "\n";
      if (j.contains("loss")) curve_train.push_back({j["step"].get<double>(), j["loss"].get<double>()});
      if (j.contains("val_loss")) curve_val.push_back({j["step"].get<double>(), j["val_loss"].get<double>()});
    }
    write_file_atomic(run / "metrics.jsonl", kept);
  }
  std::ofstream metrics(run / "metrics.jsonl", std::ios::app);
  auto log = [&](const json& j) {
    metrics << j.dump() << "\n";
    metrics.flush();
  };
  auto save = [&](const SftState& s) {
    json ts = {{"step", s.step},
               {"sft",
                {{"options", o.train.to_json()},
                 {"state", s.to_json()},
                 {"train_file", fs::absolute(o.train_file).string()},
                 {"val_file", o.val_file.empty() ? std::string() : fs::absolute(o.val_file).string()},
                 {"val_fraction", o.val_fraction},
                 {"loss_on", o.loss_on == LossOn::kAll ? "all" : "assistant"},
                 {"skip_invalid", o.skip_invalid},
                 {"threads", num_threads()}}}};
    train::CheckpointContents c{&model, &optimizer, ts, ship};
    result.checkpoint = train::save_checkpoint(run, s.step, c, o.keep);
  };
  auto write_curve = [&] {
    write_file_atomic(run / "loss.svg",
                      train::loss_curve_svg(curve_train, curve_val, "aji sft: " + run.filename().string()));
  };

  if (!val_seqs.empty() && st.step == 0) {
    const LossSum v = sft_validation_loss(model, val_seqs, o.train.batch, T, o.train.pad_id);
    result.first_val_loss = v.mean();
    curve_val.push_back({0.0, v.mean()});
    log({{"step", 0}, {"val_loss", v.mean()}});
    if (!o.quiet) std::printf("step 0 | val loss %.4f (before SFT)\n", v.mean());
  }

  double ema = 0;
  const int64_t session_start = st.step;
  SftHooks hooks;
  hooks.on_step = [&](const SftStepInfo& i) {
    if (std::isnan(result.first_loss)) result.first_loss = i.loss;
    result.last_loss = i.loss;
    ema = i.step - session_start <= 1 ? i.seconds : 0.9 * ema + 0.1 * i.seconds;
    curve_train.push_back({(double)i.step, i.loss});
    log({{"step", i.step}, {"loss", i.loss}, {"lr", i.lr}, {"grad_norm", i.grad_norm}, {"targets", i.targets},
         {"tokens", i.tokens}, {"step_s", i.seconds}});
    if (!o.quiet) {
      std::printf("step %5lld/%lld | loss %.4f | lr %.2e | norm %.3f | %.0f tok/s | ETA %s\n", (long long)i.step,
                  (long long)i.steps, i.loss, i.lr, i.grad_norm, i.tokens / std::max(i.seconds, 1e-9),
                  Progress::format_duration(ema * double(i.steps - i.step)).c_str());
      std::fflush(stdout);
    }
  };
  hooks.on_eval = [&](int64_t step, const LossSum& v) {
    result.last_val_loss = v.mean();
    curve_val.push_back({(double)step, v.mean()});
    log({{"step", step}, {"val_loss", v.mean()}});
    if (!o.quiet) std::printf("step %lld | val loss %.4f\n", (long long)step, v.mean());
    write_curve();
  };
  hooks.after_step = [&](const SftState& s) {
    const bool last = s.step == steps;
    const bool stop = interrupt_requested() || (o.stop_after > 0 && s.step - session_start >= o.stop_after);
    if (last || stop || (o.save_every > 0 && s.step % o.save_every == 0)) save(s);
    return stop;
  };

  SftResult r;
  {
    InterruptGuard sigint;
    r = sft_train(model, optimizer, train_seqs, val_seqs, o.train, st, hooks);
  }
  write_curve();
  result.step = r.state.step;
  result.step_losses = r.step_losses;
  result.interrupted = r.stopped_early;
  if (result.interrupted && !o.quiet)
    std::fprintf(stderr, "stopped at step %lld; checkpoint %s. Continue with: aji sft train --out %s --resume\n",
                 (long long)result.step, result.checkpoint.c_str(), run.c_str());
  return result;
}

}  // namespace aji::align
