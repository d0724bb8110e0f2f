// `aji data inspect` and `aji data extract`: looking at documents and at what the HTML
// extractor and language ID make of a page.
#include <cstdio>
#include <iostream>

#include <nlohmann/json.hpp>

#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/cli/command.h"
#include "aji/data/extract.h"
#include "aji/data/langid.h"
#include "aji/data/readers.h"

namespace {

namespace data = aji::data;

void print_document(const data::Document& doc, size_t index, size_t max_chars) {
  std::printf("── document %zu ─────────────────────────────────────────────\n", index);
  std::printf("id:       %s\n", doc.id.c_str());
  if (!doc.url.empty()) std::printf("url:      %s\n", doc.url.c_str());
  std::printf("source:   %s%s%llu\n", doc.source_file.c_str(), "@", static_cast<unsigned long long>(doc.source_offset));
  if (!doc.language.empty()) std::printf("language: %s (score %.3f)\n", doc.language.c_str(), doc.language_score);
  if (!doc.metadata.empty()) std::printf("metadata: %s\n", doc.metadata.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  std::string text = doc.text;
  bool cut = text.size() > max_chars;
  if (cut) {
    text.resize(max_chars);
    while (!text.empty() && (static_cast<unsigned char>(text.back()) & 0xC0) == 0x80) text.pop_back();
    if (!text.empty() && static_cast<unsigned char>(text.back()) >= 0xC0) text.pop_back();
  }
  std::printf("text (%zu bytes%s):\n%s\n\n", doc.text.size(), cut ? ", cut" : "", text.c_str());
}

aji::cli::CommandRegistrar reg(21, [](CLI::App& app) {
  auto* group = aji::cli::subcommand_group(app, "data", "Data pipeline: raw web pages in, clean text out");

  // ---- inspect ----
  auto* inspect = group->add_subcommand("inspect", "Pretty-print documents and their metadata from any input "
                                                   "(pipeline output .jsonl.zst, JSONL, WARC/WET, HTML, text)");
  struct InspectOpts {
    std::string file;
    size_t n = 5;
    size_t skip = 0;
    std::string lang;
    std::string format = "auto";
    size_t max_chars = 2000;
    bool detect = false;
  };
  auto io = std::make_shared<InspectOpts>();
  inspect->add_option("file", io->file, "File to look at")->required();
  inspect->add_option("--n", io->n, "How many documents to show")->capture_default_str();
  inspect->add_option("--skip", io->skip, "Skip this many documents first")->capture_default_str();
  inspect->add_option("--filter-lang", io->lang, "Only documents of this language (metadata.language, or "
                                                 "detected with --detect)");
  inspect->add_option("--format", io->format, "Input format: auto, jsonl, warc, html, text")->capture_default_str();
  inspect->add_option("--max-chars", io->max_chars, "Cut each text after this many bytes")->capture_default_str();
  inspect->add_flag("--detect", io->detect, "Run language ID on each document (extracting HTML first)");
  inspect->callback([io] {
    data::ReaderOptions ro;
    ro.format = data::parse_input_format(io->format);
    data::DocumentReader reader(io->file, ro);
    data::Document doc;
    size_t seen = 0, shown = 0;
    while (shown < io->n && reader.next(doc)) {
      if (doc.metadata.contains("language") && doc.metadata["language"].is_string()) {
        doc.language = doc.metadata["language"].get<std::string>();
        doc.language_score = doc.metadata.value("language_score", 0.0f);
      }
      if (doc.url.empty() && doc.metadata.contains("url") && doc.metadata["url"].is_string()) doc.url = doc.metadata["url"];
      if (io->detect) {
        if (doc.html) {
          doc.text = data::extract_main_text(doc.text).text;
          doc.html = false;
        }
        data::LangIdResult r = data::identify_language(doc.text);
        doc.language = r.language;
        doc.language_score = r.score;
      }
      if (!io->lang.empty() && doc.language != io->lang) continue;
      if (seen++ < io->skip) continue;
      print_document(doc, seen, io->max_chars);
      ++shown;
    }
    for (const auto& e : reader.errors())
      std::fprintf(stderr, "warning: %s%s%llu: %s\n", e.file.c_str(), e.line ? ":" : "@",
                   static_cast<unsigned long long>(e.offset), e.message.c_str());
    if (shown == 0) std::printf("(no documents%s)\n", io->lang.empty() ? "" : (" in language " + io->lang).c_str());
  });

  // ---- extract ----
  auto* extract = group->add_subcommand("extract", "Extract the main text of HTML files (or of the HTML records "
                                                   "of WARC files) and print it, one JSON line per document");
  struct ExtractOpts {
    std::vector<std::string> inputs;
    bool plain = false;
    bool with_html = false;
  };
  auto eo = std::make_shared<ExtractOpts>();
  extract->add_option("input", eo->inputs, "HTML or WARC files, directories or globs")->required();
  extract->add_flag("--plain", eo->plain, "Print only the text, documents separated by a blank line");
  extract->add_flag("--with-html", eo->with_html, "Also print the decoded (UTF-8) HTML in an \"html\" field, "
                                                  "to feed another extractor the very same input");
  extract->callback([eo] {
    for (const auto& path : aji::expand_inputs(eo->inputs)) {
      data::ReaderOptions ro;
      data::InputFormat f = data::detect_input_format(path);
      ro.format = f == data::InputFormat::kText ? data::InputFormat::kHtml : f;
      data::DocumentReader reader(path, ro);
      data::Document doc;
      while (reader.next(doc)) {
        std::string text = doc.html ? data::extract_main_text(doc.text).text : doc.text;
        if (eo->plain) {
          std::printf("%s\n\n", text.c_str());
        } else {
          nlohmann::json j = {{"file", path.string()}, {"id", doc.id}, {"url", doc.url}, {"text", text}};
          if (eo->with_html && doc.html) j["html"] = doc.text;
          std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
        }
      }
      for (const auto& e : reader.errors())
        std::fprintf(stderr, "warning: %s%s%llu: %s\n", e.file.c_str(), e.line ? ":" : "@",
                     static_cast<unsigned long long>(e.offset), e.message.c_str());
    }
  });
});

}  // namespace
