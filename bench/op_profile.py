#!/usr/bin/python3
"""Sums a LibTorch op trace by op name: self time (the op's own, its nested ops subtracted),
calls, share of the traced span. Reads the Chrome trace JSON that `bench_kto_step --profile FILE`
writes (LibTorch's legacy profiler, RecordProfile) or a trace from torch.autograd.profiler's
export_chrome_trace (for the peer), so the two can be put side by side.

  bench/op_profile.py FILE [--top N]
"""
import argparse, collections, json


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("trace")
    p.add_argument("--top", type=int, default=25)
    a = p.parse_args()
    with open(a.trace) as f:
        data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    spans = collections.defaultdict(list)  # thread -> [(start, end, name)]
    for e in events:
        if e.get("ph") == "X" and "dur" in e:
            spans[e.get("tid", 0)].append((float(e["ts"]), float(e["ts"]) + float(e["dur"]), e["name"]))
        elif e.get("ph") in ("B", "E"):
            raise SystemExit(f"{a.trace}: begin/end events are not supported, only complete ('X') ones")
    self_us, calls = collections.Counter(), collections.Counter()
    total = 0.0
    for tid, ev in spans.items():
        ev.sort(key=lambda t: (t[0], -t[1]))
        stack = []  # [start, end, name, child time]
        def close(item):
            s, e, n, child = item
            self_us[n] += (e - s) - child
            calls[n] += 1
            if stack:
                stack[-1][3] += e - s
        for s, e, n in ev:
            while stack and stack[-1][1] <= s:
                close(stack.pop())
            stack.append([s, e, n, 0.0])
        while stack:
            close(stack.pop())
        total += max(e for _, e, _ in ev) - min(s for s, _, _ in ev)
    traced = sum(self_us.values())
    print(f"{a.trace}: {traced / 1e3:.1f} ms in ops over {len(spans)} thread(s), span {total / 1e3:.1f} ms")
    print(f"{'self ms':>10} {'share':>6} {'calls':>7}  op")
    for n, us in self_us.most_common(a.top):
        print(f"{us / 1e3:10.1f} {us / traced:6.1%} {calls[n]:7d}  {n}")


if __name__ == "__main__":
    main()
