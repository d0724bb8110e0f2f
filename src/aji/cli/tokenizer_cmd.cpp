// `aji tokenizer encode | decode | info`: the encoder side of the tokenizer on the
// command line. (`train` and `stats` live in tokenizer_train_cmd.cpp.)
#include <charconv>
#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/base/progress.h"
#include "aji/cli/command.h"
#include "aji/tokenizer/tokenizer.h"

namespace {

using aji::Error;
using aji::tokenizer::SpecialPolicy;
using aji::tokenizer::TokenId;
using aji::tokenizer::Tokenizer;

struct CommonOptions {
  std::string tokenizer;
  std::vector<std::string> specials;  // TEXT or TEXT=ID
  std::string input;                  // empty: stdin
};

void add_common(CLI::App* cmd, CommonOptions& o) {
  cmd->add_option("--tokenizer", o.tokenizer,
                  "Tokenizer file: a tiktoken rank file (.tiktoken; cl100k_base and o200k_base ship in "
                  "data/tokenizer/), an aji tokenizer file, or a Hugging Face tokenizer.json")
      ->required();
  cmd->add_option("--special", o.specials,
                  "Add a special token TEXT, optionally with its id: --special '<|im_start|>=100264' "
                  "(repeatable; without =ID it gets the next free id)");
}

Tokenizer load_with_specials(const CommonOptions& o) {
  Tokenizer tok = Tokenizer::load(o.tokenizer);
  for (const std::string& spec : o.specials) {
    std::string text = spec;
    std::optional<TokenId> id;
    size_t eq = spec.rfind('=');
    if (eq != std::string::npos && eq + 1 < spec.size() && eq > 0) {
      std::string_view digits(spec.data() + eq + 1, spec.size() - eq - 1);
      TokenId v = 0;
      auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v);
      if (ec == std::errc() && p == digits.data() + digits.size()) {
        text = spec.substr(0, eq);
        id = v;
      }
    }
    tok.add_special(text, id);
  }
  return tok;
}

std::string read_stdin() {
  std::string data;
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, stdin)) > 0) data.append(buf, n);
  if (std::ferror(stdin)) throw Error("cannot read standard input");
  return data;
}

std::string read_input(const std::string& input) { return input.empty() ? read_stdin() : aji::read_file(input); }
std::string input_name(const std::string& input) { return input.empty() ? "<stdin>" : input; }

void write_stdout(const std::string& s) {
  if (std::fwrite(s.data(), 1, s.size(), stdout) != s.size()) throw Error("cannot write to standard output");
}

void append_id(std::string& out, TokenId id) {
  char buf[16];
  auto [p, ec] = std::to_chars(buf, buf + sizeof buf, id);
  (void)ec;
  out.append(buf, p);
}

// Calls fn(line, line_number) for each line of data (without "\n"; a trailing "\r" is
// kept as LineReader does).
template <typename F>
void for_each_line(std::string_view data, F&& fn) {
  size_t pos = 0;
  int64_t line_no = 0;
  while (pos < data.size()) {
    size_t eol = data.find('\n', pos);
    if (eol == std::string_view::npos) eol = data.size();
    fn(data.substr(pos, eol - pos), ++line_no);
    pos = eol + 1;
  }
}

bool is_blank(std::string_view s) { return s.find_first_not_of(" \t\r") == std::string_view::npos; }

void run_encode(const CommonOptions& o, bool allow_special, bool ordinary, const std::string& jsonl_field) {
  if (allow_special && ordinary)
    throw Error("--allow-special and --ordinary contradict each other")
        .fix("--allow-special turns special-token text into its id, --ordinary encodes it as plain text: pick one");
  Tokenizer tok = load_with_specials(o);
  const SpecialPolicy policy =
      ordinary ? SpecialPolicy::kAsText : allow_special ? SpecialPolicy::kAllow : SpecialPolicy::kDisallow;
  const std::string data = read_input(o.input);
  const std::string name = input_name(o.input);
  std::string out;
  if (jsonl_field.empty()) {
    std::vector<TokenId> ids;
    try {
      ids = tok.encode(data, policy);
    } catch (Error& e) {
      if (e.file().empty()) e.at(name);
      throw;
    }
    for (size_t i = 0; i < ids.size(); ++i) {  // streamed in 1 MB blocks (huge inputs)
      if (i) out += ' ';
      append_id(out, ids[i]);
      if (out.size() > (1 << 20)) {
        write_stdout(out);
        out.clear();
      }
    }
    out += '\n';
    write_stdout(out);
    return;
  }
  // Progress only for inputs that take a while (it goes to stderr).
  aji::Progress progress("encode", int64_t(data.size()), "B",
                         !aji::cli::global_options().quiet && data.size() > (size_t(16) << 20));
  int64_t skipped_blank = 0;
  for_each_line(data, [&](std::string_view line, int64_t line_no) {
    progress.add(int64_t(line.size()) + 1);
    if (is_blank(line)) {
      ++skipped_blank;
      return;
    }
    nlohmann::json doc;
    try {
      doc = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw Error(std::string("malformed JSON: ") + e.what()).at(name, line_no).fix("each line must be one JSON object");
    }
    if (!doc.is_object() || !doc.contains(jsonl_field))
      throw Error("the line has no field \"" + jsonl_field + "\"").at(name, line_no)
          .fix("pick the text field with --jsonl-field");
    const auto& field = doc[jsonl_field];
    if (!field.is_string())
      throw Error("field \"" + jsonl_field + "\" is not a string").at(name, line_no)
          .fix("pick the text field with --jsonl-field");
    std::vector<TokenId> ids;
    try {
      ids = tok.encode(field.get_ref<const std::string&>(), policy);
    } catch (Error& e) {
      if (e.file().empty()) e.at(name, line_no);
      throw;
    }
    out += '[';
    for (size_t i = 0; i < ids.size(); ++i) {
      if (i) out += ',';
      append_id(out, ids[i]);
    }
    out += "]\n";
    if (out.size() > (1 << 20)) {
      write_stdout(out);
      out.clear();
    }
  });
  write_stdout(out);
  progress.finish();
  if (skipped_blank && !aji::cli::global_options().quiet)  // a counted skip, never silent
    std::fprintf(stderr, "skipped %lld blank line(s)\n", static_cast<long long>(skipped_blank));
}

TokenId parse_id(std::string_view text, const std::string& name, int64_t line_no) {
  TokenId v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || p != text.data() + text.size())
    throw Error("'" + std::string(text.substr(0, 32)) + "' is not a token id").at(name, line_no)
        .fix("give ids as whitespace-separated non-negative integers, or one JSON array per line");
  return v;
}

void run_decode(const CommonOptions& o) {
  Tokenizer tok = load_with_specials(o);
  const std::string data = read_input(o.input);
  const std::string name = input_name(o.input);
  size_t first = data.find_first_not_of(" \t\r\n");
  std::vector<TokenId> ids;
  auto decode_checked = [&](int64_t line_no) {
    try {
      return tok.decode(ids);
    } catch (Error& e) {
      e.at(name, line_no);
      throw;
    }
  };
  if (first != std::string::npos && data[first] == '[') {
    // One JSON array per line (what `encode --jsonl-field` prints): one text line each.
    std::string out;
    for_each_line(data, [&](std::string_view line, int64_t line_no) {
      if (is_blank(line)) return;
      nlohmann::json arr;
      try {
        arr = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception& e) {
        throw Error(std::string("malformed JSON: ") + e.what()).at(name, line_no)
            .fix("each line must be a JSON array of token ids");
      }
      if (!arr.is_array()) throw Error("expected a JSON array of token ids").at(name, line_no);
      ids.clear();
      for (const auto& v : arr) {
        if (!v.is_number_unsigned() || v.get<uint64_t>() > 0xFFFFFFFFull)
          throw Error("'" + v.dump() + "' is not a token id").at(name, line_no)
              .fix("token ids are non-negative integers");
        ids.push_back(TokenId(v.get<uint64_t>()));
      }
      out += decode_checked(line_no);
      out += '\n';
    });
    write_stdout(out);
    return;
  }
  for_each_line(data, [&](std::string_view line, int64_t line_no) {
    size_t i = 0;
    while (i < line.size()) {
      while (i < line.size() && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r' || line[i] == ',')) ++i;
      size_t j = i;
      while (j < line.size() && !(line[j] == ' ' || line[j] == '\t' || line[j] == '\r' || line[j] == ',')) ++j;
      if (j > i) {
        ids.push_back(parse_id(line.substr(i, j - i), name, line_no));
        if (ids.back() >= tok.n_ranks()) {  // a special or an unknown id: check it here to name the line
          try {
            tok.token_bytes(ids.back());
          } catch (Error& e) {
            e.at(name, line_no);
            throw;
          }
        }
      }
      i = j;
    }
  });
  write_stdout(decode_checked(-1));
}

void run_info(const CommonOptions& o) {
  Tokenizer tok = load_with_specials(o);
  std::string out;
  out += "tokenizer:      " + o.tokenizer + "\n";
  auto name = tok.metadata.find("name");
  if (name != tok.metadata.end()) out += "name:           " + name->second + "\n";
  out += "ordinary tokens (ranks): " + std::to_string(tok.n_ranks()) + "\n";
  out += "vocab size:     " + std::to_string(tok.vocab_size()) + " (max id + 1, specials included)\n";
  out += "pattern:        " + std::string(aji::tokenizer::split_pattern_name(tok.pattern())) + "\n";
  out += "pattern regex:  " + std::string(aji::tokenizer::split_pattern_regex(tok.pattern())) + "\n";
  out += std::string("merge order:    ") + (tok.merge_priorities().empty() ? "by id (tiktoken ranks)" : "by merge list") + "\n";
  out += "special tokens: " + std::to_string(tok.specials().size()) + "\n";
  for (const auto& sp : tok.specials()) out += "  " + std::to_string(sp.id) + "\t" + sp.text + "\n";
  for (const auto& [k, v] : tok.metadata)
    if (k != "name") out += "meta " + k + ": " + v + "\n";
  write_stdout(out);
}

aji::cli::CommandRegistrar reg(10, [](CLI::App& app) {
  CLI::App* group = aji::cli::subcommand_group(
      app, "tokenizer", "Byte-level BPE tokenizer (GPT-4 style): encode, decode, info, train, stats");

  static CommonOptions enc;
  static bool allow_special = false;
  static bool ordinary = false;
  static std::string jsonl_field;
  CLI::App* encode = group->add_subcommand(
      "encode",
      "Encode text to token ids. Reads stdin (or --input) and prints the ids separated by spaces; with "
      "--jsonl-field F reads JSONL and prints one JSON array of ids per line");
  add_common(encode, enc);
  encode->add_flag("--allow-special", allow_special,
                   "Encode special-token text (e.g. <|endoftext|>) as its special id; without this flag such "
                   "text is an error");
  encode->add_flag("--ordinary", ordinary,
                   "Encode special-token text as ordinary text (tiktoken's encode_ordinary, or "
                   "disallowed_special=()): '<|endoftext|>' becomes the ids of its bytes, never an error");
  encode->add_option("--jsonl-field", jsonl_field, "Read JSONL and encode this string field of each line");
  encode->add_option("--input", enc.input, "Read this file instead of stdin (.gz/.zst are decompressed)");
  encode->callback([] { run_encode(enc, allow_special, ordinary, jsonl_field); });

  static CommonOptions dec;
  CLI::App* decode = group->add_subcommand(
      "decode",
      "Decode token ids to text. Reads ids from stdin (whitespace-separated, or one JSON array per line as "
      "`encode --jsonl-field` prints) and writes the text bytes to stdout");
  add_common(decode, dec);
  decode->add_option("--input", dec.input, "Read this file instead of stdin");
  decode->callback([] { run_decode(dec); });

  static CommonOptions inf;
  CLI::App* info = group->add_subcommand("info", "Show a tokenizer's vocabulary size, ranks, split pattern and specials");
  add_common(info, inf);
  info->callback([] { run_info(inf); });
});

}  // namespace
