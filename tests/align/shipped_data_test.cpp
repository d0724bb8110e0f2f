// The data shipped in the repo for the SFT and classification demos is valid and as
// documented in its LICENSE-NOTE.txt.
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "aji/align/classify_data.h"
#include "aji/align/conversation.h"
#include "test_util.h"

using namespace aji::align;
using aji::test::source_path;

TEST(ShippedData, SftSetIsValidMixedAndSplitWithoutOverlap) {
  InputReport train_rep, val_rep;
  auto train = read_conversations(source_path("data/sft/train.jsonl"), OnInvalid::kError, &train_rep);
  auto val = read_conversations(source_path("data/sft/val.jsonl"), OnInvalid::kError, &val_rep);
  EXPECT_EQ(train.size(), 2707u);
  EXPECT_EQ(val.size(), 142u);
  std::set<std::string> train_sources;
  std::map<std::string, int> by_origin;
  int korean = 0;
  for (const auto& c : train) {
    ASSERT_FALSE(c.source.empty());
    train_sources.insert(c.source);
    ++by_origin[c.source.substr(0, c.source.find(':'))];
    // Hangul syllables are U+AC00..U+D7A3, i.e. UTF-8 lead bytes 0xEA..0xED.
    for (unsigned char ch : c.messages[0].content)
      if (ch >= 0xEA && ch <= 0xED) {
        ++korean;
        break;
      }
  }
  EXPECT_EQ(train_sources.size(), train.size()) << "a conversation appears twice";
  for (const auto& c : val) EXPECT_EQ(train_sources.count(c.source), 0u) << c.source << " is in train and val";
  for (const char* origin : {"korean_chatbot", "oasst", "self_instruct_seed", "self_instruct_user", "gsm8k_train", "identity"})
    EXPECT_GT(by_origin[origin], 0) << origin;
  EXPECT_GT(korean, 1000);
  EXPECT_LT(korean, 1800);
  EXPECT_GT(conversation_stats(train).multi_turn, 30);
}

TEST(ShippedData, SmsSpamHasTheOfficialCounts) {
  auto ex = read_labeled(source_path("data/classify/sms_spam.tsv"), {}, nullptr);
  ASSERT_EQ(ex.size(), 5574u);
  auto labels = LabelSet::from_examples(ex);
  EXPECT_EQ(labels.names, (std::vector<std::string>{"ham", "spam"}));
  int spam = 0;
  for (const auto& e : ex) spam += e.label == "spam";
  EXPECT_EQ(spam, 747);
}
