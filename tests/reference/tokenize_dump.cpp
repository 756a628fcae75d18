// The C++ side of the tokenizer parity test (tokenizer_parity.py): encodes a file with a
// tokenizer spec, trains a SentencePiece model, or measures encode throughput.
//   tokenize_dump encode SPEC TEXT_FILE IDS_OUT   ids, one line, space-separated; prints
//                                                 "round_trip 1" when decode(encode(x)) == x
//                                                 byte for byte, decode_one() of each token
//                                                 concatenates to x, and the byte counts sum to
//                                                 the input size (else "round_trip 0")
//   tokenize_dump train-sp TEXT_FILE VOCAB MODEL_OUT   trains (Tokenizer::train_sentencepiece)
//                                                 and writes the .model bytes
//   tokenize_dump bench SPEC TEXT_FILE [DOC_BYTES]   single-threaded encode MB/s over documents
//                                                 of about DOC_BYTES (default 1 MiB), cut
//                                                 after a newline
// SPEC is what `prepare --tokenizer` takes (byte, hf:PATH, sp:PATH). The tokenizer used is the
// one read back from its own to_json(), so the dataset.json path is exercised too.
#include <chrono>
#include <fstream>
#include <iostream>
#include <numeric>
#include <sstream>

#include "core/common/error.h"
#include "core/data/sp_tokenizer.h"
#include "core/data/tokenizer.h"

namespace {

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

cr::Tokenizer reloaded(const std::string& spec) {
  const cr::Tokenizer t = cr::Tokenizer::from_spec(spec);
  return cr::Tokenizer::from_json(nlohmann::json::parse(t.to_json().dump()), "round trip");
}

int encode(const std::string& spec, const std::string& in, const std::string& out) {
  const cr::Tokenizer tok = reloaded(spec);
  const std::string text = read_all(in);
  std::vector<uint8_t> counts;
  const auto ids = tok.encode(text, &counts);
  std::ofstream o(out);
  for (size_t i = 0; i < ids.size(); i++) o << (i ? " " : "") << ids[i];
  o << "\n";
  const size_t counted = std::accumulate(counts.begin(), counts.end(), size_t{0});
  std::string streamed;
  for (int32_t id : ids) streamed += tok.decode_one(id);
  // (sp's decode_one keeps the dummy-prefix space decode() drops; ours are trained without one.)
  const bool round_trip = tok.decode(ids) == text && streamed == text && counted == text.size();
  std::cout << "tokenize_dump: " << spec.substr(0, 3) << " vocab " << tok.vocab_size() << " eot "
            << tok.eot_id() << " tokens " << ids.size() << " bytes " << text.size()
            << " counted " << counted << " round_trip " << round_trip << "\n";
  return 0;
}

int train_sp(const std::string& in, int vocab, const std::string& out) {
  const std::string text = read_all(in);
  bool given = false;
  const auto t = cr::Tokenizer::train_sentencepiece(
      [&](std::string& s) {
        if (given) return false;
        s = text;
        return given = true;
      },
      vocab);
  const auto j = t.to_json();
  std::ofstream(out, std::ios::binary)
      << cr::base64_decode(j.at("model_proto_base64").get<std::string>(), "json");
  std::cout << "tokenize_dump: trained sp vocab " << t.vocab_size() << " eot " << t.eot_id() << "\n";
  return 0;
}

int bench(const std::string& spec, const std::string& in, size_t chunk) {
  const cr::Tokenizer tok = reloaded(spec);
  const std::string text = read_all(in);
  size_t tokens = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t p = 0, e; p < text.size(); p = e) {
    // Cut after a newline so no pre-token straddles two calls.
    e = std::min(text.size(), p + chunk);
    const size_t nl = text.rfind('\n', e - 1);
    if (e < text.size() && nl != std::string::npos && nl >= p) e = nl + 1;
    while (e < text.size() && ((uint8_t)text[e] & 0xC0) == 0x80) e--;  // else a whole character
    tokens += tok.encode(std::string_view(text).substr(p, e - p)).size();
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << "tokenize_dump: bench " << spec.substr(0, 3) << " " << text.size() / 1e6 << " MB, "
            << tokens << " tokens, " << s << " s, " << text.size() / 1e6 / s << " MB/s\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string cmd = argc > 1 ? argv[1] : "";
    if (cmd == "encode" && argc == 5) return encode(argv[2], argv[3], argv[4]);
    if (cmd == "train-sp" && argc == 5) return train_sp(argv[2], std::stoi(argv[3]), argv[4]);
    if (cmd == "bench" && (argc == 4 || argc == 5))
      return bench(argv[2], argv[3], argc == 5 ? std::stoul(argv[4]) : size_t{1} << 20);
    std::cerr << "usage: tokenize_dump encode SPEC TEXT IDS | train-sp TEXT VOCAB MODEL | "
                 "bench SPEC TEXT [DOC_BYTES]\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "tokenize_dump: " << e.what() << "\n";
    return 1;
  }
}
