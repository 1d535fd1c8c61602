#pragma once

// A resumable evaluation log (torch-free): one JSON object a line, one line per answer,
//   {"layer":12,"id":"jbv-3","adapter":"","harmful":true,"answer":"...","verdict":"unsafe",
//    "p_unsafe":0.93,"reward":-0.41,"refused":false,"correct":null}
// adapter "" is the base model; verdict "safe"/"unsafe" or "" (no judge); p_unsafe, reward and
// correct (0..1; benign items with a reference answer) are null when not measured. An optional
// first line {"icet_eval_log":1,"meta":{...}} records what produced the log (model, set, judge)
// so a resume can check it continues the same evaluation.
//
// Each answer is written with one write(2) of the whole line, so a killed process leaves at
// most one torn last line, which the reader ignores and the writer cuts off before appending.
// fsync runs every `sync_every_lines` lines or `sync_every_seconds`, and on flush()/close, so a
// power loss costs at most that much.

#include <nlohmann/json.hpp>

#include <chrono>
#include <compare>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace icet::eval {

struct AnswerRecord {
  int64_t layer = 0;
  std::string id;
  std::string adapter;  // "" = base model
  bool harmful = false;
  std::string answer;
  std::string verdict;  // "safe", "unsafe" or "" (not judged)
  std::optional<double> p_unsafe;
  std::optional<double> reward;
  bool refused = false;
  std::optional<double> correct;  // benign items with a reference: 0..1 (exact 0/1, VQA fractional)

  bool judged() const { return !verdict.empty(); }
  bool unsafe() const { return verdict == "unsafe"; }
};

// What makes an answer unique in a log (a later line for the same key replaces an earlier one).
struct AnswerKey {
  int64_t layer = 0;
  std::string id;
  std::string adapter;
  auto operator<=>(const AnswerKey&) const = default;
  bool operator==(const AnswerKey&) const = default;
};

nlohmann::json to_json(const AnswerRecord& r);
// InputError naming `where` for a missing or mistyped field.
AnswerRecord answer_from_json(const nlohmann::json& j, const std::string& where);

struct AnswerLogContents {
  nlohmann::json meta;                // the header's "meta" (null without a header line)
  std::vector<AnswerRecord> records;  // file order, duplicates removed (the last line per key wins)
  bool torn_tail = false;             // the file ended in a partial line (a killed run), ignored
  size_t lines = 0;                   // complete lines read

  std::set<AnswerKey> done() const;
  bool has(const AnswerKey& key) const;
};

// Reads a log; a missing file reads as empty. A complete line that is not a valid record is an
// InputError "<file>:<line>: ..." (damage in the middle is not a kill artifact). Lines are
// bounded (64 MiB) and the file must be a regular file. `with_answers` false drops the answer
// texts (aggregation of large logs).
AnswerLogContents read_answer_log(const std::filesystem::path& file, bool with_answers = true);

struct AnswerLogOptions {
  size_t sync_every_lines = 64;
  double sync_every_seconds = 2.0;
};

// Appends to a log (creating it and its folder). Opening cuts a torn last line off; `meta` is
// written as the header of a new or empty file (and ignored otherwise: compare it with
// read_answer_log(file).meta before resuming). Thread-safe; throws EnvironmentError naming the
// file when a write fails.
class AnswerLogWriter {
 public:
  explicit AnswerLogWriter(const std::filesystem::path& file, const nlohmann::json& meta = nullptr,
                           AnswerLogOptions options = {});
  ~AnswerLogWriter();
  AnswerLogWriter(const AnswerLogWriter&) = delete;
  AnswerLogWriter& operator=(const AnswerLogWriter&) = delete;

  void append(const AnswerRecord& record);
  void flush();  // fsync now
  void close();  // flush and close; append afterwards throws
  const std::filesystem::path& file() const { return file_; }

 private:
  void write_line(const std::string& line);  // caller holds mutex_
  void sync_locked();

  std::filesystem::path file_;
  AnswerLogOptions options_;
  std::mutex mutex_;
  int fd_ = -1;
  size_t unsynced_ = 0;
  std::chrono::steady_clock::time_point last_sync_;
};

// The whole log again, atomically: `meta` as its header, then `records` (adapters added on
// resume change the header).
void rewrite_answer_log(const std::filesystem::path& file, const nlohmann::json& meta,
                        const std::vector<AnswerRecord>& records);

// What a resumed evaluation still has to answer: every (layer, id, adapter) of
// adapters x ids x layers not in `done`, adapter-major then item-major (the layers of one item
// stay together, as one sweep answers them).
std::vector<AnswerKey> pending_keys(const std::vector<std::string>& ids, const std::vector<int64_t>& layers,
                                    const std::vector<std::string>& adapters, const std::set<AnswerKey>& done);

// Answers as CSV (header: layer,id,adapter,harmful,answer,verdict,p_unsafe,reward,refused,correct;
// empty cells for unmeasured values).
std::string answers_csv(const std::vector<AnswerRecord>& records);

}  // namespace icet::eval
