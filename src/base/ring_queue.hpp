// A FIFO over a growable circular buffer that never gives memory back: once it has held its
// high-water mark of elements, pushing and popping allocate nothing (std::deque frees and
// allocates a block every few elements). Popped slots keep their objects, moved-from, so that
// elements owning buffers (vectors) can be reused through `back_slot()`.
#pragma once

#include <cstddef>
#include <utility>
#include <vector>

namespace fltport {

template <class T>
class RingQueue {
 public:
  bool empty() const noexcept { return size_ == 0; }
  size_t size() const noexcept { return size_; }
  T& front() noexcept { return slots_[head_]; }

  // The slot the next push will fill: assign into it (reusing what it owns), then commit_push().
  T& back_slot() {
    if (size_ == slots_.size()) grow();
    return slots_[(head_ + size_) % slots_.size()];
  }
  void commit_push() noexcept { ++size_; }
  void push_back(T value) {
    back_slot() = std::move(value);
    commit_push();
  }
  void pop_front() noexcept {
    head_ = (head_ + 1) % slots_.size();
    --size_;
  }

  template <class F>
  void for_each(F f) {
    for (size_t i = 0; i < size_; ++i) f(slots_[(head_ + i) % slots_.size()]);
  }

 private:
  void grow() {
    std::vector<T> bigger(slots_.empty() ? 8 : slots_.size() * 2);
    for (size_t i = 0; i < size_; ++i) bigger[i] = std::move(slots_[(head_ + i) % slots_.size()]);
    // The moved-from tail keeps nothing worth reusing; the new slots start empty.
    slots_ = std::move(bigger);
    head_ = 0;
  }

  std::vector<T> slots_;
  size_t head_ = 0;
  size_t size_ = 0;
};

}  // namespace fltport
