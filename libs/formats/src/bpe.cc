#include "bitloom/formats/bpe.h"

#include <algorithm>
#include <cstdio>
#include <mutex>
#include <queue>

#include "absl/strings/str_cat.h"
#include "bitloom/formats/unicode.h"

namespace bitloom::formats {

// Memoised piece encodings. Pieces repeat heavily in natural text (Zipf), so a small cache removes
// most of the merge work; it is sharded to keep threads from contending on one lock, and a shard
// that fills up is simply cleared, which bounds memory without LRU bookkeeping.
struct BpeModel::Cache {
  static constexpr size_t kShards = 16;
  static constexpr size_t kEntriesPerShard = 4096;
  static constexpr size_t kMaxPieceBytes = 64;  // long pieces are rare and costly to store
  struct Shard {
    std::mutex mu;
    std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> map;
  };
  Shard shards[kShards];
  Shard& For(std::string_view piece) { return shards[StringHash()(piece) % kShards]; }
};

BpeModel::BpeModel(TokenIndex vocab, BpeOptions options)
    : vocab_(std::move(vocab)), options_(options), cache_(std::make_unique<Cache>()) {
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    auto it = vocab_.find(std::string_view(name));
    byte_tokens_[b] = it == vocab_.end() ? -1 : it->second;
  }
}

BpeModel::~BpeModel() = default;

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::FromMerges(
    TokenIndex vocab, const std::vector<std::pair<std::string, std::string>>& merges,
    BpeOptions options) {
  std::unique_ptr<BpeModel> model(new BpeModel(std::move(vocab), options));
  model->merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [left, right] = merges[rank];
    auto l = model->vocab_.find(left);
    auto r = model->vocab_.find(right);
    auto m = model->vocab_.find(left + right);
    if (l == model->vocab_.end() || r == model->vocab_.end() || m == model->vocab_.end()) {
      return absl::InvalidArgumentError(absl::StrCat("merge ", rank, " (\"", left, "\" \"", right,
                                                     "\") uses a token missing from the vocab"));
    }
    // A duplicated merge keeps its first (highest-priority) rank, as tokenizers does.
    model->merges_.try_emplace(PairKey(l->second, r->second),
                               Merge{static_cast<uint32_t>(rank), m->second});
  }
  if (options.unk_id && *options.unk_id < 0) {
    return absl::InvalidArgumentError("unknown token id is negative");
  }
  return model;
}

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::FromScores(TokenIndex vocab,
                                                               const std::vector<float>& scores,
                                                               const std::vector<bool>& eligible,
                                                               BpeOptions options) {
  std::unique_ptr<BpeModel> model(new BpeModel(std::move(vocab), options));
  std::vector<const std::string*> by_id(scores.size(), nullptr);
  for (const auto& [token, id] : model->vocab_) {
    if (id < 0 || static_cast<size_t>(id) >= scores.size()) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", id, " has no score"));
    }
    by_id[id] = &token;
  }
  struct Candidate {
    float score;
    int32_t left, right, result;
  };
  std::vector<Candidate> candidates;
  for (size_t id = 0; id < by_id.size(); ++id) {
    if (by_id[id] == nullptr || id >= eligible.size() || !eligible[id]) continue;
    const std::string_view token = *by_id[id];
    // Split only on code point boundaries: symbols are whole characters.
    for (size_t cut = 0; cut < token.size();) {
      cut += std::max<size_t>(1, unicode::Utf8SequenceLength(static_cast<uint8_t>(token[cut])));
      if (cut >= token.size()) break;
      auto l = model->vocab_.find(token.substr(0, cut));
      auto r = model->vocab_.find(token.substr(cut));
      if (l != model->vocab_.end() && r != model->vocab_.end()) {
        candidates.push_back({scores[id], l->second, r->second, static_cast<int32_t>(id)});
      }
    }
  }
  std::stable_sort(candidates.begin(), candidates.end(), [](const Candidate& a, const Candidate& b) {
    if (a.score != b.score) return a.score > b.score;
    if (a.left != b.left) return a.left < b.left;
    return a.right < b.right;
  });
  model->merges_.reserve(candidates.size());
  for (size_t rank = 0; rank < candidates.size(); ++rank) {
    const Candidate& c = candidates[rank];
    model->merges_.try_emplace(PairKey(c.left, c.right),
                               Merge{static_cast<uint32_t>(rank), c.result});
  }
  return model;
}

std::optional<int32_t> BpeModel::TokenId(std::string_view token) const {
  auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

void BpeModel::Encode(std::string_view piece, std::vector<int32_t>& ids) const {
  if (piece.empty()) return;
  if (piece.size() > Cache::kMaxPieceBytes) {
    EncodeUncached(piece, ids);
    return;
  }
  Cache::Shard& shard = cache_->For(piece);
  {
    std::lock_guard<std::mutex> lock(shard.mu);
    auto it = shard.map.find(piece);
    if (it != shard.map.end()) {
      ids.insert(ids.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t first = ids.size();
  EncodeUncached(piece, ids);
  std::lock_guard<std::mutex> lock(shard.mu);
  if (shard.map.size() >= Cache::kEntriesPerShard) shard.map.clear();
  shard.map.try_emplace(std::string(piece), ids.begin() + first, ids.end());
}

void BpeModel::EncodeUncached(std::string_view piece, std::vector<int32_t>& ids) const {
  if (options_.ignore_merges) {
    if (auto it = vocab_.find(piece); it != vocab_.end()) {
      ids.push_back(it->second);
      return;
    }
  }
  // Symbols as a doubly linked list over a vector; a merged-away symbol gets id -1.
  std::vector<int32_t> sym;
  sym.reserve(piece.size());
  bool last_unknown = false;
  for (size_t pos = 0; pos < piece.size();) {
    const size_t len =
        std::max<size_t>(1, unicode::Utf8SequenceLength(static_cast<uint8_t>(piece[pos])));
    const std::string_view ch = piece.substr(pos, len);
    pos += len;
    if (auto it = vocab_.find(ch); it != vocab_.end()) {
      sym.push_back(it->second);
      last_unknown = false;
      continue;
    }
    if (options_.byte_fallback) {
      bool all = true;
      for (char c : ch) all = all && byte_tokens_[static_cast<uint8_t>(c)] >= 0;
      if (all) {
        for (char c : ch) sym.push_back(byte_tokens_[static_cast<uint8_t>(c)]);
        last_unknown = false;
        continue;
      }
    }
    if (!options_.unk_id) continue;  // no unknown token: the character is dropped, as tokenizers does
    if (!(options_.fuse_unk && last_unknown)) sym.push_back(*options_.unk_id);
    last_unknown = true;
  }
  const int n = static_cast<int>(sym.size());
  if (n <= 1) {
    ids.insert(ids.end(), sym.begin(), sym.end());
    return;
  }
  std::vector<int> prev(n), next(n);
  for (int i = 0; i < n; ++i) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  // Candidate merges ordered by (rank, position): lowest rank first, leftmost among equals. Entries
  // go stale when a neighbour merges; they are checked again when popped.
  struct Candidate {
    uint32_t rank;
    int pos;
    int32_t result;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
  auto consider = [&](int left) {
    const int right = next[left];
    if (left < 0 || right < 0) return;
    auto it = merges_.find(PairKey(sym[left], sym[right]));
    if (it != merges_.end()) queue.push({it->second.rank, left, it->second.result});
  };
  for (int i = 0; i + 1 < n; ++i) consider(i);
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    const int left = top.pos;
    if (sym[left] < 0 || next[left] < 0) continue;
    const int right = next[left];
    auto it = merges_.find(PairKey(sym[left], sym[right]));
    if (it == merges_.end() || it->second.result != top.result || it->second.rank != top.rank) {
      continue;  // stale: one of the two symbols changed since this entry was queued
    }
    sym[left] = top.result;
    sym[right] = -1;
    next[left] = next[right];
    if (next[right] >= 0) prev[next[right]] = left;
    if (prev[left] >= 0) consider(prev[left]);
    consider(left);
  }
  for (int i = 0; i >= 0; i = next[i]) ids.push_back(sym[i]);
}

}  // namespace bitloom::formats
