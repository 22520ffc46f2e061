#!/usr/bin/python3
"""The matmuls of one KTO step on the block-dominated shape, each alone (PyTorch on the CPU, the
same ATen and OpenBLAS kernels as LibTorch): the 1024^3 peak bench_kto_step divides by, every
linear product of a block (forward, input gradient, weight gradient), the six attention
products, and causal attention computed in row blocks (the masked tiles skipped) against the
batched products. Prints GFLOP/s or ms as best/median; asserts nothing.

  /usr/bin/python3 bench/matmul_shapes.py [--threads N] [--reps N] [--hidden C] [--ffn I]
      [--heads H] [--kv-heads H] [--seq T] [--batch B]

Defaults: compare_peer.sh's block shape (hidden 1024, ffn 2816, 16/8 heads, seq 256, batch 4),
1 thread. Run nothing else meanwhile (docs/performance.md has the figures).
"""
import argparse
import time

import torch


def timed(fn, reps):
    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    ts.sort()
    return ts[0], ts[len(ts) // 2]


def gflops(fn, flop, reps):
    best, median = timed(fn, reps)
    return f"{flop / best / 1e9:6.0f}/{flop / median / 1e9:<6.0f}"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=8)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--ffn", type=int, default=2816)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batch", type=int, default=4)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    C, H, Hkv, T, B = a.hidden, a.heads, a.kv_heads, a.seq, a.batch
    D, rep, M = C // H, H // Hkv, B * T
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"machine: {cpu}; torch {torch.__version__}, {a.threads} thread(s); GFLOP/s best/median of {a.reps}")

    x, y = torch.randn(1024, 1024), torch.randn(1024, 1024)
    start = time.perf_counter()
    while time.perf_counter() - start < 2.0:  # the first seconds of products run slower on these VMs
        torch.mm(x, y)
    peak = lambda: gflops(lambda: torch.mm(x, y), 2 * 1024**3, a.reps)
    print(f"1024^3 (bench_kto_step's peak)   {peak()}")

    print(f"linear products, {M} tokens:     forward       input grad    weight grad")
    for name, (n, k) in {"qkv": (C + 2 * Hkv * D, C), "o": (C, C), "gate_up": (2 * a.ffn, C),
                         "down": (C, a.ffn)}.items():
        inp, w, dy = torch.randn(M, k), torch.randn(n, k), torch.randn(M, n)
        f = 2 * M * n * k
        print(f"  {name:8s} [{n:5d} x {k:5d}]        {gflops(lambda: torch.mm(inp, w.t()), f, a.reps)}"
              f"  {gflops(lambda: torch.mm(dy, w), f, a.reps)}  {gflops(lambda: torch.mm(dy.t(), inp), f, a.reps)}")

    # Grouped GQA attention as kto runs it: the rep query heads of a kv head as one [rep*T, D] operand.
    G, R = B * Hkv, rep * T
    q, k, v = torch.randn(G, R, D), torch.randn(G, T, D), torch.randn(G, T, D)
    probs, dout, dscores = torch.randn(G, R, T), torch.randn(G, R, D), torch.randn(G, R, T)
    f = 2 * G * R * T * D
    print(f"attention products, {G} x [{R} x {T}] with D = {D}:")
    for name, fn in [("scores = q k^T", lambda: torch.bmm(q, k.transpose(1, 2))),
                     ("out = p v", lambda: torch.bmm(probs, v)),
                     ("dp = dout v^T", lambda: torch.bmm(dout, v.transpose(1, 2))),
                     ("dv = p^T dout", lambda: torch.bmm(probs.transpose(1, 2), dout)),
                     ("dq = ds k", lambda: torch.bmm(dscores, k)),
                     ("dk = ds^T q", lambda: torch.bmm(dscores.transpose(1, 2), q))]:
        print(f"  {name:16s} {gflops(fn, f, a.reps)}")

    q4, k4, v4 = torch.randn(B, H, T, D), torch.randn(B, Hkv, T, D), torch.randn(B, Hkv, T, D)

    def batched():
        s = torch.matmul(q4.view(B, Hkv, R, D), k4.transpose(-2, -1))
        return torch.matmul(s, v4)

    scores, out = torch.empty(B, H, T, T), torch.empty(B, H, T, D)

    def row_blocks(br):
        for b in range(B):
            for h in range(H):
                g = h // rep
                for r0 in range(0, T, br):
                    r1 = min(r0 + br, T)
                    s = scores[b, h, r0:r1, :r1]  # keys past the block's last query are skipped
                    torch.mm(q4[b, h, r0:r1], k4[b, g, :r1].t(), out=s)
                    torch.mm(s, v4[b, g, :r1], out=out[b, h, r0:r1])

    def loop_only(br):  # the Python loop and views without the products
        for b in range(B):
            for h in range(H):
                for r0 in range(0, T, br):
                    r1 = min(r0 + br, T)
                    scores[b, h, r0:r1, :r1], q4[b, h, r0:r1], out[b, h, r0:r1]

    ms = lambda fn: "%.1f/%.1f ms" % tuple(1e3 * t for t in timed(fn, a.reps))
    print("causal attention forward products (scores and output, no softmax):")
    print(f"  batched bmm (all tiles)          {ms(batched)}")
    for br in sorted({b for b in (32, 64, 128) if b < T} | {T}):
        nb = (T + br - 1) // br
        print(f"  row blocks of {br:3d} ({nb * (nb + 1) // 2:3d}/{nb * nb:<3d} tiles)  {ms(lambda: row_blocks(br))}"
              f"   (of which the loop {ms(lambda: loop_only(br))})")
    print(f"1024^3 again                     {peak()}")


if __name__ == "__main__":
    main()
