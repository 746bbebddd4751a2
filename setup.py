"""Build the mamba_ext library: every csrc/**/*.cpp, plus csrc/**/*.cu when CUDA is enabled.

USE_CUDA=auto (default) builds the CUDA kernels when torch was built with CUDA and nvcc is found;
USE_CUDA=0 forces a CPU-only build; USE_CUDA=1 requires CUDA. Without a visible GPU set
TORCH_CUDA_ARCH_LIST (for example "9.0" or "8.0;9.0+PTX").
"""
import glob
import os

from setuptools import setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
import torch


def want_cuda():
    flag = os.environ.get("USE_CUDA", "auto").lower()
    available = torch.version.cuda is not None and CUDA_HOME is not None
    if flag in ("0", "false", "off"):
        return False
    if flag in ("1", "true", "on"):
        if not available:
            raise RuntimeError("USE_CUDA=1 but torch has no CUDA or nvcc was not found (CUDA_HOME unset)")
        return True
    return available


def shared_libstdcxx():
    """Path of the libstdc++ shared library that this (torch-importing) process runs with, or None.

    Some toolchains link libstdc++ statically into a shared object (the GPU machine's /opt/gcc g++ does).
    The extension then carries a private copy of the iostream and locale code, while the ostringstream that
    torch's error messages use is set up by the shared copy torch runs with; formatting an integer through
    the private copy crashed with a segmentation fault. Linking the shared library torch uses keeps one copy.
    """
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1]
                if os.path.basename(path).startswith("libstdc++.so"):
                    return path
    except OSError:  # not Linux
        pass
    return None


def extension():
    here = os.path.dirname(os.path.abspath(__file__))
    cpp = sorted(glob.glob("csrc/**/*.cpp", recursive=True))
    # -fopenmp: at::parallel_for is inline code that runs serially unless compiled with OpenMP.
    # -Wno-psabi: cpu_chunk.h passes 64-byte vectors between always-inline helpers.
    # No -std flag: torch's build helper picks the standard its headers need.
    cxx_flags = ["-O3", "-fopenmp", "-Wno-psabi"]
    libstdcxx = shared_libstdcxx()
    link_flags = ["-fopenmp"] + ([libstdcxx] if libstdcxx else [])
    if not want_cuda():
        return CppExtension("mamba_ext._C", cpp, include_dirs=[os.path.join(here, "csrc")],
                            extra_compile_args={"cxx": cxx_flags}, extra_link_args=link_flags)
    if not torch.cuda.is_available() and not os.environ.get("TORCH_CUDA_ARCH_LIST"):
        raise RuntimeError("building CUDA kernels without a visible GPU: set TORCH_CUDA_ARCH_LIST, e.g. 9.0")
    cu = sorted(glob.glob("csrc/**/*.cu", recursive=True))
    nvcc_flags = ["-O3", "--use_fast_math", "--expt-relaxed-constexpr", "-lineinfo",
                  "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
                  "-U__CUDA_NO_BFLOAT16_OPERATORS__", "-U__CUDA_NO_BFLOAT16_CONVERSIONS__"]
    return CUDAExtension("mamba_ext._C", cpp + cu, include_dirs=[os.path.join(here, "csrc")],
                         define_macros=[("MAMBA_EXT_WITH_CUDA", None)],
                         extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags}, extra_link_args=link_flags)


setup(ext_modules=[extension()], cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)})
