// aji's own tokenizer file and Hugging Face tokenizer.json (byte-level BPE). See
// docs/tokenizer.md "File formats". (tiktoken rank files: tiktoken_file.cpp.)
#include "aji/tokenizer/tokenizer_files.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "aji/base/atomic_file.h"
#include "aji/base/error.h"
#include "aji/base/io.h"

namespace aji::tokenizer {

namespace fs = std::filesystem;
using json = nlohmann::json;
using ordered_json = nlohmann::ordered_json;

namespace {

constexpr int kAjiFormatVersion = 1;
constexpr const char* kAjiFormatName = "aji-tokenizer";

// ---------------------------------------------------------------------------------
// base64 (RFC 4648, with padding), as tiktoken files use it.

const char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string base64_encode(std::string_view in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    const uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
    out += kB64[v >> 18];
    out += kB64[(v >> 12) & 63];
    out += kB64[(v >> 6) & 63];
    out += kB64[v & 63];
  }
  if (i + 1 == in.size()) {
    const uint32_t v = uint8_t(in[i]) << 16;
    out += kB64[v >> 18];
    out += kB64[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == in.size()) {
    const uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8);
    out += kB64[v >> 18];
    out += kB64[(v >> 12) & 63];
    out += kB64[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

bool base64_decode(std::string_view in, std::string& out) {
  static int8_t table[256];
  static bool init = [] {
    std::memset(table, -1, sizeof table);
    for (int i = 0; i < 64; ++i) table[uint8_t(kB64[i])] = int8_t(i);
    return true;
  }();
  (void)init;
  out.clear();
  if (in.size() % 4 != 0) return false;
  for (size_t i = 0; i < in.size(); i += 4) {
    int v[4];
    int pad = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = in[i + k];
      if (c == '=' && i + 4 == in.size() && k >= 2) {
        v[k] = 0;
        ++pad;
      } else {
        if (pad) return false;
        v[k] = table[uint8_t(c)];
        if (v[k] < 0) return false;
      }
    }
    const uint32_t x = (v[0] << 18) | (v[1] << 12) | (v[2] << 6) | v[3];
    out += char(x >> 16);
    if (pad < 2) out += char((x >> 8) & 255);
    if (pad < 1) out += char(x & 255);
  }
  return true;
}

// FNV-1a 64 over the vocabulary (lengths and priorities included), to catch edits and bit rot.
uint64_t vocab_checksum(size_t n, const std::function<std::string_view(size_t)>& bytes_of,
                        const std::function<uint32_t(size_t)>& priority_of, const std::vector<SpecialToken>& specials,
                        const std::vector<TokenId>& ordinary_ids) {
  uint64_t h = 0xcbf29ce484222325ULL;
  auto feed = [&](const void* p, size_t len) {
    const auto* b = static_cast<const uint8_t*>(p);
    for (size_t i = 0; i < len; ++i) h = (h ^ b[i]) * 0x100000001b3ULL;
  };
  for (size_t id = 0; id < n; ++id) {
    const std::string_view t = bytes_of(id);
    const uint32_t len = static_cast<uint32_t>(t.size());
    feed(&len, 4);
    feed(t.data(), t.size());
    const uint32_t prio = priority_of(id);
    feed(&prio, 4);
  }
  for (const SpecialToken& s : specials) {
    feed(s.text.data(), s.text.size());
    feed(&s.id, 4);
  }
  for (const TokenId id : ordinary_ids) feed(&id, 4);  // only files with specials inside the range have them
  return h;
}

uint64_t vocab_checksum(const Tokenizer& tok) {
  return vocab_checksum(
      tok.n_ranks(), [&](size_t i) { return tok.ordinary_bytes(i); }, [&](size_t i) { return tok.ordinary_priority(i); },
      tok.specials(), tok.ordinary_ids());
}

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

// Parses a whole JSON file; a syntax error (truncation included) names the byte offset.
json parse_json_file(const fs::path& path, const std::string& what, const std::string& fix) {
  const std::string text = read_file(path);
  if (text.find_first_not_of(" \t\r\n") == std::string::npos)
    throw Error("the " + what + " is empty").at(path.string()).fix(fix);
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    const bool at_end = e.byte >= text.size();
    throw Error(std::string("the ") + what + " is " + (at_end ? "truncated" : "corrupt") + " (JSON error: " +
                e.what() + ")")
        .at_offset(path.string(), e.byte)
        .fix(fix);
  } catch (const json::exception& e) {  // e.g. out_of_range 406: a number too large ("1e705")
    throw Error(std::string("the ") + what + " is corrupt (JSON error: " + e.what() + ")").at(path.string()).fix(fix);
  }
}

const json& require(const json& obj, const char* key, json::value_t type, const fs::path& path,
                    const std::string& where, const std::string& fix) {
  auto it = obj.find(key);
  if (it == obj.end())
    throw Error(where + " has no \"" + key + "\" field").at(path.string()).fix(fix);
  const bool ok = it->type() == type ||
                  (type == json::value_t::number_unsigned && it->type() == json::value_t::number_integer &&
                   it->get<int64_t>() >= 0);
  if (!ok)
    throw Error(where + " field \"" + key + "\" is a " + it->type_name() + ", not the expected type")
        .at(path.string())
        .fix(fix);
  return *it;
}

// ---------------------------------------------------------------------------------
// GPT-2's byte <-> unicode map used in tokenizer.json token strings.

struct ByteLevelMap {
  uint32_t byte_to_cp[256];
  std::unordered_map<uint32_t, uint8_t> cp_to_byte;
  ByteLevelMap() {
    bool printable[256] = {};
    for (int b = '!'; b <= '~'; ++b) printable[b] = true;
    for (int b = 0xA1; b <= 0xAC; ++b) printable[b] = true;
    for (int b = 0xAE; b <= 0xFF; ++b) printable[b] = true;
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      byte_to_cp[b] = printable[b] ? uint32_t(b) : next++;
      cp_to_byte[byte_to_cp[b]] = uint8_t(b);
    }
  }
};
const ByteLevelMap& byte_level() {
  static const ByteLevelMap m;
  return m;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 63));
  } else {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 63));
    out += char(0x80 | (cp & 63));
  }
}

std::string to_byte_level(std::string_view bytes) {
  std::string out;
  for (unsigned char b : bytes) append_utf8(out, byte_level().byte_to_cp[b]);
  return out;
}

// Byte-level string -> raw bytes; false if a character is outside the 256-char alphabet.
bool from_byte_level(std::string_view s, std::string& out) {
  out.clear();
  const auto& map = byte_level().cp_to_byte;
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = s[i];
    uint32_t cp;
    size_t n;
    if (c < 0x80) {
      cp = c;
      n = 1;
    } else if ((c & 0xE0) == 0xC0 && i + 1 < s.size()) {
      cp = ((c & 0x1F) << 6) | (uint8_t(s[i + 1]) & 0x3F);
      n = 2;
    } else if ((c & 0xF0) == 0xE0 && i + 2 < s.size()) {
      cp = ((c & 0x0F) << 12) | ((uint8_t(s[i + 1]) & 0x3F) << 6) | (uint8_t(s[i + 2]) & 0x3F);
      n = 3;
    } else {
      return false;
    }
    auto it = map.find(cp);
    if (it == map.end()) return false;
    out += char(it->second);
    i += n;
  }
  return true;
}

std::string printable(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (c >= 0x20 && c < 0x7F && c != '"' && c != '\\') {
      out += char(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  return out;
}

// Rebuilds the merge that creates `target` (rank-model BPE over its bytes using only tokens
// of lower priority, as tiktoken's gpt2 conversion does). Returns false if the bytes do
// not end as exactly two tokens.
bool merge_for_token(std::string_view target, uint32_t target_prio,
                     const std::unordered_map<std::string_view, uint32_t>& prio_of_bytes,
                     std::pair<std::string_view, std::string_view>& out) {
  std::vector<size_t> bounds(target.size() + 1);  // part i = target[bounds[i], bounds[i+1])
  for (size_t i = 0; i <= target.size(); ++i) bounds[i] = i;
  auto prio = [&](size_t i) -> uint32_t {  // priority of merging part i with part i+1
    auto it = prio_of_bytes.find(target.substr(bounds[i], bounds[i + 2] - bounds[i]));
    return (it == prio_of_bytes.end() || it->second >= target_prio) ? std::numeric_limits<uint32_t>::max()
                                                                     : it->second;
  };
  while (bounds.size() > 3) {
    uint32_t best = std::numeric_limits<uint32_t>::max();
    size_t at = 0;
    for (size_t i = 0; i + 2 < bounds.size(); ++i) {
      const uint32_t p = prio(i);
      if (p < best) {
        best = p;
        at = i;
      }
    }
    if (best == std::numeric_limits<uint32_t>::max()) return false;
    bounds.erase(bounds.begin() + static_cast<std::ptrdiff_t>(at) + 1);
  }
  if (bounds.size() != 3) return false;
  out = {target.substr(0, bounds[1]), target.substr(bounds[1])};
  return true;
}

const std::string kHfFix =
    "aji reads byte-level BPE tokenizer.json files (GPT-2, Llama-3 and Qwen2 styles); check that the file is a "
    "complete tokenizer.json from such a model, or re-save it with the Python `tokenizers` package";

}  // namespace

// ---------------------------------------------------------------------------------
// aji's own file

void save_aji_tokenizer_file(const Tokenizer& tok, const fs::path& path) {
  ordered_json j;
  j["format"] = kAjiFormatName;
  j["version"] = kAjiFormatVersion;
  j["pattern"] = std::string(split_pattern_name(tok.pattern()));
  j["n_ranks"] = tok.n_ranks();
  j["checksum"] = "fnv1a64:" + hex64(vocab_checksum(tok));
  ordered_json specials = ordered_json::array();
  for (const SpecialToken& s : tok.specials()) specials.push_back({{"text", s.text}, {"id", s.id}});
  j["specials"] = specials;
  ordered_json meta = ordered_json::object();
  std::vector<std::pair<std::string, std::string>> kv(tok.metadata.begin(), tok.metadata.end());
  std::sort(kv.begin(), kv.end());
  for (auto& [k, v] : kv) meta[k] = v;
  j["metadata"] = meta;
  if (!tok.merge_priorities().empty()) j["merge_priority"] = tok.merge_priorities();
  // Specials inside the ordinary range (Hugging Face files): each token's id.
  if (!tok.ordinary_ids().empty()) j["ordinary_ids"] = tok.ordinary_ids();
  // Tokens last: one base64 string per ordinary token, in id order.
  ordered_json tokens = ordered_json::array();
  for (size_t i = 0; i < tok.n_ranks(); ++i) tokens.push_back(base64_encode(tok.ordinary_bytes(i)));
  j["tokens"] = std::move(tokens);
  // One token per line keeps the file diff-able and greppable.
  std::string text = j.dump(-1, ' ', /*ensure_ascii=*/false, json::error_handler_t::strict);
  std::string pretty;
  pretty.reserve(text.size() + tok.n_ranks() * 2);
  // Insert a newline after each top-level field separator and each token entry.
  int depth = 0;
  bool in_string = false, escape = false;
  for (char c : text) {
    pretty += c;
    if (in_string) {
      if (escape)
        escape = false;
      else if (c == '\\')
        escape = true;
      else if (c == '"')
        in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    if (c == '{' || c == '[') ++depth;
    if (c == '}' || c == ']') --depth;
    if (c == ',' && depth <= 2) pretty += '\n';
  }
  pretty += '\n';
  write_file_atomic(path, pretty);
}

Tokenizer load_aji_tokenizer_file(const fs::path& path) {
  const std::string fix =
      "re-create the file with `aji tokenizer train ... --out FILE` (aji writes it atomically, so a crash cannot "
      "leave half a file; a damaged copy came from elsewhere)";
  const json j = parse_json_file(path, "aji tokenizer file", fix);
  if (!j.is_object()) throw Error("not an aji tokenizer file (not a JSON object)").at(path.string()).fix(fix);
  const auto fmt = j.find("format");
  if (fmt == j.end() || !fmt->is_string() || fmt->get<std::string>() != kAjiFormatName)
    throw Error("not an aji tokenizer file (\"format\" is not \"aji-tokenizer\")").at(path.string()).fix(fix);
  const json& version = require(j, "version", json::value_t::number_unsigned, path, "the file", fix);
  if (version.get<int64_t>() > kAjiFormatVersion)
    throw Error("the tokenizer file has format version " + std::to_string(version.get<int64_t>()) +
                ", newer than this aji understands (" + std::to_string(kAjiFormatVersion) + ")")
        .at(path.string())
        .fix("update aji (git pull && make build)");
  if (version.get<int64_t>() < 1)
    throw Error("the tokenizer file has an invalid format version").at(path.string()).fix(fix);
  const std::string pattern_name = require(j, "pattern", json::value_t::string, path, "the file", fix).get<std::string>();
  const auto pattern = parse_split_pattern(pattern_name);
  if (!pattern)
    throw Error("unknown split pattern \"" + pattern_name + "\" in the tokenizer file")
        .at(path.string())
        .fix("the pattern must be one of gpt2, cl100k, o200k (or one this aji version knows)");
  const json& tokens = require(j, "tokens", json::value_t::array, path, "the file", fix);
  const size_t n_ranks = require(j, "n_ranks", json::value_t::number_unsigned, path, "the file", fix).get<size_t>();
  if (tokens.size() != n_ranks)
    throw Error("the tokenizer file is truncated or edited: " + std::to_string(tokens.size()) + " tokens, but n_ranks says " +
                std::to_string(n_ranks))
        .at(path.string())
        .fix(fix);
  std::vector<std::string> token_bytes(n_ranks);
  for (size_t i = 0; i < n_ranks; ++i) {
    if (!tokens[i].is_string() || !base64_decode(tokens[i].get_ref<const std::string&>(), token_bytes[i]) ||
        token_bytes[i].empty())
      throw Error("token " + std::to_string(i) + " is not a non-empty base64 string").at(path.string()).fix(fix);
  }
  std::vector<SpecialToken> specials;
  for (const json& s : require(j, "specials", json::value_t::array, path, "the file", fix)) {
    if (!s.is_object() || !s.contains("text") || !s["text"].is_string() || !s.contains("id") ||
        !s["id"].is_number_unsigned())
      throw Error("a special token entry is not {\"text\": string, \"id\": number}").at(path.string()).fix(fix);
    specials.push_back({s["text"].get<std::string>(), s["id"].get<TokenId>()});
  }
  std::vector<uint32_t> priority;
  if (auto it = j.find("merge_priority"); it != j.end()) {
    if (!it->is_array() || it->size() != n_ranks)
      throw Error("\"merge_priority\" must be an array with one number per token").at(path.string()).fix(fix);
    priority.reserve(n_ranks);
    for (const json& p : *it) {
      if (!p.is_number_unsigned()) throw Error("\"merge_priority\" holds a non-number").at(path.string()).fix(fix);
      priority.push_back(p.get<uint32_t>());
    }
  }
  std::vector<TokenId> ordinary_ids;
  if (auto it = j.find("ordinary_ids"); it != j.end()) {
    if (!it->is_array() || it->size() != n_ranks)
      throw Error("\"ordinary_ids\" must be an array with one id per token").at(path.string()).fix(fix);
    for (const json& p : *it) {
      if (!p.is_number_unsigned()) throw Error("\"ordinary_ids\" holds a non-number").at(path.string()).fix(fix);
      ordinary_ids.push_back(p.get<TokenId>());
    }
  }
  if (auto it = j.find("checksum"); it != j.end()) {
    const std::string want = it->is_string() ? it->get<std::string>() : "";
    const std::string got =
        "fnv1a64:" +
        hex64(vocab_checksum(
            n_ranks, [&](size_t id) { return std::string_view(token_bytes[id]); },
            [&](size_t id) { return priority.empty() ? static_cast<uint32_t>(id) : priority[id]; }, specials,
            ordinary_ids));
    if (want != got)
      throw Error("the tokenizer file's checksum does not match its contents (" + want + " in the file, " + got +
                  " computed): the file was damaged or edited by hand")
          .at(path.string())
          .fix(fix + "; if you edited it on purpose, delete the \"checksum\" line");
  }
  Tokenizer tok;
  try {
    tok = Tokenizer::from_ranks(std::move(token_bytes), *pattern, std::move(specials), std::move(priority),
                                std::move(ordinary_ids));
  } catch (Error& e) {
    throw std::move(e.at(path.string()));
  }
  if (auto it = j.find("metadata"); it != j.end() && it->is_object())
    for (auto& [k, v] : it->items()) tok.metadata[k] = v.is_string() ? v.get<std::string>() : v.dump();
  return tok;
}

// ---------------------------------------------------------------------------------
// Hugging Face tokenizer.json

Tokenizer load_hf_tokenizer_json(const fs::path& path) {
  const json j = parse_json_file(path, "tokenizer.json", kHfFix);
  if (!j.is_object()) throw Error("tokenizer.json is not a JSON object").at(path.string()).fix(kHfFix);
  const json& model = require(j, "model", json::value_t::object, path, "tokenizer.json", kHfFix);
  const std::string type = model.value("type", std::string("BPE"));
  if (type != "BPE")
    throw Error("tokenizer.json has a \"" + type + "\" model; aji supports only byte-level BPE")
        .at(path.string())
        .fix("use a BPE tokenizer (GPT-2, Llama-3, Qwen2 families) or train one with `aji tokenizer train`");
  auto null_or_empty = [&](const char* key) {
    auto it = model.find(key);
    return it == model.end() || it->is_null() || (it->is_string() && it->get<std::string>().empty()) ||
           (it->is_boolean() && !it->get<bool>());
  };
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix", "byte_fallback"})
    if (!null_or_empty(key))
      throw Error(std::string("tokenizer.json uses \"") + key + "\", which byte-level BPE does not")
          .at(path.string())
          .fix("aji supports GPT-2-style byte-level BPE only (SentencePiece-style BPE with byte_fallback is not "
               "supported)");
  if (auto it = model.find("dropout"); it != model.end() && !it->is_null() && it->get<double>() != 0.0)
    throw Error("tokenizer.json sets BPE dropout (random segmentation)").at(path.string()).fix(
        "set \"dropout\": null; aji encodes deterministically");

  // Pre-tokenizer -> split pattern.
  std::optional<SplitPattern> pattern;
  bool byte_level_seen = false;
  std::string regex_seen;
  auto visit = [&](const json& pt, auto& self) -> void {
    if (pt.is_null()) return;
    const std::string t = pt.value("type", std::string());
    if (t == "Sequence") {
      for (const json& p : pt.value("pretokenizers", json::array())) self(p, self);
    } else if (t == "ByteLevel") {
      byte_level_seen = true;
      if (pt.value("add_prefix_space", false))
        throw Error("tokenizer.json's ByteLevel pre-tokenizer has add_prefix_space=true").at(path.string()).fix(
            "aji does not prepend a space to the input; set \"add_prefix_space\": false (GPT-2 itself uses false)");
      if (pt.value("use_regex", true)) {
        if (pattern && *pattern != SplitPattern::kGpt2)
          throw Error("tokenizer.json splits with two regexes").at(path.string()).fix(kHfFix);
        pattern = SplitPattern::kGpt2;
      }
    } else if (t == "Split") {
      const json& pat = pt.value("pattern", json::object());
      if (!pat.contains("Regex") || !pat["Regex"].is_string())
        throw Error("tokenizer.json has a Split pre-tokenizer without a regex").at(path.string()).fix(kHfFix);
      regex_seen = pat["Regex"].get<std::string>();
      if (pt.value("behavior", std::string("Isolated")) != "Isolated" || pt.value("invert", false))
        throw Error("tokenizer.json's Split pre-tokenizer is not {behavior: Isolated, invert: false}")
            .at(path.string())
            .fix(kHfFix);
      const auto p = split_pattern_from_regex(regex_seen);
      if (!p)
        throw Error("tokenizer.json splits with a regex aji does not know: " + regex_seen)
            .at(path.string())
            .fix("aji implements the GPT-2, cl100k (Llama-3), o200k and Qwen2 split patterns exactly; other "
                 "regexes are not supported");
      if (pattern && *pattern != *p) throw Error("tokenizer.json splits with two regexes").at(path.string()).fix(kHfFix);
      pattern = *p;
    } else {
      throw Error("tokenizer.json has a \"" + t + "\" pre-tokenizer, which aji does not support")
          .at(path.string())
          .fix(kHfFix);
    }
  };
  if (auto it = j.find("pre_tokenizer"); it != j.end()) visit(*it, visit);
  if (!byte_level_seen || !pattern)
    throw Error("tokenizer.json is not byte-level BPE with a known split pattern (no ByteLevel pre-tokenizer, or no "
                "split regex)")
        .at(path.string())
        .fix(kHfFix);
  if (auto it = j.find("normalizer"); it != j.end() && !it->is_null()) {
    const std::string t = it->value("type", std::string());
    if (t != "NFC")
      throw Error("tokenizer.json has a \"" + t + "\" normalizer, which aji does not apply").at(path.string()).fix(kHfFix);
  }

  // Added tokens (specials) and the vocabulary.
  std::vector<SpecialToken> specials;
  std::unordered_map<uint32_t, std::string> added_by_id;
  for (const json& a : j.value("added_tokens", json::array())) {
    if (!a.is_object() || !a.contains("id") || !a.contains("content") || !a["content"].is_string() ||
        !a["id"].is_number_unsigned())
      throw Error("an added_tokens entry lacks \"id\" or \"content\"").at(path.string()).fix(kHfFix);
    specials.push_back({a["content"].get<std::string>(), a["id"].get<TokenId>()});
    added_by_id[a["id"].get<uint32_t>()] = a["content"].get<std::string>();
  }
  const json& vocab = require(model, "vocab", json::value_t::object, path, "the model", kHfFix);
  // Ordinary tokens in id order. Their ids are 0..n-1, or (files whose special tokens sit
  // inside the ordinary range, e.g. <|endoftext|> at 0 from `tokenizers`' trainer) ids with
  // holes that the specials fill; every other hole is an error.
  std::vector<std::pair<uint32_t, std::string>> entries;  // (id, bytes)
  entries.reserve(vocab.size());
  std::string raw;
  for (auto& [text, idj] : vocab.items()) {
    if (!idj.is_number_unsigned())
      throw Error("vocab entry \"" + text + "\" has a non-numeric id").at(path.string()).fix(kHfFix);
    // An id past the entry count cannot be contiguous; checked before sizing the table by
    // it (an id of 3.8e11 asked for 2^32 strings: found by fuzz_tokenizer_files).
    const uint64_t id64 = idj.get<uint64_t>();
    if (id64 > UINT32_MAX)
      throw Error("vocab entry \"" + text + "\" has id " + std::to_string(id64) + ", over 2^32 - 1")
          .at(path.string())
          .fix(kHfFix);
    const uint32_t id = static_cast<uint32_t>(id64);
    if (auto a = added_by_id.find(id); a != added_by_id.end()) {
      if (a->second == text) continue;  // the special's own vocab entry: not an ordinary token
      throw Error("vocab entry \"" + text + "\" and the special token \"" + a->second + "\" share the id " +
                  std::to_string(id))
          .at(path.string())
          .fix("give the special token an id of its own (with HF tokenizers, tokenizer.add_special_tokens([...]) "
               "appends it after the vocabulary)");
    }
    if (id64 >= vocab.size() + added_by_id.size())
      throw Error("vocab entry \"" + text + "\" has id " + std::to_string(id64) + " but the vocabulary has only " +
                  std::to_string(vocab.size()) + " entries (ids must be contiguous)")
          .at(path.string())
          .fix(kHfFix);
    if (!from_byte_level(text, raw) || raw.empty())
      throw Error("vocab entry \"" + text + "\" is not in the byte-level alphabet").at(path.string()).fix(kHfFix);
    entries.emplace_back(id, raw);
  }
  std::sort(entries.begin(), entries.end(),
            [](const auto& x, const auto& y) { return x.first < y.first; });
  std::vector<std::string> token_bytes;
  std::vector<TokenId> ordinary_ids;
  token_bytes.reserve(entries.size());
  ordinary_ids.reserve(entries.size());
  uint32_t expect = 0;  // the next id: an ordinary token's, or a special's that fills a hole
  for (auto& [id, bytes] : entries) {
    if (!ordinary_ids.empty() && id == ordinary_ids.back())
      throw Error("two vocab entries share the id " + std::to_string(id)).at(path.string()).fix(kHfFix);
    for (; expect < id; ++expect)
      if (!added_by_id.count(expect))
        throw Error("the vocabulary has no token with id " + std::to_string(expect) + " (ids must be contiguous)")
            .at(path.string())
            .fix(kHfFix);
    ordinary_ids.push_back(id);
    token_bytes.push_back(std::move(bytes));
    expect = id + 1;
  }

  // Merges -> merge priority of the token each one creates (the first merge creating it).
  std::unordered_map<std::string_view, uint32_t> id_of;
  id_of.reserve(token_bytes.size() * 2);
  for (size_t id = 0; id < token_bytes.size(); ++id) id_of.emplace(token_bytes[id], static_cast<uint32_t>(id));
  const json& merges = require(model, "merges", json::value_t::array, path, "the model", kHfFix);
  constexpr uint32_t kUnset = std::numeric_limits<uint32_t>::max();
  std::vector<uint32_t> merge_index(token_bytes.size(), kUnset);
  std::string left, right;
  for (size_t m = 0; m < merges.size(); ++m) {
    const json& e = merges[m];
    std::string a, b;
    if (e.is_string()) {
      const std::string& s = e.get_ref<const std::string&>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        throw Error("merge " + std::to_string(m) + " (\"" + s + "\") is not \"A B\"").at(path.string()).fix(kHfFix);
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
      a = e[0].get<std::string>();
      b = e[1].get<std::string>();
    } else {
      throw Error("merge " + std::to_string(m) + " is neither \"A B\" nor [\"A\", \"B\"]").at(path.string()).fix(kHfFix);
    }
    if (!from_byte_level(a, left) || !from_byte_level(b, right))
      throw Error("merge " + std::to_string(m) + " is not in the byte-level alphabet").at(path.string()).fix(kHfFix);
    if (!id_of.count(left) || !id_of.count(right))
      throw Error("merge " + std::to_string(m) + " (\"" + a + " " + b + "\") uses a token missing from the vocab")
          .at(path.string())
          .fix(kHfFix);
    auto it = id_of.find(left + right);
    if (it == id_of.end())
      throw Error("merge " + std::to_string(m) + " (\"" + a + " " + b + "\") makes a token missing from the vocab")
          .at(path.string())
          .fix(kHfFix);
    if (merge_index[it->second] == kUnset) merge_index[it->second] = static_cast<uint32_t>(m);
  }
  // Priority: tokens no merge creates (the 256 bytes) first, in id order; then merged
  // tokens in merge order. Identity priorities (every HF-trained or tiktoken-converted
  // file without duplicate merges) are dropped so the fast whole-piece path stays on.
  const uint32_t n = static_cast<uint32_t>(token_bytes.size());
  std::vector<uint32_t> base;
  std::vector<std::pair<uint32_t, uint32_t>> merged;  // (merge index, id)
  for (uint32_t id = 0; id < n; ++id) {
    if (merge_index[id] == kUnset) {
      if (token_bytes[id].size() > 1) {
        // A multi-byte token no merge creates: HF's encoder can never produce it.
        throw Error("vocab token \"" + printable(token_bytes[id]) + "\" (id " + std::to_string(ordinary_ids[id]) +
                    ") is not created by any merge")
            .at(path.string())
            .fix("every multi-byte BPE token must come from a merge; add it as an added token instead");
      }
      base.push_back(id);
    } else {
      merged.emplace_back(merge_index[id], id);
    }
  }
  std::sort(merged.begin(), merged.end());
  std::vector<uint32_t> priority(n);
  uint32_t next = 0;
  for (uint32_t id : base) priority[id] = next++;
  for (auto& [m, id] : merged) priority[id] = next++;
  bool identity = true;
  for (uint32_t id = 0; id < n && identity; ++id) identity = priority[id] == id;
  if (identity) priority.clear();

  Tokenizer tok;
  try {
    tok = Tokenizer::from_ranks(std::move(token_bytes), *pattern, std::move(specials), std::move(priority),
                                std::move(ordinary_ids));
  } catch (Error& e) {
    throw std::move(e.at(path.string()));
  }
  tok.metadata["source"] = "tokenizer.json";
  if (auto it = j.find("normalizer"); it != j.end() && !it->is_null())
    tok.metadata["hf_normalizer"] = it->value("type", std::string());  // NFC: aji does not normalise
  return tok;
}

void save_hf_tokenizer_json(const Tokenizer& tok, const fs::path& path) {
  const size_t n = tok.n_ranks();
  std::unordered_map<std::string_view, uint32_t> prio_of_bytes;
  prio_of_bytes.reserve(n * 2);
  std::vector<std::pair<uint32_t, uint32_t>> order;  // (priority, id)
  for (uint32_t i = 0; i < n; ++i) {  // by ordinary index (ids may have holes, see ordinary_ids)
    prio_of_bytes.emplace(tok.ordinary_bytes(i), tok.ordinary_priority(i));
    order.emplace_back(tok.ordinary_priority(i), i);
  }
  std::sort(order.begin(), order.end());

  ordered_json j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  ordered_json added = ordered_json::array();
  std::vector<SpecialToken> specials = tok.specials();
  std::sort(specials.begin(), specials.end(), [](const SpecialToken& a, const SpecialToken& b) { return a.id < b.id; });
  for (const SpecialToken& s : specials)
    added.push_back({{"id", s.id},
                     {"content", s.text},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  j["added_tokens"] = added;
  j["normalizer"] = nullptr;
  if (tok.pattern() == SplitPattern::kGpt2) {
    j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
  } else {
    ordered_json split = {{"type", "Split"},
                          {"pattern", {{"Regex", std::string(split_pattern_regex(tok.pattern()))}}},
                          {"behavior", "Isolated"},
                          {"invert", false}};
    ordered_json bl = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}};
    j["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", ordered_json::array({split, bl})}};
  }
  j["post_processor"] = nullptr;
  j["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};

  // The vocab object is written by hand, in id order: ordered_json's object insert is a
  // linear search (quadratic for 200k tokens) and json's std::map would sort by key.
  std::string vocab_text = "{";
  for (uint32_t i = 0; i < n; ++i) {
    if (i) vocab_text += ",\n";
    vocab_text += json(to_byte_level(tok.ordinary_bytes(i))).dump();
    vocab_text += ':';
    vocab_text += std::to_string(tok.ordinary_id(i));
  }
  vocab_text += "}";
  const std::string kVocabPlaceholder = "\"@@aji-vocab@@\"";
  ordered_json merges = ordered_json::array();
  for (auto& [prio, id] : order) {
    const std::string_view t = tok.ordinary_bytes(id);
    if (t.size() < 2) continue;
    std::pair<std::string_view, std::string_view> parts;
    if (!merge_for_token(t, prio, prio_of_bytes, parts))
      throw Error("token " + std::to_string(tok.ordinary_id(id)) + " (\"" + printable(t) +
                  "\") cannot be built from two tokens of lower rank, so it has no BPE merge")
          .at(path.string())
          .fix("only tokenizers whose every token is reachable by merges can be written as tokenizer.json");
    // "A B" strings: every tokenizers release reads them (the pair form needs 0.20+). Byte-level
    // tokens never hold a space (it is 'Ġ'), so the split is unambiguous.
    merges.push_back(to_byte_level(parts.first) + " " + to_byte_level(parts.second));
  }
  j["model"] = {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", nullptr},
                {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr},
                {"fuse_unk", false},
                {"byte_fallback", false},
                {"ignore_merges", tok.merge_priorities().empty()},
                {"vocab", "@@aji-vocab@@"},
                {"merges", merges}};
  std::string text = j.dump(1, ' ', /*ensure_ascii=*/false);
  const size_t at = text.find(kVocabPlaceholder);
  AJI_CHECK(at != std::string::npos, "vocab placeholder");
  text.replace(at, kVocabPlaceholder.size(), vocab_text);
  write_file_atomic(path, text);
}

}  // namespace aji::tokenizer
