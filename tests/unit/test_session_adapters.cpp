// Several unmerged LoRA adapters in one engine Session, picked per call: answers with adapter A,
// the base model, adapter B and A again (generate and batched sweep, greedy and sampled) equal,
// token for token, those of sessions that hold only that adapter (or none), on the same cached
// image; records name the adapter; an adapter not added, or a switch away from a merged one, is
// an InputError.
#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <QTemporaryDir>
#include <QTest>

#include <filesystem>

#include "core/engine/session.h"
#include "core/generate/sampling.h"
#include "core/models/llava.h"
#include "core/models/lora.h"
#include "core/vision/image.h"
#include "support/adapter.h"
#include "support/errors.h"
#include "support/snapshot.h"

namespace fs = std::filesystem;
using icet::engine::Session;

class TestSessionAdapters : public QObject {
  Q_OBJECT

 private:
  QTemporaryDir m_tmp;
  fs::path m_a, m_b;
  const std::string m_prompt = "What is in the picture?";

  static fs::path model() { return icet::test::fixture("llava"); }

  // A strong random adapter (as in test_lora): greedy tokens change.
  static void writeAdapter(const fs::path& dir, uint64_t seed) { icet::test::write_random_adapter(model(), dir, seed); }

  std::unique_ptr<Session> open() const {
    auto s = Session::open(model(), {"cpu", "float32"});
    s->set_image(icet::vision::load_image(model() / "image.png"));
    return s;
  }

  static icet::generate::SamplingParams greedy() {
    icet::generate::SamplingParams p;
    p.max_new_tokens = 8;
    p.stop_at_eos = false;
    p.seed = 0;
    return p;
  }

  static icet::generate::SamplingParams sampled() {
    auto p = greedy();
    p.do_sample = true;
    p.temperature = 1.2;
    p.seed = 1234;
    return p;
  }

 private Q_SLOTS:
  void initTestCase() {
    QVERIFY(m_tmp.isValid());
    m_a = fs::path(m_tmp.path().toStdString()) / "run-a" / "adapter";
    m_b = fs::path(m_tmp.path().toStdString()) / "run-b" / "adapter";
    writeAdapter(m_a, 5);
    writeAdapter(m_b, 9);
  }

  void perCallAdaptersEqualSingleAdapterSessions() {
    // References: one session per model variant, the adapter as its default.
    auto base = open();
    auto onlyA = open();
    onlyA->load_adapter(m_a);
    auto onlyB = open();
    onlyB->load_adapter(m_b);

    auto multi = open();  // one image encoding, shared by every adapter below
    const std::string keyA = multi->add_adapter(m_a);
    const std::string keyB = multi->add_adapter(m_b.string() + "/");  // any spelling of the folder
    QCOMPARE(keyB, m_b.string());
    QCOMPARE(multi->adapters(), (std::vector<std::string>{keyA, keyB}));
    QVERIFY(multi->adapter().empty());  // no default: calls that name none use the base model

    for (const auto& params : {greedy(), sampled()}) {
      const auto refA = onlyA->generate(m_prompt, 2, params);
      const auto refBase = base->generate(m_prompt, 2, params);
      const auto refB = onlyB->generate(m_prompt, 2, params);
      QVERIFY2(refA.token_ids != refBase.token_ids, "adapter A must change the answer");
      QVERIFY2(refB.token_ids != refA.token_ids, "adapters A and B must answer differently");

      const auto a1 = multi->generate(m_prompt, 2, params, {}, nullptr, m_a);
      const auto b0 = multi->generate(m_prompt, 2, params, {}, nullptr, fs::path());
      const auto b1 = multi->generate(m_prompt, 2, params, {}, nullptr, m_b);
      const auto a2 = multi->generate(m_prompt, 2, params, {}, nullptr, m_a);
      const auto none = multi->generate(m_prompt, 2, params);  // no default adapter: base
      QCOMPARE(a1.token_ids, refA.token_ids);
      QCOMPARE(b0.token_ids, refBase.token_ids);
      QCOMPARE(b1.token_ids, refB.token_ids);
      QCOMPARE(a2.token_ids, refA.token_ids);
      QCOMPARE(none.token_ids, refBase.token_ids);
      QCOMPARE(a1.adapter, keyA);
      QCOMPARE(b0.adapter, std::string());
      QCOMPARE(b1.adapter, keyB);
      QCOMPARE(refA.adapter, keyA);  // load_adapter's answers name it too
    }

    // Batched sweeps: base, A, base again.
    const std::vector<int64_t> layers = {1, 3, 5};
    const auto sweepBase = base->sweep(m_prompt, layers, greedy());
    const auto sweepA = onlyA->sweep(m_prompt, layers, greedy());
    for (const auto& [choice, ref] : {std::pair{fs::path(), sweepBase}, std::pair{m_a, sweepA},
                                      std::pair{fs::path(), sweepBase}}) {
      const auto rows = multi->sweep(m_prompt, layers, greedy(), {}, nullptr, choice);
      QCOMPARE(rows.size(), ref.size());
      for (size_t i = 0; i < rows.size(); ++i) {
        QCOMPARE(rows[i].token_ids, ref[i].token_ids);
        QCOMPARE(rows[i].adapter, choice.empty() ? std::string() : keyA);
      }
    }

    // A default adapter (load_adapter) answers calls that name none; an explicit choice wins.
    multi->load_adapter(m_b);
    QCOMPARE(multi->generate(m_prompt, 2, greedy()).token_ids, onlyB->generate(m_prompt, 2, greedy()).token_ids);
    QCOMPARE(multi->generate(m_prompt, 2, greedy(), {}, nullptr, m_a).token_ids,
             onlyA->generate(m_prompt, 2, greedy()).token_ids);
    multi->clear_adapter();  // removes B only
    QCOMPARE(multi->adapters(), std::vector<std::string>{keyA});
    multi->remove_adapter(m_a);
    QVERIFY(multi->adapters().empty());
    QCOMPARE(multi->generate(m_prompt, 2, greedy()).token_ids, base->generate(m_prompt, 2, greedy()).token_ids);
  }

  void unknownOrBlockedChoicesAreInputErrors() {
    auto s = open();
    std::string e = icet::test::input_error_of([&] { s->generate(m_prompt, 2, greedy(), {}, nullptr, m_a); });
    QVERIFY2(e.find("not loaded") != std::string::npos && e.find("run-a") != std::string::npos, e.c_str());
    // A merged adapter is in the weights: only it can be chosen.
    s->load_adapter(m_a, true);
    QVERIFY(!s->generate(m_prompt, 2, greedy(), {}, nullptr, m_a).token_ids.empty());
    e = icet::test::input_error_of([&] { s->generate(m_prompt, 2, greedy(), {}, nullptr, fs::path()); });
    QVERIFY2(e.find("merged") != std::string::npos, e.c_str());
    s->clear_adapter();
    QVERIFY(s->generate(m_prompt, 2, greedy(), {}, nullptr, fs::path()).adapter.empty());
  }
};

QTEST_GUILESS_MAIN(TestSessionAdapters)
#include "test_session_adapters.moc"
