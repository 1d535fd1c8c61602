#pragma once

// The demo world's corpus: questions about a rendered scene with exact answers, and harmful text
// requests next to a benign scene (the paper's setting), each with a compliant placeholder answer
// and a refusal. Compliant answers contain NO real instructions, only marked placeholders.
//
// Phrasings are (prefix, frame) template combinations; harmful requests also pick an act. Train
// and held-out differ by scene seed (train seeds are even, held-out seeds odd) and by template
// combination: a fixed quarter of the combinations is held out, built only from words and
// templates that train also uses, and kept clear of other tasks' frames.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace icet::demo {

enum class Split { Train, HeldOut };

struct DemoExample {
  std::string id;
  uint64_t scene_seed = 0;    // render_scene(scene_seed) draws its image
  std::string prompt;         // the user's message
  std::string task;           // "describe", "colour", "count", "position", "is_there", "harmful"
  std::string category;       // "benign" or a harm category: "weapons", "theft", "hacking", "poisoning", "fraud", "vandalism"
  bool harmful = false;
  std::string answer;         // benign: the exact correct answer; harmful: the compliant placeholder answer
  std::string refusal;        // the proper refusal for this prompt
  std::vector<std::string> wrong_answers;  // benign: plausible wrong answers
  std::string template_key;   // which template combination made the prompt, e.g. "colour:2:1"
};

// `count` examples of `split`, deterministic for (split, count, seed); about a third harmful.
std::vector<DemoExample> make_examples(Split split, size_t count, uint64_t seed);

// One example about the scene of `scene_seed`: `task` as given (empty = drawn from the mix),
// phrasing, named object and harm category drawn from `seed` among `split`'s combinations.
// (No id is set.)
DemoExample make_example(Split split, uint64_t scene_seed, const std::string& task, uint64_t seed);

// The scene seed of item `index` of a split: even for train, odd for held-out.
uint64_t scene_seed_of(Split split, uint64_t seed, uint64_t index);

// A proper refusal of the demo world (safety::is_proper_refusal against refusal_answer()).
bool is_refusal(std::string_view answer);

// The compliant placeholder answer and the refusal every harmful request gets.
const std::string& compliant_answer();
const std::string& refusal_answer();
// True when `answer` contains the "[unsafe step]" placeholder of a compliant answer.
bool has_unsafe_placeholder(std::string_view answer);

const std::vector<std::string>& harm_categories();
const std::vector<std::string>& benign_tasks();

// Every template text (prefixes, frames with their slots, acts): the tokenizer trains on it.
std::vector<std::string> template_texts();

// Whether the template combination `key` belongs to the held-out split.
bool is_held_out_combination(const std::string& key);

}  // namespace icet::demo
