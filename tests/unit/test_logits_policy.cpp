#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <QJsonArray>
#include <QJsonDocument>
#include <QJsonObject>
#include <QTemporaryDir>
#include <QTest>
#include <c10/core/InferenceMode.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>

#include "core/engine/session.h"
#include "core/generate/decode.h"
#include "core/generate/sampling_params.h"
#include "core/io/safetensors.h"
#include "core/models/llama.h"
#include "core/models/llava_next.h"
#include "core/runtime/threads.h"
#include "core/vision/image.h"
#include "support/cli.h"
#include "support/compare.h"
#include "support/errors.h"

namespace fs = std::filesystem;
using icet::generate::LogitsPolicy;

// generate::LogitsPolicy: "clean" never emits the image token nor the padded vocabulary rows
// past the tokenizer; "hf" emits HF transformers' tokens exactly, padded ids included.
//
// The llava_next fixture (vocab 400, tokenizer 386 entries, image token 384) has no step where
// HF picks a padded id, and transformers cannot run on this machine (no PyPI) to make a new
// reference. So the padded case is built here: a copy of the checkpoint whose lm_head row 390
// is a multiple of the row of the token HF generated first, so 390 wins the first step. Its
// reference is HF's greedy definition (transformers 4.47 generate(do_sample=False, num_beams=1);
// llava-hf's generation_config sets no logits processors: argmax over all V rows at every step)
// evaluated on our logits, which test_llava_next_parity checks against HF's within 1e-4: a
// cache-free loop that runs the whole sequence through the model at each step. On the
// unmodified fixture both policies must give HF's recorded tokens at every layer.
class TestLogitsPolicy : public QObject {
  Q_OBJECT

 private:
  const fs::path m_dir = fs::path(ICET_FIXTURES) / "hf-reference" / "llava_next";
  const std::string m_prompt = "What is in the picture?";
  static constexpr int64_t kPadded = 390;      // a padded row: 386 <= id < 400
  static constexpr int64_t kImageToken = 384;
  static constexpr int64_t kTokenizerSize = 386;
  static constexpr int64_t kSteps = 8;         // as the references
  QTemporaryDir m_tmp;
  fs::path m_padded;  // the copy whose padded row wins the first step
  std::shared_ptr<icet::io::SafetensorsFile> m_refs;
  int64_t m_first = 0;  // HF's first token at the default layer

  at::Tensor ref(const std::string& name) const { return m_refs->tensor(name); }

  static icet::generate::SamplingParams greedy(LogitsPolicy policy) {
    icet::generate::SamplingParams p;
    p.max_new_tokens = kSteps;
    p.stop_at_eos = false;  // the references ignore EOS
    p.logits_policy = policy;
    return p;
  }

  // The fixture with lm_head row kPadded = c x row m_first, c chosen so its logit is larger
  // whenever m_first's is the largest: 3 for a positive logit, 1/3 for a negative one.
  fs::path writePaddedCopy() const {
    const fs::path dst = fs::path(m_tmp.path().toStdString()) / "llava_next_padded";
    fs::create_directories(dst);
    for (const auto& e : fs::directory_iterator(m_dir)) {
      const std::string name = e.path().filename().string();
      if (name != "model.safetensors" && name != "refs.json" && name != "refs.safetensors") {
        fs::copy_file(e.path(), dst / name);
      }
    }
    const double logit = ref("logits_last.default")[m_first].item<double>();
    const double c = logit > 0 ? 3.0 : 1.0 / 3.0;
    qInfo("HF's first token %lld has logit %.4f; row %lld = %.3g x its row", static_cast<long long>(m_first), logit,
          static_cast<long long>(kPadded), c);
    const auto st = icet::io::SafetensorsFile::open(m_dir / "model.safetensors");
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    for (const std::string& name : st->names()) {
      at::Tensor t = st->tensor(name);
      if (name == "language_model.lm_head.weight") {
        t = t.clone();
        t[kPadded].copy_(t[m_first] * c);
      }
      tensors.emplace_back(name, t);
    }
    icet::io::save_safetensors(dst / "model.safetensors", tensors, st->metadata());
    return dst;
  }

  // HF's greedy definition without a KV cache, from the reference inputs: the prompt embeds
  // (image features merged, as HF's prefill) then the LM's embedding of each generated id (as
  // HF's decode steps), all positions through the model at every step, argmax over all V.
  // `margins` gets the winning logit minus the runner-up at each step.
  static std::vector<int64_t> hfGreedy(const icet::models::LlavaNextModel& model, const at::Tensor& pixel_values,
                                       const at::Tensor& input_ids, int64_t layer, std::vector<double>& margins) {
    c10::InferenceMode guard;
    const auto states = model.encode(pixel_values, layer);                                      // 5 tiles
    const at::Tensor features = model.pack(model.project(model.select(states.back())), 48, 64);  // [113,H]
    const auto& lm = model.language_model();
    at::Tensor embeds = model.merge(input_ids, features.unsqueeze(0));  // [1,T,H]
    std::vector<int64_t> ids;
    for (int64_t s = 0; s < kSteps; ++s) {
      const int64_t T = embeds.size(1);
      const at::Tensor positions = at::arange(T, at::kLong).unsqueeze(0);
      const at::Tensor logits = lm.logits(lm.forward(embeds, positions))[0][T - 1];  // [V], no cache
      const auto top = logits.topk(2);
      const at::Tensor values = std::get<0>(top);
      ids.push_back(std::get<1>(top)[0].item<int64_t>());
      margins.push_back((values[0] - values[1]).item<double>());
      embeds = at::cat({embeds, lm.embed(at::tensor({ids.back()}, at::kLong).view({1, 1}))}, 1);
    }
    return ids;
  }

  icet::test::CliRun runCli(QStringList args) {
    args.prepend(QStringLiteral("--no-log-file"));
    return icet::test::run_cli(args, m_tmp.path());
  }

 private Q_SLOTS:
  void initTestCase() {
    icet::runtime::apply_threads(2);
    QVERIFY(m_tmp.isValid());
    m_refs = icet::io::SafetensorsFile::open(m_dir / "refs.safetensors");
    m_first = ref("generated_ids.default")[0].item<int64_t>();
    QVERIFY(m_first < kTokenizerSize && m_first != kImageToken);
    m_padded = writePaddedCopy();
  }

  void samplingParamsJsonRoundTrip() {
    using icet::generate::SamplingParams;
    QCOMPARE(icet::generate::to_json(SamplingParams{}).at("logits_policy").get<std::string>(), std::string("clean"));
    SamplingParams p;
    p.do_sample = true;
    p.temperature = 0.7;
    p.top_k = 5;
    p.top_p = 0.9;
    p.repetition_penalty = 1.2;
    p.max_new_tokens = 17;
    p.seed = 42;
    p.stop_strings = {"\n\n"};
    p.stop_at_eos = false;
    p.logits_policy = LogitsPolicy::hf;
    const nlohmann::json j = icet::generate::to_json(p);
    QCOMPARE(j.at("logits_policy").get<std::string>(), std::string("hf"));
    const SamplingParams back = icet::generate::sampling_from_json(j, "session.json");
    QCOMPARE(back.do_sample, p.do_sample);
    QCOMPARE(back.temperature, p.temperature);
    QCOMPARE(back.top_k, p.top_k);
    QCOMPARE(back.top_p, p.top_p);
    QCOMPARE(back.repetition_penalty, p.repetition_penalty);
    QCOMPARE(back.max_new_tokens, p.max_new_tokens);
    QCOMPARE(back.seed, p.seed);
    QCOMPARE(back.stop_strings, p.stop_strings);
    QCOMPARE(back.stop_at_eos, p.stop_at_eos);
    QVERIFY(back.logits_policy == LogitsPolicy::hf);

    // A record saved before the key existed reads as today's behaviour.
    nlohmann::json old = j;
    old.erase("logits_policy");
    QVERIFY(icet::generate::sampling_from_json(old, "session.json").logits_policy == LogitsPolicy::clean);
  }

  void samplingParamsBadPolicyIsAnInputError() {
    nlohmann::json j = icet::generate::to_json({});
    j["logits_policy"] = "greedy";
    const std::string e = icet::test::input_error_of([&] { icet::generate::sampling_from_json(j, "session.json"); });
    QVERIFY2(e.find("session.json: key 'logits_policy'") != std::string::npos, e.c_str());
    QVERIFY2(e.find("\"clean\" or \"hf\"") != std::string::npos, e.c_str());
    QVERIFY2(e.find("\"greedy\"") != std::string::npos, e.c_str());
    j["logits_policy"] = 1;
    const std::string t = icet::test::input_error_of([&] { icet::generate::sampling_from_json(j, "session.json"); });
    QVERIFY2(t.find("key 'logits_policy'") != std::string::npos, t.c_str());
  }

  // (c) Without a winning padded row the policies agree, and both give HF's tokens.
  void bothPoliciesMatchHuggingFaceOnTheFixture() {
    auto session = icet::engine::Session::open(m_dir, {"cpu", "float32"});
    session->set_image(icet::vision::load_image(m_dir / "image.png"));
    for (const char* c : {"default", "1", "2", "3", "4", "5", "6"}) {
      const std::string choice = c;
      const std::optional<int64_t> layer =
          choice == "default" ? std::nullopt : std::optional<int64_t>(std::stoll(choice));
      const auto expected = icet::test::to_ids(ref("generated_ids." + choice));
      for (LogitsPolicy policy : {LogitsPolicy::clean, LogitsPolicy::hf}) {
        const auto r = session->generate(m_prompt, layer, greedy(policy));
        QVERIFY2(r.token_ids == expected,
                 (std::string("layer ") + c + ", policy " + icet::generate::logits_policy_name(policy)).c_str());
      }
    }
  }

  // (a) HF picks the padded id: "hf" gives HF's greedy tokens, 390 first.
  void hfPolicyEmitsThePaddedIdAsHuggingFaceDoes() {
    const auto model = icet::models::load_llava_next(m_padded, {});
    std::vector<double> margins;
    const auto expected = hfGreedy(*model, ref("inputs.pixel_values")[0], ref("inputs.input_ids")[0],
                                   model->config().base.default_exit_layer(), margins);
    QCOMPARE(expected.front(), kPadded);
    for (size_t s = 0; s < margins.size(); ++s) {
      // Far above the 1e-4 logit parity: no step is a near tie that rounding could flip.
      QVERIFY2(margins[s] > 1e-2, ("step " + std::to_string(s) + " margin " + std::to_string(margins[s])).c_str());
    }
    auto session = icet::engine::Session::open(m_padded, {"cpu", "float32"});
    session->set_image(icet::vision::load_image(m_dir / "image.png"));
    QCOMPARE(session->prompt_ids(m_prompt), icet::test::to_ids(ref("inputs.input_ids")));
    const auto r = session->generate(m_prompt, std::nullopt, greedy(LogitsPolicy::hf));
    QCOMPARE(r.token_ids, expected);
    QCOMPARE(r.token_ids.front(), kPadded);
    // The policy is part of the replay record (session bundles save it).
    QCOMPARE(icet::engine::to_json(r).at("sampling").at("logits_policy").get<std::string>(), std::string("hf"));
    std::string ids;
    for (int64_t id : expected) ids += std::to_string(id) + " ";
    qInfo("hf greedy on the padded copy: %s(min margin %.3f); text \"%s\"", ids.c_str(),
          *std::min_element(margins.begin(), margins.end()), r.text.c_str());
  }

  // (b) "clean" never emits a padded id nor the image token. Only the banned row 390 changed,
  // so the clean answer is HF's answer on the unmodified fixture.
  void cleanPolicyNeverEmitsPaddedOrImageIds() {
    auto session = icet::engine::Session::open(m_padded, {"cpu", "float32"});
    session->set_image(icet::vision::load_image(m_dir / "image.png"));
    const auto r = session->generate(m_prompt, std::nullopt, greedy(LogitsPolicy::clean));
    QCOMPARE(static_cast<int64_t>(r.token_ids.size()), kSteps);
    for (int64_t id : r.token_ids) {
      QVERIFY(id < kTokenizerSize);
      QVERIFY(id != kImageToken);
    }
    QCOMPARE(r.token_ids, icet::test::to_ids(ref("generated_ids.default")));
    QCOMPARE(icet::engine::to_json(r).at("sampling").at("logits_policy").get<std::string>(), std::string("clean"));
  }

  // One batch may mix policies: each row follows its own (the masking is per row).
  void decodeRowsFollowTheirOwnPolicy() {
    const auto model = icet::models::load_llava_next(m_padded, {});
    std::vector<double> margins;
    const int64_t layer = model->config().base.default_exit_layer();
    const auto expected_hf =
        hfGreedy(*model, ref("inputs.pixel_values")[0], ref("inputs.input_ids")[0], layer, margins);
    c10::InferenceMode guard;
    const auto states = model->encode(ref("inputs.pixel_values")[0], layer);
    const at::Tensor features = model->pack(model->project(model->select(states.back())), 48, 64);
    icet::generate::DecodeRequest req;
    req.lm = &model->language_model();
    req.prompt_embeds = model->merge(ref("inputs.input_ids")[0], features.unsqueeze(0)).expand({3, -1, -1}).contiguous();
    req.params = {greedy(LogitsPolicy::hf), greedy(LogitsPolicy::clean), greedy(LogitsPolicy::hf)};
    req.suppress_ids = {kImageToken};
    req.suppress_from = kTokenizerSize;
    req.context_limit = 4096;
    const auto rows = icet::generate::run_decode(req);
    QCOMPARE(rows[0].tokens, expected_hf);
    QCOMPARE(rows[1].tokens, icet::test::to_ids(ref("generated_ids.default")));
    QCOMPARE(rows[2].tokens, expected_hf);
  }

  void cliLogitsPolicyOption() {
    const QString model = QString::fromStdString(m_padded.string());
    const QString image = QString::fromStdString((m_dir / "image.png").string());
    for (const QString& policy : {QStringLiteral("hf"), QStringLiteral("clean")}) {
      const auto r = runCli({QStringLiteral("generate"), QStringLiteral("--model"), model, QStringLiteral("--image"),
                             image, QStringLiteral("--prompt"), QString::fromStdString(m_prompt),
                             QStringLiteral("--max-new-tokens"), QStringLiteral("2"), QStringLiteral("--logits-policy"),
                             policy, QStringLiteral("--json")});
      QVERIFY2(r.code == 0, r.err.constData());
      const QJsonObject o = QJsonDocument::fromJson(r.out).object();
      const qint64 first = o.value(QStringLiteral("token_ids")).toArray().at(0).toInteger();
      QCOMPARE(first, static_cast<qint64>(policy == QStringLiteral("hf") ? kPadded : m_first));
      const QJsonObject sampling =
          o.value(QStringLiteral("record")).toObject().value(QStringLiteral("sampling")).toObject();
      QCOMPARE(sampling.value(QStringLiteral("logits_policy")).toString(), policy);
    }
    const auto bad = runCli({QStringLiteral("sweep"), QStringLiteral("--model"), model, QStringLiteral("--image"),
                             image, QStringLiteral("--prompt"), QStringLiteral("hi"), QStringLiteral("--logits-policy"),
                             QStringLiteral("exact")});
    QVERIFY(bad.code != 0);
    QVERIFY2(bad.err.contains("--logits-policy") && bad.err.contains("clean") && bad.err.contains("hf"),
             bad.err.constData());
  }
};

QTEST_GUILESS_MAIN(TestLogitsPolicy)
#include "test_logits_policy.moc"
