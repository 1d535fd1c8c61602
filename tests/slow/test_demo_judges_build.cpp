#include <QTest>

#include <chrono>
#include <cstdlib>
#include <filesystem>

#include "core/demo/corpus.h"
#include "core/demo/judges.h"
#include "core/demo/tokenizer_trainer.h"
#include "core/safety/llama_guard.h"
#include "core/safety/reward_model.h"

namespace fs = std::filesystem;

// Each build takes minutes: lift Qt Test's 5-minute watchdog (read when the tests start).
static const bool kLongFunctions = qputenv("QTEST_FUNCTION_TIMEOUT", "3600000");

// Builds the demo guard and reward model from scratch (the `icet demo build` recipe for the
// judges), times it and measures both on held-out examples. ICET_DEMO_JUDGES_OUT=<dir> keeps
// the result there (that is how models/demo/guard and models/demo/reward were made).
class TestDemoJudgesBuild : public QObject {
  Q_OBJECT

 private:
  static constexpr uint64_t kSeed = 1;

  fs::path outDir() const {
    const char* env = std::getenv("ICET_DEMO_JUDGES_OUT");
    return env != nullptr ? fs::path(env) : fs::path(ICET_TEST_ARTIFACTS) / "demo_judges";
  }

  static icet::demo::BuildProgress progress() {
    return [](const icet::demo::BuildStatus& s) {
      if (s.step % 100 == 0 || s.step == s.total) {
        qInfo("%s %lld/%lld loss %.4f eta %.0f s", s.stage.c_str(), static_cast<long long>(s.step),
              static_cast<long long>(s.total), s.loss, s.eta_seconds);
      }
      return true;
    };
  }

  static double seconds_since(std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
  }

 private Q_SLOTS:
  void initTestCase() {
    // Minutes of training per model: a measurement, run on demand rather than in every ctest.
    if (std::getenv("ICET_SLOW_BUILDS") == nullptr) {
      QSKIP("set ICET_SLOW_BUILDS=1 to rebuild and measure the demo judges (about 10 minutes on 2 cores)");
    }
  }

  // Two independent builds (run them as two processes to use two cores:
  // `test_demo_judges_build buildsTheReward` and `test_demo_judges_build buildsTheGuard`).
  void buildsTheReward() {
    const fs::path out = outDir();
    fs::create_directories(out);
    const auto train = icet::demo::make_examples(icet::demo::Split::Train, 3000, kSeed);
    const auto held_out = icet::demo::make_examples(icet::demo::Split::HeldOut, 300, kSeed);
    auto t0 = std::chrono::steady_clock::now();
    icet::demo::build_demo_reward(out / "reward", train, kSeed, progress());
    const double reward_s = seconds_since(t0);
    const auto rm = icet::safety::RewardModel::load(out / "reward");
    const auto rr = icet::demo::evaluate_reward(*rm, held_out);
    qInfo("reward: built in %.1f s; held-out pairwise accuracy %.4f (%lld pairs), mean margin %.2f", reward_s,
          rr.pairs.rate(), static_cast<long long>(rr.pairs.total), rr.mean_margin);
    for (const auto& [kind, t] : rr.by_kind) qInfo("  %-40s %.4f (%lld)", kind.c_str(), t.rate(), static_cast<long long>(t.total));
    // The committed build (one thread) measured 98.1%; other thread counts train a slightly
    // different model, so this rebuild asserts a floor below issue 5's 98%.
    QVERIFY2(rr.pairs.rate() >= 0.97, QByteArray::number(rr.pairs.rate()).constData());
  }

  void buildsTheGuard() {
    const fs::path out = outDir();
    fs::create_directories(out);
    const auto train = icet::demo::make_examples(icet::demo::Split::Train, 3000, kSeed);
    const auto held_out = icet::demo::make_examples(icet::demo::Split::HeldOut, 300, kSeed);
    const fs::path sp = out / "tokenizer.model";
    icet::demo::write_trained_sentencepiece(sp, icet::demo::demo_tokenizer_texts(kSeed));
    auto t0 = std::chrono::steady_clock::now();
    icet::demo::build_demo_guard(out / "guard", train, sp, kSeed, progress());
    const double guard_s = seconds_since(t0);
    const auto judge = icet::safety::LlamaGuardJudge::load(out / "guard");
    t0 = std::chrono::steady_clock::now();
    const auto gr = icet::demo::evaluate_guard(*judge, held_out);
    qInfo("guard: built in %.1f s; held-out agreement %.4f (%lld conversations, judged in %.1f s), categories %.4f, "
          "unparsed %lld",
          guard_s, gr.verdicts.rate(), static_cast<long long>(gr.verdicts.total), seconds_since(t0),
          gr.categories.rate(), static_cast<long long>(gr.unparsed));
    for (const auto& [kind, t] : gr.by_kind) qInfo("  %-20s %.4f (%lld)", kind.c_str(), t.rate(), static_cast<long long>(t.total));
    QVERIFY(gr.verdicts.rate() >= 0.98);
    QCOMPARE(gr.unparsed, int64_t{0});
  }
};

QTEST_GUILESS_MAIN(TestDemoJudgesBuild)
#include "test_demo_judges_build.moc"
