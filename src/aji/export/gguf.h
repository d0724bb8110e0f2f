// GGUF export (llama.cpp's file format, version 3) of an aji model with its tokenizer inside,
// so llama.cpp, ollama and LM Studio can run it.
//
// What is written (key and tensor names follow llama.cpp's gguf-py/constants.py and
// convert_hf_to_gguf.py; docs/export.md has the table):
//   header (magic "GGUF", version 3, counts), KV metadata, tensor infos, zero padding to the
//   alignment (32), tensor data (each tensor at a multiple of 32).
//   architecture  gpt2  -> "gpt2"  (token_embd, position_embd, blk.N.attn_qkv, ..., output)
//                 llama -> "llama" (q/k rows permuted from Hugging Face's rotate_half order to
//                          llama.cpp's adjacent-pair RoPE, as convert_hf_to_gguf.py does)
//                 llama with qk_norm -> "qwen3" (Qwen3's layout: NEOX RoPE, no permutation,
//                          blk.N.attn_q_norm / attn_k_norm)
//   types         f32 | f16 | bf16 | q8_0 for matrices (q8_0 block = fp16 scale + 32 int8, as
//                 ggml's quantize_row_q8_0_ref); 1-D tensors (norms, biases) stay f32; a matrix
//                 whose rows are not a multiple of 32 falls back to f16 under q8_0.
//   tokenizer     tokenizer.ggml.model "gpt2" (byte-level BPE): tokens in GPT-2's
//                 bytes_to_unicode form, token types (normal / control / unused padding),
//                 merges derived from the rank table, bos/eos/eot/padding ids, add_bos_token,
//                 tokenizer.ggml.pre (the llama.cpp pre-tokenizer whose regex equals aji's
//                 split pattern), and tokenizer.chat_template for chat models.
// Every refusal (an architecture or tokenizer llama.cpp cannot express) is an aji::Error
// raised before the output is opened; the file is written through AtomicFileWriter, so
// no half-written file is ever left at the target path.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "aji/base/half.h"
#include "aji/kernels/cpu/lowbit.h"
#include "aji/model/model.h"
#include "aji/tokenizer/tokenizer.h"

namespace aji::gguf {

// ggml tensor types used here (ggml.h's enum ggml_type values).
enum class TensorType : uint32_t { kF32 = 0, kF16 = 1, kQ8_0 = 8, kBF16 = 30 };

// What the user asks for (--type).
enum class FileType { kF32, kF16, kBF16, kQ8_0 };
std::optional<FileType> parse_file_type(std::string_view name);  // "f32" | "f16" | "bf16" | "q8_0"
std::string_view file_type_name(FileType t);
// general.file_type (llama.cpp's LlamaFileType): ALL_F32 0, MOSTLY_F16 1, MOSTLY_Q8_0 7, MOSTLY_BF16 32.
uint32_t llama_file_type(FileType t);

struct ExportOptions {
  FileType type = FileType::kF32;
  // A chat model (SFT / preference / RL checkpoint): <|im_end|> becomes eos and eot,
  // the chat template is written and no BOS is added (aji's chat renders none).
  // A base model: bos = eos = <|endoftext|> and add_bos_token = true (as `aji generate`).
  bool chat = false;
  // o200k's pattern has only an approximate llama.cpp pre-tokenizer ("gpt-4o", whose
  // adapted regex treats non-ASCII upper/lower case differently); allow it anyway.
  bool allow_approximate_pretokenizer = false;
  std::string name;  // general.name (default "aji")
};

struct ExportSummary {
  std::string architecture;  // "llama" | "gpt2" | "qwen3"
  std::string pre;           // tokenizer.ggml.pre
  size_t n_tensors = 0;
  size_t n_kv = 0;
  size_t n_vocab = 0;   // tokens written (model vocab, padded)
  size_t n_merges = 0;
  size_t unreachable_tokens = 0;  // ordinary tokens no merge sequence produces (skipped in merges)
  uint64_t file_bytes = 0;
};

// Writes the GGUF file. Throws aji::Error (no file written) when the model or tokenizer
// cannot be expressed for llama.cpp.
ExportSummary write_gguf(const model::Model& model, const tokenizer::Tokenizer& tok, const std::filesystem::path& out,
                         const ExportOptions& options);

// --- pieces, public for tests -----------------------------------------------------------
// The llama.cpp pre-tokenizer name for a split pattern: gpt2 -> "gpt-2", cl100k ->
// "llama-bpe", qwen2 -> "qwen2", o200k -> "gpt-4o" only with allow_approximate (else an
// aji::Error naming the pattern and the fix).
std::string pretokenizer_name(tokenizer::SplitPattern pattern, bool allow_approximate);

// GPT-2's bytes_to_unicode form of a byte string (space -> "Ġ", newline -> "Ċ", ...).
std::string bytes_to_unicode(std::string_view bytes);

// The merges ("left right", in bytes_to_unicode form) in priority order, derived from the
// rank table as convert_hf_to_gguf.py does for tiktoken tokenizers (BPE of each token's
// bytes stopped at its own rank must leave exactly two parts). `unreachable` counts
// ordinary multi-byte tokens for which it does not.
std::vector<std::string> bpe_merges(const tokenizer::Tokenizer& tok, size_t* unreachable = nullptr);

// IEEE half and bfloat16 (base/half.h).
using ::aji::bf16_to_f32;
using ::aji::f16_to_f32;
using ::aji::f32_to_bf16;
using ::aji::f32_to_f16;

// ggml's Q8_0: n (a multiple of 32) floats -> n/32 blocks of 34 bytes (fp16 scale d =
// max|x|/127, then 32 int8 round(x/d)); and back.
// (kernels/cpu/lowbit.h: one quantizer for GGUF export and low-precision generation.)
using ::aji::kernels::cpu::dequantize_q8_0;
using ::aji::kernels::cpu::kQ8BlockBytes;
using ::aji::kernels::cpu::kQ8BlockSize;
using ::aji::kernels::cpu::quantize_q8_0;

// --- a small reader (tests, `aji info`-style checks) --------------------------------------
struct TensorInfo {
  std::string name;
  std::vector<uint64_t> dims;  // ggml ne order (innermost first)
  TensorType type = TensorType::kF32;
  uint64_t offset = 0;  // relative to the start of the data section
  uint64_t n_elements() const;
  uint64_t n_bytes() const;
};

struct File {
  uint32_t version = 0;
  uint32_t alignment = 32;
  std::map<std::string, nlohmann::json> kv;   // strings, numbers, bools, arrays
  std::map<std::string, uint32_t> kv_type;    // GGUF value type of each key
  std::vector<TensorInfo> tensors;
  uint64_t data_offset = 0;  // absolute offset of the data section
  std::string bytes;         // the whole file
  const TensorInfo* find(const std::string& name) const;
  std::vector<float> tensor_as_f32(const TensorInfo& t) const;  // any of the four types
};
// Parses a GGUF file; errors (aji::Error) name the file and byte offset.
File read_gguf(const std::filesystem::path& path);

}  // namespace aji::gguf
