# Precompiled LibTorch headers. <ATen/ATen.h> costs ~6 s of parsing in every translation unit
# that includes it; compiled once into a PCH and reused by every kto target that links LibTorch,
# a clean build takes about half as long. KTO_PCH=OFF turns it off (e.g. for include-what-you-use
# checks: with the PCH every TU sees ATen whether it includes it or not).
option(KTO_PCH "Precompile the LibTorch headers once for all targets" ON)

# ccache caches PCH builds and their users only with these sloppiness settings (ccache manual,
# "Precompiled headers"); CMake's -include of the PCH satisfies its other condition.
if(KTO_PCH AND CMAKE_CXX_COMPILER_LAUNCHER MATCHES "ccache")
  set(CMAKE_CXX_COMPILER_LAUNCHER
      ${CMAKE_COMMAND} -E env CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
      ${CMAKE_CXX_COMPILER_LAUNCHER})
endif()

# True when `target` compiles against LibTorch: it links kto_torch, or a kto library that passes
# it on publicly (a dependency's PRIVATE links show up as $<LINK_ONLY:...> and do not count).
function(_kto_links_torch target out)
  set(${out} FALSE PARENT_SCOPE)
  if(ARGN)
    get_target_property(libs ${target} INTERFACE_LINK_LIBRARIES)
  else()
    get_target_property(libs ${target} LINK_LIBRARIES)
  endif()
  foreach(lib IN LISTS libs)
    if(lib STREQUAL "kto_torch")
      set(${out} TRUE PARENT_SCOPE)
      return()
    endif()
    if(TARGET ${lib} AND lib MATCHES "^kto_")
      _kto_links_torch(${lib} found dependency)
      if(found)
        set(${out} TRUE PARENT_SCOPE)
        return()
      endif()
    endif()
  endforeach()
endfunction()

# Gives every compiled target (library or executable) under `dirs` that links LibTorch the
# shared PCH. Call after the targets are defined.
function(kto_precompile_torch_headers)
  if(NOT KTO_PCH)
    return()
  endif()
  add_library(kto_pch OBJECT ${PROJECT_SOURCE_DIR}/cmake/pch.cpp)
  # The same flags as kto's own targets, or GCC would refuse the PCH (it then parses the
  # headers as usual: slower, never wrong).
  target_link_libraries(kto_pch PRIVATE kto_torch kto_warnings)
  target_precompile_headers(kto_pch PRIVATE <ATen/ATen.h>)
  foreach(dir IN LISTS ARGN)
    get_property(targets DIRECTORY ${dir} PROPERTY BUILDSYSTEM_TARGETS)
    foreach(t IN LISTS targets)
      get_target_property(type ${t} TYPE)
      if(t STREQUAL "kto_pch" OR NOT type MATCHES "^(STATIC_LIBRARY|OBJECT_LIBRARY|EXECUTABLE)$")
        continue()
      endif()
      _kto_links_torch(${t} uses_torch)
      if(uses_torch)
        target_precompile_headers(${t} REUSE_FROM kto_pch)
      endif()
    endforeach()
  endforeach()
endfunction()
