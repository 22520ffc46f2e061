#include "kto/util/cli.h"

#include <algorithm>
#include <cstdio>
#include <exception>
#include <iostream>

#include "kto/util/log.h"
#include "kto/util/version.h"

namespace kto::cli {

using detail::str_cat;

Args::Spec Args::make_spec(const std::string& name, const std::string& metavar, const std::string& help,
                           Requirement req) {
  Spec s;
  s.name = name;
  s.metavar = metavar;
  s.help = help;
  s.req = req;
  return s;
}

Args::Args(std::string program, std::string summary)
    : program_(std::move(program)), summary_(std::move(summary)) {}

Args& Args::option(const std::string& name, std::string* value, const std::string& metavar,
                   const std::string& help, Requirement req) {
  Spec s = make_spec(name, metavar, help, req);
  s.set = [value](const std::string& text) { *value = text; };
  specs_.push_back(std::move(s));
  return *this;
}

Args& Args::option(const std::string& name, int64_t* value, const std::string& metavar,
                   const std::string& help, Requirement req) {
  Spec s = make_spec(name, metavar, help, req);
  s.set = [value, name](const std::string& text) {
    size_t used = 0;
    try {
      *value = std::stoll(text, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != text.size())
      throw UsageError(name + ": expected an integer, got '" + text + "'");
  };
  specs_.push_back(std::move(s));
  return *this;
}

Args& Args::flag(const std::string& name, bool* value, const std::string& help) {
  Spec s = make_spec(name, "", help, optional);
  s.flag = value;
  specs_.push_back(std::move(s));
  return *this;
}

Args& Args::list(const std::string& name, std::vector<std::string>* values, const std::string& metavar,
                 const std::string& help) {
  Spec s = make_spec(name, metavar, help, optional);
  s.set = [values](const std::string& text) { values->push_back(text); };
  s.repeatable = true;
  specs_.push_back(std::move(s));
  return *this;
}

Args& Args::epilog(const std::string& text) {
  epilog_ = text;
  return *this;
}

Args::Spec* Args::find(const std::string& name) {
  for (Spec& s : specs_) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

bool Args::parse(int argc, char** argv, int first) {
  for (int i = first; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::cout << usage();
      return false;
    }
    std::string value;
    bool has_value = false;
    if (const size_t eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      has_value = true;
    }
    Spec* spec = find(arg);
    if (spec == nullptr)
      throw UsageError(str_cat(program_, ": unknown argument '", argv[i], "' (see --help)"));
    if (spec->seen && !spec->repeatable) throw UsageError(str_cat(program_, ": ", arg, " given twice"));
    spec->seen = true;
    if (spec->flag != nullptr) {
      if (has_value) throw UsageError(str_cat(program_, ": ", arg, " takes no value"));
      *spec->flag = true;
      continue;
    }
    if (!has_value) {
      if (i + 1 >= argc)
        throw UsageError(str_cat(program_, ": ", arg, " needs a value (", spec->metavar, ")"));
      value = argv[++i];
    }
    spec->set(value);
  }
  for (const Spec& s : specs_) {
    if (s.req == required && !s.seen) {
      throw UsageError(str_cat(program_, ": missing required ", s.name, " ", s.metavar, " (see --help)"));
    }
  }
  return true;
}

std::string Args::usage() const {
  std::string text = "usage: " + program_;
  for (const Spec& s : specs_) {
    std::string item = s.name + (s.metavar.empty() ? "" : " " + s.metavar);
    text += s.req == required ? " " + item : " [" + item + "]" + (s.repeatable ? "..." : "");
  }
  text += "\n\n" + summary_ + "\n\noptions:\n";
  for (const Spec& s : specs_) {
    std::string left = "  " + s.name + (s.metavar.empty() ? "" : " " + s.metavar);
    if (left.size() < 26)
      left.append(26 - left.size(), ' ');
    else
      left += "\n" + std::string(26, ' ');
    text += left + s.help + (s.req == required ? " (required)" : "") + "\n";
  }
  text += "  --help                  show this help\n";
  if (!epilog_.empty()) text += "\n" + epilog_ + "\n";
  return text;
}

int run_subcommands(const char* program, const std::vector<Subcommand>& commands, int argc, char** argv) {
  std::string usage = str_cat("usage: ", program, " <command> [options]\n\ncommands:\n");
  for (const Subcommand& c : commands) {
    std::string name = c.name;
    name.resize(std::max<size_t>(name.size(), 10), ' ');
    usage += str_cat("  ", name, c.summary, "\n");
  }
  usage += str_cat("\n`", program, " <command> --help` describes each command's options.\n");
  return run_main(program, [&]() -> int {
    const std::string first = argc < 2 ? "" : argv[1];
    if (first.empty() || first == "--help" || first == "-h") {
      std::cout << usage;
      return first.empty() ? 2 : 0;
    }
    if (first == "--version") {
      std::cout << build_summary() << "\n";
      return 0;
    }
    for (const Subcommand& c : commands) {
      if (first == c.name) return c.run(argc, argv);
    }
    throw UsageError(str_cat(program, ": unknown command '", first, "'\n", usage));
  });
}

int run_main(const char* program, const std::function<int()>& body) {
  try {
    return body();
  } catch (const UsageError& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    // LibTorch errors append a C++ backtrace; the first part is the message users need.
    std::string message = e.what();
    if (const size_t cut = message.find("\nException raised from"); cut != std::string::npos) {
      message.resize(cut);
    }
    log::error(program, message);
    return 1;
  }
}

}  // namespace kto::cli
