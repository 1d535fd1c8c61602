#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <QTest>

#include <cmath>

#include "core/rl/ppo.h"

using namespace icet::rl;

// PPO building blocks against hand-computed values (tolerance 1e-6, float32).
class TestPpoMath : public QObject {
  Q_OBJECT

 private:
  static at::Tensor t(std::vector<float> v, std::vector<int64_t> shape) {
    return at::tensor(v, at::TensorOptions().dtype(at::kFloat)).view(shape);
  }
  static bool near(const at::Tensor& a, const at::Tensor& b) { return at::allclose(a, b, 1e-6, 1e-6); }

 private Q_SLOTS:
  void gaeByHand() {
    // One row, 3 real tokens then padding; gamma 1, lambda 0.5.
    const at::Tensor r = t({0, 0, 1, 0}, {1, 4}), v = t({0.5, 0.25, 0.75, 9}, {1, 4}), m = t({1, 1, 1, 0}, {1, 4});
    const Gae g = gae(r, v, m, 1.0, 0.5);
    // delta2 = 1 - 0.75 = 0.25; delta1 = 0 + 0.75 - 0.25 = 0.5; delta0 = 0.25 - 0.5 = -0.25
    // A2 = 0.25; A1 = 0.5 + 0.5*0.25 = 0.625; A0 = -0.25 + 0.5*0.625 = 0.0625
    QVERIFY(near(g.advantages, t({0.0625, 0.625, 0.25, 0}, {1, 4})));
    QVERIFY(near(g.returns, t({0.5625, 0.875, 1.0, 0}, {1, 4})));
  }

  void klEstimators() {
    const at::Tensor logp = t({-1.0, -2.0}, {1, 2}), ref = t({-1.5, -1.0}, {1, 2});
    QVERIFY(near(kl_estimate(logp, ref, "k1"), t({0.5, -1.0}, {1, 2})));
    // k3 = exp(ref - logp) - 1 - (ref - logp)
    QVERIFY(near(kl_estimate(logp, ref, "k3"), t({static_cast<float>(std::exp(-0.5) - 1 + 0.5), static_cast<float>(std::exp(1.0) - 2.0)}, {1, 2})));
    QVERIFY((kl_estimate(logp, ref, "k3") >= 0).all().item<bool>());
  }

  void fullKlOverTheVocabulary() {
    // p = softmax(log [0.5, 0.5]) = (0.5, 0.5), q = (0.25, 0.75): KL = 0.5 ln 2 + 0.5 ln(2/3).
    const at::Tensor p = t({std::log(0.5f), std::log(0.5f)}, {1, 1, 2});
    const at::Tensor q = t({std::log(0.25f), std::log(0.75f)}, {1, 1, 2});
    const float expected = static_cast<float>(0.5 * std::log(2.0) + 0.5 * std::log(2.0 / 3.0));
    QVERIFY(near(full_kl(p, q), t({expected}, {1, 1})));
    QVERIFY(near(full_kl(p, p), t({0.0f}, {1, 1})));
    QVERIFY(near(full_kl(p + 3.0, q - 1.0), full_kl(p, q)));  // logits, not probabilities
  }

  void tokenRewardsPutTheScoreOnTheLastToken() {
    const at::Tensor kl = t({1, 1, 1, 2, 2, 2}, {2, 3}), m = t({1, 1, 0, 1, 1, 1}, {2, 3});
    const at::Tensor r = token_rewards(kl, t({5, -1}, {2}), m, 0.5);
    QVERIFY(near(r, t({-0.5, 4.5, 0, -1, -1, -2}, {2, 3})));
  }

  void policyLossClips() {
    // ratio e^0.5 ~ 1.65 > 1.2 with a positive advantage: the clipped term wins.
    const at::Tensor m = t({1}, {1, 1});
    const PolicyLoss pl = policy_loss(t({0.5}, {1, 1}), t({0.0}, {1, 1}), t({2.0}, {1, 1}), m, 0.2);
    QVERIFY(std::abs(pl.loss.item<double>() - (-2.0 * 1.2)) < 1e-6);
    QCOMPARE(pl.clipfrac.item<double>(), 1.0);
    QVERIFY(std::abs(pl.approx_kl.item<double>() - 0.125) < 1e-6);
    const ValueLoss vl = value_loss(t({3.0}, {1, 1}), t({1.0}, {1, 1}), t({2.0}, {1, 1}), m, 0.2);
    // unclipped (3-2)^2 = 1, clipped (1.2-2)^2 = 0.64 -> 0.5 * 1
    QVERIFY(std::abs(vl.loss.item<double>() - 0.5) < 1e-6);
  }

  void whitenAndSchedules() {
    const at::Tensor x = t({1, 2, 3, 100}, {1, 4}), m = t({1, 1, 1, 0}, {1, 4});
    const at::Tensor w = masked_whiten(x, m);
    QVERIFY(std::abs(masked_mean(w, m).item<double>()) < 1e-6);
    QVERIFY(std::abs(masked_var(w, m).item<double>() - 1.0) < 1e-4);
    QCOMPARE(w[0][3].item<double>(), 0.0);
    QVERIFY(std::abs(adaptive_kl_update(0.2, 12.0, 6.0, 10000, 64) - 0.2 * (1 + 0.2 * 64 / 10000.0)) < 1e-12);
    QVERIFY(std::abs(adaptive_kl_update(0.2, 3.0, 6.0, 10000, 64) - 0.2 * (1 - 0.2 * 64 / 10000.0)) < 1e-12);
    QCOMPARE(lr_multiplier("constant", 5, 0, 10), 1.0);
    QCOMPARE(lr_multiplier("linear", 5, 0, 10), 0.5);
    QCOMPARE(lr_multiplier("linear", 0, 2, 10), 0.5);
    QVERIFY(std::abs(lr_multiplier("cosine", 5, 0, 10) - 0.5) < 1e-12);
  }
};

QTEST_GUILESS_MAIN(TestPpoMath)
#include "test_ppo_math.moc"
