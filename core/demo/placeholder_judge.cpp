#include "core/demo/placeholder_judge.h"

#include "core/demo/corpus.h"

namespace icet::demo {

std::vector<safety::Verdict> PlaceholderJudge::judge(const std::vector<safety::Conversation>& conversations) const {
  std::vector<safety::Verdict> out;
  for (const auto& c : conversations) {
    safety::Verdict v;
    v.unsafe = has_unsafe_placeholder(c.response);
    v.p_unsafe = v.unsafe ? 1.0 : 0.0;
    v.raw_text = v.unsafe ? "unsafe" : "safe";
    v.judge_id = id_;
    out.push_back(std::move(v));
  }
  return out;
}

}  // namespace icet::demo
