#include "kto/util/text_codec.h"

#include <fstream>

#include "kto/util/check.h"
#include "kto/util/files.h"
#include "kto/util/json.h"

namespace kto {

using json = nlohmann::json;

std::string model_tokenizer(const std::string& dir) {
  for (const char* name : {"tokenizer.json", "tokenizer.model"}) {
    if (path_exists(join_path(dir, name))) return dir;
  }
  return "";
}

namespace {

std::vector<int64_t> ids_of(const std::string& answer) {
  const json row = json::parse(answer);  // kept: the loop reads into it
  std::vector<int64_t> ids;
  for (const json& v : row.at("ids")) ids.push_back(v.get<int64_t>());
  return ids;
}

}  // namespace

TextCodec::TextCodec(std::string tokenizer, std::string template_name, std::string template_file)
    : tokenizer_(std::move(tokenizer)),
      template_name_(std::move(template_name)),
      template_file_(std::move(template_file)) {}

TextCodec::~TextCodec() = default;

Coprocess& TextCodec::encoder() {
  if (!encoder_) {
    std::vector<std::string> argv = {sibling_program("kto-data"), "encode", "--tokenizer", tokenizer_,
                                     "--add-special-tokens"};
    if (!template_name_.empty()) argv.insert(argv.end(), {"--template", template_name_});
    if (!template_file_.empty()) argv.insert(argv.end(), {"--template-file", template_file_});
    encoder_ = std::make_unique<Coprocess>(argv);
  }
  return *encoder_;
}

std::vector<int64_t> TextCodec::encode_prompt(const json& prompt) {
  return ids_of(encoder().ask(json{{"prompt", prompt}}.dump()));
}

std::vector<int64_t> TextCodec::encode_text(const std::string& text) {
  return ids_of(encoder().ask(json{{"text", text}}.dump()));
}

std::string TextCodec::decode(const std::vector<int64_t>& ids) {
  if (!decoder_) {
    decoder_ = std::make_unique<Coprocess>(std::vector<std::string>{
        sibling_program("kto-data"), "decode", "--tokenizer", tokenizer_, "--skip-special-tokens"});
  }
  return json::parse(decoder_->ask(json{{"ids", ids}}.dump())).at("text").get<std::string>();
}

void for_each_jsonl_line(const std::string& path, const std::function<void(const json&, int64_t)>& each) {
  std::ifstream in(path);
  if (!in) throw Error(path + ": cannot open");
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    each(parse_json(line, detail::str_cat(path, ":", n)), n);
  }
}

}  // namespace kto
