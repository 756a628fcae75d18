# The CUDA backend (cr_cuda): every core/backend/cuda/*.cu, linked against the static CUDA
# runtime, cuBLASLt, cuDNN (+ nvrtc, which cuDNN loads at run time) and, when its headers can be
# fetched, the cuDNN frontend. Included by the root CMakeLists.txt once enable_language(CUDA)
# succeeded; defines the target cr_cuda.
#
# Completeness matters more than usual here: the build machine has every CUDA header in
# /usr/local/include and the CUDA libraries on the default linker path, so a missing include
# directory or RPATH would pass here and fail on a GPU machine. Every path below is therefore
# explicit, and tests/gpu/check_build_paths.sh builds this target with those defaults hidden.

find_package(CUDAToolkit REQUIRED)

# Op files are written one per op by several people at once; the glob picks up new ones at the
# next build (CONFIGURE_DEPENDS re-runs the glob on every build).
file(GLOB CR_CUDA_SOURCES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/core/backend/cuda/*.cu)
add_library(cr_cuda STATIC ${CR_CUDA_SOURCES})

# CCCL 3 (cub, thrust, libcu++) needs C++17 or later in device code; we use C++20 throughout.
# CMake 3.25 knows nvcc's flags only up to CUDA17 (nvcc has -std=c++20 since CUDA 12): teach it.
if(NOT DEFINED CMAKE_CUDA20_STANDARD_COMPILE_OPTION
   AND CMAKE_CUDA_COMPILER_ID STREQUAL "NVIDIA" AND CMAKE_CUDA_COMPILER_VERSION VERSION_GREATER_EQUAL 12.0)
  set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
  set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
endif()
set_target_properties(cr_cuda PROPERTIES
  CUDA_STANDARD 20
  CUDA_STANDARD_REQUIRED ON
  CUDA_EXTENSIONS OFF
  # One runtime for the whole link: the static cudart, chosen explicitly (mixing libcudart.so
  # and libcudart_static.a gives two runtimes in one process).
  CUDA_RUNTIME_LIBRARY Static
  POSITION_INDEPENDENT_CODE ON)

# The directory-wide -Wall/-Wextra are g++ flags nvcc rejects: replace them with their
# host-compiler form. Kept for C++ files should one ever join the target.
set_property(TARGET cr_cuda PROPERTY COMPILE_OPTIONS "")
target_compile_options(cr_cuda PRIVATE
  $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra,-Wno-unused-parameter>
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wno-unused-parameter>)
# fmt 9 turns constexpr off under __NVCC__, and then its consteval format-string check fails in
# nvcc's front end on every CR_CHECK ("did not produce a valid constant expression") while g++
# rejects its C++20 constexpr members. nvcc 13 handles fmt's constexpr code: turn it back on
# (format strings stay checked at compile time in .cu files too).
target_compile_definitions(cr_cuda PUBLIC $<$<COMPILE_LANGUAGE:CUDA>:FMT_USE_CONSTEXPR=1>)
if(CR_SANITIZE)
  message(WARNING "chainrule: CR_SANITIZE does not instrument the CUDA backend")
endif()

# Toolkit headers, named explicitly (not found through /usr/local/include by accident). SYSTEM:
# their warnings are not ours.
target_include_directories(cr_cuda SYSTEM PUBLIC ${CUDAToolkit_INCLUDE_DIRS})
target_link_libraries(cr_cuda PUBLIC cr_core CUDA::cudart_static CUDA::cublasLt)

# The library directories of the toolkit, searched for cuDNN and written into RPATH below.
set(CR_CUDA_LIB_DIRS ${CUDAToolkit_LIBRARY_DIR})
foreach(lib IN ITEMS CUDA::cublasLt)
  if(TARGET ${lib})
    get_target_property(loc ${lib} IMPORTED_LOCATION)
    if(loc)
      get_filename_component(dir ${loc} DIRECTORY)
      list(APPEND CR_CUDA_LIB_DIRS ${dir})
    endif()
  endif()
endforeach()

# ---- cuDNN: CMake 3.25 has no target for it. Search CUDNN_ROOT, then the toolkit. -------------
set(CUDNN_ROOT "" CACHE PATH "cuDNN installation prefix (default: the CUDA toolkit's)")
find_library(CR_CUDNN_LIB NAMES cudnn
  HINTS ${CUDNN_ROOT} ${CR_CUDA_LIB_DIRS} ${CUDAToolkit_LIBRARY_ROOT}
  PATH_SUFFIXES lib lib64 lib/x86_64-linux-gnu)
find_path(CR_CUDNN_INCLUDE NAMES cudnn.h
  HINTS ${CUDNN_ROOT} ${CUDAToolkit_INCLUDE_DIRS} ${CUDAToolkit_LIBRARY_ROOT}
  PATH_SUFFIXES include)
if(CR_CUDNN_LIB AND CR_CUDNN_INCLUDE)
  message(STATUS "chainrule: cuDNN ${CR_CUDNN_LIB}")
  set(CR_HAVE_CUDNN 1)
  get_filename_component(dir ${CR_CUDNN_LIB} DIRECTORY)
  list(APPEND CR_CUDA_LIB_DIRS ${dir})
  target_include_directories(cr_cuda SYSTEM PUBLIC ${CR_CUDNN_INCLUDE})
  # cuDNN compiles some kernels at run time and dlopens libnvrtc for that; linking it (kept
  # NEEDED where a toolchain passes --as-needed by default) loads it through our RPATH, so
  # cuDNN's dlopen finds the already loaded copy. By path, not CUDA::nvrtc: that target drags in
  # the driver stub (libcuda.so.1 NEEDED), and then no binary would start without a driver. The
  # static cudart loads the driver itself when a GPU is first used.
  find_library(CR_NVRTC_LIB NAMES nvrtc HINTS ${CR_CUDA_LIB_DIRS} NO_DEFAULT_PATH)
  if(NOT CR_NVRTC_LIB)
    message(FATAL_ERROR "chainrule: cuDNN found but not libnvrtc (in ${CR_CUDA_LIB_DIRS})")
  endif()
  target_link_libraries(cr_cuda PUBLIC ${CR_CUDNN_LIB} ${CR_NVRTC_LIB})
  target_link_options(cr_cuda INTERFACE "LINKER:--no-as-needed")
else()
  message(WARNING "chainrule: cuDNN not found (set CUDNN_ROOT): attention uses our own kernel")
  set(CR_HAVE_CUDNN 0)
endif()

# ---- the cuDNN frontend (header-only C++ API), fetched into the build tree ---------------------
set(CR_CUDNN_FRONTEND_DIR ${CMAKE_BINARY_DIR}/_deps/cudnn_frontend/include)
set(CR_CUDNN_FRONTEND_SCRIPT ${CMAKE_SOURCE_DIR}/deploy/fetch_cudnn_frontend.sh)
if(CR_HAVE_CUDNN AND NOT EXISTS ${CR_CUDNN_FRONTEND_DIR}/cudnn_frontend.h
   AND EXISTS ${CR_CUDNN_FRONTEND_SCRIPT})
  message(STATUS "chainrule: fetching the cuDNN frontend headers into ${CR_CUDNN_FRONTEND_DIR}")
  execute_process(COMMAND bash ${CR_CUDNN_FRONTEND_SCRIPT} ${CR_CUDNN_FRONTEND_DIR}
                  RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(WARNING "chainrule: ${CR_CUDNN_FRONTEND_SCRIPT} failed (${rc})")
  endif()
endif()
if(CR_HAVE_CUDNN AND EXISTS ${CR_CUDNN_FRONTEND_DIR}/cudnn_frontend.h)
  message(STATUS "chainrule: cuDNN frontend headers ${CR_CUDNN_FRONTEND_DIR}")
  set(CR_HAVE_CUDNN_FRONTEND 1)
  target_include_directories(cr_cuda SYSTEM PRIVATE ${CR_CUDNN_FRONTEND_DIR})
else()
  message(WARNING "chainrule: no cuDNN frontend headers (${CR_CUDNN_FRONTEND_DIR}; fetched by "
                  "deploy/fetch_cudnn_frontend.sh): attention uses our own kernel")
  set(CR_HAVE_CUDNN_FRONTEND 0)
endif()
target_compile_definitions(cr_cuda PUBLIC CR_HAVE_CUDNN=${CR_HAVE_CUDNN}
                                          CR_HAVE_CUDNN_FRONTEND=${CR_HAVE_CUDNN_FRONTEND})

# ---- run-time library lookup ---------------------------------------------------------------------
# Every binary linking cr_cuda finds cuBLASLt, cuDNN and nvrtc through its RUNPATH, not through
# ld.so.conf. As link options (not BUILD_RPATH) so that they travel with cr_cuda to every
# executable that links it, and CMake's filtering of "implicit" directories (the toolkit's own
# lib dir is one, for the CUDA language) cannot drop them. tests/gpu/make_bundle.sh rewrites the
# RUNPATH of bundled copies to $ORIGIN/../lib.
list(REMOVE_DUPLICATES CR_CUDA_LIB_DIRS)
foreach(dir IN LISTS CR_CUDA_LIB_DIRS)
  target_link_options(cr_cuda INTERFACE "LINKER:-rpath,${dir}")
endforeach()
message(STATUS "chainrule: CUDA library RPATH ${CR_CUDA_LIB_DIRS}")
