#!/usr/bin/python3
# (A copy of the team's shared peer, ../shared/bench/peer_kto_step.py, kept here so that bench/compare_peer.sh runs from a clone; --profile, --turns and step_ms are ours, and change no timed step.)
"""Peer baseline: one KTO training step in plain PyTorch eager (what a user of a Python
trainer runs), on a Llama-style decoder, for side-by-side timing with the C++ trainer.

Needs Debian's python3-torch (apt-get install python3-torch) and Debian's own interpreter,
/usr/bin/python3 (the one on PATH may be another). It uses the same ATen kernels
as LibTorch, so a difference in step time is framework overhead and algorithmic choices.

One step = policy forward+backward on (x, y), policy forward without grad on the mismatched
pairs (x, y'), reference forwards without grad on both, the KTO loss, AdamW update.
Every sequence is full length (no padding); the completion is the second half.

Prints one JSON line: config, ms per step (median of the timed steps), training tokens/s,
model FLOP/s at 12N FLOPs per training token (N = non-embedding parameters + head), MFU vs
--peak-gflops when given, the process's peak RSS, every timed step's ms (step_ms). With --turns
GO,DONE (two FIFOs) it takes turns with another process (bench/compare_peer.sh --paired): it
waits for a byte on GO before its set-up, each step and its output, and writes one to DONE after.

Example:
  python3 peer_kto_step.py --hidden 256 --layers 4 --heads 8 --kv-heads 4 --ffn 688 \
      --vocab 32000 --seq 256 --batch 8 --steps 6 --threads 1
"""
import argparse, json, math, resource, statistics, time
import torch
import torch.nn.functional as F


def rms_norm(x, w, eps=1e-5):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope_tables(seq, head_dim, theta=10000.0, dtype=torch.float32):
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    ang = torch.outer(torch.arange(seq, dtype=torch.float64), inv)
    return torch.cos(ang).to(dtype), torch.sin(ang).to(dtype)


def apply_rope(x, cos, sin):  # x: B,H,T,D ; HF "rotate_half" convention
    d = x.shape[-1] // 2
    x1, x2 = x[..., :d], x[..., d:]
    c = torch.cat([cos, cos], -1)
    s = torch.cat([sin, sin], -1)
    return x * c + torch.cat([-x2, x1], -1) * s


class Llama(torch.nn.Module):
    def __init__(self, a):
        super().__init__()
        h, f, v = a.hidden, a.ffn, a.vocab
        self.nh, self.nkv, self.hd = a.heads, a.kv_heads, a.hidden // a.heads
        self.embed = torch.nn.Parameter(torch.randn(v, h) * 0.02)
        self.blocks = torch.nn.ModuleList()
        for _ in range(a.layers):
            m = torch.nn.Module()
            m.ln1 = torch.nn.Parameter(torch.ones(h))
            m.wq = torch.nn.Parameter(torch.randn(self.nh * self.hd, h) * 0.02)
            m.wk = torch.nn.Parameter(torch.randn(self.nkv * self.hd, h) * 0.02)
            m.wv = torch.nn.Parameter(torch.randn(self.nkv * self.hd, h) * 0.02)
            m.wo = torch.nn.Parameter(torch.randn(h, self.nh * self.hd) * 0.02)
            m.ln2 = torch.nn.Parameter(torch.ones(h))
            m.wg = torch.nn.Parameter(torch.randn(f, h) * 0.02)
            m.wu = torch.nn.Parameter(torch.randn(f, h) * 0.02)
            m.wd = torch.nn.Parameter(torch.randn(h, f) * 0.02)
            self.blocks.append(m)
        self.norm = torch.nn.Parameter(torch.ones(h))
        self.head = torch.nn.Parameter(torch.randn(v, h) * 0.02)

    def forward(self, ids, cos, sin, mask):
        B, T = ids.shape
        x = self.embed[ids]
        for m in self.blocks:
            y = rms_norm(x, m.ln1)
            q = F.linear(y, m.wq).view(B, T, self.nh, self.hd).transpose(1, 2)
            k = F.linear(y, m.wk).view(B, T, self.nkv, self.hd).transpose(1, 2)
            v = F.linear(y, m.wv).view(B, T, self.nkv, self.hd).transpose(1, 2)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            rep = self.nh // self.nkv
            k = k.repeat_interleave(rep, 1)
            v = v.repeat_interleave(rep, 1)
            att = (q @ k.transpose(-1, -2)) / math.sqrt(self.hd) + mask
            o = (att.softmax(-1) @ v).transpose(1, 2).reshape(B, T, -1)
            x = x + F.linear(o, m.wo)
            y = rms_norm(x, m.ln2)
            x = x + F.linear(F.silu(F.linear(y, m.wg)) * F.linear(y, m.wu), m.wd)
        return F.linear(rms_norm(x, self.norm), self.head)


def completion_logps(model, ids, comp_mask, cos, sin, mask):
    logits = model(ids, cos, sin, mask)[:, :-1].float()
    tgt = ids[:, 1:]
    lp = torch.gather(logits.log_softmax(-1), 2, tgt.unsqueeze(-1)).squeeze(-1)
    return (lp * comp_mask[:, 1:]).sum(-1)


class Turns:
    """Turn-taking through two FIFOs: begin() waits for a byte on GO, end() writes one to DONE."""

    def __init__(self, spec):
        self.go = self.done = None
        if spec:
            go, _, done = spec.partition(",")
            if not go or not done:
                raise SystemExit(f"--turns: expected GO,DONE (two FIFO paths), got '{spec}'")
            self.go, self.done = open(go, "rb", buffering=0), open(done, "wb", buffering=0)

    def begin(self):
        if self.go and len(self.go.read(1)) != 1:
            raise SystemExit("--turns: the other side closed its end of the GO FIFO")

    def end(self):
        if self.done:
            self.done.write(b"x")


def main():
    p = argparse.ArgumentParser()
    for k, v in dict(hidden=256, layers=4, heads=8, kv_heads=4, ffn=688, vocab=32000, seq=256,
                     batch=8, steps=6, warmup=2, threads=1).items():
        p.add_argument("--" + k.replace("_", "-"), type=int, default=v)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--peak-gflops", type=float, default=0.0)
    p.add_argument("--profile", default="", help="write torch.autograd.profiler's trace of one "
                   "extra, untimed step to this file (Chrome trace; bench/op_profile.py sums it)")
    p.add_argument("--turns", default="", metavar="GO,DONE",
                   help="take turns with another process through two FIFOs (bench/compare_peer.sh --paired)")
    a = p.parse_args()
    turns = Turns(a.turns)
    if a.turns and a.profile:
        p.error("--turns: not with --profile")
    turns.begin()  # the set-up
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dt = torch.float32 if a.dtype == "fp32" else torch.bfloat16
    policy, ref = Llama(a).to(dt), Llama(a).to(dt)
    ref.load_state_dict(policy.state_dict())
    for q in ref.parameters():
        q.requires_grad_(False)
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-6, weight_decay=0.0)
    B, T = a.batch, a.seq
    cos, sin = rope_tables(T, a.hidden // a.heads, dtype=dt)
    mask = torch.full((T, T), float("-inf"), dtype=dt).triu(1)
    comp = torch.zeros(B, T)
    comp[:, T // 2:] = 1.0
    labels = torch.tensor([i % 2 == 0 for i in range(B)])
    n_params = sum(q.numel() for q in policy.parameters()) - policy.embed.numel()
    turns.end()

    times = []
    for step in range(a.warmup + a.steps + (1 if a.profile else 0)):
        profiled = step == a.warmup + a.steps
        prof = torch.autograd.profiler.profile() if profiled else None
        if prof:
            prof.__enter__()
        turns.begin()
        ids = torch.randint(0, a.vocab, (B, T))
        kl_ids = torch.cat([ids[:, : T // 2], ids.roll(-1, 0)[:, T // 2:]], 1)  # x_i with y_{i+1}
        t0 = time.perf_counter()
        with torch.no_grad():
            kl = (completion_logps(policy, kl_ids, comp, cos, sin, mask)
                  - completion_logps(ref, kl_ids, comp, cos, sin, mask)).mean().clamp(min=0)
            ref_lp = completion_logps(ref, ids, comp, cos, sin, mask)
        r = completion_logps(policy, ids, comp, cos, sin, mask) - ref_lp
        loss = torch.where(labels, 1 - torch.sigmoid(a.beta * (r - kl)),
                           1 - torch.sigmoid(a.beta * (kl - r))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        t1 = time.perf_counter()
        turns.end()
        if prof:
            prof.__exit__(None, None, None)
            prof.export_chrome_trace(a.profile)
        elif step >= a.warmup:
            times.append(t1 - t0)
    turns.begin()  # the output
    s = statistics.median(times)
    tokens = B * T
    flops = 12.0 * n_params * tokens / s
    out = dict(peer="pytorch-eager", torch=torch.__version__, dtype=a.dtype, threads=a.threads,
               hidden=a.hidden, layers=a.layers, vocab=a.vocab, seq=T, batch=B,
               n_params_nonembed=n_params, ms_per_step=round(s * 1e3, 2),
               tokens_per_s=round(tokens / s, 1), model_gflops=round(flops / 1e9, 2),
               peak_rss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
               step_ms=[round(t * 1e3, 2) for t in times])
    if a.peak_gflops > 0:
        out["mfu"] = round(flops / 1e9 / a.peak_gflops, 4)
    print(json.dumps(out), flush=True)
    turns.end()


if __name__ == "__main__":
    main()
