#include "aji/model/config.h"

#include <unistd.h>

#include <cmath>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "aji/base/error.h"
#include "aji/base/io.h"

namespace aji::model {

using nlohmann::json;

const char* arch_name(Arch a) { return a == Arch::kGpt2 ? "gpt2" : "llama"; }

namespace {

std::string str(int v) { return std::to_string(v); }

[[noreturn]] void bad(const std::string& source, const std::string& what, const std::string& fix) {
  throw Error(what).at(source).fix(fix);
}

template <typename T>
T get_num(const json& j, const char* key, const std::string& source) {
  const json& v = j.at(key);
  if (!v.is_number()) bad(source, std::string("\"") + key + "\" must be a number, got " + v.dump(),
                         std::string("write e.g. \"") + key + "\": 8");
  if constexpr (std::is_integral_v<T>) {
    if (!v.is_number_integer() && std::floor(v.get<double>()) != v.get<double>())
      bad(source, std::string("\"") + key + "\" must be an integer, got " + v.dump(), "drop the fraction");
    // Out-of-range values are reported as written (3000000000, not its int32 wrap -1294967296).
    const double d = v.get<double>();
    if (!(d >= static_cast<double>(std::numeric_limits<T>::min()) &&
          d <= static_cast<double>(std::numeric_limits<T>::max())))
      bad(source, std::string("\"") + key + "\" is " + v.dump() + ", beyond the largest supported value " +
                      std::to_string(std::numeric_limits<T>::max()),
          std::string("use a smaller \"") + key + "\"");
    return static_cast<T>(v.get<int64_t>());
  } else {
    const double d = v.get<double>();
    if (!std::isfinite(d))
      bad(source, std::string("\"") + key + "\" must be a finite number, got " + v.dump(), "write a finite number");
    // A double beyond the type's range (1e39 for a float) would become infinity here, pass a
    // positivity check, and be saved as null: a config that loads once and never again.
    if (std::fabs(d) > static_cast<double>(std::numeric_limits<T>::max()))
      bad(source, std::string("\"") + key + "\" is " + v.dump() + ", beyond the largest supported value " +
                      json(static_cast<double>(std::numeric_limits<T>::max())).dump(),
          std::string("use a smaller \"") + key + "\"");
    return static_cast<T>(d);
  }
}

bool get_bool(const json& j, const char* key, const std::string& source) {
  const json& v = j.at(key);
  if (!v.is_boolean()) bad(source, std::string("\"") + key + "\" must be true or false, got " + v.dump(), "use true/false");
  return v.get<bool>();
}

}  // namespace

void ModelConfig::validate(const std::string& source) const {
  auto need_pos = [&](int v, const char* name) {
    if (v <= 0) bad(source, std::string(name) + " must be positive, got " + str(v), std::string("set \"") + name + "\" to a positive integer");
  };
  need_pos(vocab_size, "vocab_size");
  need_pos(n_layer, "n_layer");
  need_pos(n_head, "n_head");
  need_pos(n_kv_head, "n_kv_head");
  need_pos(d_model, "d_model");
  need_pos(max_seq_len, "max_seq_len");
  // Upper bounds before any product of dimensions (q_width, ff, the parameter count), so none
  // of them overflows: each is far beyond any model a machine can hold (the largest published
  // models use d_model 16384-32768, d_ff 53248-131072, 128 heads, a 256k vocabulary).
  auto need_at_most = [&](int v, int64_t most, const char* name) {
    if (v > most)
      bad(source, std::string(name) + " is " + str(v) + ", beyond the largest supported value " + std::to_string(most),
          std::string("use a smaller \"") + name + "\"");
  };
  need_at_most(vocab_size, int64_t{1} << 24, "vocab_size");
  need_at_most(n_layer, int64_t{1} << 20, "n_layer");
  need_at_most(n_head, int64_t{1} << 14, "n_head");
  need_at_most(n_kv_head, int64_t{1} << 14, "n_kv_head");
  need_at_most(d_model, int64_t{1} << 18, "d_model");
  need_at_most(head_dim, int64_t{1} << 14, "head_dim");
  need_at_most(d_ff, int64_t{1} << 20, "d_ff");
  need_at_most(max_seq_len, int64_t{1} << 24, "max_seq_len");
  if (head_dim < 0) bad(source, "head_dim must be >= 0 (0 = d_model / n_head)", "remove \"head_dim\" or make it positive");
  if (head_dim == 0 && d_model % n_head != 0)
    bad(source, "n_head (" + str(n_head) + ") does not divide d_model (" + str(d_model) + ")",
        "choose n_head dividing d_model, e.g. n_head " + str(d_model % 64 == 0 ? d_model / 64 : 1) +
            " (head size 64), or set \"head_dim\" explicitly");
  if (n_head % n_kv_head != 0)
    bad(source, "n_kv_head (" + str(n_kv_head) + ") does not divide n_head (" + str(n_head) + ")",
        "grouped-query attention needs n_head to be a multiple of n_kv_head; e.g. n_kv_head " + str(n_head) +
            " (plain attention) or a divisor of " + str(n_head));
  if (d_ff < 0) bad(source, "d_ff must be >= 0", "set \"d_ff\" to the MLP width (0 = 4*d_model for gpt2)");
  if (!(norm_eps > 0.0f) || !std::isfinite(norm_eps)) bad(source, "norm_eps must be a positive number", "e.g. \"norm_eps\": 1e-5");
  if (!(init_std > 0.0f) || !std::isfinite(init_std)) bad(source, "init_std must be a positive number", "e.g. \"init_std\": 0.02");
  if (arch == Arch::kGpt2) {
    if (n_kv_head != n_head)
      bad(source, "gpt2 has no grouped-query attention (n_kv_head " + str(n_kv_head) + " != n_head " + str(n_head) + ")",
          "set n_kv_head = n_head, or use \"arch\": \"llama\"");
    if (qk_norm) bad(source, "qk_norm is a llama-family option", "remove \"qk_norm\" or use \"arch\": \"llama\"");
    if (!tied_embeddings) bad(source, "gpt2 ties the LM head to the token embedding", "set \"tied_embeddings\": true");
    if (!bias) bad(source, "gpt2 uses biases (Hugging Face GPT2 layout)", "set \"bias\": true");
    if (q_width() != d_model) bad(source, "gpt2 needs n_head * head_dim == d_model", "remove \"head_dim\"");
  } else {
    if (d_ff == 0) bad(source, "llama needs the MLP width d_ff", "set \"d_ff\", e.g. about 8/3 * d_model rounded to a multiple of 64 (" + str(((d_model * 8 / 3) + 63) / 64 * 64) + ")");
    if (hd() % 2 != 0) bad(source, "RoPE needs an even head size, got " + str(hd()), "change d_model / n_head (or head_dim) to an even number");
    if (bias) bad(source, "the llama family in aji has no biases", "set \"bias\": false");
    if (!(rope_theta > 0.0f) || !std::isfinite(rope_theta)) bad(source, "rope_theta must be a positive number", "e.g. \"rope_theta\": 10000");
  }
  if ((int64_t)vocab_size * d_model > (int64_t)1 << 34) bad(source, "vocab_size * d_model is too large", "reduce the vocabulary or the width");
  // The parameter count in double before num_params() counts it in int64: past 10^15 (a
  // thousand times the largest models) no machine holds the model, and the count could overflow.
  const double C = d_model, QW = (double)n_head * hd(), KVW = (double)n_kv_head * hd(), F = ff();
  const double total = (double)n_layer * (C * (QW + 2 * KVW) + QW * C + 3 * F * C + 4 * C) +
                       2.0 * vocab_size * C + (double)max_seq_len * C;
  if (total > 1e15)
    bad(source, "this model would have about " + std::to_string((long long)(total / 1e12)) + " trillion parameters",
        "use fewer layers, heads or a smaller width");
}

int64_t ModelConfig::num_params() const {
  const int64_t C = d_model, V = vocab_size, F = ff(), L = n_layer;
  int64_t n = V * C;  // token embedding
  if (!tied_embeddings) n += V * C;
  if (arch == Arch::kGpt2) {
    n += (int64_t)max_seq_len * C;
    int64_t per = 2 * C + C * 3 * C + 3 * C + C * C + C + 2 * C + C * F + F + F * C + C;
    n += L * per + 2 * C;
  } else {
    int64_t per = C + (int64_t)qkv_width() * C + (int64_t)C * q_width() + C + 2 * F * C + F * C;
    if (qk_norm) per += 2 * hd();
    n += L * per + C;
  }
  return n;
}

double ModelConfig::train_flops_per_token(int T) const {
  const double C = d_model, V = vocab_size, F = ff(), L = n_layer;
  double mm = C * qkv_width() + (double)q_width() * C + (arch == Arch::kGpt2 ? 2 * C * F : 3 * C * F);
  double per_token_fwd = 2.0 * (L * mm + C * V);
  // attention: q.k and p.v over on average T/2 keys (causal), per head
  per_token_fwd += 2.0 * L * 2.0 * q_width() * (T / 2.0);
  return 3.0 * per_token_fwd;
}

static const std::set<std::string> kAjiKeys = {
    "arch", "vocab_size", "n_layer", "n_head", "n_kv_head", "d_model", "head_dim", "d_ff", "max_seq_len", "norm_eps",
    "rope_theta", "tied_embeddings", "qk_norm", "bias", "init_std", "bos_token_id", "eos_token_id", "name", "comment"};

ModelConfig ModelConfig::from_json(const json& j, const std::string& source) {
  if (!j.is_object()) bad(source, "a model config must be a JSON object", "see configs/tiny.json for an example");
  if (j.contains("model_type")) return from_hf_config_json(j, source);
  for (auto it = j.begin(); it != j.end(); ++it)
    if (!kAjiKeys.count(it.key()))
      bad(source, "unknown key \"" + it.key() + "\" in model config",
          "known keys: arch, vocab_size, n_layer, n_head, n_kv_head, d_model, head_dim, d_ff, max_seq_len, norm_eps, "
          "rope_theta, tied_embeddings, qk_norm, bias, init_std, bos_token_id, eos_token_id");
  ModelConfig c;
  if (!j.contains("arch") || !j["arch"].is_string()) bad(source, "missing \"arch\"", "add \"arch\": \"gpt2\" or \"arch\": \"llama\"");
  std::string a = j["arch"].get<std::string>();
  if (a == "gpt2") {
    c.arch = Arch::kGpt2;
    c.tied_embeddings = true;
    c.bias = true;
  } else if (a == "llama") {
    c.arch = Arch::kLlama;
  } else {
    bad(source, "unknown arch \"" + a + "\"", "use \"gpt2\" or \"llama\"");
  }
  for (const char* k : {"vocab_size", "n_layer", "n_head", "d_model", "max_seq_len"})
    if (!j.contains(k)) bad(source, std::string("missing \"") + k + "\"", std::string("add \"") + k + "\" (see configs/tiny.json)");
  c.vocab_size = get_num<int>(j, "vocab_size", source);
  c.n_layer = get_num<int>(j, "n_layer", source);
  c.n_head = get_num<int>(j, "n_head", source);
  c.n_kv_head = j.contains("n_kv_head") ? get_num<int>(j, "n_kv_head", source) : c.n_head;
  c.d_model = get_num<int>(j, "d_model", source);
  if (j.contains("head_dim")) c.head_dim = get_num<int>(j, "head_dim", source);
  if (j.contains("d_ff")) c.d_ff = get_num<int>(j, "d_ff", source);
  c.max_seq_len = get_num<int>(j, "max_seq_len", source);
  if (j.contains("norm_eps")) c.norm_eps = get_num<float>(j, "norm_eps", source);
  if (j.contains("rope_theta")) c.rope_theta = get_num<float>(j, "rope_theta", source);
  if (j.contains("tied_embeddings")) c.tied_embeddings = get_bool(j, "tied_embeddings", source);
  if (j.contains("qk_norm")) c.qk_norm = get_bool(j, "qk_norm", source);
  if (j.contains("bias")) c.bias = get_bool(j, "bias", source);
  if (j.contains("init_std")) c.init_std = get_num<float>(j, "init_std", source);
  if (j.contains("bos_token_id")) c.bos_token_id = get_num<int>(j, "bos_token_id", source);
  if (j.contains("eos_token_id")) c.eos_token_id = get_num<int>(j, "eos_token_id", source);
  c.validate(source);
  return c;
}

json ModelConfig::to_json() const {
  json j;
  j["arch"] = arch_name(arch);
  j["vocab_size"] = vocab_size;
  j["n_layer"] = n_layer;
  j["n_head"] = n_head;
  j["n_kv_head"] = n_kv_head;
  j["d_model"] = d_model;
  if (head_dim > 0) j["head_dim"] = head_dim;
  j["d_ff"] = ff();
  j["max_seq_len"] = max_seq_len;
  j["norm_eps"] = norm_eps;
  j["rope_theta"] = rope_theta;
  j["tied_embeddings"] = tied_embeddings;
  j["qk_norm"] = qk_norm;
  j["bias"] = bias;
  j["init_std"] = init_std;
  if (bos_token_id >= 0) j["bos_token_id"] = bos_token_id;
  if (eos_token_id >= 0) j["eos_token_id"] = eos_token_id;
  return j;
}

ModelConfig ModelConfig::from_hf_config_json(const json& j, const std::string& source) {
  if (!j.is_object() || !j.contains("model_type") || !j["model_type"].is_string())
    bad(source, "not a Hugging Face config.json (no \"model_type\")", "point at the model directory's config.json");
  const std::string type = j["model_type"].get<std::string>();
  ModelConfig c;
  auto opt_int = [&](const char* k, int dflt) {
    return (j.contains(k) && !j[k].is_null()) ? get_num<int>(j, k, source) : dflt;
  };
  auto opt_float = [&](const char* k, float dflt) {
    return (j.contains(k) && !j[k].is_null()) ? get_num<float>(j, k, source) : dflt;
  };
  auto req_int = [&](const char* k) {
    if (!j.contains(k) || j[k].is_null()) bad(source, std::string("config.json lacks \"") + k + "\"", "use a complete config.json from the model's repository");
    return get_num<int>(j, k, source);
  };
  if (type == "gpt2") {
    c.arch = Arch::kGpt2;
    c.vocab_size = req_int("vocab_size");
    c.max_seq_len = req_int("n_positions");
    c.d_model = req_int("n_embd");
    c.n_layer = req_int("n_layer");
    c.n_head = req_int("n_head");
    c.n_kv_head = c.n_head;
    c.d_ff = opt_int("n_inner", 0);  // absent or null: 4 * n_embd (ff())
    c.norm_eps = opt_float("layer_norm_epsilon", 1e-5f);
    c.init_std = opt_float("initializer_range", 0.02f);
    c.tied_embeddings = true;
    if (j.contains("tie_word_embeddings") && j["tie_word_embeddings"].is_boolean() && !j["tie_word_embeddings"].get<bool>())
      bad(source, "untied GPT-2 checkpoints are not supported", "use a GPT-2 checkpoint with tie_word_embeddings true");
    c.bias = true;
    if (j.contains("activation_function") && j["activation_function"].is_string()) {
      std::string act = j["activation_function"].get<std::string>();
      if (act != "gelu_new" && act != "gelu_pytorch_tanh")
        bad(source, "GPT-2 activation \"" + act + "\" is not supported (aji implements the tanh GELU)",
            "use a checkpoint with activation_function gelu_new");
    }
  } else if (type == "llama" || type == "qwen3" || type == "mistral") {
    c.arch = Arch::kLlama;
    c.vocab_size = req_int("vocab_size");
    c.d_model = req_int("hidden_size");
    c.d_ff = req_int("intermediate_size");
    c.n_layer = req_int("num_hidden_layers");
    c.n_head = req_int("num_attention_heads");
    c.n_kv_head = opt_int("num_key_value_heads", c.n_head);
    c.max_seq_len = opt_int("max_position_embeddings", 2048);
    c.norm_eps = opt_float("rms_norm_eps", 1e-6f);
    c.rope_theta = opt_float("rope_theta", 10000.0f);
    c.init_std = opt_float("initializer_range", 0.02f);
    c.tied_embeddings = j.contains("tie_word_embeddings") && j["tie_word_embeddings"].is_boolean()
                            ? j["tie_word_embeddings"].get<bool>()
                            : false;
    int hdim = opt_int("head_dim", 0);
    if (hdim > 0 && int64_t{hdim} * c.n_head != c.d_model) c.head_dim = hdim;
    c.qk_norm = (type == "qwen3");
    c.bias = false;
    for (const char* k : {"attention_bias", "mlp_bias"})
      if (j.contains(k) && j[k].is_boolean() && j[k].get<bool>())
        bad(source, std::string(k) + " = true is not supported", "use a Llama checkpoint without linear biases");
    if (j.contains("rope_scaling") && !j["rope_scaling"].is_null())
      bad(source, "rope_scaling is not supported", "use a checkpoint without rope_scaling");
    if (j.contains("hidden_act") && j["hidden_act"].is_string() && j["hidden_act"].get<std::string>() != "silu")
      bad(source, "hidden_act \"" + j["hidden_act"].get<std::string>() + "\" is not supported", "aji's llama MLP is SwiGLU (silu)");
  } else {
    bad(source, "model_type \"" + type + "\" is not supported", "aji reads gpt2, llama and qwen3 (QK-norm) checkpoints");
  }
  c.bos_token_id = opt_int("bos_token_id", -1);
  c.eos_token_id = opt_int("eos_token_id", -1);
  c.validate(source);
  return c;
}

json ModelConfig::to_hf_config_json() const {
  json j;
  if (arch == Arch::kGpt2) {
    j["architectures"] = {"GPT2LMHeadModel"};
    j["model_type"] = "gpt2";
    j["vocab_size"] = vocab_size;
    j["n_positions"] = max_seq_len;
    j["n_ctx"] = max_seq_len;
    j["n_embd"] = d_model;
    j["n_layer"] = n_layer;
    j["n_head"] = n_head;
    j["n_inner"] = ff();
    j["activation_function"] = "gelu_new";
    j["layer_norm_epsilon"] = norm_eps;
    j["initializer_range"] = init_std;
    j["resid_pdrop"] = 0.0;
    j["embd_pdrop"] = 0.0;
    j["attn_pdrop"] = 0.0;
    j["scale_attn_weights"] = true;
    j["tie_word_embeddings"] = true;
  } else {
    j["architectures"] = {qk_norm ? "Qwen3ForCausalLM" : "LlamaForCausalLM"};
    j["model_type"] = qk_norm ? "qwen3" : "llama";
    j["vocab_size"] = vocab_size;
    j["hidden_size"] = d_model;
    j["intermediate_size"] = ff();
    j["num_hidden_layers"] = n_layer;
    j["num_attention_heads"] = n_head;
    j["num_key_value_heads"] = n_kv_head;
    j["head_dim"] = hd();
    j["max_position_embeddings"] = max_seq_len;
    j["rms_norm_eps"] = norm_eps;
    j["rope_theta"] = rope_theta;
    j["hidden_act"] = "silu";
    j["attention_bias"] = false;
    j["mlp_bias"] = false;
    j["initializer_range"] = init_std;
    j["tie_word_embeddings"] = tied_embeddings;
    j["attention_dropout"] = 0.0;
  }
  j["torch_dtype"] = "float32";
  if (bos_token_id >= 0) j["bos_token_id"] = bos_token_id;
  if (eos_token_id >= 0) j["eos_token_id"] = eos_token_id;
  return j;
}

namespace {
std::filesystem::path exe_dir() {
  std::error_code ec;
  auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::filesystem::path() : p.parent_path();
}
}  // namespace

ModelConfig ModelConfig::load(const std::filesystem::path& path) {
  namespace fs = std::filesystem;
  fs::path p = path;
  std::error_code ec;
  if (!fs::exists(p, ec) && !path.has_extension() && !path.has_parent_path()) {
    // A preset name: look in ./configs, then beside the binary (build/ → ../configs).
    std::vector<fs::path> dirs = {fs::path("configs")};
    fs::path ed = exe_dir();
    if (!ed.empty()) {
      dirs.push_back(ed / "configs");
      dirs.push_back(ed.parent_path() / "configs");
      dirs.push_back(ed.parent_path() / "share" / "aji" / "configs");
    }
    for (const auto& d : dirs) {
      fs::path cand = d / (path.string() + ".json");
      if (fs::exists(cand, ec)) {
        p = cand;
        break;
      }
    }
  }
  if (fs::is_directory(p, ec)) p /= "config.json";
  if (!fs::exists(p, ec))
    throw Error("model config not found: " + path.string())
        .fix("give a JSON file (e.g. configs/tiny.json), a model directory with config.json, or a preset name: tiny, tiny-gpt2, gpt2-124m, llama-small");
  std::string text = read_file(p.string());
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    throw Error(std::string("model config is not valid JSON: ") + e.what()).at_offset(p.string(), e.byte).fix("fix the JSON syntax");
  } catch (const json::exception& e) {  // e.g. out_of_range 406: a number too large for a double ("1e705")
    throw Error(std::string("model config is not valid JSON: ") + e.what()).at(p.string()).fix("fix the number");
  }
  try {
    return from_json(j, p.string());
  } catch (const json::exception& e) {
    throw Error(std::string("model config: ") + e.what()).at(p.string()).fix("check the field types against configs/tiny.json");
  }
}

}  // namespace aji::model
