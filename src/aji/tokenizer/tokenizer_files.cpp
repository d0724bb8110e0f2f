// TEMPORARY placeholders so the tok-core branch links: the real aji/HF file formats are
// implemented by the tok-train branch, whose tokenizer_files.cpp replaces this file.
#include "aji/tokenizer/tokenizer_files.h"

#include "aji/base/error.h"

namespace aji::tokenizer {

static Error not_yet(const std::filesystem::path& path, const char* what) {
  return std::move(Error(std::string(what) + " is not available in this build yet").at(path.string()).fix(
      "use a .tiktoken rank file for now"));
}

Tokenizer load_aji_tokenizer_file(const std::filesystem::path& path) { throw not_yet(path, "loading aji tokenizer files"); }
void save_aji_tokenizer_file(const Tokenizer&, const std::filesystem::path& path) {
  throw not_yet(path, "saving aji tokenizer files");
}
Tokenizer load_hf_tokenizer_json(const std::filesystem::path& path) { throw not_yet(path, "loading tokenizer.json"); }
void save_hf_tokenizer_json(const Tokenizer&, const std::filesystem::path& path) {
  throw not_yet(path, "saving tokenizer.json");
}

}  // namespace aji::tokenizer
