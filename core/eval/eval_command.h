#pragma once

// `icet eval`: a prompt set answered at chosen exit layers by the base model and adapters,
// judged and rewarded, with per-layer and Early/Middle/Late metrics and 95% intervals
// (core/eval/run.h). Torch-free header.

#include <nlohmann/json_fwd.hpp>

#include <atomic>
#include <ostream>

#include "core/eval/run.h"

namespace icet::eval {

struct EvalCommand {
  EvalPlan plan;
  bool report_only = false;  // recompute metrics and exports from plan.out's log; no model
  bool progress_bar = true;  // a one-line progress bar with ETA on `progress_out`
};

// Runs the plan (or, report_only, reloads plan.out). The judge is required: --judge or guard/
// beside the model, else an InputError saying how to give one (--judge placeholder for sets
// whose unsafe answers carry the demo marker). -> eval_summary_json plus "mean_asr" (the
// base run's mean over the chosen layers), "device", "dtype", "out" and "files".
// A cancel (SIGINT) ends in icet::Cancelled after the log is flushed: rerun to resume.
nlohmann::json run_eval_command(const EvalCommand& cmd, std::ostream& progress_out,
                                const std::atomic<bool>* cancel = nullptr);

// The tables a terminal shows: per run the per-layer rows (ASR, refusal, over-refusal, benign
// accuracy, reward; value and [lo, hi]), the group rows and, with adapters, the deltas.
std::string format_eval_tables(const nlohmann::json& summary);

}  // namespace icet::eval
