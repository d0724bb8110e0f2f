// Preference data: the reader (pairs, K-way rankings with ties, every bad input as an
// error naming file:line or a counted skip), rendering through the chat template, and
// the HH-RLHF / OASST-ranked converters.
#include <gtest/gtest.h>

#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "aji/align/converters.h"
#include "aji/align/preferences.h"
#include "aji/align/render.h"
#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/tokenizer/chat_template.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace aji::align;
using aji::test::source_path;
using aji::test::TempDir;

namespace {

fs::path write(const TempDir& dir, const std::string& name, const std::string& text) {
  fs::path p = dir.path() / name;
  std::ofstream(p, std::ios::binary) << text;
  return p;
}

const aji::tokenizer::Tokenizer& chat_tokenizer() {
  static const aji::tokenizer::Tokenizer tok = [] {
    auto t = aji::tokenizer::Tokenizer::load(source_path("data/tokenizer/cl100k_base.tiktoken"));
    t.add_special("<|im_start|>", 100264);
    t.add_special("<|im_end|>", 100265);
    return t;
  }();
  return tok;
}

const std::string kPrompt = R"("prompt":[{"role":"user","content":"Tell me a joke."}])";
std::string pair_line(const std::string& chosen, const std::string& rejected) {
  return "{" + kPrompt + R"(,"chosen":[{"role":"assistant","content":")" + chosen +
         R"("}],"rejected":[{"role":"assistant","content":")" + rejected + R"("}]})";
}

std::string ranking_line(int k, const std::string& ranking) {
  std::string r = "{" + kPrompt + R"(,"responses":[)";
  for (int i = 0; i < k; ++i)
    r += std::string(i ? "," : "") + R"([{"role":"assistant","content":"reply )" + std::to_string(i) + R"("}])";
  return r + R"(],"ranking":)" + ranking + "}";
}

// The violation kind of one line, or "" when it is valid.
std::string kind_of(const std::string& line) {
  PreferenceGroup g;
  auto bad = parse_preference_line(line, g);
  return bad ? bad->kind : "";
}

}  // namespace

TEST(Preferences, PairRecordIsOneGroupWithOnePair) {
  PreferenceGroup g;
  ASSERT_FALSE(parse_preference_line(pair_line("A pun.", "No."), g));
  ASSERT_EQ(g.responses.size(), 2u);
  ASSERT_EQ(g.pairs.size(), 1u);
  EXPECT_EQ(g.pairs[0].better, 0);
  EXPECT_EQ(g.pairs[0].worse, 1);
  EXPECT_EQ(g.responses[0][0].content, "A pun.");
  EXPECT_EQ(g.prompt.back().role, Role::kUser);
  // Written back and read again: the same record.
  PreferenceGroup again;
  ASSERT_FALSE(parse_preference_line(preference_to_json_line(g), again));
  EXPECT_EQ(preference_to_json_line(again), preference_to_json_line(g));
  EXPECT_NE(preference_to_json_line(g).find("\"chosen\""), std::string::npos);
}

// §8.3 check 12: K distinct ranks give K(K-1)/2 pairs, ties produce none, and every
// pair puts the better-ranked response first.
TEST(Preferences, KWayRankingExpandsIntoEveryOrderedPair) {
  for (int k = 2; k <= 9; ++k) {
    std::string ranking = "[";
    for (int i = k - 1; i >= 0; --i) ranking += std::to_string(i) + (i ? "," : "]");
    PreferenceGroup g;
    ASSERT_FALSE(parse_preference_line(ranking_line(k, ranking), g)) << k;
    ASSERT_EQ(g.pairs.size(), static_cast<size_t>(k * (k - 1) / 2)) << k;
    std::set<std::pair<int, int>> seen;
    for (const auto& p : g.pairs) {
      EXPECT_GT(p.better, p.worse) << "ranking lists higher indices first";
      EXPECT_TRUE(seen.insert({p.better, p.worse}).second) << "duplicate pair";
    }
  }
  // Ties: [2, [0, 3], 1] over 4 responses: 2>0, 2>3, 2>1, 0>1, 3>1 — and no 0/3 pair.
  PreferenceGroup g;
  ASSERT_FALSE(parse_preference_line(ranking_line(4, "[2,[0,3],1]"), g));
  std::set<std::pair<int, int>> got;
  for (const auto& p : g.pairs) got.insert({p.better, p.worse});
  std::set<std::pair<int, int>> want{{2, 0}, {2, 3}, {2, 1}, {0, 1}, {3, 1}};
  EXPECT_EQ(got, want);
  ASSERT_EQ(g.tiers.size(), 3u);
  // The tie survives a write / read round trip.
  PreferenceGroup again;
  ASSERT_FALSE(parse_preference_line(preference_to_json_line(g), again));
  EXPECT_EQ(again.tiers, g.tiers);
  EXPECT_EQ(again.pairs.size(), 5u);
}

TEST(Preferences, EveryBadInputHasItsKind) {
  EXPECT_EQ(kind_of(pair_line("Same.", "Same.")), "chosen_equals_rejected");
  EXPECT_EQ(kind_of(pair_line("ok", "  ")), "empty_content");
  EXPECT_EQ(kind_of(R"({"chosen":[{"role":"assistant","content":"a"}],"rejected":[{"role":"assistant","content":"b"}]})"),
            "missing_field");
  EXPECT_EQ(kind_of("{" + kPrompt + R"(,"chosen":[{"role":"assistant","content":"a"}]})"), "missing_field");
  EXPECT_EQ(kind_of("{" + kPrompt + "}"), "missing_field");
  // Wrong roles: a response from the user, a prompt that ends with the assistant, a bad name.
  EXPECT_EQ(kind_of("{" + kPrompt +
                    R"(,"chosen":[{"role":"user","content":"a"}],"rejected":[{"role":"assistant","content":"b"}]})"),
            "wrong_role");
  EXPECT_EQ(kind_of(R"({"prompt":[{"role":"user","content":"q"},{"role":"assistant","content":"x"}],)"
                    R"("chosen":[{"role":"assistant","content":"a"}],"rejected":[{"role":"assistant","content":"b"}]})"),
            "wrong_role");
  EXPECT_EQ(kind_of("{" + kPrompt +
                    R"(,"chosen":[{"role":"bot","content":"a"}],"rejected":[{"role":"assistant","content":"b"}]})"),
            "unknown_role");
  EXPECT_EQ(kind_of("{" + kPrompt + R"(,"chosen":[],"rejected":[{"role":"assistant","content":"b"}]})"),
            "empty_response");
  // A multi-turn response must alternate and end with the assistant.
  EXPECT_EQ(kind_of("{" + kPrompt +
                    R"(,"chosen":[{"role":"assistant","content":"a"},{"role":"user","content":"more"}],)"
                    R"("rejected":[{"role":"assistant","content":"b"}]})"),
            "wrong_role");
  EXPECT_EQ(kind_of("{" + kPrompt +
                    R"(,"chosen":[{"role":"assistant","content":"a"},{"role":"user","content":"more"},)"
                    R"({"role":"assistant","content":"c"}],"rejected":[{"role":"assistant","content":"b"}]})"),
            "");
  // Rankings.
  EXPECT_EQ(kind_of(ranking_line(3, "[0,1,1]")), "ranking_duplicate");
  EXPECT_EQ(kind_of(ranking_line(3, "[0,[1,0],2]")), "ranking_duplicate");
  EXPECT_EQ(kind_of(ranking_line(3, "[0,1,3]")), "ranking_out_of_range");
  EXPECT_EQ(kind_of(ranking_line(3, "[0,-1,2]")), "ranking_out_of_range");
  EXPECT_EQ(kind_of(ranking_line(3, "[0,1]")), "ranking_incomplete");
  EXPECT_EQ(kind_of(ranking_line(3, "[[0,1,2]]")), "ranking_no_pairs");
  EXPECT_EQ(kind_of(ranking_line(1, "[0]")), "too_few_responses");
  EXPECT_EQ(kind_of(ranking_line(3, "[0,\"1\",2]")), "malformed_json");
  EXPECT_EQ(kind_of(ranking_line(3, "[0,[],1,2]")), "malformed_json");
  EXPECT_EQ(kind_of("{" + kPrompt + R"(,"responses":[[{"role":"assistant","content":"x"}]]})"), "missing_field");
  EXPECT_EQ(kind_of("{\"prompt\": [}"), "malformed_json");
  EXPECT_EQ(kind_of("[1,2]"), "malformed_json");
  // Two identical responses may tie, but not be ranked apart.
  std::string dup = "{" + kPrompt +
                    R"(,"responses":[[{"role":"assistant","content":"x"}],[{"role":"assistant","content":"x"}],)"
                    R"([{"role":"assistant","content":"y"}]])";
  EXPECT_EQ(kind_of(dup + R"(,"ranking":[[0,1],2]})"), "");
  EXPECT_EQ(kind_of(dup + R"(,"ranking":[0,1,2]})"), "chosen_equals_rejected");
}

TEST(Preferences, ReaderNamesFileAndLineOrCountsSkips) {
  TempDir dir;
  auto path = write(dir, "p.jsonl",
                    pair_line("good", "bad") + "\n\n" + pair_line("same", "same") + "\n" + ranking_line(3, "[2,0,1]") +
                        "\n" + ranking_line(3, "[0,1,5]") + "\n");
  try {
    read_preferences(path, OnInvalid::kError, nullptr);
    FAIL() << "expected an error";
  } catch (const aji::Error& e) {
    EXPECT_EQ(e.file(), path.string());
    EXPECT_EQ(e.line(), 3);
    EXPECT_NE(std::string(e.what()).find("chosen"), std::string::npos) << e.what();
    EXPECT_NE(e.how_to_fix().find("--skip-invalid"), std::string::npos);
  }
  InputReport rep;
  auto groups = read_preferences(path, OnInvalid::kSkip, &rep);
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(groups[0].line, 1);
  EXPECT_EQ(groups[1].line, 4);
  EXPECT_EQ(rep.records_read, 4);
  EXPECT_EQ(rep.records_kept, 2);
  ASSERT_EQ(rep.skipped_count(), 2);
  EXPECT_EQ(rep.skipped[0].line, 3);
  EXPECT_EQ(rep.skipped[0].kind, "chosen_equals_rejected");
  EXPECT_EQ(rep.skipped[1].line, 5);
  EXPECT_EQ(rep.skipped[1].kind, "ranking_out_of_range");
  auto stats = preference_stats(groups);
  EXPECT_EQ(stats.pairs, 1 + 3);
  EXPECT_EQ(stats.ranked_groups, 1);
}

// prompt_ids + completion_ids[k] is exactly the chat-template rendering of prompt +
// response k; the prompt ends with the assistant start; completions end with <|im_end|>\n.
TEST(Preferences, RenderingIsTheChatTemplateSplitAtTheGenerationPrompt) {
  const auto& tok = chat_tokenizer();
  PreferenceGroup g;
  ASSERT_FALSE(parse_preference_line(
      R"({"prompt":[{"role":"system","content":"Be kind."},{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello!"},)"
      R"({"role":"user","content":"A joke?"}],"chosen":[{"role":"assistant","content":"Why did the chicken cross the road?"}],)"
      R"("rejected":[{"role":"assistant","content":"the the the"},{"role":"user","content":"What?"},{"role":"assistant","content":"the"}]})",
      g));
  auto rendered = render_preferences(tok, {g}, 0, "mem", nullptr, nullptr);
  ASSERT_EQ(rendered.size(), 1u);
  const auto& r = rendered[0];
  ASSERT_EQ(r.completion_ids.size(), 2u);
  EXPECT_EQ(r.prompt_ids, render_generation_prompt(tok, g.prompt));
  for (size_t k = 0; k < 2; ++k) {
    Conversation c;
    c.messages = g.prompt;
    c.messages.insert(c.messages.end(), g.responses[k].begin(), g.responses[k].end());
    auto full = render_conversation(tok, c).ids;
    std::vector<uint32_t> joined = r.prompt_ids;
    joined.insert(joined.end(), r.completion_ids[k].begin(), r.completion_ids[k].end());
    EXPECT_EQ(joined, full);
  }
  std::string text;
  for (uint32_t id : r.completion_ids[0]) text += std::string(tok.token_bytes(id));
  EXPECT_EQ(text, "Why did the chicken cross the road?<|im_end|>\n");
  std::string prompt_text;
  for (uint32_t id : r.prompt_ids) prompt_text += std::string(tok.token_bytes(id));
  EXPECT_EQ(prompt_text, aji::tokenizer::render_chat_text({{"system", "Be kind."}, {"user", "Hi"}, {"assistant", "Hello!"},
                                                           {"user", "A joke?"}},
                                                          true));
  auto flat = flatten_pairs(rendered);
  ASSERT_EQ(flat.size(), 1u);
  EXPECT_EQ(flat[0].chosen_ids, &r.completion_ids[0]);
  EXPECT_EQ(flat[0].rejected_ids, &r.completion_ids[1]);
}

// "Pairs with a longer side are filtered out, not truncated": a response too long for the
// context drops its pairs; a group left with none is a counted skip naming its line.
TEST(Preferences, LongResponsesAreFilteredNotTruncated) {
  const auto& tok = chat_tokenizer();
  std::string long_reply;
  for (int i = 0; i < 60; ++i) long_reply += "word ";
  TempDir dir;
  auto path = write(dir, "p.jsonl",
                    "{" + kPrompt + R"(,"responses":[[{"role":"assistant","content":"short"}],)"
                        R"([{"role":"assistant","content":")" + long_reply + R"("}],)"
                        R"([{"role":"assistant","content":"also short"}]],"ranking":[0,1,2]})" + "\n" +
                        pair_line(long_reply, "short") + "\n");
  InputReport rep;
  auto groups = read_preferences(path, OnInvalid::kError, &rep);
  ASSERT_EQ(groups.size(), 2u);
  PreferenceRenderReport rr;
  auto rendered = render_preferences(tok, groups, 40, path.string(), &rep, &rr);
  ASSERT_EQ(rendered.size(), 1u);
  EXPECT_EQ(rendered[0].completion_ids.size(), 2u);
  ASSERT_EQ(rendered[0].pairs.size(), 1u);  // only short > also short survives
  EXPECT_EQ(rendered[0].pairs[0].better, 0);
  EXPECT_EQ(rendered[0].pairs[0].worse, 1);
  for (const auto& c : rendered[0].completion_ids) EXPECT_LE(rendered[0].prompt_ids.size() + c.size(), 40u);
  EXPECT_EQ(rr.pairs_in, 4);
  EXPECT_EQ(rr.pairs_kept, 1);
  EXPECT_EQ(rr.responses_dropped, 2);
  EXPECT_EQ(rr.groups_kept, 1);
  ASSERT_EQ(rep.skipped_count(), 1);
  EXPECT_EQ(rep.skipped[0].kind, "too_long");
  EXPECT_EQ(rep.skipped[0].line, 2);
  EXPECT_EQ(rep.records_kept, 1);
}

TEST(PreferenceConverters, HhTranscriptSplitsAtTheLastSharedAssistantTurn) {
  TempDir dir;
  nlohmann::json rec;
  rec["chosen"] =
      "\n\nHuman: How do I boil an egg?\n\nAssistant: Put it in boiling water.\n\nHuman: For how long?\n\nAssistant: "
      "About nine minutes for a hard egg.";
  rec["rejected"] =
      "\n\nHuman: How do I boil an egg?\n\nAssistant: Put it in boiling water.\n\nHuman: For how long?\n\nAssistant: "
      "Abandon hope.";
  nlohmann::json same;
  same["chosen"] = "\n\nHuman: Hi\n\nAssistant: Hello";
  same["rejected"] = "\n\nHuman: Hi\n\nAssistant: Hello";
  // The chosen side goes on for another exchange: its response is three turns.
  nlohmann::json longer;
  longer["chosen"] = "\n\nHuman: Name a fruit.\n\nAssistant: Apple.\n\nHuman: Another?\n\nAssistant: Pear.";
  longer["rejected"] = "\n\nHuman: Name a fruit.\n\nAssistant: Rock.";
  auto path = write(dir, "hh.jsonl", rec.dump() + "\n" + same.dump() + "\n" + longer.dump() + "\n{\"chosen\":1}\n");
  EXPECT_THROW(convert_preferences(PreferenceFormat::kHhRlhf, path, OnInvalid::kError, nullptr), aji::Error);
  InputReport rep;
  auto groups = convert_preferences(PreferenceFormat::kHhRlhf, path, OnInvalid::kSkip, &rep);
  ASSERT_EQ(groups.size(), 2u);
  const auto& g = groups[0];
  ASSERT_EQ(g.prompt.size(), 3u);
  EXPECT_EQ(g.prompt[0].role, Role::kUser);
  EXPECT_EQ(g.prompt[0].content, "How do I boil an egg?");
  EXPECT_EQ(g.prompt[1].role, Role::kAssistant);
  EXPECT_EQ(g.prompt[1].content, "Put it in boiling water.");
  EXPECT_EQ(g.prompt[2].content, "For how long?");
  EXPECT_EQ(g.responses[0].size(), 1u);
  EXPECT_EQ(g.responses[0][0].content, "About nine minutes for a hard egg.");
  EXPECT_EQ(g.responses[1][0].content, "Abandon hope.");
  EXPECT_EQ(g.line, 1);
  const auto& l = groups[1];
  ASSERT_EQ(l.prompt.size(), 1u);
  ASSERT_EQ(l.responses[0].size(), 3u);
  EXPECT_EQ(l.responses[0][2].content, "Pear.");
  EXPECT_EQ(l.responses[1][0].content, "Rock.");
  ASSERT_EQ(rep.skipped_count(), 2);
  EXPECT_EQ(rep.skipped[0].kind, "chosen_equals_rejected");
  EXPECT_EQ(rep.skipped[0].line, 2);
  EXPECT_EQ(rep.skipped[1].kind, "missing_field");
  EXPECT_EQ(rep.skipped[1].line, 4);
}

// On the real HH-RLHF sample: rebuilding each transcript from the converted messages
// gives back the original text (up to the whitespace around turns), for both sides.
TEST(PreferenceConverters, HhSampleRoundTripsToTheOriginalTranscripts) {
  auto path = source_path("data/prefs/hh_rlhf_sample.jsonl");
  InputReport rep;
  auto groups = read_preferences(path, OnInvalid::kError, &rep);
  ASSERT_GE(groups.size(), 250u);
  // The bundle was converted from this file by `aji prefs convert`; check it against
  // the upstream records it names in "source" when ../shared is present.
  auto upstream = fs::path(AJI_SOURCE_DIR) / "../shared/data/hh_rlhf/helpful-base-test.jsonl.gz";
  if (!fs::exists(upstream)) GTEST_SKIP() << "no ../shared/data/hh_rlhf here; round trip against upstream skipped";
  std::vector<nlohmann::json> originals;
  aji::LineReader r(upstream);
  std::string_view line;
  while (r.next(line)) originals.push_back(nlohmann::json::parse(line));
  auto norm = [](std::string s) {
    std::string out;
    for (char c : s)
      if (c != ' ' && c != '\n' && c != '\t' && c != '\r') out.push_back(c);
    return out;
  };
  int checked = 0;
  for (const auto& g : groups) {
    const std::string prefix = "hh-rlhf:helpful-base-test.jsonl.gz:";
    if (g.source.rfind(prefix, 0) != 0) continue;
    size_t idx = std::stoul(g.source.substr(prefix.size()));
    ASSERT_LT(idx, originals.size());
    for (int side = 0; side < 2; ++side) {
      std::string text;
      const auto& resp = side == 0 ? g.responses[g.pairs[0].better] : g.responses[g.pairs[0].worse];
      for (const auto* msgs : {&g.prompt, &resp})
        for (const auto& m : *msgs) text += (m.role == Role::kUser ? "\n\nHuman: " : "\n\nAssistant: ") + m.content;
      EXPECT_EQ(norm(text), norm(originals[idx][side == 0 ? "chosen" : "rejected"].get<std::string>())) << g.source;
    }
    ++checked;
  }
  EXPECT_GT(checked, 100);
}

TEST(PreferenceConverters, OasstRankedSiblingsBecomeKWayRankings) {
  TempDir dir;
  nlohmann::json tree = {
      {"message_tree_id", "t1"},
      {"prompt",
       {{"message_id", "p"},
        {"role", "prompter"},
        {"text", "Q1"},
        {"replies",
         nlohmann::json::array(
             {{{"message_id", "a"}, {"role", "assistant"}, {"text", "second"}, {"rank", 1},
               {"replies", nlohmann::json::array({{{"message_id", "q2"}, {"role", "prompter"}, {"text", "Q2"},
                                                   {"replies", nlohmann::json::array(
                                                                   {{{"role", "assistant"}, {"text", "x"}, {"rank", 0}},
                                                                    {{"role", "assistant"}, {"text", "y"}, {"rank", 1}},
                                                                    {{"role", "assistant"}, {"text", "z"}}})}}})}},
              {{"message_id", "b"}, {"role", "assistant"}, {"text", "first"}, {"rank", 0}},
              {{"message_id", "c"}, {"role", "assistant"}, {"text", "gone"}, {"rank", 0}, {"deleted", true}},
              {{"message_id", "d"}, {"role", "assistant"}, {"text", "third"}, {"rank", 2}},
              {{"message_id", "e"}, {"role", "assistant"}, {"text", "also third"}, {"rank", 2}}})}}}};
  auto path = write(dir, "t.jsonl", tree.dump() + "\n");
  InputReport rep;
  auto groups = convert_preferences(PreferenceFormat::kOasstRanked, path, OnInvalid::kError, &rep);
  ASSERT_EQ(groups.size(), 2u);
  const auto& top = groups[0];
  EXPECT_TRUE(top.ranked);
  ASSERT_EQ(top.prompt.size(), 1u);
  EXPECT_EQ(top.prompt[0].content, "Q1");
  ASSERT_EQ(top.responses.size(), 4u);  // the deleted reply is left out
  EXPECT_EQ(top.responses[0][0].content, "first");
  EXPECT_EQ(top.responses[1][0].content, "second");
  // Tiers: first > second > {third, also third}: 1 + 2 + 2 = 5 pairs, no pair inside the tie.
  ASSERT_EQ(top.tiers.size(), 3u);
  EXPECT_EQ(top.tiers[2].size(), 2u);
  EXPECT_EQ(top.pairs.size(), 5u);
  const auto& deep = groups[1];
  ASSERT_EQ(deep.prompt.size(), 3u);  // Q1, second, Q2
  EXPECT_EQ(deep.prompt[1].content, "second");
  EXPECT_EQ(deep.prompt[2].content, "Q2");
  ASSERT_EQ(deep.responses.size(), 2u);  // the unranked "z" is not part of the ranking
  EXPECT_EQ(deep.pairs.size(), 1u);
  // On the shipped OASST sample (when ../shared is present): every group is valid.
  auto sample = fs::path(AJI_SOURCE_DIR) / "../shared/data/oasst_sample/en_100_tree.jsonl";
  if (!fs::exists(sample)) GTEST_SKIP() << "no ../shared/data/oasst_sample here";
  InputReport rep2;
  auto real = convert_preferences(PreferenceFormat::kOasstRanked, sample, OnInvalid::kError, &rep2);
  EXPECT_GT(real.size(), 100u);
  for (const auto& g : real) {
    PreferenceGroup again;
    ASSERT_FALSE(parse_preference_line(preference_to_json_line(g), again)) << g.source;
    EXPECT_EQ(again.pairs.size(), g.pairs.size());
  }
}

TEST(PrefsCli, ConvertThenCheck) {
  TempDir dir;
  nlohmann::json rec;
  rec["chosen"] = "\n\nHuman: Hi\n\nAssistant: Hello there";
  rec["rejected"] = "\n\nHuman: Hi\n\nAssistant: Go away";
  nlohmann::json same;
  same["chosen"] = same["rejected"] = "\n\nHuman: Hi\n\nAssistant: Hello";
  auto in = write(dir, "hh.jsonl", rec.dump() + "\n" + same.dump() + "\n");
  auto out = dir.path() / "p.jsonl";
  std::string log;
  std::string bin = AJI_BINARY;
  EXPECT_EQ(aji::test::run_command(bin + " prefs convert --format hh-rlhf " + in.string() + " --out " + out.string() + " 2>&1", &log), 1)
      << log;
  EXPECT_NE(log.find(in.string() + ":2"), std::string::npos) << log;
  EXPECT_FALSE(fs::exists(out));
  ASSERT_EQ(aji::test::run_command(bin + " prefs convert --format hh-rlhf " + in.string() + " --skip-invalid --out " +
                                       out.string() + " 2>&1",
                                   &log),
            0)
      << log;
  EXPECT_NE(log.find("chosen_equals_rejected 1"), std::string::npos) << log;
  ASSERT_EQ(aji::test::run_command(bin + " prefs check " + out.string() + " 2>&1", &log), 0) << log;
  EXPECT_NE(log.find("1 groups (0 rankings), 1 pairs"), std::string::npos) << log;
  EXPECT_EQ(aji::test::run_command(bin + " prefs convert --format nope " + in.string() + " --out " + out.string() + " 2>&1", &log), 1);
  EXPECT_NE(log.find("hh-rlhf, oasst-ranked"), std::string::npos) << log;
}

// The bundled HH-RLHF sample through the chat template: each side's prompt + completion is
// its full rendering, and the --max-tokens filter drops exactly the responses whose full
// rendering is longer than the limit (computed here from the full renderings).
TEST(Preferences, BundledHhSampleRendersAndFiltersByLength) {
  const auto& tok = chat_tokenizer();
  InputReport rep;
  auto groups = read_preferences(source_path("data/prefs/hh_rlhf_sample.jsonl"), OnInvalid::kError, &rep);
  ASSERT_EQ(groups.size(), 300u);
  const int64_t limit = 256;
  int64_t want_dropped = 0, want_pairs = 0, want_groups = 0;
  for (const auto& g : groups) {
    bool ok[2];
    for (int k = 0; k < 2; ++k) {
      Conversation c;
      c.messages = g.prompt;
      c.messages.insert(c.messages.end(), g.responses[k].begin(), g.responses[k].end());
      ok[k] = static_cast<int64_t>(render_conversation(tok, c).ids.size()) <= limit;
      want_dropped += !ok[k];
    }
    want_pairs += ok[0] && ok[1];
    want_groups += ok[0] && ok[1];
  }
  PreferenceRenderReport rr;
  InputReport skips;
  auto rendered = render_preferences(tok, groups, limit, "hh", &skips, &rr);
  EXPECT_EQ(rr.responses_dropped, want_dropped);
  EXPECT_EQ(rr.pairs_kept, want_pairs);
  EXPECT_EQ(static_cast<int64_t>(rendered.size()), want_groups);
  EXPECT_EQ(skips.skipped_count(), 300 - want_groups);
  EXPECT_GT(want_dropped, 0) << "the limit should bite on this sample";
  EXPECT_GT(want_groups, 100);
  for (const auto& r : rendered)
    for (const auto& c : r.completion_ids) {
      EXPECT_LE(static_cast<int64_t>(r.prompt_ids.size() + c.size()), limit);
      EXPECT_EQ(c[c.size() - 2], 100265u) << "a completion ends with <|im_end|> and a newline";
    }
}
