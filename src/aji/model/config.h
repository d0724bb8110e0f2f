// ModelConfig: the sizes and switches of one decoder-only transformer, for the two
// families aji builds from one code path:
//   gpt2  — learned positions, LayerNorm (with bias), GELU (tanh approx), fused c_attn,
//           biases everywhere, tied embeddings (Hugging Face GPT2LMHeadModel layout).
//   llama — RoPE (rotate_half), RMSNorm, SwiGLU, grouped-query attention, no biases,
//           untied embeddings by default, optional QK-norm (then the Hugging Face layout
//           is Qwen3's: q_norm / k_norm per head).
// aji's own JSON ("configs/tiny.json") and Hugging Face config.json are both read and
// written here; validate() says what to change when sizes do not fit together.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace aji::model {

enum class Arch { kGpt2, kLlama };

const char* arch_name(Arch a);  // "gpt2" | "llama"

struct ModelConfig {
  Arch arch = Arch::kLlama;
  int vocab_size = 8192;
  int n_layer = 6;
  int n_head = 6;
  int n_kv_head = 6;       // grouped-query attention: n_head % n_kv_head == 0 (gpt2: == n_head)
  int d_model = 384;       // residual width C
  int head_dim = 0;        // 0 = d_model / n_head (Qwen3-style configs may set it)
  int d_ff = 0;            // MLP hidden width; 0 = 4*d_model (gpt2) or required (llama)
  int max_seq_len = 256;   // context length (gpt2: number of learned positions)
  float norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  bool tied_embeddings = false;  // lm_head shares the token embedding
  bool qk_norm = false;          // RMSNorm over each q/k head before RoPE (llama only)
  bool bias = false;             // biases on linear layers and LayerNorm (gpt2: true)
  float init_std = 0.02f;        // std of the normal init of matrices and embeddings
  int bos_token_id = -1;         // -1 = not set (only carried into config.json)
  int eos_token_id = -1;

  // --- derived sizes ---------------------------------------------------------------
  int hd() const { return head_dim > 0 ? head_dim : (n_head > 0 ? d_model / n_head : 0); }
  int q_width() const { return n_head * hd(); }       // width of all query heads
  int kv_width() const { return n_kv_head * hd(); }   // width of all key (or value) heads
  int qkv_width() const { return q_width() + 2 * kv_width(); }
  int ff() const { return d_ff > 0 ? d_ff : 4 * d_model; }
  bool is_gpt2() const { return arch == Arch::kGpt2; }

  // Throws aji::Error saying which field to change (heads not dividing the width, GQA
  // groups not dividing heads, odd head size with RoPE, gpt2 without tied embeddings...).
  // `source` names the file in the message.
  void validate(const std::string& source = "model config") const;

  // Number of parameters (tied lm_head counted once).
  int64_t num_params() const;
  // Matmul FLOPs of one training step per token (forward + backward = 3x forward),
  // including attention's score/value products at sequence length T (causal: half).
  double train_flops_per_token(int T) const;

  // aji's own JSON. Unknown keys are an error (a typo must not silently fall back).
  static ModelConfig from_json(const nlohmann::json& j, const std::string& source = "model config");
  nlohmann::json to_json() const;
  // Hugging Face config.json: GPT2LMHeadModel, LlamaForCausalLM, Qwen3ForCausalLM (qk_norm).
  static ModelConfig from_hf_config_json(const nlohmann::json& j, const std::string& source = "config.json");
  nlohmann::json to_hf_config_json() const;

  // Reads a file: aji JSON, or an HF config.json (recognised by "model_type"), or a
  // preset name ("tiny" → configs/tiny.json searched beside the binary and the cwd).
  static ModelConfig load(const std::filesystem::path& path);
};

}  // namespace aji::model
