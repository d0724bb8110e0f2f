// Tokenizer file formats other than tiktoken's rank files (which tokenizer-core reads):
// aji's own versioned JSON file and Hugging Face tokenizer.json (byte-level BPE: GPT-2,
// Llama-3 and Qwen2 styles). Owned by the tokenizer-training work.
#pragma once

#include <filesystem>

#include "aji/tokenizer/tokenizer.h"

namespace aji::tokenizer {

// tiktoken ".tiktoken" rank file ("<base64 bytes> <rank>" per line). Specials are not in
// the file: known encodings (cl100k_base, o200k_base, recognised by content hash or
// file name) get their standard specials and pattern.
Tokenizer load_tiktoken_file(const std::filesystem::path& path);

// aji's own file: {"format":"aji-tokenizer","version":1,"pattern":...,"tokens":[...],
// "specials":[...],"metadata":{...}}. Written atomically.
Tokenizer load_aji_tokenizer_file(const std::filesystem::path& path);
void save_aji_tokenizer_file(const Tokenizer& tok, const std::filesystem::path& path);

// Hugging Face tokenizer.json (model.type == "BPE" with a ByteLevel pre-tokenizer or a
// Split pre-tokenizer carrying a known regex).
Tokenizer load_hf_tokenizer_json(const std::filesystem::path& path);
void save_hf_tokenizer_json(const Tokenizer& tok, const std::filesystem::path& path);

}  // namespace aji::tokenizer
