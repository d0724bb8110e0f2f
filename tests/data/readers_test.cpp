// Readers: WARC/WET against warcio (records.json, made by tests/reference/warc_records.py),
// JSONL / text / HTML, and every kind of bad input the issue lists.
#include <gtest/gtest.h>
#include <zlib.h>
#include <zstd.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/data/readers.h"
#include "test_util.h"

namespace aji::data {
namespace {

namespace fs = std::filesystem;
using aji::test::source_path;
using aji::test::TempDir;

std::vector<Document> read_all(const fs::path& p, std::vector<ReadError>* errors = nullptr, ReaderOptions opt = {}) {
  DocumentReader r(p, opt);
  std::vector<Document> docs;
  Document d;
  while (r.next(d)) docs.push_back(d);
  if (errors) *errors = r.errors();
  return docs;
}

std::string gzip_member(const std::string& data) {
  z_stream z{};
  deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&z, data.size()) + 64, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = static_cast<uInt>(data.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&z, Z_FINISH), Z_STREAM_END);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

std::string read_file_raw_for_test(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

void write_bytes(const fs::path& p, const std::string& s) {
  std::ofstream f(p, std::ios::binary);
  f.write(s.data(), static_cast<std::streamsize>(s.size()));
}

// A WARC response record holding an HTTP response with this body; length_delta makes
// the Content-Length wrong on purpose.
std::string warc_response(const std::string& id, const std::string& url, const std::string& body,
                          const std::string& content_type = "text/html; charset=utf-8", long length_delta = 0) {
  std::string http = "HTTP/1.1 200 OK\r\nContent-Type: " + content_type + "\r\nContent-Length: " +
                     std::to_string(body.size()) + "\r\n\r\n" + body;
  std::string rec = "WARC/1.0\r\nWARC-Type: response\r\nWARC-Record-ID: <urn:uuid:" + id +
                    ">\r\nWARC-Target-URI: " + url + "\r\nWARC-Date: 2024-01-01T00:00:00Z\r\nContent-Type: application/http; msgtype=response\r\nContent-Length: " +
                    std::to_string(static_cast<long>(http.size()) + length_delta) + "\r\n\r\n" + http + "\r\n\r\n";
  return rec;
}

std::string page(int i) {
  return "<html><body><p>Document number " + std::to_string(i) + " has a paragraph of text.</p></body></html>";
}

TEST(WarcReader, MatchesWarcioOnRealFiles) {
  auto ref = nlohmann::json::parse(read_file(source_path("tests/fixtures/data/warc/records.json")));
  for (auto it = ref.begin(); it != ref.end(); ++it) {
    SCOPED_TRACE(it.key());
    std::vector<ReadError> errors;
    auto docs = read_all(source_path("tests/fixtures/data/warc/" + it.key()), &errors);
    EXPECT_TRUE(errors.empty()) << errors[0].message;
    ASSERT_EQ(docs.size(), it.value().size());
    for (size_t i = 0; i < docs.size(); ++i) {
      const auto& r = it.value()[i];
      EXPECT_EQ(docs[i].id, r["id"].get<std::string>());
      EXPECT_EQ(docs[i].url, r["url"].get<std::string>());
      // Payloads that were valid UTF-8 pass through byte for byte (chunking and gzip
      // content-encoding removed as warcio does).
      if (docs[i].metadata.value("charset", "utf-8") == "utf-8" && !docs[i].metadata.contains("utf8_replaced") &&
          !docs[i].metadata.contains("bom")) {
        EXPECT_EQ(docs[i].text.size(), r["payload_bytes"].get<size_t>()) << docs[i].url;
      }
    }
  }
}

TEST(WarcReader, WetConversionRecordsAreText) {
  auto docs = read_all(source_path("tests/fixtures/data/warc/whirlwind.warc.wet.gz"));
  ASSERT_EQ(docs.size(), 1u);
  EXPECT_FALSE(docs[0].html);
  EXPECT_EQ(docs[0].url, "https://an.wikipedia.org/wiki/Escopete");
  EXPECT_NE(docs[0].text.find("Escopete"), std::string::npos);
}

TEST(WarcReader, TruncatedGzipMemberCostsOnlyItsRecord) {
  TempDir tmp;
  std::string file;
  std::vector<uint64_t> starts;
  for (int i = 0; i < 6; ++i) {
    std::string m = gzip_member(warc_response("id-" + std::to_string(i), "https://ex.com/" + std::to_string(i), page(i)));
    if (i == 2) m.resize(m.size() / 2);  // cut member 2 in the middle
    starts.push_back(file.size());
    file += m;
  }
  fs::path p = tmp.path() / "t.warc.gz";
  write_bytes(p, file);
  std::vector<ReadError> errors;
  auto docs = read_all(p, &errors);
  ASSERT_EQ(docs.size(), 5u);
  for (size_t i = 0, k = 0; i < 6; ++i) {
    if (i == 2) continue;
    EXPECT_EQ(docs[k++].id, "id-" + std::to_string(i));
  }
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].file, p.string());
  EXPECT_EQ(errors[0].offset, starts[2]);
  EXPECT_EQ(errors[0].kind, "gzip_corrupt");
}

TEST(WarcReader, TruncatedLastMember) {
  TempDir tmp;
  std::string file;
  for (int i = 0; i < 3; ++i) file += gzip_member(warc_response("id-" + std::to_string(i), "https://ex.com/", page(i)));
  uint64_t last = file.size();
  std::string m = gzip_member(warc_response("id-3", "https://ex.com/", page(3)));
  file += m.substr(0, m.size() - 10);
  fs::path p = tmp.path() / "t.warc.gz";
  write_bytes(p, file);
  std::vector<ReadError> errors;
  auto docs = read_all(p, &errors);
  EXPECT_EQ(docs.size(), 3u);
  ASSERT_GE(errors.size(), 1u);
  EXPECT_EQ(errors[0].offset, last);
}

TEST(WarcReader, WrongContentLengthIsCountedAndReadingContinues) {
  TempDir tmp;
  for (long delta : {+37L, -23L}) {
    SCOPED_TRACE(delta);
    std::string plain, gz;
    uint64_t bad_plain = 0, bad_gz = 0;
    for (int i = 0; i < 5; ++i) {
      std::string rec = warc_response("id-" + std::to_string(i), "https://ex.com/", page(i), "text/html", i == 1 ? delta : 0);
      if (i == 1) {
        bad_plain = plain.size();
        bad_gz = gz.size();
      }
      plain += rec;
      gz += gzip_member(rec);
    }
    for (bool compressed : {false, true}) {
      fs::path p = tmp.path() / (compressed ? "w.warc.gz" : "w.warc");
      write_bytes(p, compressed ? gz : plain);
      std::vector<ReadError> errors;
      auto docs = read_all(p, &errors);
      ASSERT_EQ(docs.size(), 4u) << compressed;
      EXPECT_EQ(docs[0].id, "id-0");
      EXPECT_EQ(docs[1].id, "id-2");
      EXPECT_EQ(docs[3].id, "id-4");
      ASSERT_EQ(errors.size(), 1u);
      EXPECT_EQ(errors[0].kind, "warc_bad_length");
      EXPECT_EQ(errors[0].offset, compressed ? bad_gz : bad_plain);
    }
  }
}

TEST(WarcReader, BinaryContentLabelledHtmlIsAnError) {
  TempDir tmp;
  std::string bin(4000, '\0');
  aji::Rng rng(3);
  for (auto& c : bin) c = static_cast<char>(rng.next_u64() & 0xff);
  std::string file = gzip_member(warc_response("a", "https://ex.com/a", page(0))) +
                     gzip_member(warc_response("b", "https://ex.com/b", bin, "text/html")) +
                     gzip_member(warc_response("c", "https://ex.com/c", page(2)));
  fs::path p = tmp.path() / "b.warc.gz";
  write_bytes(p, file);
  std::vector<ReadError> errors;
  auto docs = read_all(p, &errors);
  ASSERT_EQ(docs.size(), 2u);
  EXPECT_EQ(docs[1].id, "c");
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].kind, "binary_content");
}

TEST(WarcReader, NonHtmlPayloadsAndOtherRecordsAreSkippedNotErrors) {
  TempDir tmp;
  std::string req = "WARC/1.0\r\nWARC-Type: request\r\nContent-Length: 5\r\n\r\nGET /\r\n\r\n";
  std::string file = gzip_member(req) + gzip_member(warc_response("img", "https://ex.com/x.png", "PNGDATA", "image/png")) +
                     gzip_member(warc_response("ok", "https://ex.com/", page(1)));
  fs::path p = tmp.path() / "s.warc.gz";
  write_bytes(p, file);
  DocumentReader r(p, {});
  Document d;
  std::vector<std::string> ids;
  while (r.next(d)) ids.push_back(d.id);
  EXPECT_EQ(ids, std::vector<std::string>{"ok"});
  EXPECT_TRUE(r.errors().empty());
  EXPECT_EQ(r.skips().warc_non_response, 1u);
  EXPECT_EQ(r.skips().warc_payload_type, 1u);
}

TEST(WarcReader, GarbageBetweenRecordsIsSkipped) {
  TempDir tmp;
  std::string file = warc_response("a", "u", page(0)) + "some junk that is not a record\r\n" + warc_response("b", "u", page(1));
  fs::path p = tmp.path() / "g.warc";
  write_bytes(p, file);
  std::vector<ReadError> errors;
  auto docs = read_all(p, &errors);
  ASSERT_EQ(docs.size(), 2u);
  EXPECT_EQ(errors.size(), 1u);
}

// "한국어 문서" in EUC-KR (KS X 1001), from the code table: 한 C7D1, 국 B1B9, 어 BEEE, 문 B9AE, 서 BCAD.
const std::string kEucKr = "\xC7\xD1\xB1\xB9\xBE\xEE \xB9\xAE\xBC\xAD";
const std::string kUtf8Ko = "한국어 문서";

// Well-formed UTF-8 as RFC 3629 defines it (Table 3-7 of the Unicode standard), written out
// here so the decoder is not checked with its own validator.
bool rfc3629_valid(const std::string& s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  for (size_t i = 0; i < n;) {
    const unsigned c = p[i];
    size_t len;
    unsigned lo = 0x80, hi = 0xBF;
    if (c < 0x80) len = 1;
    else if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) { len = 3; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
    else if (c >= 0xF0 && c <= 0xF4) { len = 4; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
    else return false;
    if (i + len > n) return false;
    for (size_t k = 1; k < len; ++k) {
      const unsigned b = p[i + k];
      if (b < (k == 1 ? lo : 0x80u) || b > (k == 1 ? hi : 0xBFu)) return false;
    }
    i += len;
  }
  return true;
}

// Found by fuzz_charset: glibc's iconv opens "utf\xfe\xff8" as UTF-8 (it keeps only a
// label's letters and digits) and passes F4 9A 9A 9A (past U+10FFFF) through; the decoder
// promises valid UTF-8 whatever the label.
TEST(Charset, NoisyLabelsAndOutOfRangeSequencesStillGiveValidUtf8) {
  ASSERT_FALSE(rfc3629_valid("\xf4\x9a\x9a\x9a"));
  ASSERT_TRUE(rfc3629_valid("caf\xc3\xa9 \xf4\x8f\xbf\xbf"));
  for (const char* body : {"\xf4\x9a\x9a\x9a", "8\n\xf4\x9a\x9a\x9a caf\xe9"})
    for (const char* label : {"utf\xfe\xff" "8", "utf8", "x-user-defined", "\xff\xfe", "utf-8\x00"})
      for (bool html : {true, false}) {
        auto r = decode_to_utf8(body, label, html);
        EXPECT_TRUE(rfc3629_valid(r.text)) << label << " html=" << html;
      }
}

TEST(Charset, EucKrLabelled) {
  auto r = decode_to_utf8("<p>" + kEucKr + "</p>", "euc-kr", true);
  EXPECT_EQ(r.text, "<p>" + kUtf8Ko + "</p>");
  EXPECT_EQ(r.charset, "cp949");
  EXPECT_FALSE(r.label_wrong);
}

TEST(Charset, EucKrLabelledUtf8FallsBackByValidity) {
  auto r = decode_to_utf8("<p>" + kEucKr + "</p>", "utf-8", true);
  EXPECT_EQ(r.text, "<p>" + kUtf8Ko + "</p>");
  EXPECT_TRUE(r.label_wrong);
}

TEST(Charset, EucKrUnlabelledAndMetaCharset) {
  EXPECT_EQ(decode_to_utf8(kEucKr, "", false).text, kUtf8Ko);
  std::string html = "<html><head><meta http-equiv=\"Content-Type\" content=\"text/html; charset=ks_c_5601-1987\"></head><body>" + kEucKr;
  EXPECT_EQ(html_meta_charset(html), "ks_c_5601-1987");
  auto r = decode_to_utf8(html, "", true);
  EXPECT_NE(r.text.find(kUtf8Ko), std::string::npos);
}

TEST(Charset, Utf8LabelledLatin1StaysUtf8) {
  auto r = decode_to_utf8("caf\xC3\xA9 " + kUtf8Ko, "iso-8859-1", false);
  EXPECT_EQ(r.text, "caf\xC3\xA9 " + kUtf8Ko);
  EXPECT_EQ(r.charset, "utf-8");
}

TEST(Charset, Latin1BytesAreConverted) {
  auto r = decode_to_utf8("caf\xE9 cr\xE8me br\xFBl\xE9" "e", "iso-8859-1", false);
  EXPECT_EQ(r.text, "caf\xC3\xA9 cr\xC3\xA8me br\xC3\xBBl\xC3\xA9" "e");
}

TEST(Charset, BomsWin) {
  EXPECT_EQ(decode_to_utf8("\xEF\xBB\xBFhello", "euc-kr", false).text, "hello");
  EXPECT_EQ(decode_to_utf8(std::string("\xFF\xFEh\0i\0", 6), "", false).text, "hi");
}

TEST(Charset, MostlyValidUtf8IsRepaired) {
  std::string s = std::string(1000, 'a') + kUtf8Ko + "\xE4\xB8" + "end";  // a cut sequence
  // CP949 cannot decode this (it is UTF-8), so the few bad bytes become U+FFFD.
  auto r = decode_to_utf8(s, "", false);
  EXPECT_TRUE(is_valid_utf8(r.text));
  EXPECT_NE(r.text.find(kUtf8Ko), std::string::npos);
  EXPECT_NE(r.text.find("\xEF\xBF\xBD"), std::string::npos);
}

TEST(Charset, Utf8Validation) {
  EXPECT_TRUE(is_valid_utf8("plain ascii " + kUtf8Ko + "\xF0\x9F\x98\x80"));
  EXPECT_FALSE(is_valid_utf8("\xC0\xAF"));          // overlong
  EXPECT_FALSE(is_valid_utf8("\xED\xA0\x80"));      // surrogate
  EXPECT_FALSE(is_valid_utf8("\xF4\x90\x80\x80"));  // > U+10FFFF
  EXPECT_FALSE(is_valid_utf8("abc\xE4\xB8"));       // truncated
  EXPECT_EQ(content_type_charset("text/html; Charset=\"EUC-KR\""), "euc-kr");
}

TEST(JsonlReader, MalformedLinesAreCountedWithLineNumbers) {
  TempDir tmp;
  fs::path p = tmp.path() / "d.jsonl";
  write_bytes(p,
              "{\"text\": \"first\", \"id\": \"a\", \"url\": \"https://x\"}\n"
              "{not json\n"
              "\n"
              "{\"body\": \"no text field\"}\n"
              "{\"text\": \"bad \xFF utf8\"}\n"
              "[1,2]\n"
              "{\"text\": \"second\", \"metadata\": {\"url\": \"https://y\"}}\n"
              "{\"text\": \"third, no final newline\"}");
  std::vector<ReadError> errors;
  auto docs = read_all(p, &errors);
  ASSERT_EQ(docs.size(), 3u);
  EXPECT_EQ(docs[0].id, "a");
  EXPECT_EQ(docs[0].url, "https://x");
  EXPECT_EQ(docs[1].url, "https://y");
  EXPECT_EQ(docs[1].source_offset, 7u);
  EXPECT_EQ(docs[2].text, "third, no final newline");
  ASSERT_EQ(errors.size(), 4u);
  EXPECT_EQ(errors[0].offset, 2u);
  EXPECT_TRUE(errors[0].line);
  EXPECT_EQ(errors[1].offset, 4u);
  EXPECT_EQ(errors[1].kind, "jsonl_missing_text");
  EXPECT_EQ(errors[2].offset, 5u);
  EXPECT_EQ(errors[3].offset, 6u);
}

TEST(JsonlReader, CompressedAndCustomField) {
  TempDir tmp;
  std::string body;
  for (int i = 0; i < 1000; ++i) body += "{\"content\": \"doc " + std::to_string(i) + "\"}\n";
  fs::path gz = tmp.path() / "d.jsonl.gz";
  write_bytes(gz, gzip_member(body.substr(0, body.size() / 2)) + gzip_member(body.substr(body.size() / 2)));
  std::string zst(ZSTD_compressBound(body.size()), '\0');
  zst.resize(ZSTD_compress(zst.data(), zst.size(), body.data(), body.size(), 3));
  fs::path zp = tmp.path() / "d.jsonl.zst";
  write_bytes(zp, zst);
  ReaderOptions opt;
  opt.jsonl_text_field = "content";
  for (const auto& p : {gz, zp}) {
    auto docs = read_all(p, nullptr, opt);
    ASSERT_EQ(docs.size(), 1000u);
    EXPECT_EQ(docs[999].text, "doc 999");
  }
}

TEST(JsonlReader, RealDolmaFile) {
  std::vector<ReadError> errors;
  auto docs = read_all(source_path("tests/fixtures/data/warc/dolma-cc_en_head-0174.jsonl.gz"), &errors);
  EXPECT_TRUE(errors.empty());
  EXPECT_GT(docs.size(), 5u);
  for (const auto& d : docs) EXPECT_FALSE(d.text.empty());
}

TEST(JsonlReader, TruncatedGzipKeepsEarlierDocuments) {
  TempDir tmp;
  std::string body;
  for (int i = 0; i < 5000; ++i) body += "{\"text\": \"document " + std::to_string(i) + " with some words\"}\n";
  std::string gz = gzip_member(body);
  fs::path p = tmp.path() / "t.jsonl.gz";
  write_bytes(p, gz.substr(0, gz.size() * 2 / 3));
  std::vector<ReadError> errors;
  auto docs = read_all(p, &errors);
  EXPECT_GT(docs.size(), 1000u);
  EXPECT_LT(docs.size(), 5000u);
  // The stream error, and the cut last line as malformed JSON.
  ASSERT_GE(errors.size(), 1u);
  EXPECT_EQ(errors[0].file, p.string());
  EXPECT_EQ(errors[0].kind, "gzip_truncated");
  for (size_t i = 0; i + 1 < docs.size(); ++i) EXPECT_EQ(docs[i].text, "document " + std::to_string(i) + " with some words");
}

TEST(Readers, OversizedDocumentsAreSkippedWithoutBuffering) {
  TempDir tmp;
  ReaderOptions opt;
  opt.max_document_bytes = 1000;
  fs::path j = tmp.path() / "big.jsonl";
  write_bytes(j, "{\"text\": \"small one\"}\n{\"text\": \"" + std::string(50000, 'x') + "\"}\n{\"text\": \"small two\"}\n");
  std::vector<ReadError> errors;
  auto docs = read_all(j, &errors, opt);
  ASSERT_EQ(docs.size(), 2u);
  EXPECT_EQ(docs[1].text, "small two");
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].kind, "document_too_large");
  EXPECT_EQ(errors[0].offset, 2u);

  fs::path w = tmp.path() / "big.warc.gz";
  write_bytes(w, gzip_member(warc_response("a", "u", page(0))) +
                     gzip_member(warc_response("big", "u", "<p>" + std::string(50000, 'y') + "</p>")) +
                     gzip_member(warc_response("c", "u", page(2))));
  docs = read_all(w, &errors, opt);
  ASSERT_EQ(docs.size(), 2u);
  EXPECT_EQ(docs[1].id, "c");
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].kind, "document_too_large");

  fs::path t = tmp.path() / "big.txt";
  write_bytes(t, std::string(5000, 'z'));
  docs = read_all(t, &errors, opt);
  EXPECT_TRUE(docs.empty());
  EXPECT_EQ(errors.size(), 1u);
}

TEST(Readers, EmptyInputs) {
  TempDir tmp;
  for (const char* name : {"e.jsonl", "e.warc", "e.txt", "e.html"}) {
    fs::path p = tmp.path() / name;
    write_bytes(p, "");
    std::vector<ReadError> errors;
    EXPECT_TRUE(read_all(p, &errors).empty()) << name;
    EXPECT_TRUE(errors.empty()) << name;
  }
  fs::path gz = tmp.path() / "e.warc.gz";
  write_bytes(gz, gzip_member(""));
  EXPECT_TRUE(read_all(gz).empty());
}

TEST(Readers, HtmlAndTextFiles) {
  auto docs = read_all(source_path("tests/fixtures/data/extract/basic-defs.ko.html"));
  ASSERT_EQ(docs.size(), 1u);
  EXPECT_TRUE(docs[0].html);
  EXPECT_TRUE(is_valid_utf8(docs[0].text));
  TempDir tmp;
  fs::path p = tmp.path() / "bin.html";
  std::string bin(3000, '\0');
  write_bytes(p, bin);
  std::vector<ReadError> errors;
  EXPECT_TRUE(read_all(p, &errors).empty());
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].kind, "binary_content");
  fs::path k = tmp.path() / "ko.txt";
  write_bytes(k, kEucKr + "\n");
  docs = read_all(k);
  ASSERT_EQ(docs.size(), 1u);
  EXPECT_EQ(docs[0].text, kUtf8Ko + "\n");
  EXPECT_FALSE(docs[0].html);
}

TEST(Readers, FormatDetection) {
  EXPECT_EQ(detect_input_format("a/b.warc.gz"), InputFormat::kWarc);
  EXPECT_EQ(detect_input_format("a/b.warc.wet.gz"), InputFormat::kWarc);
  EXPECT_EQ(detect_input_format("x.jsonl.zst"), InputFormat::kJsonl);
  EXPECT_EQ(detect_input_format("x.HTML"), InputFormat::kHtml);
  EXPECT_EQ(detect_input_format("notes.md"), InputFormat::kText);
  EXPECT_THROW(parse_input_format("pdf"), aji::Error);
}

}  // namespace
}  // namespace aji::data

namespace aji::data {
namespace {

// Random damage to a real multi-member WARC: reading never crashes, every error names
// the file, and each damaged byte costs at most the records of its own member (a flipped
// byte in a gzip header can also swallow the member that follows it).
TEST(WarcReader, RandomByteDamageLosesOnlyDamagedRecords) {
  std::string original = read_file_raw_for_test(source_path("tests/fixtures/data/warc/dolma-sample-0000.warc.gz"));
  const size_t total = read_all(source_path("tests/fixtures/data/warc/dolma-sample-0000.warc.gz")).size();
  TempDir tmp;
  for (uint64_t seed = 1; seed <= 12; ++seed) {
    aji::Rng rng(seed);
    std::string damaged = original;
    const int flips = 3;
    for (int k = 0; k < flips; ++k) damaged[rng.next_u64() % damaged.size()] ^= static_cast<char>(1 + rng.next_u64() % 255);
    fs::path p = tmp.path() / fs::path("d").concat(std::to_string(seed)).concat(".warc.gz");
    write_bytes(p, damaged);
    std::vector<ReadError> errors;
    auto docs = read_all(p, &errors);
    EXPECT_GE(docs.size() + 2 * flips, total) << "seed " << seed;
    for (const auto& e : errors) EXPECT_EQ(e.file, p.string());
  }
}

}  // namespace
}  // namespace aji::data
