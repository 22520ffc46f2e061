// Command-line options for kto's binaries, and the guard every main() runs its body under.
//
//   std::string model; bool verbose = false;
//   cli::Args args("kto-ckpt forward", "Runs a model on token ids.");
//   args.option("--model", &model, "DIR", "Hugging Face directory", cli::required)
//       .flag("--verbose", &verbose, "more output");
//   if (!args.parse(argc, argv, 2)) return 0;   // --help printed
//
// Accepts `--name value` and `--name=value`; `list` options may repeat. Unknown options,
// missing values and missing required options are UsageErrors (exit status 2).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "kto/util/check.h"

namespace kto::cli {

class UsageError : public Error {
 public:
  using Error::Error;
};

enum Requirement { optional = 0, required = 1 };

class Args {
 public:
  Args(std::string program, std::string summary);

  Args& option(const std::string& name, std::string* value, const std::string& metavar,
               const std::string& help, Requirement req = optional);
  Args& option(const std::string& name, int64_t* value, const std::string& metavar, const std::string& help,
               Requirement req = optional);
  Args& flag(const std::string& name, bool* value, const std::string& help);
  Args& list(const std::string& name, std::vector<std::string>* values, const std::string& metavar,
             const std::string& help);
  // Free text printed after the option list.
  Args& epilog(const std::string& text);

  // Parses argv[first..argc). Returns false when --help was given (usage printed to stdout).
  bool parse(int argc, char** argv, int first = 1);
  std::string usage() const;

 private:
  struct Spec {
    std::string name, metavar, help;
    Requirement req = optional;
    std::function<void(const std::string&)> set;  // empty for flags
    bool* flag = nullptr;
    bool repeatable = false;
    bool seen = false;
  };
  static Spec make_spec(const std::string& name, const std::string& metavar, const std::string& help,
                        Requirement req);
  Spec* find(const std::string& name);

  std::string program_, summary_, epilog_;
  std::vector<Spec> specs_;
};

// A binary made of subcommands ("kto-ckpt forward ..."): each parses argv[2..] itself.
struct Subcommand {
  const char* name;
  const char* summary;
  int (*run)(int argc, char** argv);
};

// Dispatches argv[1] to its subcommand under run_main; prints the usage built from the table
// for no arguments (status 2), --help (0) and an unknown command (2), and the build summary for
// --version.
int run_subcommands(const char* program, const std::vector<Subcommand>& commands, int argc, char** argv);

// Runs `body`, turning exceptions into an error line on stderr (with rank and host) and an
// exit status: 2 for usage errors, 1 for everything else.
int run_main(const char* program, const std::function<int()>& body);

}  // namespace kto::cli
