#!/usr/bin/python3
"""Writes the fuzzers' seed corpora (seeds/NAME/) from the test fixtures. Run from anywhere:
    /usr/bin/python3 tests/fuzz/make_seeds.py [--with-tools BUILD_BIN_DIR]
Seeds are kept small (a few KB): libFuzzer's default input size limit is the largest seed, and
small inputs mean many executions per second. With --with-tools, the HDF5 dataset seeds are made
by running kto-data from BUILD_BIN_DIR; --manifest copies manifests of real checkpoints (e.g. of
a 1-rank and a 2-rank tests run), each also without its checksum line, as the manifest seeds.
Seeds not asked for are left as they are.
"""
import argparse
import gzip
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FIX = os.path.join(ROOT, "tests", "fixtures")


def out_dir(name):
    d = os.path.join(HERE, "seeds", name)
    os.makedirs(d, exist_ok=True)
    return d


def write(name, file, data):
    with open(os.path.join(out_dir(name), file), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def safetensors(tensors, metadata=None):
    """tensors: [(name, dtype, shape, raw bytes)]"""
    header, offset, body = {}, 0, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        body += raw
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + body


def seed_safetensors():
    f32 = lambda *v: struct.pack("<%df" % len(v), *v)
    write("fuzz_safetensors", "small.safetensors", safetensors([
        ("model.embed_tokens.weight", "F32", [2, 3], f32(1, 2, 3, 4, 5, 6)),
        ("model.norm.weight", "BF16", [4], b"\x80\x3f" * 4),
        ("ids", "I64", [2], struct.pack("<2q", 7, -1)),
        ("half", "F16", [1, 1], b"\x00\x3c"),
    ], {"format": "pt"}))
    write("fuzz_safetensors", "edge_shapes.safetensors", safetensors([
        ("empty", "F32", [0, 4], b""),
        ("scalar", "F64", [], struct.pack("<d", 0.5)),
        ("bytes", "U8", [3], b"abc"),
        ("flags", "BOOL", [2], b"\x01\x00"),
        ("i32", "I32", [1], struct.pack("<i", 5)),
    ]))


def seed_hf_config():
    for model in ("llama_gqa", "gpt_neox_pythia", "qwen2_bias_tied"):
        with open(os.path.join(FIX, "hf_models", model, "config.json")) as f:
            write("fuzz_hf_config", model + ".json", f.read())
    with open(os.path.join(FIX, "hf_models", "llama_gqa", "config.json")) as f:
        cfg = json.load(f)
    cfg["rope_scaling"] = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                           "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    cfg["eos_token_id"] = [2, 3]
    write("fuzz_hf_config", "llama3_rope.json", json.dumps(cfg, indent=1))
    cfg["rope_scaling"] = {"type": "linear", "factor": 2.0}
    cfg["sliding_window"] = 16
    cfg["model_type"] = "mistral"
    write("fuzz_hf_config", "mistral_linear.json", json.dumps(cfg, indent=1))


def pruned_neox(keep=300):
    with open(os.path.join(FIX, "tokenizers", "gpt-neox-20b", "tokenizer.json")) as f:
        tok = json.load(f)
    vocab = {t: i for t, i in tok["model"]["vocab"].items() if i < keep}
    merges = []
    for m in tok["model"]["merges"]:
        a, b = m.split(" ") if isinstance(m, str) else m
        if a in vocab and b in vocab and a + b in vocab:
            merges.append(m)
    tok["model"]["vocab"] = vocab
    tok["model"]["merges"] = merges
    tok["added_tokens"] = [t for t in tok["added_tokens"] if t["id"] < keep]
    return tok


def merge_patch(target, patch):
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        elif isinstance(v, dict) and isinstance(target.get(k), dict):
            merge_patch(target[k], v)
        else:
            target[k] = v


def seed_tokenizer():
    base = pruned_neox()
    write("fuzz_tokenizer_json", "neox_pruned.json", json.dumps(base))
    seen = set()
    with open(os.path.join(FIX, "tokenizers", "variant_cases.jsonl")) as f:
        for line in f:
            case = json.loads(line)
            if case["variant"] in seen:
                continue
            seen.add(case["variant"])
            tok = json.loads(json.dumps(base))
            merge_patch(tok, case["patch"])
            if case.get("merges_as_pairs"):
                tok["model"]["merges"] = [m.split(" ") for m in tok["model"]["merges"]]
            for i, t in enumerate(case.get("extra_added_tokens", [])):
                t = dict(t, id=len(tok["model"]["vocab"]) + i)
                tok["added_tokens"].append(t)
            write("fuzz_tokenizer_json", case["variant"] + ".json", json.dumps(tok))
    # The SentencePiece-style pipeline (Llama 2 and Mistral as tokenizer.json): Replace and
    # Prepend normalizers, byte fallback, a Sequence decoder.
    tok = json.loads(json.dumps(base))
    tok["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "\u2581"}, {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]}
    tok["pre_tokenizer"] = None
    tok["model"]["byte_fallback"] = True
    tok["model"]["vocab"].update({"<0x%02X>" % b: len(tok["model"]["vocab"]) + b for b in range(4)})
    tok["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "}, {"type": "ByteFallback"},
        {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    write("fuzz_tokenizer_json", "sentencepiece_style.json", json.dumps(tok))


def seed_jsonl():
    name = "fuzz_jsonl_rows"
    with gzip.open(os.path.join(FIX, "data", "hh-rlhf", "harmless-base", "test.jsonl.gz"), "rt") as f:
        hh = [next(f) for _ in range(2)]
    hh = [json.dumps({k: v[:300] for k, v in json.loads(l).items()}) + "\n" for l in hh]
    write(name, "hh.jsonl", "".join(hh))
    write(name, "hh.jsonl.gz", gzip.compress("".join(hh).encode(), mtime=0))
    with open(os.path.join(FIX, "data", "kto", "kto_en_demo.json")) as f:
        demo = json.load(f)[:2]
    write(name, "kto_demo_array.json", json.dumps(demo, ensure_ascii=False, indent=1)[:3000] + "\n]")
    write(name, "mixed.jsonl", "\n".join(json.dumps(r) for r in [
        {"prompt": "What is 2+2?", "completion": " 4", "label": True},
        {"input": "Hi", "output": "Hello!", "label": 0},
        {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a color"}],
         "completion": [{"role": "assistant", "content": "Blue"}], "label": 1},
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey"}], "label": False},
        {"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}], "label": True},
        {"prompt": "Pick", "chosen": "good", "rejected": "bad"},
        {"prompt": "x", "completion": "y"},
    ]) + "\n")


def seed_yaml():
    for cfg in ("tiny.yaml", "demo.yaml", "llama-2-7b.yaml"):
        shutil.copy(os.path.join(ROOT, "configs", cfg), os.path.join(out_dir("fuzz_config_yaml"), cfg))


def seed_with_tools(bin_dir):
    """A small dataset file and a real checkpoint manifest, made by the tools themselves."""
    tmp = tempfile.mkdtemp(prefix="kto-seeds-")
    try:
        rows = os.path.join(tmp, "rows.jsonl")
        with open(rows, "w") as f:
            for i in range(6):
                f.write(json.dumps({"prompt": "Q%d?" % i, "chosen": "yes " * (i + 1), "rejected": "no"}) + "\n")
        tok = os.path.join(FIX, "tokenizers", "gpt-neox-20b", "tokenizer.json")
        for pairs in (False, True):
            out = os.path.join(tmp, "pairs" if pairs else "unpaired")
            cmd = [os.path.join(bin_dir, "kto-data"), "prepare", "--input", rows, "--tokenizer", tok,
                   "--out", out, "--max-length", "32", "--max-prompt-length", "16"] + (["--keep-pairs"] if pairs else [])
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            shutil.copy(os.path.join(out, "train.h5"),
                        os.path.join(out_dir("fuzz_dataset_h5"), ("paired" if pairs else "unpaired") + ".h5"))
    finally:
        shutil.rmtree(tmp)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--with-tools", metavar="BUILD_BIN_DIR")
    parser.add_argument("--manifest", nargs="*", default=[], metavar="MANIFEST_YAML")
    args = parser.parse_args()
    for i, path in enumerate(args.manifest):
        with open(path) as f:
            text = f.read()
        write("fuzz_manifest", "manifest_%d.yaml" % i, text)
        # fuzz_manifest appends the right checksum when the first byte is odd ('#').
        write("fuzz_manifest", "manifest_%d_body.yaml" % i, "#\n" + text[:text.rfind("manifest_sha256: ")])
    seed_safetensors()
    seed_hf_config()
    seed_tokenizer()
    seed_jsonl()
    seed_yaml()
    if args.with_tools:
        seed_with_tools(args.with_tools)
    for name in sorted(os.listdir(os.path.join(HERE, "seeds"))):
        files = os.listdir(os.path.join(HERE, "seeds", name))
        size = sum(os.path.getsize(os.path.join(HERE, "seeds", name, f)) for f in files)
        print("%-22s %2d files, %6d bytes" % (name, len(files), size))


if __name__ == "__main__":
    sys.exit(main())
