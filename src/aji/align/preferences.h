// Preference data for reward models and DPO, in TRL's conversational form, one record a line:
//
//   pair     {"prompt":[messages], "chosen":[assistant message(s)], "rejected":[assistant message(s)]}
//   ranking  {"prompt":[messages], "responses":[[messages],...], "ranking":[indices, best first]}
//
// "prompt" is a conversation that ends with a user turn (optional system message first,
// user/assistant alternating); every response continues it: an assistant message, or
// several turns assistant, user, ..., assistant (ending with the assistant). Other keys
// ("source") are kept as metadata.
//
// A record is one PreferenceGroup: a prompt, its responses and the ordered pairs (better,
// worse) between them. A pair record gives two responses and one pair. A K-way ranking
// expands into every ordered pair (InstructGPT §3.5): K responses in K distinct ranks give
// K(K-1)/2 pairs. An element of "ranking" may itself be a list of indices of EQUAL rank
// (a tie): [2, [0, 3], 1] says 2 beats 0 and 3, which beat 1; tied responses produce no
// pair between them ("ties produce no pair"). Every response must appear in the ranking
// exactly once. The group is kept whole so a reward model trains one prompt = one batch
// element with all its pairs (K forwards, not 2·C(K,2)).
//
// Invalid records are an aji::Error naming file:line with the fix, or a counted skip
// under OnInvalid::kSkip (input_report.h): malformed JSON, a missing field, a wrong role
// (prompt not ending with user, a response not starting/ending with assistant, turns not
// alternating), empty content, chosen equal to rejected (or two identical responses
// ranked differently), fewer than two responses, a duplicate or out-of-range index in
// "ranking", an unranked response, and a ranking whose responses are all tied (no pair).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "aji/align/conversation.h"
#include "aji/align/input_report.h"
#include "aji/tokenizer/tokenizer.h"

namespace aji::align {

struct PreferencePair {
  int32_t better = 0;  // index into PreferenceGroup::responses
  int32_t worse = 0;
};

struct PreferenceGroup {
  std::vector<Message> prompt;                  // ends with a user turn
  std::vector<std::vector<Message>> responses;  // each starts and ends with an assistant turn
  std::vector<PreferencePair> pairs;            // every ordered pair, better first
  std::string source;
  int64_t line = 0;  // line in the file it was read from (0 when built in memory)
  bool ranked = false;  // read from a "responses"/"ranking" record (written back that way)
  // The ranking as tiers, best first (each tier = responses of equal rank). For a pair
  // record: {{0}, {1}}.
  std::vector<std::vector<int32_t>> tiers;
};

// Validates a group whose prompt, responses and tiers are filled (converters build groups
// this way) and fills its pairs: the same rules as the reader. Response names in the
// details are "chosen"/"rejected" for a two-response unranked group, else "response K".
std::optional<RuleViolation> finish_preference_group(PreferenceGroup& group);

// Parses one JSONL line into a validated group; on failure returns the violation.
std::optional<RuleViolation> parse_preference_line(std::string_view line, PreferenceGroup& out);

// The pairs of a ranking given as tiers (best first): every response of a better tier
// against every response of a worse one, in tier order. Exposed for tests.
std::vector<PreferencePair> expand_ranking(const std::vector<std::vector<int32_t>>& tiers);

// Reads a preference JSONL file (.gz/.zst ok). Every invalid line throws an aji::Error
// naming file:line (kError) or becomes a counted skip in report (kSkip).
std::vector<PreferenceGroup> read_preferences(const std::filesystem::path& path, OnInvalid policy,
                                              InputReport* report);

// One JSONL line: a pair record when the group has two responses and was not read as a
// ranking, else a ranking record (ties written as lists).
std::string preference_to_json_line(const PreferenceGroup& group);
void write_preferences(const std::filesystem::path& path, const std::vector<PreferenceGroup>& groups);

struct PreferenceStats {
  int64_t groups = 0, pairs = 0, responses = 0, ranked_groups = 0, multi_turn_prompts = 0;
  int64_t max_responses = 0;
  std::string describe() const;
};
PreferenceStats preference_stats(const std::vector<PreferenceGroup>& groups);

// ---- Rendering for the reward model and DPO -------------------------------------------
//
// Through the one chat template (render.h): prompt_ids is the prompt rendered as a
// generation prompt (it ends with "<|im_start|>assistant\n"), and completion_ids[k] is the
// rest of render(prompt + responses[k]): the reply tokens and <|im_end|>\n (for a
// multi-turn response, the later turns too). prompt_ids + completion_ids[k] is exactly the
// rendering of the whole conversation, so the reward is read at its last token as in
// training (§3 of the post-training spec) and DPO sums log-probs over completion_ids only.
//
// Lengths: a response whose prompt + completion is longer than max_tokens is dropped with
// the pairs it is in ("pairs with a longer side are filtered out, not truncated" — TRL);
// a group left with no pair is a counted skip (kind "too_long", file:line) in the report.
struct RenderedPreference {
  std::vector<uint32_t> prompt_ids;
  std::vector<std::vector<uint32_t>> completion_ids;  // kept responses only
  std::vector<PreferencePair> pairs;                  // indices into completion_ids
  std::string source;
  int64_t line = 0;
};

struct PreferenceRenderReport {
  int64_t groups_in = 0, groups_kept = 0;
  int64_t pairs_in = 0, pairs_kept = 0;
  int64_t responses_dropped = 0;  // longer than max_tokens with the prompt
  int64_t longest = 0;            // longest prompt + completion seen, in tokens
  std::string describe() const;
};

// file names the input in the skip records; skips is best the report the groups were read
// into (a too-long group then moves from kept to skipped). max_tokens <= 0 keeps every length.
std::vector<RenderedPreference> render_preferences(const tokenizer::Tokenizer& tok,
                                                   const std::vector<PreferenceGroup>& groups, int64_t max_tokens,
                                                   const std::string& file, InputReport* skips,
                                                   PreferenceRenderReport* report);

// What DPO consumes: one {prompt, chosen, rejected} per pair, in group order.
struct PreferencePairIds {
  const std::vector<uint32_t>* prompt_ids = nullptr;
  const std::vector<uint32_t>* chosen_ids = nullptr;
  const std::vector<uint32_t>* rejected_ids = nullptr;
  int32_t group = 0;  // index into the rendered vector
};
std::vector<PreferencePairIds> flatten_pairs(const std::vector<RenderedPreference>& rendered);

}  // namespace aji::align
