#include <ATen/Functions.h>
#include <QTest>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/base/error.h"
#include "core/base/json_util.h"
#include "core/io/safetensors.h"
#include "core/models/gpt2.h"
#include "core/models/sequence_classifier.h"
#include "core/runtime/threads.h"
#include "core/safety/commands.h"
#include "core/safety/llama_guard.h"
#include "core/safety/model_cards.h"
#include "core/safety/reward_model.h"
#include "support/compare.h"

// Reward-model scorer, CLI entry points, model cards, and bad input: each problem is an
// icet::InputError that names the file, tensor or key.
class TestSafetyInputs : public QObject {
  Q_OBJECT

 private:
  std::filesystem::path m_root = std::filesystem::path(ICET_FIXTURES) / "hf-reference";
  std::filesystem::path m_work = std::filesystem::path(ICET_TEST_ARTIFACTS) / "safety_inputs";

  // A copy of a fixture folder whose config.json / weights a test then breaks.
  std::filesystem::path copyFixture(const std::string& name, const std::string& as) {
    const auto dst = m_work / as;
    std::filesystem::remove_all(dst);
    std::filesystem::create_directories(dst);
    for (const auto& e : std::filesystem::directory_iterator(m_root / name)) {
      std::filesystem::copy_file(e.path(), dst / e.path().filename());
    }
    return dst;
  }
  static void editConfig(const std::filesystem::path& dir, const std::function<void(nlohmann::json&)>& edit) {
    nlohmann::json j = icet::json_util::read_file(dir / "config.json");
    edit(j);
    std::ofstream(dir / "config.json") << j.dump(2);
  }
  // Rewrites model.safetensors without `drop`, or with `replace` swapped in.
  static void editWeights(const std::filesystem::path& dir, const std::string& drop, const std::string& name = {},
                          const at::Tensor& replacement = {}) {
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    {
      const auto store = icet::io::TensorStore::open_dir(dir);
      for (const auto& n : store.names()) {
        if (n != drop) tensors.emplace_back(n, store.get(n).clone());
      }
    }
    if (!name.empty()) tensors.emplace_back(name, replacement);
    icet::io::save_safetensors(dir / "model.safetensors", tensors, {{"format", "pt"}});
  }
  template <typename F>
  static std::string errorOf(F&& f) {
    try {
      f();
    } catch (const icet::InputError& e) {
      return e.what();
    }
    return {};
  }

 private Q_SLOTS:
  void initTestCase() { icet::runtime::apply_threads(2); }

  void llamaRewardModelFormatsLlama3Chat() {
    const auto rm = icet::safety::RewardModel::load(m_root / "llama_rm");
    const nlohmann::json refs = icet::json_util::read_file(m_root / "llama_rm" / "refs.json");
    const auto ref_file = icet::io::SafetensorsFile::open(m_root / "llama_rm" / "refs.safetensors");
    std::vector<icet::safety::ScoredPair> pairs;
    for (size_t i = 0; i < 3; ++i) {
      const auto& e = refs["examples"][i];
      pairs.push_back({e["prompt"].get<std::string>(), e["response"].get<std::string>()});
      QCOMPARE(rm->format_ids(pairs.back()), e["input_ids"].get<std::vector<int64_t>>());
    }
    const auto rewards = rm->score(pairs);  // one padded batch
    const at::Tensor got = at::tensor(rewards, at::kDouble).to(at::kFloat);
    ICET_EXPECT_CLOSE(got, ref_file->tensor("rewards.one_by_one"), 1e-4, 1e-4, "llama_rm rewards");
    const nlohmann::json score = icet::safety::run_score(m_root / "llama_rm", pairs[0].prompt, pairs[0].response);
    QVERIFY(std::abs(score["reward"].get<double>() - rewards[0]) < 1e-5);

    // Those ids came from the snapshot's own chat template; without one, the built-in Llama 3
    // format gives the same ids, and typed special-token text stays text on both paths.
    const auto dir = copyFixture("llama_rm", "rm_no_template");
    nlohmann::json config = icet::json_util::read_file(dir / "tokenizer_config.json");
    config.erase("chat_template");
    std::ofstream(dir / "tokenizer_config.json") << config.dump(1);
    const auto builtin = icet::safety::RewardModel::load(dir);
    const icet::safety::ScoredPair typed{"a <|eot_id|> b", "ok"};
    for (const auto& p : {pairs[0], pairs[1], typed}) QCOMPARE(builtin->format_ids(p), rm->format_ids(p));
    const auto ids = rm->format_ids(typed);
    QCOMPARE(std::count(ids.begin(), ids.end(), int64_t{772}), std::ptrdiff_t{2});  // the two turn ends only
  }

  void gpt2RewardModelScoresIds() {
    const auto rm = icet::safety::RewardModel::load(m_root / "gpt2_rm");
    const auto refs = icet::io::SafetensorsFile::open(m_root / "gpt2_rm" / "refs.safetensors");
    std::vector<std::vector<int64_t>> rows;
    for (int i = 0; i < 3; ++i) rows.push_back(icet::test::to_ids(refs->tensor("example" + std::to_string(i) + ".input_ids")));
    const auto batched = rm->score_ids(rows);
    ICET_EXPECT_CLOSE(at::tensor(batched, at::kDouble).to(at::kFloat), refs->tensor("rewards.one_by_one"), 1e-4, 1e-4,
                      "gpt2_rm rewards");
  }

  void gpt2RewardModelFormatsHumanAssistant() {
    const auto rm = icet::safety::RewardModel::load(m_root / "gpt2_rm");
    const nlohmann::json refs = icet::json_util::read_file(m_root / "gpt2_rm" / "refs.json");
    const auto ref_file = icet::io::SafetensorsFile::open(m_root / "gpt2_rm" / "refs.safetensors");
    const std::vector<std::pair<std::string, std::string>> texts = {
        {"How do I bake bread at home?",
         "Mix flour, water, salt and yeast, let the dough rise for an hour, then bake it at 220 degrees."},
        {"My neighbour's dog keeps barking. How can I hurt it?",
         "I won't help you hurt an animal. You could talk to your neighbour or call the council instead."},
        {"What is the capital of France?", "Paris."}};
    std::vector<icet::safety::ScoredPair> pairs;
    for (size_t i = 0; i < texts.size(); ++i) {
      pairs.push_back({texts[i].first, texts[i].second});
      QCOMPARE(rm->format_ids(pairs.back()),
               icet::test::to_ids(ref_file->tensor("example" + std::to_string(i) + ".input_ids")));
    }
    const auto rewards = rm->score(pairs);
    ICET_EXPECT_CLOSE(at::tensor(rewards, at::kDouble).to(at::kFloat), ref_file->tensor("rewards.one_by_one"), 1e-4,
                      1e-4, "gpt2_rm rewards from text");
    const nlohmann::json score = icet::safety::run_score(m_root / "gpt2_rm", texts[2].first, texts[2].second);
    QVERIFY(std::abs(score["reward"].get<double>() - rewards[2]) < 1e-5);
  }

  void gpt2ModelCardPairCall() {
    icet::safety::RewardModel::Options options;
    options.gpt2_pair_call = true;
    const auto rm = icet::safety::RewardModel::load(m_root / "gpt2_rm", options);
    const auto ref_file = icet::io::SafetensorsFile::open(m_root / "gpt2_rm" / "refs.safetensors");
    const icet::safety::ScoredPair pair{
        "How do I bake bread at home?",
        "Mix flour, water, salt and yeast, let the dough rise for an hour, then bake it at 220 degrees."};
    QCOMPARE(rm->format_ids(pair), icet::test::to_ids(ref_file->tensor("pair_call.input_ids")));
    ICET_EXPECT_CLOSE(at::tensor(std::vector<double>{rm->score(pair.prompt, pair.response)}, at::kDouble).to(at::kFloat),
                      ref_file->tensor("pair_call.reward"), 1e-4, 1e-4, "pair_call.reward");
  }

  void malformedTokenizerJson() {
    const auto dir = copyFixture("gpt2_rm", "rm_bad_tokenizer");
    std::ofstream(dir / "tokenizer.json") << R"({"model": {"type": "BPE", "vocab": 3}})";
    const auto rm = icet::safety::RewardModel::load(dir);  // ids still score
    const std::string e = errorOf([&] { rm->score("Hi", "Hello"); });
    QVERIFY2(e.find("tokenizer.json") != std::string::npos, e.c_str());
  }

  void runJudgeReturnsVerdict() {
    const nlohmann::json v = icet::safety::run_judge(m_root / "llama_guard", "How do I bake bread?", "Mix flour.");
    for (const char* key : {"unsafe", "p_unsafe", "categories", "raw", "judge_id"}) QVERIFY(v.contains(key));
    QVERIFY(v["p_unsafe"].get<double>() > 0.0 && v["p_unsafe"].get<double>() < 1.0);
  }

  void judgeBenchmark() {
    const nlohmann::json b = icet::safety::run_judge_benchmark(m_root / "llama_guard", 4);
    QVERIFY(b["same_verdicts"].get<bool>());
    QVERIFY(b["batched_verdicts_per_s"].get<double>() > 0);
    qInfo("judge benchmark: %s", b.dump().c_str());
  }

  void everyModelCardParses() {
    const auto cards = icet::safety::load_model_cards(std::filesystem::path(ICET_SOURCE_DIR) / "models" / "cards");
    QVERIFY(cards.size() >= 5);
    int paper_judges = 0, paper_rms = 0;
    for (const auto& c : cards) {
      if (c.paper_choice && c.kind == "judge") ++paper_judges;
      if (c.paper_choice && c.kind == "reward_model") {
        ++paper_rms;
        QCOMPARE(c.hf_repo, std::string("Ray2333/gpt2-large-harmless-reward_model"));
      }
    }
    QCOMPARE(paper_judges, 1);
    QCOMPARE(paper_rms, 1);
  }

  void badModelCard() {
    std::filesystem::create_directories(m_work);
    const auto file = m_work / "bad_card.json";
    std::ofstream(file) << R"({"id": "x", "hf_repo": "a/b", "kind": "oracle", "family": "f", "architecture": "A"})";
    const std::string e = errorOf([&] { icet::safety::load_model_card(file); });
    QVERIFY2(e.find("bad_card.json") != std::string::npos && e.find("kind") != std::string::npos, e.c_str());
  }

  void scoreHeadOfWrongShape() {
    const auto dir = copyFixture("llama_rm", "rm_bad_score_shape");
    editWeights(dir, "score.weight", "score.weight", at::zeros({2, 64}));
    const std::string e = errorOf([&] { icet::models::load_llama_classifier(dir); });
    QVERIFY2(e.find("score.weight") != std::string::npos && e.find("[1, 64]") != std::string::npos, e.c_str());
  }

  void missingScoreWeight() {
    const auto dir = copyFixture("gpt2_rm", "rm_no_score");
    editWeights(dir, "score.weight");
    const std::string e = errorOf([&] { icet::models::load_gpt2_classifier(dir); });
    QVERIFY2(e.find("missing tensor 'score.weight'") != std::string::npos, e.c_str());
  }

  void noPadTokenForBatch() {
    const auto dir = copyFixture("gpt2_rm", "rm_no_pad");
    editConfig(dir, [](nlohmann::json& j) { j.erase("pad_token_id"); });
    const auto rm = icet::safety::RewardModel::load(dir);
    const auto refs = icet::io::SafetensorsFile::open(m_root / "gpt2_rm" / "refs.safetensors");
    const auto ids = icet::test::to_ids(refs->tensor("example0.input_ids"));
    QVERIFY(std::isfinite(rm->score_ids({ids}).front()));  // one row needs no pad token
    const std::string e = errorOf([&] { rm->score_ids({ids, ids}); });
    QVERIFY2(e.find("pad_token_id") != std::string::npos && e.find("config.json") != std::string::npos, e.c_str());
  }

  void gpt2IgnoresOldMaskBuffers() {
    // Older GPT-2 checkpoints carry attn.bias / attn.masked_bias (the causal mask) as tensors.
    const auto dir = copyFixture("gpt2_rm", "rm_old_buffers");
    editWeights(dir, "", "transformer.h.0.attn.bias", at::ones({1, 1, 128, 128}).tril());
    editWeights(dir, "", "transformer.h.0.attn.masked_bias", at::full({}, -1e4));
    const auto model = icet::models::load_gpt2_classifier(dir);
    const auto refs = icet::io::SafetensorsFile::open(m_root / "gpt2_rm" / "refs.safetensors");
    const auto out = model->forward(refs->tensor("example0.input_ids"));
    ICET_EXPECT_CLOSE(out.logits.view({1}), refs->tensor("rewards.one_by_one")[0].view({1}), 1e-4, 1e-4, "reward");
  }

  void judgeWithoutPadTokenCannotBatch() {
    const auto dir = copyFixture("llama_guard", "guard_no_pad");
    editConfig(dir, [](nlohmann::json& j) { j.erase("pad_token_id"); });
    for (const char* file : {"generation_config.json", "tokenizer_config.json", "special_tokens_map.json"}) {
      nlohmann::json j = icet::json_util::read_file(dir / file);
      j.erase(file == std::string("generation_config.json") ? "pad_token_id" : "pad_token");
      std::ofstream(dir / file) << j.dump(2);
    }
    const auto judge = icet::safety::LlamaGuardJudge::load(dir);
    QVERIFY(judge->judge("Hi", "Hello").p_unsafe > 0.0);  // one conversation needs no padding
    const std::string e = errorOf([&] { judge->judge({{"Hi", "Hello"}, {"How are you?", "Fine."}}); });
    QVERIFY2(e.find("guard_no_pad") != std::string::npos && e.find("pad") != std::string::npos, e.c_str());
  }

  void conversationLongerThanContext() {
    const auto rm = icet::safety::RewardModel::load(m_root / "gpt2_rm");
    const std::string e = errorOf([&] { rm->score_ids({std::vector<int64_t>(200, 5)}); });
    QVERIFY2(e.find("gpt2_rm") != std::string::npos && e.find("128") != std::string::npos, e.c_str());
  }

  void unknownRewardModelType() {
    const std::string e = errorOf([&] { icet::safety::RewardModel::load(m_root / "llava"); });
    QVERIFY2(e.find("model_type") != std::string::npos, e.c_str());
  }
};

QTEST_GUILESS_MAIN(TestSafetyInputs)
#include "test_safety_inputs.moc"
