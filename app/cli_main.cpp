// icet: the command-line front end. Argument parsing and printing only; the work lives in
// icet_core.
#include <CLI/CLI.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <exception>
#include <iostream>

#include "core/base/error.h"
#include "core/base/log.h"
#include "core/demo/commands.h"
#include "core/demo/paths.h"
#include "core/engine/bench.h"
#include "core/engine/session.h"
#include "core/eval/eval_command.h"
#include "core/eval/import_command.h"
#include "core/io/load_bench.h"
#include "core/rl/commands.h"
#include "core/runtime/diagnostics.h"
#include "core/runtime/blas_kernels.h"
#include "core/runtime/startup.h"
#include "core/safety/commands.h"
#include "core/text/tokenize_command.h"
#include "core/vision/image.h"
#include "icet/version.h"

namespace {

// SIGINT during `icet train`: stop within one minibatch, with a checkpoint.
std::atomic<bool> g_train_cancel{false};
extern "C" void on_train_sigint(int) { g_train_cancel.store(true); }

struct ModelArgs {
  std::string model;
  std::string image;
  std::string prompt;
  std::string device = "auto";
  std::string dtype = "auto";
  std::string prompt_format = "auto";
  int64_t max_new_tokens = 64;
  double temperature = 0.0;  // 0: greedy
  double top_p = 1.0;
  int64_t top_k = 0;
  double repetition_penalty = 1.0;
  int64_t seed = -1;
  std::string logits_policy = "clean";
  bool json = false;
};

void add_model_options(CLI::App* cmd, ModelArgs& a) {
  cmd->add_option("--model", a.model,
                  "Hugging Face snapshot folder (config.json, *.safetensors, tokenizer); default: the demo VLM");
  cmd->add_option("--image", a.image, "Image file (PNG, JPEG, BMP, WebP, ...)")->required();
  cmd->add_option("--prompt", a.prompt, "The user's message; the model's chat template is applied")->required();
  cmd->add_option("--device", a.device, "auto, cpu, cuda or cuda:N");
  cmd->add_option("--dtype", a.dtype, "auto, float32, bfloat16 or float16");
  cmd->add_option("--prompt-format", a.prompt_format,
                  "auto (from the chat template), llava, vicuna, mistral or llama3");
  cmd->add_option("--max-new-tokens", a.max_new_tokens, "Most tokens to generate")->check(CLI::PositiveNumber);
  cmd->add_option("--temperature", a.temperature, "Sampling temperature; 0 = greedy")->check(CLI::NonNegativeNumber);
  cmd->add_option("--top-p", a.top_p, "Nucleus sampling mass (with --temperature)");
  cmd->add_option("--top-k", a.top_k, "Top-k sampling (with --temperature); 0 = off");
  cmd->add_option("--repetition-penalty", a.repetition_penalty, "HF repetition penalty; 1 = off");
  cmd->add_option("--seed", a.seed, "Sampling seed (default: fresh, printed with --json)");
  cmd->add_option("--logits-policy", a.logits_policy,
                  "clean (default): never the image token nor padded vocabulary rows; hf: every id, "
                  "exactly as Hugging Face transformers decodes")
      ->check(CLI::IsMember({"clean", "hf"}));
  cmd->add_flag("--json", a.json, "Print one JSON object");
}

icet::generate::SamplingParams sampling(const ModelArgs& a) {
  icet::generate::SamplingParams p;
  p.do_sample = a.temperature > 0.0;
  p.temperature = a.temperature > 0.0 ? a.temperature : 1.0;
  p.top_p = a.top_p;
  p.top_k = a.top_k;
  p.repetition_penalty = a.repetition_penalty;
  p.max_new_tokens = a.max_new_tokens;
  if (a.seed >= 0) p.seed = static_cast<uint64_t>(a.seed);
  p.logits_policy = icet::generate::parse_logits_policy(a.logits_policy).value_or(icet::generate::LogitsPolicy::clean);
  return p;
}

std::unique_ptr<icet::engine::Session> open_session(const ModelArgs& a) {
  const std::filesystem::path dir = a.model.empty() ? icet::demo::demo_vlm_dir() : std::filesystem::path(a.model);
  auto session = icet::engine::Session::open(dir, {a.device, a.dtype, a.prompt_format});
  session->set_image(icet::vision::load_image(a.image));
  return session;
}

nlohmann::json result_json(const icet::engine::GenerationRecord& r) {
  return {{"layer", r.layer},
          {"token_ids", r.token_ids},
          {"text", r.text},
          {"seed", r.params.seed.value_or(0)},
          {"stop_reason", r.stop_reason},
          {"record", icet::engine::to_json(r)}};
}

}  // namespace

int main(int argc, char** argv) {
  icet::runtime::restart_with_better_blas_kernels(argv);  // before anything else: it may exec
  CLI::App app{"ICET Studio command line: image-encoder early exit for VLM safety", "icet"};
  app.require_subcommand(0, 1);
  app.set_version_flag("--version", std::string("icet ") + icet::kVersion);

  int verbosity = 0;
  int threads = 0;
  std::string log_file;
  bool no_log_file = false;
  app.add_flag("-v,--verbose", verbosity, "More log output (-vv for trace)");
  app.add_option("--threads", threads, "Intra-op CPU threads (default: ICET_THREADS or all)")
      ->check(CLI::PositiveNumber);
  app.add_option("--log-file", log_file, "Log file (default: ~/.local/share/icet/icet-studio/logs/icet.log)");
  app.add_flag("--no-log-file", no_log_file, "Log to the console only");

  CLI::App* info = app.add_subcommand("info", "Print LibTorch, BLAS, thread and CUDA diagnostics");
  bool info_json = false;
  bool info_bench = false;
  info->add_flag("--json", info_json, "Print one JSON object");
  info->add_flag("--matmul", info_bench, "Also measure float32 matmul throughput (512x512)");

  ModelArgs gen_args;
  CLI::App* gen = app.add_subcommand("generate", "Answer a prompt about an image at one encoder exit layer");
  add_model_options(gen, gen_args);
  int64_t gen_layer = 0;
  gen->add_option("--layer", gen_layer, "Exit layer l (ICET-l = hidden_states[l]); default: the model's own");

  ModelArgs sweep_args;
  CLI::App* sweep = app.add_subcommand("sweep", "Answer at every chosen exit layer, as one batch");
  add_model_options(sweep, sweep_args);
  std::string sweep_layers = "all";
  sweep->add_option("--layers", sweep_layers, "Layers: all, 1-24, 3,7,9 or 1-8,20");

  CLI::App* demo = app.add_subcommand("demo", "The built-in demo world (synthetic scenes, demo VLM and judges)");
  demo->require_subcommand(1);
  CLI::App* demo_build = demo->add_subcommand("build", "Train the demo models and write them with the prompt sets");
  icet::demo::DemoBuildOptions demo_build_options;
  std::string demo_out = "models/demo";
  demo_build->add_option("--out", demo_out, "Output folder (default: models/demo)");
  demo_build->add_option("--seed", demo_build_options.seed, "Seed (the build is deterministic for a seed)");
  demo_build->add_option("--scale", demo_build_options.scale, "Step-count factor (e.g. 0.1 for a quick smoke build)")
      ->check(CLI::PositiveNumber);
  demo_build->add_option("--only", demo_build_options.only,
                         "Rebuild only these parts (sets, vlm, guard, reward; comma-separated); the rest are kept")
      ->delimiter(',')
      ->check(CLI::IsMember({"sets", "vlm", "guard", "reward"}));
  demo_build->add_option("--vision-from", demo_build_options.vision_from,
                         "Reuse the vision tower of this demo VLM snapshot (skips the vision stage)")
      ->check(CLI::ExistingDirectory);
  CLI::App* demo_report = demo->add_subcommand("report", "Held-out benign accuracy and ASR at every exit layer");
  icet::demo::DemoReportOptions demo_report_options;
  std::string demo_dir;
  bool demo_json = false;
  demo_report->add_option("--dir", demo_dir, "Demo folder (default: the built-in one)");
  demo_report->add_option("--layers", demo_report_options.layers, "Layers: all, 1-24, 3,7,9");
  demo_report->add_option("--limit", demo_report_options.limit, "Only the first N held-out items");
  std::string demo_report_out;
  demo_report->add_option("--out", demo_report_out, "Also write the evaluation folder (answers.jsonl, report.html, ...)");
  demo_report->add_flag("--json", demo_json, "Print one JSON object");

  CLI::App* tokenize = app.add_subcommand(
      "tokenize", "Tokenize one JSON string per stdin line; print one JSON array of ids per line (no BOS/EOS)");
  std::string tokenizer_path;
  bool tokenize_special = false;
  bool tokenize_json = false;
  tokenize->add_option("--tokenizer", tokenizer_path, "tokenizer.json, tokenizer.model or a snapshot folder")
      ->required();
  tokenize->add_flag("--special", tokenize_special,
                     "Template text: parse special tokens in the text as Hugging Face does by default");
  tokenize->add_flag("--json", tokenize_json, "JSON in and out (the only format; accepted for symmetry)");

  CLI::App* judge = app.add_subcommand("judge", "Safety verdict of a Llama Guard judge on (prompt, response)");
  std::string judge_dir, judge_prompt, judge_response;
  bool judge_json = false;
  judge->add_option("--judge", judge_dir, "Llama Guard snapshot folder")->required();
  judge->add_option("--prompt", judge_prompt, "The user's message")->required();
  judge->add_option("--response", judge_response, "The assistant's answer (omit to judge the prompt alone)");
  judge->add_flag("--json", judge_json, "Print one JSON object");
  std::string judge_device = "auto", judge_dtype = "auto";
  judge->add_option("--device", judge_device, "auto, cpu, cuda or cuda:N");
  judge->add_option("--dtype", judge_dtype, "auto, float32, bfloat16 or float16");

  CLI::App* score = app.add_subcommand("score", "Reward-model score of (prompt, response)");
  std::string rm_dir, score_prompt, score_response;
  bool score_json = false;
  score->add_option("--reward-model", rm_dir, "Reward model snapshot folder (GPT-2 or Llama classifier)")->required();
  score->add_option("--prompt", score_prompt, "The user's message")->required();
  score->add_option("--response", score_response, "The assistant's answer")->required();
  score->add_flag("--json", score_json, "Print one JSON object");
  std::string score_device = "auto", score_dtype = "auto";
  score->add_option("--device", score_device, "auto, cpu, cuda or cuda:N");
  score->add_option("--dtype", score_dtype, "auto, float32, bfloat16 or float16");

  CLI::App* bench = app.add_subcommand("bench", "Benchmarks");
  bench->require_subcommand(1);
  CLI::App* bench_sweep = bench->add_subcommand("sweep", "Sequential per-layer generation vs the batched sweep");
  icet::engine::SweepBenchOptions sweep_bench;
  std::string bench_model;
  bool bench_json = false;
  bench_sweep->add_option("--model", bench_model, "Snapshot folder (default: a synthetic LLaVA-1.5 layout)");
  bench_sweep->add_option("--max-new-tokens", sweep_bench.max_new_tokens, "Tokens per answer")
      ->check(CLI::PositiveNumber);
  bench_sweep->add_option("--repeats", sweep_bench.repeats, "Best of N")->check(CLI::PositiveNumber);
  bench_sweep->add_option("--only", sweep_bench.only,
                          "Time one variant (for profiling); decode: neither sweep, only single generations")
      ->check(CLI::IsMember({"sequential", "batched", "decode"}));
  bench_sweep->add_option("--device", sweep_bench.device, "cpu (default), cuda, cuda:N or auto");
  bench_sweep->add_option("--dtype", sweep_bench.dtype,
                          "float32 (default), bfloat16, float16 (CUDA) or auto; a synthetic checkpoint is "
                          "written in it");
  auto& syn = sweep_bench.synthetic;
  std::string bench_shape;
  bench_sweep->add_option("--shape", bench_shape,
                          "Synthetic checkpoint: a named shape (tiny, llava-1.5-7b: the real model's shape, "
                          "14 GB in bfloat16); the options below change it")
      ->check(CLI::IsMember(icet::engine::SyntheticLlava::names()));
  int64_t bench_image_tokens = 0;
  bench_sweep->add_option("--image-size", syn.image_size, "Synthetic checkpoint: image side in pixels (336: LLaVA-1.5)")
      ->check(CLI::PositiveNumber);
  bench_sweep->add_option("--patch-size", syn.patch_size, "Synthetic checkpoint: patch side (14: LLaVA-1.5)")
      ->check(CLI::PositiveNumber);
  bench_sweep->add_option("--image-tokens", bench_image_tokens,
                          "Synthetic checkpoint: image tokens, a square (576: LLaVA-1.5); sets --image-size")
      ->check(CLI::PositiveNumber);
  bench_sweep->add_option("--vision-width", syn.vision_hidden, "Synthetic checkpoint: vision hidden size")
      ->check(CLI::PositiveNumber);
  bench_sweep->add_option("--text-width", syn.text_hidden, "Synthetic checkpoint: text hidden size")
      ->check(CLI::PositiveNumber);
  bench_sweep->add_option("--text-layers", syn.text_layers, "Synthetic checkpoint: text layers")
      ->check(CLI::PositiveNumber);
  bench_sweep->add_flag("--json", bench_json, "Print one JSON object");
  CLI::App* bench_judge = bench->add_subcommand("judge", "Verdicts per second, batched vs one by one");
  std::string bench_judge_dir;
  int64_t bench_conversations = 8;
  bench_judge->add_option("--judge", bench_judge_dir, "Llama Guard snapshot folder")->required();
  bench_judge->add_option("--conversations", bench_conversations, "Conversations per pass")->check(CLI::PositiveNumber);
  bench_judge->add_flag("--json", bench_json, "Print one JSON object");
  CLI::App* bench_load = bench->add_subcommand("load", "Safetensors load time and peak RSS");
  std::string load_file;
  bench_load->add_option("file", load_file, "A .safetensors file (default: generate a 2 GB one)");
  bench_load->add_flag("--json", bench_json, "Print one JSON object");

  // Public evaluation sets as downloaded -> prompt sets (core/eval/import_command.h).
  CLI::App* importc = app.add_subcommand(
      "import", "Convert a public set (JailBreakV-28K, RedTeam-2K, AdvBench, images x prompts, VQA-v2, XSTest) "
                "into a prompt set");
  icet::eval::ImportCommand import_cmd;
  std::vector<std::string> import_format_names;
  for (const char* const* p = icet::eval::import_formats(); *p != nullptr; ++p) import_format_names.emplace_back(*p);
  bool import_json = false;
  importc->add_option("format", import_cmd.format, "Source format")->required()->check(CLI::IsMember(import_format_names));
  importc->add_option("--out", import_cmd.out, "Prompt set to write (.jsonl or .csv)")->required();
  importc->add_option("--csv", import_cmd.csv, "The set's CSV (jailbreakv, redteam2k, advbench, xstest)");
  importc->add_option("--questions", import_cmd.questions, "VQA-v2 questions JSON");
  importc->add_option("--annotations", import_cmd.annotations, "VQA-v2 annotations JSON");
  importc->add_option("--prompts", import_cmd.prompts, "Text file, one prompt a line (images-x-prompts)");
  importc->add_option("--images", import_cmd.images, "Image folder (advbench, images-x-prompts, vqa-v2)");
  importc->add_option("--image", import_cmd.image,
                      "The image for text-only sets (redteam2k, xstest; default: a blank one beside --out)");
  importc->add_option("--image-root", import_cmd.image_root, "jailbreakv: folder image_path is relative to");
  importc->add_option("--query-column", import_cmd.query_column,
                      "jailbreakv: jailbreak_query (default) or redteam_query; redteam2k: question");
  importc->add_option("--image-pattern", import_cmd.image_pattern, "vqa-v2 image file names (default COCO_val2014_%012d.jpg)");
  importc->add_option("--prompt-suffix", import_cmd.prompt_suffix, "vqa-v2: appended to each question");
  importc->add_option("--seed", import_cmd.seed, "Seed of the AdvBench image pairing and of --sample");
  importc->add_option("--sample", import_cmd.sample, "Keep N seeded-random items (0: all)");
  importc->add_flag("--safe-only", import_cmd.safe_only, "xstest: only the safe prompts (over-refusal)");
  importc->add_flag("--benign", import_cmd.benign, "images-x-prompts: the prompts are benign");
  importc->add_flag("--json", import_json, "Print the summary as one JSON line");

  // L-PPO training, evaluation and benchmark (core/rl/commands.h).
  CLI::App* train = app.add_subcommand("train", "L-PPO (or SFT baseline) training run with a progress bar");
  std::string train_config, train_out, train_resume;
  int64_t train_max_steps = 0;
  bool train_json = false;
  train->add_option("--config", train_config, "Run config (JSON), e.g. models/demo/lppo.json");
  train->add_option("--out", train_out, "Run folder (default: runs/<config>-<time>)");
  train->add_option("--resume", train_resume, "Continue the run in this folder");
  train->add_option("--max-steps", train_max_steps, "Stop at this step")->check(CLI::PositiveNumber);
  train->add_flag("--json", train_json, "Print a JSON summary at the end (no progress bar)");
  std::string train_layers, train_schedule;
  int64_t train_seed = -1;
  train->add_option("--layers", train_layers, "Exit layers, e.g. 1-12, 3,7,9 or all (overrides the config)");
  train->add_option("--schedule", train_schedule,
                    "Layer schedule: fixed (one run per layer), set, cycle, random (every layer), curriculum")
      ->check(CLI::IsMember({"fixed", "set", "uniform", "cycle", "random", "curriculum"}));
  train->add_option("--seed", train_seed, "Seed (overrides the config)")->check(CLI::NonNegativeNumber);
  CLI::App* evalc = app.add_subcommand(
      "eval", "Per-layer ASR, refusal, over-refusal, accuracy and reward with 95% intervals on a prompt set");
  icet::eval::EvalCommand eval_cmd;
  std::string eval_model, eval_set, eval_judge, eval_reward, eval_out;
  std::vector<std::string> eval_adapters;
  bool eval_json = false, eval_no_base = false;
  evalc->add_option("--model", eval_model, "VLM snapshot folder");
  evalc->add_option("--set", eval_set, "Prompt set (JSONL/CSV; `icet import` writes them)");
  evalc->add_option("--adapter", eval_adapters, "PEFT LoRA folder answered beside the base model (repeatable)");
  evalc->add_flag("--no-base", eval_no_base, "Answer with the adapters only");
  evalc->add_option("--judge", eval_judge, "Llama Guard folder or 'placeholder' (default: guard/ beside the model)");
  evalc->add_option("--reward", eval_reward, "Reward-model folder (the paper's total reward TR)");
  evalc->add_option("--layers", eval_cmd.plan.layers, "Layers: all, 1-12, 3,7,9 (default: all; the default layer is added)");
  evalc->add_option("--max-new-tokens", eval_cmd.plan.max_new_tokens, "Tokens per answer (greedy)")->check(CLI::PositiveNumber);
  evalc->add_option("--max-prompts", eval_cmd.plan.limit, "Use the first N prompts (0: all)");
  evalc->add_option("--device", eval_cmd.plan.device, "auto, cpu, cuda or cuda:N (the VLM, judge and reward model)");
  evalc->add_option("--dtype", eval_cmd.plan.dtype, "auto, float32, bfloat16 or float16 (the VLM, judge and reward model)");
  evalc->add_option("--out", eval_out,
                    "Output folder: answers.jsonl (resumed when rerun), metrics.json/.csv, answers.csv, report.html");
  evalc->add_flag("--restart", eval_cmd.plan.restart, "Discard the answers already in --out");
  evalc->add_flag("--report-only", eval_cmd.report_only, "Recompute metrics and exports from --out's answers (no model)");
  evalc->add_flag("--normalised", eval_cmd.plan.normalised_answers, "Compare exact answers after VQA normalisation");
  evalc->add_option("--resamples", eval_cmd.plan.metrics.resamples, "Bootstrap resamples for the intervals (0: none)");
  evalc->add_option("--seed", eval_cmd.plan.metrics.seed, "Bootstrap seed");
  evalc->add_flag("--json", eval_json, "Print one JSON object (no progress bar)");
  CLI::App* bench_train = bench->add_subcommand("train", "L-PPO rollouts/s, update time per sample, peak RSS");
  icet::rl::TrainBenchOptions train_bench;
  std::string bench_train_config;
  bench_train->add_option("--config", bench_train_config, "Run config (default: models/demo/lppo.json)");
  bench_train->add_option("--steps", train_bench.steps, "Steps to time")->check(CLI::PositiveNumber);
  bench_train->add_flag("--json", bench_json, "Print one JSON object");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (app.get_subcommands().empty()) {
    std::cout << app.help();
    return 0;
  }

  try {
    icet::runtime::StartupOptions startup;
    startup.executable = "icet";
    startup.verbosity = verbosity;
    startup.quiet_console = true;
    if (threads > 0) startup.threads_option = threads;
    if (no_log_file) {
      startup.log_file = std::filesystem::path();
    } else if (!log_file.empty()) {
      startup.log_file = std::filesystem::path(log_file);
    }
    const auto runtime_info = icet::runtime::start(startup);

    if (info->parsed()) {
      double gflops = 0.0;
      if (info_bench) gflops = icet::runtime::measure_cpu_matmul_gflops(512, 5);
      if (info_json) {
        auto j = icet::runtime::to_json(runtime_info);
        if (info_bench) j["cpu_matmul_512_gflops"] = gflops;
        std::cout << j.dump(2) << "\n";
      } else {
        std::cout << icet::runtime::to_text(runtime_info);
        if (info_bench) std::printf("  CPU matmul        %.1f GFLOP/s (float32, 512x512, best of 5)\n", gflops);
      }
    } else if (gen->parsed()) {
      auto session = open_session(gen_args);
      icet::engine::StreamCallback stream;
      if (!gen_args.json) {
        stream = [](const icet::engine::StreamEvent& e) {
          std::cout << e.text << std::flush;
        };
      }
      const std::optional<int64_t> layer = gen_layer > 0 ? std::optional<int64_t>(gen_layer) : std::nullopt;
      const auto r = session->generate(gen_args.prompt, layer, sampling(gen_args), stream);
      if (gen_args.json) {
        std::cout << result_json(r).dump() << "\n";
      } else {
        std::cout << "\n";
      }
    } else if (sweep->parsed()) {
      auto session = open_session(sweep_args);
      const auto layers = icet::engine::parse_layers(sweep_layers, session->summary().vision_layers);
      const auto rows = session->sweep(sweep_args.prompt, layers, sampling(sweep_args));
      if (sweep_args.json) {
        nlohmann::json results = nlohmann::json::array();
        for (const auto& r : rows) results.push_back(result_json(r));
        std::cout << nlohmann::json{{"model", icet::engine::to_json(session->summary())}, {"results", results}}.dump()
                  << "\n";
      } else {
        // Mllama's exit policy is an assumption (models/README.md): say so next to the results.
        if (session->summary().family == "mllama") std::cout << "note: " << session->summary().exit_policy << "\n";
        for (const auto& r : rows) {
          std::cout << "ICET-" << r.layer << (r.layer == session->summary().default_layer ? " (default)" : "")
                    << ": " << r.text << "\n";
        }
      }
    } else if (judge->parsed()) {
      const auto j = icet::safety::run_judge(judge_dir, judge_prompt, judge_response, judge_device, judge_dtype);
      if (judge_json) {
        std::cout << j.dump() << "\n";
      } else {
        std::cout << (j.at("unsafe").get<bool>() ? "unsafe" : "safe") << " (P(unsafe) = " << j.at("p_unsafe").get<double>()
                  << ")";
        for (const auto& c : j.at("categories")) std::cout << " " << c.get<std::string>();
        std::cout << "\n";
      }
    } else if (score->parsed()) {
      const auto j = icet::safety::run_score(rm_dir, score_prompt, score_response, score_device, score_dtype);
      std::cout << (score_json ? j.dump() : std::to_string(j.at("reward").get<double>())) << "\n";
    } else if (bench_judge->parsed()) {
      const auto j = icet::safety::run_judge_benchmark(bench_judge_dir, bench_conversations);
      std::cout << (bench_json ? j.dump() : j.dump(2)) << "\n";
    } else if (demo_build->parsed()) {
      demo_build_options.out = demo_out;
      const auto j = icet::demo::run_demo_build(demo_build_options, [](const icet::demo::BuildStatus& st) {
        std::fprintf(stderr, "\r%-8s %6lld/%-6lld loss %7.4f  ETA %5.0f s   ", st.stage.c_str(),
                     static_cast<long long>(st.step), static_cast<long long>(st.total), st.loss, st.eta_seconds);
        if (st.step == st.total) std::fprintf(stderr, "\n");
        return true;
      });
      std::cout << j.dump(2) << "\n";
    } else if (demo_report->parsed()) {
      if (!demo_dir.empty()) demo_report_options.demo_dir = demo_dir;
      if (!demo_report_out.empty()) demo_report_options.out = std::filesystem::path(demo_report_out);
      const auto j = icet::demo::run_demo_report(demo_report_options);
      if (demo_json) {
        std::cout << j.dump() << "\n";
      } else {
        std::printf("default layer %lld: benign accuracy %.1f%%  (judge: %s)\n\n",
                    static_cast<long long>(j.at("default_layer").get<int64_t>()),
                    100.0 * j.value("benign_accuracy", 0.0), j.at("judge_id").get<std::string>().c_str());
        std::cout << icet::eval::format_eval_tables(j);
        if (!j.at("guard_agreement").is_null()) std::printf("guard agreement %.1f%%\n", 100.0 * j.at("guard_agreement").get<double>());
        if (!j.at("reward_pairwise_accuracy").is_null())
          std::printf("reward pairwise accuracy %.1f%%\n", 100.0 * j.at("reward_pairwise_accuracy").get<double>());
      }
    } else if (tokenize->parsed()) {
      return icet::text::run_tokenize_command(tokenizer_path, tokenize_special, std::cin, std::cout);
    } else if (bench_sweep->parsed()) {
      if (!bench_model.empty()) sweep_bench.model = std::filesystem::path(bench_model);
      if (!bench_shape.empty()) {
        // The named shape, then the size options given on the command line over it.
        auto shape = icet::engine::SyntheticLlava::named(bench_shape);
        if (bench_sweep->count("--image-size") > 0) shape.image_size = syn.image_size;
        if (bench_sweep->count("--patch-size") > 0) shape.patch_size = syn.patch_size;
        if (bench_sweep->count("--vision-width") > 0) shape.vision_hidden = syn.vision_hidden;
        if (bench_sweep->count("--text-width") > 0) shape.text_hidden = syn.text_hidden;
        if (bench_sweep->count("--text-layers") > 0) shape.text_layers = syn.text_layers;
        syn = shape;
      }
      if (bench_image_tokens > 0) {
        const auto side = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(bench_image_tokens))));
        if (side * side != bench_image_tokens) {
          throw icet::InputError("--image-tokens " + std::to_string(bench_image_tokens) +
                                 ": expected a square number (a grid of patches), e.g. 576 = 24 x 24");
        }
        syn.image_size = side * syn.patch_size;
      }
      if (!sweep_bench.model) syn.check();  // widths against heads, with a fix hint
      const auto j = icet::engine::run_sweep_benchmark(sweep_bench);
      if (bench_json) {
        std::cout << j.dump() << "\n";
      } else {
        std::cout << j.dump(2) << "\n";
      }
    } else if (train->parsed()) {
      icet::rl::TrainCommand cmd;
      if (!train_config.empty()) cmd.config = std::filesystem::path(train_config);
      if (!train_out.empty()) cmd.out = std::filesystem::path(train_out);
      if (!train_resume.empty()) cmd.resume = std::filesystem::path(train_resume);
      if (train_max_steps > 0) cmd.max_steps = train_max_steps;
      cmd.layers = train_layers;
      if (!train_schedule.empty()) cmd.schedule = train_schedule;
      if (train_seed >= 0) cmd.seed = static_cast<uint64_t>(train_seed);
      cmd.progress_bar = !train_json;
      std::signal(SIGINT, on_train_sigint);
      const auto j = icet::rl::run_train_command(cmd, std::cerr, &g_train_cancel);
      std::cout << (train_json ? j.dump() : j.dump(2)) << "\n";
    } else if (importc->parsed()) {
      const auto j = icet::eval::run_import_command(import_cmd);
      if (import_json) {
        std::cout << j.dump() << "\n";
      } else {
        std::printf("%s: %zu items (%zu harmful, %zu benign) from %s\n", j.at("out").get<std::string>().c_str(),
                    j.at("items").get<size_t>(), j.at("harmful").get<size_t>(), j.at("benign").get<size_t>(),
                    j.at("format").get<std::string>().c_str());
      }
    } else if (evalc->parsed()) {
      auto& plan = eval_cmd.plan;
      if (!eval_cmd.report_only && (eval_model.empty() || eval_set.empty())) {
        throw icet::InputError("eval: give --model DIR and --set FILE (or --report-only --out DIR)");
      }
      plan.model = eval_model;
      plan.set = eval_set;
      for (const auto& a : eval_adapters) plan.adapters.emplace_back(a);
      plan.base = !eval_no_base;
      if (!eval_judge.empty()) plan.judge = std::filesystem::path(eval_judge);
      if (!eval_reward.empty()) plan.reward = std::filesystem::path(eval_reward);
      if (!eval_out.empty()) plan.out = std::filesystem::path(eval_out);
      eval_cmd.progress_bar = !eval_json;
      std::signal(SIGINT, on_train_sigint);
      const auto j = icet::eval::run_eval_command(eval_cmd, std::cerr, &g_train_cancel);
      if (eval_json) {
        std::cout << j.dump() << "\n";
      } else {
        std::cout << icet::eval::format_eval_tables(j);
        if (!j.at("out").get<std::string>().empty()) std::cout << "written to " << j.at("out").get<std::string>() << "\n";
      }
    } else if (bench_train->parsed()) {
      train_bench.config = bench_train_config.empty() ? std::filesystem::path("models/demo/lppo.json")
                                                      : std::filesystem::path(bench_train_config);
      const auto j = icet::rl::run_train_benchmark(train_bench);
      std::cout << (bench_json ? j.dump() : j.dump(2)) << "\n";
    } else if (bench_load->parsed()) {
      std::optional<std::filesystem::path> file;
      if (!load_file.empty()) file = std::filesystem::path(load_file);
      const auto report = icet::io::run_load_benchmark(file);
      const auto j = icet::io::to_json(report);
      std::cout << (bench_json ? j.dump() : j.dump(2)) << "\n";
    }
    return 0;
  } catch (const icet::Cancelled& e) {
    std::cerr << "icet: stopped: " << e.what() << "\n";
    return 130;  // as a shell reports SIGINT
  } catch (const icet::Error& e) {
    icet::log::get("cli")->debug("error: {}", e.what());
    std::cerr << "icet: error: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "icet: unexpected error: " << e.what() << "\n";
    return 2;
  }
}
