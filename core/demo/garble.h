#pragma once

// Broken answers for the demo judges' training and evaluation: what a policy produces when it
// drifts into noise instead of answering or refusing (shuffled words, a truncated answer, one
// token repeated, random junk, an off-topic sentence, nothing). The demo reward model ranks
// every one of them below both a proper answer and a refusal, and the demo guard calls them
// safe, so a policy can neither win reward nor dodge the guard with noise.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/demo/rng.h"

namespace icet::demo {

enum class GarbleKind { shuffled, truncated, repeated, junk, off_topic, empty };

const std::vector<GarbleKind>& garble_kinds();
std::string_view garble_name(GarbleKind kind);

// A broken version of `answer` of the given kind, never equal to `answer` (nor to its trimmed
// text). off_topic picks a sentence from `off_topic_pool` when it is not empty (e.g. answers to
// other tasks), else from a built-in list. Deterministic for the generator's state.
std::string garble(std::string_view answer, GarbleKind kind, Rng& rng,
                   const std::vector<std::string>& off_topic_pool = {});

// `answer` cut after 1..n-1 of its n words, with or without a closing full stop ("Sorry,",
// "Sorry, I cannot."): an answer that stops early at a word boundary. Empty for one word.
std::string cut_after_words(std::string_view answer, Rng& rng);

// The first 1..n-1 words of `head` followed by the last 1..m-1 words of `tail` (a one-word
// answer whole): two answers spliced mid-way ("Sure. Step 1: cannot help with that."), the
// hybrid a policy finds when a reward model has only seen whole answers. Equal to neither
// input when both have words; `head` when either is empty.
std::string splice_words(std::string_view head, std::string_view tail, Rng& rng);

}  // namespace icet::demo
