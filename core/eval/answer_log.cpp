#include "core/eval/answer_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>

#include "core/base/atomic_file.h"
#include "core/base/error.h"
#include "core/base/json_util.h"
#include "core/eval/csv.h"

namespace icet::eval {
namespace {

// The log's two kinds of line (invalid UTF-8 in an answer is replaced, not an exception).
std::string header_line(const nlohmann::json& meta) {
  return nlohmann::json{{"icet_eval_log", 1}, {"meta", meta}}.dump() + "\n";
}
std::string record_line(const AnswerRecord& r) {
  return to_json(r).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

}  // namespace
namespace fs = std::filesystem;
namespace {

constexpr size_t kMaxLineBytes = 64ull << 20;

nlohmann::json optional_number(const std::optional<double>& v) {
  if (!v || !std::isfinite(*v)) return nullptr;
  return *v;
}

std::string number_cell(const std::optional<double>& v) {
  if (!v || !std::isfinite(*v)) return "";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", *v);
  return buf;
}

}  // namespace

nlohmann::json to_json(const AnswerRecord& r) {
  return nlohmann::json{{"layer", r.layer},          {"id", r.id},          {"adapter", r.adapter},
                        {"harmful", r.harmful},      {"answer", r.answer},  {"verdict", r.verdict},
                        {"p_unsafe", optional_number(r.p_unsafe)}, {"reward", optional_number(r.reward)},
                        {"refused", r.refused},      {"correct", optional_number(r.correct)}};
}

AnswerRecord answer_from_json(const nlohmann::json& j, const std::string& where) {
  if (!j.is_object()) throw InputError(describe(where, "a JSON object", json_util::type_name(j)));
  const json_util::Reader in(j, where);
  AnswerRecord r;
  r.layer = in.integer("layer");
  r.id = in.string("id");
  r.adapter = in.string("adapter", "");
  r.harmful = in.boolean("harmful", false);
  r.answer = in.string("answer", "");
  r.verdict = in.string("verdict", "");
  if (!r.verdict.empty() && r.verdict != "safe" && r.verdict != "unsafe") {
    throw InputError(describe(in.where("verdict"), "\"safe\", \"unsafe\" or \"\"", "\"" + r.verdict + "\""));
  }
  auto opt = [&](const char* key) -> std::optional<double> {
    if (!in.has(key)) return std::nullopt;
    return in.number(key);
  };
  r.p_unsafe = opt("p_unsafe");
  r.reward = opt("reward");
  r.correct = opt("correct");
  r.refused = in.boolean("refused", false);
  if (r.id.empty()) throw InputError(describe(in.where("id"), "a non-empty id", "\"\""));
  return r;
}

std::set<AnswerKey> AnswerLogContents::done() const {
  std::set<AnswerKey> keys;
  for (const auto& r : records) keys.insert({r.layer, r.id, r.adapter});
  return keys;
}

bool AnswerLogContents::has(const AnswerKey& key) const {
  for (const auto& r : records) {
    if (r.layer == key.layer && r.id == key.id && r.adapter == key.adapter) return true;
  }
  return false;
}

AnswerLogContents read_answer_log(const fs::path& file, bool with_answers) {
  AnswerLogContents out;
  std::error_code ec;
  if (!fs::exists(file, ec)) return out;
  if (!fs::is_regular_file(file, ec)) {
    throw InputError(describe(file.string(), "an evaluation log (a regular JSONL file)", "something else (a folder or device)"));
  }
  std::ifstream in(file, std::ios::binary);
  if (!in) throw InputError(describe(file.string(), "a readable evaluation log", "a file that cannot be opened"));
  std::map<AnswerKey, size_t> index;  // key -> position in out.records
  std::string pending;                // bytes of the line being assembled
  size_t line = 0;
  auto handle = [&](const std::string& text) {
    ++line;
    ++out.lines;
    const std::string at = file.string() + ":" + std::to_string(line);
    std::string_view body = text;
    if (line == 1) body = strip_bom(body);
    if (!body.empty() && body.back() == '\r') body.remove_suffix(1);
    if (body.find_first_not_of(" \t") == std::string_view::npos) return;
    const nlohmann::json j = json_util::parse(body, at);
    if (j.is_object() && j.contains("icet_eval_log")) {
      out.meta = j.contains("meta") ? j.at("meta") : nlohmann::json(nullptr);
      return;
    }
    AnswerRecord r = answer_from_json(j, at);
    if (!with_answers) r.answer.clear();
    AnswerKey key{r.layer, r.id, r.adapter};
    if (const auto it = index.find(key); it != index.end()) {
      out.records[it->second] = std::move(r);
    } else {
      index.emplace(std::move(key), out.records.size());
      out.records.push_back(std::move(r));
    }
  };
  std::vector<char> chunk(1 << 20);
  for (;;) {
    in.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
    const auto got = static_cast<size_t>(in.gcount());
    if (got == 0) break;
    size_t start = 0;
    for (size_t i = 0; i < got; ++i) {
      if (chunk[i] != '\n') continue;
      pending.append(chunk.data() + start, i - start);
      handle(pending);
      pending.clear();
      start = i + 1;
    }
    pending.append(chunk.data() + start, got - start);
    if (pending.size() > kMaxLineBytes) {
      throw InputError(describe(file.string() + ":" + std::to_string(line + 1), "a line under 64 MiB", "a longer one"));
    }
  }
  out.torn_tail = !pending.empty();
  return out;
}

AnswerLogWriter::AnswerLogWriter(const fs::path& file, const nlohmann::json& meta, AnswerLogOptions options)
    : file_(file), options_(options), last_sync_(std::chrono::steady_clock::now()) {
  std::error_code ec;
  if (file.has_parent_path()) fs::create_directories(file.parent_path(), ec);
  fd_ = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) throw EnvironmentError(describe(file.string(), "a writable evaluation log", errno_message(errno)));
  // Cut a torn last line (a run killed mid-write) so the next record starts on a line of its own.
  struct stat st {};
  if (::fstat(fd_, &st) != 0) {
    const int err = errno;
    ::close(fd_);
    fd_ = -1;
    throw EnvironmentError(describe(file.string(), "a writable evaluation log", errno_message(err)));
  }
  off_t keep = st.st_size;
  char c = 0;
  while (keep > 0 && ::pread(fd_, &c, 1, keep - 1) == 1 && c != '\n') --keep;
  if (keep != st.st_size && ::ftruncate(fd_, keep) != 0) {
    const int err = errno;
    ::close(fd_);
    fd_ = -1;
    throw EnvironmentError(describe(file.string(), "a log whose torn last line can be cut", errno_message(err)));
  }
  if (::lseek(fd_, 0, SEEK_END) < 0) {
    const int err = errno;
    ::close(fd_);
    fd_ = -1;
    throw EnvironmentError(describe(file.string(), "a seekable evaluation log", errno_message(err)));
  }
  if (keep == 0 && !meta.is_null()) {
    std::lock_guard<std::mutex> lock(mutex_);
    write_line(header_line(meta));
    sync_locked();
  }
}

AnswerLogWriter::~AnswerLogWriter() {
  try {
    close();
  } catch (...) {  // a destructor does not throw; close() explicitly to see the error
  }
}

void AnswerLogWriter::write_line(const std::string& line) {
  if (fd_ < 0) throw EnvironmentError(describe(file_.string(), "an open evaluation log", "a closed one"));
  size_t done = 0;
  while (done < line.size()) {
    const ssize_t n = ::write(fd_, line.data() + done, line.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw EnvironmentError(describe(file_.string(), "a log line written", errno_message(errno), "Is the disk full?"));
    }
    done += static_cast<size_t>(n);
  }
}

void AnswerLogWriter::sync_locked() {
  if (fd_ < 0) return;
  if (::fsync(fd_) != 0) throw EnvironmentError(describe(file_.string(), "the log synced to disk", errno_message(errno)));
  unsynced_ = 0;
  last_sync_ = std::chrono::steady_clock::now();
}

void AnswerLogWriter::append(const AnswerRecord& record) {
  const std::string line = record_line(record);
  std::lock_guard<std::mutex> lock(mutex_);
  write_line(line);
  ++unsynced_;
  const double since = std::chrono::duration<double>(std::chrono::steady_clock::now() - last_sync_).count();
  if (unsynced_ >= options_.sync_every_lines || since >= options_.sync_every_seconds) sync_locked();
}

void AnswerLogWriter::flush() {
  std::lock_guard<std::mutex> lock(mutex_);
  sync_locked();
}

void AnswerLogWriter::close() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (fd_ < 0) return;
  const int fd = fd_;
  std::optional<EnvironmentError> error;
  if (unsynced_ > 0 && ::fsync(fd) != 0) error.emplace(describe(file_.string(), "the log synced to disk", errno_message(errno)));
  fd_ = -1;
  ::close(fd);
  if (error) throw *error;
}

std::vector<AnswerKey> pending_keys(const std::vector<std::string>& ids, const std::vector<int64_t>& layers,
                                    const std::vector<std::string>& adapters, const std::set<AnswerKey>& done) {
  std::vector<AnswerKey> out;
  for (const auto& adapter : adapters) {
    for (const auto& id : ids) {
      for (int64_t layer : layers) {
        AnswerKey key{layer, id, adapter};
        if (done.count(key) == 0) out.push_back(std::move(key));
      }
    }
  }
  return out;
}

std::string answers_csv(const std::vector<AnswerRecord>& records) {
  std::string out = "layer,id,adapter,harmful,answer,verdict,p_unsafe,reward,refused,correct\n";
  for (const auto& r : records) {
    out += std::to_string(r.layer) + "," + csv_escape(r.id) + "," + csv_escape(r.adapter) + "," +
           (r.harmful ? "true" : "false") + "," + csv_escape(r.answer) + "," + r.verdict + "," + number_cell(r.p_unsafe) +
           "," + number_cell(r.reward) + "," + (r.refused ? "true" : "false") + "," + number_cell(r.correct) + "\n";
  }
  return out;
}

void rewrite_answer_log(const std::filesystem::path& file, const nlohmann::json& meta,
                        const std::vector<AnswerRecord>& records) {
  std::string text = header_line(meta);
  for (const auto& r : records) text += record_line(r);
  write_file_atomic(file, text);
}

}  // namespace icet::eval
