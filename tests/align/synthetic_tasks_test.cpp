#include <gtest/gtest.h>

#include <set>

#include "aji/align/synthetic_tasks.h"
#include "aji/base/error.h"

using namespace aji::align;
using namespace aji::align::toy;

TEST(ToyTasks, VocabularyMatchesTheSpec) {
  // §8.0: <pad>=0 <bos>=1 <u>=2 </u>=3 <a>=4 </a>=5, then "0123456789+=?;ab" as ids 6..21.
  EXPECT_EQ(char_id('0'), 6u);
  EXPECT_EQ(char_id('9'), 15u);
  EXPECT_EQ(char_id('+'), 16u);
  EXPECT_EQ(char_id('='), 17u);
  EXPECT_EQ(char_id('?'), 18u);
  EXPECT_EQ(char_id(';'), 19u);
  EXPECT_EQ(char_id('b'), 21u);
  EXPECT_EQ(kVocabSize, 22);
  EXPECT_THROW(char_id('c'), aji::Error);
  EXPECT_EQ(decode({kBos, kUserStart, 7, 16, 8, 17, kUserEnd, kAssistantStart, 9, kAssistantEnd, kPad}),
            "<bos><u>1+2=</u><a>3</a><pad>");
}

TEST(ToyTasks, PretrainRowsAreEquationStreams) {
  aji::Rng rng(1);
  auto row = pretrain_row(rng, 49);
  ASSERT_EQ(row.size(), 49u);
  EXPECT_EQ(row[0], kBos);
  std::string text = decode(std::vector<uint32_t>(row.begin() + 1, row.end()));
  // Every complete equation in the row is correct and unpadded.
  size_t start = 0;
  int complete = 0;
  for (size_t semi = text.find(';'); semi != std::string::npos; semi = text.find(';', start)) {
    std::string eq = text.substr(start, semi - start);
    int a, b, c;
    ASSERT_EQ(std::sscanf(eq.c_str(), "%d+%d=%d", &a, &b, &c), 3) << eq;
    EXPECT_EQ(a + b, c);
    EXPECT_EQ(equation(a, b), eq + ";");
    ++complete;
    start = semi + 1;
  }
  EXPECT_GE(complete, 3);
  aji::Rng again(1);
  EXPECT_EQ(pretrain_row(again, 49), row);
}

TEST(ToyTasks, HeldOutSplitIsTenPercentAndNeverInTraining) {
  int held = 0;
  for (int a = 0; a < 100; ++a)
    for (int b = 0; b < 100; ++b) held += is_heldout(a, b);
  EXPECT_EQ(held, 1000);
  aji::Rng rng(3);
  for (int i = 0; i < 5000; ++i) {
    auto [a, b] = sample_training_pair(rng);
    ASSERT_FALSE(is_heldout(a, b));
  }
  auto pairs = heldout_pairs(300, 9);
  std::set<std::pair<int, int>> distinct(pairs.begin(), pairs.end());
  EXPECT_EQ(distinct.size(), 300u);
  for (auto [a, b] : pairs) EXPECT_TRUE(is_heldout(a, b));
  EXPECT_EQ(heldout_pairs(300, 9), pairs);
  EXPECT_THROW(heldout_pairs(1001, 9), aji::Error);
}

TEST(ToyTasks, SftMixtureProportions) {
  aji::Rng rng(7);
  int counts[3] = {0, 0, 0};
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    auto c = sample_sft_conversation(rng);
    ++counts[static_cast<int>(c.kind)];
    for (const auto& t : c.turns) {
      int a, b, x;
      if (c.kind == ToyTaskKind::kPickNumber) {
        ASSERT_EQ(std::sscanf(t.user.c_str(), "%d?", &x), 1);
        int y = std::stoi(t.reply);
        ASSERT_TRUE(x >= 10 && x <= 99 && y >= 10 && y <= 99);
      } else {
        ASSERT_EQ(std::sscanf(t.user.c_str(), "%d+%d=", &a, &b), 2);
        ASSERT_EQ(std::stoi(t.reply), a + b);
        ASSERT_FALSE(is_heldout(a, b));
      }
    }
    ASSERT_EQ(c.turns.size(), c.kind == ToyTaskKind::kAdditionTwoTurn ? 2u : 1u);
  }
  EXPECT_NEAR(counts[0] / double(n), 0.50, 0.02);
  EXPECT_NEAR(counts[1] / double(n), 0.35, 0.02);
  EXPECT_NEAR(counts[2] / double(n), 0.15, 0.02);
}

// Unit check 1: supervised ids are exactly reply1 + </a> + reply2 + </a>; mask transitions
// 0→1→0→1; <bos> mask 0.
TEST(ToyTasks, RenderMasksExactlyTheRepliesAndEndOfTurn) {
  ToyConversation c;
  c.turns = {addition_turn(12, 34), addition_turn(5, 7)};
  auto r = render(c);
  ASSERT_EQ(r.ids.size(), r.loss_mask.size());
  EXPECT_EQ(decode(r.ids), "<bos><u>12+34=</u><a>46</a><u>5+7=</u><a>12</a>");
  std::vector<uint32_t> supervised;
  int transitions = 0;
  for (size_t i = 0; i < r.ids.size(); ++i) {
    if (r.loss_mask[i]) supervised.push_back(r.ids[i]);
    if (i > 0 && r.loss_mask[i] != r.loss_mask[i - 1]) ++transitions;
  }
  EXPECT_EQ(decode(supervised), "46</a>12</a>");
  EXPECT_EQ(transitions, 3);  // 0→1, 1→0, 0→1, then 1 to the end
  EXPECT_EQ(r.loss_mask[0], 0);
  EXPECT_EQ(r.loss_mask.back(), 1);
  // Negative control (i): </a> unsupervised.
  auto no_stop = render(c, /*mask_end_of_turn=*/false);
  std::vector<uint32_t> sup2;
  for (size_t i = 0; i < no_stop.ids.size(); ++i)
    if (no_stop.loss_mask[i]) sup2.push_back(no_stop.ids[i]);
  EXPECT_EQ(decode(sup2), "4612");
}

// Unit check 2: the completion prompt is a strict prefix of the full rendering and ends
// with the assistant-start token.
TEST(ToyTasks, PromptIsPrefixOfRendering) {
  ToyConversation c;
  c.turns = {addition_turn(1, 2), addition_turn(30, 40)};
  auto full = render(c).ids;
  auto prompt = render_prompt({c.turns[0]}, c.turns[1].user);
  ASSERT_LT(prompt.size(), full.size());
  EXPECT_TRUE(std::equal(prompt.begin(), prompt.end(), full.begin()));
  EXPECT_EQ(prompt.back(), kAssistantStart);
  EXPECT_EQ(decode(render_prompt({}, "3+4=")), "<bos><u>3+4=</u><a>");
}

TEST(ToyTasks, ReadReplyFindsStop) {
  auto r = read_reply({char_id('4'), char_id('6'), kAssistantEnd, char_id('1')});
  EXPECT_EQ(r.reply, "46");
  EXPECT_TRUE(r.stopped);
  auto runaway = read_reply(encode("1234567"));
  EXPECT_FALSE(runaway.stopped);
  std::vector<uint32_t> late = encode("123456");
  late.push_back(kAssistantEnd);
  EXPECT_FALSE(read_reply(late, 5).stopped);  // </a> after more than 5 reply tokens
}

TEST(ToyTasks, ClassificationLabelsAreBalancedAndCorrect) {
  aji::Rng rng(4);
  int pos = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    auto ex = sample_classification(rng);
    ASSERT_EQ(ex.label, ex.a + ex.b >= 100 ? 1 : 0);
    ASSERT_EQ(ex.ids[0], kBos);
    ASSERT_EQ(ex.ids.back(), char_id('='));
    pos += ex.label;
  }
  EXPECT_NEAR(pos / double(n), 0.495, 0.015);
}

// Unit check 29 (few-shot sampling deterministic and never includes the evaluated item)
// and the shape of experiment G's items.
TEST(ToyTasks, MultipleChoiceItems) {
  for (int idx = 0; idx < 300; ++idx) {
    auto item = make_mc_item(idx, 3, 42);
    ASSERT_EQ(item.choices.size(), 4u);
    std::set<std::string> values;
    for (const auto& c : item.choices) {
      std::string s = decode(c);
      ASSERT_EQ(s.back(), ';');
      int v = std::stoi(s.substr(0, s.size() - 1));
      ASSERT_GE(v, 0);
      ASSERT_LE(std::abs(v - (item.a + item.b)), 12);
      values.insert(s);
    }
    ASSERT_EQ(values.size(), 4u) << "distractors must be distinct";
    ASSERT_EQ(decode(item.choices[item.gold]), std::to_string(item.a + item.b) + ";");
    std::string ctx = decode(item.context);
    std::string query = std::to_string(item.a) + "+" + std::to_string(item.b) + "=";
    ASSERT_EQ(ctx.substr(ctx.size() - query.size()), query);
    ASSERT_EQ(std::count(ctx.begin(), ctx.end(), ';'), 3);
    // The shots never show the evaluated item.
    ASSERT_EQ(ctx.rfind("<bos>", 0), 0u);
    std::string shots = ctx.substr(5, ctx.size() - 5 - query.size());
    for (size_t s = 0, e; (e = shots.find(';', s)) != std::string::npos; s = e + 1)
      ASSERT_NE(shots.substr(s, e - s + 1), equation(item.a, item.b));
    auto again = make_mc_item(idx, 3, 42);
    ASSERT_EQ(again.context, item.context);
    ASSERT_EQ(again.gold, item.gold);
  }
  auto zero_shot = make_mc_item(5, 0, 42);
  EXPECT_EQ(decode(zero_shot.context), "<bos>" + std::to_string(zero_shot.a) + "+" + std::to_string(zero_shot.b) + "=");
  // Gold positions are spread over the four slots.
  int at[4] = {0, 0, 0, 0};
  for (int idx = 0; idx < 400; ++idx) ++at[make_mc_item(idx, 0, 1).gold];
  for (int k = 0; k < 4; ++k) EXPECT_GT(at[k], 60);
}
