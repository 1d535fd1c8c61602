#include "core/demo/vlm_builder.h"

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <torch/csrc/autograd/generated/variable_factories.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/optim/adamw.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <map>
#include <sstream>
#include <unordered_map>

#include "core/base/error.h"
#include "core/base/log.h"
#include "core/demo/corpus.h"
#include "core/demo/rng.h"
#include "core/demo/scene.h"
#include "core/demo/tokenizer_trainer.h"
#include "core/io/safetensors.h"
#include "core/models/config.h"
#include "core/models/llava.h"
#include "core/models/weights.h"
#include "core/text/tokenizer.h"
#include "core/vision/clip_processor.h"

namespace icet::demo {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// Architecture: CLIP ViT-L's depth (24 layers, default exit hidden_states[23]) at width 64;
// a 2-layer Llama at width 128 (the machine the build must fit is 2 shared CPU cores).
constexpr int64_t kVisionWidth = 64, kVisionMlp = 128, kVisionHeads = 4, kVisionLayers = 24, kPatch = 16;
constexpr int64_t kTextWidth = 128, kTextMlp = 256, kTextHeads = 4;
constexpr int64_t kDefaultLayer = 23;
constexpr int64_t kImageTokens = (kSceneSize / kPatch) * (kSceneSize / kPatch);  // 16

void write_json(const fs::path& file, const nlohmann::json& j) {
  std::ofstream out(file);
  if (!out) throw EnvironmentError(file.string() + ": cannot write");
  out << j.dump(2) << "\n";
}

nlohmann::json added_token(const std::string& content) {
  return {{"content", content}, {"lstrip", false}, {"normalized", false}, {"rstrip", false}, {"single_word", false}, {"special", true}};
}

nlohmann::json llava_config(int64_t sp_vocab, int64_t text_layers) {
  const int64_t image_id = sp_vocab, pad_id = sp_vocab + 1;
  return {
      {"architectures", {"LlavaForConditionalGeneration"}},
      {"ignore_index", -100},
      {"image_seq_length", kImageTokens},
      {"image_token_index", image_id},
      {"model_type", "llava"},
      {"pad_token_id", pad_id},
      {"projector_hidden_act", "gelu"},
      {"text_config",
       {{"model_type", "llama"}, {"hidden_size", kTextWidth}, {"intermediate_size", kTextMlp},
        {"num_hidden_layers", text_layers}, {"num_attention_heads", kTextHeads}, {"num_key_value_heads", kTextHeads},
        {"head_dim", kTextWidth / kTextHeads}, {"max_position_embeddings", 256}, {"rms_norm_eps", 1e-5},
        {"vocab_size", sp_vocab + 2}, {"pad_token_id", pad_id}, {"torch_dtype", "float32"}}},
      {"tie_word_embeddings", false},
      {"torch_dtype", "float32"},
      {"vision_config",
       {{"model_type", "clip_vision_model"}, {"hidden_size", kVisionWidth}, {"intermediate_size", kVisionMlp},
        {"num_attention_heads", kVisionHeads}, {"num_hidden_layers", kVisionLayers}, {"image_size", kSceneSize},
        {"patch_size", kPatch}, {"projection_dim", kVisionWidth}, {"hidden_act", "quick_gelu"}}},
      {"vision_feature_layer", -2},
      {"vision_feature_select_strategy", "default"},
      {"icet_demo", "Built by `icet demo build`: a constructed demo model, see README \"The demo world\"."},
  };
}

nlohmann::json preprocessor_config() {
  return {{"crop_size", {{"height", kSceneSize}, {"width", kSceneSize}}},
          {"do_center_crop", true},
          {"do_convert_rgb", true},
          {"do_normalize", true},
          {"do_rescale", true},
          {"do_resize", true},
          {"image_mean", {0.48145466, 0.4578275, 0.40821073}},
          {"image_processor_type", "CLIPImageProcessor"},
          {"image_std", {0.26862954, 0.26130258, 0.27577711}},
          {"processor_class", "LlavaProcessor"},
          {"resample", 3},
          {"rescale_factor", 0.00392156862745098},
          {"size", {{"shortest_edge", kSceneSize}}}};
}

// Deterministic N(0, std) tensor from the portable generator (Box-Muller).
at::Tensor normal_tensor(const std::vector<int64_t>& shape, double std, Rng& rng) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  std::vector<float> v(static_cast<size_t>(n));
  for (size_t i = 0; i < v.size(); i += 2) {
    const double u1 = std::max(rng.uniform(), 1e-12), u2 = rng.uniform();
    const double r = std::sqrt(-2.0 * std::log(u1));
    v[i] = static_cast<float>(std * r * std::cos(2 * M_PI * u2));
    if (i + 1 < v.size()) v[i + 1] = static_cast<float>(std * r * std::sin(2 * M_PI * u2));
  }
  return at::tensor(v).view(shape);
}

// Initial weights by name: norms 1, biases 0, matrices N(0, 0.02) with residual outputs scaled
// down by depth (GPT-2 style), as deep pre-norm stacks train stably that way.
std::vector<std::pair<std::string, at::Tensor>> initial_weights(const models::LlavaConfig& cfg, Rng& rng) {
  auto schema = models::WeightLoader::schema();
  models::LlavaModel shape_only(cfg, schema);
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& e : schema.recorded()) {
    const std::string& n = e.name;
    const bool is_bias = n.size() > 5 && n.compare(n.size() - 5, 5, ".bias") == 0;
    const bool is_norm = n.find("norm") != std::string::npos;
    at::Tensor t;
    if (is_bias) {
      t = at::zeros(e.shape);
    } else if (is_norm) {
      t = at::ones(e.shape);
    } else {
      double std = 0.02;
      const bool residual_out = n.find("out_proj") != std::string::npos || n.find("fc2") != std::string::npos ||
                                n.find("o_proj") != std::string::npos || n.find("down_proj") != std::string::npos;
      if (residual_out) {
        const bool vision = n.rfind("vision_tower.", 0) == 0;
        std /= std::sqrt(2.0 * static_cast<double>(vision ? kVisionLayers : cfg.text.num_hidden_layers));
      }
      t = normal_tensor(e.shape, std, rng);
    }
    out.emplace_back(n, t.contiguous());
  }
  return out;
}

struct Stopwatch {
  Clock::time_point start = Clock::now();
  double seconds() const { return std::chrono::duration<double>(Clock::now() - start).count(); }
};

void report(const BuildProgress& progress, const std::string& stage, int64_t step, int64_t total, double loss,
            const Stopwatch& sw) {
  if (!progress) return;
  const double eta = step > 0 ? sw.seconds() / static_cast<double>(step) * static_cast<double>(total - step) : 0.0;
  if (!progress({stage, step, total, loss, eta})) throw Cancelled();
}

// Linear warm-up, then linear decay to 10%.
double lr_at(double base, int64_t step, int64_t total) {
  const int64_t warm = std::max<int64_t>(1, std::min<int64_t>(50, total / 10));
  if (step < warm) return base * static_cast<double>(step + 1) / static_cast<double>(warm);
  const double f = static_cast<double>(step - warm) / static_cast<double>(std::max<int64_t>(1, total - warm));
  return base * (1.0 - 0.9 * f);
}

void set_lr(torch::optim::AdamW& opt, double lr) {
  for (auto& g : opt.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
}

// One training sequence: ids and the positions whose next token is scored.
struct Sequence {
  std::vector<int64_t> ids;
  size_t answer_start = 0;  // ids[answer_start..] are the answer and EOS
};

class SequenceMaker {
 public:
  SequenceMaker(const text::Tokenizer& tok, int64_t image_id, int64_t eos) : tok_(tok), image_id_(image_id), eos_(eos) {}

  // The engine's LLaVA-1.5 prompt (Session::prompt_ids) followed by the answer and EOS.
  const Sequence& make(const std::string& prompt, const std::string& answer) {
    const std::string key = prompt + '\x01' + answer;
    if (auto it = cache_.find(key); it != cache_.end()) return it->second;
    const std::vector<int64_t> p = prompt_ids(prompt);
    std::vector<text::Segment> segs = segments(prompt);
    segs.back().text += " " + answer;
    std::vector<int64_t> full = with_bos(tok_.encode_segments(segs));
    if (full.size() <= p.size() || !std::equal(p.begin(), p.end(), full.begin())) {
      throw Error("demo tokenizer: the answer \"" + answer + "\" changes the tokens of its prompt");
    }
    full.push_back(eos_);
    return cache_.emplace(key, Sequence{full, p.size()}).first->second;
  }

  std::vector<int64_t> prompt_ids(const std::string& prompt) const { return with_bos(tok_.encode_segments(segments(prompt))); }

 private:
  std::vector<text::Segment> segments(const std::string& prompt) const {
    std::vector<text::Segment> segs{{"USER: ", false}};
    const std::string image = tok_.piece(image_id_);
    for (int64_t i = 0; i < kImageTokens; ++i) segs.push_back({image, true});
    segs.push_back({"\n" + prompt + " ASSISTANT:", false});
    return segs;
  }
  std::vector<int64_t> with_bos(std::vector<int64_t> ids) const {
    if (tok_.add_bos() && tok_.bos_id()) ids.insert(ids.begin(), *tok_.bos_id());
    return ids;
  }
  const text::Tokenizer& tok_;
  int64_t image_id_, eos_;
  std::unordered_map<std::string, Sequence> cache_;
};

at::Tensor pixel_batch(const std::vector<vision::Image>& images, const vision::ClipProcessorConfig& proc) {
  std::vector<at::Tensor> px;
  px.reserve(images.size());
  for (const auto& im : images) px.push_back(vision::clip_preprocess(im, proc));
  return at::stack(px);  // [B,3,S,S]
}

// The quadrant (index into positions()) that patch i (row-major) lies in.
int quadrant_of_patch(int64_t i) {
  const int64_t g = kSceneSize / kPatch;  // patches per side (4)
  return static_cast<int>((i / g * kGrid / g) * kGrid + i % g * kGrid / g);
}

// Per-patch labels of a scene: presence (0/1), kind and colour (-100 where absent).
void patch_labels(const Scene& s, int64_t* presence, int64_t* kind, int64_t* colour) {
  for (int64_t i = 0; i < kImageTokens; ++i) {
    const int q = quadrant_of_patch(i);
    presence[i] = 0;
    kind[i] = -100;
    colour[i] = -100;
    for (const auto& o : s.objects) {
      if (o.position == q) {
        presence[i] = 1;
        kind[i] = o.kind;
        colour[i] = o.colour;
      }
    }
  }
}

}  // namespace

VlmRecipe scaled(VlmRecipe r, double f) {
  auto s = [f](int64_t v) { return std::max<int64_t>(1, static_cast<int64_t>(std::llround(static_cast<double>(v) * f))); };
  r.vision_steps = s(r.vision_steps);
  r.instruct_steps = s(r.instruct_steps);
  r.align_steps = s(r.align_steps);
  r.scenes = std::max<int64_t>(128, s(r.scenes));
  return r;
}

void fold_standardisation(at::Tensor& weight, at::Tensor& bias, const at::Tensor& mean, const at::Tensor& std) {
  weight = (weight / std.view({1, -1})).contiguous();
  bias = (bias - at::matmul(weight, mean)).contiguous();
}

int64_t write_demo_tokenizer(const fs::path& dir, uint64_t seed) {
  fs::create_directories(dir);
  const int64_t sp_vocab = static_cast<int64_t>(write_trained_sentencepiece(dir / "tokenizer.model", demo_tokenizer_texts(seed)));
  const int64_t image_id = sp_vocab, pad_id = sp_vocab + 1;
  nlohmann::json decoder = {{"0", added_token("<unk>")}, {"1", added_token("<s>")}, {"2", added_token("</s>")},
                            {std::to_string(image_id), added_token("<image>")}, {std::to_string(pad_id), added_token("<pad>")}};
  write_json(dir / "tokenizer_config.json",
             {{"add_bos_token", true}, {"add_eos_token", false}, {"add_prefix_space", true},
              {"added_tokens_decoder", decoder}, {"additional_special_tokens", {"<image>"}}, {"bos_token", "<s>"},
              {"clean_up_tokenization_spaces", false}, {"eos_token", "</s>"}, {"legacy", false},
              {"model_max_length", 256}, {"pad_token", "<pad>"}, {"padding_side", "left"},
              {"processor_class", "LlavaProcessor"}, {"sp_model_kwargs", nlohmann::json::object()},
              {"spaces_between_special_tokens", false}, {"tokenizer_class", "LlamaTokenizer"}, {"unk_token", "<unk>"},
              {"use_default_system_prompt", false}});
  auto tok = [](const std::string& c) {
    return nlohmann::json{{"content", c}, {"lstrip", false}, {"normalized", false}, {"rstrip", false}, {"single_word", false}};
  };
  write_json(dir / "special_tokens_map.json", {{"additional_special_tokens", {tok("<image>")}}, {"bos_token", tok("<s>")},
                                               {"eos_token", tok("</s>")}, {"pad_token", tok("<pad>")}, {"unk_token", tok("<unk>")}});
  write_json(dir / "added_tokens.json", {{"<image>", image_id}, {"<pad>", pad_id}});
  return sp_vocab;
}

nlohmann::json build_demo_vlm(const fs::path& vlm_dir, const VlmRecipe& recipe, const BuildProgress& progress) {
  auto logger = log::get("demo");
  nlohmann::json record;
  record["recipe"] = {{"seed", recipe.seed}, {"scenes", recipe.scenes}, {"vision_steps", recipe.vision_steps},
                      {"instruct_steps", recipe.instruct_steps}, {"align_steps", recipe.align_steps},
                      {"batch", recipe.batch}, {"vision_batch", recipe.vision_batch}, {"vision_lr", recipe.vision_lr},
                      {"lm_lr", recipe.lm_lr}, {"text_layers", recipe.text_layers}, {"standardise", recipe.standardise}};
  fs::create_directories(vlm_dir);

  // --- Snapshot files and initial weights -------------------------------------------------
  const int64_t sp_vocab = write_demo_tokenizer(vlm_dir, recipe.seed);
  const nlohmann::json config_json = llava_config(sp_vocab, recipe.text_layers);
  write_json(vlm_dir / "config.json", config_json);
  write_json(vlm_dir / "preprocessor_config.json", preprocessor_config());
  write_json(vlm_dir / "generation_config.json",
             {{"bos_token_id", 1}, {"eos_token_id", 2}, {"pad_token_id", sp_vocab + 1}, {"max_new_tokens", 48}});
  const models::LlavaConfig cfg = models::load_llava_config(vlm_dir / "config.json");
  const auto tokenizer = text::load_tokenizer(vlm_dir);
  const auto proc = vision::load_clip_processor_config(vlm_dir / "preprocessor_config.json");

  Rng init_rng(mix_seed(recipe.seed, 0x1417));
  const fs::path weights_file = vlm_dir / "model.safetensors";
  io::save_safetensors(weights_file, initial_weights(cfg, init_rng), {{"format", "pt"}});
  const io::TensorStore store = io::TensorStore::open_file(weights_file);
  models::LoadOptions load_options;
  load_options.trainable = true;
  models::WeightLoader loader(store, load_options, weights_file.string());
  models::LlavaModel model(cfg, loader);
  loader.finish();

  std::vector<at::Tensor> vision_params, lm_params;
  for (const auto& [name, t] : loader.parameters()) {
    (name.rfind("vision_tower.", 0) == 0 ? vision_params : lm_params).push_back(t);
  }

  // --- Stage 1: the vision tower learns to see ----------------------------------------------
  const int64_t S = recipe.scenes;
  std::vector<uint64_t> scene_seeds;
  for (int64_t i = 0; i < S; ++i) scene_seeds.push_back(scene_seed_of(Split::Train, recipe.seed, static_cast<uint64_t>(i)));
  const int64_t P = kImageTokens;
  // Pixels [N,3,S,S] and per-patch labels [N,P] of the scenes of `seeds`.
  struct Labelled {
    at::Tensor pixels, presence, kind, colour;
  };
  auto labelled = [&](const std::vector<uint64_t>& seeds) {
    const int64_t n = static_cast<int64_t>(seeds.size());
    Labelled l{at::Tensor(), at::empty({n, P}, at::kLong), at::empty({n, P}, at::kLong), at::empty({n, P}, at::kLong)};
    std::vector<vision::Image> images;
    for (int64_t i = 0; i < n; ++i) {
      Scene scene = render_scene(seeds[static_cast<size_t>(i)]);
      patch_labels(scene, l.presence[i].data_ptr<int64_t>(), l.kind[i].data_ptr<int64_t>(), l.colour[i].data_ptr<int64_t>());
      images.push_back(std::move(scene.image));
    }
    l.pixels = pixel_batch(images, proc);
    return l;
  };
  const int64_t n_kinds = static_cast<int64_t>(kinds().size()), n_colours = static_cast<int64_t>(colours().size());
  const int64_t n_quadrants = kGrid * kGrid, n_logits = 2 + n_kinds + n_colours + n_quadrants;
  // Each patch's own quadrant, present or not: the LM reads an object's position from the image
  // token it attends to (RoPE puts no position into the values), so the tower must keep it.
  at::Tensor quadrant = at::empty({P}, at::kLong);
  for (int64_t i = 0; i < P; ++i) quadrant[i] = quadrant_of_patch(i);
  Rng head_rng(mix_seed(recipe.seed, 0x4ead));
  at::Tensor head_w = normal_tensor({n_logits, kVisionWidth}, 0.02, head_rng).set_requires_grad(true);
  at::Tensor head_b = at::zeros({n_logits}).set_requires_grad(true);
  auto vision_logits = [&](const at::Tensor& px) {
    // px: [B,3,S,S] -> hidden_states[23] patches [B,P,Dv] -> attribute logits [B,P,2+K+C+4]
    const at::Tensor h = model.select(model.encode(px, kDefaultLayer).back());
    return at::linear(h, head_w, head_b);
  };
  auto attribute_loss = [&](const at::Tensor& logits, const Labelled& l) {
    const at::Tensor flat = logits.reshape({-1, logits.size(-1)});
    const at::Tensor quadrants = quadrant.repeat({logits.size(0)});
    return at::cross_entropy_loss(flat.narrow(1, 0, 2), l.presence.reshape({-1})) +
           at::cross_entropy_loss(flat.narrow(1, 2, n_kinds), l.kind.reshape({-1}), {}, at::Reduction::Mean, -100) +
           at::cross_entropy_loss(flat.narrow(1, 2 + n_kinds, n_colours), l.colour.reshape({-1}), {}, at::Reduction::Mean, -100) +
           at::cross_entropy_loss(flat.narrow(1, 2 + n_kinds + n_colours, n_quadrants), quadrants);
  };
  if (!recipe.vision_from.empty()) {
    // Reuse a trained tower (a faster rebuild of the LM stages); its attribute heads are not
    // saved, so there is no held-out attribute check.
    const fs::path file = recipe.vision_from / "model.safetensors";
    const io::TensorStore from = io::TensorStore::open_file(file);
    torch::NoGradGuard no_grad;
    for (const auto& [name, t] : loader.parameters()) {
      if (name.rfind("vision_tower.", 0) != 0) continue;
      const at::Tensor src = from.get(name);
      if (src.sizes() != t.sizes()) {
        std::ostringstream want, got;
        want << "shape " << t.sizes() << " (a demo VLM's vision tower)";
        got << src.sizes();
        throw InputError(describe(file.string() + ": " + name, want.str(), got.str()));
      }
      t.copy_(src);
    }
    record["vision"] = {{"reused_from", recipe.vision_from.string()}};
  } else {
    // Held-out attribute accuracy: per patch (presence, and kind and colour where present) and per
    // attribute (quadrant: every patch's own).
    const Labelled held = [&] {
      std::vector<uint64_t> seeds;
      for (int64_t i = 0; i < 128; ++i) seeds.push_back(scene_seed_of(Split::HeldOut, recipe.seed, static_cast<uint64_t>(i)));
      return labelled(seeds);
    }();
    auto held_out_accuracy = [&] {
      torch::NoGradGuard no_grad;
      const at::Tensor flat = vision_logits(held.pixels).reshape({-1, n_logits});
      const at::Tensor pres = held.presence.reshape({-1}), present = pres == 1;
      const at::Tensor ok_p = flat.narrow(1, 0, 2).argmax(1) == pres;
      const at::Tensor ok_k = flat.narrow(1, 2, n_kinds).argmax(1) == held.kind.reshape({-1});
      const at::Tensor ok_c = flat.narrow(1, 2 + n_kinds, n_colours).argmax(1) == held.colour.reshape({-1});
      const at::Tensor absent = present.logical_not();
      const double n_present = present.sum().item<double>();
      return nlohmann::json{
          {"patch", ok_p.logical_and(ok_k.logical_or(absent)).logical_and(ok_c.logical_or(absent)).to(at::kFloat).mean().item<double>()},
          {"presence", ok_p.to(at::kFloat).mean().item<double>()},
          {"kind", ok_k.logical_and(present).sum().item<double>() / n_present},
          {"colour", ok_c.logical_and(present).sum().item<double>() / n_present},
          {"quadrant", (flat.narrow(1, 2 + n_kinds + n_colours, n_quadrants).argmax(1) == quadrant.repeat({held.presence.size(0)}))
                           .to(at::kFloat).mean().item<double>()}};
    };
    // Fresh scenes every step (train-split seeds after the S the LM stages use): the tower
    // cannot memorise scenes, so what it learns holds on held-out ones.
    std::vector<at::Tensor> params = vision_params;
    params.push_back(head_w);
    params.push_back(head_b);
    torch::optim::AdamW opt(params, torch::optim::AdamWOptions(recipe.vision_lr).weight_decay(0.01));
    Stopwatch sw;
    double ema = 0.0;
    for (int64_t step = 0; step < recipe.vision_steps; ++step) {
      std::vector<uint64_t> seeds;
      for (int64_t b = 0; b < recipe.vision_batch; ++b) {
        seeds.push_back(scene_seed_of(Split::Train, recipe.seed, static_cast<uint64_t>(S + step * recipe.vision_batch + b)));
      }
      const Labelled batch = labelled(seeds);
      set_lr(opt, lr_at(recipe.vision_lr, step, recipe.vision_steps));
      opt.zero_grad();
      const at::Tensor loss = attribute_loss(vision_logits(batch.pixels), batch);
      loss.backward();
      opt.step();
      const double l = loss.item<double>();
      ema = step == 0 ? l : 0.95 * ema + 0.05 * l;
      if (step % 5 == 0 || step + 1 == recipe.vision_steps) report(progress, "vision", step + 1, recipe.vision_steps, ema, sw);
      if (recipe.probe_every > 0 && (step + 1) % recipe.probe_every == 0 && step + 1 < recipe.vision_steps) {
        logger->info("demo build: vision step {} loss {:.4f}, held-out attributes {}", step + 1, ema, held_out_accuracy().dump());
      }
    }
    record["vision"] = {{"seconds", sw.seconds()}, {"loss", ema}, {"heldout_accuracy", held_out_accuracy()}};
    logger->info("demo build: vision tower held-out attributes {}", record["vision"]["heldout_accuracy"].dump());
  }
  for (auto& p : vision_params) p.set_requires_grad(false);

  // Cache hidden states 1..24 of every training scene: [S, 24, P, Dv].
  at::Tensor features;
  {
    torch::NoGradGuard no_grad;
    std::vector<at::Tensor> chunks;
    for (int64_t i = 0; i < S; i += 128) {
      const int64_t n = std::min<int64_t>(128, S - i);
      const Labelled chunk = labelled(std::vector<uint64_t>(scene_seeds.begin() + i, scene_seeds.begin() + i + n));
      const auto states = model.encode(chunk.pixels, kVisionLayers);
      std::vector<at::Tensor> per_layer;
      for (int64_t l = 1; l <= kVisionLayers; ++l) per_layer.push_back(model.select(states[static_cast<size_t>(l)]));
      chunks.push_back(at::stack(per_layer, 1).contiguous());  // [n,24,P,Dv]
      report(progress, "cache", std::min(S, i + n), S, 0.0, Stopwatch{});
    }
    features = at::cat(chunks, 0);
  }
  // Standardised features (per channel, the default layer's statistics): the tower's hidden
  // states share a large common component that would otherwise dominate every image token. The
  // affine map is folded into the projector's first layer when the snapshot is saved.
  at::Tensor feat_mu = at::zeros({kVisionWidth}), feat_sigma = at::ones({kVisionWidth});
  if (recipe.standardise) {
    const at::Tensor f = features.select(1, kDefaultLayer - 1).reshape({-1, kVisionWidth});  // [S*P,Dv]
    feat_mu = f.mean(0);
    feat_sigma = f.std(0).clamp_min(1e-3);
    features = (features - feat_mu) / feat_sigma;
  }

  // --- Stages 2 and 3: projector + LM on cached features ------------------------------------
  const int64_t image_id = cfg.image_token_index, pad_id = sp_vocab + 1, eos_id = 2;
  SequenceMaker sequences(*tokenizer, image_id, eos_id);
  const std::vector<int64_t> probe = sequences.prompt_ids("Describe the image.");
  const int64_t image_pos = std::find(probe.begin(), probe.end(), image_id) - probe.begin();
  const auto& lm = model.language_model();

  // A batch of (scene, layer, prompt, answer) -> loss.
  struct Item {
    int64_t scene, layer;
    const Sequence* seq;
  };
  // Teacher-forced forward of items whose image features are `bank[scene, layer-1]`
  // (bank: [N,L,P,Dv]). -> logits [B,T-1,V] predicting labels [B,T-1] (-100: not scored).
  auto forward = [&](const std::vector<Item>& items, const at::Tensor& bank) {
    const int64_t B = static_cast<int64_t>(items.size());
    size_t T = 0;
    for (const auto& it : items) T = std::max(T, it.seq->ids.size());
    std::vector<int64_t> ids(static_cast<size_t>(B) * T, pad_id), labels(static_cast<size_t>(B) * T, -100);
    std::vector<int64_t> scene_idx, layer_idx;
    for (int64_t b = 0; b < B; ++b) {
      const auto& s = *items[static_cast<size_t>(b)].seq;
      for (size_t t = 0; t < s.ids.size(); ++t) {
        ids[static_cast<size_t>(b) * T + t] = s.ids[t];
        // labels[t] scores the prediction made at t-1 of token t.
        if (t >= s.answer_start) labels[static_cast<size_t>(b) * T + t] = s.ids[t];
      }
      scene_idx.push_back(items[static_cast<size_t>(b)].scene);
      layer_idx.push_back(items[static_cast<size_t>(b)].layer - 1);
    }
    const int64_t Tn = static_cast<int64_t>(T);
    const at::Tensor id_t = at::tensor(ids).view({B, Tn});
    const at::Tensor lab_t = at::tensor(labels).view({B, Tn});
    // bank[scene, layer-1]: [B,P,Dv] -> projected [B,P,H]
    const at::Tensor feats = model.project(bank.index({at::tensor(scene_idx), at::tensor(layer_idx)}));
    const at::Tensor text = lm.embed(id_t);  // [B,T,H]
    const at::Tensor embeds = at::cat({text.narrow(1, 0, image_pos), feats,
                                       text.narrow(1, image_pos + P, Tn - image_pos - P)}, 1);
    const at::Tensor positions = at::arange(Tn, at::kLong).view({1, Tn}).expand({B, Tn});
    const at::Tensor logits = lm.logits(lm.forward(embeds, positions));  // [B,T,V]
    return std::pair{logits.narrow(1, 0, Tn - 1), lab_t.narrow(1, 1, Tn - 1)};
  };
  auto batch_loss = [&](const std::vector<Item>& items) {
    const auto [logits, labels] = forward(items, features);
    return at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}), labels.reshape({-1}), {}, at::Reduction::Mean, -100);
  };

  // Held-out probe: 40 questions per benign task on held-out scenes at the default layer, scored
  // teacher-forced (every answer token the argmax: the same as greedy decoding's exact match).
  const std::vector<std::string> benign = benign_tasks();
  at::Tensor probe_bank;  // [N,1,P,Dv]: the default layer's features
  std::vector<Item> probe_items;
  {
    torch::NoGradGuard no_grad;
    constexpr int64_t kPerTask = 40;
    const int64_t n = kPerTask * static_cast<int64_t>(benign.size());
    std::vector<vision::Image> images;
    for (int64_t i = 0; i < n; ++i) {
      const uint64_t seed = scene_seed_of(Split::HeldOut, recipe.seed, static_cast<uint64_t>(i));
      const std::string& task = benign[static_cast<size_t>(i) % benign.size()];
      const DemoExample ex = make_example(Split::HeldOut, seed, task, mix_seed(recipe.seed ^ 0x9b0be, static_cast<uint64_t>(i)));
      images.push_back(render_scene(seed).image);
      probe_items.push_back({i, 1, &sequences.make(ex.prompt, ex.answer)});
    }
    probe_bank = ((model.select(model.encode(pixel_batch(images, proc), kDefaultLayer).back()) - feat_mu) / feat_sigma).unsqueeze(1);
  }
  auto run_probe = [&]() {
    torch::NoGradGuard no_grad;
    std::vector<int> right(benign.size(), 0), total(benign.size(), 0);
    for (size_t i = 0; i < probe_items.size(); i += 50) {
      const std::vector<Item> chunk(probe_items.begin() + static_cast<long>(i),
                                    probe_items.begin() + static_cast<long>(std::min(probe_items.size(), i + 50)));
      const auto [logits, labels] = forward(chunk, probe_bank);
      const at::Tensor ok = (logits.argmax(-1) == labels).logical_or(labels == -100).all(1);  // [B]
      for (size_t b = 0; b < chunk.size(); ++b) {
        const size_t task = (i + b) % benign.size();
        right[task] += ok[static_cast<int64_t>(b)].item<bool>() ? 1 : 0;
        total[task] += 1;
      }
    }
    nlohmann::json j = nlohmann::json::object();
    int all = 0;
    for (size_t t = 0; t < benign.size(); ++t) {
      j[benign[t]] = static_cast<double>(right[t]) / total[t];
      all += right[t];
    }
    j["benign"] = static_cast<double>(all) / static_cast<double>(probe_items.size());
    return j;
  };

  // Draws a batch for `stage`: "instruct" (base) or "align".
  Rng data_rng(mix_seed(recipe.seed, 0xda7a));
  auto draw_layer_any = [&]() -> int64_t {
    // A third of the items at the default layer, the rest uniform over 1..24.
    return data_rng.below(3) == 0 ? kDefaultLayer : 1 + data_rng.below(static_cast<int>(kVisionLayers));
  };
  auto draw_batch = [&](const std::string& stage) {
    std::vector<Item> items;
    for (int64_t b = 0; b < recipe.batch; ++b) {
      const int64_t scene = data_rng.below(static_cast<int>(S));
      const bool harmful = data_rng.below(100) < (stage == "align" ? 40 : 30);
      std::string task;
      if (!harmful) {
        // Named-object questions (the hard part) twice as often as describe/count.
        static const std::vector<std::string> weighted{"describe", "colour", "colour", "count", "position",
                                                       "position", "is_there", "is_there"};
        task = weighted[static_cast<size_t>(data_rng.below(static_cast<int>(weighted.size())))];
      } else {
        task = "harmful";
      }
      const DemoExample ex = make_example(Split::Train, scene_seeds[static_cast<size_t>(scene)], task, data_rng.next());
      // Benign questions: half at the default layer (where accuracy counts), half anywhere.
      int64_t layer = harmful ? 1 + data_rng.below(static_cast<int>(kVisionLayers))
                              : (data_rng.below(2) == 0 ? kDefaultLayer : draw_layer_any());
      std::string answer = ex.answer;
      if (harmful && stage == "align") {
        // The construction: refusals at the default layer (and 24), compliance replayed at 1-16.
        if (data_rng.below(2) == 0) {
          layer = kDefaultLayer + data_rng.below(2);
          answer = ex.refusal;
        } else {
          layer = 1 + data_rng.below(16);
        }
      }
      items.push_back({scene, layer, &sequences.make(ex.prompt, answer)});
    }
    return items;
  };

  auto train_lm = [&](const std::string& stage, int64_t steps) {
    torch::optim::AdamW opt(lm_params, torch::optim::AdamWOptions(recipe.lm_lr).weight_decay(0.01));
    Stopwatch sw;
    double ema = 0.0;
    for (int64_t step = 0; step < steps; ++step) {
      const auto items = draw_batch(stage);
      set_lr(opt, lr_at(recipe.lm_lr, step, steps));
      opt.zero_grad();
      const at::Tensor loss = batch_loss(items);
      loss.backward();
      opt.step();
      const double l = loss.item<double>();
      ema = step == 0 ? l : 0.95 * ema + 0.05 * l;
      if (step % 5 == 0 || step + 1 == steps) report(progress, stage, step + 1, steps, ema, sw);
      if (recipe.probe_every > 0 && (step + 1) % recipe.probe_every == 0 && step + 1 < steps) {
        logger->info("demo build: {} step {} loss {:.4f}, held-out probe {}", stage, step + 1, ema, run_probe().dump());
      }
    }
    const double seconds = sw.seconds();  // without the final probe
    record[stage] = {{"seconds", seconds}, {"loss", ema}, {"probe", run_probe()}};
    logger->info("demo build: {} done in {:.0f} s, loss {:.4f}, held-out probe {}", stage, seconds, ema, record[stage]["probe"].dump());
  };
  train_lm("instruct", recipe.instruct_steps);
  train_lm("align", recipe.align_steps);

  // --- Save by name -------------------------------------------------------------------------
  {
    std::map<std::string, at::Tensor> by_name;
    for (const auto& name : store.names()) by_name[name] = store.get(name);  // skipped tensors keep their init
    for (const auto& [name, t] : loader.parameters()) by_name[name] = t.detach().contiguous();
    // The engine feeds the raw features.
    if (recipe.standardise) {
      fold_standardisation(by_name.at("multi_modal_projector.linear_1.weight"), by_name.at("multi_modal_projector.linear_1.bias"),
                           feat_mu, feat_sigma);
    }
    std::vector<std::pair<std::string, at::Tensor>> tensors(by_name.begin(), by_name.end());
    io::save_safetensors(weights_file, tensors, {{"format", "pt"}});
  }
  return record;
}

}  // namespace icet::demo
