// Did-you-mean suggestions for unknown config keys and values, by edit distance.
#include "config/suggest.h"

#include <algorithm>
#include <limits>

namespace gt::config_detail {
namespace {

constexpr size_t kMaxSuggestions = 3;

std::string_view last_name(std::string_view path) {
  size_t dot = path.rfind('.');
  return dot == std::string_view::npos ? path : path.substr(dot + 1);
}

// How many edits still read as a typo of a name this long: 1 for short names, up to 3.
size_t typo_budget(std::string_view name) { return std::clamp<size_t>(name.size() / 3, 1, 3); }

// Keeps the candidates with the lowest score (at most kMaxSuggestions, in input order).
std::vector<std::string> best_scored(const std::vector<std::pair<size_t, std::string>>& scored) {
  size_t best = std::numeric_limits<size_t>::max();
  for (const auto& [score, name] : scored) best = std::min(best, score);
  std::vector<std::string> out;
  for (const auto& [score, name] : scored) {
    if (score == best && out.size() < kMaxSuggestions) out.push_back(name);
  }
  return out;
}

}  // namespace

size_t edit_distance(std::string_view a, std::string_view b) {
  // Three rolling rows of the dynamic-programming table: the swap rule looks two rows back.
  std::vector<size_t> before(b.size() + 1), previous(b.size() + 1), current(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) previous[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    current[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t substitution = previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      current[j] = std::min({previous[j] + 1, current[j - 1] + 1, substitution});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        current[j] = std::min(current[j], before[j - 2] + 1);
    }
    std::swap(before, previous);
    std::swap(previous, current);
  }
  return previous[b.size()];
}

std::vector<std::string> suggest_paths(std::string_view unknown, const std::vector<std::string>& known) {
  const std::string_view unknown_name = last_name(unknown);
  std::vector<std::pair<size_t, std::string>> scored;
  for (const std::string& candidate : known) {
    size_t distance = edit_distance(unknown, candidate);
    if (distance <= typo_budget(unknown_name) && distance < candidate.size()) {
      scored.emplace_back(distance, candidate);
    } else if (last_name(candidate) == unknown_name) {
      // The right name in the wrong section: as likely as a one-letter typo.
      scored.emplace_back(1, candidate);
    }
  }
  return best_scored(scored);
}

std::vector<std::string> suggest_words(std::string_view unknown, const std::vector<std::string>& known) {
  std::vector<std::pair<size_t, std::string>> scored;
  for (const std::string& candidate : known) {
    size_t distance = edit_distance(unknown, candidate);
    // Very short words are one edit away from too much ("gpu" -> "cpu") to be a useful hint.
    if (unknown.size() > 3 && distance <= typo_budget(unknown) && distance < candidate.size())
      scored.emplace_back(distance, candidate);
  }
  return best_scored(scored);
}

std::string did_you_mean(const std::vector<std::string>& suggestions) {
  if (suggestions.empty()) return "";
  std::string out = " (did you mean ";
  for (size_t i = 0; i < suggestions.size(); ++i) {
    if (i > 0) out += (i + 1 == suggestions.size()) ? " or " : ", ";
    out += "'" + suggestions[i] + "'";
  }
  return out + "?)";
}

}  // namespace gt::config_detail
