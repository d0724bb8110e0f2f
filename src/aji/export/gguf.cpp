#include "aji/export/gguf.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <unordered_map>

#include "aji/base/json_number.h"
#include "aji/base/atomic_file.h"
#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/tokenizer/chat_template.h"

namespace aji::gguf {

namespace fs = std::filesystem;
using tokenizer::SplitPattern;
using tokenizer::TokenId;

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" little-endian
constexpr uint32_t kVersion = 3;
constexpr uint32_t kAlignment = 32;

// GGUF value types (gguf-py GGUFValueType).
enum ValueType : uint32_t {
  kU8 = 0, kI8 = 1, kU16 = 2, kI16 = 3, kU32 = 4, kI32 = 5, kF32v = 6, kBool = 7,
  kString = 8, kArray = 9, kU64 = 10, kI64 = 11, kF64 = 12,
};

// Token types (llama.cpp's llama_token_type / gguf-py TokenType).
constexpr int32_t kTokNormal = 1, kTokControl = 3, kTokUnused = 5;

// ---- little-endian byte buffer --------------------------------------------------------------
struct Buf {
  std::string s;
  template <typename T>
  void pod(T v) {
    s.append(reinterpret_cast<const char*>(&v), sizeof v);
  }
  void str(std::string_view v) {
    pod<uint64_t>(v.size());
    s.append(v.data(), v.size());
  }
};

struct KvWriter {
  Buf b;
  size_t n = 0;
  void key(std::string_view k, uint32_t type) {
    b.str(k);
    b.pod<uint32_t>(type);
    ++n;
  }
  void u32(std::string_view k, uint32_t v) { key(k, kU32), b.pod(v); }
  void f32(std::string_view k, float v) { key(k, kF32v), b.pod(v); }
  void boolean(std::string_view k, bool v) { key(k, kBool), b.pod<uint8_t>(v ? 1 : 0); }
  void str(std::string_view k, std::string_view v) { key(k, kString), b.str(v); }
  void str_array(std::string_view k, const std::vector<std::string>& v) {
    key(k, kArray);
    b.pod<uint32_t>(kString);
    b.pod<uint64_t>(v.size());
    for (const auto& x : v) b.str(x);
  }
  void i32_array(std::string_view k, const std::vector<int32_t>& v) {
    key(k, kArray);
    b.pod<uint32_t>(kI32);
    b.pod<uint64_t>(v.size());
    for (int32_t x : v) b.pod(x);
  }
};

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

// One tensor to write: where its floats come from and how they are laid out.
struct OutTensor {
  std::string name;
  std::vector<uint64_t> dims;  // ggml ne order
  TensorType type = TensorType::kF32;
  uint64_t offset = 0;
  // Row-major (rows, cols) float source after any transposition/permutation; cols == dims[0].
  std::vector<float> data;
};

uint64_t type_bytes(TensorType t, uint64_t n) {
  switch (t) {
    case TensorType::kF32: return n * 4;
    case TensorType::kF16:
    case TensorType::kBF16: return n * 2;
    case TensorType::kQ8_0: return n / kQ8BlockSize * kQ8BlockBytes;
  }
  return 0;
}

std::string type_name(TensorType t) {
  switch (t) {
    case TensorType::kF32: return "f32";
    case TensorType::kF16: return "f16";
    case TensorType::kBF16: return "bf16";
    case TensorType::kQ8_0: return "q8_0";
  }
  return "?";
}

// The bytes_to_unicode table: byte -> code point.
const std::vector<uint32_t>& byte_code_points() {
  static const std::vector<uint32_t> table = [] {
    std::vector<uint32_t> t(256);
    std::vector<bool> direct(256, false);
    for (int b = '!'; b <= '~'; ++b) direct[b] = true;
    for (int b = 0xA1; b <= 0xAC; ++b) direct[b] = true;
    for (int b = 0xAE; b <= 0xFF; ++b) direct[b] = true;
    uint32_t n = 0;
    for (int b = 0; b < 256; ++b) t[b] = direct[b] ? static_cast<uint32_t>(b) : 256 + n++;
    return t;
  }();
  return table;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// Rows of a Hugging Face q_proj/k_proj (n_head heads of hd rows each, rotate_half pairs
// (i, i + hd/2)) reordered to llama.cpp's adjacent pairs (2i, 2i+1): convert_hf_to_gguf.py's
//   w.reshape(n_head, 2, hd/2, C).swapaxes(1, 2).reshape(w.shape)
std::vector<float> permute_rope_rows(const float* w, int n_head, int hd, int64_t cols) {
  std::vector<float> out(static_cast<size_t>(n_head) * hd * cols);
  const int half = hd / 2;
  for (int h = 0; h < n_head; ++h)
    for (int i = 0; i < half; ++i)
      for (int j = 0; j < 2; ++j) {
        const size_t dst = static_cast<size_t>(h) * hd + static_cast<size_t>(i) * 2 + j;
        const size_t src = static_cast<size_t>(h) * hd + static_cast<size_t>(j) * half + i;
        std::memcpy(out.data() + dst * cols, w + src * cols, sizeof(float) * cols);
      }
  return out;
}

std::vector<float> transpose(const float* w, int64_t rows, int64_t cols) {
  std::vector<float> out(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) out[static_cast<size_t>(c * rows + r)] = w[r * cols + c];
  return out;
}

}  // namespace

// ---- types -----------------------------------------------------------------------------------

std::optional<FileType> parse_file_type(std::string_view n) {
  if (n == "f32") return FileType::kF32;
  if (n == "f16") return FileType::kF16;
  if (n == "bf16") return FileType::kBF16;
  if (n == "q8_0") return FileType::kQ8_0;
  return std::nullopt;
}

std::string_view file_type_name(FileType t) {
  switch (t) {
    case FileType::kF32: return "f32";
    case FileType::kF16: return "f16";
    case FileType::kBF16: return "bf16";
    case FileType::kQ8_0: return "q8_0";
  }
  return "?";
}

uint32_t llama_file_type(FileType t) {
  switch (t) {
    case FileType::kF32: return 0;
    case FileType::kF16: return 1;
    case FileType::kQ8_0: return 7;
    case FileType::kBF16: return 32;
  }
  return 0;
}

// ---- tokenizer pieces ------------------------------------------------------------------------

std::string pretokenizer_name(SplitPattern p, bool allow_approximate) {
  switch (p) {
    case SplitPattern::kGpt2: return "gpt-2";
    case SplitPattern::kCl100k: return "llama-bpe";  // llama.cpp's LLAMA3 regex = cl100k (tokenizer.json form)
    case SplitPattern::kQwen2: return "qwen2";
    case SplitPattern::kO200k:
      if (allow_approximate) return "gpt-4o";
      throw Error("the tokenizer's split pattern is o200k, and llama.cpp has no pre-tokenizer with the identical "
                  "regex: its \"gpt-4o\" pre-tokenizer is an adaptation that splits words mixing non-ASCII upper- "
                  "and lower-case letters (and combining marks) differently, so llama.cpp would tokenize some text "
                  "differently from aji")
          .fix("export anyway with --allow-approximate-pretokenizer (writes tokenizer.ggml.pre = \"gpt-4o\"), or "
               "train the tokenizer with --pattern cl100k, gpt2 or qwen2, whose llama.cpp pre-tokenizers are identical");
  }
  throw Error("unknown split pattern");
}

std::string bytes_to_unicode(std::string_view bytes) {
  const auto& table = byte_code_points();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) append_utf8(out, table[c]);
  return out;
}

std::vector<std::string> bpe_merges(const tokenizer::Tokenizer& tok, size_t* unreachable) {
  const size_t n = tok.n_ranks();
  std::vector<std::pair<uint32_t, std::string>> merges;  // (priority, "a b")
  size_t bad = 0;
  auto priority_of = [&](std::string_view bytes) -> std::optional<uint32_t> {
    auto id = tok.rank_of(bytes);
    if (!id) return std::nullopt;
    return tok.merge_priority(*id);
  };
  std::vector<std::string> parts;
  for (size_t id = 0; id < n; ++id) {
    const std::string_view bytes = tok.token_bytes(static_cast<TokenId>(id));
    if (bytes.size() < 2) continue;
    const uint32_t max_rank = tok.merge_priority(static_cast<TokenId>(id));
    parts.clear();
    for (char c : bytes) parts.emplace_back(1, c);
    // convert_hf_to_gguf.py QwenModel.bpe(mergeable_ranks, token, max_rank)
    while (parts.size() > 1) {
      std::optional<uint32_t> best;
      size_t at = 0;
      for (size_t i = 0; i + 1 < parts.size(); ++i) {
        auto r = priority_of(parts[i] + parts[i + 1]);
        if (r && (!best || *r < *best)) best = r, at = i;
      }
      if (!best || *best >= max_rank) break;
      parts[at] += parts[at + 1];
      parts.erase(parts.begin() + static_cast<std::ptrdiff_t>(at) + 1);
    }
    if (parts.size() != 2) {
      ++bad;
      continue;
    }
    merges.emplace_back(max_rank, bytes_to_unicode(parts[0]) + " " + bytes_to_unicode(parts[1]));
  }
  std::stable_sort(merges.begin(), merges.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<std::string> out;
  out.reserve(merges.size());
  for (auto& m : merges) out.push_back(std::move(m.second));
  if (unreachable) *unreachable = bad;
  return out;
}

// ---- the writer ------------------------------------------------------------------------------

ExportSummary write_gguf(const model::Model& model, const tokenizer::Tokenizer& tok, const fs::path& out,
                         const ExportOptions& o) {
  const model::ModelConfig& c = model.config();
  ExportSummary sum;
  const bool gpt2 = c.is_gpt2();
  const std::string arch = gpt2 ? "gpt2" : (c.qk_norm ? "qwen3" : "llama");
  sum.architecture = arch;

  // --- refusals first: nothing is opened until everything is known to be expressible ---
  if (gpt2 && !c.tied_embeddings)
    throw Error("a gpt2 model with an untied lm_head cannot be written: llama.cpp's gpt2 reads one output matrix "
                "and aji's gpt2 layout has none")
        .fix("export a model trained with tied embeddings (aji's gpt2 configs always are)");
  if (!gpt2 && c.bias)
    throw Error("a llama model with biases has no llama.cpp equivalent in aji's layout")
        .fix("export a llama model trained without \"bias\"");
  if (!gpt2 && c.hd() % 2 != 0)
    throw Error("head size " + std::to_string(c.hd()) + " is odd; RoPE needs an even head size")
        .fix("use a config whose head_dim is even");
  if (tok.vocab_size() > static_cast<size_t>(c.vocab_size))
    throw Error("the tokenizer has " + std::to_string(tok.vocab_size()) + " ids but the model only " +
                std::to_string(c.vocab_size))
        .fix("export with the tokenizer the model was trained with");
  for (int b = 0; b < 256; ++b)
    if (!tok.rank_of(std::string(1, static_cast<char>(b))))
      throw Error("the tokenizer has no token for the byte " + std::to_string(b) +
                  "; llama.cpp's byte-level BPE needs all 256 single-byte tokens")
          .fix("use a byte-level BPE tokenizer (every aji-trained tokenizer has them)");
  sum.pre = pretokenizer_name(tok.pattern(), o.allow_approximate_pretokenizer);
  const auto endoftext = tok.special_id("<|endoftext|>");
  const auto im_end = tok.special_id(tokenizer::kImEnd);
  const auto im_start = tok.special_id(tokenizer::kImStart);
  if (o.chat && (!im_end || !im_start))
    throw Error("a chat export needs <|im_start|> and <|im_end|> in the tokenizer, and this one lacks them")
        .fix("export it as a base model (--base), or use the tokenizer the chat model was fine-tuned with");
  std::optional<TokenId> bos = endoftext;
  if (c.bos_token_id >= 0) bos = static_cast<TokenId>(c.bos_token_id);
  std::optional<TokenId> eos = o.chat ? im_end : endoftext;
  if (!o.chat && c.eos_token_id >= 0) eos = static_cast<TokenId>(c.eos_token_id);
  if (!eos)
    throw Error("the tokenizer has no <|endoftext|> token and the model config names no eos_token_id, so llama.cpp "
                "would never stop generating")
        .fix("use a tokenizer with <|endoftext|> (aji tokenizer train adds it)");
  if (!bos) bos = eos;

  // --- vocabulary -----------------------------------------------------------------------------
  const size_t V = static_cast<size_t>(c.vocab_size);
  std::vector<std::string> tokens(V);
  std::vector<int32_t> types(V, kTokUnused);
  for (size_t id = 0; id < tok.n_ranks(); ++id) {
    tokens[id] = bytes_to_unicode(tok.token_bytes(static_cast<TokenId>(id)));
    types[id] = kTokNormal;
  }
  for (const auto& s : tok.specials()) {
    tokens[s.id] = s.text;
    types[s.id] = kTokControl;
  }
  for (size_t id = 0; id < V; ++id)
    if (types[id] == kTokUnused) tokens[id] = "[PAD" + std::to_string(id) + "]";
  const std::vector<std::string> merges = bpe_merges(tok, &sum.unreachable_tokens);
  sum.n_vocab = V;
  sum.n_merges = merges.size();

  // --- metadata ---------------------------------------------------------------------------------
  KvWriter kv;
  kv.str("general.architecture", arch);
  kv.str("general.name", o.name.empty() ? "aji" : o.name);
  kv.u32("general.file_type", llama_file_type(o.type));
  if (o.type == FileType::kQ8_0) kv.u32("general.quantization_version", 2);
  kv.u32("general.alignment", kAlignment);
  const std::string a = arch + ".";
  kv.u32(a + "context_length", static_cast<uint32_t>(c.max_seq_len));
  kv.u32(a + "embedding_length", static_cast<uint32_t>(c.d_model));
  kv.u32(a + "block_count", static_cast<uint32_t>(c.n_layer));
  kv.u32(a + "feed_forward_length", static_cast<uint32_t>(c.ff()));
  kv.u32(a + "attention.head_count", static_cast<uint32_t>(c.n_head));
  kv.u32(a + "vocab_size", static_cast<uint32_t>(V));
  if (gpt2) {
    kv.f32(a + "attention.layer_norm_epsilon", c.norm_eps);
  } else {
    kv.u32(a + "attention.head_count_kv", static_cast<uint32_t>(c.n_kv_head));
    kv.f32(a + "attention.layer_norm_rms_epsilon", c.norm_eps);
    kv.f32(a + "rope.freq_base", c.rope_theta);
    kv.u32(a + "rope.dimension_count", static_cast<uint32_t>(c.hd()));
    kv.u32(a + "attention.key_length", static_cast<uint32_t>(c.hd()));
    kv.u32(a + "attention.value_length", static_cast<uint32_t>(c.hd()));
  }
  kv.str("tokenizer.ggml.model", "gpt2");
  kv.str("tokenizer.ggml.pre", sum.pre);
  kv.str_array("tokenizer.ggml.tokens", tokens);
  kv.i32_array("tokenizer.ggml.token_type", types);
  kv.str_array("tokenizer.ggml.merges", merges);
  kv.u32("tokenizer.ggml.bos_token_id", *bos);
  kv.u32("tokenizer.ggml.eos_token_id", *eos);
  if (o.chat) kv.u32("tokenizer.ggml.eot_token_id", *im_end);
  kv.u32("tokenizer.ggml.padding_token_id", endoftext ? *endoftext : *eos);
  kv.boolean("tokenizer.ggml.add_bos_token", !o.chat);  // aji generate starts a text with BOS; chat renders none
  kv.boolean("tokenizer.ggml.add_eos_token", false);
  if (o.chat) kv.str("tokenizer.chat_template", tokenizer::chat_template_jinja());
  sum.n_kv = kv.n;

  // --- tensors ------------------------------------------------------------------------------------
  std::vector<OutTensor> ts;
  auto param = [&](const std::string& name) -> const model::ParamTensor& {
    const model::ParamTensor* t = model.find_tensor(name);
    AJI_CHECK(t != nullptr, "gguf export: missing tensor " + name);
    return *t;
  };
  auto matrix_type = [&](uint64_t cols) {
    switch (o.type) {
      case FileType::kF32: return TensorType::kF32;
      case FileType::kF16: return TensorType::kF16;
      case FileType::kBF16: return TensorType::kBF16;
      case FileType::kQ8_0: return cols % kQ8BlockSize == 0 ? TensorType::kQ8_0 : TensorType::kF16;
    }
    return TensorType::kF32;
  };
  // A Hugging Face tensor as is (Linear/embedding (rows, cols) -> ne {cols, rows}; 1-D -> f32).
  auto add = [&](const std::string& gname, const std::string& hf, std::vector<float> data = {}) {
    const model::ParamTensor& t = param(hf);
    OutTensor x;
    x.name = gname;
    if (data.empty()) data.assign(model.params() + t.offset, model.params() + t.offset + t.numel);
    x.data = std::move(data);
    if (t.shape.size() == 1) {
      x.dims = {static_cast<uint64_t>(t.shape[0])};
      x.type = TensorType::kF32;
    } else {
      x.dims = {static_cast<uint64_t>(t.shape[1]), static_cast<uint64_t>(t.shape[0])};
      x.type = matrix_type(x.dims[0]);
    }
    ts.push_back(std::move(x));
  };
  // A GPT-2 Conv1D weight, stored (in, out): transposed to (out, in) as the converter does.
  auto add_conv1d = [&](const std::string& gname, const std::string& hf) {
    const model::ParamTensor& t = param(hf);
    OutTensor x;
    x.name = gname;
    x.data = transpose(model.params() + t.offset, t.shape[0], t.shape[1]);
    x.dims = {static_cast<uint64_t>(t.shape[0]), static_cast<uint64_t>(t.shape[1])};
    x.type = matrix_type(x.dims[0]);
    ts.push_back(std::move(x));
  };
  if (gpt2) {
    add("token_embd.weight", "transformer.wte.weight");
    add("position_embd.weight", "transformer.wpe.weight");
    add("output_norm.weight", "transformer.ln_f.weight");
    add("output_norm.bias", "transformer.ln_f.bias");
    add("output.weight", "transformer.wte.weight");  // tied; older llama.cpp builds require it
    for (int l = 0; l < c.n_layer; ++l) {
      const std::string p = "transformer.h." + std::to_string(l) + ".", g = "blk." + std::to_string(l) + ".";
      add(g + "attn_norm.weight", p + "ln_1.weight");
      add(g + "attn_norm.bias", p + "ln_1.bias");
      add_conv1d(g + "attn_qkv.weight", p + "attn.c_attn.weight");
      add(g + "attn_qkv.bias", p + "attn.c_attn.bias");
      add_conv1d(g + "attn_output.weight", p + "attn.c_proj.weight");
      add(g + "attn_output.bias", p + "attn.c_proj.bias");
      add(g + "ffn_norm.weight", p + "ln_2.weight");
      add(g + "ffn_norm.bias", p + "ln_2.bias");
      add_conv1d(g + "ffn_up.weight", p + "mlp.c_fc.weight");
      add(g + "ffn_up.bias", p + "mlp.c_fc.bias");
      add_conv1d(g + "ffn_down.weight", p + "mlp.c_proj.weight");
      add(g + "ffn_down.bias", p + "mlp.c_proj.bias");
    }
  } else {
    add("token_embd.weight", "model.embed_tokens.weight");
    add("output_norm.weight", "model.norm.weight");
    if (!c.tied_embeddings) add("output.weight", "lm_head.weight");  // absent: llama.cpp ties to token_embd
    const bool permute = !c.qk_norm;  // qwen3 uses NEOX RoPE = Hugging Face's rotate_half: no permutation
    for (int l = 0; l < c.n_layer; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".", g = "blk." + std::to_string(l) + ".";
      add(g + "attn_norm.weight", p + "input_layernorm.weight");
      const model::ParamTensor& q = param(p + "self_attn.q_proj.weight");
      const model::ParamTensor& k = param(p + "self_attn.k_proj.weight");
      if (permute) {
        add(g + "attn_q.weight", q.name, permute_rope_rows(model.params() + q.offset, c.n_head, c.hd(), c.d_model));
        add(g + "attn_k.weight", k.name,
            permute_rope_rows(model.params() + k.offset, c.n_kv_head, c.hd(), c.d_model));
      } else {
        add(g + "attn_q.weight", q.name);
        add(g + "attn_k.weight", k.name);
      }
      add(g + "attn_v.weight", p + "self_attn.v_proj.weight");
      if (c.qk_norm) {
        add(g + "attn_q_norm.weight", p + "self_attn.q_norm.weight");
        add(g + "attn_k_norm.weight", p + "self_attn.k_norm.weight");
      }
      add(g + "attn_output.weight", p + "self_attn.o_proj.weight");
      add(g + "ffn_norm.weight", p + "post_attention_layernorm.weight");
      add(g + "ffn_gate.weight", p + "mlp.gate_proj.weight");
      add(g + "ffn_up.weight", p + "mlp.up_proj.weight");
      add(g + "ffn_down.weight", p + "mlp.down_proj.weight");
    }
  }
  sum.n_tensors = ts.size();

  // --- layout -----------------------------------------------------------------------------------
  Buf head;
  head.pod<uint32_t>(kMagic);
  head.pod<uint32_t>(kVersion);
  head.pod<uint64_t>(ts.size());
  head.pod<uint64_t>(kv.n);
  head.s += kv.b.s;
  uint64_t off = 0;
  for (auto& t : ts) {
    uint64_t n = 1;
    for (uint64_t d : t.dims) n *= d;
    t.offset = off;
    off = align_up(off + type_bytes(t.type, n), kAlignment);
    head.str(t.name);
    head.pod<uint32_t>(static_cast<uint32_t>(t.dims.size()));
    for (uint64_t d : t.dims) head.pod<uint64_t>(d);
    head.pod<uint32_t>(static_cast<uint32_t>(t.type));
    head.pod<uint64_t>(t.offset);
  }
  head.s.resize(align_up(head.s.size(), kAlignment), '\0');

  // --- write -----------------------------------------------------------------------------------
  AtomicFileWriter w(out);
  w.write(head.s);
  uint64_t written = 0;
  std::string chunk;
  for (auto& t : ts) {
    const size_t n = t.data.size();
    chunk.assign(type_bytes(t.type, n), '\0');
    switch (t.type) {
      case TensorType::kF32: std::memcpy(chunk.data(), t.data.data(), n * 4); break;
      case TensorType::kF16:
        for (size_t i = 0; i < n; ++i) {
          const uint16_t h = f32_to_f16(t.data[i]);
          std::memcpy(chunk.data() + 2 * i, &h, 2);
        }
        break;
      case TensorType::kBF16:
        for (size_t i = 0; i < n; ++i) {
          const uint16_t h = f32_to_bf16(t.data[i]);
          std::memcpy(chunk.data() + 2 * i, &h, 2);
        }
        break;
      case TensorType::kQ8_0: quantize_q8_0(t.data.data(), n, reinterpret_cast<uint8_t*>(chunk.data())); break;
    }
    AJI_CHECK(written == t.offset, "gguf export: tensor offset mismatch");
    w.write(chunk);
    written += chunk.size();
    const uint64_t pad = align_up(written, kAlignment) - written;
    if (pad) w.write(std::string(pad, '\0'));
    written += pad;
    std::vector<float>().swap(t.data);
  }
  w.commit();
  sum.file_bytes = head.s.size() + written;
  return sum;
}

// ---- the reader --------------------------------------------------------------------------------

uint64_t TensorInfo::n_elements() const {
  uint64_t n = 1;
  for (uint64_t d : dims) n *= d;
  return n;
}

uint64_t TensorInfo::n_bytes() const { return type_bytes(type, n_elements()); }

const TensorInfo* File::find(const std::string& name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

std::vector<float> File::tensor_as_f32(const TensorInfo& t) const {
  const uint64_t n = t.n_elements();
  const char* p = bytes.data() + data_offset + t.offset;
  std::vector<float> out(n);
  switch (t.type) {
    case TensorType::kF32: std::memcpy(out.data(), p, n * 4); break;
    case TensorType::kF16:
    case TensorType::kBF16:
      for (uint64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        out[i] = t.type == TensorType::kF16 ? f16_to_f32(h) : bf16_to_f32(h);
      }
      break;
    case TensorType::kQ8_0: dequantize_q8_0(reinterpret_cast<const uint8_t*>(p), n, out.data()); break;
  }
  return out;
}

namespace {

struct Reader {
  const std::string& b;
  const std::string& path;
  size_t pos = 0;
  void need(size_t n) {
    if (b.size() - pos < n)
      throw Error("GGUF file ends early (needed " + std::to_string(n) + " more bytes)").at_offset(path, pos);
  }
  template <typename T>
  T pod() {
    need(sizeof(T));
    T v;
    std::memcpy(&v, b.data() + pos, sizeof v);
    pos += sizeof v;
    return v;
  }
  std::string str() {
    const uint64_t n = pod<uint64_t>();
    need(n);
    std::string s = b.substr(pos, n);
    pos += n;
    return s;
  }
  nlohmann::json value(uint32_t type, int depth = 0) {
    switch (type) {
      case kU8: return pod<uint8_t>();
      case kI8: return pod<int8_t>();
      case kU16: return pod<uint16_t>();
      case kI16: return pod<int16_t>();
      case kU32: return pod<uint32_t>();
      case kI32: return pod<int32_t>();
      case kF32v: return pod<float>();
      case kBool: return pod<uint8_t>() != 0;
      case kString: return str();
      case kU64: return pod<uint64_t>();
      case kI64: return pod<int64_t>();
      case kF64: return pod<double>();
      case kArray: {
        if (depth > 4) throw Error("GGUF array nesting too deep").at_offset(path, pos);
        const uint32_t et = pod<uint32_t>();
        const uint64_t n = pod<uint64_t>();
        if (n > b.size()) throw Error("GGUF array length " + std::to_string(n) + " is impossible").at_offset(path, pos);
        nlohmann::json a = nlohmann::json::array();
        for (uint64_t i = 0; i < n; ++i) a.push_back(value(et, depth + 1));
        return a;
      }
    }
    throw Error("unknown GGUF value type " + std::to_string(type)).at_offset(path, pos);
  }
};

}  // namespace

File read_gguf(const fs::path& path) {
  File f;
  f.bytes = read_file(path);
  const std::string p = path.string();
  Reader r{f.bytes, p};
  if (r.pod<uint32_t>() != kMagic) throw Error("not a GGUF file (bad magic)").at_offset(p, 0).fix("pass a .gguf file");
  f.version = r.pod<uint32_t>();
  if (f.version != kVersion)
    throw Error("GGUF version " + std::to_string(f.version) + "; this reader knows version 3").at_offset(p, 4);
  const uint64_t n_tensors = r.pod<uint64_t>(), n_kv = r.pod<uint64_t>();
  if (n_tensors > f.bytes.size() || n_kv > f.bytes.size())
    throw Error("GGUF header counts are impossible for the file size").at_offset(p, 8);
  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key = r.str();
    const uint32_t t = r.pod<uint32_t>();
    f.kv_type[key] = t;
    f.kv[key] = r.value(t);
  }
  if (auto it = f.kv.find("general.alignment"); it != f.kv.end()) f.alignment = json_int<uint32_t>(it->second, "general.alignment", p);
  if (f.alignment == 0 || f.alignment % 8 != 0)
    throw Error("general.alignment " + std::to_string(f.alignment) + " is not a positive multiple of 8").at(p);
  for (uint64_t i = 0; i < n_tensors; ++i) {
    TensorInfo t;
    t.name = r.str();
    const uint32_t nd = r.pod<uint32_t>();
    if (nd == 0 || nd > 4) throw Error("tensor " + t.name + " has " + std::to_string(nd) + " dims").at_offset(p, r.pos);
    for (uint32_t d = 0; d < nd; ++d) t.dims.push_back(r.pod<uint64_t>());
    const uint32_t ty = r.pod<uint32_t>();
    if (ty != 0 && ty != 1 && ty != 8 && ty != 30)
      throw Error("tensor " + t.name + " has ggml type " + std::to_string(ty) + ", which this reader does not know")
          .at_offset(p, r.pos);
    t.type = static_cast<TensorType>(ty);
    t.offset = r.pod<uint64_t>();
    f.tensors.push_back(std::move(t));
  }
  f.data_offset = align_up(r.pos, f.alignment);
  for (const auto& t : f.tensors)
    if (t.offset % f.alignment != 0 || f.data_offset + t.offset + t.n_bytes() > f.bytes.size())
      throw Error("tensor " + t.name + " (" + type_name(t.type) + ") lies outside the file or is misaligned")
          .at_offset(p, f.data_offset + t.offset);
  return f;
}

}  // namespace aji::gguf
