// Did-you-mean suggestions for unknown config keys and values, by edit distance.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace gt::config_detail {

// Optimal string alignment distance: insertions, deletions, substitutions and swaps of two
// neighbouring characters each cost 1 ("modle" -> "model" is 1).
size_t edit_distance(std::string_view a, std::string_view b);

// The known dotted paths an unknown one was most likely meant to be: a small typo anywhere in the
// path ("optim.g.lrr", "modle.nz"), or the same last name under another section ("train.seed" ->
// "run.seed"). Best first; empty when nothing is close.
std::vector<std::string> suggest_paths(std::string_view unknown, const std::vector<std::string>& known);

// The known words closest to an unknown one (e.g. a choice), when it looks like a typo.
std::vector<std::string> suggest_words(std::string_view unknown, const std::vector<std::string>& known);

// " (did you mean 'a'?)", " (did you mean 'a' or 'b'?)", or "" for no suggestions.
std::string did_you_mean(const std::vector<std::string>& suggestions);

}  // namespace gt::config_detail
