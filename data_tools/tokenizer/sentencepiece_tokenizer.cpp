// SentencePiece tokenizer.model through Debian's libsentencepiece. Raw SentencePiece semantics:
// add_special_tokens adds BOS only, and "<s>" inside text is plain text.
#include <sentencepiece_processor.h>

#include "kto/util/check.h"
#include "kto/util/sha256.h"
#include "tokenizer.h"

namespace kto::tok {
namespace {

class SentencePieceTokenizer : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const std::string& path) {
    const auto status = sp_.Load(path);
    if (!status.ok()) throw Error(path + ": not a SentencePiece model: " + status.ToString());
    path_ = path;
    sha256_ = sha256_file(path);
  }

  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const override {
    std::vector<int> ids;
    const auto status = sp_.Encode(text, &ids);
    if (!status.ok()) throw Error(path_ + ": SentencePiece encode failed: " + status.ToString());
    std::vector<int32_t> out;
    out.reserve(ids.size() + 1);
    if (add_special_tokens && sp_.bos_id() >= 0) out.push_back(sp_.bos_id());
    out.insert(out.end(), ids.begin(), ids.end());
    return out;
  }

  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const override {
    std::vector<int> keep;
    for (int32_t id : ids) {
      if (id < 0 || id >= sp_.GetPieceSize())
        throw Error(detail::str_cat(path_, ": token id ", id, " out of range"));
      if (skip_special_tokens && sp_.IsControl(id)) continue;
      keep.push_back(id);
    }
    std::string text;
    const auto status = sp_.Decode(keep, &text);
    if (!status.ok()) throw Error(path_ + ": SentencePiece decode failed: " + status.ToString());
    return text;
  }

  int64_t vocab_size() const override { return sp_.GetPieceSize(); }
  int32_t bos_id() const override { return sp_.bos_id(); }
  int32_t eos_id() const override { return sp_.eos_id(); }
  int32_t pad_id() const override { return sp_.pad_id(); }
  int32_t token_to_id(const std::string& token) const override {
    const int id = sp_.PieceToId(token);
    return id == sp_.unk_id() && token != sp_.IdToPiece(sp_.unk_id()) ? -1 : id;
  }
  const char* kind() const override { return "sentencepiece"; }

 private:
  sentencepiece::SentencePieceProcessor sp_;
};

}  // namespace

std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const std::string& path) {
  return std::make_unique<SentencePieceTokenizer>(path);
}

}  // namespace kto::tok
