#include "ingest/json_paths.h"

#include <cstring>

namespace kpistream::ingest {

namespace {

size_t Bucket(std::string_view key) {
  return (key.size() & 15) << 8 | (key.empty() ? 0 : static_cast<uint8_t>(key[0]));
}

}  // namespace

int JsonPaths::Level::Find(std::string_view key) const {
  for (int i = head[Bucket(key)]; i >= 0; i = next[i]) {
    const std::string& k = keys[i];
    if (k.size() == key.size() && std::memcmp(k.data(), key.data(), key.size()) == 0) return i;
  }
  return -1;
}

int JsonPaths::Level::Add(const std::string& key) {
  if (const int i = Find(key); i >= 0) return i;
  const int i = static_cast<int>(keys.size());
  keys.push_back(key);
  slots.emplace_back();
  child.push_back(-1);
  const size_t b = Bucket(key);
  next.push_back(head[b]);
  head[b] = static_cast<int16_t>(i);
  return i;
}

JsonPaths::JsonPaths(const std::vector<const std::vector<std::string>*>& paths) : slot_count_(paths.size()) {
  levels_.emplace_back();
  levels_[0].head.fill(-1);
  for (size_t slot = 0; slot < paths.size(); ++slot) {
    const auto& keys = *paths[slot];
    int level = 0;
    for (size_t k = 0; k < keys.size(); ++k) {
      const int key = levels_[level].Add(keys[k]);
      if (k + 1 == keys.size()) {
        levels_[level].slots[key].push_back(static_cast<int>(slot));
        break;
      }
      if (levels_[level].child[key] < 0) {
        levels_[level].child[key] = static_cast<int>(levels_.size());
        levels_.emplace_back();
        levels_.back().head.fill(-1);
      }
      level = levels_[level].child[key];
    }
  }
}

void JsonPaths::Resolve(simdjson::dom::element root, Scratch* s) const {
  s->values.resize(slot_count_);
  s->found.assign(slot_count_, 0);
  s->objects.resize(levels_.size());
  s->reached.assign(levels_.size(), 0);
  s->objects[0] = root;
  s->reached[0] = 1;
  // Parents come before their children, so one pass in level order sees
  // every object reached (the last value of a repeated key included).
  for (size_t l = 0; l < levels_.size(); ++l) {
    if (!s->reached[l]) continue;
    simdjson::dom::object obj;
    if (s->objects[l].get(obj) != simdjson::SUCCESS) continue;  // not an object: nothing under it
    const Level& level = levels_[l];
    for (const auto field : obj) {
      const int key = level.Find(field.key);
      if (key < 0) continue;
      for (const int slot : level.slots[key]) {
        s->values[slot] = field.value;
        s->found[slot] = 1;
      }
      if (const int child = level.child[key]; child >= 0) {
        s->objects[child] = field.value;
        s->reached[child] = 1;
      }
    }
  }
}

}  // namespace kpistream::ingest
