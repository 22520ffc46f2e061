// kto-ckpt show and kto-ckpt compare: look into safetensors files, and compare two of them
// (our forward output against a Hugging Face reference, a re-export against the original).
#include <ATen/ATen.h>

#include <cstdio>
#include <iostream>

#include "ckpt_commands.h"
#include "kto/io/safetensors.h"
#include "kto/util/cli.h"
#include "kto/util/files.h"

namespace kto::apps {
namespace {

using detail::str_cat;

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

io::SafetensorsSet open_any(const std::string& path) {
  return is_directory(path) ? io::SafetensorsSet::open_dir(path) : io::SafetensorsSet::open_file(path);
}

}  // namespace

int ckpt_show(int argc, char** argv) {
  std::string path;
  int64_t max_values = 8;
  cli::Args args("kto-ckpt show",
                 "Lists the tensors of a safetensors file or Hugging Face directory: name, dtype,\n"
                 "shape, and values (small tensors) or min/max/mean (large ones).");
  args.option("--file", &path, "PATH", "safetensors file or Hugging Face directory", cli::required)
      .option("--values", &max_values, "N", "print values of tensors with at most N elements (default 8)");
  if (!args.parse(argc, argv, 2)) return 0;
  const io::SafetensorsSet set = open_any(path);
  for (const std::string& name : set.names()) {
    const io::TensorInfo& info = set.info(name);
    std::printf("%-48s %-5s %-16s", name.c_str(), io::dtype_name(info.dtype), shape_text(info.shape).c_str());
    const at::Tensor t = set.read(name).to(at::kDouble).flatten();
    if (t.numel() == 0) {
      std::printf(" (empty)\n");
    } else if (t.numel() <= max_values) {
      for (int64_t i = 0; i < t.numel(); ++i) std::printf(" %.9g", t[i].item<double>());
      std::printf("\n");
    } else {
      std::printf(" min %.6g max %.6g mean %.6g\n", t.min().item<double>(), t.max().item<double>(),
                  t.mean().item<double>());
    }
  }
  return 0;
}

int ckpt_compare(int argc, char** argv) {
  std::string a_path, b_path;
  std::vector<std::string> pairs;
  std::string atol_text = "0";
  cli::Args args("kto-ckpt compare",
                 "Compares tensors of two safetensors files (or HF directories): max absolute and\n"
                 "relative difference per tensor. Exit status 1 when a difference exceeds --atol.");
  args.option("--a", &a_path, "PATH", "first file or directory", cli::required)
      .option("--b", &b_path, "PATH", "second file or directory", cli::required)
      .list("--pair", &pairs, "NAME_A=NAME_B",
            "compare A's NAME_A with B's NAME_B (default: every common name)")
      .option("--atol", &atol_text, "X", "fail above this max absolute difference (default 0: report only)");
  if (!args.parse(argc, argv, 2)) return 0;
  double atol = 0;
  try {
    atol = std::stod(atol_text);
  } catch (const std::exception&) {
    throw cli::UsageError("--atol: expected a number, got '" + atol_text + "'");
  }
  const io::SafetensorsSet a = open_any(a_path), b = open_any(b_path);
  std::vector<std::pair<std::string, std::string>> todo;
  for (const std::string& p : pairs) {
    const size_t eq = p.find('=');
    if (eq == std::string::npos) throw cli::UsageError("--pair: expected NAME_A=NAME_B, got '" + p + "'");
    todo.emplace_back(p.substr(0, eq), p.substr(eq + 1));
  }
  if (todo.empty()) {
    for (const std::string& name : a.names()) {
      if (b.find(name) != nullptr) todo.emplace_back(name, name);
    }
    if (todo.empty()) throw Error(a_path + " and " + b_path + " have no tensor name in common (use --pair)");
  }
  bool ok = true;
  for (const auto& [na, nb] : todo) {
    const at::Tensor ta = a.read(na).to(at::kDouble);
    const at::Tensor tb = b.read(nb).to(at::kDouble);
    if (ta.sizes() != tb.sizes()) {
      std::printf("%-40s shape %s vs %s\n", (na + " / " + nb).c_str(), shape_text(ta.sizes().vec()).c_str(),
                  shape_text(tb.sizes().vec()).c_str());
      ok = false;
      continue;
    }
    const at::Tensor diff = (ta - tb).abs();
    const double max_abs = diff.numel() ? diff.max().item<double>() : 0.0;
    const double max_rel = diff.numel() ? (diff / tb.abs().clamp_min(1e-30)).max().item<double>() : 0.0;
    const bool pass = atol <= 0 || max_abs <= atol;
    ok = ok && pass;
    std::printf("%-40s max abs %.3e  max rel %.3e%s\n", (na == nb ? na : na + " / " + nb).c_str(), max_abs,
                max_rel, atol > 0 ? (pass ? "  ok" : "  ABOVE --atol") : "");
  }
  return ok ? 0 : 1;
}

}  // namespace kto::apps
