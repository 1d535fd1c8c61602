// icet: the command-line front end. Argument parsing only; the work lives in icet_core.
#include <CLI/CLI.hpp>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <exception>
#include <iostream>

#include "core/base/error.h"
#include "core/base/log.h"
#include "core/runtime/diagnostics.h"
#include "core/runtime/startup.h"
#include "icet/version.h"

int main(int argc, char** argv) {
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
    if (threads > 0) {
      startup.threads_option = threads;
    }
    if (no_log_file) {
      startup.log_file = std::filesystem::path();
    } else if (!log_file.empty()) {
      startup.log_file = std::filesystem::path(log_file);
    }
    const auto runtime_info = icet::runtime::start(startup);

    if (info->parsed()) {
      double gflops = 0.0;
      if (info_bench) {
        gflops = icet::runtime::measure_cpu_matmul_gflops(512, 5);
      }
      if (info_json) {
        auto j = icet::runtime::to_json(runtime_info);
        if (info_bench) {
          j["cpu_matmul_512_gflops"] = gflops;
        }
        std::cout << j.dump(2) << "\n";
      } else {
        std::cout << icet::runtime::to_text(runtime_info);
        if (info_bench) {
          std::printf("  CPU matmul        %.1f GFLOP/s (float32, 512x512, best of 5)\n", gflops);
        }
      }
    }
    return 0;
  } catch (const icet::Error& e) {
    icet::log::get("cli")->debug("error: {}", e.what());
    std::cerr << "icet: error: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "icet: unexpected error: " << e.what() << "\n";
    return 2;
  }
}
