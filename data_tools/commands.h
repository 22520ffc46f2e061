// Subcommands of kto-data; each parses its own options from argv[2..].
#pragma once

namespace kto::data_tools {

int encode_command(int argc, char** argv);
int decode_command(int argc, char** argv);
int prepare_command(int argc, char** argv);
int inspect_command(int argc, char** argv);

}  // namespace kto::data_tools
