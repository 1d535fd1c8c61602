#pragma once

// Entry points for the CLI's judge / score / bench-judge commands. Each returns a JSON object
// the CLI prints; errors are icet::InputError naming the folder, file or key.

#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>

namespace icet::safety {

// device / dtype: as engine::SessionOptions spells them ("auto", "cpu", "cuda:N"; "auto",
// "float32", "bfloat16", "float16"); the JSON names what they resolved to.

// Llama Guard verdict on (prompt, response); an empty response judges the prompt alone.
// -> {"unsafe", "p_unsafe", "categories", "raw", "judge_id", "device", "dtype"}
nlohmann::json run_judge(const std::filesystem::path& judge_dir, const std::string& prompt,
                         const std::string& response, const std::string& device = "auto",
                         const std::string& dtype = "auto");

// Reward-model score of (prompt, response). -> {"reward", "model_id", "device", "dtype"}
nlohmann::json run_score(const std::filesystem::path& rm_dir, const std::string& prompt,
                         const std::string& response, const std::string& device = "auto",
                         const std::string& dtype = "auto");

// Verdicts per second on `conversations` generated conversations, batched vs one by one, after
// one warm-up. Logs the result on the "safety" logger.
// -> {"conversations", "batched_verdicts_per_s", "one_by_one_verdicts_per_s", "speedup", "same_verdicts", "judge_id"}
nlohmann::json run_judge_benchmark(const std::filesystem::path& judge_dir, int64_t conversations = 8);

}  // namespace icet::safety
