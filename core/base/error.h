#pragma once

#include <stdexcept>
#include <string>

namespace icet {

// Base of every error core throws on bad input or failed work. The message names the file,
// key or tensor, what was expected and what was found, and where useful a fix hint. Callers
// (CLI, UI adapters) catch icet::Error, show it and keep running.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// The user's input (file, config, prompt, image) is not what was expected.
class InputError : public Error {
 public:
  using Error::Error;
};

// The environment cannot do what was asked (no CUDA device, unreadable folder, ...).
class EnvironmentError : public Error {
 public:
  using Error::Error;
};

// A long-running job was cancelled through its cancel flag.
class Cancelled : public Error {
 public:
  Cancelled() : Error("cancelled") {}
};

// strerror for `err`, safe on any thread (loads run on worker threads).
std::string errno_message(int err);

// Joins "what was expected" and "what was found" in the project's one message format:
//   "<where>: expected <expected>, found <found>[. <hint>]"
std::string describe(const std::string& where, const std::string& expected,
                     const std::string& found, const std::string& hint = {});

}  // namespace icet
