#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <c10/core/InferenceMode.h>
#include <QTest>

#include <memory>

#include "core/models/llama.h"
#include "core/models/llava.h"
#include "support/snapshot.h"

using namespace icet::models;

#define CHECK_CLOSE(a, b, what)                    \
  do {                                             \
    const QString why = mismatch((a), (b), what);  \
    QVERIFY2(why.isEmpty(), qPrintable(why));      \
  } while (false)

// The long-prompt paths of LlamaModel::forward (attention in blocks of (row, kv group), causal
// query tiles that skip masked keys, row groups for inference over many long rows) against
// the plainest path: one position at a time through the KV cache, where none of them applies
// (T = 1). On the LLaVA fixture's text model (hidden 64, 4 query / 2 kv heads, MLP 96).
class TestAttentionBlocks : public QObject {
  Q_OBJECT

 private:
  std::unique_ptr<LlavaModel> m_model;
  const LlamaModel& lm() const { return m_model->language_model(); }

  // [B,T,H] embeddings of random ids, as a prompt would give.
  at::Tensor embeds(int64_t B, int64_t T, uint64_t seed) const {
    at::manual_seed(seed);
    return lm().embed(at::randint(0, lm().config().vocab_size, {B, T}, at::kLong));
  }
  static at::Tensor positions(int64_t B, int64_t from, int64_t T) {
    return at::arange(from, from + T, at::kLong).view({1, T}).expand({B, T}).contiguous();
  }

  // Hidden states [B,T,H] one position at a time.
  at::Tensor stepwise(const at::Tensor& x) const {
    const int64_t B = x.size(0), T = x.size(1);
    KvCache cache = lm().make_cache(B, T);
    std::vector<at::Tensor> out;
    for (int64_t t = 0; t < T; ++t) out.push_back(lm().forward(x.narrow(1, t, 1), positions(B, t, 1), &cache));
    return at::cat(out, 1);
  }

  // Empty when a and b agree within 1e-4 (float32, different summation orders); else why not.
  static QString mismatch(const at::Tensor& a, const at::Tensor& b, const char* what) {
    if (a.sizes() != b.sizes()) return QString::fromUtf8(what) + QStringLiteral(": shapes differ");
    const double diff = (a - b).abs().max().item<double>();
    return diff < 1e-4 ? QString()
                       : QString::fromUtf8(what) + QStringLiteral(": max |diff| %1 (expected < 1e-4)").arg(diff);
  }

 private Q_SLOTS:
  void initTestCase() { m_model = load_llava(icet::test::fixture("llava"), LoadOptions{}); }

  // 600 positions: three query tiles; 2 x 600 x 600 scores per (row, group) pair, so the rows
  // are blocked one at a time.
  void tiledPrefillMatchesStepwise() {
    c10::InferenceMode guard;
    const at::Tensor x = embeds(3, 600, 1);
    KvCache cache = lm().make_cache(3, 600);
    const at::Tensor once = lm().forward(x, positions(3, 0, 600), &cache);
    QCOMPARE(cache.length, int64_t{600});
    CHECK_CLOSE(once, stepwise(x), "600-position prefill vs one position at a time");
  }

  // 1,100 positions: one (row, group) pair's scores exceed the block, so groups are split too.
  void groupSplitMatchesStepwise() {
    c10::InferenceMode guard;
    const at::Tensor x = embeds(2, 1100, 2);
    CHECK_CLOSE(lm().forward(x, positions(2, 0, 1100)), stepwise(x), "1,100-position prefill vs stepwise");
  }

  // A prefill that continues a cached prefix: the tiles' key ranges start after P positions.
  void prefillAfterPrefixMatchesOneShot() {
    c10::InferenceMode guard;
    const at::Tensor x = embeds(2, 700, 3);
    KvCache cache = lm().make_cache(2, 700);
    const at::Tensor a = lm().forward(x.narrow(1, 0, 300), positions(2, 0, 300), &cache);
    const at::Tensor b = lm().forward(x.narrow(1, 300, 400), positions(2, 300, 400), &cache);
    CHECK_CLOSE(at::cat({a, b}, 1), lm().forward(x, positions(2, 0, 700)), "prefix then 400 positions vs one shot");
  }

  // 64 rows x 700 positions x MLP 96 is over the row-group budget: rows go through in groups,
  // each writing its own rows of the cache; decoding on from that cache must agree too.
  void rowGroupsMatchSingleRows() {
    c10::InferenceMode guard;
    const int64_t B = 64, T = 700;
    const at::Tensor x = embeds(B, T, 4);
    KvCache cache = lm().make_cache(B, T + 1);
    const at::Tensor all = lm().forward(x, positions(B, 0, T), &cache);
    // The last position alone (a prefill's only read), without the [B,T,H] concatenation.
    QVERIFY(at::equal(lm().forward(x, positions(B, 0, T), nullptr, {}, /*last_only=*/true), all.narrow(1, T - 1, 1)));
    const at::Tensor next = embeds(B, 1, 5);
    const at::Tensor step = lm().forward(next, positions(B, T, 1), &cache);
    for (int64_t r : {int64_t{0}, int64_t{37}, B - 1}) {
      KvCache one = lm().make_cache(1, T + 1);
      CHECK_CLOSE(all.narrow(0, r, 1), lm().forward(x.narrow(0, r, 1), positions(1, 0, T), &one), "row of a group");
      CHECK_CLOSE(step.narrow(0, r, 1), lm().forward(next.narrow(0, r, 1), positions(1, T, 1), &one),
                  "decode step after a grouped prefill");
    }
  }

  // Left padding with a key mask (judges' batches): a padded row's real positions equal the
  // same tokens on their own, with tiles cutting through the padding.
  void keyMaskWithTiles() {
    c10::InferenceMode guard;
    const int64_t T = 600, pad = 150;
    const at::Tensor x = embeds(2, T, 6);
    at::Tensor mask = at::ones({2, T}, at::kLong);
    mask[1].narrow(0, 0, pad).zero_();
    at::Tensor pos = positions(2, 0, T);
    pos[1].narrow(0, pad, T - pad).copy_(at::arange(0, T - pad, at::kLong));
    pos[1].narrow(0, 0, pad).fill_(1);  // padding positions, as HF gives them: never attended to
    const at::Tensor batched = lm().forward(x, pos, nullptr, mask);
    const at::Tensor alone = lm().forward(x.narrow(0, 1, 1).narrow(1, pad, T - pad), positions(1, 0, T - pad));
    CHECK_CLOSE(batched.narrow(0, 1, 1).narrow(1, pad, T - pad), alone, "left-padded row vs alone");
    CHECK_CLOSE(batched.narrow(0, 0, 1), lm().forward(x.narrow(0, 0, 1), positions(1, 0, T)), "unpadded row");
  }
};

QTEST_GUILESS_MAIN(TestAttentionBlocks)
#include "test_attention_blocks.moc"
