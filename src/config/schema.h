// The config schema (internal to gt_config): one row per YAML key with its Config field, type, rule and doc.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include "config/config.h"

namespace gt::config_detail {

// A key whose value is one of an enum's names (config/choices.h): read and written as its name.
struct ChoiceRef {
  std::function<std::string()> get;
  std::function<bool(const std::string&)> set;  // false when the text names no choice (value untouched)
  std::vector<std::string> names;
};

template <class E>
ChoiceRef choice_ref(E* field) {
  ChoiceRef r;
  r.get = [field] { return std::string(choice_name(*field)); };
  r.set = [field](const std::string& text) { return parse_choice(text, field); };
  r.names = choice_names<E>();
  return r;
}

// Where a key's value lives inside a Config; the alternative gives the key's type.
using FieldRef = std::variant<int*, int64_t*, float*, double*, bool*, std::string*, ChoiceRef>;

// The FieldRef of a Config member: enums become ChoiceRefs, other fields their pointer.
template <class T>
FieldRef field_ref(T* field) {
  if constexpr (std::is_enum_v<T>) {
    return choice_ref(field);
  } else {
    return field;
  }
}

// The constraint on one key's value. Bounds apply to numbers, choices to ints and strings.
struct Rule {
  std::optional<double> min, max;
  bool min_exclusive = false, max_exclusive = false;
  std::vector<std::string> choices;  // allowed values as YAML text; empty = no list
  bool non_empty = false;            // strings: must not be ""
  bool file_name = false;            // strings: one path component (no '/', not "." or "..")
  enum class List : uint8_t { none, positive_ints, positive_numbers };
  List list = List::none;            // strings: comma-separated numbers (a YAML list is joined into one); may be empty
};

struct KeyDef {
  std::string path;                          // "optim.g.lr"
  std::function<FieldRef(Config&)> bind;     // the field this key sets
  Rule rule;
  std::string doc;
};

// The schema, in the order keys are emitted and documented.
const std::vector<KeyDef>& schema_table();
// The row for a full key path, or nullptr.
const KeyDef* find_key(std::string_view path);
// True for "run", "optim", "optim.g": paths that hold keys rather than values.
bool is_section(std::string_view path);
// Every section path, parents before children.
const std::vector<std::string>& section_paths();

std::string type_name(const FieldRef& field);   // "int", "float", "string", "bool"
std::string describe_rule(const Rule& rule);    // ">= 1", "in [0, 1)", "one of cpu, cuda, auto", "any"
// The field's value as YAML text that parses back to the identical value.
std::string format_value(const FieldRef& field);
// Empty when the field's value obeys the rule, else the requirement it breaks ("must be >= 1").
std::string check_rule(const FieldRef& field, const Rule& rule);

}  // namespace gt::config_detail
