#include "aji/align/preferences.h"

#include <algorithm>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "aji/align/render.h"
#include "aji/align/records.h"
#include "aji/base/atomic_file.h"
#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/tokenizer/chat_template.h"

namespace aji::align {

namespace {

using json = nlohmann::json;


bool same_messages(const std::vector<Message>& a, const std::vector<Message>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].role != b[i].role || a[i].content != b[i].content) return false;
  return true;
}

// A response continues the prompt: starts and ends with an assistant turn, and prompt +
// response is a valid conversation.
std::optional<RuleViolation> check_response(const std::vector<Message>& prompt, const std::vector<Message>& resp,
                                            const std::string& name) {
  if (resp.empty()) return RuleViolation{"empty_response", name + " has no messages"};
  if (resp.front().role != Role::kAssistant)
    return RuleViolation{"wrong_role", name + " starts with a '" + role_name(resp.front().role) +
                                           "' message; a response starts with the assistant's reply"};
  if (resp.back().role != Role::kAssistant)
    return RuleViolation{"wrong_role", name + " ends with a '" + role_name(resp.back().role) +
                                           "' message; a response ends with an assistant reply"};
  Conversation conv;
  conv.messages = prompt;
  conv.messages.insert(conv.messages.end(), resp.begin(), resp.end());
  if (auto bad = check_conversation(conv)) {
    bad->detail = "prompt + " + name + ": " + bad->detail;
    return bad;
  }
  return std::nullopt;
}

std::optional<RuleViolation> check_prompt(const std::vector<Message>& prompt) {
  if (prompt.empty()) return RuleViolation{"missing_field", "\"prompt\" has no messages"};
  if (prompt.back().role != Role::kUser)
    return RuleViolation{"wrong_role", "the prompt ends with a '" + std::string(role_name(prompt.back().role)) +
                                           "' message; it must end with the user turn the responses answer"};
  Conversation conv;
  conv.messages = prompt;
  if (auto bad = check_conversation(conv, ConversationRules{false}); bad && bad->kind != "no_assistant") {
    bad->detail = "prompt: " + bad->detail;
    return bad;
  }
  return std::nullopt;
}

// One tier: an index or a list of indices.
std::optional<RuleViolation> parse_tiers(const json& ranking, size_t n, std::vector<std::vector<int32_t>>& tiers) {
  if (!ranking.is_array() || ranking.empty())
    return RuleViolation{"malformed_json", "\"ranking\" is not a non-empty array of response indices"};
  std::vector<int> seen(n, 0);
  auto take = [&](const json& v, std::vector<int32_t>& tier) -> std::optional<RuleViolation> {
    if (!v.is_number_integer())
      return RuleViolation{"malformed_json", "\"ranking\" holds " + std::string(v.type_name()) +
                                                 " where a response index (an integer) or a list of tied indices "
                                                 "was expected"};
    int64_t i = v.get<int64_t>();
    if (i < 0 || static_cast<uint64_t>(i) >= n)
      return RuleViolation{"ranking_out_of_range", "\"ranking\" names response " + std::to_string(i) +
                                                       " but there are " + std::to_string(n) +
                                                       " responses (indices 0.." + std::to_string(n - 1) + ")"};
    if (seen[i]++)
      return RuleViolation{"ranking_duplicate", "\"ranking\" names response " + std::to_string(i) + " twice"};
    tier.push_back(static_cast<int32_t>(i));
    return std::nullopt;
  };
  for (const auto& el : ranking) {
    std::vector<int32_t> tier;
    if (el.is_array()) {
      if (el.empty()) return RuleViolation{"malformed_json", "\"ranking\" holds an empty list of tied indices"};
      for (const auto& v : el)
        if (auto bad = take(v, tier)) return bad;
    } else if (auto bad = take(el, tier)) {
      return bad;
    }
    tiers.push_back(std::move(tier));
  }
  for (size_t i = 0; i < n; ++i)
    if (!seen[i])
      return RuleViolation{"ranking_incomplete", "response " + std::to_string(i) + " is not in \"ranking\"; "
                                                 "every response must be ranked (tied ones in a list)"};
  if (tiers.size() < 2)
    return RuleViolation{"ranking_no_pairs", "every response is tied, so the ranking gives no pair to learn from"};
  return std::nullopt;
}

}  // namespace

std::vector<PreferencePair> expand_ranking(const std::vector<std::vector<int32_t>>& tiers) {
  std::vector<PreferencePair> pairs;
  for (size_t a = 0; a < tiers.size(); ++a)
    for (size_t b = a + 1; b < tiers.size(); ++b)
      for (int32_t w : tiers[a])
        for (int32_t l : tiers[b]) pairs.push_back({w, l});
  return pairs;
}

std::optional<RuleViolation> parse_preference_line(std::string_view line, PreferenceGroup& out) {
  out = PreferenceGroup{};
  json j;
  try {
    j = json::parse(line.begin(), line.end());
  } catch (const json::exception& e) {
    return RuleViolation{"malformed_json", std::string("malformed JSON: ") + e.what()};
  }
  if (!j.is_object()) return RuleViolation{"malformed_json", "the line is JSON but not an object"};
  auto p = j.find("prompt");
  if (p == j.end()) return RuleViolation{"missing_field", "the record has no \"prompt\" field"};
  if (auto bad = parse_messages(*p, out.prompt, "prompt")) return bad;
  if (auto s = j.find("source"); s != j.end() && s->is_string()) out.source = s->get<std::string>();

  const bool pair_form = j.contains("chosen") || j.contains("rejected");
  const bool rank_form = j.contains("responses") || j.contains("ranking");
  if (pair_form && rank_form)
    return RuleViolation{"malformed_json",
                         "the record mixes the pair form (\"chosen\"/\"rejected\") and the ranking form "
                         "(\"responses\"/\"ranking\")"};
  if (!pair_form && !rank_form)
    return RuleViolation{"missing_field", "the record has neither \"chosen\"/\"rejected\" nor \"responses\"/\"ranking\""};
  if (pair_form) {
    for (const char* key : {"chosen", "rejected"}) {
      auto it = j.find(key);
      if (it == j.end()) return RuleViolation{"missing_field", std::string("the record has no \"") + key + "\" field"};
      std::vector<Message> resp;
      if (auto bad = parse_messages(*it, resp, key)) {
        bad->detail = std::string(key) + ": " + bad->detail;
        return bad;
      }
      out.responses.push_back(std::move(resp));
    }
    out.tiers = {{0}, {1}};
  } else {
    auto r = j.find("responses");
    if (r == j.end()) return RuleViolation{"missing_field", "the record has \"ranking\" but no \"responses\""};
    auto rk = j.find("ranking");
    if (rk == j.end()) return RuleViolation{"missing_field", "the record has \"responses\" but no \"ranking\""};
    if (!r->is_array()) return RuleViolation{"malformed_json", "\"responses\" is not an array of responses"};
    if (r->size() < 2)
      return RuleViolation{"too_few_responses", "\"responses\" has " + std::to_string(r->size()) +
                                                    " response(s); a ranking needs at least two"};
    for (size_t k = 0; k < r->size(); ++k) {
      std::string name = "response " + std::to_string(k);
      std::vector<Message> resp;
      if (auto bad = parse_messages((*r)[k], resp, name)) {
        bad->detail = name + ": " + bad->detail;
        return bad;
      }
      out.responses.push_back(std::move(resp));
    }
    if (auto bad = parse_tiers(*rk, out.responses.size(), out.tiers)) return bad;
    out.ranked = true;
  }
  return finish_preference_group(out);
}

std::optional<RuleViolation> finish_preference_group(PreferenceGroup& g) {
  if (auto bad = check_prompt(g.prompt)) return bad;
  const bool pair_form = !g.ranked && g.responses.size() == 2;
  if (g.responses.size() < 2)
    return RuleViolation{"too_few_responses", "the record has " + std::to_string(g.responses.size()) +
                                                  " response(s); a preference needs at least two"};
  for (size_t k = 0; k < g.responses.size(); ++k) {
    std::string name = pair_form ? (k == 0 ? "chosen" : "rejected") : "response " + std::to_string(k);
    if (auto bad = check_response(g.prompt, g.responses[k], name)) return bad;
  }
  // The tiers must rank every response exactly once (the reader checks this with its own
  // messages; built groups are checked here).
  std::vector<int> seen(g.responses.size(), 0);
  for (const auto& tier : g.tiers)
    for (int32_t i : tier)
      if (i < 0 || static_cast<size_t>(i) >= g.responses.size() || seen[i]++)
        return RuleViolation{"ranking_duplicate", "the ranking names a response twice or out of range"};
  for (size_t i = 0; i < seen.size(); ++i)
    if (!seen[i]) return RuleViolation{"ranking_incomplete", "response " + std::to_string(i) + " is not ranked"};
  if (g.tiers.size() < 2)
    return RuleViolation{"ranking_no_pairs", "every response is tied, so the ranking gives no pair to learn from"};
  g.pairs = expand_ranking(g.tiers);
  for (const auto& pr : g.pairs)
    if (same_messages(g.responses[pr.better], g.responses[pr.worse]))
      return RuleViolation{"chosen_equals_rejected",
                           pair_form ? std::string("\"chosen\" equals \"rejected\", so the pair teaches nothing")
                                     : "responses " + std::to_string(pr.better) + " and " + std::to_string(pr.worse) +
                                           " are identical but ranked differently"};
  return std::nullopt;
}

std::vector<PreferenceGroup> read_preferences(const std::filesystem::path& path, OnInvalid policy,
                                              InputReport* report) {
  InputReport local;
  InputReport& rep = report ? *report : local;
  std::vector<PreferenceGroup> out;
  const std::string fix =
      "each line is {\"prompt\":[messages ending with a user turn],\"chosen\":[{\"role\":\"assistant\","
      "\"content\":\"...\"}],\"rejected\":[...]} or {\"prompt\":[...],\"responses\":[[...],[...],...],"
      "\"ranking\":[indices best first, tied ones in a list]}";
  for_each_record(path, policy, rep, fix, [&](std::string_view line, int64_t line_number) {
    PreferenceGroup g;
    std::optional<RuleViolation> bad = parse_preference_line(line, g);
    if (!bad) {
      g.line = line_number;
      out.push_back(std::move(g));
    }
    return bad;
  });
  return out;
}

namespace {
nlohmann::ordered_json messages_json(const std::vector<Message>& msgs) {
  nlohmann::ordered_json a = nlohmann::ordered_json::array();
  for (const auto& m : msgs) {
    nlohmann::ordered_json o;
    o["role"] = role_name(m.role);
    o["content"] = m.content;
    a.push_back(std::move(o));
  }
  return a;
}
}  // namespace

std::string preference_to_json_line(const PreferenceGroup& g) {
  nlohmann::ordered_json j;
  j["prompt"] = messages_json(g.prompt);
  bool as_pair = !g.ranked && g.responses.size() == 2 && g.pairs.size() == 1;
  if (as_pair) {
    j["chosen"] = messages_json(g.responses[g.pairs[0].better]);
    j["rejected"] = messages_json(g.responses[g.pairs[0].worse]);
  } else {
    nlohmann::ordered_json rs = nlohmann::ordered_json::array();
    for (const auto& r : g.responses) rs.push_back(messages_json(r));
    j["responses"] = std::move(rs);
    nlohmann::ordered_json rk = nlohmann::ordered_json::array();
    for (const auto& tier : g.tiers) {
      if (tier.size() == 1) rk.push_back(tier[0]);
      else rk.push_back(tier);
    }
    j["ranking"] = std::move(rk);
  }
  if (!g.source.empty()) j["source"] = g.source;
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::strict);
}

void write_preferences(const std::filesystem::path& path, const std::vector<PreferenceGroup>& groups) {
  AtomicFileWriter w(path);
  for (const auto& g : groups) {
    w.write(preference_to_json_line(g));
    w.write("\n");
  }
  w.commit();
}

std::string PreferenceStats::describe() const {
  char buf[320];
  std::snprintf(buf, sizeof buf,
                "%lld groups (%lld rankings), %lld pairs, %lld responses (at most %lld per prompt), "
                "%lld multi-turn prompts",
                (long long)groups, (long long)ranked_groups, (long long)pairs, (long long)responses,
                (long long)max_responses, (long long)multi_turn_prompts);
  return buf;
}

PreferenceStats preference_stats(const std::vector<PreferenceGroup>& groups) {
  PreferenceStats s;
  for (const auto& g : groups) {
    ++s.groups;
    s.ranked_groups += g.ranked;
    s.pairs += static_cast<int64_t>(g.pairs.size());
    s.responses += static_cast<int64_t>(g.responses.size());
    s.max_responses = std::max<int64_t>(s.max_responses, static_cast<int64_t>(g.responses.size()));
    int users = 0;
    for (const auto& m : g.prompt) users += m.role == Role::kUser;
    s.multi_turn_prompts += users >= 2;
  }
  return s;
}

std::string PreferenceRenderReport::describe() const {
  char buf[320];
  std::snprintf(buf, sizeof buf,
                "groups %lld -> %lld, pairs %lld -> %lld, %lld response(s) longer than the context dropped, "
                "longest %lld tokens",
                (long long)groups_in, (long long)groups_kept, (long long)pairs_in, (long long)pairs_kept,
                (long long)responses_dropped, (long long)longest);
  return buf;
}

std::vector<RenderedPreference> render_preferences(const tokenizer::Tokenizer& tok,
                                                   const std::vector<PreferenceGroup>& groups, int64_t max_tokens,
                                                   const std::string& file, InputReport* skips,
                                                   PreferenceRenderReport* report) {
  require_chat_tokens(tok);
  PreferenceRenderReport local;
  PreferenceRenderReport& rep = report ? *report : local;
  std::vector<RenderedPreference> out;
  for (const auto& g : groups) {
    ++rep.groups_in;
    rep.pairs_in += static_cast<int64_t>(g.pairs.size());
    RenderedPreference r;
    r.prompt_ids = render_generation_prompt(tok, g.prompt);
    r.source = g.source;
    r.line = g.line;
    std::vector<int32_t> new_index(g.responses.size(), -1);
    for (size_t k = 0; k < g.responses.size(); ++k) {
      Conversation conv;
      conv.messages = g.prompt;
      conv.messages.insert(conv.messages.end(), g.responses[k].begin(), g.responses[k].end());
      RenderedSequence full = render_conversation(tok, conv);
      AJI_CHECK(full.ids.size() > r.prompt_ids.size() &&
                    std::equal(r.prompt_ids.begin(), r.prompt_ids.end(), full.ids.begin()),
                "the generation prompt is not a prefix of the rendered conversation");
      rep.longest = std::max<int64_t>(rep.longest, static_cast<int64_t>(full.ids.size()));
      if (max_tokens > 0 && static_cast<int64_t>(full.ids.size()) > max_tokens) {
        ++rep.responses_dropped;
        continue;
      }
      new_index[k] = static_cast<int32_t>(r.completion_ids.size());
      r.completion_ids.emplace_back(full.ids.begin() + static_cast<std::ptrdiff_t>(r.prompt_ids.size()),
                                    full.ids.end());
    }
    for (const auto& pr : g.pairs)
      if (new_index[pr.better] >= 0 && new_index[pr.worse] >= 0)
        r.pairs.push_back({new_index[pr.better], new_index[pr.worse]});
    if (r.pairs.empty()) {
      if (skips) {
        // A counted skip, never an error: long examples are filtered, as TRL does.
        skips->skipped.push_back({file, g.line, "too_long",
                                  "every pair has a side longer than " + std::to_string(max_tokens) +
                                      " tokens (prompt + response)"});
        ++skips->skipped_by_kind["too_long"];
        if (skips->records_kept > 0) --skips->records_kept;
      }
      continue;
    }
    rep.pairs_kept += static_cast<int64_t>(r.pairs.size());
    ++rep.groups_kept;
    out.push_back(std::move(r));
  }
  return out;
}

std::vector<PreferencePairIds> flatten_pairs(const std::vector<RenderedPreference>& rendered) {
  std::vector<PreferencePairIds> out;
  for (size_t gi = 0; gi < rendered.size(); ++gi) {
    const auto& r = rendered[gi];
    for (const auto& pr : r.pairs)
      out.push_back({&r.prompt_ids, &r.completion_ids[pr.better], &r.completion_ids[pr.worse],
                     static_cast<int32_t>(gi)});
  }
  return out;
}

}  // namespace aji::align
