// Config loading: YAML file + "key.path=value" overrides -> validated Config, and back to YAML.
#include "config/config.h"

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <charconv>
#include <climits>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "config/schema.h"
#include "config/suggest.h"
#include "core/error.h"

namespace gt {
namespace {

using config_detail::FieldRef;
using config_detail::KeyDef;

// One key's raw value and where it came from; converted and checked once all sources are read,
// so an override replaces a file value before anything is validated.
struct Assignment {
  YAML::Node value;   // a scalar, or null for "key:" with nothing after it
  std::string where;  // "config/tiny.yaml:3:15" or "override 'train.batch_size=8'"
};
using Assignments = std::map<std::string, Assignment>;

std::string location(const std::string& source, const YAML::Mark& mark) {
  if (mark.is_null()) return source;
  return fmt::format("{}:{}:{}", source, mark.line + 1, mark.column + 1);
}

std::string node_kind(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Scalar:
      return "a scalar";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a map";
    default:
      return "nothing";
  }
}

std::string expected_value(const FieldRef& field) {
  if (auto* choice = std::get_if<config_detail::ChoiceRef>(&field))
    return fmt::format("one of {}", fmt::join(choice->names, ", "));
  switch (field.index()) {
    case 0:
    case 1:
      return "an integer";
    case 2:
    case 3:
      return "a number";
    case 4:
      return "true or false";
    default:
      return "a string";
  }
}

// What a key's value must look like, from the type of the field it binds.
std::string expected_value(const KeyDef& def) {
  Config scratch;
  return expected_value(def.bind(scratch));
}

// A key of the section, to show in a message: "optim.g" -> "optim.g.name".
std::string first_key_in(const std::string& section) {
  for (const KeyDef& key : config_detail::schema_table()) {
    if (key.path.rfind(section + ".", 0) == 0) return key.path;
  }
  return section + ".<key>";
}

std::vector<std::string> known_paths() {
  std::vector<std::string> paths = config_detail::section_paths();
  for (const KeyDef& key : config_detail::schema_table()) paths.push_back(key.path);
  return paths;
}

std::string unknown_path_hint(const std::string& path) {
  return config_detail::did_you_mean(config_detail::suggest_paths(path, known_paths()));
}

// ---- reading YAML ------------------------------------------------------------------------------

// Counts the documents of a YAML stream, noting where each starts. yaml-cpp 0.7's LoadAll never
// returns on some malformed streams (a stray ',' outside [] or {}: its parser then hands out the same
// empty document forever, jbeder/yaml-cpp#1040, fixed upstream in 0.8.x by #1319), so the documents are
// counted here first, stopping at the first one that makes no progress.
class DocumentCounter : public YAML::EventHandler {
 public:
  int count = 0;
  YAML::Mark start;
  void OnDocumentStart(const YAML::Mark& mark) override {
    start = mark;
    ++count;
  }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t, const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};

YAML::Node load_single_document(const std::string& text, const std::string& source) {
  try {
    std::istringstream stream(text);
    YAML::Parser parser(stream);
    DocumentCounter counter;
    int previous_start = -1;
    while (parser.HandleNextDocument(counter)) {
      if (counter.start.pos <= previous_start)
        user_error("{}: malformed YAML: unexpected character (a ',' outside [] or {{}}?)",
                   location(source, counter.start));
      previous_start = counter.start.pos;
    }
    if (counter.count > 1)
      user_error("{} holds {} YAML documents, but a config is a single document", source, counter.count);
    return counter.count == 0 ? YAML::Node() : YAML::Load(text);
  } catch (const YAML::Exception& e) {
    user_error("{}: malformed YAML: {}", location(source, e.mark), e.msg);
  }
}

// A YAML list given for a list key ([128, 64, 32]) as the key's comma-separated text.
YAML::Node joined_list(const YAML::Node& list, const std::string& path, const std::string& where) {
  std::string text;
  for (const YAML::Node& item : list) {
    if (!item.IsScalar())
      user_error("{}: key {}: expected a list of numbers, got an item that is {}", where, path, node_kind(item));
    text += (text.empty() ? "" : ", ") + item.Scalar();
  }
  return YAML::Node(text);
}

void collect_map(const YAML::Node& map, const std::string& prefix, const std::string& source,
                 Assignments& out) {
  std::set<std::string> seen;
  for (const auto& entry : map) {
    const YAML::Node& key = entry.first;
    const YAML::Node& value = entry.second;
    const std::string key_at = location(source, key.Mark());
    if (!key.IsScalar()) user_error("{}: config keys must be plain names, got {}", key_at, node_kind(key));
    const std::string path = prefix.empty() ? key.Scalar() : prefix + "." + key.Scalar();
    if (!seen.insert(key.Scalar()).second) user_error("{}: key '{}' appears twice", key_at, path);

    if (const KeyDef* def = config_detail::find_key(path)) {
      if (value.IsSequence() && def->rule.list != config_detail::Rule::List::none) {
        out[path] = {joined_list(value, path, location(source, value.Mark())), location(source, value.Mark())};
        continue;
      }
      if (!value.IsScalar() && !value.IsNull())
        user_error("{}: key {}: expected a single value ({}), got {}", location(source, value.Mark()), path,
                   expected_value(*def), node_kind(value));
      out[path] = {value, location(source, value.IsNull() ? key.Mark() : value.Mark())};
    } else if (config_detail::is_section(path)) {
      if (value.IsNull()) continue;  // an empty section keeps its defaults
      if (!value.IsMap())
        user_error("{}: section '{}' must be a map of keys, got {}", location(source, value.Mark()), path,
                   node_kind(value));
      collect_map(value, path, source, out);
    } else {
      user_error("{}: unknown {} '{}'{}", key_at, value.IsMap() ? "section" : "key", path,
                 unknown_path_hint(path));
    }
  }
}

void collect_document(const YAML::Node& root, const std::string& source, Assignments& out) {
  if (!root.IsDefined() || root.IsNull()) return;  // an empty file: all defaults
  if (!root.IsMap())
    user_error("{}: the top level of a config must be a map of sections (run, model, ...), got {}",
               location(source, root.Mark()), node_kind(root));
  collect_map(root, "", source, out);
}

std::string trim(std::string_view s) {
  const char* space = " \t\r\n";
  size_t begin = s.find_first_not_of(space);
  if (begin == std::string_view::npos) return "";
  size_t end = s.find_last_not_of(space);
  return std::string(s.substr(begin, end - begin + 1));
}

void collect_override(const std::string& override_text, Assignments& out) {
  const std::string where = fmt::format("override '{}'", override_text);
  size_t equals = override_text.find('=');
  if (equals == std::string::npos)
    user_error("{} is not of the form key.path=value (e.g. train.batch_size=64)", where);
  const std::string path = trim(std::string_view(override_text).substr(0, equals));
  const std::string value_text = trim(std::string_view(override_text).substr(equals + 1));
  if (path.empty()) user_error("{} has no key before '=' (expected key.path=value)", where);
  if (config_detail::is_section(path))
    user_error("{}: '{}' is a section, not a key; set one of its keys, e.g. '{}'", where, path,
               first_key_in(path));
  const KeyDef* def = config_detail::find_key(path);
  if (!def) user_error("{}: unknown key '{}'{}", where, path, unknown_path_hint(path));

  YAML::Node value;
  if (value_text.empty()) {
    value = YAML::Node(std::string());  // "data.path=" sets an empty string
  } else {
    try {
      value = YAML::Load(value_text);
    } catch (const YAML::Exception& e) {
      user_error("{}: malformed value for key {}: {}", where, path, e.msg);
    }
  }
  if (value.IsSequence() && def->rule.list != config_detail::Rule::List::none) value = joined_list(value, path, where);
  if (!value.IsScalar() && !value.IsNull())
    user_error("{}: key {}: expected a single value ({}), got {}", where, path, expected_value(*def),
               node_kind(value));
  out[path] = {value, where};
}

// ---- converting and checking values ------------------------------------------------------------

// Parses a whole scalar as a number of type T; YAML allows a leading '+', from_chars does not.
template <class T>
std::errc parse_number(const std::string& text, T& value) {
  std::string_view digits = text;
  if (digits.size() > 1 && digits[0] == '+' && digits[1] != '-') digits.remove_prefix(1);
  if (digits.empty()) return std::errc::invalid_argument;
  auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (error == std::errc() && end != digits.data() + digits.size()) return std::errc::invalid_argument;
  return error;
}

void parse_integer(const std::string& text, int64_t* field, const std::string& where, const std::string& path) {
  std::errc error = parse_number(text, *field);
  if (error == std::errc::result_out_of_range)
    user_error("{}: key {}: '{}' does not fit in a 64-bit integer", where, path, text);
  if (error != std::errc()) user_error("{}: key {}: expected an integer, got '{}'", where, path, text);
}

void parse_integer(const std::string& text, int* field, const std::string& where, const std::string& path) {
  int64_t wide = 0;
  parse_integer(text, &wide, where, path);
  if (wide < INT_MIN || wide > INT_MAX)
    user_error("{}: key {} must be a 32-bit integer (from {} to {}), got {}", where, path, INT_MIN, INT_MAX, wide);
  *field = static_cast<int>(wide);
}

template <class F>
void parse_float(const std::string& text, F* field, const std::string& where, const std::string& path) {
  std::errc error = parse_number(text, *field);
  if (error == std::errc::result_out_of_range)
    user_error("{}: key {}: '{}' is out of range for a {}-bit float", where, path, text, 8 * sizeof(F));
  if (error != std::errc()) user_error("{}: key {}: expected a number, got '{}'", where, path, text);
  if (!std::isfinite(*field)) user_error("{}: key {} must be a finite number, got '{}'", where, path, text);
}

void parse_bool(const YAML::Node& node, bool* field, const std::string& where, const std::string& path) {
  if (!YAML::convert<bool>::decode(node, *field))
    user_error("{}: key {}: expected true or false, got '{}'", where, path, node.Scalar());
}

// Parses text into a field of type T (a pointer alternative of FieldRef).
template <class T>
void parse_into(T* p, const Assignment& a, const std::string& path) {
  const std::string& text = a.value.Scalar();
  if constexpr (std::is_same_v<T, std::string>) {
    *p = text;
  } else if constexpr (std::is_same_v<T, bool>) {
    parse_bool(a.value, p, a.where, path);
  } else if constexpr (std::is_floating_point_v<T>) {
    parse_float(text, p, a.where, path);
  } else {
    parse_integer(text, p, a.where, path);
  }
}

void assign(Config& config, const KeyDef& def, const Assignment& a) {
  FieldRef field = def.bind(config);
  if (a.value.IsNull())
    user_error("{}: key {} has no value; expected {}", a.where, def.path, expected_value(field));
  const std::string& text = a.value.Scalar();
  if (auto* choice = std::get_if<config_detail::ChoiceRef>(&field)) {
    if (!choice->set(text))
      user_error("{}: key {} must be {}, got '{}'{}", a.where, def.path, expected_value(field), text,
                 config_detail::did_you_mean(config_detail::suggest_words(text, choice->names)));
    return;
  }
  std::visit(
      [&](auto& ref) {
        if constexpr (std::is_pointer_v<std::decay_t<decltype(ref)>>) parse_into(ref, a, def.path);
      },
      field);

  std::string broken = config_detail::check_rule(field, def.rule);
  if (broken.empty()) return;
  const bool is_text = std::holds_alternative<std::string*>(field);
  const std::string got = is_text ? "'" + text + "'" : config_detail::format_value(field);
  const std::string hint =
      def.rule.choices.empty() ? "" : config_detail::did_you_mean(config_detail::suggest_words(text, def.rule.choices));
  user_error("{}: key {} {}, got {}{}", a.where, def.path, broken, got, hint);
}

// ---- writing YAML ------------------------------------------------------------------------------

std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> parts;
  std::stringstream stream(path);
  for (std::string part; std::getline(stream, part, '.');) parts.push_back(part);
  return parts;
}

// Rules that tie keys together, each naming the keys (a value alone is checked by the schema).
void check_key_combinations(const Config& c, const std::string& source) {
  if (c.loss.objective == Objective::wgan && c.loss.clip_critic <= 0 && c.loss.gp_weight <= 0)
    user_error("{}: loss.objective wgan needs a constraint on the critic, loss.clip_critic > 0 or loss.gp_weight > "
               "0: without one its outputs grow without bound (the WGAN paper clamps its weights to [-0.01, 0.01]; "
               "WGAN-GP penalizes its gradient with weight 10)",
               source);
  if (c.loss.gp_weight > 0 && c.model.d_norm == NormChoice::batch && c.model.arch == "dcgan")
    user_error("{}: loss.gp_weight {} needs a critic without batch norm: batch norm mixes the samples, so the "
               "per-sample gradient the penalty constrains is not defined; set model.d_norm to layer (the "
               "WGAN-GP paper's) or none",
               source, c.loss.gp_weight);
  if (c.loss.gp_weight > 0 && c.loss.clip_critic > 0)
    user_error("{}: loss.gp_weight {} and loss.clip_critic {} are two Lipschitz constraints on the critic; set "
               "one of them (WGAN-GP replaces clipping with the penalty)",
               source, c.loss.gp_weight, c.loss.clip_critic);
  if (c.loss.gp_every > 1 && c.loss.gp_weight <= 0)
    user_error("{}: loss.gp_every {} spaces out a gradient penalty, but loss.gp_weight is 0 (set it, or gp_every 1)",
               source, c.loss.gp_every);
  if (c.ema.beta > 0 && c.ema.half_life_images > 0)
    user_error("{}: ema.beta {} and ema.half_life_images {} both set the moving average's decay; set one of them",
               source, c.ema.beta, c.ema.half_life_images);
  if (c.ema.rampup > 0 && c.ema.half_life_images <= 0)
    user_error("{}: ema.rampup {} shortens a half-life, but ema.half_life_images is 0 (set it, or ema.rampup 0)",
               source, c.ema.rampup);
}

}  // namespace

Config parse_config(const std::string& yaml_text, const std::string& source,
                    const std::vector<std::string>& overrides) {
  Assignments assignments;
  collect_document(load_single_document(yaml_text, source), source, assignments);
  for (const std::string& o : overrides) collect_override(o, assignments);

  Config config;
  for (const KeyDef& def : config_detail::schema_table()) {
    auto it = assignments.find(def.path);
    if (it != assignments.end()) assign(config, def, it->second);
  }
  check_key_combinations(config, source);
  return config;
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) user_error("config file '{}' does not exist", path);
  if (std::filesystem::is_directory(path, ec)) user_error("config file '{}' is a directory, not a YAML file", path);
  std::ifstream in(path, std::ios::binary);
  if (!in) user_error("cannot open config file '{}': {}", path, std::strerror(errno));
  std::stringstream text;
  text << in.rdbuf();
  if (in.bad()) user_error("cannot read config file '{}': {}", path, std::strerror(errno));
  return parse_config(text.str(), path, overrides);
}

std::string config_to_yaml(const Config& c) {
  Config copy = c;  // the schema binds mutable fields; reading through a copy keeps c untouched
  std::string out;
  std::vector<std::string> open_sections;
  for (const KeyDef& def : config_detail::schema_table()) {
    std::vector<std::string> parts = split_path(def.path);
    const std::string name = parts.back();
    parts.pop_back();
    size_t shared = 0;
    while (shared < open_sections.size() && shared < parts.size() && open_sections[shared] == parts[shared]) ++shared;
    open_sections.resize(shared);
    for (size_t depth = shared; depth < parts.size(); ++depth) {
      if (depth == 0 && !out.empty()) out += "\n";  // a blank line between top-level sections
      out += fmt::format("{:{}}{}:\n", "", 2 * depth, parts[depth]);
      open_sections.push_back(parts[depth]);
    }
    out += fmt::format("{:{}}{}: {}\n", "", 2 * parts.size(), name, config_detail::format_value(def.bind(copy)));
  }
  return out;
}

std::vector<ConfigKeyInfo> config_schema() {
  Config defaults;
  std::vector<ConfigKeyInfo> keys;
  for (const KeyDef& def : config_detail::schema_table()) {
    FieldRef field = def.bind(defaults);
    std::string allowed = std::holds_alternative<bool*>(field) ? "true or false" : config_detail::describe_rule(def.rule);
    keys.push_back({def.path, config_detail::type_name(field), config_detail::format_value(field), allowed, def.doc});
  }
  return keys;
}

std::vector<ConfigValue> flatten_config_yaml(const std::string& text) {
  std::vector<ConfigValue> out;
  std::vector<std::string> sections;  // the open section at each indentation level
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    const size_t indent = line.find_first_not_of(' ');
    if (indent == std::string::npos || line[indent] == '#') continue;
    const size_t level = indent / 2, colon = line.find(':', indent);
    if (colon == std::string::npos) continue;
    sections.resize(std::min(level, sections.size()));
    const std::string key = line.substr(indent, colon - indent);
    std::string value = colon + 1 < line.size() ? line.substr(colon + 1) : "";
    value.erase(0, value.find_first_not_of(' '));
    std::string path;
    for (const std::string& s : sections) path += s + ".";
    if (value.empty()) {
      sections.push_back(key);
    } else {
      out.push_back({path + key, value});
    }
  }
  return out;
}

}  // namespace gt
