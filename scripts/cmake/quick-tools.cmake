# Included after each project() of a llama.cpp build (CMAKE_PROJECT_INCLUDE): compiles llama.cpp's
# tool-side libraries at -O1 instead of -O3, leaving ggml (every kernel) and libllama (sampling,
# grammar, KV cache) at -O3. These targets are template-heavy C++ (argument parsing, chat
# templates, JSON, HTTP, image preprocessing) that run once per request, never per weight; at
# -O1 they compile in roughly 0.4-0.7x the time (measured on this project's reference machine:
# common/arg.cpp 24.2 s -> 16.2 s, tools/mtmd/clip.cpp 27.7 s -> 11.4 s, server-context.cpp
# 17.5 s -> 11.3 s). See docs/decisions.md ("llama.cpp's tool code at -O1").
#
# Used by the embedded engine's build (llama-cpp-sys-2, through .cargo/config.toml: only
# `llama-common`, for the JSON-schema -> grammar converter) and, when INFERMESH_QUICK_TOOLS=1, by
# scripts/build-llama-server (CI: the server's HTTP and chat code; benchmarks use the default).
include_guard(GLOBAL)
if(NOT CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    return()
endif()
# INFERMESH_QUICK_LIBLLAMA (scripts/build-llama-server in CI only, never the embedded engine's
# build): libllama too, whose graph building and sampling run per token but are not where a small
# model's time goes; ggml's kernels stay at -O3 either way.
function(_infermesh_quick_tools)
    set(quick llama-common llama-common-base mtmd server-context llama-server-impl cpp-httplib
              llama-server)
    if(INFERMESH_QUICK_LIBLLAMA)
        list(APPEND quick llama)
    endif()
    foreach(t ${quick})
        if(TARGET ${t})
            get_target_property(kind ${t} TYPE)
            if(NOT kind STREQUAL "INTERFACE_LIBRARY")
                # Appended after CMAKE_CXX_FLAGS_RELEASE's -O3: the last -O wins.
                target_compile_options(${t} PRIVATE -O1)
            endif()
        endif()
    endforeach()
endfunction()
cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL _infermesh_quick_tools)
