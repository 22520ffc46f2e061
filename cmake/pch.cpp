// The translation unit that builds kto's shared precompiled header (cmake/KtoPrecompiledHeaders.cmake).
