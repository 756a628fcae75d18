// A deterministic multilingual-ish text corpus for bench/data/prepare.sh: words built from
// syllables of several scripts (Latin with accents, Cyrillic, Greek, CJK, Hangul), numbers,
// punctuation, sentences, lines and paragraphs, drawn with a Zipf-like bias so a BPE tokenizer
// has frequent words to merge. Not meant to be realistic text, only to exercise the
// pre-tokenizer's classes at the speed of a real corpus.
//   gen_corpus BYTES SEED > corpus.txt
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

uint64_t g_state;
uint64_t next_u64() {  // splitmix64
  uint64_t z = (g_state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
size_t below(size_t n) { return next_u64() % n; }
size_t zipf_below(size_t n) {  // biased towards small indices
  const double u = (next_u64() >> 11) * (1.0 / 9007199254740992.0);
  return (size_t)((double)n * u * u * u) % n;
}

const std::vector<std::vector<std::string>> kSyllables = {
    {"the", "an", "in", "er", "on", "at", "re", "st", "ing", "tion", "ble", "ous", "ment"},
    {"é", "è", "ça", "où", "ü", "ö", "ä", "ß", "ñ", "ão", "ž", "ł", "ø"},
    {"при", "ве", "то", "ко", "на", "ст", "ра", "ли", "мо", "ни"},
    {"κα", "λη", "με", "ρα", "το", "νι", "ση"},
    {"日本", "中文", "語", "学", "生", "大", "人", "国", "東京", "字"},
    {"한", "국", "어", "사", "람", "학", "교"},
};

std::vector<std::string> make_words(size_t n) {
  std::vector<std::string> words;
  for (size_t i = 0; i < n; i++) {
    const auto& script = kSyllables[i % 7 < 4 ? 0 : 1 + below(kSyllables.size() - 1)];
    std::string w;
    const size_t k = 1 + below(4);
    for (size_t j = 0; j < k; j++) w += script[below(script.size())];
    if (below(10) == 0) w[0] = (char)std::toupper((unsigned char)w[0]);
    words.push_back(w);
  }
  return words;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: gen_corpus BYTES SEED\n");
    return 2;
  }
  const uint64_t target = std::strtoull(argv[1], nullptr, 10);
  g_state = std::strtoull(argv[2], nullptr, 10);
  const std::vector<std::string> words = make_words(20000);
  const char* punct[] = {",", ".", ";", ":", "!", "?", " -", "'s", "\"", "(", ")"};
  std::string buf;
  uint64_t written = 0;
  while (written < target) {
    buf.clear();
    while (buf.size() < (1 << 20)) {
      const size_t sentence = 4 + below(20);
      for (size_t i = 0; i < sentence; i++) {
        if (i) buf += below(50) == 0 ? "  " : " ";
        if (below(25) == 0)
          buf += std::to_string(below(100000));
        else
          buf += words[zipf_below(words.size())];
        if (below(12) == 0) buf += punct[below(sizeof(punct) / sizeof(punct[0]))];
      }
      buf += ". ";
      if (below(4) == 0) buf += below(5) == 0 ? "\n\n" : "\n";
    }
    const size_t n = (size_t)std::min<uint64_t>(buf.size(), target - written);
    if (std::fwrite(buf.data(), 1, n, stdout) != n) return 1;
    written += n;
  }
  return 0;
}
