#include "aji/train/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "aji/base/atomic_file.h"
#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/tokenizer/chat_template.h"
#include "aji/tokenizer/tokenizer.h"
#include "aji/train/safetensors.h"

namespace aji::train {

namespace fs = std::filesystem;

namespace {

void fsync_dir(const fs::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

void write_model_files(const fs::path& dir, const model::Model& model) {
  std::vector<SafeTensorView> views;
  for (const auto& t : model.tensors()) views.push_back({t.name, t.shape, model.params() + t.offset});
  save_safetensors(dir / "model.safetensors", views, {{"format", "pt"}, {"producer", "aji " AJI_VERSION}});
  nlohmann::json hf = model.config().to_hf_config_json();
  write_file_atomic(dir / "config.json", hf.dump(2) + "\n");
  write_file_atomic(dir / "aji_config.json", model.config().to_json().dump(2) + "\n");
}

// Renames tmp over final, which may exist (an older save of the same step).
void replace_dir(const fs::path& tmp, const fs::path& final_dir) {
  std::error_code ec;
  if (fs::exists(final_dir)) {
    fs::path old = final_dir;
    old += ".old";
    fs::remove_all(old, ec);
    fs::rename(final_dir, old);
    fs::rename(tmp, final_dir);
    fs::remove_all(old, ec);
  } else {
    fs::rename(tmp, final_dir);
  }
  fsync_dir(final_dir.parent_path());
}

bool is_checkpoint_name(const std::string& name, int64_t* step) {
  if (name.rfind("ckpt-", 0) != 0 || name.size() <= 5) return false;
  for (size_t i = 5; i < name.size(); ++i)
    if (name[i] < '0' || name[i] > '9') return false;
  *step = std::stoll(name.substr(5));
  return true;
}

}  // namespace

void copy_file_atomic(const fs::path& from, const fs::path& to) {
  const std::string data = read_file(from);
  write_file_atomic(to, data);
}

fs::path save_checkpoint(const fs::path& run_dir, int64_t step, const CheckpointContents& c, int keep) {
  AJI_CHECK(c.model != nullptr, "save_checkpoint without a model");
  fs::create_directories(run_dir);
  const std::string name = "ckpt-" + std::to_string(step);
  const fs::path tmp = run_dir / ("." + name + ".tmp." + std::to_string(::getpid()));
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp);
  try {
    write_model_files(tmp, *c.model);
    if (c.optimizer) c.optimizer->save(tmp / "optimizer.bin");
    if (!c.trainer_state.is_null()) write_file_atomic(tmp / "trainer_state.json", c.trainer_state.dump(2) + "\n");
    for (const auto& f : c.copy_files) copy_file_atomic(f, tmp / f.filename());
    write_hf_tokenizer_files(tmp, c.model->config(), is_chat_trainer_state(c.trainer_state));
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  fsync_dir(tmp);
  const fs::path final_dir = run_dir / name;
  replace_dir(tmp, final_dir);
  write_file_atomic(run_dir / "latest", name + "\n");
  if (keep > 0) {
    auto all = list_checkpoints(run_dir);
    const size_t n = all.size();
    for (size_t i = 0; i + static_cast<size_t>(keep) < n; ++i)
      if (all[i].second != final_dir) fs::remove_all(all[i].second, ec);
  }
  return final_dir;
}

bool is_chat_trainer_state(const nlohmann::json& s) {
  if (!s.is_object()) return false;
  for (const char* k : {"sft", "dpo", "ppo", "grpo"})
    if (s.contains(k)) return true;
  return false;
}

bool is_chat_model_dir(const fs::path& dir) {
  try {
    if (fs::exists(dir / "trainer_state.json") &&
        is_chat_trainer_state(nlohmann::json::parse(read_file(dir / "trainer_state.json"))))
      return true;
    const auto tok_file = find_tokenizer_file(dir);
    if (!tok_file || !fs::exists(dir / "config.json")) return false;
    const nlohmann::json cfg = nlohmann::json::parse(read_file(dir / "config.json"));
    if (!cfg.contains("eos_token_id") || !cfg["eos_token_id"].is_number_integer()) return false;
    const auto im_end = tokenizer::Tokenizer::load(*tok_file).special_id(tokenizer::kImEnd);
    return im_end && cfg["eos_token_id"].get<int64_t>() == static_cast<int64_t>(*im_end);
  } catch (const std::exception&) {
    return false;  // unreadable files: not known to be a chat model
  }
}

void write_hf_tokenizer_files(const fs::path& dir, const model::ModelConfig& config, bool chat) {
  const auto tok_file = find_tokenizer_file(dir);
  if (!tok_file) return;
  std::optional<tokenizer::Tokenizer> loaded;
  try {
    loaded = tokenizer::Tokenizer::load(*tok_file);
  } catch (const std::exception&) {
    return;  // a tokenizer file aji cannot read: the checkpoint is still written, without these files
  }
  const tokenizer::Tokenizer& tok = *loaded;
  const auto endoftext = tok.special_id("<|endoftext|>");
  const auto im_start = tok.special_id(tokenizer::kImStart), im_end = tok.special_id(tokenizer::kImEnd);
  if (!endoftext) return;
  chat = chat && im_start && im_end;
  auto text_of = [&](int id, tokenizer::TokenId fallback) {
    return std::string(tok.token_bytes(id >= 0 ? static_cast<tokenizer::TokenId>(id) : fallback));
  };
  const tokenizer::TokenId bos = config.bos_token_id >= 0 ? static_cast<tokenizer::TokenId>(config.bos_token_id)
                                                          : *endoftext;
  const tokenizer::TokenId eos = chat ? *im_end
                                      : (config.eos_token_id >= 0 ? static_cast<tokenizer::TokenId>(config.eos_token_id)
                                                                  : *endoftext);
  nlohmann::json tc = {{"tokenizer_class", "PreTrainedTokenizerFast"},
                       {"bos_token", text_of(static_cast<int>(bos), bos)},
                       {"eos_token", text_of(static_cast<int>(eos), eos)},
                       {"pad_token", text_of(static_cast<int>(*endoftext), *endoftext)},
                       {"model_max_length", config.max_seq_len},
                       {"clean_up_tokenization_spaces", false}};
  if (im_start && im_end) tc["chat_template"] = std::string(tokenizer::chat_template_jinja());
  write_file_atomic(dir / "tokenizer_config.json", tc.dump(2) + "\n");
  nlohmann::json gc = {{"bos_token_id", bos}, {"pad_token_id", *endoftext}};
  if (chat)
    gc["eos_token_id"] = {*im_end, *endoftext};
  else
    gc["eos_token_id"] = eos;
  write_file_atomic(dir / "generation_config.json", gc.dump(2) + "\n");
  // transformers reads bos/eos from config.json too, and without them falls back to the
  // architecture's defaults (GPT-2: 50256, past the end of a small vocabulary).
  if (fs::exists(dir / "config.json")) {
    nlohmann::json hf = nlohmann::json::parse(read_file(dir / "config.json"));
    if (!hf.contains("bos_token_id")) hf["bos_token_id"] = bos;
    if (chat || !hf.contains("eos_token_id")) hf["eos_token_id"] = eos;
    write_file_atomic(dir / "config.json", hf.dump(2) + "\n");
  }
}

void save_model_dir(const fs::path& dir, const model::Model& model, const std::vector<fs::path>& copy_files,
                    bool chat) {
  fs::path tmp = dir;
  tmp += ".tmp." + std::to_string(::getpid());
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp);
  try {
    write_model_files(tmp, model);
    for (const auto& f : copy_files) copy_file_atomic(f, tmp / f.filename());
    write_hf_tokenizer_files(tmp, model.config(), chat);
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  replace_dir(tmp, dir);
}

int remove_torn_checkpoint_files(const fs::path& run_dir) {
  int removed = 0;
  std::error_code ec;
  if (!fs::is_directory(run_dir, ec)) return 0;
  std::vector<fs::path> torn;
  for (const auto& e : fs::directory_iterator(run_dir, ec)) {
    const std::string name = e.path().filename().string();
    int64_t step;
    const bool tmp = name.rfind(".ckpt-", 0) == 0 && name.find(".tmp.") != std::string::npos;
    const bool old = name.size() > 4 && name.compare(name.size() - 4, 4, ".old") == 0 &&
                     is_checkpoint_name(name.substr(0, name.size() - 4), &step);
    if (e.is_directory() && (tmp || old)) torn.push_back(e.path());
    // AtomicFileWriter's "<file>.tmp.<pid>" of the run dir's own files.
    const size_t t = name.rfind(".tmp.");
    if (t != std::string::npos && e.is_regular_file() && t + 5 < name.size() &&
        name.find_first_not_of("0123456789", t + 5) == std::string::npos)
      for (const char* own : {"latest", "run.json", "metrics.jsonl", "loss.svg", kAjiTokenizerFile, "tokenizer.json"})
        if (name.compare(0, t, own) == 0 && std::strlen(own) == t) torn.push_back(e.path());
  }
  for (const auto& p : torn) {
    fs::remove_all(p, ec);
    removed += !ec;
  }
  return removed;
}

std::vector<std::pair<int64_t, fs::path>> list_checkpoints(const fs::path& run_dir) {
  std::vector<std::pair<int64_t, fs::path>> out;
  std::error_code ec;
  if (!fs::is_directory(run_dir, ec)) return out;
  for (const auto& e : fs::directory_iterator(run_dir)) {
    int64_t step;
    if (e.is_directory() && is_checkpoint_name(e.path().filename().string(), &step)) out.push_back({step, e.path()});
  }
  std::sort(out.begin(), out.end());
  return out;
}

fs::path resolve_model_dir(const fs::path& path) {
  std::error_code ec;
  if (!fs::exists(path, ec))
    throw Error("model directory does not exist: " + path.string())
        .fix("give an aji run directory (aji pretrain --out), a checkpoint directory (RUN/ckpt-N), or a Hugging "
             "Face model directory with config.json and model.safetensors");
  if (!fs::is_directory(path, ec))
    throw Error("--model expects a directory, not a file: " + path.string())
        .fix("pass the directory that holds model.safetensors and config.json");
  if (fs::exists(path / "model.safetensors")) return path;
  if (fs::exists(path / "latest")) {
    std::string name = read_file(path / "latest");
    while (!name.empty() && (name.back() == '\n' || name.back() == '\r' || name.back() == ' ')) name.pop_back();
    fs::path ck = path / name;
    if (!name.empty() && fs::exists(ck / "model.safetensors")) return ck;
  }
  auto cks = list_checkpoints(path);
  for (auto it = cks.rbegin(); it != cks.rend(); ++it)
    if (fs::exists(it->second / "model.safetensors")) return it->second;
  if (fs::exists(path / "model.safetensors.index.json"))
    throw Error("sharded safetensors checkpoints (model.safetensors.index.json) are not supported")
        .at(path.string())
        .fix("merge the shards into one model.safetensors (small models only)");
  if (fs::exists(path / "pytorch_model.bin"))
    throw Error("this model directory has only pytorch_model.bin; aji reads model.safetensors")
        .at(path.string())
        .fix("convert it: `model.save_pretrained(dir, safe_serialization=True)` in transformers");
  throw Error("no model in this directory (no model.safetensors, no checkpoint)")
      .at(path.string())
      .fix("point --model at an aji run directory, a ckpt-N directory, or a Hugging Face model directory");
}

model::ModelConfig load_model_config(const fs::path& dir) {
  if (fs::exists(dir / "aji_config.json")) return model::ModelConfig::load(dir / "aji_config.json");
  if (!fs::exists(dir / "config.json"))
    throw Error("model directory has no config.json")
        .at(dir.string())
        .fix("a Hugging Face model directory needs config.json beside model.safetensors");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(dir / "config.json"));
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("config.json is not valid JSON: ") + e.what()).at((dir / "config.json").string());
  }
  return model::ModelConfig::from_hf_config_json(j, (dir / "config.json").string());
}

void load_weights(model::Model& model, const fs::path& path) {
  SafeTensorsFile st = SafeTensorsFile::load(path);
  const std::string arch = model::arch_name(model.config().arch);
  size_t used = 0;
  for (const auto& t : model.tensors()) {
    auto it = st.tensors.find(t.name);
    // Original GPT-2 files name tensors without the GPT2LMHeadModel "transformer." prefix.
    if (it == st.tensors.end() && t.name.rfind("transformer.", 0) == 0) it = st.tensors.find(t.name.substr(12));
    if (it == st.tensors.end()) {
      std::string sample;
      int k = 0;
      for (const auto& [name, _] : st.tensors)
        if (k++ < 3) sample += (sample.empty() ? "" : ", ") + name;
      throw Error("checkpoint lacks tensor '" + t.name + "' that a " + arch + " model of this config needs (the file has " +
                  std::to_string(st.tensors.size()) + " tensors, e.g. " + sample + ")")
          .at(path.string())
          .fix("the weights are of another architecture or config: use the config.json that came with them");
    }
    if (it->second.shape != t.shape) {
      auto fmt = [](const std::vector<int64_t>& s) {
        std::string o = "[";
        for (size_t i = 0; i < s.size(); ++i) o += (i ? "," : "") + std::to_string(s[i]);
        return o + "]";
      };
      throw Error("tensor '" + t.name + "' has shape " + fmt(it->second.shape) + " in the checkpoint but the " + arch +
                  " config needs " + fmt(t.shape))
          .at(path.string())
          .fix("the weights and config.json disagree: use the config the weights were trained with");
    }
    std::copy(it->second.data.begin(), it->second.data.end(), model.params() + t.offset);
    ++used;
  }
  (void)used;
}

model::Model load_model(const fs::path& path, fs::path* resolved_dir) {
  const fs::path dir = resolve_model_dir(path);
  if (resolved_dir) *resolved_dir = dir;
  // A reward model directory (align/reward_model.h writes rm.json beside the trunk) is not a
  // policy: its LM head was never trained for the reward.
  if (fs::exists(dir / "rm.json"))
    throw Error(dir.string() + " is a reward model directory (rm.json), not a language model")
        .at(dir.string())
        .fix("pass the SFT model directory here; a reward model goes to `aji rm score --model` or `aji ppo --reward`");
  model::Model m(load_model_config(dir));
  load_weights(m, dir / "model.safetensors");
  return m;
}

std::optional<fs::path> find_tokenizer_file(const fs::path& dir) {
  for (const char* name : {kAjiTokenizerFile, "tokenizer.json"})
    if (fs::exists(dir / name)) return dir / name;
  return std::nullopt;
}

fs::path require_tokenizer_file(const fs::path& model_dir, const fs::path& chosen) {
  if (!chosen.empty()) return chosen;
  if (auto t = find_tokenizer_file(model_dir)) return *t;
  throw Error("the model directory has no tokenizer (aji_tokenizer.json or tokenizer.json)")
      .at(model_dir.string())
      .fix("pass --tokenizer FILE with the tokenizer the model was trained with");
}

}  // namespace aji::train
