#include "report_run.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "kto/util/check.h"
#include "kto/util/files.h"

namespace kto::train {

namespace {

using json = nlohmann::json;
using detail::str_cat;

// Calls each(record, line number) for every line of a JSON-lines file. A last line without its
// newline that does not parse is a record still being written: not yet part of the run. A bad
// line is an Error naming the file and line, or, given `notes`, a note there and left out.
void read_jsonl(const std::string& path, const std::function<void(const json&, int64_t)>& each,
                std::vector<std::string>* notes = nullptr) {
  std::ifstream in(path);
  if (!in) throw Error(path + ": cannot open");
  std::string line;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.empty()) continue;
    try {
      json j;
      try {
        j = json::parse(line);
      } catch (const json::exception& e) {
        if (in.eof()) break;
        throw Error(str_cat(path, ":", line_no, ": not valid JSON: ", e.what()));
      }
      if (!j.is_object()) throw Error(str_cat(path, ":", line_no, ": not a JSON object"));
      each(j, line_no);
    } catch (const Error& e) {
      if (notes == nullptr) throw;
      notes->push_back(str_cat(e.what(), "; the line is left out"));
    }
  }
}

// Metrics: a number, or "nan"/"inf"/"-inf" (JSON has no NaN); anything else is not a metric.
bool metric_value(const json& v, double* out) {
  if (v.is_number()) {
    *out = v.get<double>();
    return true;
  }
  if (v.is_string() && (v == "nan" || v == "inf" || v == "-inf")) {
    *out = NAN;
    return true;
  }
  return false;
}

Records to_records(const std::map<double, std::map<std::string, double>>& by_step) {
  Records r;
  for (const auto& [step, values] : by_step) {
    r.steps.push_back(step);
    r.values.push_back(values);
  }
  return r;
}

void read_metrics(const std::string& path, RunData* run) {
  std::map<double, std::map<std::string, double>> train, eval;
  read_jsonl(path, [&](const json& j, int64_t) {
    if (!j.contains("step") || !j["step"].is_number()) return;  // not a step's record
    std::map<std::string, double> values;
    for (const auto& [key, v] : j.items()) {
      double x;
      if (key != "step" && metric_value(v, &x)) values[key] = x;
    }
    const bool is_eval = j.contains("split") && j["split"] == "eval";
    (is_eval ? eval : train)[j["step"].get<double>()] = std::move(values);
  });
  run->train = to_records(train);
  run->eval = to_records(eval);
}

// samples.jsonl: a bad line is a note, like segments.jsonl's.
void read_samples(const std::string& path, RunData* run) {
  std::map<std::pair<int64_t, int64_t>, Sample> by_key;  // (sample, step): a resumed run's later line wins
  read_jsonl(
      path,
      [&](const json& j, int64_t line_no) {
        try {
          Sample s;
          s.step = j.at("step").get<int64_t>();
          s.sample = j.at("sample").get<int64_t>();
          s.example = j.value("example", int64_t{-1});
          s.label = j.value("label", std::string());
          s.finish_reason = j.value("finish_reason", std::string());
          s.tokenizer = j.value("tokenizer", std::string());
          s.prompt_ids = j.at("prompt_ids").get<std::vector<int64_t>>();
          s.generated_ids = j.at("generated_ids").get<std::vector<int64_t>>();
          if (j.contains("reward") && j["reward"].is_number()) {
            s.has_reward = true;
            s.reward = j["reward"].get<double>();
          }
          by_key[{s.sample, s.step}] = s;
        } catch (const json::exception& e) {
          run->notes.push_back(str_cat(path, ":", line_no, ": left out: ", e.what()));
        }
      },
      &run->notes);
  for (auto& [key, s] : by_key) run->samples.push_back(std::move(s));
}

// segments.jsonl is history, not the run (kto-train drops damaged lines too): a bad line is a
// note on the page, not an error that would stop kto-train's final report.
void read_segments(const std::string& path, RunData* run) {
  read_jsonl(
      path,
      [&](const json& j, int64_t line_no) {
        auto bad = [&](const char* field, const char* what) {
          return Error(str_cat(path, ":", line_no, ": field '", field, "' ", what));
        };
        auto integer = [&](const char* field, bool required) -> int64_t {
          if (!j.contains(field)) {
            if (required) throw bad(field, "is missing");
            return 0;
          }
          if (!j[field].is_number_integer()) throw bad(field, "is not an integer");
          return j[field].get<int64_t>();
        };
        auto text = [&](const char* field) -> std::string {
          if (!j.contains(field) || j[field].is_null()) return "";
          if (!j[field].is_string()) throw bad(field, "is not a string");
          return j[field].get<std::string>();
        };
        Segment s;
        s.index =
            j.contains("segment") ? integer("segment", true) : static_cast<int64_t>(run->segments.size());
        s.start_step = integer("start_step", true);
        s.end_step = integer("end_step", true);
        s.world_size = integer("world_size", false);
        if (j.contains("wall_s")) {
          if (!j["wall_s"].is_number()) throw bad("wall_s", "is not a number");
          s.wall_s = j["wall_s"].get<double>();
        }
        s.started = text("started");
        s.state = text("state");
        s.config = text("config");
        if (j.contains("changes")) {
          if (!j["changes"].is_array()) throw bad("changes", "is not a list of strings");
          for (const json& c : j["changes"]) {
            if (!c.is_string()) throw bad("changes", "is not a list of strings");
            s.changes.push_back(c.get<std::string>());
          }
        }
        run->segments.push_back(std::move(s));
      },
      &run->notes);
}

}  // namespace

std::vector<double> Records::series(const std::string& key) const {
  std::vector<double> out;
  out.reserve(values.size());
  for (const auto& v : values) {
    const auto it = v.find(key);
    out.push_back(it == v.end() ? NAN : it->second);
  }
  return out;
}

bool Records::has(const std::string& key) const {
  for (const auto& v : values) {
    const auto it = v.find(key);
    if (it != v.end() && std::isfinite(it->second)) return true;
  }
  return false;
}

double RunData::last_step() const { return std::max(train.last_step(), eval.last_step()); }

double RunData::wall_seconds() const {
  if (segments.empty()) return -1;
  double total = 0;
  for (const Segment& s : segments) total += std::max(0.0, s.wall_s);
  return total;
}

RunData read_run(const std::string& run_dir) {
  RunData run;
  run.dir = run_dir;
  const std::string metrics = join_path(run_dir, "metrics.jsonl");
  if (!path_exists(metrics)) throw Error(run_dir + ": no metrics.jsonl (is it a kto-train run directory?)");
  read_metrics(metrics, &run);

  const std::string facts = join_path(run_dir, "run.json");
  if (path_exists(facts)) {
    try {
      for (const json& kv : json::parse(read_text_file(facts)))
        run.facts.emplace_back(kv.at(0).get<std::string>(), kv.at(1).get<std::string>());
    } catch (const json::exception& e) {
      throw Error(str_cat(facts, ": not a list of [key, value] pairs: ", e.what()));
    }
  }
  const std::string segments = join_path(run_dir, "segments.jsonl");
  if (path_exists(segments)) read_segments(segments, &run);
  const std::string samples = join_path(run_dir, "samples.jsonl");
  if (path_exists(samples)) read_samples(samples, &run);
  const std::string status = join_path(run_dir, "status.json");
  if (path_exists(status)) {
    // Written whole (atomically) by kto-train; a damaged one only loses the state row.
    const json j = json::parse(read_text_file(status), nullptr, /*allow_exceptions=*/false);
    if (j.is_object() && j.contains("state") && j["state"].is_string()) run.state = j["state"];
  }
  const std::string config = join_path(run_dir, "config.yaml");
  if (path_exists(config)) run.config = read_text_file(config);
  return run;
}

std::vector<std::string> run_names(const std::vector<std::string>& run_dirs) {
  auto tail = [](std::string path, int parts) {
    while (path.size() > 1 && path.back() == '/') path.pop_back();
    size_t cut = path.size();
    for (int i = 0; i < parts && cut != std::string::npos && cut > 0; ++i) cut = path.rfind('/', cut - 1);
    return cut == std::string::npos ? path : path.substr(cut + 1);
  };
  auto count = [](const std::vector<std::string>& names, const std::string& name) {
    return std::count(names.begin(), names.end(), name);
  };
  std::vector<std::string> base, names;
  for (const std::string& d : run_dirs) base.push_back(tail(d, 1));
  for (size_t i = 0; i < run_dirs.size(); ++i)
    names.push_back(count(base, base[i]) > 1 ? tail(run_dirs[i], 2) : base[i]);
  std::vector<std::string> unique;
  for (size_t i = 0; i < names.size(); ++i) {
    std::string name = names[i];
    if (count(names, name) > 1) {
      const auto earlier = std::count(names.begin(), names.begin() + static_cast<std::ptrdiff_t>(i), name);
      if (earlier > 0) name += str_cat(" (", earlier + 1, ")");
    }
    unique.push_back(name);
  }
  return unique;
}

}  // namespace kto::train
