// The table of kernel instantiations a generated translation unit exports to
// the launcher: each kernel's name expression, its parameter types (checked by
// the Python side against every argument), and a function that unpacks an
// argument array into its parameters, as cuLaunchKernel does.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "runtime.h"

namespace cuda_on_cpu {

// A parameter type as the Python side names it: a NumPy dtype name, "*" for a
// pointer, "const " for a pointer to read-only data. Storage types the source
// defines (float16 as raw bits) are named by the generated unit.
template <typename T>
struct TypeName;
template <>
struct TypeName<int> {
  static std::string get() { return "int32"; }
};
template <>
struct TypeName<unsigned int> {
  static std::string get() { return "uint32"; }
};
template <>
struct TypeName<unsigned long long> {
  static std::string get() { return "uint64"; }
};
template <>
struct TypeName<float> {
  static std::string get() { return "float32"; }
};
template <>
struct TypeName<double> {
  static std::string get() { return "float64"; }
};
template <typename T>
struct TypeName<T*> {
  static std::string get() { return TypeName<T>::get() + "*"; }
};
template <typename T>
struct TypeName<const T*> {
  static std::string get() { return "const " + TypeName<T>::get() + "*"; }
};

template <typename... P>
struct Invoker {
  template <std::size_t... I>
  static void call(void (*kernel)(P...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<P*>(args[I])...);
  }
  static void invoke(void (*kernel)(), void** args) {
    call(reinterpret_cast<void (*)(P...)>(kernel), args, std::index_sequence_for<P...>{});
  }
};

struct Kernel {
  const char* name;
  std::string signature;  // parameter types, comma-separated
  Invoke invoke;
  void (*function)();
};

template <typename... P>
Kernel make_kernel(const char* name, void (*kernel)(P...)) {
  std::string signature;
  ((signature += (signature.empty() ? "" : ",") + TypeName<P>::get()), ...);
  return {name, signature, &Invoker<P...>::invoke, reinterpret_cast<void (*)()>(kernel)};
}

}  // namespace cuda_on_cpu
