// Turning a runtime value into a compile-time constant for a kernel template, so that each launch site
// names exactly the instantiations it creates. Torch-free: included by the CUDA kernel headers.
#pragma once

// BOOL_SWITCH(flag, kName, ...): runs the body with `static constexpr bool kName` equal to flag.
// Two instantiations of whatever the body instantiates.
#define BOOL_SWITCH(COND, CONST_NAME, ...)          \
  [&] {                                             \
    if (COND) {                                     \
      static constexpr bool CONST_NAME = true;      \
      return __VA_ARGS__();                         \
    } else {                                        \
      static constexpr bool CONST_NAME = false;     \
      return __VA_ARGS__();                         \
    }                                               \
  }()
