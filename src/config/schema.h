// The config schema (internal to gt_config): one row per YAML key with its Config field, type, rule and doc.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "config/config.h"

namespace gt::config_detail {

// Where a key's value lives inside a Config; the alternative gives the key's type.
using FieldRef = std::variant<int*, int64_t*, float*, double*, bool*, std::string*>;

// The constraint on one key's value. Bounds apply to numbers, choices to ints and strings.
struct Rule {
  std::optional<double> min, max;
  bool min_exclusive = false, max_exclusive = false;
  std::vector<std::string> choices;  // allowed values as YAML text; empty = no list
  bool non_empty = false;            // strings: must not be ""
  bool file_name = false;            // strings: one path component (no '/', not "." or "..")
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
