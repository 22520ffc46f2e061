#include "ckpt_tokenizer.h"

#include "kto/util/files.h"

namespace kto::apps {

using json = nlohmann::json;

std::string model_tokenizer(const std::string& dir) {
  for (const char* name : {"tokenizer.json", "tokenizer.model"}) {
    if (path_exists(join_path(dir, name))) return dir;
  }
  return "";
}

namespace {

std::vector<std::string> encoder_argv(const std::string& tokenizer, const std::string& name,
                                      const std::string& file) {
  std::vector<std::string> argv = {sibling_program("kto-data"), "encode", "--tokenizer", tokenizer,
                                   "--add-special-tokens"};
  if (!name.empty()) argv.insert(argv.end(), {"--template", name});
  if (!file.empty()) argv.insert(argv.end(), {"--template-file", file});
  return argv;
}

std::vector<int64_t> ids_of(const std::string& answer) {
  const json row = json::parse(answer);  // kept: the loop reads into it
  std::vector<int64_t> ids;
  for (const json& v : row.at("ids")) ids.push_back(v.get<int64_t>());
  return ids;
}

}  // namespace

TextCodec::TextCodec(const std::string& tokenizer, const std::string& template_name,
                     const std::string& template_file)
    : encoder_(encoder_argv(tokenizer, template_name, template_file)),
      decoder_({sibling_program("kto-data"), "decode", "--tokenizer", tokenizer, "--skip-special-tokens"}) {}

std::vector<int64_t> TextCodec::encode_prompt(const json& prompt) {
  return ids_of(encoder_.ask(json{{"prompt", prompt}}.dump()));
}

std::vector<int64_t> TextCodec::encode_text(const std::string& text) {
  return ids_of(encoder_.ask(json{{"text", text}}.dump()));
}

std::string TextCodec::decode(const std::vector<int64_t>& ids) {
  return json::parse(decoder_.ask(json{{"ids", ids}}.dump())).at("text").get<std::string>();
}

}  // namespace kto::apps
