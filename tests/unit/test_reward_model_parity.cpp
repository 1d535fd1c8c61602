#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <QTest>
#include <c10/core/InferenceMode.h>

#include <filesystem>

#include "core/io/safetensors.h"
#include "core/models/gpt2.h"
#include "core/models/sequence_classifier.h"
#include "core/runtime/threads.h"
#include "support/compare.h"

// Parity of the reward-model heads with Hugging Face transformers 4.47.1 on the gpt2_rm and
// llama_rm fixtures (tests/fixtures/hf-reference/README.md, second half), from the recorded ids.
// Tolerance: atol = rtol = 1e-4 as the fixture suggests; its own re-implementation agreed within 4e-6.
class TestRewardModelParity : public QObject {
  Q_OBJECT

 private:
  std::filesystem::path m_root = std::filesystem::path(ICET_FIXTURES) / "hf-reference";
  std::unique_ptr<icet::models::Gpt2ForSequenceClassification> m_gpt2;
  std::unique_ptr<icet::models::LlamaForSequenceClassification> m_llama;
  std::shared_ptr<icet::io::SafetensorsFile> m_gpt2_refs, m_llama_refs;

  static double maxDiff(const at::Tensor& a, const at::Tensor& b) { return icet::test::max_abs_diff(a, b); }

 private Q_SLOTS:
  void initTestCase() {
    icet::runtime::apply_threads(2);
    m_gpt2 = icet::models::load_gpt2_classifier(m_root / "gpt2_rm");
    m_llama = icet::models::load_llama_classifier(m_root / "llama_rm");
    m_gpt2_refs = icet::io::SafetensorsFile::open(m_root / "gpt2_rm" / "refs.safetensors");
    m_llama_refs = icet::io::SafetensorsFile::open(m_root / "llama_rm" / "refs.safetensors");
  }

  void gpt2HiddenStates() {
    c10::InferenceMode guard;
    std::vector<at::Tensor> states;
    const at::Tensor ids = m_gpt2_refs->tensor("example0.input_ids");
    const at::Tensor last = m_gpt2->transformer().forward(ids, {}, {}, &states);
    QCOMPARE(states.size(), size_t{3});
    const at::Tensor ref = m_gpt2_refs->tensor("example0.hidden_states");
    for (int64_t i = 0; i < 3; ++i) {
      ICET_EXPECT_CLOSE(states[static_cast<size_t>(i)][0], ref[i], 1e-4, 1e-4, "hidden_states[" + std::to_string(i) + "]");
    }
    ICET_EXPECT_CLOSE(last[0], m_gpt2_refs->tensor("example0.last_hidden_state"), 1e-4, 1e-4, "last_hidden_state");
    qInfo("gpt2_rm last_hidden_state max |diff| %.3g",
          maxDiff(last[0], m_gpt2_refs->tensor("example0.last_hidden_state")));
    const auto out = m_gpt2->forward(ids);
    ICET_EXPECT_CLOSE(out.scores[0].squeeze(-1), m_gpt2_refs->tensor("example0.scores_all_positions"), 1e-4, 1e-4,
                      "scores_all_positions");
  }

  void gpt2RewardsOneByOne() {
    c10::InferenceMode guard;
    const at::Tensor ref = m_gpt2_refs->tensor("rewards.one_by_one");
    double worst = 0;
    for (int64_t i = 0; i < 3; ++i) {
      const at::Tensor ids = m_gpt2_refs->tensor("example" + std::to_string(i) + ".input_ids");
      const auto out = m_gpt2->forward(ids);
      QCOMPARE(out.pool_index.item<int64_t>(), ids.size(1) - 1);
      ICET_EXPECT_CLOSE(out.logits.view({1}), ref[i].view({1}), 1e-4, 1e-4, "reward " + std::to_string(i));
      worst = std::max(worst, maxDiff(out.logits.view({1}), ref[i].view({1})));
    }
    qInfo("gpt2_rm rewards one by one max |diff| %.3g", worst);
    const auto pair = m_gpt2->forward(m_gpt2_refs->tensor("pair_call.input_ids"));
    ICET_EXPECT_CLOSE(pair.logits.view({1}), m_gpt2_refs->tensor("pair_call.reward"), 1e-4, 1e-4, "pair_call.reward");
  }

  void gpt2RewardsBatch() {
    c10::InferenceMode guard;
    const auto out = m_gpt2->forward(m_gpt2_refs->tensor("batch.input_ids"), m_gpt2_refs->tensor("batch.attention_mask"));
    QCOMPARE(icet::test::to_ids(out.pool_index), icet::test::to_ids(m_gpt2_refs->tensor("batch.pool_index")));
    ICET_EXPECT_CLOSE(out.logits.squeeze(-1), m_gpt2_refs->tensor("batch.rewards"), 1e-4, 1e-4, "batch.rewards");
    ICET_EXPECT_CLOSE(out.logits.squeeze(-1), m_gpt2_refs->tensor("rewards.one_by_one"), 1e-4, 1e-4,
                      "batch vs one by one");
    qInfo("gpt2_rm batch rewards max |diff| %.3g", maxDiff(out.logits.squeeze(-1), m_gpt2_refs->tensor("batch.rewards")));
    // Padded positions hold garbage in HF too; compare the real ones only.
    const at::Tensor mask = m_gpt2_refs->tensor("batch.attention_mask").to(at::kBool);
    ICET_EXPECT_CLOSE(out.scores.squeeze(-1).masked_select(mask),
                      m_gpt2_refs->tensor("batch.scores_all_positions").masked_select(mask), 1e-4, 1e-4,
                      "batch.scores_all_positions");
  }

  void gpt2LeftPaddingWithPositions() {
    // Left padding is right when positions come from the mask (cumsum - 1); the pooled index
    // is still the last column (-1 mod T).
    c10::InferenceMode guard;
    const at::Tensor ids = m_gpt2_refs->tensor("example2.input_ids");  // [1,29]
    const int64_t pad = 656, n = 6;
    const at::Tensor padded = at::cat({at::full({1, n}, pad, at::kLong), ids}, 1);
    const at::Tensor mask = at::cat({at::zeros({1, n}, at::kLong), at::ones_like(ids)}, 1);
    const at::Tensor positions = (mask.cumsum(-1) - 1).clamp_min(0);
    const auto out = m_gpt2->forward(padded, mask, positions);
    // argmax finds the first pad at 0 -> index -1 mod T = last token.
    QCOMPARE(out.pool_index.item<int64_t>(), padded.size(1) - 1);
    ICET_EXPECT_CLOSE(out.logits.view({1}), m_gpt2_refs->tensor("rewards.one_by_one")[2].view({1}), 1e-4, 1e-4,
                      "left-padded reward");
  }

  void llamaRewards() {
    c10::InferenceMode guard;
    const at::Tensor ref = m_llama_refs->tensor("rewards.one_by_one");
    double worst = 0;
    for (int64_t i = 0; i < 3; ++i) {
      const auto out = m_llama->forward(m_llama_refs->tensor("example" + std::to_string(i) + ".input_ids"));
      ICET_EXPECT_CLOSE(out.logits.view({1}), ref[i].view({1}), 1e-4, 1e-4, "reward " + std::to_string(i));
      worst = std::max(worst, maxDiff(out.logits.view({1}), ref[i].view({1})));
      if (i == 0) {
        ICET_EXPECT_CLOSE(out.hidden[0], m_llama_refs->tensor("example0.last_hidden_state"), 1e-4, 1e-4,
                          "last_hidden_state");
        qInfo("llama_rm last_hidden_state max |diff| %.3g",
              maxDiff(out.hidden[0], m_llama_refs->tensor("example0.last_hidden_state")));
      }
    }
    qInfo("llama_rm rewards one by one max |diff| %.3g", worst);
    ICET_EXPECT_CLOSE(m_llama->model().inv_freq(), m_llama_refs->tensor("rope.inv_freq"), 1e-7, 1e-6, "rope.inv_freq");
  }

  void llamaRewardsBatch() {
    c10::InferenceMode guard;
    const auto out =
        m_llama->forward(m_llama_refs->tensor("batch.input_ids"), m_llama_refs->tensor("batch.attention_mask"));
    QCOMPARE(icet::test::to_ids(out.pool_index), icet::test::to_ids(m_llama_refs->tensor("batch.pool_index")));
    ICET_EXPECT_CLOSE(out.logits.squeeze(-1), m_llama_refs->tensor("batch.rewards"), 1e-4, 1e-4, "batch.rewards");
    ICET_EXPECT_CLOSE(out.logits.squeeze(-1), m_llama_refs->tensor("rewards.one_by_one"), 1e-4, 1e-4,
                      "batch vs one by one");
    qInfo("llama_rm batch rewards max |diff| %.3g",
          maxDiff(out.logits.squeeze(-1), m_llama_refs->tensor("batch.rewards")));
    const at::Tensor mask = m_llama_refs->tensor("batch.attention_mask").to(at::kBool);
    ICET_EXPECT_CLOSE(out.scores.squeeze(-1).masked_select(mask),
                      m_llama_refs->tensor("batch.scores_all_positions").masked_select(mask), 1e-4, 1e-4,
                      "batch.scores_all_positions");
  }
};

QTEST_GUILESS_MAIN(TestRewardModelParity)
#include "test_reward_model_parity.moc"
