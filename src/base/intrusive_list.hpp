// A doubly linked list through a hook inside its elements: no allocation per element, O(1)
// removal from anywhere. For objects that live elsewhere (on a caller's stack) while they wait.
#pragma once

#include <cstddef>

namespace fltport {

template <class T>
struct ListHook {
  T* prev = nullptr;
  T* next = nullptr;
  bool linked = false;
};

template <class T, ListHook<T> T::*Hook>
class IntrusiveList {
 public:
  bool empty() const noexcept { return head_ == nullptr; }
  size_t size() const noexcept { return size_; }
  T* front() const noexcept { return head_; }

  void push_back(T* item) noexcept {
    ListHook<T>& hook = item->*Hook;
    hook.prev = tail_;
    hook.next = nullptr;
    hook.linked = true;
    if (tail_ != nullptr) {
      (tail_->*Hook).next = item;
    } else {
      head_ = item;
    }
    tail_ = item;
    ++size_;
  }

  // No effect on an element that is not linked.
  void erase(T* item) noexcept {
    ListHook<T>& hook = item->*Hook;
    if (!hook.linked) return;
    if (hook.prev != nullptr) {
      (hook.prev->*Hook).next = hook.next;
    } else {
      head_ = hook.next;
    }
    if (hook.next != nullptr) {
      (hook.next->*Hook).prev = hook.prev;
    } else {
      tail_ = hook.prev;
    }
    hook = ListHook<T>{};
    --size_;
  }

  T* pop_front() noexcept {
    T* item = head_;
    if (item != nullptr) erase(item);
    return item;
  }

  // Calls f(T*) for each element in order; f must not erase elements other than the one it is given.
  template <class F>
  void for_each(F f) const {
    for (T* item = head_; item != nullptr;) {
      T* next = (item->*Hook).next;
      f(item);
      item = next;
    }
  }

  template <class Pred>
  T* find_if(Pred pred) const {
    for (T* item = head_; item != nullptr; item = (item->*Hook).next) {
      if (pred(item)) return item;
    }
    return nullptr;
  }

 private:
  T* head_ = nullptr;
  T* tail_ = nullptr;
  size_t size_ = 0;
};

}  // namespace fltport
