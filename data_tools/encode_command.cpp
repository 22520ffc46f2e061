// kto-data encode / decode: the tokenizer as a line filter — to check it against the reference
// tokenizers, and for kto-ckpt (generate, forward --text), which runs it as a child process so
// that SentencePiece's protobuf never shares a process with LibTorch's.
//   encode  stdin: {"text": TEXT} (tokenized as it is) or {"prompt": TEXT | [messages]} (rendered
//           as kto-data prepare renders prompts, --template); stdout: {"ids": [...]}
//   decode  stdin: {"ids": [...]}; stdout: {"text": TEXT}
// One output line per input line, in order, flushed after each (a caller may converse).
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

#include "commands.h"
#include "kto/util/cli.h"
#include "prepare/rows.h"
#include "tokenizer/tokenizer.h"

namespace kto::data_tools {

namespace {

nlohmann::json parse_line(const std::string& line, int64_t line_no) {
  try {
    return nlohmann::json::parse(line);
  } catch (const nlohmann::json::exception& e) {
    throw Error(detail::str_cat("stdin:", line_no, ": not valid JSON: ", e.what()));
  }
}

}  // namespace

int encode_command(int argc, char** argv) {
  std::string tokenizer_path, template_name, template_file;
  bool add_special = false;
  cli::Args args(
      "kto-data encode",
      "Tokenizes JSONL lines read from stdin — {\"text\": ...} as it is, or {\"prompt\": TEXT or a list\n"
      "of messages} rendered as kto-data prepare renders prompts — and writes {\"ids\": [...]} lines to\n"
      "stdout, in order. Malformed lines are errors naming the line number.");
  args.option("--tokenizer", &tokenizer_path, "PATH",
              "tokenizer.json, tokenizer.model, or a directory with one", cli::required)
      .flag("--add-special-tokens", &add_special, "apply the tokenizer's special-token rule (e.g. BOS)")
      .option("--template", &template_name, "NAME",
              "chat template for \"prompt\" lines (hh, chatml, llama3, plain): a string prompt becomes its "
              "user turn; without it a string is used as it is and messages use hh")
      .option("--template-file", &template_file, "FILE",
              "a chat template from a JSON file (see kto-data prepare)");
  if (!args.parse(argc, argv, 2)) return 0;
  if (!template_name.empty() && !template_file.empty())
    throw cli::UsageError("--template and --template-file are exclusive");
  const auto tokenizer = tok::load_tokenizer(tokenizer_path);
  const bool wrap = !template_name.empty() || !template_file.empty();
  const ChatTemplate tmpl = !template_file.empty()
                                ? ChatTemplate::from_file(template_file)
                                : ChatTemplate::builtin(template_name.empty() ? "hh" : template_name);

  std::ios::sync_with_stdio(false);
  std::string line, out;
  int64_t line_no = 0;
  while (std::getline(std::cin, line)) {
    ++line_no;
    if (line.empty()) continue;
    const nlohmann::json row = parse_line(line, line_no);
    std::string text;
    if (row.is_object() && row.contains("text") && row["text"].is_string()) {
      text = row["text"].get<std::string>();
    } else if (row.is_object() && row.contains("prompt")) {
      try {
        text = generation_prompt(row["prompt"], tmpl, wrap);
      } catch (const Error& e) {
        throw Error(detail::str_cat("stdin:", line_no, ": ", e.what()));
      }
    } else {
      throw Error(
          detail::str_cat("stdin:", line_no, ": expected an object with a string \"text\" or a \"prompt\""));
    }
    const std::vector<int32_t> ids = tokenizer->encode(text, add_special);
    out = "{\"ids\": [";
    for (size_t i = 0; i < ids.size(); ++i) {
      if (i) out += ", ";
      out += std::to_string(ids[i]);
    }
    out += "]}\n";
    std::cout << out << std::flush;
  }
  return 0;
}

int decode_command(int argc, char** argv) {
  std::string tokenizer_path;
  bool skip_special = false;
  cli::Args args(
      "kto-data decode",
      "Turns JSONL lines {\"ids\": [...]} read from stdin into {\"text\": ...} lines on stdout, in\n"
      "order; ids past the tokenizer's vocabulary (a model's padded embedding rows) become U+FFFD.\n"
      "Malformed lines are errors naming the line number.");
  args.option("--tokenizer", &tokenizer_path, "PATH",
              "tokenizer.json, tokenizer.model, or a directory with one", cli::required)
      .flag("--skip-special-tokens", &skip_special, "leave special tokens (BOS, EOS, ...) out of the text");
  if (!args.parse(argc, argv, 2)) return 0;
  const auto tokenizer = tok::load_tokenizer(tokenizer_path);
  std::ios::sync_with_stdio(false);
  std::string line;
  int64_t line_no = 0;
  while (std::getline(std::cin, line)) {
    ++line_no;
    if (line.empty()) continue;
    const nlohmann::json row = parse_line(line, line_no);
    if (!row.is_object() || !row.contains("ids") || !row["ids"].is_array())
      throw Error(detail::str_cat("stdin:", line_no, ": expected an object with an \"ids\" list"));
    // Ids past the tokenizer's vocabulary (a model's padded embedding rows) decode to U+FFFD.
    std::string decoded;
    std::vector<int32_t> run;
    for (const auto& v : row["ids"]) {
      if (!v.is_number_integer() || v.get<int64_t>() < 0)
        throw Error(detail::str_cat("stdin:", line_no, ": ", v.dump(), " is not a token id"));
      if (v.get<int64_t>() < tokenizer->vocab_size()) {
        run.push_back(static_cast<int32_t>(v.get<int64_t>()));
        continue;
      }
      decoded += tokenizer->decode(run, skip_special) + "\xEF\xBF\xBD";
      run.clear();
    }
    decoded += tokenizer->decode(run, skip_special);
    // Invalid UTF-8 (a multi-byte character cut by the token boundary) becomes U+FFFD.
    const std::string text =
        nlohmann::json(decoded).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    std::cout << "{\"text\": " << text << "}\n" << std::flush;
  }
  return 0;
}

}  // namespace kto::data_tools
