# Finds kto's dependencies and defines the KTO_HAVE_* facts the feature summary prints.

# LibTorch. Debian's libtorch-dev installs TorchConfig.cmake; a CUDA LibTorch 2.x is found
# through CMAKE_PREFIX_PATH (python3 -c 'import torch; print(torch.utils.cmake_prefix_path)').
find_package(Torch REQUIRED)
set(KTO_TORCH_VERSION "${Torch_VERSION}")
set(KTO_TORCH_CUDA OFF)
if(TARGET torch_cuda OR TORCH_CUDA_LIBRARIES)
  set(KTO_TORCH_CUDA ON)
endif()
# TORCH_LIBRARIES carries the imported targets; its include dirs are SYSTEM (no warnings).
add_library(kto_torch INTERFACE)
target_link_libraries(kto_torch INTERFACE ${TORCH_LIBRARIES})
separate_arguments(_kto_torch_flags UNIX_COMMAND "${TORCH_CXX_FLAGS}")
target_compile_options(kto_torch INTERFACE ${_kto_torch_flags})

find_package(MPI REQUIRED COMPONENTS C)
find_package(HDF5 REQUIRED COMPONENTS C)
add_library(kto_hdf5 INTERFACE)
target_include_directories(kto_hdf5 SYSTEM INTERFACE ${HDF5_C_INCLUDE_DIRS} ${HDF5_INCLUDE_DIRS})
target_link_libraries(kto_hdf5 INTERFACE ${HDF5_C_LIBRARIES})
target_compile_definitions(kto_hdf5 INTERFACE ${HDF5_C_DEFINITIONS} ${HDF5_DEFINITIONS})
find_package(yaml-cpp REQUIRED)
find_package(OpenSSL REQUIRED COMPONENTS Crypto)
find_package(nlohmann_json 3.9 REQUIRED)
if(KTO_BUILD_TESTS)
  find_package(Catch2 2 REQUIRED)
endif()

# CUDA toolkit and NCCL: optional. /usr/local/cuda is searched by default.
set(KTO_HAVE_CUDA OFF)
set(KTO_HAVE_NCCL OFF)
if(NOT KTO_WITH_NCCL STREQUAL "OFF")
  if(NOT CUDAToolkit_ROOT AND EXISTS /usr/local/cuda)
    set(CUDAToolkit_ROOT /usr/local/cuda)
  endif()
  find_package(CUDAToolkit QUIET)
  if(CUDAToolkit_FOUND)
    set(KTO_HAVE_CUDA ON)
    find_path(NCCL_INCLUDE_DIR nccl.h
      HINTS ${NCCL_ROOT} $ENV{NCCL_ROOT} ${CUDAToolkit_INCLUDE_DIRS}
      PATH_SUFFIXES include)
    find_library(NCCL_LIBRARY nccl
      HINTS ${NCCL_ROOT} $ENV{NCCL_ROOT} ${CUDAToolkit_LIBRARY_DIR}
      PATH_SUFFIXES lib lib64)
    if(NCCL_INCLUDE_DIR AND NCCL_LIBRARY)
      set(KTO_HAVE_NCCL ON)
      add_library(kto_nccl INTERFACE)
      target_include_directories(kto_nccl SYSTEM INTERFACE ${NCCL_INCLUDE_DIR})
      target_link_libraries(kto_nccl INTERFACE ${NCCL_LIBRARY} CUDA::cudart)
    endif()
  endif()
  if(KTO_WITH_NCCL STREQUAL "ON" AND NOT KTO_HAVE_NCCL)
    message(FATAL_ERROR "KTO_WITH_NCCL=ON but CUDA/NCCL were not found (set CUDAToolkit_ROOT or NCCL_ROOT)")
  endif()
endif()
