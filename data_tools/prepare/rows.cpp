#include "rows.h"

#include <nlohmann/json.hpp>

#include "kto/util/check.h"
#include "kto/util/files.h"
#include "kto/util/json.h"

namespace kto::data_tools {

using json = nlohmann::json;

namespace {

constexpr const char* kHhMarker = "\n\nAssistant:";

std::string substitute(std::string text, const std::string& role, const std::string& content) {
  for (const auto& [key, value] :
       {std::pair<std::string, std::string>{"{role}", role}, {"{content}", content}}) {
    for (size_t at = text.find(key); at != std::string::npos; at = text.find(key, at + value.size())) {
      text.replace(at, key.size(), value);
    }
  }
  return text;
}

struct Message {
  std::string role, content;
};

// Messages from a list of {role, content} or {from, value}; false with an error otherwise.
bool read_messages(const json& list, const char* field, std::vector<Message>& out, RowError& error) {
  if (!list.is_array()) {
    error = {"wrong_type", std::string("'") + field + "' must be a list of messages"};
    return false;
  }
  for (const json& m : list) {
    Message msg;
    if (m.is_object() && m.contains("role") && m.contains("content") && m["role"].is_string() &&
        m["content"].is_string()) {
      msg = {m["role"].get<std::string>(), m["content"].get<std::string>()};
    } else if (m.is_object() && m.contains("from") && m.contains("value") && m["from"].is_string() &&
               m["value"].is_string()) {
      std::string role = m["from"].get<std::string>();
      if (role == "human") role = "user";
      if (role == "gpt") role = "assistant";
      msg = {role, m["value"].get<std::string>()};
    } else {
      error = {"bad_messages", std::string("'") + field + "' holds a message without string role/content"};
      return false;
    }
    if (msg.role != "system" && msg.role != "user" && msg.role != "assistant") {
      error = {"bad_messages", "unknown message role '" + msg.role + "'"};
      return false;
    }
    out.push_back(std::move(msg));
  }
  return true;
}

std::string render(const std::vector<Message>& messages, const ChatTemplate& t) {
  std::string out;
  for (const Message& m : messages) {
    const std::string& pattern = m.role == "system" ? t.system : m.role == "user" ? t.user : t.assistant;
    out += substitute(pattern, m.role, m.content);
  }
  return out;
}

// A prompt or completion field: a string, or (TRL conversational) a list of messages.
bool text_field(const json& row, const char* field, bool is_completion, const ChatTemplate& t,
                std::string& out, RowError& error) {
  const json& v = row.at(field);
  if (v.is_string()) {
    out = v.get<std::string>();
    return true;
  }
  std::vector<Message> messages;
  if (!v.is_array()) {
    error = {"wrong_type", std::string("'") + field + "' must be a string or a list of messages"};
    return false;
  }
  if (!read_messages(v, field, messages, error)) return false;
  if (is_completion) {
    std::string text;
    for (const Message& m : messages) text += m.content;
    out = t.completion_prefix + text;
  } else {
    out = render(messages, t) + t.generation;
  }
  return true;
}

bool read_label(const json& row, bool& out, RowError& error) {
  if (!row.contains("label")) {
    error = {"missing_field", "no 'label'"};
    return false;
  }
  const json& l = row["label"];
  if (l.is_boolean()) {
    out = l.get<bool>();
    return true;
  }
  if (l.is_number_integer() && (l.get<int64_t>() == 0 || l.get<int64_t>() == 1)) {
    out = l.get<int64_t>() == 1;
    return true;
  }
  error = {"wrong_type", "'label' must be true/false or 0/1, got " + json_brief(l)};
  return false;
}

const char* first_present(const json& row, std::initializer_list<const char*> names) {
  for (const char* n : names) {
    if (row.contains(n)) return n;
  }
  return nullptr;
}

}  // namespace

const char* format_name(RowFormat f) {
  switch (f) {
    case RowFormat::unpaired: return "unpaired";
    case RowFormat::conversational: return "conversational";
    case RowFormat::paired: return "paired";
    case RowFormat::hh: return "hh";
  }
  return "?";
}

ChatTemplate ChatTemplate::builtin(const std::string& name) {
  ChatTemplate t;
  t.name = name;
  if (name == "hh") {
    t.user = "\n\nHuman: {content}";
    t.assistant = "\n\nAssistant: {content}";
    t.generation = "\n\nAssistant:";
    t.completion_prefix = " ";
  } else if (name == "chatml") {
    t.system = t.user = t.assistant = "<|im_start|>{role}\n{content}<|im_end|>\n";
    t.generation = "<|im_start|>assistant\n";
  } else if (name == "llama3") {
    t.system = t.user = t.assistant = "<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>";
    t.generation = "<|start_header_id|>assistant<|end_header_id|>\n\n";
  } else if (name == "plain") {
    t.system = t.user = t.assistant = "{role}: {content}\n";
    t.generation = "assistant: ";
  } else {
    throw Error("unknown chat template '" + name +
                "' (built-in: hh, chatml, llama3, plain; or --template-file)");
  }
  return t;
}

ChatTemplate ChatTemplate::from_file(const std::string& path) {
  const json spec = parse_json(read_text_file(path), path);
  if (!spec.is_object()) {
    throw Error(path +
                ": a template file is a JSON object with keys system, user, assistant, generation, "
                "completion_prefix; got " +
                json_brief(spec));
  }
  ChatTemplate t;
  t.name = path;
  for (const auto& [key, field] : {std::pair<const char*, std::string*>{"system", &t.system},
                                   {"user", &t.user},
                                   {"assistant", &t.assistant},
                                   {"generation", &t.generation},
                                   {"completion_prefix", &t.completion_prefix}}) {
    if (spec.contains(key)) {
      if (!spec[key].is_string()) throw Error(path + ": key '" + key + "' must be a string");
      *field = spec[key].get<std::string>();
    }
  }
  for (auto it = spec.begin(); it != spec.end(); ++it) {
    const std::string& k = it.key();
    if (k != "system" && k != "user" && k != "assistant" && k != "generation" && k != "completion_prefix") {
      throw Error(path + ": unknown key '" + k +
                  "' (system, user, assistant, generation, completion_prefix)");
    }
  }
  if (t.user.empty() || t.assistant.empty()) throw Error(path + ": 'user' and 'assistant' are required");
  for (const auto& [key, text] : {std::pair<const char*, const std::string*>{"system", &t.system},
                                  {"user", &t.user},
                                  {"assistant", &t.assistant}}) {
    if ((key == std::string("system") ? !text->empty() : true) &&
        text->find("{content}") == std::string::npos) {
      throw Error(path + ": key '" + key + "' must contain {content} (where the message goes), got " +
                  json_brief(*text));
    }
  }
  return t;
}

std::string generation_prompt(const json& prompt, const ChatTemplate& t, bool wrap_string) {
  if (prompt.is_string() && !wrap_string) return prompt.get<std::string>();
  if (prompt.is_string()) return render({{"user", prompt.get<std::string>()}}, t) + t.generation;
  std::vector<Message> messages;
  RowError error;
  if (!read_messages(prompt, "prompt", messages, error)) throw Error(error.detail);
  return render(messages, t) + t.generation;
}

ParsedRow parse_row(const json& row, const ChatTemplate& t) {
  ParsedRow out;
  RowError& err = out.error;
  if (!row.is_object()) {
    err = {"not_object", "row is not a JSON object"};
    return out;
  }
  if (row.contains("chosen") || row.contains("rejected")) {
    for (const char* f : {"chosen", "rejected"}) {
      if (!row.contains(f)) {
        err = {"missing_field", std::string("paired row without '") + f + "'"};
        return out;
      }
    }
    std::string chosen, rejected;
    if (row.contains("prompt")) {
      out.format = RowFormat::paired;
      std::string prompt;
      if (!text_field(row, "prompt", false, t, prompt, err) ||
          !text_field(row, "chosen", true, t, chosen, err) ||
          !text_field(row, "rejected", true, t, rejected, err)) {
        return out;
      }
      out.examples = {{prompt, chosen, true}, {prompt, rejected, false}};
    } else {
      out.format = RowFormat::hh;
      if (!row["chosen"].is_string() || !row["rejected"].is_string()) {
        err = {"wrong_type", "'chosen' and 'rejected' transcripts must be strings"};
        return out;
      }
      const std::string& c = row["chosen"].get_ref<const std::string&>();
      const std::string& r = row["rejected"].get_ref<const std::string&>();
      const size_t ci = c.rfind(kHhMarker), ri = r.rfind(kHhMarker);
      if (ci == std::string::npos || ri == std::string::npos) {
        err = {"hh_no_assistant", "a transcript has no \"\\n\\nAssistant:\" turn"};
        return out;
      }
      const size_t cut_c = ci + std::strlen(kHhMarker), cut_r = ri + std::strlen(kHhMarker);
      if (c.compare(0, cut_c, r, 0, cut_r) != 0 || cut_c != cut_r) {
        err = {"hh_prefix_mismatch", "chosen and rejected differ before their last \"\\n\\nAssistant:\""};
        return out;
      }
      out.examples = {{c.substr(0, cut_c), c.substr(cut_c), true},
                      {r.substr(0, cut_r), r.substr(cut_r), false}};
    }
  } else if (const char* list = first_present(row, {"messages", "conversations"})) {
    out.format = RowFormat::conversational;
    bool label = false;
    std::vector<Message> messages;
    if (!read_label(row, label, err) || !read_messages(row[list], list, messages, err)) return out;
    if (messages.empty() || messages.back().role != "assistant") {
      err = {"bad_messages", "the last message is not an assistant turn"};
      return out;
    }
    const std::string completion = t.completion_prefix + messages.back().content;
    messages.pop_back();
    out.examples = {{render(messages, t) + t.generation, completion, label}};
  } else {
    out.format = RowFormat::unpaired;
    const char* prompt_field = first_present(row, {"prompt", "input"});
    const char* completion_field = first_present(row, {"completion", "output"});
    if (prompt_field == nullptr || completion_field == nullptr) {
      err = {"unknown_format", "no prompt/completion, messages, or chosen/rejected fields"};
      return out;
    }
    TextExample e;
    if (!read_label(row, e.desirable, err) || !text_field(row, prompt_field, false, t, e.prompt, err) ||
        !text_field(row, completion_field, true, t, e.completion, err)) {
      return out;
    }
    out.examples = {std::move(e)};
  }
  for (const TextExample& e : out.examples) {
    if (e.completion.empty()) {
      err = {"empty_completion", "the completion is empty"};
      out.examples.clear();
      return out;
    }
  }
  return out;
}

}  // namespace kto::data_tools
