#include "aji/model/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <limits>

#include <nlohmann/json.hpp>

#include "aji/base/atomic_file.h"
#include "aji/base/error.h"
#include "test_util.h"

using aji::model::Arch;
using aji::model::ModelConfig;
using nlohmann::json;

namespace {

std::string error_of(const json& j) {
  try {
    ModelConfig::from_json(j);
  } catch (const aji::Error& e) {
    return e.describe();
  }
  return "";
}

TEST(ModelConfig, PresetsLoadAndValidate) {
  for (const char* name : {"tiny", "tiny-gpt2", "gpt2-124m", "llama-small"}) {
    ModelConfig c = ModelConfig::load(aji::test::source_path(std::string("configs/") + name + ".json"));
    EXPECT_NO_THROW(c.validate()) << name;
  }
  ModelConfig g = ModelConfig::load(aji::test::source_path("configs/gpt2-124m.json"));
  EXPECT_EQ(g.arch, Arch::kGpt2);
  // GPT-2 small has 124,439,808 parameters (Hugging Face gpt2, tied lm_head).
  EXPECT_EQ(g.num_params(), 124439808);
  ModelConfig t = ModelConfig::load(aji::test::source_path("configs/tiny.json"));
  EXPECT_EQ(t.arch, Arch::kLlama);
  EXPECT_EQ(t.n_layer, 6);
  EXPECT_EQ(t.d_model, 384);
  EXPECT_EQ(t.max_seq_len, 256);
  EXPECT_EQ(t.vocab_size, 8192);
}

TEST(ModelConfig, JsonRoundTrip) {
  for (const char* name : {"tiny", "tiny-gpt2", "gpt2-124m", "llama-small"}) {
    ModelConfig c = ModelConfig::load(aji::test::source_path(std::string("configs/") + name + ".json"));
    ModelConfig a = ModelConfig::from_json(c.to_json());
    EXPECT_EQ(a.to_json(), c.to_json()) << name;
    ModelConfig h = ModelConfig::from_hf_config_json(c.to_hf_config_json());
    EXPECT_EQ(h.arch, c.arch);
    EXPECT_EQ(h.vocab_size, c.vocab_size);
    EXPECT_EQ(h.n_layer, c.n_layer);
    EXPECT_EQ(h.n_head, c.n_head);
    EXPECT_EQ(h.n_kv_head, c.n_kv_head);
    EXPECT_EQ(h.d_model, c.d_model);
    EXPECT_EQ(h.ff(), c.ff());
    EXPECT_EQ(h.max_seq_len, c.max_seq_len);
    EXPECT_EQ(h.tied_embeddings, c.tied_embeddings);
    EXPECT_EQ(h.num_params(), c.num_params());
  }
}

TEST(ModelConfig, ReadsHuggingFaceGpt2Config) {
  // The fields of openai-community/gpt2's config.json that matter.
  json j = json::parse(R"({"activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"],
    "bos_token_id": 50256, "eos_token_id": 50256, "initializer_range": 0.02, "layer_norm_epsilon": 1e-05,
    "model_type": "gpt2", "n_ctx": 1024, "n_embd": 768, "n_head": 12, "n_inner": null, "n_layer": 12,
    "n_positions": 1024, "vocab_size": 50257})");
  ModelConfig c = ModelConfig::from_hf_config_json(j);
  EXPECT_EQ(c.arch, Arch::kGpt2);
  EXPECT_EQ(c.ff(), 3072);
  EXPECT_EQ(c.eos_token_id, 50256);
  EXPECT_EQ(c.num_params(), 124439808);
}

TEST(ModelConfig, ReadsHuggingFaceLlamaConfig) {
  // TinyLlama-1.1B's config.json (GQA 32/4): 1,100,048,384 parameters.
  json j = json::parse(R"({"architectures": ["LlamaForCausalLM"], "bos_token_id": 1, "eos_token_id": 2,
    "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 5632,
    "max_position_embeddings": 2048, "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 22,
    "num_key_value_heads": 4, "rms_norm_eps": 1e-05, "rope_scaling": null, "tie_word_embeddings": false,
    "torch_dtype": "bfloat16", "vocab_size": 32000})");
  ModelConfig c = ModelConfig::from_hf_config_json(j);
  EXPECT_EQ(c.arch, Arch::kLlama);
  EXPECT_EQ(c.n_kv_head, 4);
  EXPECT_EQ(c.hd(), 64);
  EXPECT_EQ(c.num_params(), 1100048384);
}

TEST(ModelConfig, BadSizesSayWhatToChange) {
  json base = {{"arch", "llama"}, {"vocab_size", 100}, {"n_layer", 2}, {"n_head", 4}, {"n_kv_head", 2},
               {"d_model", 64},   {"d_ff", 128},       {"max_seq_len", 16}};
  EXPECT_EQ(error_of(base), "");
  json j = base;
  j["n_head"] = 5;
  j["n_kv_head"] = 5;
  EXPECT_THAT(error_of(j), testing::HasSubstr("does not divide d_model"));
  j = base;
  j["n_kv_head"] = 3;
  EXPECT_THAT(error_of(j), testing::HasSubstr("n_kv_head (3) does not divide n_head (4)"));
  j = base;
  j.erase("d_ff");
  EXPECT_THAT(error_of(j), testing::HasSubstr("d_ff"));
  j = base;
  j["n_layr"] = 3;
  EXPECT_THAT(error_of(j), testing::HasSubstr("unknown key \"n_layr\""));
  j = base;
  j["arch"] = "bert";
  EXPECT_THAT(error_of(j), testing::HasSubstr("unknown arch"));
  j = base;
  j["n_layer"] = 0;
  EXPECT_THAT(error_of(j), testing::HasSubstr("n_layer must be positive"));
  j = base;
  j["d_model"] = "64";
  EXPECT_THAT(error_of(j), testing::HasSubstr("must be a number"));
  j = base;
  j["arch"] = "gpt2";
  EXPECT_THAT(error_of(j), testing::HasSubstr("n_kv_head"));
}

TEST(ModelConfig, LoadErrors) {
  aji::test::TempDir dir;
  auto p = dir.path() / "bad.json";
  aji::write_file_atomic(p, "{\"arch\": \"llama\",");
  try {
    ModelConfig::load(p);
    FAIL() << "no error";
  } catch (const aji::Error& e) {
    EXPECT_THAT(e.describe(), testing::HasSubstr("not valid JSON"));
    EXPECT_THAT(e.describe(), testing::HasSubstr("bad.json"));
  }
  EXPECT_THROW(ModelConfig::load(dir.path() / "missing.json"), aji::Error);
}

}  // namespace

// A number too large for a double ("1e705") makes nlohmann::json::parse throw out_of_range
// (406), not parse_error; it escaped as a bare exception (found by fuzz_model_config, input
// fuzz/corpus/model_config/crash-number-overflow). Now an aji::Error naming the file.
TEST(ModelConfig, NumberTooLargeForADoubleIsAClearError) {
  aji::test::TempDir tmp;
  const auto p = tmp.path() / "big.json";
  aji::write_file_atomic(p, R"({"arch": "llama", "vocab_size": 320, "n_layer": 2, "n_head": 2, "d_model": 32,
                               "max_seq_len": 32, "rope_theta": 1e705})");
  try {
    aji::model::ModelConfig::load(p);
    FAIL() << "no error";
  } catch (const aji::Error& e) {
    EXPECT_NE(e.describe().find(p.string()), std::string::npos) << e.describe();
    EXPECT_NE(e.describe().find("1e705"), std::string::npos) << e.describe();
  }
}

// A number that fits a double but not a float ("rope_theta": 1e39) became infinity, passed
// the positivity check, and was written back as null: the run's own config.json could not be
// read again (found by fuzz_model_config in CI). Now refused by name when read.
TEST(ModelConfig, NumberBeyondAFloatIsRefusedNotSavedAsNull) {
  for (const char* key : {"rope_theta", "norm_eps", "init_std"}) {
    json j = {{"arch", "llama"}, {"vocab_size", 64}, {"n_layer", 1}, {"n_head", 2},
              {"d_model", 8},    {"d_ff", 16},       {"max_seq_len", 16}};
    j[key] = 1e39;
    const std::string err = error_of(j);
    EXPECT_THAT(err, testing::HasSubstr(key)) << key;
    EXPECT_THAT(err, testing::HasSubstr("beyond the largest supported value")) << err;
  }
  // The largest float still reads, and the config round-trips.
  json j = {{"arch", "llama"}, {"vocab_size", 64}, {"n_layer", 1},     {"n_head", 2},
            {"d_model", 8},    {"d_ff", 16},       {"max_seq_len", 16}, {"rope_theta", 3.0e38}};
  const ModelConfig c = ModelConfig::from_json(j);
  EXPECT_EQ(ModelConfig::from_json(c.to_json()).to_json(), c.to_json());
  // A config built in code with an infinite theta fails validation, not the next load.
  ModelConfig bad = c;
  bad.rope_theta = std::numeric_limits<float>::infinity();
  EXPECT_THROW(bad.validate(), aji::Error);
}

// Dimensions that fit an int but whose products do not (4 * n_embd, d_model * 8 / 3,
// head_dim * n_head) are refused by name before any arithmetic; found by fuzz_model_config
// (UBSan: signed overflow), inputs kept in fuzz/corpus/model_config/crash-*-overflow.
TEST(ModelConfig, HugeDimensionsAreAClearErrorNotAnOverflow) {
  aji::test::TempDir tmp;
  struct Case {
    const char* text;
    const char* names;
  };
  const Case cases[] = {
      {R"({"model_type":"gpt2","vocab_size":10,"n_positions":10,"n_embd":1000000000,"n_layer":1,"n_head":1})", "d_model"},
      {R"({"arch":"llama","vocab_size":10,"max_seq_len":10,"d_model":1000000000,"n_layer":1,"n_head":1})", "d_model"},
      {R"({"model_type":"llama","vocab_size":10,"hidden_size":64,"intermediate_size":64,"num_hidden_layers":1,
           "num_attention_heads":2000000000,"num_key_value_heads":1,"head_dim":2})", "n_head"},
      {R"({"arch":"gpt2","vocab_size":2000000000,"max_seq_len":10,"d_model":64,"n_layer":1,"n_head":1})", "vocab_size"},
      {R"({"arch":"llama","vocab_size":10,"max_seq_len":10,"d_model":64,"d_ff":2147483647,"n_layer":1,"n_head":1})", "d_ff"},
  };
  int i = 0;
  for (const Case& c : cases) {
    const auto p = tmp.path() / ("huge" + std::to_string(i++) + ".json");
    aji::write_file_atomic(p, c.text);
    try {
      aji::model::ModelConfig::load(p);
      ADD_FAILURE() << "no error for " << c.text;
    } catch (const aji::Error& e) {
      EXPECT_NE(e.describe().find(p.string()), std::string::npos) << e.describe();
      EXPECT_NE(e.describe().find(c.names), std::string::npos) << e.describe();
      EXPECT_NE(e.describe().find("beyond the largest supported value"), std::string::npos) << e.describe();
    }
  }
  // Every dimension within its bound, the whole beyond any machine: refused by its size.
  {
    const auto p = tmp.path() / "too-many.json";
    aji::write_file_atomic(p, R"({"arch":"llama","vocab_size":10,"max_seq_len":10,"d_model":262144,"d_ff":1048576,
                                 "n_layer":1000000,"n_head":16384,"head_dim":16384})");
    try {
      aji::model::ModelConfig::load(p);
      ADD_FAILURE() << "no error";
    } catch (const aji::Error& e) {
      EXPECT_NE(e.describe().find("trillion parameters"), std::string::npos) << e.describe();
      EXPECT_NE(e.describe().find(p.string()), std::string::npos) << e.describe();
    }
  }
  // The largest real configs still load (Llama-3 405B: d_model 16384, d_ff 53248, 126 layers).
  const auto p = tmp.path() / "big-real.json";
  aji::write_file_atomic(p, R"({"model_type":"llama","vocab_size":128256,"hidden_size":16384,"intermediate_size":53248,
                               "num_hidden_layers":126,"num_attention_heads":128,"num_key_value_heads":8,
                               "max_position_embeddings":131072,"rope_theta":500000.0})");
  const auto c = aji::model::ModelConfig::load(p);
  EXPECT_EQ(c.d_model, 16384);
  EXPECT_GT(c.num_params(), int64_t{400} * 1000 * 1000 * 1000);
}
