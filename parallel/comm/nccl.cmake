# The NCCL communicator in cr_parallel. Included by the root CMakeLists.txt right after cr_parallel
# is defined.
#   - always: its host-side logic (nccl_communicator.cpp: staging, stream ordering, the watchdog;
#     nccl_bootstrap.cpp: ranks from Slurm/torchrun, the unique-id exchange, group splits), which
#     calls NCCL only through NcclApi and is unit-tested on any machine;
#   - with CUDA (CR_ENABLE_CUDA and a CUDA compiler) and nccl.h + libnccl found: nccl_cuda.cpp,
#     the real NcclApi, with CR_HAVE_NCCL=1; else nccl_none.cpp (make_nccl_api() is null and every
#     group uses MPI).
# Dependency rule: cr_parallel may link NCCL and the CUDA runtime; core never does. The runtime is
# the static cudart, the one every target of this build links (static and shared never mix).
#
# Paths are explicit (NCCL_ROOT, then the toolkit, then the system's own directories) and never
# /usr/local/include or the linker's defaults: the build machine has nccl.h there, a GPU machine
# does not (tests/gpu/check_build_paths.sh hides them and builds).

target_sources(cr_parallel PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/nccl_communicator.cpp
  ${CMAKE_CURRENT_LIST_DIR}/nccl_bootstrap.cpp)

set(CR_HAVE_NCCL 0)
if(CR_ENABLE_CUDA AND CMAKE_CUDA_COMPILER)
  find_package(CUDAToolkit REQUIRED)
  set(NCCL_ROOT "" CACHE PATH "NCCL installation prefix (default: the CUDA toolkit's, then the system's)")
  set(CR_NCCL_HINT_ROOTS ${NCCL_ROOT} ${CUDAToolkit_LIBRARY_ROOT} /usr/local/cuda)
  find_path(CR_NCCL_INCLUDE NAMES nccl.h
    PATHS ${CR_NCCL_HINT_ROOTS} ${CUDAToolkit_INCLUDE_DIRS} /usr/include
          /usr/include/${CMAKE_LIBRARY_ARCHITECTURE}
    PATH_SUFFIXES include
    NO_DEFAULT_PATH)
  find_library(CR_NCCL_LIB NAMES nccl
    PATHS ${CR_NCCL_HINT_ROOTS} ${CUDAToolkit_LIBRARY_DIR} /usr/lib/${CMAKE_LIBRARY_ARCHITECTURE}
          /usr/lib /usr/lib64
    PATH_SUFFIXES lib64 lib lib/${CMAKE_LIBRARY_ARCHITECTURE}
    NO_DEFAULT_PATH)
  if(CR_NCCL_INCLUDE AND CR_NCCL_LIB)
    set(CR_HAVE_NCCL 1)
  else()
    message(WARNING "chainrule: NCCL not found (nccl.h: ${CR_NCCL_INCLUDE}, libnccl: ${CR_NCCL_LIB}; "
                    "set NCCL_ROOT): GPU runs use MPI, staged through host memory")
  endif()
endif()

if(CR_HAVE_NCCL)
  message(STATUS "chainrule: NCCL ${CR_NCCL_LIB} (headers ${CR_NCCL_INCLUDE})")
  target_sources(cr_parallel PRIVATE ${CMAKE_CURRENT_LIST_DIR}/nccl_cuda.cpp)
  # Only nccl_cuda.cpp needs the headers; SYSTEM: their warnings are not ours.
  set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/nccl_cuda.cpp PROPERTIES
    COMPILE_DEFINITIONS CR_HAVE_NCCL=1)
  target_include_directories(cr_parallel SYSTEM PRIVATE ${CR_NCCL_INCLUDE} ${CUDAToolkit_INCLUDE_DIRS})
  target_link_libraries(cr_parallel PUBLIC ${CR_NCCL_LIB} CUDA::cudart_static)
  # Found at run time through RUNPATH, like cuBLASLt and cuDNN (cuda.cmake); make_bundle.sh
  # rewrites it, and device_check.sh takes libnccl.so.2 from PyTorch's wheels.
  get_filename_component(CR_NCCL_LIB_DIR ${CR_NCCL_LIB} DIRECTORY)
  target_link_options(cr_parallel INTERFACE "LINKER:-rpath,${CR_NCCL_LIB_DIR}")
else()
  target_sources(cr_parallel PRIVATE ${CMAKE_CURRENT_LIST_DIR}/nccl_none.cpp)
endif()
