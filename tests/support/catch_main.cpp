// Catch2 main for single-process test binaries.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
