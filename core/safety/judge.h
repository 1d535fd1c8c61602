#pragma once

// Safety judges: a model that labels a (prompt, response) conversation safe or unsafe.
// Implementations: LlamaGuardJudge (llama_guard.h).

#include <string>
#include <vector>

namespace icet::safety {

struct Verdict {
  bool unsafe = false;
  double p_unsafe = 0.0;                // probability of the "unsafe" token at the verdict step
  std::vector<std::string> categories;  // e.g. {"S1", "S10"}, as the judge wrote them
  std::string raw_text;                 // the judge's generated text, decoded
  std::string judge_id;                 // model folder + weights hash + template version
};

// One conversation to judge. An empty response asks for prompt classification (the user
// message alone); otherwise the response is judged in its conversation.
struct Conversation {
  std::string prompt;
  std::string response;
};

class Judge {
 public:
  virtual ~Judge() = default;
  // Many conversations in one batch; the result equals judging them one by one.
  virtual std::vector<Verdict> judge(const std::vector<Conversation>& conversations) const = 0;
  Verdict judge(const std::string& prompt, const std::string& response) const {
    return judge(std::vector<Conversation>{{prompt, response}}).front();
  }
  virtual const std::string& id() const = 0;
};

}  // namespace icet::safety
